//! Linkerd `policy.linkerd.io` -> the model's authorization policies.
//!
//! Linkerd policy is relational (an AuthorizationPolicy names a Server by name, a Server picks
//! workloads by labels and a port by number or name), so each document is first kept as
//! read (`Pending`) and [`resolve`] compiles them all once every document is in:
//!
//! - A `Server` becomes one ALLOW policy (kind `Server`) per port number it resolves to,
//!   scoped to that port and to the workloads its `podSelector` picks. Its rules are the
//!   AuthorizationPolicies targeting it (directly, through a `policy.linkerd.io` HTTPRoute whose
//!   parent it is, or through its Namespace), then its `accessPolicy` (default `deny`: no
//!   rule, so unauthorized traffic is denied). A Server with inbound routes serves only what
//!   they match: Linkerd answers other requests 404, Weft denies them (403).
//! - An AuthorizationPolicy's `requiredAuthenticationRefs` must all hold: each
//!   MeshTLSAuthentication is a `source.principal` condition, the first NetworkAuthentication
//!   the rule's `from` (one source per network, `except` as `notIpBlocks`), further ones a
//!   `source.ip` condition. A reference to a missing document is an error and the policy
//!   authorizes nothing (as in Linkerd).
//! - The default inbound policy applies to the ports no Server covers. It is read from the
//!   `config.linkerd.io/default-inbound-policy` annotation of the `Workload`, else of its
//!   `Namespace` document, else of the `Namespace` document of a root namespace (`weft-system`,
//!   `istio-system`) or `linkerd`: that is the mesh-wide value (Linkerd's install value
//!   `proxy.defaultInboundPolicy`), kept where Weft keeps every mesh-wide setting. Default
//!   `all-unauthenticated` (no policy at all).
//! - `cluster-*` policies trust Linkerd's default cluster networks plus loopback (Weft's local
//!   meshes run on loopback).
//! - `audit` (a Server's `accessPolicy` or the default) allows and audits: an AUDIT policy
//!   with a match-all rule, so every request to the port is logged and counted (Linkerd audits
//!   only what would have been denied; Weft audits more, never less).
//!
//! - A Server's `proxyProtocol` sets the protocol of the Workload ports it selects (those the
//!   Workload leaves to detection): `HTTP/1`, `HTTP/2`, `gRPC`, and `opaque`/`TLS` as TCP.
//!
//! HTTPRoutes whose parent is a Service route traffic exactly like the Gateway API's and are
//! handed to that translator.

use std::collections::BTreeMap;

use super::core::{locate, not_implemented};
use super::{gateway_api, origin, Translated};
use crate::authz::ROOT_NAMESPACES;
use crate::finding::{codes, Finding};
use crate::model::{AuthorizationPolicy, Workload};
use crate::proxy_config::{AuthzAction, AuthzPolicy, AuthzRule, AuthzSource, Protocol};
use crate::resources::gateway_api::{HttpRouteSpec, ParentRef, PathMatchType, ValueMatchType};
use crate::resources::linkerd_policy as lp;
use crate::resources::Document;
use rules::{authentications, server_rules};

/// Where Linkerd reads the default inbound policy.
pub const DEFAULT_POLICY_ANNOTATION: &str = "config.linkerd.io/default-inbound-policy";

/// The `kind` of a policy compiled from a default inbound policy.
pub const DEFAULT_POLICY_KIND: &str = "default-inbound-policy";

/// Linkerd's default `clusterNetworks`, plus loopback.
const CLUSTER_NETWORKS: [&str; 7] = [
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fd00::/8",
    "127.0.0.0/8",
    "::1/128",
];

/// A value no principal, IP or path ever equals: a condition that must never hold.
const NEVER: &str = "\u{0}never";

const POLICY_GROUP: &str = "policy.linkerd.io";

