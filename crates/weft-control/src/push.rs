//! The discovery stream's server end: one task per connected proxy pushes its resources
//! whenever they change and records what the proxy did with them (ACK or NACK).
//!
//! Each push carries only the resources whose version differs from what the proxy last ACKed on
//! this stream, and the keys of those gone; the first on a stream is the full state (see
//! `weft-api/proto/weft/discovery.proto` and [`delta`]). A push's version names the proxy's whole
//! state (a hash over every key and resource version), so equal versions mean equal resources,
//! across control-plane restarts too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};
use weft_api::discovery::Rendered;
use weft_api::proto::discovery_request::Kind;
use weft_api::proto::discovery_server::{Discovery, DiscoveryServer};
use weft_api::proto::identity::identity_server::IdentityServer;
use weft_api::proto::{Ack, DiscoveryRequest, DiscoveryResponse, Subscribe};
use weft_api::proxy_config::ProxyConfig;

use crate::admission::AdmitError;
use crate::identity::IdentityService;
use crate::registry::Instance;

pub mod delta;

pub use delta::PushSummary;
use delta::{Answer, Tracker};

/// Where the configs come from (the registry and compiler, or a test's table).
pub trait ConfigSource: Send + Sync + 'static {
    /// The config the proxy `instance_id` should run now.
    fn config_for(&self, instance_id: &str) -> Result<ProxyConfig, String>;
    /// Bumps on every change that may alter some proxy's config.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The proxy's resources as they go on the wire, sorted by key. The default renders
    /// [`config_for`](Self::config_for); a source serving many proxies renders each shared
    /// resource once per change and hands every proxy the same `Arc`.
    fn resources_for(&self, instance_id: &str) -> Result<Vec<Arc<Rendered>>, String> {
        let config = self.config_for(instance_id)?;
        let resources = weft_api::discovery::resources_of(&config).map_err(|e| e.to_string())?;
        Ok(resources.into_iter().map(Arc::new).collect())
    }
    /// Who the subscribing proxy is, from its token (and, for a real control plane, the
    /// documents: see [`crate::admission`]), `peer` being the address it connects from; or why
    /// it is refused. Nothing in `sub` but the token, the instance id and its own ports is
    /// believed.
    fn admit(&self, sub: &Subscribe, peer: Option<IpAddr>) -> Result<Instance, AdmitError>;
    /// An admitted proxy connected: its instance can become an endpoint.
    fn connected(&self, _instance: &Instance) {}
    /// A proxy's stream ended (its endpoint may be removed after a grace period).
    fn disconnected(&self, _instance_id: &str) {}
}

/// What `weft status` shows of one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStatus {
    pub instance_id: String,
    pub workload: String,
    pub namespace: String,
    /// The proxy's build, as it said when it subscribed (empty: it did not say).
    pub proxy_version: String,
    /// Version of the state the last push brings the proxy to.
    pub sent_version: Option<String>,
    /// Version of the last config the proxy applied.
    pub acked_version: Option<String>,
    /// The error of the last NACK, cleared by the next ACK.
    pub nack: Option<String>,
    /// Connected and running the last config pushed.
    pub in_sync: bool,
    pub connected: bool,
    /// When the current (or last) stream opened.
    pub connected_since: SystemTime,
    /// When the last push went out (on any stream), and when the proxy last ACKed one: with
    /// the versions, `weft proxy-status` tells how long a proxy has been stale or in sync.
    pub last_sent_at: Option<SystemTime>,
    pub last_acked_at: Option<SystemTime>,
    /// What the last push carried.
    pub last_push: Option<PushSummary>,
    /// Pushes sent to this proxy since the control plane started, and resource bodies in them.
    pub pushes: u64,
    pub resources_sent: u64,
}

/// The discovery service. Cheap to clone: clones share the source and the proxy table.
#[derive(Clone)]
pub struct PushServer {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn ConfigSource>,
    proxies: Mutex<HashMap<String, ProxyState>>,
    /// Ends every stream on shutdown, so a graceful server stop does not wait on them.
    shutdown: CancellationToken,
    /// Per-process prefix and counter: nonces never repeat, across restarts either.
    nonce_prefix: u32,
    nonces: AtomicU64,
    streams: AtomicU64,
}

