//! The proxy, wired top to bottom: config, metrics, pools, listeners, admin, drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_api::proxy_config::ProxyConfig;

use crate::balance::Balancers;
use crate::config::{Shared, Snapshot};
use crate::identity::{self, IdentityMetrics};
use crate::listen::{accept_loop, Listening};
use crate::pool::Pools;
use crate::telemetry::access_log::AccessLogger;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::Tracer;
use crate::tls::{CredentialsCell, MeshAcceptor, MeshConnector, TlsState};
use crate::{admin, inbound, outbound};

/// Process-level settings that are not part of the pushed config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `SO_MARK` on every upstream socket, so iptables can exclude the proxy's own traffic.
    pub outbound_mark: Option<u32>,
    /// Under a control plane (`--control`): `/ready` stays false until
    /// [`discovery::run`](crate::discovery::run) applies the first pushed config.
    pub await_control: bool,
    /// The workload's mTLS credentials, filled from outside (tests, a file). None: the mesh
    /// hop stays plaintext, as before identities existed; an empty cell likewise until the
    /// first certificate lands. With `await_identity` the identity module's cell is used.
    pub credentials: Option<CredentialsCell>,
    /// Under a control plane issuing certificates: `/ready` also waits for an identity, and
    /// [`Running::identity`] holds the cell and metrics to pass to
    /// [`identity::run`](crate::identity::run); mTLS on the mesh hop uses that cell.
    pub await_identity: bool,
    /// Where spans go when the config names no collector: the process's
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, read by the binary (tests set it here instead).
    pub otlp_endpoint: Option<String>,
}

/// The addresses a running proxy is bound to (ports resolved when the config said 0).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bound {
    pub admin: SocketAddr,
    pub mesh: SocketAddr,
    pub outbound: Option<SocketAddr>,
    pub outbound_ports: Vec<SocketAddr>,
    pub inbound_ports: Vec<SocketAddr>,
    pub capture: Option<SocketAddr>,
}

/// A started proxy.
pub struct Running {
    pub bound: Bound,
    pub shared: Arc<Shared>,
    /// With [`Options::await_identity`]: where the certificate goes (the same cell as
    /// `shared.identity`) and its metrics, registered on the admin `/metrics`.
    pub identity: Option<(CredentialsCell, IdentityMetrics)>,
    drain: CancellationToken,
    tracker: TaskTracker,
    deadline: Duration,
}

