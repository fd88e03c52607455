//! Istio `security.istio.io` `PeerAuthentication`, `AuthorizationPolicy` and
//! `RequestAuthentication` -> the model.
//!
//! Mesh-wide policies are those without selector in a root namespace (`istio-system`, or
//! Weft's `weft-system`), whatever their name (Istio's convention is `default`). Principals
//! are normalized to SPIFFE URIs when they parse as an identity (Istio's scheme-less
//! `cluster.local/ns/default/sa/productpage`, the full URI, or Linkerd's
//! `productpage.default.serviceaccount.identity.linkerd.cluster.local`); patterns with `*`
//! are kept as written and compared without the `spiffe://` scheme.

use std::collections::BTreeMap;

use super::core::{locate, not_implemented};
use super::{origin, Translated};
use crate::authz::{supported_key, ROOT_NAMESPACES};
use crate::finding::{codes, Finding};
use crate::identity::SpiffeId;
use crate::model::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::proxy_config::{
    AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, ClaimToHeader,
    JwtHeader, JwtRule, MtlsMode,
};
use crate::resources::security as sec;
use crate::resources::Document;

/// `PeerAuthentication` -> `model::PeerAuthentication`.
pub(super) fn peer_authentication(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: sec::PeerAuthenticationSpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    let selector = spec.selector.map(|s| s.match_labels);
    let mode = match spec.mtls.as_ref().and_then(|m| m.mode.as_deref()) {
        None => None,
        Some(m) => match parse_mode(m) {
            Ok(m) => m,
            Err(()) => {
                out.findings.push(bad_mode(doc, &["spec", "mtls", "mode"], m));
                None
            }
        },
    };
    let mut port_level = BTreeMap::new();
    if !spec.port_level_mtls.is_empty() && selector.is_none() {
        out.findings.push(not_implemented(
            doc,
            &["spec", "portLevelMtls"],
            "portLevelMtls applies only with a selector (as in Istio); ignored",
        ));
    } else {
        for (port, m) in &spec.port_level_mtls {
            let path = ["spec", "portLevelMtls", port.as_str()];
            let Ok(port_num) = port.trim().parse::<u16>() else {
                out.findings.push(Finding::error(
                    codes::SCHEMA,
                    format!(
                        "PeerAuthentication {}/{}: port {port:?} is not a port number",
                        doc.namespace, doc.name
                    ),
                    &locate(doc, &path),
                ));
                continue;
            };
            let mode = match m.mode.as_deref().map(parse_mode) {
                None => None,
                Some(Ok(mode)) => mode,
                Some(Err(())) => {
                    out.findings.push(bad_mode(
                        doc,
                        &["spec", "portLevelMtls", port.as_str(), "mode"],
                        m.mode.as_deref().unwrap_or(""),
                    ));
                    None
                }
            };
            port_level.insert(port_num, mode);
        }
    }
    out.mesh.peer_authentications.push(PeerAuthentication {
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        selector,
        mode,
        port_level,
        origin: origin(doc),
    });
}

fn parse_mode(m: &str) -> Result<Option<MtlsMode>, ()> {
    match m.to_ascii_uppercase().as_str() {
        "STRICT" => Ok(Some(MtlsMode::Strict)),
        "PERMISSIVE" => Ok(Some(MtlsMode::Permissive)),
        "DISABLE" => Ok(Some(MtlsMode::Disable)),
        "UNSET" | "" => Ok(None),
        _ => Err(()),
    }
}

fn bad_mode(doc: &Document, path: &[&str], m: &str) -> Finding {
    Finding::error(
        codes::SCHEMA,
        format!(
            "PeerAuthentication {}/{}: unknown mTLS mode {m:?} (STRICT, PERMISSIVE, DISABLE or UNSET); treated as UNSET",
            doc.namespace, doc.name
        ),
        &locate(doc, path),
    )
}

