//! The live configuration: an immutable snapshot in an `ArcSwap`, plus the indexes every
//! connection needs, built once per config rather than per request.
//!
//! A request loads one snapshot when it starts and keeps it to the end; a new config swaps
//! in without locks on the hot path. Per-endpoint state (balancers, pools) lives outside the
//! snapshot and is reconciled, never reset (shared/ARCHITECTURE.md, "State that outlives a push").

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use weft_api::proxy_config::{
    split_host, Endpoint, MeshService, OutboundTrafficPolicy, Protocol, ProxyConfig,
};

use weft_api::route::CompiledTable;

use crate::balance::Balancers;
use crate::pool::Pools;
use crate::telemetry::metrics::{Label, Metrics, Peer};

/// One config, with its lookups precomputed.
pub struct Snapshot {
    pub config: ProxyConfig,
    /// Every spelling of every service (`reviews`, `reviews.ns`, `reviews.ns.svc`, FQDN).
    by_host: HashMap<String, Arc<ServiceInfo>>,
    /// Virtual IP and port of captured traffic.
    by_vip: HashMap<SocketAddr, Arc<ServiceInfo>>,
    /// Inbound listeners by app port.
    inbound: HashMap<u16, InboundTarget>,
    /// This workload, as metric labels.
    pub local: Peer,
    /// This workload as the `x-weft-source` header value, built once per config.
    pub local_source_value: Option<http::HeaderValue>,
    /// Compiled route tables by service FQDN and port (absent: no rules).
    routes: HashMap<String, HashMap<u16, Arc<CompiledTable>>>,
    /// The workload's JWT rules with their inline key sets parsed (RequestAuthentication).
    pub authn: crate::authn::Authenticator,
    /// The access logs this config asks for (none until [`Shared::apply`] plans them).
    pub access_log: Arc<crate::telemetry::access_log::Plan>,
    /// The tracing this config asks for (planned by [`Shared::apply`] likewise).
    pub trace: Arc<crate::telemetry::trace::Plan>,
}

/// What the proxy knows of one mesh service.
#[derive(Debug)]
pub struct ServiceInfo {
    pub fqdn: String,
    pub name: Label,
    pub namespace: Label,
    pub fqdn_label: Label,
    /// The `x-weft-service` header value, built once per config.
    pub fqdn_header: http::HeaderValue,
    pub service: MeshService,
    /// This service's retry budget from the long-lived map (the budget outlives the push),
    /// looked up by the first request of this config that needs it rather than by every one.
    pub retry_budget: std::sync::OnceLock<Arc<crate::http::retry_budget::RetryBudget>>,
}

/// Where the app behind an inbound port listens.
#[derive(Debug, Clone, Copy)]
pub struct InboundTarget {
    pub app: SocketAddr,
    pub protocol: Protocol,
}

/// Everything the listeners share.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub balancers: Balancers,
    /// Retry budgets per service (Linkerd `retryBudget`), kept across pushes.
    pub retry_budgets: crate::http::retry_budget::RetryBudgets,
    /// Local rate limits per inbound port, kept across pushes.
    pub rate_limits: crate::rate_limit::RateLimits,
    pub pools: Arc<Pools>,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    /// mTLS on the mesh port; None: this proxy runs without credentials (plaintext only).
    pub mesh_tls: Option<crate::tls::MeshAcceptor>,
    /// The workload's certificate, when the proxy awaits one
    /// ([`Options::await_identity`](crate::app::Options::await_identity)): not ready while empty.
    pub identity: Option<crate::identity::CredentialsCell>,
    /// Inbound ports that have carried HTTP: from then on they never fall back to raw TCP.
    pub http_seen: HttpSeen,
    /// Key sets fetched from `jwksUri`s, kept across pushes.
    pub jwks: crate::authn::JwksCache,
    /// Where mirrored copies are handed to the worker that sends them.
    pub mirrors: crate::http::mirror::Mirrors,
    /// Open `weft tap` streams (none: requests skip tapping after one atomic load).
    pub tap: Arc<crate::telemetry::tap::TapHub>,
    /// The access-log queue and the bootstrap's default.
    pub access_logger: crate::telemetry::access_log::AccessLogger,
    /// Span export and the bootstrap's tracing default.
    pub tracer: crate::telemetry::trace::Tracer,
}

