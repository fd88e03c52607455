//! Core `v1` `Service` and Weft's own `weft.dev/v1alpha1` `Workload` and `RateLimitPolicy`, as
//! written.
//!
//! Fields of the upstream schema that Weft does not need are accepted (so they are not
//! reported as unknown); the translator warns about the ones that would change behaviour.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

/// `Service.spec` (core `v1`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer`, `ExternalName`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// `None` (default) or `ClientIP`.
    #[serde(default)]
    pub session_affinity: Option<String>,
    #[serde(default)]
    pub external_name: Option<String>,
    // Accepted, not acted on: cluster networking outside the mesh.
    #[serde(default)]
    pub session_affinity_config: Option<IgnoredAny>,
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Option<IgnoredAny>,
    #[serde(default)]
    pub external_traffic_policy: Option<IgnoredAny>,
    #[serde(default)]
    pub internal_traffic_policy: Option<IgnoredAny>,
    #[serde(default)]
    pub health_check_node_port: Option<IgnoredAny>,
    #[serde(default)]
    pub ip_families: Option<IgnoredAny>,
    #[serde(default)]
    pub ip_family_policy: Option<IgnoredAny>,
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<IgnoredAny>,
    #[serde(default)]
    pub load_balancer_class: Option<IgnoredAny>,
    #[serde(default)]
    pub load_balancer_source_ranges: Option<IgnoredAny>,
    #[serde(default)]
    pub allocate_load_balancer_node_ports: Option<IgnoredAny>,
    #[serde(default)]
    pub publish_not_ready_addresses: Option<IgnoredAny>,
    #[serde(default)]
    pub traffic_distribution: Option<IgnoredAny>,
}

/// One entry of `Service.spec.ports`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// A number, or the name of a container port (read as text, parsed by the translator).
    #[serde(default)]
    pub target_port: Option<String>,
    /// `TCP` (default), `UDP`, `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
    /// Accepted and ignored: node ports are outside the mesh.
    #[serde(default)]
    pub node_port: Option<IgnoredAny>,
}

/// `Workload.spec` (`weft.dev/v1alpha1`): what a Deployment is on Kubernetes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub ports: Vec<WorkloadPort>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub replicas: Option<u32>,
    /// The IP its instances are reached at (a workload on a VM). Default: the address its proxy
    /// connects to the control plane from; a proxy cannot claim another.
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
}

/// One entry of `Workload.spec.ports`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadPort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// `http`, `http2`, `grpc`, `tcp`; else from the name; else detected.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `RateLimitPolicy.spec` (`weft.dev/v1alpha1`): local rate limits for Istio users, enforced by
/// the proxies of the workloads it targets, as Linkerd's `HTTPLocalRateLimitPolicy` is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitPolicySpec {
    /// `{kind: Service | Workload, name}`, in the policy's namespace.
    pub target_ref: LocalTargetRef,
    /// A service port (of a Service target) or a workload port; every port when absent.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub total: Option<RequestsPerSecond>,
    #[serde(default)]
    pub identity: Option<RequestsPerSecond>,
    #[serde(default)]
    pub overrides: Vec<RateLimitOverride>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalTargetRef {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestsPerSecond {
    pub requests_per_second: u32,
}

/// Callers with a per-identity limit of their own: SPIFFE IDs or `ns/NS/sa/SA`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitOverride {
    pub requests_per_second: u32,
    pub clients: Vec<String>,
}
