//! Istio's analyzers that read the documents as written: a VirtualService without hosts, its
//! gateways (IST0101), deprecated fields (IST0002), and AuthorizationPolicies naming
//! namespaces (IST0101) or workloads (IST0127) that do not exist, or `request.auth`
//! conditions without a RequestAuthentication (IST0172). Each finding at its field.

use std::collections::BTreeSet;

use marked_yaml::Node;

use crate::finding::{codes, Finding};
use crate::model::Mesh;
use crate::resources::security::AuthorizationPolicySpec;
use crate::resources::Document;
use crate::translate::locate;

const ISTIO_NETWORKING: &str = "networking.istio.io";
const ISTIO_SECURITY: &str = "security.istio.io";
/// Istio's root namespace: a RequestAuthentication there applies to the whole mesh.
const ROOT_NAMESPACE: &str = "istio-system";

fn is(doc: &Document, group: &str, kind: &str) -> bool {
    doc.group() == group && doc.kind == kind
}

fn who(doc: &Document) -> String {
    format!("{} {}/{}", doc.kind, doc.namespace, doc.name)
}

/// A child of a mapping node.
fn child<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    node.as_mapping()?.get_node(key)
}

/// Every check of this module over the documents.
pub(super) fn check(docs: &[Document], mesh: &Mesh, out: &mut Vec<Finding>) {
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .map(|d| d.namespace.as_str())
        .chain(
            docs.iter()
                .filter(|d| d.group().is_empty() && d.kind == "Namespace")
                .map(|d| d.name.as_str()),
        )
        .collect();
    let cx = Cx {
        mesh,
        namespaces,
        gateways: docs
            .iter()
            .filter(|d| is(d, ISTIO_NETWORKING, "Gateway"))
            .map(|d| (d.namespace.as_str(), d.name.as_str()))
            .collect(),
        authn_namespaces: docs
            .iter()
            .filter(|d| is(d, ISTIO_SECURITY, "RequestAuthentication"))
            .map(|d| d.namespace.as_str())
            .collect(),
    };
    for doc in docs {
        if is(doc, ISTIO_NETWORKING, "VirtualService") {
            virtual_service(doc, &cx, out);
        } else if is(doc, ISTIO_SECURITY, "AuthorizationPolicy") {
            authorization_policy(doc, &cx, out);
        }
    }
}

/// What the checks look up, gathered once (per document it would be quadratic).
struct Cx<'a> {
    mesh: &'a Mesh,
    /// Every namespace a document is in or a Namespace declares.
    namespaces: BTreeSet<&'a str>,
    /// Istio Gateways, (namespace, name).
    gateways: BTreeSet<(&'a str, &'a str)>,
    /// Namespaces with a RequestAuthentication.
    authn_namespaces: BTreeSet<&'a str>,
}

fn virtual_service(doc: &Document, cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let Some(spec) = doc.spec_node() else {
        return;
    };
    let spec = &spec;
    let hosts = child(spec, "hosts").and_then(Node::as_sequence);
    if hosts.is_none_or(|h| h.is_empty()) {
        let at = locate(doc, &["spec", "hosts"]);
        out.push(
            Finding::error(
                codes::MISSING_FIELD,
                format!(
                    "IST0106: {}: spec.hosts is empty: a VirtualService needs at least one host; it routes nothing",
                    who(doc)
                ),
                &at,
            )
            .with_fix("name the service it routes in spec.hosts"),
        );
    }
    if let Some(gateways) = child(spec, "gateways").and_then(Node::as_sequence) {
        for (i, g) in gateways.iter().enumerate() {
            let Some(name) = g.as_scalar().map(|s| s.as_str()) else {
                continue;
            };
            if name == "mesh" {
                continue;
            }
            let (ns, gw) = name.split_once('/').unwrap_or((doc.namespace.as_str(), name));
            if !cx.gateways.contains(&(ns, gw)) {
                out.push(Finding::error(
                    codes::MISSING_GATEWAY,
                    format!("IST0101: {}: referenced gateway not found: {ns}/{gw}", who(doc)),
                    &locate(doc, &["spec", "gateways", &i.to_string()]),
                ));
            }
        }
    }
    deprecated(doc, spec, out);
}

/// Fields Istio deprecated in favour of another: `mirrorPercent`, `fault.delay.percent`.
fn deprecated(doc: &Document, spec: &Node, out: &mut Vec<Finding>) {
    let Some(http) = child(spec, "http").and_then(Node::as_sequence) else {
        return;
    };
    for (i, rule) in http.iter().enumerate() {
        let i = i.to_string();
        let found = [
            (vec!["mirrorPercent"], "mirrorPercentage: {value: N}"),
            (vec!["fault", "delay", "percent"], "percentage: {value: N}"),
        ];
        for (path, instead) in found {
            let present = path.iter().try_fold(rule, |n, k| child(n, k)).is_some();
            if !present {
                continue;
            }
            let full: Vec<&str> = ["spec", "http", i.as_str()]
                .into_iter()
                .chain(path.iter().copied())
                .collect();
            out.push(
                Finding::warning(
                    codes::DEPRECATED,
                    format!(
                        "IST0002: {}: deprecated: spec.http[{i}].{} (still read)",
                        who(doc),
                        path.join(".")
                    ),
                    &locate(doc, &full),
                )
                .with_fix(format!("write {instead}")),
            );
        }
    }
}