/// The Linkerd documents read so far, compiled by [`resolve`].
#[derive(Debug, Default)]
pub struct Pending {
    servers: Vec<(Document, lp::ServerSpec)>,
    policies: Vec<(Document, lp::AuthorizationPolicySpec)>,
    mesh_tls: Vec<(Document, lp::MeshTlsAuthenticationSpec)>,
    networks: Vec<(Document, lp::NetworkAuthenticationSpec)>,
    /// HTTPRoutes with a Server parent.
    routes: Vec<(Document, HttpRouteSpec)>,
    /// Namespace name -> its `Namespace` document carrying the annotation.
    namespace_defaults: BTreeMap<String, Document>,
    rate_limits: Vec<(Document, lp::HttpLocalRateLimitPolicySpec)>,
}

// === per document ===

pub(super) fn server(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: lp::ServerSpec = match doc.spec() {
        Ok(s) => s,
        Err(f) => return out.findings.extend(f),
    };
    if spec.external_workload_selector.is_some() {
        out.findings.push(not_implemented(
            doc,
            &["spec", "externalWorkloadSelector"],
            "ExternalWorkloads are not part of a Weft mesh",
        ));
    }
    if let Some(p) = spec.proxy_protocol.as_deref() {
        if proxy_protocol(p).is_none() {
            out.findings.push(schema(
                doc,
                &["spec", "proxyProtocol"],
                format!("unknown proxyProtocol {p:?} (unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS); detected instead"),
            ));
        }
    }
    if let Some(a) = spec.access_policy.as_deref() {
        if fallback(a).is_none() {
            out.findings.push(bad_default(doc, &["spec", "accessPolicy"], a));
        }
    }
    if spec.port.number() == Some(0) {
        out.findings
            .push(schema(doc, &["spec", "port"], "port 0 is not a port".into()));
    }
    out.linkerd_policy.servers.push((doc.clone(), spec));
}

pub(super) fn http_local_rate_limit_policy(doc: &Document, _seen: usize, out: &mut Translated) {
    match doc.spec() {
        Ok(spec) => out.linkerd_policy.rate_limits.push((doc.clone(), spec)),
        Err(f) => out.findings.extend(f),
    }
}

pub(super) fn authorization_policy(doc: &Document, _seen: usize, out: &mut Translated) {
    match doc.spec() {
        Ok(spec) => out.linkerd_policy.policies.push((doc.clone(), spec)),
        Err(f) => out.findings.extend(f),
    }
}

pub(super) fn mesh_tls_authentication(doc: &Document, _seen: usize, out: &mut Translated) {
    match doc.spec::<lp::MeshTlsAuthenticationSpec>() {
        Ok(spec) => {
            if spec.identities.is_empty() && spec.identity_refs.is_empty() {
                out.findings.push(schema(
                    doc,
                    &["spec"],
                    "neither identities nor identityRefs: no client satisfies it".into(),
                ));
            }
            out.linkerd_policy.mesh_tls.push((doc.clone(), spec));
        }
        Err(f) => out.findings.extend(f),
    }
}

pub(super) fn network_authentication(doc: &Document, _seen: usize, out: &mut Translated) {
    match doc.spec::<lp::NetworkAuthenticationSpec>() {
        Ok(spec) => {
            for (i, n) in spec.networks.iter().enumerate() {
                let i = i.to_string();
                for (field, blocks) in [("cidr", vec![&n.cidr]), ("except", n.except.iter().collect())] {
                    for b in blocks {
                        if !super::security::valid_block(b) {
                            out.findings.push(schema(
                                doc,
                                &["spec", "networks", &i, field],
                                format!("{b:?} is not an IP address or CIDR; it matches nothing"),
                            ));
                        }
                    }
                }
            }
            out.linkerd_policy.networks.push((doc.clone(), spec));
        }
        Err(f) => out.findings.extend(f),
    }
}

