//! Authorization and mTLS modes: which policies apply to a workload, and the pure decision a
//! proxy runs on every inbound request and connection (and `weft explain` runs on paper).
//!
//! Istio semantics:
//! - DENY policies first: any matching rule denies. Then, if the workload has any ALLOW
//!   policy, only a request some ALLOW rule matches is allowed. No policy: allowed.
//! - An ALLOW policy without rules (`spec: {}`) matches nothing, so it denies everything; a
//!   rule `{}` matches every request.
//! - End-user identity: `requestPrincipals` and `request.auth.*` conditions read the JWT the
//!   proxy verified (`AuthzRequest::request_auth`, `iss/sub`); a request without one matches
//!   no request principal (`requestPrincipals: ["*"]` requires a token, `notRequestPrincipals:
//!   ["*"]` matches only requests without one).
//! - HTTP-only fields (methods, paths, hosts and their `not*`, `request.headers[...]` and
//!   `request.auth.*` conditions, request principals) on a TCP connection (`method: None`), as Istio's "Authorization for TCP
//!   traffic" documents: in an ALLOW rule they make the whole rule never match (so the
//!   connection is denied unless another rule allows it); in a DENY rule they are ignored and
//!   the rest of the rule still applies (more restrictive: a DENY on `methods: [GET]` for a
//!   TCP port denies every connection to it).
//! - AUDIT policies never change the outcome: the first AUDIT rule that matches is reported
//!   (`AuthzDecision::audit`) so the proxy logs and counts the request with the policy.
//! - A policy scoped to ports (`AuthzPolicy::ports` / `not_ports`, how Linkerd's per-port
//!   `Server` and default inbound policy are written) is ignored for traffic to other ports.
//!
//! Istio and Linkerd on one workload: both compile to these policies and combine by the rules
//! above. Every in-scope DENY denies first; then the in-scope ALLOW policies are alternatives
//! (one matching rule in any of them allows), exactly as several Istio ALLOW policies are. A
//! Linkerd `Server` is an ALLOW policy scoped to its port whose rules are the Linkerd
//! AuthorizationPolicies targeting it (none: it denies everything on that port).
//! - String matching: exact, prefix `abc*`, suffix `*abc`, and `*` (any non-empty value).
//!   Principals compare without the `spiffe://` scheme, so `cluster.local/ns/default/sa/x` as
//!   Istio writes it and the full URI are the same.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Mesh, PeerAuthentication};
use crate::proxy_config::{
    AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, JwtRule, MtlsMode,
    RequestAuth,
};
use crate::route::{value_matches, Headers};

/// Namespaces whose unselected policies apply to the whole mesh (Istio's root namespace;
/// Weft's own namespace).
pub const ROOT_NAMESPACES: [&str; 2] = ["istio-system", "weft-system"];

/// What the decision sees of one request or connection.
#[derive(Clone)]
pub struct AuthzRequest<'a> {
    /// The peer's SPIFFE ID from its certificate; None for plaintext.
    pub source_principal: Option<&'a str>,
    /// The namespace of that identity; None for plaintext.
    pub source_namespace: Option<&'a str>,
    pub source_ip: IpAddr,
    /// None for a TCP connection.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub host: Option<&'a str>,
    /// The app port the traffic is for.
    pub port: u16,
    /// The request's headers, every value of each (see [`Headers`]).
    pub headers: &'a dyn Headers,
    /// The end user's verified JWT (Istio `RequestAuthentication`); None without one.
    pub request_auth: Option<&'a RequestAuth>,
}

impl std::fmt::Debug for AuthzRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzRequest")
            .field("source_principal", &self.source_principal)
            .field("source_ip", &self.source_ip)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("request_principal", &self.request_auth.map(|a| &a.principal))
            .finish_non_exhaustive()
    }
}

