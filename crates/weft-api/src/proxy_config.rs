//! What a proxy runs on: typed, keyed resources.
//!
//! A `ProxyConfig` is a snapshot of exactly the resources the control plane pushes (see
//! shared/ARCHITECTURE.md, "What travels between the planes"): the proxy's own `InboundListener`s,
//! the `MeshService`s it may reach and their `EndpointSet`s, plus what a proxy needs before it can
//! reach anyone (workload identity, admin address, limits). `weft proxy --config FILE` reads this
//! structure from YAML or JSON, so a standalone proxy and a pushed one run the same code.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::canonical::PathNormalization;

mod authn;
mod authz;
mod load;
mod resilience;
mod telemetry;
mod validate;

pub use authn::{ClaimToHeader, JwtHeader, JwtRule, RequestAuth, TokenLocation};
pub use authz::{AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource};

pub use load::{ConfigError, Problem};
pub use resilience::{ConnectionPool, EjectionBackoff, OutlierDetection, RateLimit, RateLimitOverride};
pub use telemetry::{AccessLog, AccessLogFormat, Telemetry, Tracing, TrafficMode};
pub use validate::split_host;

/// The cluster domain used to spell a service's fully qualified name.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Everything one proxy runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyConfig {
    /// The workload this proxy stands beside.
    #[serde(default)]
    pub workload: WorkloadInfo,
    /// The admin server (`/live`, `/ready`, `/metrics`, `/config_dump`).
    #[serde(default)]
    pub admin: Admin,
    /// Limits every listener enforces.
    #[serde(default)]
    pub limits: Limits,
    /// How HTTP requests are read, at every listener.
    #[serde(default)]
    pub http: HttpOptions,
    /// Traffic arriving for the workload.
    #[serde(default)]
    pub inbound: Inbound,
    /// Traffic the workload sends.
    #[serde(default)]
    pub outbound: Outbound,
    /// The mesh services this proxy may reach.
    #[serde(default)]
    pub services: Vec<MeshService>,
    /// Where each service port's traffic may go.
    #[serde(default)]
    pub endpoints: Vec<EndpointSet>,
    /// Access logs and tracing (Istio `Telemetry`); metrics are always on.
    #[serde(default, skip_serializing_if = "Telemetry::is_default")]
    pub telemetry: Telemetry,
}

/// Who this proxy is: the labels of its `source_*`/`destination_*` metrics and, from the
/// identity issue on, its SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadInfo {
    /// Workload name, e.g. `productpage-v1`. Default `unknown`.
    #[serde(default = "unknown")]
    pub name: String,
    /// Namespace. Default `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Service account. Default `default`.
    #[serde(default = "default_namespace")]
    pub service_account: String,
    /// Labels; `app` and `version` become the `*_app` and `*_version` metric labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The workload opted out of `weft tap`: its proxy's admin `/tap` refuses. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tap_disabled: bool,
}

/// The admin server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Admin {
    /// Address to listen on. Default `127.0.0.1:15000`; port 0 picks a free port.
    #[serde(default = "default_admin")]
    pub address: SocketAddr,
}

/// Limits that protect every listener from bad or abusive peers. Defaults follow Envoy and
/// linkerd2-proxy where they agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest request head (request line and headers) accepted; larger gets 431. Default 60 KiB.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Longest request target (URI) accepted; longer gets 414. Default 8 KiB.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Connections open at once per listener; more are closed on accept. Default 10,000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed to send a complete request head (slowloris defence). Default 10 s.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A connection with no traffic either way for this long is closed. Default 300 s.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// How long to wait for a client's first bytes before treating it as opaque TCP. Default 1 s.
    #[serde(default = "default_detect_timeout")]
    pub detect_timeout_ms: u64,
    /// Time allowed to open an upstream connection. Default 1 s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// On SIGTERM, how long in-flight work may take to finish before it is cut. Default 5 s.
    #[serde(default = "default_drain_deadline")]
    pub drain_deadline_ms: u64,
    /// HTTP/2 streams open at once per connection. Default 1,000.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the proxy accepts them, per connection, before
    /// it is sent GOAWAY (rapid reset defence, CVE-2023-44487). Default 20.
    #[serde(default = "default_h2_resets")]
    pub h2_max_pending_reset_streams: usize,
    /// Idle pooled upstream connections kept per endpoint. Default 64.
    #[serde(default = "default_pool_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// HTTP/1 connections open at once to one endpoint (Envoy's circuit-breaker
    /// `max_connections`); past it a request gets 503 with flag `UO`. Default 1,024.
    #[serde(default = "default_max_connections_per_endpoint")]
    pub max_connections_per_endpoint: usize,
}

/// How every listener reads HTTP requests (shared/ARCHITECTURE.md, "canonical once").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpOptions {
    /// Istio's `meshConfig.pathNormalization.normalization`: `NONE`, `BASE`, `MERGE_SLASHES`
    /// or `DECODE_AND_MERGE_SLASHES`. Authorization, routing and the app all see the
    /// normalized path. Default `BASE`.
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// The `Upgrade` protocols passed through (Envoy's `upgrade_configs`); any other upgrade is
    /// refused with 403, and `h2c` is never performed. Default `[websocket]`.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            path_normalization: PathNormalization::default(),
            upgrades: default_upgrades(),
        }
    }
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}

