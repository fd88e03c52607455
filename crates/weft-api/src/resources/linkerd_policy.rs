//! Linkerd `policy.linkerd.io` (`v1alpha1`, `v1beta1`, `v1beta2`, `v1beta3`) `Server`,
//! `AuthorizationPolicy`, `MeshTLSAuthentication` and `NetworkAuthentication`, as written. The
//! versions differ only in fields Weft accepts in every version (`accessPolicy` is v1beta3).
//! `HTTPRoute` (`policy.linkerd.io`) has the Gateway API's shape and is read with its types.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

/// `Server.spec`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSpec {
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// Mesh expansion (`ExternalWorkload`): not read.
    #[serde(default)]
    pub external_workload_selector: Option<IgnoredAny>,
    /// A port number or a port name of the selected workloads.
    pub port: PortRef,
    /// `unknown`, `HTTP/1`, `HTTP/2`, `gRPC`, `opaque`, `TLS`.
    #[serde(default)]
    pub proxy_protocol: Option<String>,
    /// What traffic no AuthorizationPolicy allows gets (2.16+): default `deny`.
    #[serde(default)]
    pub access_policy: Option<String>,
}

/// A Kubernetes label selector: `matchLabels` and `matchExpressions` ANDed; empty selects all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelExpression>,
}

/// `{key, operator: In | NotIn | Exists | DoesNotExist, values}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelExpression {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// A port by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl PortRef {
    /// The port number, when written as one (YAML scalars may arrive as text).
    pub fn number(&self) -> Option<u16> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Name(s) => s.trim().parse().ok(),
        }
    }
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(s) => f.write_str(s),
        }
    }
}

impl Default for PortRef {
    fn default() -> Self {
        Self::Number(0)
    }
}

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub required_authentication_refs: Vec<TargetRef>,
}

/// `HTTPLocalRateLimitPolicy.spec` (policy.linkerd.io/v1alpha1): local rate limits on the
/// Server it targets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpLocalRateLimitPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub total: Option<RequestsPerSecond>,
    #[serde(default)]
    pub identity: Option<RequestsPerSecond>,
    #[serde(default)]
    pub overrides: Vec<RateLimitOverride>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestsPerSecond {
    pub requests_per_second: u32,
}

/// Clients (by `ServiceAccount`) with a per-identity limit of their own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitOverride {
    pub requests_per_second: u32,
    #[serde(default)]
    pub client_refs: Vec<TargetRef>,
}

/// A reference to another resource (`group`, `kind`, `name`, optional `namespace`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `MeshTLSAuthentication.spec`: the client's mTLS identity must be one of these.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTlsAuthenticationSpec {
    /// Linkerd identity names (`sa.ns.serviceaccount.identity.linkerd.cluster.local`), SPIFFE
    /// IDs, or `*` (any authenticated client).
    #[serde(default)]
    pub identities: Vec<String>,
    /// `ServiceAccount` (by name, `*` for all in the namespace) or `Namespace` references.
    #[serde(default)]
    pub identity_refs: Vec<TargetRef>,
}

/// `NetworkAuthentication.spec`: the client's address must be in one of these networks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkAuthenticationSpec {
    #[serde(default)]
    pub networks: Vec<Network>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    pub cidr: String,
    #[serde(default)]
    pub except: Vec<String>,
}
