//! The rules Linkerd AuthorizationPolicies give a Server: who each policy admits (its
//! required authentications, resolved by name) and what it covers (the whole Server, or the
//! matches of an inbound route).

use std::collections::BTreeMap;

use super::{is_server, missing, schema, Pending, NEVER, POLICY_GROUP};
use crate::identity::{SpiffeId, DEFAULT_TRUST_DOMAIN};
use crate::proxy_config::{AuthzCondition, AuthzOperation, AuthzRule, AuthzSource};
use crate::resources::gateway_api::{HttpRouteSpec, PathMatchType, ValueMatchType};
use crate::resources::linkerd_policy as lp;
use crate::resources::Document;
use crate::translate::core::not_implemented;
use crate::translate::security::normalize_principal;
use crate::translate::Translated;

/// Who an AuthorizationPolicy admits: its `from` sources and `when` conditions, keyed by the
/// policy's index in `pending.policies`. A policy with a broken reference is absent.
pub(super) type Authn = BTreeMap<usize, (Vec<AuthzSource>, Vec<AuthzCondition>)>;

pub(super) fn authentications(pending: &Pending, out: &mut Translated) -> Authn {
    let mut all = Authn::new();
    'policy: for (index, (adoc, a)) in pending.policies.iter().enumerate() {
        if !target_exists(adoc, a, pending, out) {
            continue;
        }
        let mut from = Vec::new();
        let mut when = Vec::new();
        for (k, r) in a.required_authentication_refs.iter().enumerate() {
            let path = ["spec", "requiredAuthenticationRefs", &k.to_string()];
            let ns = r.namespace.clone().unwrap_or_else(|| adoc.namespace.clone());
            let name = r.name.clone().unwrap_or_default();
            match r.kind.as_str() {
                "MeshTLSAuthentication" => {
                    let Some(i) = find_doc(&pending.mesh_tls, &ns, &name) else {
                        out.findings
                            .push(missing(adoc, &path, "MeshTLSAuthentication", &ns, &name));
                        continue 'policy;
                    };
                    let (mdoc, m) = &pending.mesh_tls[i];
                    when.push(AuthzCondition {
                        key: "source.principal".into(),
                        values: identities(mdoc, m, out),
                        not_values: Vec::new(),
                    });
                }
                "NetworkAuthentication" => {
                    let Some(i) = find_doc(&pending.networks, &ns, &name) else {
                        out.findings
                            .push(missing(adoc, &path, "NetworkAuthentication", &ns, &name));
                        continue 'policy;
                    };
                    let nets = &pending.networks[i].1.networks;
                    if from.is_empty() {
                        from = nets
                            .iter()
                            .map(|n| AuthzSource {
                                ip_blocks: vec![n.cidr.clone()],
                                not_ip_blocks: n.except.clone(),
                                ..Default::default()
                            })
                            .collect();
                        if from.is_empty() {
                            from.push(AuthzSource {
                                ip_blocks: vec![NEVER.into()],
                                ..Default::default()
                            });
                        }
                    } else {
                        let mut values: Vec<String> = nets.iter().map(|n| n.cidr.clone()).collect();
                        if values.is_empty() {
                            values.push(NEVER.into());
                        }
                        when.push(AuthzCondition {
                            key: "source.ip".into(),
                            values,
                            not_values: nets.iter().flat_map(|n| n.except.clone()).collect(),
                        });
                    }
                }
                "ServiceAccount" => {
                    let id = SpiffeId::new(DEFAULT_TRUST_DOMAIN, &ns, &name)
                        .map_or_else(|_| NEVER.to_string(), |id| id.to_string());
                    when.push(AuthzCondition {
                        key: "source.principal".into(),
                        values: vec![id],
                        not_values: Vec::new(),
                    });
                }
                other => {
                    out.findings.push(schema(
                        adoc,
                        &path,
                        format!("authentication kind {other:?} (MeshTLSAuthentication, NetworkAuthentication or ServiceAccount); the policy authorizes nothing"),
                    ));
                    continue 'policy;
                }
            }
        }
        all.insert(index, (from, when));
    }
    all
}