/// The outcome, with the policy and rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthzDecision {
    pub allowed: bool,
    /// The action of the deciding policy: DENY (a DENY rule matched), ALLOW (an ALLOW rule
    /// matched, or none did while ALLOW policies exist); None without policies.
    pub action: Option<AuthzAction>,
    /// `(namespace, name)` of the deciding policy (when no ALLOW rule matched, the first ALLOW
    /// policy in scope, with `rule` None); None without policies.
    pub policy: Option<(String, String)>,
    /// Index of the matching rule in that policy.
    pub rule: Option<usize>,
    /// The deciding policy's kind (`AuthorizationPolicy`, `Server`, `default-inbound-policy`).
    pub kind: Option<String>,
    /// The AUDIT policy that matched, if any: the request is logged and counted with it.
    pub audit: Option<AuditMatch>,
}

/// An AUDIT policy's matching rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditMatch {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
}

impl AuthzDecision {
    /// `ns/name[rule]` for logs, or `-`.
    pub fn describe(&self) -> String {
        match (&self.policy, self.rule) {
            (Some((ns, name)), Some(rule)) => format!("{} {ns}/{name} rule {rule}", self.kind_name()),
            (Some((ns, name)), None) => format!("{} {ns}/{name}: no ALLOW rule matched", self.kind_name()),
            _ if self.action == Some(AuthzAction::Allow) => "no ALLOW policy matched".into(),
            _ => "-".into(),
        }
    }
}

impl AuthzDecision {
    fn kind_name(&self) -> &str {
        self.kind.as_deref().unwrap_or("AuthorizationPolicy")
    }

    /// The deciding policy as a bounded label value for metrics: `kind/ns/name`, `-` without.
    pub fn policy_label(&self) -> String {
        match &self.policy {
            Some((ns, name)) => format!("{}/{ns}/{name}", self.kind_name()),
            None => "-".into(),
        }
    }
}

/// Decides one request or connection against the workload's policies.
pub fn authorize(policies: &[AuthzPolicy], req: &AuthzRequest<'_>) -> AuthzDecision {
    let in_scope = |action: AuthzAction| {
        policies
            .iter()
            .filter(move |p| p.action == action && p.covers(req.port))
    };
    // AUDIT rules see the request as a DENY would (the more inclusive reading of HTTP-only
    // fields on TCP): auditing too much is safer than too little.
    let audit = in_scope(AuthzAction::Audit).find_map(|p| {
        let rule = p.rules.iter().position(|r| rule_matches(r, req, true))?;
        Some(AuditMatch {
            kind: p.kind.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            rule,
        })
    });
    let decided = |allowed: bool, action: AuthzAction, p: &AuthzPolicy, i: usize| AuthzDecision {
        allowed,
        action: Some(action),
        policy: Some((p.namespace.clone(), p.name.clone())),
        rule: Some(i),
        kind: Some(p.kind.clone()),
        audit: audit.clone(),
    };
    for p in in_scope(AuthzAction::Deny) {
        if let Some(i) = p.rules.iter().position(|r| rule_matches(r, req, true)) {
            return decided(false, AuthzAction::Deny, p, i);
        }
    }
    let mut allow_policies = in_scope(AuthzAction::Allow).peekable();
    let any_allow = allow_policies.peek().is_some();
    // Without a matching rule the denial names the first ALLOW policy in scope, so a port
    // closed by a Linkerd `Server` (or an empty Istio ALLOW) says which document closed it.
    let mut first: Option<&AuthzPolicy> = None;
    for p in allow_policies {
        first.get_or_insert(p);
        if let Some(i) = p.rules.iter().position(|r| rule_matches(r, req, false)) {
            return decided(true, AuthzAction::Allow, p, i);
        }
    }
    AuthzDecision {
        allowed: !any_allow,
        action: any_allow.then_some(AuthzAction::Allow),
        policy: first.map(|p| (p.namespace.clone(), p.name.clone())),
        rule: None,
        kind: first.map(|p| p.kind.clone()),
        audit,
    }
}

fn rule_matches(rule: &AuthzRule, req: &AuthzRequest<'_>, deny: bool) -> bool {
    let tcp = req.method.is_none();
    (rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, req, tcp, deny)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, req, tcp, deny)))
        && rule.when.iter().all(|c| condition_holds(c, req, tcp, deny))
}