/// An HTTPRoute (`policy.linkerd.io` or `gateway.networking.k8s.io`, as Linkerd accepts
/// both): an inbound route when a parent is a Server; otherwise (a Service or Gateway parent)
/// it routes like the Gateway API's HTTPRoute.
pub(super) fn http_route(doc: &Document, seen: usize, out: &mut Translated) {
    let spec: HttpRouteSpec = match doc.spec() {
        Ok(s) => s,
        Err(f) => return out.findings.extend(f),
    };
    // Without parents the Gateway API translator says it routes nothing.
    if spec.parent_refs.is_empty() || spec.parent_refs.iter().any(|p| !is_server(p)) {
        gateway_api::translate_http_route(doc, seen, out);
    }
    if spec.parent_refs.iter().any(|p| is_server(p)) {
        for (i, r) in spec.rules.iter().enumerate() {
            for (j, m) in r.matches.iter().enumerate() {
                let regex = m
                    .path
                    .as_ref()
                    .is_some_and(|p| p.kind == PathMatchType::RegularExpression)
                    || m.headers.iter().any(|h| h.kind != ValueMatchType::Exact);
                if regex || !m.query_params.is_empty() {
                    out.findings.push(not_implemented(
                        doc,
                        &["spec", "rules", &i.to_string(), "matches", &j.to_string()],
                        "regular-expression and query-parameter matches on a Server's inbound route: this match authorizes nothing",
                    ));
                }
            }
            if !r.filters.is_empty() || !r.backend_refs.is_empty() {
                out.findings.push(not_implemented(
                    doc,
                    &["spec", "rules", &i.to_string()],
                    "filters and backendRefs on a Server's inbound route (its matches still scope authorization)",
                ));
            }
        }
        out.linkerd_policy.routes.push((doc.clone(), spec));
    }
}

/// A core `Namespace`: only its default-inbound-policy annotation is read.
pub(super) fn namespace(doc: &Document, _seen: usize, out: &mut Translated) {
    if let Some(v) = doc.annotations.get(DEFAULT_POLICY_ANNOTATION) {
        if fallback(v).is_none() {
            out.findings.push(bad_default(
                doc,
                &["metadata", "annotations", DEFAULT_POLICY_ANNOTATION],
                v,
            ));
            return;
        }
        out.linkerd_policy
            .namespace_defaults
            .insert(doc.name.clone(), doc.clone());
    }
}

/// A Server's `proxyProtocol` as the port protocol it sets (`unknown`: detected, as `Auto`).
/// `opaque` and `TLS` are both bytes the proxy never inspects.
fn proxy_protocol(p: &str) -> Option<Protocol> {
    Some(match p {
        "unknown" => Protocol::Auto,
        "HTTP/1" => Protocol::Http,
        "HTTP/2" => Protocol::Http2,
        "gRPC" => Protocol::Grpc,
        "opaque" | "TLS" => Protocol::Tcp,
        _ => return None,
    })
}

/// Sets the protocol of the workload ports a Server selects from its `proxyProtocol`, where
/// the Workload left it to detection (a protocol the Workload declares wins, and is reported
/// when it differs).
fn set_port_protocol(
    sdoc: &Document,
    spec: &lp::ServerSpec,
    by_port: &BTreeMap<u16, Vec<String>>,
    out: &mut Translated,
) {
    let Some(protocol) = spec.proxy_protocol.as_deref().and_then(proxy_protocol) else {
        return;
    };
    if protocol == Protocol::Auto {
        return;
    }
    for (port, names) in by_port {
        for w in out
            .mesh
            .workloads
            .iter_mut()
            .filter(|w| w.namespace == sdoc.namespace && names.contains(&w.name))
        {
            let Some(p) = w.ports.iter_mut().find(|p| p.port == *port) else {
                let message = format!(
                    "Server {}/{}: proxyProtocol applies to ports Workload {} declares; port {port} is not one, so it is detected",
                    sdoc.namespace, sdoc.name, w.name
                );
                out.findings.push(Finding::warning(
                    codes::NOT_IMPLEMENTED,
                    message,
                    &locate(sdoc, &["spec", "proxyProtocol"]),
                ));
                continue;
            };
            if p.protocol == Protocol::Auto {
                p.protocol = protocol;
            } else if p.protocol != protocol {
                let message = format!(
                    "Server {}/{}: proxyProtocol says {protocol:?} but Workload {} declares port {port} as {:?}; the Workload's declaration is kept",
                    sdoc.namespace, sdoc.name, w.name, p.protocol
                );
                out.findings.push(Finding::warning(
                    codes::SCHEMA,
                    message,
                    &locate(sdoc, &["spec", "proxyProtocol"]),
                ));
            }
        }
    }
}