/// Whether the policy's target is in the documents (a finding says why not).
fn target_exists(
    adoc: &Document,
    a: &lp::AuthorizationPolicySpec,
    pending: &Pending,
    out: &mut Translated,
) -> bool {
    let t = &a.target_ref;
    let ns = t.namespace.clone().unwrap_or_else(|| adoc.namespace.clone());
    let name = t.name.clone().unwrap_or_default();
    let path = ["spec", "targetRef"];
    let found = match t.kind.as_str() {
        "Namespace" => return true,
        "Server" => find_doc(&pending.servers, &ns, &name).is_some(),
        "HTTPRoute" => route_of(pending, t, &ns, &name).is_some(),
        other => {
            out.findings.push(not_implemented(
                adoc,
                &path,
                &format!("targetRef kind {other} (Server, HTTPRoute with a Server parent, or Namespace); the policy is not applied"),
            ));
            return false;
        }
    };
    if !found {
        let kind = if t.kind == "HTTPRoute" {
            "HTTPRoute (policy.linkerd.io, with a Server parent)"
        } else {
            t.kind.as_str()
        };
        out.findings.push(missing(adoc, &path, kind, &ns, &name));
    }
    found
}

/// The inbound route an AuthorizationPolicy's targetRef names (its group, default
/// `policy.linkerd.io`, must be the route's).
fn route_of<'a>(
    pending: &'a Pending,
    t: &lp::TargetRef,
    ns: &str,
    name: &str,
) -> Option<&'a (Document, HttpRouteSpec)> {
    let group = t
        .group
        .as_deref()
        .filter(|g| !g.is_empty())
        .unwrap_or(POLICY_GROUP);
    pending
        .routes
        .iter()
        .find(|(d, _)| d.namespace == ns && d.name == name && d.group() == group)
}

fn find_doc<T>(docs: &[(Document, T)], ns: &str, name: &str) -> Option<usize> {
    docs.iter().position(|(d, _)| d.namespace == ns && d.name == name)
}

/// A MeshTLSAuthentication's identities as principal patterns (SPIFFE IDs, `td/ns/x/sa/*`,
/// `*`). Linkerd names (`sa.ns.serviceaccount.identity.linkerd.td`, also `*.ns...`) become
/// SPIFFE IDs.
fn identities(doc: &Document, m: &lp::MeshTlsAuthenticationSpec, out: &mut Translated) -> Vec<String> {
    let mut ids = Vec::new();
    for id in &m.identities {
        let id = id.trim();
        if let Some(rest) = id.strip_prefix("*.") {
            if let Some((ns, td)) = rest.split_once(".serviceaccount.identity.linkerd.") {
                ids.push(format!("{td}/ns/{ns}/sa/*"));
                continue;
            }
        }
        ids.push(normalize_principal(id));
    }
    for (k, r) in m.identity_refs.iter().enumerate() {
        let ns = r.namespace.clone().unwrap_or_else(|| doc.namespace.clone());
        let name = r.name.as_deref().unwrap_or("*");
        match r.kind.as_str() {
            "ServiceAccount" if name == "*" => ids.push(format!("{DEFAULT_TRUST_DOMAIN}/ns/{ns}/sa/*")),
            "ServiceAccount" => ids.push(
                SpiffeId::new(DEFAULT_TRUST_DOMAIN, &ns, name)
                    .map_or_else(|_| NEVER.to_string(), |id| id.to_string()),
            ),
            "Namespace" if name == "*" => ids.push("*".into()),
            "Namespace" => ids.push(format!("{DEFAULT_TRUST_DOMAIN}/ns/{name}/*")),
            other => out.findings.push(schema(
                doc,
                &["spec", "identityRefs", &k.to_string(), "kind"],
                format!("identityRefs kind {other:?} (ServiceAccount or Namespace); ignored"),
            )),
        }
    }
    if ids.is_empty() {
        ids.push(NEVER.into());
    }
    ids
}

