//! The ONE internal model every dialect is translated into (shared/ARCHITECTURE.md, "One
//! model"). Istio, Linkerd, SMI and Gateway API documents all become these types; the control
//! plane compiles them into proxy-config resources, and `weft explain` reads them with the same
//! code. Adding a dialect never touches the proxy.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::proxy_config::{
    AuthzPolicy, ConnectionPool, JwtRule, LoadBalancer, MtlsMode, OutlierDetection, Protocol, ProxyConfig,
};
use crate::route::{Origin, Rule};

/// Everything the documents say about the mesh.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Mesh {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
    /// Routing rules attached to a host, per document.
    pub routes: Vec<HostRoutes>,
    /// Subsets and traffic policy per host (Istio DestinationRule).
    pub destinations: Vec<DestinationPolicy>,
    /// mTLS modes (Istio PeerAuthentication), in document order.
    pub peer_authentications: Vec<PeerAuthentication>,
    /// Authorization (Istio AuthorizationPolicy; Linkerd Servers and default inbound policies,
    /// compiled once all documents are read), in document order.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// End-user authentication (Istio RequestAuthentication), in document order.
    pub request_authentications: Vec<RequestAuthentication>,
    /// Linkerd ServiceProfiles and Linkerd retry/timeout annotations, per host, in load order.
    pub profiles: Vec<HostProfile>,
    /// Outlier detection per host (Istio DestinationRule `outlierDetection`, Linkerd
    /// `balancer.linkerd.io/failure-accrual`), in load order.
    pub outlier_detections: Vec<HostOutlierDetection>,
    /// Local rate limits on workload ports (Linkerd `HTTPLocalRateLimitPolicy` on a Server).
    pub inbound_rate_limits: Vec<InboundRateLimit>,
    /// Istio `Telemetry` documents, in document order.
    pub telemetries: Vec<Telemetry>,
}

/// Rate limits on ports of some workloads, in `namespace`.
#[derive(Debug, Clone, Serialize)]
pub struct InboundRateLimit {
    pub namespace: String,
    pub target: RateLimitTarget,
    pub limit: crate::proxy_config::RateLimit,
    pub origin: Origin,
}

/// What a rate limit applies to. Services and workloads are resolved when proxies' configs are
/// compiled, so the documents may come in any order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RateLimitTarget {
    /// These workloads' `port` (a Linkerd Server, resolved at translation).
    Workloads { names: Vec<String>, port: u16 },
    /// The workload's port, or every port of it.
    Workload { name: String, port: Option<u16> },
    /// The target port of the service's `port` on every workload it selects, or all its ports.
    Service { name: String, port: Option<u16> },
}

/// What one document says about ejecting a host's failing endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct HostOutlierDetection {
    /// Fully qualified service name.
    pub host: String,
    pub origin: Origin,
    pub settings: OutlierDetection,
}

/// Istio `Telemetry`: access logging for the workloads it selects. A field left `None` is not
/// decided by this document (a less specific one, or the proxy's default, decides it).
#[derive(Debug, Clone, Serialize)]
pub struct Telemetry {
    pub name: String,
    pub namespace: String,
    /// `selector.matchLabels`; None: the whole namespace (the whole mesh in a root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    /// The `accessLogging` rules, in order (empty: the document says nothing of access logs).
    pub access_logging: Vec<AccessLogRule>,
    /// What its `tracing` sets (None: the document says nothing of tracing).
    pub tracing: Option<TracingRule>,
    pub origin: Origin,
}

/// A `tracing` entry: each field it sets overrides the less specific levels'.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TracingRule {
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    /// A provider was named: its collector (None: the proxy's `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub collector: Option<Option<String>>,
}

/// One `accessLogging` entry: the side it is for, and either its destinations or `disabled`.
#[derive(Debug, Clone, Serialize)]
pub struct AccessLogRule {
    pub mode: crate::proxy_config::TrafficMode,
    pub disabled: bool,
    /// One per provider, each with this rule's mode and filter.
    pub logs: Vec<crate::proxy_config::AccessLog>,
}

/// What one Linkerd document (a ServiceProfile, or a Service's annotations) says about a host.
#[derive(Debug, Clone, Serialize)]
pub struct HostProfile {
    /// Fully qualified service name.
    pub host: String,
    pub origin: Origin,
    /// A ServiceProfile contributes `routes`, `retry_budget` and `origin`; annotations
    /// `timeout_ms` and `retries`.
    pub profile: crate::route::Profile,
}

/// Istio `PeerAuthentication`: the mTLS mode of the workloads it selects. `None` modes are
/// `UNSET` (inherit from the less specific level).
#[derive(Debug, Clone, Serialize)]
pub struct PeerAuthentication {
    pub name: String,
    pub namespace: String,
    /// `selector.matchLabels`; None: the whole namespace (the whole mesh in a root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    pub mode: Option<MtlsMode>,
    /// `portLevelMtls`: workload (target) port -> mode.
    pub port_level: BTreeMap<u16, Option<MtlsMode>>,
    pub origin: Origin,
}