fn is_server(p: &ParentRef) -> bool {
    p.kind == "Server" && p.group == POLICY_GROUP
}

// === resolving ===

/// Compiles the pending Linkerd documents into `out.mesh.authorization_policies`; `docs` are
/// all documents (for the Workloads' annotations).
pub(super) fn resolve(docs: &[Document], out: &mut Translated) {
    let pending = std::mem::take(&mut out.linkerd_policy);
    let workloads = out.mesh.workloads.clone();
    let authn = authentications(&pending, out);
    let servers: Vec<&Document> = pending.servers.iter().map(|(d, _)| d).collect();
    rate_limit::report_missing_servers(&servers, &pending.rate_limits, out);
    // (namespace, workload) -> ports a Server covers.
    let mut covered: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
    for (sdoc, spec) in &pending.servers {
        let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for w in workloads.iter().filter(|w| w.namespace == sdoc.namespace) {
            if !selector_matches(spec.pod_selector.as_ref(), w) {
                continue;
            }
            let port = match (&spec.port, spec.port.number()) {
                (_, Some(0)) => None,
                (_, Some(n)) => Some(n),
                (lp::PortRef::Name(name), None) => w
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name))
                    .map(|p| p.port),
                (lp::PortRef::Number(_), None) => None,
            };
            if let Some(port) = port {
                by_port.entry(port).or_default().push(w.name.clone());
                covered
                    .entry((w.namespace.clone(), w.name.clone()))
                    .or_default()
                    .push(port);
            }
        }
        if by_port.is_empty() {
            out.findings.push(Finding::warning(
                codes::SELECTS_NOTHING,
                format!(
                    "Server {}/{} selects no workload port (podSelector and port {}): it applies to nothing",
                    sdoc.namespace, sdoc.name, spec.port
                ),
                &locate(sdoc, &["spec", "podSelector"]),
            ));
        }
        set_port_protocol(sdoc, spec, &by_port, out);
        let mut rules = server_rules(sdoc, &pending, &authn);
        let access = spec.access_policy.as_deref().unwrap_or("deny");
        let (rule, audit) = fallback(access).unwrap_or((None, false));
        rules.extend(rule);
        rate_limit::attach(sdoc, &by_port, &pending.rate_limits, out);
        for (port, names) in by_port {
            push(
                out,
                sdoc,
                "Server",
                AuthzAction::Allow,
                rules.clone(),
                Some(names.clone()),
                vec![port],
                vec![],
            );
            if audit {
                push(
                    out,
                    sdoc,
                    "Server",
                    AuthzAction::Audit,
                    vec![AuthzRule::default()],
                    Some(names),
                    vec![port],
                    vec![],
                );
            }
        }
    }
    defaults(docs, &pending, &workloads, &covered, out);
}

