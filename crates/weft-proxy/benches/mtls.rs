//! What mTLS costs between two Weft proxies (issue 4, "Performance"): ECDSA P-256 certificates
//! from a test CA, TLS 1.3, the proxy's own rustls configs (`TlsState`).
//!
//! - `handshake/full`: a new mTLS connection, client and server together, in memory (no
//!   sockets): CPU per handshake for the pair. `handshake/full_server_side` times only the
//!   mesh port's share (what one proxy pays per new inbound connection): its inverse is new
//!   connections per second per core. Target: >= 3,000/s/core.
//! - `handshake/resumed`: the same peer connecting again (session resumption).
//! - `mesh_hop/plaintext` vs `mesh_hop/mtls`: one HTTP/1.1 request on a kept-alive connection
//!   through two real proxies on loopback (client sidecar -> pooled HTTP/2 mesh hop -> server
//!   sidecar -> echo app); the difference is the latency mTLS adds once connections are pooled.
//!
//! ```sh
//! cargo bench -p weft-proxy --bench mtls
//! ```
//!
//! `cargo test` runs every benchmark here once (criterion's test mode; `test = true` in
//! Cargo.toml), so its checks are part of the test suite: a fresh client's handshake is full
//! and a returning one's resumed, and both mesh hops answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use weft_api::proxy_config::ProxyConfig;
use weft_proxy::app::{self, Options, Running};
use weft_proxy::tls::testing::{TestCa, PRODUCTPAGE, REVIEWS};
use weft_proxy::tls::TlsState;
use weft_test_support::HttpEcho;

/// Peers are dialed by IP; the name is not checked (the SPIFFE ID is).
fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
}

/// Feeds `bytes` to a connection's TLS reader until all are taken.
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).expect("read_tls");
    }
}

/// One flight each way: the client's pending records to the server, the server's answer back.
/// Returns the time the server spent (reading, processing, writing).
fn flight(client: &mut ClientConnection, server: &mut ServerConnection, buf: &mut Vec<u8>) -> Duration {
    buf.clear();
    while client.wants_write() {
        client.write_tls(buf).expect("client write_tls");
    }
    let start = Instant::now();
    feed(server, buf);
    server.process_new_packets().expect("server accepts");
    buf.clear();
    while server.wants_write() {
        server.write_tls(buf).expect("server write_tls");
    }
    let server_time = start.elapsed();
    feed(client, buf);
    client.process_new_packets().expect("client accepts");
    server_time
}

/// A whole handshake, then one more flight so that the client holds the session tickets that
/// follow it (as any real exchange would). Returns how it went and the server's share of time.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> (HandshakeKind, Duration) {
    let start = Instant::now();
    let mut s = ServerConnection::new(server.clone()).expect("server connection");
    let mut server_time = start.elapsed();
    let mut c = ClientConnection::new(client.clone(), server_name()).expect("client connection");
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..8 {
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        server_time += flight(&mut c, &mut s, &mut buf);
    }
    assert!(
        !c.is_handshaking() && !s.is_handshaking(),
        "handshake did not finish"
    );
    server_time += flight(&mut c, &mut s, &mut buf);
    (c.handshake_kind().expect("done"), server_time)
}

fn handshakes(c: &mut Criterion) {
    let ca = TestCa::new("bench");
    let client_state = TlsState::new(ca.cell(PRODUCTPAGE));
    let server_state = TlsState::new(ca.cell(REVIEWS));
    let server = server_state.server_config().expect("server config");
    let resuming = client_state.client_config(Some(REVIEWS)).expect("client config");
    let mut fresh = (*resuming).clone();
    fresh.resumption = Resumption::disabled();
    let fresh = Arc::new(fresh);

    assert_eq!(handshake(&fresh, &server).0, HandshakeKind::Full);
    handshake(&resuming, &server);
    assert_eq!(handshake(&resuming, &server).0, HandshakeKind::Resumed);

    let mut group = c.benchmark_group("handshake");
    group.bench_function("full", |b| b.iter(|| handshake(&fresh, &server)));
    group.bench_function("full_server_side", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| handshake(&fresh, &server).1).sum())
    });
    group.bench_function("resumed", |b| b.iter(|| handshake(&resuming, &server)));
    group.finish();
}