/// An authorization policy (Istio `AuthorizationPolicy` with `ALLOW`, `DENY` or `AUDIT`; a
/// Linkerd `Server` with the AuthorizationPolicies that target it, or a Linkerd default
/// inbound policy): the compiled form a proxy runs, plus whom it applies to.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizationPolicy {
    /// `selector.matchLabels`; None: the whole namespace (the whole mesh in a root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    /// Only these workloads (by name, in the policy's namespace), on top of `selector`: a
    /// Linkerd `Server` whose `podSelector` was resolved at translation, or a workload's own
    /// default-inbound-policy annotation. None: whatever `selector` picks.
    pub workloads: Option<Vec<String>>,
    pub policy: AuthzPolicy,
    pub origin: Origin,
}

/// Istio `RequestAuthentication`: the JWT issuers the workloads it selects accept.
#[derive(Debug, Clone, Serialize)]
pub struct RequestAuthentication {
    /// `selector.matchLabels`; None: the whole namespace (the whole mesh in a root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    pub rules: Vec<JwtRule>,
    pub origin: Origin,
}

/// A service: a stable name in front of the workloads its selector picks.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    /// Labels of the workloads behind it.
    pub selector: BTreeMap<String, String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub port: u16,
    pub name: Option<String>,
    /// From `appProtocol`, else the port name's prefix (`http-web`, `grpc`, `tcp-db`), else auto.
    pub protocol: Protocol,
    /// Where the workloads listen; default the same as `port`.
    pub target_port: u16,
}

/// A workload: what a Deployment is on Kubernetes (Weft's own `Workload` kind for meshes
/// without Kubernetes).
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ports: Vec<WorkloadPort>,
    /// The command `weft up` runs; empty for a workload started elsewhere.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub replicas: u32,
    /// Where its instances are reached, when the document says (a workload on a VM, as Istio's
    /// `WorkloadEntry.address`); None: each instance's proxy's address as the control plane
    /// sees its connection.
    pub address: Option<std::net::IpAddr>,
    /// The workload opted out of `weft tap` (annotation `config.linkerd.io/disable-tap` or
    /// `weft.dev/disable-tap` set to `"true"`, as Linkerd's).
    pub tap_disabled: bool,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// Which dialect wrote a set of routes. When two route one host, the earlier variant wins
/// (Gateway API over Istio over SMI over a ServiceProfile's `dstOverrides`), and `analyze`
/// warns about the loser. `dstOverrides` rank last: Linkerd's SMI extension wrote a
/// TrafficSplit into them, so a TrafficSplit beside them is the newer statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Dialect {
    GatewayApi,
    Istio,
    Smi,
    LinkerdDstOverrides,
}

/// The rules one document attaches to one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostRoutes {
    pub dialect: Dialect,
    /// Fully qualified service name.
    pub host: String,
    /// The service port the routes apply to; None for every port.
    pub port: Option<u16>,
    pub origin: Origin,
    /// In document order. Gateway API rules carry their precedence key (see `precedence`);
    /// Istio rules are tried first-match in this order.
    pub rules: Vec<Rule>,
    /// Gateway API tie-break: the older route wins.
    pub creation_timestamp: Option<String>,
    /// Load order (files sorted by path, documents in file order): the last tie-break.
    pub seen: usize,
}

/// Subsets and policy for one host (Istio DestinationRule).
#[derive(Debug, Clone, Serialize)]
pub struct DestinationPolicy {
    pub host: String,
    pub origin: Origin,
    pub load_balancer: Option<LoadBalancer>,
    /// `trafficPolicy.connectionPool`, host-wide.
    pub connection_pool: Option<ConnectionPool>,
    pub subsets: Vec<Subset>,
    /// `trafficPolicy.tls.mode` (`DISABLE`, `ISTIO_MUTUAL`...): how clients are told to reach it.
    pub tls_mode: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub load_balancer: Option<LoadBalancer>,
}

// === impl Mesh ===

