//! Authorization as a proxy runs it: Istio `AuthorizationPolicy` and Linkerd `Server` /
//! `AuthorizationPolicy` / default inbound policy compiled to plain data
//! (`Inbound.authorization`). The decision is [`crate::authz::authorize`].

use serde::{Deserialize, Serialize};

/// One policy that applies to the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzPolicy {
    /// The policy's name and namespace, for logs, metrics and `weft explain`.
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The kind of document that wrote it (`AuthorizationPolicy`, Linkerd's `Server`, or
    /// `default-inbound-policy`), for logs, metrics and `weft explain`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// `ALLOW`, `DENY` or `AUDIT`. Default `ALLOW`.
    #[serde(default)]
    pub action: AuthzAction,
    /// A policy without rules matches nothing (as `ALLOW` it denies everything).
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
    /// The declared app ports the policy applies to (a Linkerd `Server` covers one port);
    /// empty: every port. A policy out of scope for a port is as if absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Ports the policy does not apply to (a Linkerd default policy skips ports a `Server`
    /// covers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
}

impl Default for AuthzPolicy {
    fn default() -> Self {
        Self {
            name: String::new(),
            namespace: default_namespace(),
            kind: default_kind(),
            action: AuthzAction::default(),
            rules: Vec::new(),
            ports: Vec::new(),
            not_ports: Vec::new(),
        }
    }
}

impl AuthzPolicy {
    /// Whether the policy applies to traffic for this (declared) app port.
    pub fn covers(&self, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port)) && !self.not_ports.contains(&port)
    }
}

/// What a matching policy does. `AUDIT` never changes the decision: a request it matches is
/// logged and counted with the policy. (`CUSTOM` never reaches a proxy.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
    Audit,
}

/// A rule matches when one of `from` matches (or it is empty), one of `to` matches (or it is
/// empty) and every `when` holds. An empty rule matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AuthzOperation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<AuthzCondition>,
}

/// Who sends. Every non-empty field must match. Principals are SPIFFE IDs
/// (`spiffe://cluster.local/ns/default/sa/productpage`) or Istio patterns over them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// The end user's verified JWT principal (`iss/sub`, Istio patterns), HTTP only: a request
    /// without a verified token has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
}

/// What is asked. Every non-empty field must match; methods, paths and hosts are HTTP-only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzOperation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
}

/// `when`: `request.headers[NAME]`, `source.ip`, `source.namespace`, `source.principal`,
/// `destination.port`, and the verified JWT's `request.auth.principal`,
/// `request.auth.audiences`, `request.auth.presenter`, `request.auth.claims[NAME]...`; any
/// other key never holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzCondition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

fn default_kind() -> String {
    "AuthorizationPolicy".into()
}

fn default_namespace() -> String {
    "default".into()
}
