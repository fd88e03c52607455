//! The discovery stream's proxy end: subscribe to the control plane, apply each push that
//! validates, ACK or NACK it, and keep serving the last good config through disconnects.
//!
//! - A push carries resources (the full state first on every stream, then deltas): the proxy
//!   applies it to a copy of the resources it holds, assembles and validates the whole config,
//!   and swaps it in; a push that does not parse or validate is NACKed with its problems and
//!   changes nothing: the proxy never runs a half-applied config (shared/ARCHITECTURE.md, "Last
//!   known good").
//! - On any disconnect the proxy keeps serving and reconnects with exponential backoff (100 ms
//!   doubling to 5 s, jittered), forever, until `shutdown`.
//! - Routes, services and endpoints apply live through [`Shared::apply`]. Listener addresses are
//!   bound once, at start, from the config the proxy started with: a push that changes them is
//!   applied for everything else and logged as needing a restart.
//! - The proxy turns ready (`/ready`) once its first pushed config is applied: start it with
//!   [`Options::await_control`](crate::app::Options::await_control) so it is not ready before.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use weft_api::discovery::{Held, Reassembly};
use weft_api::proto::discovery_client::DiscoveryClient;
use weft_api::proto::discovery_request::Kind;
use weft_api::proto::{Ack, DiscoveryRequest, DiscoveryResponse, Subscribe};
use weft_api::proxy_config::ProxyConfig;

use crate::config::Shared;

/// Who this proxy is to the control plane: from flags or environment, never from a push.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub instance_id: String,
    pub token: String,
    pub workload: String,
    pub namespace: String,
    /// How this instance is reached (see the proto's `Subscribe`).
    pub labels: std::collections::HashMap<String, String>,
    pub service_account: String,
    pub ip: String,
    pub mesh_port: u16,
    pub app_ports: std::collections::HashMap<u32, u32>,
}

impl Subscription {
    /// Describes the instance a bootstrap config runs: the workload, namespace and service
    /// account it expects to be (the control plane refuses the subscription if its token says
    /// otherwise), the app ports from its inbound listeners, the mesh port it bound, and `ip`
    /// only when given (the control plane takes the connection's address, and refuses a claim
    /// that differs). Labels are never claimed: they are the Workload document's.
    pub fn for_instance(
        instance_id: &str,
        token: &str,
        config: &ProxyConfig,
        ip: Option<std::net::IpAddr>,
        mesh_port: u16,
    ) -> Self {
        let w = &config.workload;
        Self {
            instance_id: instance_id.to_string(),
            token: token.to_string(),
            workload: w.name.clone(),
            namespace: w.namespace.clone(),
            labels: std::collections::HashMap::new(),
            service_account: w.service_account.clone(),
            ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            mesh_port,
            app_ports: config
                .inbound
                .listeners
                .iter()
                .map(|l| (u32::from(l.port), u32::from(l.app.map_or(l.port, |a| a.port()))))
                .collect(),
        }
    }
}

/// Exponential backoff between reconnects: 100 ms doubling to 5 s, each delay drawn uniformly
/// from its upper half (so proxies cut off together do not come back together).
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: fastrand::Rng,
}

pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Subscribes and applies pushes until `shutdown`, reconnecting forever. Sets `shared.ready`
/// once the first config is applied.
pub async fn run(endpoint: String, sub: Subscription, shared: Arc<Shared>, shutdown: CancellationToken) {
    run_anchored(endpoint, None, sub, shared, shutdown).await;
}