struct ProxyState {
    workload: String,
    namespace: String,
    proxy_version: String,
    /// The version the last push on the current stream brings the proxy to.
    sent: Option<String>,
    acked_version: Option<String>,
    nack: Option<String>,
    connected_since: SystemTime,
    last_sent_at: Option<SystemTime>,
    last_acked_at: Option<SystemTime>,
    /// The stream currently serving this proxy; None when disconnected.
    stream: Option<u64>,
    last_push: Option<PushSummary>,
    pushes: u64,
    resources_sent: u64,
}

// === impl PushServer ===

impl PushServer {
    pub fn new<S: ConfigSource>(source: Arc<S>) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                proxies: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                nonce_prefix: fastrand::u32(..),
                nonces: AtomicU64::new(0),
                streams: AtomicU64::new(0),
            }),
        }
    }

    /// Every proxy that has subscribed since this server started, sorted by instance id.
    pub fn status(&self) -> Vec<ProxyStatus> {
        let proxies = self.inner.proxies();
        let mut out: Vec<ProxyStatus> = proxies
            .iter()
            .map(|(id, p)| {
                let sent_version = p.sent.clone();
                let connected = p.stream.is_some();
                ProxyStatus {
                    instance_id: id.clone(),
                    workload: p.workload.clone(),
                    namespace: p.namespace.clone(),
                    proxy_version: p.proxy_version.clone(),
                    in_sync: connected && sent_version.is_some() && sent_version == p.acked_version,
                    sent_version,
                    acked_version: p.acked_version.clone(),
                    nack: p.nack.clone(),
                    connected,
                    connected_since: p.connected_since,
                    last_sent_at: p.last_sent_at,
                    last_acked_at: p.last_acked_at,
                    last_push: p.last_push.clone(),
                    pushes: p.pushes,
                    resources_sent: p.resources_sent,
                }
            })
            .collect();
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        out
    }

    /// Serves the discovery stream on `listener` until `shutdown` is cancelled; then ends every
    /// open stream (proxies keep their last config and reconnect) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_with(None, listener, shutdown).await
    }

    /// [`serve`](Self::serve), plus `weft.identity.v1.Identity` on the same port when given.
    pub async fn serve_with(
        self,
        identity: Option<crate::identity::IdentityService>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let streams = self.inner.shutdown.clone();
        let stop = shutdown.clone();
        let on_stop = tokio::spawn(async move {
            stop.cancelled().await;
            streams.cancel();
        });
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            // Two services told apart by path: served without tonic's router (and its axum
            // dependency).
            .serve_with_incoming_shutdown(
                Routes {
                    discovery: DiscoveryServer::new(self),
                    identity: identity.map(IdentityService::into_server),
                },
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown.cancelled_owned(),
            )
            .await;
        on_stop.abort();
        served
    }
}

impl PushServer {
    /// [`serve_with`](Self::serve_with) over TLS (`weft control --tls`): `tls` presents the
    /// control plane's server certificate (see [`crate::tls`]).
    pub async fn serve_tls(
        self,
        identity: Option<crate::identity::IdentityService>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let streams = self.inner.shutdown.clone();
        let stop = shutdown.clone();
        let on_stop = tokio::spawn(async move {
            stop.cancelled().await;
            streams.cancel();
        });
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .serve_with_incoming_shutdown(
                Routes {
                    discovery: DiscoveryServer::new(self),
                    identity: identity.map(IdentityService::into_server),
                },
                crate::tls::incoming(listener, tls, shutdown.clone()),
                shutdown.cancelled_owned(),
            )
            .await;
        on_stop.abort();
        served
    }
}

/// Dispatches `/weft.identity.v1.Identity/*` to the identity service, the rest to discovery.
#[derive(Clone)]
struct Routes {
    discovery: DiscoveryServer<PushServer>,
    identity: Option<IdentityServer<IdentityService>>,
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

impl tower_service::Service<GrpcRequest> for Routes {
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<GrpcResponse, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Both generated servers are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let identity_path = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(<IdentityServer<IdentityService> as NamedService>::NAME))
            .is_some_and(|rest| rest.starts_with('/'));
        match (&mut self.identity, identity_path) {
            (Some(identity), true) => Box::pin(identity.call(req)),
            _ => Box::pin(self.discovery.call(req)),
        }
    }
}