/// One bit per port, set once a port carried HTTP (lock-free: read on every connection).
pub struct HttpSeen(Box<[std::sync::atomic::AtomicU64]>);

impl Default for HttpSeen {
    fn default() -> Self {
        Self((0..1024).map(|_| std::sync::atomic::AtomicU64::new(0)).collect())
    }
}

impl HttpSeen {
    pub fn mark(&self, port: u16) {
        let bit = 1u64 << (port % 64);
        if let Some(word) = self.0.get(usize::from(port / 64)) {
            word.fetch_or(bit, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        let bit = 1u64 << (port % 64);
        self.0
            .get(usize::from(port / 64))
            .is_some_and(|w| w.load(std::sync::atomic::Ordering::Relaxed) & bit != 0)
    }
}

// === impl Snapshot ===

impl Snapshot {
    pub fn new(config: ProxyConfig) -> Self {
        let mut by_host = HashMap::new();
        let mut by_vip = HashMap::new();
        let mut routes: HashMap<String, HashMap<u16, Arc<CompiledTable>>> = HashMap::new();
        for svc in &config.services {
            for pr in &svc.routes {
                // A config that reached here was validated, so tables compile; one that does
                // not is logged and its service keeps the default route.
                match CompiledTable::compile(&pr.table, &svc.fqdn()) {
                    Ok(t) if !t.is_empty() => {
                        routes.entry(svc.fqdn()).or_default().insert(pr.port, Arc::new(t));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(service = %svc.fqdn(), error = %e, "route table does not compile")
                    }
                }
            }
            let fqdn = svc.fqdn();
            let info = Arc::new(ServiceInfo {
                fqdn_label: Label::new(&fqdn),
                fqdn_header: http::HeaderValue::from_str(&fqdn)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
                name: Label::new(&svc.name),
                namespace: Label::new(&svc.namespace),
                fqdn: fqdn.clone(),
                service: svc.clone(),
                retry_budget: std::sync::OnceLock::new(),
            });
            let (n, ns) = (&svc.name, &svc.namespace);
            for alias in [format!("{n}.{ns}"), format!("{n}.{ns}.svc"), fqdn] {
                by_host.insert(alias, info.clone());
            }
            if *ns == config.workload.namespace {
                by_host.insert(n.clone(), info.clone());
            }
            if let Some(vip) = svc.vip {
                for p in &svc.ports {
                    by_vip.insert(SocketAddr::new(vip, p.port), info.clone());
                }
            }
        }
        let mut inbound: HashMap<u16, InboundTarget> = HashMap::new();
        for l in &config.inbound.listeners {
            let app = l
                .app
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], l.port)));
            inbound.insert(
                l.port,
                InboundTarget {
                    app,
                    protocol: l.protocol,
                },
            );
        }
        // Peers name the app port as their endpoint knows it: the declared port, or (in the
        // no-root mode, where replicas share 127.0.0.1 on different ports) the port the app
        // actually listens on. Both lead to the same app; a declared port wins a clash.
        for l in &config.inbound.listeners {
            if let Some(app) = l.app {
                inbound.entry(app.port()).or_insert(InboundTarget {
                    app,
                    protocol: l.protocol,
                });
            }
        }
        let w = &config.workload;
        let local = Peer {
            workload: Label::new(&w.name),
            namespace: Label::new(&w.namespace),
            principal: Label::unknown(),
            app: Label::new(w.labels.get("app").map_or("unknown", String::as_str)),
            version: Label::new(w.labels.get("version").map_or("unknown", String::as_str)),
        };
        let local_source_value = http::HeaderValue::from_str(&format!(
            "{};{};{};{}",
            local.workload.0, local.namespace.0, local.app.0, local.version.0
        ))
        .ok();
        let authn = crate::authn::Authenticator::new(&config.inbound.authentication);
        Self {
            config,
            by_host,
            by_vip,
            inbound,
            local,
            local_source_value,
            routes,
            authn,
            access_log: Arc::default(),
            trace: Arc::default(),
        }
    }

    /// The service a `Host`/`:authority` names (port stripped by the caller).
    pub fn service_by_host(&self, host: &str) -> Option<&Arc<ServiceInfo>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.by_host.get(host).or_else(|| {
            // Case-insensitive names, without allocating in the common (lower-case) case.
            let lower = host.to_ascii_lowercase();
            let (n, ns) = split_host(&lower, &self.config.workload.namespace)?;
            self.by_host.get(&format!("{n}.{ns}"))
        })
    }

    /// The service whose virtual IP and port a captured connection was addressed to.
    pub fn service_by_vip(&self, dst: SocketAddr) -> Option<&Arc<ServiceInfo>> {
        self.by_vip.get(&dst)
    }

    /// The compiled routes of a service port; None when it has no rules.
    pub fn route_table(&self, fqdn: &str, port: u16) -> Option<&CompiledTable> {
        self.routes.get(fqdn)?.get(&port).map(|t| t.as_ref())
    }

    pub fn inbound(&self, port: u16) -> Option<InboundTarget> {
        self.inbound.get(&port).copied()
    }

    pub fn traffic_policy(&self) -> OutboundTrafficPolicy {
        self.config.outbound.traffic_policy
    }
}