/// Traffic arriving for the workload: on the mesh port from other proxies, on app ports from
/// outside the mesh, or redirected by iptables to the capture port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inbound {
    /// Where other proxies connect (HTTP/2; plaintext until the identity issue adds mTLS).
    /// Default `0.0.0.0:15008`.
    #[serde(default = "default_mesh")]
    pub mesh: SocketAddr,
    /// Where iptables redirects inbound connections (the original destination port picks the
    /// listener). Default: none.
    #[serde(default)]
    pub capture: Option<SocketAddr>,
    /// One per app port.
    #[serde(default)]
    pub listeners: Vec<InboundListener>,
    /// Whether the mesh port accepts plaintext from peers (PeerAuthentication). Default
    /// `PERMISSIVE`.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// The authorization policies that apply to this workload (Istio `AuthorizationPolicy`),
    /// checked on every inbound request and connection. Empty: everything is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthzPolicy>,
    /// The JWT issuers this workload accepts (Istio `RequestAuthentication`), checked on every
    /// inbound HTTP request before authorization. Empty: tokens are not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authentication: Vec<JwtRule>,
}

/// Istio's `PeerAuthentication` `mtls.mode`, as it applies to the mesh port.
///
/// A TLS ClientHello on the mesh port is always terminated as mTLS when the proxy has
/// credentials. What differs is plaintext HTTP/2 from a peer: accepted under `PERMISSIVE` and
/// `DISABLE`, refused (closed, counted, logged) under `STRICT` — with or without credentials.
/// On an app port, a ClientHello offering the mesh ALPN is terminated as on the mesh port under
/// `PERMISSIVE`, and passed to the app untouched under `DISABLE` (as all TLS there is the
/// app's own); such traffic is labelled `connection_security_policy="none"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Only mTLS from peers.
    Strict,
    /// mTLS and plaintext both accepted.
    #[default]
    Permissive,
    /// Plaintext expected; mTLS still terminated on the mesh port if a peer offers it, never
    /// on an app port.
    Disable,
}

/// One port of the workload's app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InboundListener {
    /// The app port as the mesh knows it: the target port that requests carry.
    pub port: u16,
    /// Where the app listens. Default `127.0.0.1:<port>`.
    #[serde(default)]
    pub app: Option<SocketAddr>,
    /// Protocol hint; `auto` detects from the first bytes.
    #[serde(default)]
    pub protocol: Protocol,
    /// Also accept traffic from outside the mesh on this address (the proxy fronts the app
    /// here). Default: none.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// This port's mTLS mode (PeerAuthentication `portLevelMtls`); overrides `Inbound.mtls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsMode>,
    /// Local rate limits on HTTP requests to this port. None: not limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Traffic the workload sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outbound {
    /// The outbound port: an HTTP proxy (route by `Host`/`:authority`) for apps that dial it,
    /// and the target of iptables' outbound redirect (route by original destination).
    /// Default `127.0.0.1:15001`.
    #[serde(default = "default_outbound")]
    pub listen: Option<SocketAddr>,
    /// Per-service local ports: `127.0.0.1:PORT` always means one service port.
    #[serde(default)]
    pub ports: Vec<OutboundPort>,
    /// What to do with an address that is no mesh service. Default `ALLOW_ANY`.
    #[serde(default)]
    pub traffic_policy: OutboundTrafficPolicy,
}

/// A local port bound to one port of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundPort {
    /// Local address the app dials.
    pub listen: SocketAddr,
    /// Service name (`reviews`, `reviews.default` or the full name).
    pub service: String,
    /// Service port.
    pub port: u16,
}

/// Istio's `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Unknown destinations pass through unchanged (flag `PT`).
    #[default]
    AllowAny,
    /// Unknown destinations are refused (flag `NR`).
    RegistryOnly,
}

/// A mesh service: a name, an optional virtual IP, its ports and how to balance over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshService {
    /// Short name, e.g. `reviews`.
    pub name: String,
    /// Namespace. Default `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Virtual IP that captured traffic is addressed to.
    #[serde(default)]
    pub vip: Option<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Load-balancing policy. Default `LEAST_REQUEST` (power of two choices).
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Outlier detection over the service's endpoints; None: endpoints are never ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits on what this proxy sends the service at once; None: the proxy's own limits only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Routing rules per service port (empty: every request goes to the service itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<PortRoutes>,
}

/// The route table of one service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRoutes {
    pub port: u16,
    pub table: crate::route::RouteTable,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// The port clients dial.
    pub port: u16,
    /// Name (`http-web`); informational.
    #[serde(default)]
    pub name: Option<String>,
    /// Protocol; `auto` detects.
    #[serde(default)]
    pub protocol: Protocol,
}