#[tonic::async_trait]
impl Discovery for PushServer {
    type StreamStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let mut requests = request.into_inner();
        let sub = match requests.message().await? {
            Some(DiscoveryRequest {
                kind: Some(Kind::Subscribe(sub)),
            }) => sub,
            _ => return Err(Status::invalid_argument("the first message must be Subscribe")),
        };
        let refused = |e: AdmitError| {
            tracing::warn!(instance = %sub.instance_id, peer = ?peer, error = %e, "discovery: refused a subscription");
            Status::from(e)
        };
        let instance = self.inner.source.admit(&sub, peer).map_err(refused)?;
        let stream_id = self
            .inner
            .connect(&instance, &sub.proxy_version)
            .map_err(refused)?;
        self.inner.source.connected(&instance);
        tracing::info!(instance = %instance.id, workload = %instance.workload, namespace = %instance.namespace, ip = %instance.ip, "discovery: proxy subscribed");
        // Boxed parts: the channel's slots (allocated in blocks of 32, kept for the stream's
        // life) then cost a pointer each, not a whole message.
        let (tx, rx) = mpsc::channel::<Box<DiscoveryResponse>>(4);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let id = instance.id;
            inner.session(&id, stream_id, requests, tx).await;
            inner.disconnect(&id, stream_id);
            inner.source.disconnected(&id);
            tracing::info!(instance = %id, "discovery: proxy disconnected");
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|part| Ok(*part)),
        )))
    }
}

// === impl Inner ===

impl Inner {
    fn proxies(&self) -> MutexGuard<'_, HashMap<String, ProxyState>> {
        // A panic elsewhere leaves the table consistent (every write is one assignment).
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new stream for `instance`; refused while another stream serves the same
    /// instance id (a second proxy, or a copy of one, cannot take over a live instance).
    fn connect(&self, instance: &Instance, proxy_version: &str) -> Result<u64, AdmitError> {
        let stream = self.streams.fetch_add(1, Ordering::Relaxed);
        let mut proxies = self.proxies();
        let p = proxies.entry(instance.id.clone()).or_insert_with(|| ProxyState {
            workload: String::new(),
            namespace: String::new(),
            proxy_version: String::new(),
            sent: None,
            acked_version: None,
            nack: None,
            connected_since: SystemTime::now(),
            last_sent_at: None,
            last_acked_at: None,
            stream: None,
            last_push: None,
            pushes: 0,
            resources_sent: 0,
        });
        if p.stream.is_some() {
            return Err(AdmitError::InstanceLive {
                id: instance.id.clone(),
            });
        }
        p.workload.clone_from(&instance.workload);
        p.namespace.clone_from(&instance.namespace);
        proxy_version.clone_into(&mut p.proxy_version);
        p.connected_since = SystemTime::now();
        p.stream = Some(stream);
        // A new stream starts from scratch: the first push goes out whatever was sent before.
        p.sent = None;
        Ok(stream)
    }

    fn disconnect(&self, id: &str, stream: u64) {
        if let Some(p) = self.proxies().get_mut(id) {
            // A reconnect may have replaced this stream already.
            if p.stream == Some(stream) {
                p.stream = None;
            }
        }
    }

