//! Authorization and per-port mTLS on the inbound side, end to end on loopback: in-process
//! proxies with certificates from a test CA (as `tls::tests`), real apps behind them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_api::proxy_config::ProxyConfig;
use weft_test_support::{HttpEcho, TcpEcho};

use crate::app::{self, Options, Running};
use crate::http::error::FLAGS_HEADER;
use crate::http::headers as mesh_headers;
use crate::tls::testing::{TestCa, PRODUCTPAGE, REVIEWS};
use crate::tls::CredentialsCell;

const RATINGS: &str = "spiffe://cluster.local/ns/default/sa/ratings";

/// reviews: an HTTP app and a TCP app; only productpage may call it, `/admin*` is denied to
/// everyone, and so is the TCP port.
fn server_config(http_app: SocketAddr, tcp_app: SocketAddr) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1", "serviceAccount": "reviews", "labels": {"app": "reviews"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "mtls": "STRICT",
            "listeners": [
                {"port": http_app.port(), "app": http_app.to_string(), "protocol": "http"},
                {"port": tcp_app.port(), "app": tcp_app.to_string(), "protocol": "tcp"},
            ],
            "authorization": [
                {
                    "name": "reviews-viewer",
                    "action": "ALLOW",
                    "rules": [{"from": [{"principals": ["cluster.local/ns/default/sa/productpage"]}]}],
                },
                {
                    "name": "deny-admin",
                    "action": "DENY",
                    "rules": [
                        {"to": [{"paths": ["/admin*"]}]},
                        {"to": [{"ports": [tcp_app.port().to_string()]}]},
                    ],
                },
            ],
        },
        "outbound": {"listen": null},
    }))
    .expect("server config")
}

fn client_config(name: &str, http_app: SocketAddr, tcp_app: SocketAddr, mesh: SocketAddr) -> ProxyConfig {
    let endpoint = |app: SocketAddr| {
        serde_json::json!({
            "address": app.to_string(),
            "meshPort": mesh.port(),
            "workload": "reviews-v1",
            "identity": REVIEWS,
        })
    };
    serde_json::from_value(serde_json::json!({
        "workload": {"name": name, "labels": {"app": name}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {"mesh": "127.0.0.1:0"},
        "outbound": {
            "listen": null,
            "ports": [
                {"listen": "127.0.0.1:0", "service": "reviews", "port": 9080},
                {"listen": "127.0.0.1:0", "service": "db", "port": 7000},
            ],
        },
        "services": [
            {"name": "reviews", "ports": [{"port": 9080, "protocol": "http"}]},
            {"name": "db", "ports": [{"port": 7000, "protocol": "tcp"}]},
        ],
        "endpoints": [
            {"service": "reviews", "port": 9080, "endpoints": [endpoint(http_app)]},
            {"service": "db", "port": 7000, "endpoints": [endpoint(tcp_app)]},
        ],
    }))
    .expect("client config")
}

async fn start(config: ProxyConfig, credentials: Option<CredentialsCell>) -> Running {
    app::start(
        config,
        Options {
            credentials,
            ..Options::default()
        },
    )
    .await
    .expect("proxy starts")
}

/// A GET on a fresh HTTP/1.1 connection: status, response flags, body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "reviews:9080")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let flags = resp
        .headers()
        .get(FLAGS_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, flags, String::from_utf8_lossy(&body).into_owned())
}

fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes to a TCP port and reads: the echoed bytes, or empty when the proxy closed it.
async fn tcp_roundtrip(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(b"hello").await;
    let mut buf = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        Ok(Err(_)) => Vec::new(),
        Err(_) => panic!("neither echoed nor closed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_allows_productpage_denies_others_admin_paths_and_the_tcp_port() {
    let ca = TestCa::new("test root");
    let http_app = HttpEcho::start("reviews-v1").await.expect("http app");
    let tcp_app = TcpEcho::start().await.expect("tcp app");
    let server = start(
        server_config(http_app.addr(), tcp_app.addr()),
        Some(ca.cell(REVIEWS)),
    )
    .await;
    let mesh = server.bound.mesh;
    let productpage = start(
        client_config("productpage", http_app.addr(), tcp_app.addr(), mesh),
        Some(ca.cell(PRODUCTPAGE)),
    )
    .await;
    let ratings = start(
        client_config("ratings", http_app.addr(), tcp_app.addr(), mesh),
        Some(ca.cell(RATINGS)),
    )
    .await;

    // ALLOW from productpage only.
    let (status, _, body) = get(productpage.bound.outbound_ports[0], "/reviews/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, flags, body) = get(ratings.bound.outbound_ports[0], "/reviews/1").await;
    assert_eq!(
        (status, flags.as_str()),
        (StatusCode::FORBIDDEN, "RBAC"),
        "{body}"
    );
    // The answer names no policy (Envoy's words); the policy is in the metrics.
    assert_eq!(body, "RBAC: access denied\n");
    // DENY by path, even for productpage.
    let (status, flags, body) = get(productpage.bound.outbound_ports[0], "/admin/users").await;
    assert_eq!(
        (status, flags.as_str()),
        (StatusCode::FORBIDDEN, "RBAC"),
        "{body}"
    );
    assert_eq!(body, "RBAC: access denied\n");
    assert_eq!(http_app.requests(), 1);

    // TCP (a CONNECT stream on the mesh hop) to the denied port: closed, never reaches the app.
    assert_eq!(tcp_roundtrip(productpage.bound.outbound_ports[1]).await, b"");
    assert_eq!(tcp_app.connections(), 0);

    let m = get(server.bound.admin, "/metrics").await.2;
    let denied = [
        ("reporter", "destination"),
        ("response_flags", "RBAC"),
        ("response_code", "403"),
    ];
    assert_eq!(metric_sum(&m, "istio_requests_total", &denied), 2.0, "{m}");
    let from_ratings = [("response_flags", "RBAC"), ("source_principal", RATINGS)];
    assert_eq!(metric_sum(&m, "istio_requests_total", &from_ratings), 1.0, "{m}");
    let tcp_denied = [("reporter", "destination"), ("response_flags", "RBAC")];
    assert!(
        metric_sum(&m, "istio_tcp_connections_opened_total", &tcp_denied) >= 1.0,
        "{m}"
    );
    // Each denial counted with the policy that decided it.
    let by_policy = |policy| [("decision", "deny"), ("policy", policy)];
    assert_eq!(
        metric_sum(
            &m,
            "weft_authz_decisions_total",
            &by_policy("AuthorizationPolicy/default/reviews-viewer")
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "weft_authz_decisions_total",
            &by_policy("AuthorizationPolicy/default/deny-admin")
        ),
        // The /admin request and the TCP stream (a DENY's HTTP-only fields are ignored on TCP).
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_on_one_port_refuses_plaintext_there_only() {
    let ca = TestCa::new("test root");
    let strict_app = HttpEcho::start("strict").await.expect("app");
    let open_app = HttpEcho::start("open").await.expect("app");
    let config: ProxyConfig = serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1"},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "mtls": "PERMISSIVE",
            "listeners": [
                {"port": strict_app.addr().port(), "app": strict_app.addr().to_string(), "protocol": "http",
                 "listen": "127.0.0.1:0", "mtls": "STRICT"},
                {"port": open_app.addr().port(), "app": open_app.addr().to_string(), "protocol": "http",
                 "listen": "127.0.0.1:0"},
            ],
        },
        "outbound": {"listen": null},
    }))
    .expect("config");
    let server = start(config, Some(ca.cell(REVIEWS))).await;

    // Plaintext HTTP/2 on the mesh port: refused for the STRICT port, served for the other.
    let mesh_get = |target: u16| async move {
        let io = TcpStream::connect(server.bound.mesh).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let req = Request::get("http://reviews.default.svc.cluster.local:9080/")
            .header(mesh_headers::TARGET_PORT, target)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let flags = resp
            .headers()
            .get(FLAGS_HEADER)
            .map(|v| v.to_str().unwrap_or("").to_string());
        (resp.status(), flags)
    };
    assert_eq!(
        mesh_get(strict_app.addr().port()).await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("DPE".to_string()))
    );
    assert_eq!(mesh_get(open_app.addr().port()).await.0, StatusCode::OK);
    assert_eq!(strict_app.requests(), 0);

    // From outside the mesh on the app ports: the STRICT one closes, the other serves.
    let strict_port = server.bound.inbound_ports[0];
    let mut s = TcpStream::connect(strict_port).await.expect("connect");
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf));
    assert_eq!(get(server.bound.inbound_ports[1], "/").await.0, StatusCode::OK);
    assert_eq!(strict_app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tcp_connection_is_closed_when_a_push_denies_it() {
    let ca = TestCa::new("test root");
    let http_app = HttpEcho::start("reviews-v1").await.expect("http app");
    let tcp_app = TcpEcho::start().await.expect("tcp app");
    let mut allowing = server_config(http_app.addr(), tcp_app.addr());
    let denying = allowing.clone();
    allowing.inbound.authorization.clear();
    let server = start(allowing, Some(ca.cell(REVIEWS))).await;
    let productpage = start(
        client_config("productpage", http_app.addr(), tcp_app.addr(), server.bound.mesh),
        Some(ca.cell(PRODUCTPAGE)),
    )
    .await;

    let mut s = TcpStream::connect(productpage.bound.outbound_ports[1])
        .await
        .expect("connect");
    s.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"ping");

    // The push that denies the port closes the open connection.
    server.shared.apply(denying);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "connection still open after the deny");
    assert!(rest.is_empty());
}