/// `AuthorizationPolicy` -> `model::AuthorizationPolicy` (ALLOW, DENY and AUDIT; CUSTOM is
/// reported and left out).
pub(super) fn authorization_policy(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: sec::AuthorizationPolicySpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    if spec.target_ref.is_some() || spec.target_refs.is_some() {
        out.findings.push(not_implemented(
            doc,
            &[
                "spec",
                if spec.target_ref.is_some() {
                    "targetRef"
                } else {
                    "targetRefs"
                },
            ],
            "targetRef (waypoints and gateways); the policy is not applied",
        ));
        return;
    }
    let action = match spec.action.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ALLOW") => AuthzAction::Allow,
        Some("DENY") => AuthzAction::Deny,
        Some("AUDIT") => AuthzAction::Audit,
        Some(a @ "CUSTOM") => {
            out.findings.push(not_implemented(
                doc,
                &["spec", "action"],
                &format!("action {a}; the policy is not applied"),
            ));
            return;
        }
        Some(a) => {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "AuthorizationPolicy {}/{}: unknown action {a:?} (ALLOW, DENY, AUDIT or CUSTOM); the policy is not applied",
                    doc.namespace, doc.name
                ),
                &locate(doc, &["spec", "action"]),
            ));
            return;
        }
    };
    let selector = spec.selector.map(|s| s.match_labels);
    if selector.is_some() && ROOT_NAMESPACES.contains(&doc.namespace.as_str()) {
        // Istio applies a selector in the root namespace to matching workloads in every
        // namespace; Weft applies it to the root namespace's own workloads only.
        out.findings.push(not_implemented(
            doc,
            &["spec", "selector"],
            "a selector in the root namespace applies to that namespace's workloads only",
        ));
    }
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, r) in spec.rules.iter().enumerate() {
        let i = i.to_string();
        let mut rule = AuthzRule::default();
        for (j, f) in r.from.iter().enumerate() {
            let j = j.to_string();
            let s = &f.source;
            for (field, present) in [
                ("remoteIpBlocks", s.remote_ip_blocks.is_some()),
                ("notRemoteIpBlocks", s.not_remote_ip_blocks.is_some()),
            ] {
                if present {
                    out.findings.push(not_implemented(
                        doc,
                        &["spec", "rules", &i, "from", &j, "source", field],
                        "remote-address sources are not evaluated: a source naming remoteIpBlocks never matches",
                    ));
                }
            }
            for (field, blocks) in [("ipBlocks", &s.ip_blocks), ("notIpBlocks", &s.not_ip_blocks)] {
                for (k, b) in blocks.iter().enumerate() {
                    if !valid_block(b) {
                        out.findings.push(Finding::error(
                            codes::SCHEMA,
                            format!(
                                "AuthorizationPolicy {}/{}: {b:?} is not an IP address or CIDR; it matches nothing",
                                doc.namespace, doc.name
                            ),
                            &locate(doc, &["spec", "rules", &i, "from", &j, "source", field, &k.to_string()]),
                        ));
                    }
                }
            }
            let unsupported = s.remote_ip_blocks.is_some();
            rule.from.push(AuthzSource {
                // A source needing what Weft cannot see never matches.
                principals: if unsupported {
                    vec!["\u{0}never".into()]
                } else {
                    s.principals.iter().map(|p| normalize_principal(p)).collect()
                },
                not_principals: s.not_principals.iter().map(|p| normalize_principal(p)).collect(),
                namespaces: s.namespaces.clone(),
                not_namespaces: s.not_namespaces.clone(),
                ip_blocks: s.ip_blocks.clone(),
                not_ip_blocks: s.not_ip_blocks.clone(),
                request_principals: s.request_principals.clone().unwrap_or_default(),
                not_request_principals: s.not_request_principals.clone().unwrap_or_default(),
            });
        }
        for t in &r.to {
            let o = &t.operation;
            rule.to.push(AuthzOperation {
                methods: o.methods.clone(),
                not_methods: o.not_methods.clone(),
                paths: o.paths.clone(),
                not_paths: o.not_paths.clone(),
                ports: o.ports.clone(),
                not_ports: o.not_ports.clone(),
                hosts: o.hosts.clone(),
                not_hosts: o.not_hosts.clone(),
            });
        }
        for (j, c) in r.when.iter().enumerate() {
            if !supported_key(c.key.trim()) {
                out.findings.push(not_implemented(
                    doc,
                    &["spec", "rules", &i, "when", &j.to_string(), "key"],
                    &format!("condition key {}; the condition never holds", c.key),
                ));
            }
            // `source.principal` values are principals: normalized like `principals`.
            let principal = c.key.trim() == "source.principal";
            let values = |v: &[String]| -> Vec<String> {
                v.iter()
                    .map(|x| {
                        if principal {
                            normalize_principal(x)
                        } else {
                            x.clone()
                        }
                    })
                    .collect()
            };
            rule.when.push(AuthzCondition {
                key: c.key.trim().to_string(),
                values: values(&c.values),
                not_values: values(&c.not_values),
            });
        }
        rules.push(rule);
    }
    out.mesh.authorization_policies.push(AuthorizationPolicy {
        selector,
        workloads: None,
        policy: AuthzPolicy {
            name: doc.name.clone(),
            namespace: doc.namespace.clone(),
            action,
            rules,
            ..Default::default()
        },
        origin: origin(doc),
    });
}

