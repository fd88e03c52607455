//! The discovery stream end to end: a real `PushServer` on loopback TCP, a real proxy
//! (`weft_proxy::app`) subscribed through `weft_proxy::discovery::run`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use weft_api::proto::discovery_client::DiscoveryClient;
use weft_api::proto::discovery_request::Kind;
use weft_api::proto::{DiscoveryRequest, Subscribe};
use weft_api::proxy_config::ProxyConfig;
use weft_control::admission::AdmitError;
use weft_control::push::{ConfigSource, ProxyStatus, PushServer};
use weft_control::registry::Instance;
use weft_proxy::app::{self, Options, Running};
use weft_proxy::discovery::{self, Subscription};

const ID: &str = "reviews-v1.default";
const TOKEN: &str = "s3cret";

/// A config source backed by a table: what a file store or registry does, minus the files.
struct TableSource {
    configs: Mutex<HashMap<String, ProxyConfig>>,
    tokens: HashMap<String, String>,
    changes: watch::Sender<u64>,
    /// How often a session read a config: each read is the server looking at a change.
    reads: std::sync::atomic::AtomicU64,
}

impl TableSource {
    fn new(config: ProxyConfig) -> Arc<Self> {
        Arc::new(Self {
            configs: Mutex::new(HashMap::from([(ID.to_owned(), config)])),
            tokens: HashMap::from([(ID.to_owned(), TOKEN.to_owned())]),
            changes: watch::channel(0).0,
            reads: Default::default(),
        })
    }

    fn set(&self, config: ProxyConfig) {
        self.configs.lock().expect("lock").insert(ID.to_owned(), config);
        self.changes.send_modify(|v| *v += 1);
    }
}

impl ConfigSource for TableSource {
    fn config_for(&self, instance_id: &str) -> Result<ProxyConfig, String> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.configs
            .lock()
            .expect("lock")
            .get(instance_id)
            .cloned()
            .ok_or_else(|| format!("no workload {instance_id}"))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn admit(&self, sub: &Subscribe, peer: Option<IpAddr>) -> Result<Instance, AdmitError> {
        if self.tokens.get(&sub.instance_id) != Some(&sub.token) {
            return Err(AdmitError::UnknownToken);
        }
        Ok(Instance {
            id: sub.instance_id.clone(),
            workload: "reviews-v1".into(),
            namespace: "default".into(),
            labels: Default::default(),
            service_account: "default".into(),
            ip: peer.ok_or(AdmitError::NoAddress)?,
            app_ports: Default::default(),
            mesh_port: None,
        })
    }
}

/// A proxy config whose one service's endpoint listens on `endpoint_port`; every listener on
/// port 0 so tests run side by side.
fn config(endpoint_port: u16) -> ProxyConfig {
    config_for_service("reviews", endpoint_port)
}

fn config_for_service(endpoints_of: &str, endpoint_port: u16) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": { "name": "reviews-v1" },
        "admin": { "address": "127.0.0.1:0" },
        "inbound": { "mesh": "127.0.0.1:0" },
        "outbound": { "listen": null },
        "services": [{ "name": "reviews", "ports": [{ "port": 9080 }] }],
        "endpoints": [{
            "service": endpoints_of,
            "port": 9080,
            "endpoints": [{ "address": format!("127.0.0.1:{endpoint_port}") }],
        }],
    }))
    .expect("test config")
}

struct Server {
    push: PushServer,
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(source: Arc<TableSource>, addr: SocketAddr) -> Server {
    let listener = TcpListener::bind(addr).await.expect("bind control plane");
    let addr = listener.local_addr().expect("addr");
    let push = PushServer::new(source);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let push = push.clone();
        let stop = stop.clone();
        async move { push.serve(listener, stop).await.expect("serve") }
    });
    Server {
        push,
        addr,
        stop,
        task,
    }
}

impl Server {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }

    /// Subscribed, connected and running the last config pushed.
    fn in_sync(&self) -> bool {
        self.push.status().first().is_some_and(|s| s.in_sync)
    }

    fn status(&self) -> ProxyStatus {
        let all = self.push.status();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].clone()
    }
}