/// The endpoints of one service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSet {
    /// Service name, as in `MeshService`.
    pub service: String,
    /// Namespace of the service. Default `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Service port these endpoints serve.
    pub port: u16,
    /// The subset these endpoints form (a DestinationRule subset); None for the whole service.
    #[serde(default)]
    pub subset: Option<String>,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint: where the app listens and, if it has a sidecar, where its proxy's mesh port is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    /// The app's address (the target the request names).
    pub address: SocketAddr,
    /// The mesh port of the endpoint's proxy, on the same IP. None: no sidecar, connect to
    /// `address` directly.
    #[serde(default)]
    pub mesh_port: Option<u16>,
    /// Relative weight. Default 1; 0 receives nothing.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Labels (`version`, locality...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Workload name for `destination_workload`. Default `unknown`.
    #[serde(default)]
    pub workload: Option<String>,
    /// The SPIFFE ID the endpoint's proxy must present on mTLS
    /// (`spiffe://cluster.local/ns/NS/sa/SA`). None: any identity the trust bundle vouches for
    /// is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// How a port's traffic is handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Detect from the first bytes: HTTP/1, HTTP/2, TLS, else TCP.
    #[default]
    Auto,
    /// HTTP/1.1 (HTTP/2 still recognised by its preface).
    Http,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// gRPC: HTTP/2 with prior knowledge.
    Grpc,
    /// Opaque TCP: bytes are never inspected.
    Tcp,
}

/// Load-balancing policy, named as in Istio's DestinationRule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadBalancer {
    /// Power of two choices, fewest requests in flight (Istio's default).
    #[default]
    LeastRequest,
    /// Weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two choices on peak-EWMA latency x load (linkerd2-proxy's default).
    PeakEwma,
}

// === impl ProxyConfig ===

impl ProxyConfig {
    /// The fully qualified name of `service` in `namespace`: `reviews.default.svc.cluster.local`.
    pub fn fqdn(service: &str, namespace: &str) -> String {
        format!("{service}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

impl MeshService {
    /// `reviews.default.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        ProxyConfig::fqdn(&self.name, &self.namespace)
    }
}

impl Inbound {
    /// The mTLS mode of an app port: its listener's own mode, else the workload's. `port` may
    /// be the declared port or the port the app really listens on.
    pub fn mtls_for(&self, port: u16) -> MtlsMode {
        self.listeners
            .iter()
            .find(|l| l.port == port)
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|l| l.app.is_some_and(|a| a.port() == port))
            })
            .and_then(|l| l.mtls)
            .unwrap_or(self.mtls)
    }
}

impl Protocol {
    /// Ports whose protocol speaks first from the server: never wait for the client's bytes.
    pub const SERVER_FIRST_PORTS: [u16; 7] = [25, 587, 3306, 5432, 6379, 11211, 27017];

    /// Whether a connection to `port` with this hint must skip detection.
    /// Declared as HTTP of some version: such a port never falls back to raw TCP.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    pub fn skips_detection(self, port: u16) -> bool {
        self == Protocol::Tcp || Self::SERVER_FIRST_PORTS.contains(&port)
    }
}

// === defaults ===

fn default_max_connections_per_endpoint() -> usize {
    1024
}
fn unknown() -> String {
    "unknown".into()
}
fn default_namespace() -> String {
    "default".into()
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}
fn default_mesh() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15008))
}
fn default_outbound() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 15001)))
}
fn default_weight() -> u32 {
    1
}
fn default_max_header_bytes() -> usize {
    60 * 1024
}
fn default_max_uri_bytes() -> usize {
    8 * 1024
}
fn default_max_connections() -> usize {
    10_000
}
fn default_header_read_timeout() -> u64 {
    10_000
}
fn default_idle_timeout() -> u64 {
    300_000
}
fn default_detect_timeout() -> u64 {
    1_000
}
fn default_connect_timeout() -> u64 {
    1_000
}
fn default_drain_deadline() -> u64 {
    5_000
}
fn default_h2_streams() -> u32 {
    1_000
}
fn default_h2_resets() -> usize {
    20
}
fn default_pool_idle() -> usize {
    64
}

impl Default for WorkloadInfo {
    fn default() -> Self {
        Self {
            name: unknown(),
            namespace: default_namespace(),
            service_account: default_namespace(),
            labels: BTreeMap::new(),
            tap_disabled: false,
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_uri_bytes: default_max_uri_bytes(),
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_read_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            detect_timeout_ms: default_detect_timeout(),
            connect_timeout_ms: default_connect_timeout(),
            drain_deadline_ms: default_drain_deadline(),
            h2_max_concurrent_streams: default_h2_streams(),
            h2_max_pending_reset_streams: default_h2_resets(),
            pool_max_idle_per_endpoint: default_pool_idle(),
            max_connections_per_endpoint: default_max_connections_per_endpoint(),
        }
    }
}

impl Default for Inbound {
    fn default() -> Self {
        Self {
            mesh: default_mesh(),
            capture: None,
            listeners: Vec::new(),
            mtls: MtlsMode::default(),
            authorization: Vec::new(),
            authentication: Vec::new(),
        }
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            listen: default_outbound(),
            ports: Vec::new(),
            traffic_policy: OutboundTrafficPolicy::default(),
        }
    }
}