/// Binds every listener and starts serving.
pub async fn start(config: ProxyConfig, options: Options) -> anyhow::Result<Running> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let access_logger = AccessLogger::new(&config.telemetry, &mut registry)?;
    let tracer = Tracer::new(&config.telemetry, options.otlp_endpoint.clone(), &mut registry);
    let identity = options
        .await_identity
        .then(|| (identity::new_cell(), IdentityMetrics::new(&mut registry)));
    let balancers = Balancers::registered(&mut registry);
    let registry = Arc::new(registry);
    let limits = config.limits.clone();
    let cell = identity
        .as_ref()
        .map(|(cell, _)| cell.clone())
        .or_else(|| options.credentials.clone());
    let tls = cell.map(TlsState::new);
    let pools = Pools::with_tls(
        Duration::from_millis(limits.connect_timeout_ms),
        Duration::from_millis(limits.idle_timeout_ms),
        limits.pool_max_idle_per_endpoint,
        limits.max_connections_per_endpoint,
        options.outbound_mark,
        tls.clone().map(MeshConnector::new),
    );
    let (mirrors, mirror_queue) = crate::http::mirror::queue();
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::new(ProxyConfig::default())),
        balancers,
        retry_budgets: Default::default(),
        rate_limits: Default::default(),
        pools,
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        mesh_tls: tls.map(MeshAcceptor::new),
        identity: identity.as_ref().map(|(cell, _)| cell.clone()),
        http_seen: Default::default(),
        jwks: Default::default(),
        mirrors,
        tap: Default::default(),
        access_logger,
        tracer,
    });
    shared.apply(config.clone());
    tokio::spawn(crate::http::mirror::run(shared.clone(), mirror_queue));

    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    let listening = Listening {
        drain: drain.clone(),
        tracker: tracker.clone(),
        metrics,
        max_connections: limits.max_connections,
    };

    // Inbound: the mesh port, app ports, capture.
    let mesh = bind(config.inbound.mesh, "inbound mesh port").await?;
    let mesh_addr = mesh.local_addr()?;
    spawn_loop(mesh, "mesh", &listening, &shared, |s, stream, d| {
        inbound::handle_mesh(s, stream, d)
    });
    let mut inbound_ports = Vec::new();
    for l in &config.inbound.listeners {
        let Some(addr) = l.listen else { continue };
        let listener = bind(addr, &format!("inbound port {}", l.port)).await?;
        inbound_ports.push(listener.local_addr()?);
        let entry = inbound::Entry::AppPort(l.port);
        spawn_loop(listener, "inbound", &listening, &shared, move |s, stream, d| {
            inbound::handle_app_port(s, stream, entry, d)
        });
    }
    let capture = match config.inbound.capture {
        Some(addr) => {
            let listener = bind(addr, "inbound capture port").await?;
            let bound = listener.local_addr()?;
            spawn_loop(
                listener,
                "inbound_capture",
                &listening,
                &shared,
                |s, stream, d| inbound::handle_app_port(s, stream, inbound::Entry::Capture, d),
            );
            Some(bound)
        }
        None => None,
    };

    // Outbound: the outbound (HTTP proxy + capture) port and per-service ports.
    let outbound_addr = match config.outbound.listen {
        Some(addr) => {
            let listener = bind(addr, "outbound port").await?;
            let bound = listener.local_addr()?;
            spawn_loop(listener, "outbound", &listening, &shared, |s, stream, d| {
                outbound::handle(s, stream, outbound::Entry::Outbound, d)
            });
            Some(bound)
        }
        None => None,
    };
    let mut outbound_ports = Vec::new();
    for p in &config.outbound.ports {
        let listener = bind(p.listen, &format!("outbound port for {}:{}", p.service, p.port)).await?;
        outbound_ports.push(listener.local_addr()?);
        let entry = outbound::Entry::Service {
            service: p.service.clone(),
            port: p.port,
        };
        spawn_loop(
            listener,
            "outbound_service",
            &listening,
            &shared,
            move |s, stream, d| outbound::handle(s, stream, entry.clone(), d),
        );
    }

    // Admin last: `/ready` turns true only once everything above is bound.
    let admin_listener = bind(config.admin.address, "admin").await?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_shared = shared.clone();
    let admin_drain = drain.clone();
    tokio::spawn(accept_loop(
        admin_listener,
        "admin",
        listening.clone(),
        move |stream, _| {
            admin::handle(
                admin_shared.clone(),
                registry.clone(),
                stream,
                admin_drain.clone(),
            )
        },
    ));
    if !options.await_control {
        shared.ready.store(true, Ordering::Release);
    }

    let bound = Bound {
        admin: admin_addr,
        mesh: mesh_addr,
        outbound: outbound_addr,
        outbound_ports,
        inbound_ports,
        capture,
    };
    Ok(Running {
        bound,
        shared,
        identity,
        drain,
        tracker,
        deadline: Duration::from_millis(limits.drain_deadline_ms),
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} on {addr}"))
}

fn spawn_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    l: &Listening,
    shared: &Arc<Shared>,
    handle: F,
) where
    F: Fn(Arc<Shared>, tokio::net::TcpStream, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let shared = shared.clone();
    let drain = l.drain.clone();
    tokio::spawn(accept_loop(listener, name, l.clone(), move |stream, _peer| {
        handle(shared.clone(), stream, drain.clone())
    }));
}

// === impl Running ===

impl Running {
    /// Drains: stop accepting, let in-flight work finish within the deadline, then return.
    /// Returns whether everything finished in time.
    pub async fn drain(self) -> bool {
        self.shared.ready.store(false, Ordering::Release);
        self.drain.cancel();
        let finished = wait_tracked(&self.tracker, self.deadline).await;
        if finished {
            tracing::info!("drained");
        } else {
            tracing::warn!(deadline = ?self.deadline, open = self.tracker.len(), "drain deadline passed; closing the rest");
        }
        finished
    }
}

/// Closes `tracker` and waits for its tasks, up to `deadline`; whether they all finished.
async fn wait_tracked(tracker: &TaskTracker, deadline: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(deadline, tracker.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_on_a_task_that_never_finishes_at_the_deadline() {
        let tracker = TaskTracker::new();
        tracker.spawn(std::future::pending::<()>());
        let start = tokio::time::Instant::now();
        assert!(!wait_tracked(&tracker, Duration::from_millis(500)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(tracker.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_returns_as_soon_as_tracked_work_finishes() {
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(200)));
        tracker.spawn(tokio::time::sleep(Duration::from_millis(300)));
        let start = tokio::time::Instant::now();
        assert!(wait_tracked(&tracker, Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        // Closed: an empty tracker counts as done at once.
        assert!(tracker.is_closed());
    }
}