/// A TLS handshake offering the mesh ALPN with productpage's certificate: the server's
/// SPIFFE ID when the proxy terminated it, an error when it reached something else.
async fn mesh_alpn_handshake(ca: &TestCa, addr: SocketAddr) -> Result<String, String> {
    let state = crate::tls::TlsState::new(ca.cell(PRODUCTPAGE));
    let mut config = (*state.client_config(None).expect("credentials")).clone();
    config.alpn_protocols = vec![crate::tls::ALPN_MESH.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("mesh").expect("name");
    let handshake = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream));
    match handshake.await {
        Ok(Ok(tls)) => Ok(tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(crate::tls::spiffe_id)
            .unwrap_or_default()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_passes_a_mesh_alpn_client_hello_through_to_the_app() {
    let ca = TestCa::new("test root");
    let plain_app = TcpEcho::start().await.expect("app");
    let permissive_app = TcpEcho::start().await.expect("app");
    let config: ProxyConfig = serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1"},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "listeners": [
                {"port": plain_app.addr().port(), "app": plain_app.addr().to_string(),
                 "listen": "127.0.0.1:0", "mtls": "DISABLE"},
                {"port": permissive_app.addr().port(), "app": permissive_app.addr().to_string(),
                 "listen": "127.0.0.1:0", "mtls": "PERMISSIVE"},
            ],
        },
        "outbound": {"listen": null},
    }))
    .expect("config");
    let server = start(config, Some(ca.cell(REVIEWS))).await;
    let (disabled, permissive) = (server.bound.inbound_ports[0], server.bound.inbound_ports[1]);

    // PERMISSIVE: the proxy terminates it as on the mesh port; the app never sees it.
    assert_eq!(
        mesh_alpn_handshake(&ca, permissive).await,
        Ok(REVIEWS.to_string())
    );
    assert_eq!(permissive_app.connections(), 0);
    // DISABLE: the ClientHello reaches the app untouched (the echo app sends it back, which
    // is no ServerHello, so the client's handshake fails).
    assert!(mesh_alpn_handshake(&ca, disabled).await.is_err());
    assert_eq!(plain_app.connections(), 1);
    // Plaintext passes as before.
    assert_eq!(tcp_roundtrip(disabled).await, b"hello");

    let m = get(server.bound.admin, "/metrics").await.2;
    let plain = [
        ("reporter", "destination"),
        ("connection_security_policy", "none"),
    ];
    assert!(
        metric_sum(&m, "istio_tcp_connections_opened_total", &plain) >= 2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_grpc_call_gets_trailers_only_permission_denied() {
    let ca = TestCa::new("test root");
    let http_app = HttpEcho::start("reviews-v1").await.expect("http app");
    let tcp_app = TcpEcho::start().await.expect("tcp app");
    let server = start(
        server_config(http_app.addr(), tcp_app.addr()),
        Some(ca.cell(REVIEWS)),
    )
    .await;
    let ratings = start(
        client_config("ratings", http_app.addr(), tcp_app.addr(), server.bound.mesh),
        Some(ca.cell(RATINGS)),
    )
    .await;
    let stream = TcpStream::connect(ratings.bound.outbound_ports[0])
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::post("http://reviews:9080/reviews.Reviews/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK, "{resp:?}");
    assert_eq!(resp.headers()["grpc-status"], "7", "{resp:?}");
    assert_eq!(resp.headers()[FLAGS_HEADER], "RBAC", "{resp:?}");
    let message = resp.headers()["grpc-message"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(message, "RBAC: access denied");
    assert!(
        hyper::body::Body::is_end_stream(resp.body()),
        "not trailers-only: {resp:?}"
    );
    assert_eq!(http_app.requests(), 0);
}