/// The rules the AuthorizationPolicies targeting a Server give it. Once a Server has inbound
/// HTTPRoutes, only requests matching one of them are served (Linkerd answers others 404;
/// Weft denies them, 403), so policies on the whole Server admit only what its routes match.
pub(super) fn server_rules(sdoc: &Document, pending: &Pending, authn: &Authn) -> Vec<AuthzRule> {
    let is_parent = |spec: &HttpRouteSpec| {
        spec.parent_refs.iter().any(|p| {
            is_server(p)
                && p.name == sdoc.name
                && p.namespace.as_deref().is_none_or(|ns| ns == sdoc.namespace)
        })
    };
    let routes: Vec<&(Document, HttpRouteSpec)> = pending
        .routes
        .iter()
        .filter(|(r, spec)| r.namespace == sdoc.namespace && is_parent(spec))
        .collect();
    let whole_server = |base: AuthzRule| -> Vec<AuthzRule> {
        if routes.is_empty() {
            return vec![base];
        }
        routes
            .iter()
            .flat_map(|(_, spec)| route_rules(spec, &base))
            .collect()
    };
    let mut rules = Vec::new();
    for (index, (adoc, a)) in pending.policies.iter().enumerate() {
        if adoc.namespace != sdoc.namespace {
            continue;
        }
        let Some((from, when)) = authn.get(&index) else {
            continue;
        };
        let t = &a.target_ref;
        let name = t.name.as_deref();
        let base = AuthzRule {
            from: from.clone(),
            to: Vec::new(),
            when: when.clone(),
        };
        match t.kind.as_str() {
            "Server" if name == Some(sdoc.name.as_str()) => rules.extend(whole_server(base)),
            "Namespace" if name.is_none_or(|n| n == sdoc.namespace) => rules.extend(whole_server(base)),
            "HTTPRoute" => {
                let named = route_of(pending, t, &sdoc.namespace, name.unwrap_or_default());
                let route = routes
                    .iter()
                    .find(|r| named.is_some_and(|n| std::ptr::eq(**r, n)));
                if let Some((_, spec)) = route {
                    rules.extend(route_rules(spec, &base));
                }
            }
            _ => {}
        }
    }
    rules
}

/// One rule per match of an inbound route: the route's path, method and headers as the
/// operation and conditions, on top of who the policy admits.
fn route_rules(spec: &HttpRouteSpec, base: &AuthzRule) -> Vec<AuthzRule> {
    let mut rules = Vec::new();
    for r in &spec.rules {
        for m in &r.matches {
            let mut op = AuthzOperation::default();
            let mut rule = base.clone();
            if let Some(p) = &m.path {
                match p.kind {
                    PathMatchType::Exact => op.paths.push(p.value.clone()),
                    PathMatchType::PathPrefix => {
                        let prefix = p.value.trim_end_matches('/');
                        if !prefix.is_empty() {
                            // A path prefix matches whole segments.
                            op.paths.push(prefix.to_string());
                            op.paths.push(format!("{prefix}/*"));
                        }
                    }
                    // Reported by `http_route`: a match Weft cannot evaluate admits nothing.
                    PathMatchType::RegularExpression => op.paths.push(NEVER.into()),
                }
            }
            if let Some(method) = &m.method {
                op.methods.push(method.clone());
            }
            for h in &m.headers {
                rule.when.push(AuthzCondition {
                    key: format!("request.headers[{}]", h.name.to_ascii_lowercase()),
                    values: vec![if h.kind == ValueMatchType::Exact {
                        h.value.clone()
                    } else {
                        NEVER.into()
                    }],
                    not_values: Vec::new(),
                });
            }
            if !m.query_params.is_empty() {
                op.paths = vec![NEVER.into()];
            }
            rule.to = vec![op];
            rules.push(rule);
        }
    }
    rules
}