impl Mesh {
    pub fn service(&self, fqdn: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.fqdn() == fqdn)
    }

    pub fn destination(&self, fqdn: &str) -> Option<&DestinationPolicy> {
        self.destinations.iter().find(|d| d.host == fqdn)
    }

    /// The outlier detection that applies to `fqdn`: an Istio DestinationRule's wins over
    /// Linkerd's failure-accrual annotations (as a routing rule's settings win over Linkerd's),
    /// and the first document loaded wins within a dialect.
    pub fn outlier_detection(&self, fqdn: &str) -> Option<&HostOutlierDetection> {
        let mut for_host = self.outlier_detections.iter().filter(|o| o.host == fqdn);
        let first = for_host.clone().next();
        for_host.find(|o| o.origin.kind == "DestinationRule").or(first)
    }

    /// The route documents that decide `fqdn:port`: those of the winning dialect only, in
    /// the order their rules are tried. Returns the losers too (for `analyze`).
    pub fn routes_for(&self, fqdn: &str, port: u16) -> (Vec<&HostRoutes>, Vec<&HostRoutes>) {
        let mut all: Vec<&HostRoutes> = self
            .routes
            .iter()
            .filter(|r| r.host == fqdn && r.port.is_none_or(|p| p == port))
            .collect();
        let Some(winner) = all.iter().map(|r| r.dialect).min() else {
            return (Vec::new(), Vec::new());
        };
        let losers = all.iter().filter(|r| r.dialect != winner).copied().collect();
        all.retain(|r| r.dialect == winner);
        // Documents in age order (oldest first), then load order: Istio merges nothing and
        // the oldest VirtualService for a host wins; the Gateway API tie-breaks the same way.
        all.sort_by(|a, b| {
            let age = match (&a.creation_timestamp, &b.creation_timestamp) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            age.then(a.seen.cmp(&b.seen))
        });
        (all, losers)
    }
}

impl Mesh {
    /// The route table of `fqdn:port`, in the order rules are tried: the winning dialect's
    /// documents oldest first, each document's rules in order; Gateway API rules instead by
    /// the spec's precedence across all its routes (`gateway_api::sort_by_precedence`).
    pub fn route_table(&self, fqdn: &str, port: u16) -> crate::route::RouteTable {
        let (docs, _losers) = self.routes_for(fqdn, port);
        if docs.first().is_some_and(|d| d.dialect == Dialect::GatewayApi) {
            // The Gateway API orders rules across all routes of the host by the spec's
            // precedence, not by document.
            let mut ranked: Vec<crate::translate::gateway_api::Ranked> = docs
                .iter()
                .flat_map(|d| {
                    d.rules
                        .iter()
                        .map(|r| (r.clone(), d.creation_timestamp.clone(), d.seen))
                })
                .collect();
            crate::translate::gateway_api::sort_by_precedence(&mut ranked);
            return crate::route::RouteTable {
                rules: ranked.into_iter().map(|(r, _, _)| r).collect(),
                profile: self.profile(fqdn),
            };
        }
        crate::route::RouteTable {
            rules: docs.iter().flat_map(|d| d.rules.iter().cloned()).collect(),
            profile: self.profile(fqdn),
        }
    }

    /// The Linkerd profile of `fqdn`: the first ServiceProfile for it (Linkerd reads one per
    /// name; `analyze` reports others), else the Service's retry/timeout annotations. As in
    /// Linkerd, a ServiceProfile makes the Service's annotations ignored (`analyze` says so).
    pub fn profile(&self, fqdn: &str) -> Option<crate::route::Profile> {
        let mut for_host = self.profiles.iter().filter(|p| p.host == fqdn);
        let service_profile = for_host.clone().find(|p| p.profile.origin.is_some());
        service_profile
            .or_else(|| for_host.next())
            .map(|p| p.profile.clone())
    }
}

// === impl Service ===

impl Service {
    pub fn fqdn(&self) -> String {
        ProxyConfig::fqdn(&self.name, &self.namespace)
    }

    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

impl Workload {
    /// Whether a selector picks this workload (an empty selector picks nothing, as for a
    /// Service without selector).
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Protocol from a Kubernetes port's `appProtocol` or its name (Istio's naming convention).
pub fn protocol_of(app_protocol: Option<&str>, name: Option<&str>) -> Protocol {
    let from = |s: &str| match s.to_ascii_lowercase().as_str() {
        "http" | "http1" | "http/1.1" | "kubernetes.io/http" => Some(Protocol::Http),
        "http2" | "h2c" | "kubernetes.io/h2c" => Some(Protocol::Http2),
        "grpc" | "grpc-web" => Some(Protocol::Grpc),
        "tcp" | "mysql" | "mongo" | "redis" | "tls" | "https" => Some(Protocol::Tcp),
        _ => None,
    };
    if let Some(p) = app_protocol.and_then(from) {
        return p;
    }
    name.and_then(|n| from(n.split('-').next().unwrap_or(n)))
        .unwrap_or(Protocol::Auto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_app_protocol_then_name() {
        assert_eq!(protocol_of(Some("grpc"), Some("http")), Protocol::Grpc);
        assert_eq!(protocol_of(None, Some("http-web")), Protocol::Http);
        assert_eq!(protocol_of(None, Some("grpc")), Protocol::Grpc);
        assert_eq!(protocol_of(None, Some("tcp-db")), Protocol::Tcp);
        assert_eq!(protocol_of(None, Some("web")), Protocol::Auto);
        assert_eq!(protocol_of(None, None), Protocol::Auto);
    }
}