fn source_matches(s: &AuthzSource, req: &AuthzRequest<'_>, tcp: bool, deny: bool) -> bool {
    let jwt = !(s.request_principals.is_empty() && s.not_request_principals.is_empty());
    if tcp && jwt && !deny {
        // HTTP-only, as methods and paths: an ALLOW source naming request principals never
        // matches a TCP connection (in a DENY they are ignored below).
        return false;
    }
    let request_principal = req.request_auth.map(|a| a.principal.as_str());
    let request_principal_is = |patterns: &[String]| {
        request_principal.is_some_and(|p| patterns.iter().any(|pat| string_matches(pat, p)))
    };
    let jwt_ok = tcp
        || ((s.request_principals.is_empty() || request_principal_is(&s.request_principals))
            && (s.not_request_principals.is_empty() || !request_principal_is(&s.not_request_principals)));
    let principal = req.source_principal.map(strip_scheme);
    let principal_is = |patterns: &[String]| {
        principal.is_some_and(|p| patterns.iter().any(|pat| string_matches(strip_scheme(pat), p)))
    };
    let ns_is = |patterns: &[String]| {
        req.source_namespace
            .is_some_and(|ns| patterns.iter().any(|pat| string_matches(pat, ns)))
    };
    let ip_in = |blocks: &[String]| blocks.iter().any(|b| ip_in_block(req.source_ip, b));
    jwt_ok
        && (s.principals.is_empty() || principal_is(&s.principals))
        && (s.not_principals.is_empty() || !principal_is(&s.not_principals))
        && (s.namespaces.is_empty() || ns_is(&s.namespaces))
        && (s.not_namespaces.is_empty() || !ns_is(&s.not_namespaces))
        && (s.ip_blocks.is_empty() || ip_in(&s.ip_blocks))
        && (s.not_ip_blocks.is_empty() || !ip_in(&s.not_ip_blocks))
}

fn operation_matches(o: &AuthzOperation, req: &AuthzRequest<'_>, tcp: bool, deny: bool) -> bool {
    // Compared as numbers: no string per request.
    let is_port = |p: &String| p.trim().parse::<u16>() == Ok(req.port);
    let ports_ok = (o.ports.is_empty() || o.ports.iter().any(is_port))
        && (o.not_ports.is_empty() || !o.not_ports.iter().any(is_port));
    let http_only = !(o.methods.is_empty()
        && o.not_methods.is_empty()
        && o.paths.is_empty()
        && o.not_paths.is_empty()
        && o.hosts.is_empty()
        && o.not_hosts.is_empty());
    if tcp && http_only {
        // ALLOW: the rule never matches TCP; DENY: the HTTP-only fields are ignored.
        return deny && ports_ok;
    }
    let any = |patterns: &[String], value: Option<&str>, ci: bool| {
        value.is_some_and(|v| {
            patterns.iter().any(|p| {
                if ci {
                    string_matches_ignore_case(p, v)
                } else {
                    string_matches(p, v)
                }
            })
        })
    };
    // Hosts match the Host/:authority with or without its port, case-insensitively.
    let host_any =
        |patterns: &[String]| any(patterns, req.host, true) || any(patterns, req.host.map(strip_port), true);
    ports_ok
        && (o.methods.is_empty() || any(&o.methods, req.method, false))
        && (o.not_methods.is_empty() || !any(&o.not_methods, req.method, false))
        && (o.paths.is_empty() || any(&o.paths, req.path, false))
        && (o.not_paths.is_empty() || !any(&o.not_paths, req.path, false))
        && (o.hosts.is_empty() || host_any(&o.hosts))
        && (o.not_hosts.is_empty() || !host_any(&o.not_hosts))
}