fn authorization_policy(doc: &Document, cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let mesh = cx.mesh;
    // A policy that does not read is reported by translation.
    let Ok(spec) = doc.spec::<AuthorizationPolicySpec>() else {
        return;
    };
    // Workloads declared elsewhere (a cluster) are not in the documents: judge selectors only
    // when the documents declare workloads at all. A policy in the root namespace applies to
    // the whole mesh; one without a selector to its whole namespace.
    let selector = spec
        .selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty());
    let mesh_wide = doc.namespace == ROOT_NAMESPACE;
    let selects = |w: &&crate::model::Workload| {
        (mesh_wide || w.namespace == doc.namespace) && selector.is_none_or(|l| w.selected_by(l))
    };
    // A mesh-wide policy without a selector covers every workload there is.
    let covers_all = mesh_wide && selector.is_none();
    let judged = !mesh.workloads.is_empty() && !covers_all;
    if judged && !mesh.workloads.iter().any(|w| selects(&w)) {
        let labels: Vec<String> = selector
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let at = match selector {
            Some(_) => locate(doc, &["spec", "selector", "matchLabels"]),
            // Namespace-wide: the namespace without workloads is the cause.
            None => locate(doc, &["metadata", "namespace"]),
        };
        out.push(Finding::warning(
            codes::NO_MATCHING_WORKLOADS,
            format!(
                "IST0127: {}: no matching workloads for this resource with the following labels: {}",
                who(doc),
                if labels.is_empty() {
                    "(all in the namespace)".to_string()
                } else {
                    labels.join(",")
                }
            ),
            &at,
        ));
    }
    let authn = [doc.namespace.as_str(), ROOT_NAMESPACE]
        .iter()
        .any(|ns| cx.authn_namespaces.contains(ns));
    for (i, rule) in spec.rules.iter().enumerate() {
        let i = i.to_string();
        for (j, from) in rule.from.iter().enumerate() {
            let j = j.to_string();
            let source = ["spec", "rules", i.as_str(), "from", j.as_str(), "source"];
            for (field, list) in [
                ("namespaces", &from.source.namespaces),
                ("notNamespaces", &from.source.not_namespaces),
            ] {
                for (k, ns) in list.iter().enumerate() {
                    if namespace_exists(ns, &cx.namespaces) {
                        continue;
                    }
                    let k = k.to_string();
                    let path: Vec<&str> = source.iter().copied().chain([field, k.as_str()]).collect();
                    out.push(Finding::error(
                        codes::MISSING_NAMESPACE,
                        format!(
                            "IST0101: {}: referenced namespace not found: {ns:?} (no document is in it)",
                            who(doc)
                        ),
                        &locate(doc, &path),
                    ));
                }
            }
            for (set, field) in [
                (from.source.request_principals.is_some(), "requestPrincipals"),
                (
                    from.source.not_request_principals.is_some(),
                    "notRequestPrincipals",
                ),
            ] {
                if set && !authn {
                    let path: Vec<&str> = source.iter().copied().chain([field]).collect();
                    out.push(no_authn(doc, field, &locate(doc, &path)));
                }
            }
        }
        for (w, cond) in rule.when.iter().enumerate() {
            if cond.key.starts_with("request.auth.") && !authn {
                let at = locate(doc, &["spec", "rules", i.as_str(), "when", &w.to_string(), "key"]);
                out.push(no_authn(doc, &cond.key, &at));
            }
        }
    }
}

/// `ns`, `prefix*`, `*suffix` or `*` names a namespace some document is in.
fn namespace_exists(pattern: &str, namespaces: &BTreeSet<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return namespaces.iter().any(|n| n.starts_with(prefix));
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return namespaces.iter().any(|n| n.ends_with(suffix));
    }
    namespaces.contains(pattern)
}

fn no_authn(doc: &Document, what: &str, at: &crate::finding::Location) -> Finding {
    Finding::warning(
        codes::NO_REQUEST_AUTHENTICATION,
        format!(
            "IST0172: {}: {what} needs a request identity, but no RequestAuthentication is in namespace {} or {ROOT_NAMESPACE}: the condition never holds",
            who(doc),
            doc.namespace
        ),
        at,
    )
    .with_fix(format!("add a RequestAuthentication for the workloads in {}", doc.namespace))
}