/// `RequestAuthentication` -> `model::RequestAuthentication`. A rule that cannot run (no
/// issuer, a key set that does not read, one the proxy cannot fetch) is an error at its field
/// and is kept: its issuer's tokens are then refused (401), as Istio refuses tokens whose
/// keys it could not resolve.
pub(super) fn request_authentication(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: sec::RequestAuthenticationSpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    if spec.target_ref.is_some() || spec.target_refs.is_some() {
        let field = if spec.target_ref.is_some() {
            "targetRef"
        } else {
            "targetRefs"
        };
        out.findings.push(not_implemented(
            doc,
            &["spec", field],
            "targetRef (waypoints and gateways); the policy is not applied",
        ));
        return;
    }
    let selector = spec.selector.map(|s| s.match_labels);
    let mut rules = Vec::with_capacity(spec.jwt_rules.len());
    for (i, r) in spec.jwt_rules.into_iter().enumerate() {
        let i = i.to_string();
        let at = |field: &str| locate(doc, &["spec", "jwtRules", &i, field]);
        let error = |field: &str, message: String| {
            Finding::error(
                codes::SCHEMA,
                format!("RequestAuthentication {}/{}: {message}", doc.namespace, doc.name),
                &at(field),
            )
        };
        let jwks_timeout_ms = match r.timeout.as_deref() {
            None => None,
            Some(t) => match super::istio::parse_duration(t) {
                Some(ms) => Some(ms),
                None => {
                    out.findings
                        .push(error("timeout", format!("timeout {t:?} is not a duration")));
                    None
                }
            },
        };
        let rule = JwtRule {
            policy: doc.name.clone(),
            namespace: doc.namespace.clone(),
            issuer: r.issuer,
            audiences: r.audiences,
            jwks: r.jwks,
            jwks_uri: r.jwks_uri,
            jwks_timeout_ms,
            from_headers: r
                .from_headers
                .into_iter()
                .map(|h| JwtHeader {
                    name: h.name,
                    prefix: h.prefix,
                })
                .collect(),
            from_params: r.from_params,
            from_cookies: r.from_cookies,
            output_payload_to_header: r.output_payload_to_header,
            output_claim_to_headers: r
                .output_claim_to_headers
                .into_iter()
                .map(|c| ClaimToHeader {
                    header: c.header,
                    claim: c.claim,
                })
                .collect(),
            forward_original_token: r.forward_original_token,
        };
        if rule.jwks.is_none() && rule.jwks_uri.is_none() {
            out.findings.push(error(
                "issuer",
                format!(
                    "issuer {:?} names neither jwks nor jwksUri (OpenID discovery from the issuer is not built); its tokens are refused",
                    rule.issuer
                ),
            ));
        }
        for (field, problem) in rule.problems() {
            out.findings
                .push(error(field, format!("{problem}; its tokens are refused")));
        }
        rules.push(rule);
    }
    out.mesh.request_authentications.push(RequestAuthentication {
        selector,
        rules,
        origin: origin(doc),
    });
}

/// Whether `b` is an IP address or a CIDR.
pub(crate) fn valid_block(b: &str) -> bool {
    let (addr, len) = match b.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (b.trim(), None),
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => len.is_none_or(|l| {
            l.parse::<u8>()
                .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
        }),
        Err(_) => false,
    }
}

/// A principal as a SPIFFE URI when it names an identity; a pattern (`*`,
/// `cluster.local/ns/default/*`) as written.
pub fn normalize_principal(p: &str) -> String {
    let p = p.trim();
    if let Ok(id) = SpiffeId::parse(p) {
        return id.to_string();
    }
    if !p.starts_with("spiffe://") {
        if let Ok(id) = SpiffeId::parse(&format!("spiffe://{p}")) {
            return id.to_string();
        }
    }
    p.to_string()
}

#[cfg(test)]
mod tests;