fn condition_holds(c: &AuthzCondition, req: &AuthzRequest<'_>, tcp: bool, deny: bool) -> bool {
    let key = c.key.trim();
    if let Some(name) = header_key(key) {
        if tcp {
            // HTTP-only: never holds in ALLOW, ignored in DENY.
            return deny;
        }
        // Every value of the header counts: a value matches when it matches a pattern, the
        // condition's `values` when some value does, its `notValues` when none does.
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(name.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(name)
        };
        let hit = |patterns: &[String]| {
            req.headers.any_value(&name, &mut |v| {
                value_matches(v, |s| patterns.iter().any(|p| string_matches(p, s)))
            })
        };
        return (c.values.is_empty() || hit(&c.values)) && (c.not_values.is_empty() || !hit(&c.not_values));
    }
    if key.starts_with(REQUEST_AUTH) {
        if tcp {
            // HTTP-only, as request headers.
            return deny;
        }
        let values = request_auth_values(key, req.request_auth);
        let hit = |patterns: &[String]| {
            values
                .iter()
                .any(|v| patterns.iter().any(|p| string_matches(p, v)))
        };
        return (c.values.is_empty() || hit(&c.values)) && (c.not_values.is_empty() || !hit(&c.not_values));
    }
    let value: Option<String> = match key {
        "source.ip" => {
            let ip = req.source_ip;
            let hit = |v: &[String]| v.iter().any(|b| ip_in_block(ip, b));
            return (c.values.is_empty() || hit(&c.values))
                && (c.not_values.is_empty() || !hit(&c.not_values));
        }
        "source.namespace" => req.source_namespace.map(str::to_string),
        "source.principal" => req.source_principal.map(|p| strip_scheme(p).to_string()),
        "destination.port" => Some(req.port.to_string()),
        // Keys Weft cannot evaluate (SNI, remote.ip...) never hold; the translator
        // reported them.
        _ => return false,
    };
    let principal = key == "source.principal";
    let hit = |patterns: &[String]| {
        value.as_deref().is_some_and(|v| {
            patterns.iter().any(|p| {
                let p = if principal { strip_scheme(p) } else { p.as_str() };
                string_matches(p, v)
            })
        })
    };
    (c.values.is_empty() || hit(&c.values)) && (c.not_values.is_empty() || !hit(&c.not_values))
}

const REQUEST_AUTH: &str = "request.auth.";

/// The values a `request.auth.*` key has for this request's verified JWT (none without one,
/// or for a key Weft does not know).
fn request_auth_values<'a>(key: &str, auth: Option<&'a RequestAuth>) -> Vec<&'a str> {
    let Some(auth) = auth else {
        return Vec::new();
    };
    match key {
        "request.auth.principal" => vec![auth.principal.as_str()],
        "request.auth.audiences" => auth.claim_values(&["aud"]),
        "request.auth.presenter" => auth.claim_values(&["azp"]),
        _ => claim_path(key).map_or_else(Vec::new, |path| auth.claim_values(&path)),
    }
}

/// `request.auth.claims[a][b]` -> `[a, b]` (nested claims); None for another key or a
/// malformed one.
pub fn claim_path(key: &str) -> Option<Vec<&str>> {
    let mut rest = key.strip_prefix("request.auth.claims")?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest.strip_prefix('[')?.split_once(']')?;
        if name.is_empty() {
            return None;
        }
        path.push(name);
        rest = after;
    }
    (!path.is_empty()).then_some(path)
}

/// `request.headers[NAME]` -> `NAME`.
pub fn header_key(key: &str) -> Option<&str> {
    key.strip_prefix("request.headers[")?.strip_suffix(']')
}

/// The `when` keys the decision evaluates.
pub fn supported_key(key: &str) -> bool {
    header_key(key).is_some()
        || claim_path(key).is_some()
        || matches!(
            key,
            "source.ip"
                | "source.namespace"
                | "source.principal"
                | "destination.port"
                | "request.auth.principal"
                | "request.auth.audiences"
                | "request.auth.presenter"
        )
}

/// Istio's string match: exact, `prefix*`, `*suffix`, `*` (any non-empty value).
pub fn string_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