struct Proxy {
    running: Running,
    stop: CancellationToken,
}

/// A proxy started from a bootstrap config, not ready until the control plane's first push.
async fn proxy(control: SocketAddr) -> Proxy {
    let running = app::start(
        config(1),
        Options {
            await_control: true,
            ..Options::default()
        },
    )
    .await
    .expect("proxy starts");
    assert!(!running.shared.is_ready(), "ready before the first push");
    let stop = CancellationToken::new();
    tokio::spawn(discovery::run(
        format!("http://{control}"),
        Subscription {
            instance_id: ID.into(),
            token: TOKEN.into(),
            workload: "reviews-v1".into(),
            namespace: "default".into(),
            ..Subscription::default()
        },
        running.shared.clone(),
        stop.clone(),
    ));
    Proxy { running, stop }
}

impl Proxy {
    fn endpoint_port(&self) -> u16 {
        self.running.shared.snapshot.load().config.endpoints[0].endpoints[0]
            .address
            .port()
    }
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_subscribed_proxy_gets_its_config_turns_ready_and_its_ack_is_recorded() {
    let source = TableSource::new(config(7001));
    let server = serve(source, "127.0.0.1:0".parse().expect("addr")).await;
    let proxy = proxy(server.addr).await;

    eventually("config applied", Duration::from_secs(5), || {
        proxy.endpoint_port() == 7001
    })
    .await;
    assert!(proxy.running.shared.is_ready());
    eventually("ACK recorded", Duration::from_secs(5), || server.in_sync()).await;
    let s = server.status();
    assert_eq!(
        (s.instance_id.as_str(), s.workload.as_str(), s.namespace.as_str()),
        (ID, "reviews-v1", "default")
    );
    assert!(s.connected);
    assert_eq!(s.nack, None);
    assert_eq!(s.acked_version, s.sent_version);
    // The version names the whole state: every resource's key and content version.
    let resources = weft_api::discovery::resources_of(&config(7001)).expect("resources");
    let version = weft_api::discovery::state_version(resources.iter().map(|r| (&r.key, r.version)));
    assert_eq!(s.sent_version, Some(version));
    let push = s.last_push.expect("a push");
    assert!(push.full_state);
    assert_eq!(push.sent, resources.len());
    proxy.stop.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_as_unauthenticated() {
    let source = TableSource::new(config(7001));
    let server = serve(source, "127.0.0.1:0".parse().expect("addr")).await;
    let mut client = DiscoveryClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect"),
    );
    let (tx, rx) = mpsc::channel(1);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(Subscribe {
            instance_id: ID.into(),
            token: "wrong".into(),
            ..Subscribe::default()
        })),
    })
    .await
    .expect("send");
    let err = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        server.push.status().is_empty(),
        "nothing recorded for a refused proxy"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_change_reaches_the_proxy_within_a_second_and_is_acked() {
    let source = TableSource::new(config(7001));
    let server = serve(source.clone(), "127.0.0.1:0".parse().expect("addr")).await;
    let proxy = proxy(server.addr).await;
    eventually("first ACK", Duration::from_secs(5), || server.in_sync()).await;
    let first = server.status().acked_version;

    source.set(config(7002));
    eventually("new config applied", Duration::from_secs(1), || {
        proxy.endpoint_port() == 7002
    })
    .await;
    eventually("new ACK", Duration::from_secs(1), || {
        let s = server.status();
        s.in_sync && s.acked_version != first
    })
    .await;

    // A change that leaves this proxy's config as it is pushes nothing: once the session has
    // read the config again (so it did look at the change), the push counter has not moved.
    let before = server.status();
    let reads = source.reads.load(std::sync::atomic::Ordering::SeqCst);
    source.set(config(7002));
    eventually("the change looked at", Duration::from_secs(2), || {
        source.reads.load(std::sync::atomic::Ordering::SeqCst) > reads
    })
    .await;
    let after = server.status();
    assert_eq!(after.pushes, before.pushes, "an unchanged config was pushed");
    assert_eq!(after.sent_version, before.sent_version);
    assert!(after.in_sync);
    proxy.stop.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn an_invalid_push_is_nacked_and_the_previous_config_keeps_serving() {
    let source = TableSource::new(config(7001));
    let server = serve(source.clone(), "127.0.0.1:0".parse().expect("addr")).await;
    let proxy = proxy(server.addr).await;
    eventually("first ACK", Duration::from_secs(5), || server.in_sync()).await;
    let good = server.status().acked_version;

    // Endpoints for a service that does not exist.
    source.set(config_for_service("ratings", 7003));
    eventually("NACK recorded", Duration::from_secs(2), || {
        server.status().nack.is_some()
    })
    .await;
    let s = server.status();
    let nack = s.nack.expect("nack");
    assert!(nack.contains("ratings"), "{nack}");
    assert!(!s.in_sync);
    assert_eq!(s.acked_version, good);
    assert_ne!(s.sent_version, good);
    assert_eq!(proxy.endpoint_port(), 7001, "the refused config changed nothing");
    assert!(proxy.running.shared.is_ready());

    // Fixed: applied, ACKed, the NACK cleared.
    source.set(config(7004));
    eventually("fixed config ACKed", Duration::from_secs(2), || {
        server.status().in_sync
    })
    .await;
    assert_eq!(server.status().nack, None);
    assert_eq!(proxy.endpoint_port(), 7004);
    proxy.stop.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn after_a_control_plane_restart_the_proxy_reconnects_and_converges() {
    let source = TableSource::new(config(7001));
    let server = serve(source.clone(), "127.0.0.1:0".parse().expect("addr")).await;
    let addr = server.addr;
    let proxy = proxy(addr).await;
    eventually("first ACK", Duration::from_secs(5), || server.in_sync()).await;

    server.shutdown().await;
    // Down for a while: the proxy retries (and fails) with backoff, serving what it has.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(proxy.endpoint_port(), 7001);
    assert!(proxy.running.shared.is_ready());

    // Back on the same port with a newer config.
    source.set(config(7005));
    let server = serve(source, addr).await;
    eventually("reconnected and converged", Duration::from_secs(5), || {
        proxy.endpoint_port() == 7005
    })
    .await;
    eventually("ACK on the new server", Duration::from_secs(2), || {
        let s = server.status();
        s.connected && s.in_sync
    })
    .await;
    proxy.stop.cancel();
    server.shutdown().await;
}

#[tokio::test]
async fn a_push_larger_than_one_part_arrives_whole_and_is_acked_once() {
    // Three services of 300 endpoints each: well over `PART_BYTES` of resources.
    let mut big = config(7001);
    big.services.clear();
    big.endpoints.clear();
    for name in ["details", "ratings", "reviews"] {
        big.services.push(
            serde_json::from_value(serde_json::json!({ "name": name, "ports": [{ "port": 9080 }] }))
                .expect("service"),
        );
        let endpoints: Vec<_> = (0..300)
            .map(|i| serde_json::json!({ "address": format!("127.0.0.{}:{}", 1 + i % 200, 7001 + i) }))
            .collect();
        big.endpoints.push(
            serde_json::from_value(
                serde_json::json!({ "service": name, "port": 9080, "endpoints": endpoints }),
            )
            .expect("endpoints"),
        );
    }
    let resources = weft_api::discovery::resources_of(&big).expect("resources");
    let bytes: usize = resources.iter().map(|r| r.body.len()).sum();
    assert!(bytes > 2 * weft_api::discovery::PART_BYTES, "{bytes} bytes");

    let source = TableSource::new(big);
    let server = serve(source, "127.0.0.1:0".parse().expect("addr")).await;
    let proxy = proxy(server.addr).await;
    eventually("ACK recorded", Duration::from_secs(5), || server.in_sync()).await;
    let running = proxy.running.shared.snapshot.load().config.clone();
    assert_eq!(running.services.len(), 3);
    assert_eq!(
        running.endpoints.iter().map(|e| e.endpoints.len()).sum::<usize>(),
        900
    );
    let s = server.status();
    assert_eq!(s.pushes, 1, "one push, in parts, answered once");
    assert_eq!(s.nack, None);
    proxy.stop.cancel();
    server.shutdown().await;
}