/// [`run`] over TLS to the control plane, verified against `anchor`, when one is given.
pub async fn run_anchored(
    endpoint: String,
    anchor: Option<crate::control_tls::TrustAnchor>,
    sub: Subscription,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let bound = listeners(&shared.snapshot.load().config);
    let mut backoff = Backoff::new();
    loop {
        let session = session(&endpoint, anchor.as_ref(), &sub, &shared, &bound, &mut backoff);
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = session => outcome,
        };
        let delay = backoff.next_delay();
        match outcome {
            Ok(()) => {
                tracing::info!(%endpoint, retry_in = %weft_api::human::duration(delay), "discovery: control plane closed the stream; serving the last config")
            }
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, retry_in = %weft_api::human::duration(delay), "discovery: disconnected; serving the last config")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One stream, from connect to close.
async fn session(
    endpoint: &str,
    anchor: Option<&crate::control_tls::TrustAnchor>,
    sub: &Subscription,
    shared: &Shared,
    bound: &[SocketAddr],
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let channel = crate::control_tls::connect(endpoint, anchor, |e: Endpoint| {
        e.connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
    })
    .await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let subscribe = Subscribe {
        instance_id: sub.instance_id.clone(),
        token: sub.token.clone(),
        workload: sub.workload.clone(),
        namespace: sub.namespace.clone(),
        labels: sub.labels.clone(),
        service_account: sub.service_account.clone(),
        ip: sub.ip.clone(),
        mesh_port: u32::from(sub.mesh_port),
        app_ports: sub.app_ports.clone(),
        proxy_version: weft_api::version::describe(),
    };
    tx.send(request(Kind::Subscribe(subscribe))).await?;
    let mut responses = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // The resources applied on this stream; the control plane starts every stream with the full
    // state.
    let mut held: Option<Held> = None;
    let mut parts = Reassembly::default();
    while let Some(part) = responses.message().await? {
        // A stream that delivers is a healthy one: the next outage starts from 100 ms again.
        backoff.reset();
        // A large push comes in parts; it is applied and answered as a whole.
        let Some(response) = parts.add(part) else {
            continue;
        };
        let ack = handle(shared, bound, &mut held, &response);
        tx.send(request(Kind::Ack(ack))).await?;
    }
    Ok(())
}

/// Applies one push to `held` if the config it makes is valid, and says so.
fn handle(
    shared: &Shared,
    bound: &[SocketAddr],
    held: &mut Option<Held>,
    response: &DiscoveryResponse,
) -> Ack {
    let ack = |error: Option<String>| Ack {
        version: response.version.clone(),
        nonce: response.nonce.clone(),
        ok: error.is_none(),
        error: error.unwrap_or_default(),
    };
    let (next, config) = match weft_api::discovery::assemble(held.as_ref(), response) {
        Ok((next, pushed)) => (next, overlay(&shared.snapshot.load().config, pushed)),
        Err(e) => {
            let error = e.to_string();
            tracing::warn!(version = %response.version, %error, "discovery: refused a push (NACK); serving the previous config");
            return ack(Some(error));
        }
    };
    tracing::debug!(
        version = %response.version,
        full_state = response.full_state,
        resources = response.resources.len(),
        removed = response.removed.len(),
        held = next.len(),
        "discovery: push assembled"
    );
    *held = Some(next);
    if listeners(&config) != bound {
        tracing::warn!(version = %response.version, "discovery: the pushed config changes listener addresses; routes, services and endpoints apply now, listeners need a proxy restart");
    }
    if shared.snapshot.load().config != config {
        shared.apply(config);
        tracing::info!(version = %response.version, "discovery: applied config");
    }
    shared.ready.store(true, Ordering::Release);
    ack(None)
}

/// What the control plane decides (the workload, its app ports, services, endpoints, routes)
/// over what only this proxy knows (admin, limits, the addresses it binds): those come from the
/// bootstrap config and stay (shared/ARCHITECTURE.md: they never come from a push).
pub fn overlay(local: &ProxyConfig, mut pushed: ProxyConfig) -> ProxyConfig {
    pushed.admin = local.admin.clone();
    pushed.limits = local.limits.clone();
    pushed.http = local.http.clone();
    pushed.inbound.mesh = local.inbound.mesh;
    pushed.inbound.capture = local.inbound.capture;
    pushed.outbound = local.outbound.clone();
    for l in &mut pushed.inbound.listeners {
        l.listen = local
            .inbound
            .listeners
            .iter()
            .find(|x| x.port == l.port)
            .and_then(|x| x.listen);
    }
    pushed
}

/// Every address the proxy binds at start, in a fixed order.
fn listeners(c: &ProxyConfig) -> Vec<SocketAddr> {
    let mut out = vec![c.admin.address, c.inbound.mesh];
    out.extend(c.inbound.capture);
    out.extend(c.inbound.listeners.iter().filter_map(|l| l.listen));
    out.extend(c.outbound.listen);
    out.extend(c.outbound.ports.iter().map(|p| p.listen));
    out
}

fn request(kind: Kind) -> DiscoveryRequest {
    DiscoveryRequest { kind: Some(kind) }
}

// === impl Backoff ===

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self::with_rng(fastrand::Rng::new())
    }

    /// With a seeded generator, for reproducible schedules.
    pub fn with_rng(rng: fastrand::Rng) -> Self {
        Self { attempt: 0, rng }
    }

    /// The ceiling of the next delay: 100 ms, 200 ms, 400 ms ... 5 s, 5 s ...
    pub fn ceiling(&self) -> Duration {
        BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX)
    }

    /// The next delay, in `[ceiling / 2, ceiling]`, and one step up the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(self.rng.u64(0..=ms))
    }

    /// Back to the first step, after a stream that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_to_a_5s_ceiling() {
        let mut b = Backoff::with_rng(fastrand::Rng::with_seed(7));
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay();
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.ceiling(), BACKOFF_BASE);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_sleeps_are_jittered_within_the_upper_half_of_each_step() {
        let mut b = Backoff::with_rng(fastrand::Rng::with_seed(42));
        let start = tokio::time::Instant::now();
        let (mut min_total, mut max_total) = (Duration::ZERO, Duration::ZERO);
        let mut delays = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
            min_total += ceiling / 2;
            max_total += ceiling;
            delays.push(d);
            tokio::time::sleep(d).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= min_total && elapsed <= max_total + Duration::from_millis(10));
        // Jitter: not every delay sits on the same fraction of its step.
        assert!(delays.windows(2).any(|w| w[0] * 2 != w[1]));
        // Many outages: it never waits more than 5 s.
        for _ in 0..50 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
    }
}