/// The default inbound policy of every workload, for the ports no Server covers.
fn defaults(
    docs: &[Document],
    pending: &Pending,
    workloads: &[Workload],
    covered: &BTreeMap<(String, String), Vec<u16>>,
    out: &mut Translated,
) {
    let mesh_wide = ROOT_NAMESPACES
        .iter()
        .chain(["linkerd"].iter())
        .find_map(|ns| pending.namespace_defaults.get(*ns));
    for w in workloads {
        let own = docs
            .iter()
            .find(|d| d.kind == "Workload" && d.name == w.name && d.namespace == w.namespace);
        let own = own.filter(|d| d.annotations.contains_key(DEFAULT_POLICY_ANNOTATION));
        let from = own
            .or_else(|| pending.namespace_defaults.get(&w.namespace))
            .or(mesh_wide);
        let Some(doc) = from else { continue };
        let Some(value) = doc.annotations.get(DEFAULT_POLICY_ANNOTATION) else {
            continue;
        };
        let Some((rule, audit)) = fallback(value) else {
            if own.is_some_and(|o| std::ptr::eq(o, doc)) {
                out.findings.push(bad_default(
                    doc,
                    &["metadata", "annotations", DEFAULT_POLICY_ANNOTATION],
                    value,
                ));
            }
            continue;
        };
        if value == "all-unauthenticated" {
            continue;
        }
        let not_ports = covered
            .get(&(w.namespace.clone(), w.name.clone()))
            .cloned()
            .unwrap_or_default();
        let (action, rules) = if audit {
            (AuthzAction::Audit, vec![AuthzRule::default()])
        } else {
            (AuthzAction::Allow, rule.into_iter().collect())
        };
        out.mesh.authorization_policies.push(AuthorizationPolicy {
            selector: None,
            workloads: Some(vec![w.name.clone()]),
            policy: AuthzPolicy {
                name: value.clone(),
                namespace: w.namespace.clone(),
                kind: DEFAULT_POLICY_KIND.into(),
                action,
                rules,
                ports: Vec::new(),
                not_ports,
            },
            origin: crate::route::Origin {
                namespace: w.namespace.clone(),
                ..origin(doc)
            },
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn push(
    out: &mut Translated,
    doc: &Document,
    kind: &str,
    action: AuthzAction,
    rules: Vec<AuthzRule>,
    workloads: Option<Vec<String>>,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
) {
    out.mesh.authorization_policies.push(AuthorizationPolicy {
        selector: None,
        workloads,
        policy: AuthzPolicy {
            name: doc.name.clone(),
            namespace: doc.namespace.clone(),
            kind: kind.into(),
            action,
            rules,
            ports,
            not_ports,
        },
        origin: origin(doc),
    });
}

/// What a default policy or `accessPolicy` value allows without any AuthorizationPolicy: the
/// rule to add (None: nothing) and whether traffic is audited. None for an unknown value.
fn fallback(value: &str) -> Option<(Option<AuthzRule>, bool)> {
    let cluster = || CLUSTER_NETWORKS.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let from = |principals: Vec<String>, ip_blocks: Vec<String>| AuthzRule {
        from: vec![AuthzSource {
            principals,
            ip_blocks,
            ..Default::default()
        }],
        ..Default::default()
    };
    Some(match value {
        "deny" => (None, false),
        "all-unauthenticated" => (Some(AuthzRule::default()), false),
        "all-authenticated" => (Some(from(vec!["*".into()], vec![])), false),
        "cluster-authenticated" => (Some(from(vec!["*".into()], cluster())), false),
        "cluster-unauthenticated" => (Some(from(vec![], cluster())), false),
        "audit" => (Some(AuthzRule::default()), true),
        _ => return None,
    })
}

/// Whether a Kubernetes label selector picks the workload (no selector: all of them).
fn selector_matches(selector: Option<&lp::LabelSelector>, w: &Workload) -> bool {
    let Some(s) = selector else { return true };
    s.match_labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))
        && s.match_expressions.iter().all(|e| {
            let value = w.labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| e.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

fn schema(doc: &Document, path: &[&str], what: String) -> Finding {
    Finding::error(
        codes::SCHEMA,
        format!("{} {}/{}: {what}", doc.kind, doc.namespace, doc.name),
        &locate(doc, path),
    )
}

fn bad_default(doc: &Document, path: &[&str], value: &str) -> Finding {
    schema(
        doc,
        path,
        format!("unknown default inbound policy {value:?} (all-unauthenticated, all-authenticated, cluster-authenticated, cluster-unauthenticated, deny, audit); ignored"),
    )
}

fn missing(doc: &Document, path: &[&str], kind: &str, ns: &str, name: &str) -> Finding {
    Finding::error(
        codes::MISSING_POLICY_REF,
        format!(
            "{} {}/{}: {kind} {ns}/{name} is in no document; the policy authorizes nothing",
            doc.kind, doc.namespace, doc.name
        ),
        &locate(doc, path),
    )
}

mod rate_limit;
mod rules;
#[cfg(test)]
mod tests;