/// The server sidecar: inbound to the echo app at `app`, mesh port on an ephemeral port.
fn server_proxy(app: SocketAddr, mtls: &str) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1", "labels": {"app": "reviews", "version": "v1"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "mtls": mtls,
            "listeners": [{"port": app.port(), "app": app.to_string(), "protocol": "http"}],
        },
        "outbound": {"listen": null},
    }))
    .expect("server proxy config")
}

/// The client sidecar: one outbound port for `reviews:9080`, whose endpoint is the app behind
/// the server sidecar's `mesh` port.
fn client_proxy(app: SocketAddr, mesh: SocketAddr, identity: Option<&str>) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "productpage-v1", "labels": {"app": "productpage", "version": "v1"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {"mesh": "127.0.0.1:0"},
        "outbound": {
            "listen": null,
            "ports": [{"listen": "127.0.0.1:0", "service": "reviews", "port": 9080}],
        },
        "services": [{"name": "reviews", "ports": [{"port": 9080, "protocol": "http"}]}],
        "endpoints": [{
            "service": "reviews",
            "port": 9080,
            "endpoints": [{
                "address": app.to_string(),
                "meshPort": mesh.port(),
                "workload": "reviews-v1",
                "identity": identity,
            }],
        }],
    }))
    .expect("client proxy config")
}

/// Two proxies and an app; the client proxy's outbound port. With `mtls` both hold
/// certificates from one CA and the server refuses plaintext.
async fn two_proxies(ca: &TestCa, app: SocketAddr, mtls: bool) -> (Running, Running, SocketAddr) {
    let (mode, server_cell, client_cell, identity) = match mtls {
        true => (
            "STRICT",
            Some(ca.cell(REVIEWS)),
            Some(ca.cell(PRODUCTPAGE)),
            Some(REVIEWS),
        ),
        false => ("PERMISSIVE", None, None, None),
    };
    let start = |config, credentials| {
        app::start(
            config,
            Options {
                credentials,
                ..Options::default()
            },
        )
    };
    let server = start(server_proxy(app, mode), server_cell)
        .await
        .expect("server proxy");
    let client = start(client_proxy(app, server.bound.mesh, identity), client_cell)
        .await
        .expect("client proxy");
    let outbound = client.bound.outbound_ports[0];
    (server, client, outbound)
}

fn mesh_hop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ca = TestCa::new("bench");
    let echo = rt.block_on(HttpEcho::start("reviews")).expect("echo app");
    let mut group = c.benchmark_group("mesh_hop");
    for (name, mtls) in [("plaintext", false), ("mtls", true)] {
        let (_server, _client, outbound) = rt.block_on(two_proxies(&ca, echo.addr(), mtls));
        let connect = || async move {
            let stream = tokio::net::TcpStream::connect(outbound).await.expect("connect");
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("http1 handshake");
            tokio::spawn(conn);
            sender
        };
        let mut sender = rt.block_on(connect());
        // The app's connection is kept alive; should the proxy close it, the next request
        // reconnects (counted and printed: the figure then includes those connects).
        let mut reconnects = 0u64;
        let mut get = || {
            rt.block_on(async {
                if sender.ready().await.is_err() {
                    reconnects += 1;
                    sender = connect().await;
                }
                let req = http::Request::get("/")
                    .header("host", "reviews:9080")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let resp = sender.send_request(req).await.expect("response");
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.into_body().collect().await.expect("body").to_bytes().len()
            })
        };
        get();
        group.bench_function(name, |b| b.iter(&mut get));
        println!("mesh_hop/{name}: {reconnects} reconnect(s) of the app's connection");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(50);
    targets = handshakes, mesh_hop
}
criterion_main!(benches);