/// [`string_matches`], ASCII case-insensitively, without lower-casing copies.
fn string_matches_ignore_case(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value
            .get(..prefix.len())
            .is_some_and(|v| v.eq_ignore_ascii_case(prefix));
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        let start = value.len().checked_sub(suffix.len());
        return start
            .and_then(|s| value.get(s..))
            .is_some_and(|v| v.eq_ignore_ascii_case(suffix));
    }
    pattern.eq_ignore_ascii_case(value)
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("spiffe://").unwrap_or(s)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether `ip` is in `block` (`10.0.0.1` or `10.0.0.0/8`; IPv6 too).
pub fn ip_in_block(ip: IpAddr, block: &str) -> bool {
    let (addr, len) = match block.trim().split_once('/') {
        Some((a, l)) => match l.parse::<u32>() {
            Ok(l) => (a, Some(l)),
            Err(_) => return false,
        },
        None => (block.trim(), None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

// === Which policies apply to a workload ===

fn selects(selector: &Option<BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> bool {
    match selector {
        // Istio: an empty matchLabels selects every workload in the namespace.
        Some(sel) => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
        None => true,
    }
}

/// The authorization policies of a workload, in document order: those in its namespace whose
/// selector picks it (or without selector) and, when they name workloads, name it; and those
/// without selector in a root namespace.
pub fn policies_for(
    mesh: &Mesh,
    namespace: &str,
    workload: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<AuthzPolicy> {
    mesh.authorization_policies
        .iter()
        .filter(|p| {
            let named = p
                .workloads
                .as_ref()
                .is_none_or(|w| w.iter().any(|w| w == workload));
            (p.origin.namespace == namespace && selects(&p.selector, labels) && named)
                || (ROOT_NAMESPACES.contains(&p.origin.namespace.as_str())
                    && p.selector.is_none()
                    && p.workloads.is_none())
        })
        .map(|p| p.policy.clone())
        .collect()
}

/// The JWT rules of a workload (Istio merges every RequestAuthentication that applies): those
/// in its namespace whose selector picks it (or without selector), and those without selector
/// in a root namespace, in document order.
pub fn authentications_for(mesh: &Mesh, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<JwtRule> {
    applicable_authentications(mesh, namespace, labels)
        .flat_map(|ra| ra.rules.iter().cloned())
        .collect()
}

/// The RequestAuthentications that apply to a workload, in document order.
pub fn applicable_authentications<'m>(
    mesh: &'m Mesh,
    namespace: &'m str,
    labels: &'m BTreeMap<String, String>,
) -> impl Iterator<Item = &'m crate::model::RequestAuthentication> + 'm {
    mesh.request_authentications.iter().filter(move |ra| {
        (ra.origin.namespace == namespace && selects(&ra.selector, labels))
            || (ROOT_NAMESPACES.contains(&ra.origin.namespace.as_str()) && ra.selector.is_none())
    })
}

/// The mTLS modes of a workload: its own (workload > namespace > mesh, default PERMISSIVE)
/// and per port where a `portLevelMtls` names one. UNSET inherits from the less specific level.
pub fn mtls_for(
    mesh: &Mesh,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> (MtlsMode, BTreeMap<u16, MtlsMode>) {
    let pas = &mesh.peer_authentications;
    let root = |p: &&PeerAuthentication| ROOT_NAMESPACES.contains(&p.namespace.as_str());
    let mesh_wide = pas.iter().filter(root).find(|p| p.selector.is_none());
    let ns_wide = pas
        .iter()
        .find(|p| p.namespace == namespace && p.selector.is_none() && !root(p));
    let workload = pas.iter().find(|p| {
        p.namespace == namespace
            && p.selector
                .as_ref()
                .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    });
    let mut mode = MtlsMode::Permissive;
    for level in [mesh_wide, ns_wide, workload].into_iter().flatten() {
        if let Some(m) = level.mode {
            mode = m;
        }
    }
    let ports = workload
        .map(|w| {
            w.port_level
                .iter()
                .filter_map(|(port, m)| Some((*port, (*m)?)))
                .collect()
        })
        .unwrap_or_default();
    (mode, ports)
}

#[cfg(test)]
mod tests;