// === impl ServiceInfo ===

impl ServiceInfo {
    /// The service's retry budget with `params` (a service has one budget; its parameters come
    /// with the config, so the first request under this config sets them).
    pub fn retry_budget(
        &self,
        budgets: &crate::http::retry_budget::RetryBudgets,
        params: &weft_api::route::RetryBudget,
    ) -> &crate::http::retry_budget::RetryBudget {
        self.retry_budget.get_or_init(|| budgets.get(&self.fqdn, params))
    }

    pub fn port_protocol(&self, port: u16) -> Option<Protocol> {
        self.service
            .ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.protocol)
    }
}

/// `destination_*` labels for an endpoint of a service.
pub fn endpoint_peer(ep: &Endpoint, svc_ns: &Label) -> Peer {
    let label = |k: &str| Label::new(ep.labels.get(k).map_or("unknown", String::as_str));
    Peer {
        workload: Label::new(ep.workload.as_deref().unwrap_or("unknown")),
        namespace: svc_ns.clone(),
        principal: Label::unknown(),
        app: label("app"),
        version: label("version"),
    }
}

// === impl Shared ===

impl Shared {
    /// Swaps in a new config, reconciling the long-lived endpoint state.
    pub fn apply(&self, config: ProxyConfig) {
        self.balancers.reconcile(&config);
        self.rate_limits.reconcile(&config);
        let services: std::collections::HashSet<String> = config.services.iter().map(|s| s.fqdn()).collect();
        self.retry_budgets.retain(|s| services.contains(s));
        let keep: std::collections::HashSet<SocketAddr> = config
            .endpoints
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .flat_map(|e| {
                let mesh = e.mesh_port.map(|p| SocketAddr::new(e.address.ip(), p));
                [Some(e.address), mesh].into_iter().flatten()
            })
            .chain(config.inbound.listeners.iter().map(|l| {
                l.app
                    .unwrap_or_else(|| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), l.port))
            }))
            .collect();
        let mut snapshot = Snapshot::new(config);
        snapshot.access_log = self.access_logger.plan(&snapshot.config);
        snapshot.trace = self.tracer.plan(&snapshot.config);
        self.snapshot.store(Arc::new(snapshot));
        // Passthrough destinations are pooled too; they stay until the next push drops them.
        self.pools.retain(|a| keep.contains(a));
    }

    /// The config is in place (`ready`) and, if one is awaited, so is an identity.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.identity.as_ref().is_none_or(|c| c.load().is_some())
    }
}