    /// Pushes on every change and records ACKs until the proxy goes, the client stops reading
    /// or the server shuts down.
    async fn session(
        &self,
        id: &str,
        stream: u64,
        mut requests: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Box<DiscoveryResponse>>,
    ) {
        let mut changes = self.source.subscribe();
        changes.mark_unchanged();
        // What this stream's proxy holds: keys and versions, not bodies.
        let mut tracker = Tracker::default();
        if !self.push(id, stream, &mut tracker, &tx).await {
            return;
        }
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The source is gone: nothing more will change; keep the stream for ACKs.
                        changes = tokio::sync::watch::channel(0).1;
                        continue;
                    }
                    if !self.push(id, stream, &mut tracker, &tx).await {
                        return;
                    }
                }
                msg = requests.message() => match msg {
                    Ok(Some(DiscoveryRequest { kind: Some(Kind::Ack(ack)) })) => {
                        self.record(id, stream, &mut tracker, ack);
                        // A change that came while the push was in flight goes out now.
                        if tracker.behind() && !self.push(id, stream, &mut tracker, &tx).await {
                            return;
                        }
                    }
                    Ok(Some(_)) => {
                        tracing::debug!(instance = %id, "discovery: ignoring a message that is not an Ack");
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(instance = %id, error = %e, "discovery: stream error");
                        return;
                    }
                },
            }
        }
    }

    /// Sends `id` what differs between its resources now and what it holds, unless a push is in
    /// flight (then it goes after the answer). False when the proxy is gone.
    async fn push(
        &self,
        id: &str,
        stream: u64,
        tracker: &mut Tracker,
        tx: &mpsc::Sender<Box<DiscoveryResponse>>,
    ) -> bool {
        let target = match self.source.resources_for(id) {
            Ok(r) => r,
            Err(e) => {
                // Keep the proxy on what it has; the next change may fix it.
                tracing::warn!(instance = %id, error = %e, "discovery: no config for proxy");
                return true;
            }
        };
        let nonce = || {
            format!(
                "{:08x}-{}",
                self.nonce_prefix,
                self.nonces.fetch_add(1, Ordering::Relaxed)
            )
        };
        let Some(delta::Push { response, summary }) = tracker.push(&target, nonce) else {
            if tracker.in_flight() {
                // Sent once the proxy answers the push it has.
                return true;
            }
            // Nothing to send. After a NACK the source may have come back to what the proxy
            // holds: then it runs what it should again.
            if let Some(p) = self.proxies().get_mut(id).filter(|p| p.stream == Some(stream)) {
                let acked = tracker.acked_version();
                if let Some(acked) = acked.filter(|a| p.sent.as_ref().is_some_and(|s| *s != *a)) {
                    p.sent = Some(acked.clone());
                    p.nack = None;
                    p.acked_version = Some(acked);
                }
            }
            return true;
        };
        // Recorded for the current stream only: a stream a reconnect replaced still pushes until
        // it notices, but its sends do not count.
        if let Some(p) = self.proxies().get_mut(id).filter(|p| p.stream == Some(stream)) {
            p.sent = Some(response.version.clone());
            p.last_sent_at = Some(SystemTime::now());
            p.pushes += 1;
            p.resources_sent += summary.sent as u64;
            p.last_push = Some(summary.clone());
        }
        tracing::debug!(
            instance = %id,
            version = %response.version,
            nonce = %response.nonce,
            full_state = summary.full_state,
            resources = summary.sent,
            removed = summary.removed,
            bytes = summary.body_bytes,
            "discovery: pushing"
        );
        // A large push (a full state) goes in parts: the stream's encoder then keeps a buffer
        // of one part, not of every shared resource.
        for part in weft_api::discovery::split(response, weft_api::discovery::PART_BYTES) {
            if tx.send(Box::new(part)).await.is_err() {
                return false;
            }
        }
        true
    }

    fn record(&self, id: &str, stream: u64, tracker: &mut Tracker, ack: Ack) {
        let answer = tracker.answer(&ack.nonce, ack.ok);
        let mut proxies = self.proxies();
        let Some(p) = proxies.get_mut(id) else { return };
        if p.stream != Some(stream) {
            return;
        }
        match answer {
            // Only the answer to the push in flight counts; an older one is stale.
            Answer::Stale => {
                tracing::debug!(instance = %id, nonce = %ack.nonce, "discovery: stale ack");
            }
            Answer::Acked => {
                tracing::debug!(instance = %id, version = %ack.version, "discovery: ACK");
                p.acked_version = Some(ack.version);
                p.last_acked_at = Some(SystemTime::now());
                p.nack = None;
            }
            Answer::Nacked => {
                tracing::warn!(instance = %id, version = %ack.version, error = %ack.error, "discovery: NACK");
                p.nack = Some(ack.error);
            }
        }
    }
}

/// A stable content hash as 16 hex digits: the same bytes give the same version in every process
/// and release (see [`weft_api::discovery::content_hash`]).
pub fn version_of(bytes: &[u8]) -> String {
    weft_api::discovery::version_string(weft_api::discovery::content_hash(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stable_content_hashes() {
        assert_eq!(version_of(b""), "cbf29ce484222325");
        assert_eq!(version_of(b"a"), "af63dc4c8601ec8c");
        assert_ne!(version_of(b"{\"a\":1}"), version_of(b"{\"a\":2}"));
    }
}
