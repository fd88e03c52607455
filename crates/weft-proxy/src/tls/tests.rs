//! mTLS end to end on loopback: two proxies in-process with credentials from a test CA, real
//! TLS clients (rustls, `openssl s_client`) against the mesh port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use weft_api::proxy_config::ProxyConfig;
use weft_test_support::HttpEcho;

use super::testing::{TestCa, Validity, PRODUCTPAGE, REVIEWS};
use super::{CredentialsCell, TlsState};
use crate::app::{self, Options, Running};
use crate::http::headers as mesh_headers;

fn server_config(app: SocketAddr, mtls: &str) -> ProxyConfig {
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
    .expect("server config")
}

fn client_config(app: SocketAddr, mesh: SocketAddr, identity: Option<&str>) -> ProxyConfig {
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
                "labels": {"app": "reviews", "version": "v1"},
            }],
        }],
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

/// A plain HTTP/1.1 GET on a fresh connection; the status and the response flags header.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
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
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn metrics(p: &Running) -> String {
    get(p.bound.admin, "/metrics").await.1
}

/// The metrics once `name` with `labels` sums to at least `count`: a request is counted when
/// its response has ended on the server side, which can be just after the client has read it
/// (bounded: 2 s, then the metrics as they are).
async fn metrics_once(p: &Running, name: &str, labels: &[(&str, &str)], count: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let m = metrics(p).await;
        if metric_sum(&m, name, labels) >= count || tokio::time::Instant::now() >= deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of the samples of `name` whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One HTTP/2 request to a mesh port over `io` (plaintext or TLS) for app port `target`.
async fn mesh_get<IO>(io: IO, target: u16) -> Result<StatusCode, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let req = Request::get("http://reviews.default.svc.cluster.local:9080/")
        .header(mesh_headers::TARGET_PORT, target)
        .body(Empty::<Bytes>::new())
        .expect("request");
    Ok(sender.send_request(req).await?.status())
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-tls-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A certificate file and its key file.
type CertFiles = (PathBuf, PathBuf);

/// What `openssl s_client` saw: its combined output, and whether the server answered with
/// HTTP/2 (its SETTINGS frame) after the handshake, i.e. really accepted the connection.
struct SClient {
    output: String,
    h2_answered: bool,
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what a client sends first.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// `openssl s_client` against `addr`, optionally with a client certificate, speaking HTTP/2
/// once connected. Reads until the server either answered with an HTTP/2 SETTINGS frame or
/// refused (a TLS alert, and s_client exits), with a deadline, rather than for a fixed
/// time: under TLS 1.3 a refused client certificate is only reported after the client
/// finished its side of the handshake.
fn s_client(addr: SocketAddr, dir: &std::path::Path, cert: Option<CertFiles>) -> SClient {
    use std::io::{Read, Write};
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-alpn",
        "h2",
        "-tls1_3",
    ])
    .arg("-CAfile")
    .arg(dir.join("ca.pem"));
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    // Kept open: s_client stops at end of input, and must stay until the server has spoken.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(H2_PREFACE_AND_SETTINGS)
        .expect("write to s_client");
    stdin.flush().expect("flush");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let readers: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().expect("stdout")),
        Box::new(child.stderr.take().expect("stderr")),
    ];
    for mut reader in readers {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    // A SETTINGS frame from the server: type 4, no flags, stream 0 (no text has NUL bytes).
    let settings = |out: &[u8]| out.windows(6).any(|w| w == [0x04, 0, 0, 0, 0, 0]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut h2_answered = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            // Both streams closed (s_client exited), or the deadline passed.
            Err(_) => break,
        }
        // A refusal ends s_client (the streams close, above); an accepted connection stays.
        h2_answered = settings(&out);
        if h2_answered {
            break;
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    SClient {
        output: String::from_utf8_lossy(&out).into_owned(),
        h2_answered,
    }
}

fn rejected(m: &str, reason: &str) -> f64 {
    metric_sum(
        m,
        "weft_listener_connections_rejected_total",
        &[("listener", "mesh"), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_through_two_proxies_rides_mtls_and_is_labelled_with_principals() {
    let ca = TestCa::new("test root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let server = start(server_config(backend.addr(), "STRICT"), Some(ca.cell(REVIEWS))).await;
    let client = start(
        client_config(backend.addr(), server.bound.mesh, Some(REVIEWS)),
        Some(ca.cell(PRODUCTPAGE)),
    )
    .await;
    let port = client.bound.outbound_ports[0];
    for _ in 0..3 {
        let (status, body) = get(port, "/reviews/1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(backend.requests(), 3);

    let dest = [
        ("reporter", "destination"),
        ("connection_security_policy", "mutual_tls"),
        ("source_principal", PRODUCTPAGE),
        ("destination_principal", REVIEWS),
        // The source header is believed: the certificate's namespace matches it.
        ("source_workload", "productpage-v1"),
        ("response_code", "200"),
    ];
    let m = metrics_once(&server, "istio_requests_total", &dest, 3.0).await;
    assert_eq!(metric_sum(&m, "istio_requests_total", &dest), 3.0, "{m}");
    // STRICT, and the client never fell back to plaintext.
    assert_eq!(rejected(&m, "plaintext_strict"), 0.0, "{m}");

    let src = [
        ("reporter", "source"),
        ("connection_security_policy", "mutual_tls"),
        ("destination_principal", REVIEWS),
        ("response_code", "200"),
    ];
    let m = metrics_once(&client, "istio_requests_total", &src, 3.0).await;
    assert_eq!(metric_sum(&m, "istio_requests_total", &src), 3.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_presenting_another_spiffe_id() {
    let ca = TestCa::new("test root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let server = start(
        server_config(backend.addr(), "PERMISSIVE"),
        Some(ca.cell(REVIEWS)),
    )
    .await;
    let ratings = "spiffe://cluster.local/ns/default/sa/ratings";
    let client = start(
        client_config(backend.addr(), server.bound.mesh, Some(ratings)),
        Some(ca.cell(PRODUCTPAGE)),
    )
    .await;
    let (status, body) = get(client.bound.outbound_ports[0], "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(backend.requests(), 0);
    let failed = [
        ("reporter", "source"),
        ("response_flags", "UF"),
        ("response_code", "503"),
    ];
    let m = metrics_once(&client, "istio_requests_total", &failed, 1.0).await;
    assert_eq!(metric_sum(&m, "istio_requests_total", &failed), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_needs_a_current_certificate_from_the_mesh_ca() {
    let ca = TestCa::new("test root");
    let other = TestCa::new("another root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let server = start(
        server_config(backend.addr(), "PERMISSIVE"),
        Some(ca.cell(REVIEWS)),
    )
    .await;
    let mesh = server.bound.mesh;
    let dir = temp_dir();
    let (good_cert, good_key) = ca.write_leaf(&dir, "good", PRODUCTPAGE, false);
    let (old_cert, old_key) = ca.write_leaf(&dir, "expired", PRODUCTPAGE, true);
    let (early_cert, early_key) = ca.write_leaf_valid(&dir, "early", PRODUCTPAGE, Validity::NotYetValid);
    let elsewhere = "spiffe://elsewhere.example/ns/default/sa/productpage";
    let (td_cert, td_key) = ca.write_leaf(&dir, "elsewhere", elsewhere, false);
    let (bad_cert, bad_key) = other.write_leaf(&dir, "foreign", PRODUCTPAGE, false);
    // ca.pem is the mesh CA's (written first by `ca`, then `other` overwrote it): rewrite it.
    ca.write_leaf(&dir, "unused", PRODUCTPAGE, false);

    let cases: [(&str, Option<CertFiles>, bool); 6] = [
        ("no client certificate", None, false),
        ("mesh certificate", Some((good_cert, good_key)), true),
        ("certificate from another CA", Some((bad_cert, bad_key)), false),
        ("expired certificate", Some((old_cert, old_key)), false),
        ("certificate not valid yet", Some((early_cert, early_key)), false),
        ("identity in another trust domain", Some((td_cert, td_key)), false),
    ];
    let mut refused = 0.0;
    for (what, cert, accepted) in cases {
        let dir = dir.clone();
        let seen = tokio::task::spawn_blocking(move || s_client(mesh, &dir, cert))
            .await
            .expect("s_client");
        let out = &seen.output;
        // The server's certificate always verifies against the mesh CA, with ALPN h2.
        assert!(out.contains("ALPN protocol: h2"), "{what}: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{what}: {out}");
        if !accepted {
            refused += 1.0;
            assert!(out.contains("alert"), "{what} was not refused: {out}");
            assert!(
                !seen.h2_answered,
                "{what}: HTTP/2 answered after a refusal: {out}"
            );
        } else {
            assert!(!out.contains("alert"), "{what} was refused: {out}");
            assert!(seen.h2_answered, "{what}: no HTTP/2 answer: {out}");
        }
        let m = metrics(&server).await;
        assert_eq!(rejected(&m, "tls_handshake"), refused, "{what}: {m}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_http2_and_permissive_accepts_it() {
    let ca = TestCa::new("test root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let target = backend.addr().port();
    for (mode, accepted) in [("STRICT", false), ("PERMISSIVE", true)] {
        let server = start(server_config(backend.addr(), mode), Some(ca.cell(REVIEWS))).await;
        let tcp = TcpStream::connect(server.bound.mesh).await.expect("connect");
        let result = mesh_get(tcp, target).await;
        let mut m = metrics(&server).await;
        if accepted {
            assert_eq!(result.expect("plaintext accepted"), StatusCode::OK, "{mode}");
            // A request is counted when its response has been sent, which may be just after the
            // client read it: wait for the count (to a deadline) rather than race it.
            let counted = [("reporter", "destination")];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while metric_sum(&m, "istio_requests_total", &counted) < 1.0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
                m = metrics(&server).await;
            }
            assert_eq!(rejected(&m, "plaintext_strict"), 0.0, "{mode}: {m}");
            // Plaintext from a peer when this proxy has credentials: the source header is not
            // believed.
            let dest = [("reporter", "destination"), ("source_workload", "unknown")];
            assert_eq!(metric_sum(&m, "istio_requests_total", &dest), 1.0, "{m}");
            let dest = [
                ("connection_security_policy", "none"),
                ("source_principal", "unknown"),
            ];
            assert_eq!(metric_sum(&m, "istio_requests_total", &dest), 1.0, "{m}");
        } else {
            assert!(result.is_err(), "{mode}: plaintext was served");
            assert_eq!(rejected(&m, "plaintext_strict"), 1.0, "{mode}: {m}");
        }
    }
    // mTLS from a proxy with a matching certificate is served under STRICT.
    let server = start(server_config(backend.addr(), "STRICT"), Some(ca.cell(REVIEWS))).await;
    let state = TlsState::new(ca.cell(PRODUCTPAGE));
    let tcp = TcpStream::connect(server.bound.mesh).await.expect("connect");
    let (tls, peer) = super::connect(&state, Some(REVIEWS), server.bound.mesh, tcp)
        .await
        .expect("mTLS handshake");
    assert_eq!(peer, REVIEWS);
    assert_eq!(mesh_get(tls, target).await.expect("mTLS served"), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_credentials_under_load_fails_no_request() {
    let ca = TestCa::new("test root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let server_cell = ca.cell(REVIEWS);
    let client_cell = ca.cell(PRODUCTPAGE);
    let server = start(server_config(backend.addr(), "STRICT"), Some(server_cell.clone())).await;
    let client = start(
        client_config(backend.addr(), server.bound.mesh, Some(REVIEWS)),
        Some(client_cell.clone()),
    )
    .await;
    let port = client.bound.outbound_ports[0];
    let target = backend.addr().port();
    let old_leaf = server_cell.load_full().expect("creds").chain[0].clone();
    let mut failures = Vec::new();
    let mut new_leaf = None;
    for i in 0..200 {
        if i == 100 {
            server_cell.store(Some(Arc::new(ca.credentials(REVIEWS))));
            client_cell.store(Some(Arc::new(ca.credentials(PRODUCTPAGE))));
            new_leaf = Some(server_cell.load_full().expect("creds").chain[0].clone());
        }
        let (status, body) = get(port, "/").await;
        if status != StatusCode::OK {
            failures.push(format!("request {i}: {status} {body}"));
        }
        if i % 20 == 0 {
            // A fresh handshake with the client's current credentials, as a new pooled
            // connection would make, sees the server's current leaf.
            let state = TlsState::new(client_cell.clone());
            let tcp = TcpStream::connect(server.bound.mesh).await.expect("connect");
            match super::connect(&state, Some(REVIEWS), server.bound.mesh, tcp).await {
                Ok((tls, _)) => {
                    let presented = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
                    let want = new_leaf.as_ref().unwrap_or(&old_leaf);
                    assert_eq!(&presented, want, "request {i}: server presented a stale leaf");
                    if let Err(e) = mesh_get(tls, target).await {
                        failures.push(format!("handshake {i}: {e}"));
                    }
                }
                Err(e) => failures.push(format!("handshake {i}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_ne!(new_leaf.as_ref(), Some(&old_leaf));
}

#[test]
fn spiffe_namespace_is_read_from_the_id() {
    assert_eq!(super::spiffe_namespace(PRODUCTPAGE), Some("default"));
    assert_eq!(super::spiffe_namespace("spiffe://td/ns/shop/sa/x"), Some("shop"));
    assert_eq!(super::spiffe_namespace("spiffe://td/sa/x"), None);
    assert_eq!(super::spiffe_namespace("https://td/ns/a/sa/b"), None);
    let ca = TestCa::new("root");
    assert_eq!(
        super::spiffe_id(&ca.leaf(REVIEWS, false).cert).as_deref(),
        Some(REVIEWS)
    );
    assert_eq!(super::spiffe_id(&ca.root()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_header_is_not_believed_from_a_certificate_of_another_namespace() {
    let ca = TestCa::new("test root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let server = start(server_config(backend.addr(), "STRICT"), Some(ca.cell(REVIEWS))).await;
    // The client's workload says namespace `default`; its certificate says `shop`.
    let shop = "spiffe://cluster.local/ns/shop/sa/productpage";
    let client = start(
        client_config(backend.addr(), server.bound.mesh, None),
        Some(ca.cell(shop)),
    )
    .await;
    let (status, body) = get(client.bound.outbound_ports[0], "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dest = [
        ("reporter", "destination"),
        ("connection_security_policy", "mutual_tls"),
        ("source_principal", shop),
        ("source_workload", "unknown"),
        ("source_workload_namespace", "unknown"),
    ];
    let m = metrics_once(&server, "istio_requests_total", &dest, 1.0).await;
    assert_eq!(metric_sum(&m, "istio_requests_total", &dest), 1.0, "{m}");
    // Without an expected identity on the endpoint, any identity the bundle vouches for is
    // accepted; the client still reports the one it saw.
    let src = [("reporter", "source"), ("destination_principal", REVIEWS)];
    let m = metrics_once(&client, "istio_requests_total", &src, 1.0).await;
    assert_eq!(metric_sum(&m, "istio_requests_total", &src), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_is_trusted_once_it_is_in_the_bundle_without_a_restart() {
    let old = TestCa::new("old root");
    let new = TestCa::new("new root");
    let backend = HttpEcho::start("reviews-v1").await.expect("backend");
    let server_cell = old.cell(REVIEWS);
    let server = start(server_config(backend.addr(), "STRICT"), Some(server_cell.clone())).await;
    let client_cell = new.cell(PRODUCTPAGE);
    let handshake = |cell: CredentialsCell| async move {
        let tcp = TcpStream::connect(server.bound.mesh).await.expect("connect");
        let state = TlsState::new(cell);
        super::connect(&state, Some(REVIEWS), server.bound.mesh, tcp)
            .await
            .map(|_| ())
    };
    // Neither side trusts the other's root yet.
    assert!(handshake(client_cell.clone()).await.is_err());
    // Both bundles carry both roots: the server's leaf from the old root, the client's from
    // the new one, and both verify.
    let both = vec![old.root(), new.root()];
    let mut creds = old.credentials(REVIEWS);
    creds.trust_bundle = both.clone();
    server_cell.store(Some(Arc::new(creds)));
    let mut creds = new.credentials(PRODUCTPAGE);
    creds.trust_bundle = both;
    client_cell.store(Some(Arc::new(creds)));
    handshake(client_cell)
        .await
        .expect("handshake after the bundle rotation");
}

/// One mTLS connection from `client` to the acceptor at `addr`; how its handshake went. The
/// server sends one byte after the handshake so that the client reads the session tickets that
/// came with it (as any real exchange does).
async fn handshake_kind(client: &Arc<TlsState>, addr: SocketAddr) -> rustls::HandshakeKind {
    use tokio::io::AsyncReadExt;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut tls, peer) = super::connect(client, Some(REVIEWS), addr, tcp)
        .await
        .expect("mTLS handshake");
    assert_eq!(peer, REVIEWS);
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.expect("the server's byte");
    tls.get_ref().1.handshake_kind().expect("handshake done")
}

#[tokio::test]
async fn a_returning_peer_resumes_its_session_until_credentials_rotate() {
    use rustls::HandshakeKind::{Full, Resumed};
    use tokio::io::AsyncWriteExt;
    let ca = TestCa::new("resumption");
    let server_cell = ca.cell(REVIEWS);
    let client_cell = ca.cell(PRODUCTPAGE);
    let acceptor = super::MeshAcceptor::new(TlsState::new(server_cell.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (mut tls, peer) = acceptor.accept(tcp).await.expect("server handshake");
                assert_eq!(peer, PRODUCTPAGE);
                tls.write_all(b"x").await.expect("write");
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await;
            });
        }
    });
    let client = TlsState::new(client_cell.clone());

    assert_eq!(handshake_kind(&client, addr).await, Full, "first contact");
    assert_eq!(handshake_kind(&client, addr).await, Resumed, "same peer again");
    assert_eq!(handshake_kind(&client, addr).await, Resumed);

    // New client credentials: sessions made with the old ones are gone with them.
    client_cell.store(Some(Arc::new(ca.credentials(PRODUCTPAGE))));
    assert_eq!(
        handshake_kind(&client, addr).await,
        Full,
        "after the client rotated"
    );
    assert_eq!(handshake_kind(&client, addr).await, Resumed);

    // New server credentials: the server forgets its sessions, the client's ticket is refused.
    server_cell.store(Some(Arc::new(ca.credentials(REVIEWS))));
    assert_eq!(
        handshake_kind(&client, addr).await,
        Full,
        "after the server rotated"
    );
}
