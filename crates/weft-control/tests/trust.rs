//! Trust from the first packet and root rotation, end to end: a real control plane
//! (`weft_control::app`, `--tls`), proxies (`weft_proxy::app`) with a trust anchor given out of
//! band, and a root rotation under a constant request loop over the mTLS mesh hop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use weft_api::proxy_config::ProxyConfig;
use weft_control::app::{self, ControlOptions, Running};
use weft_control::identity::TRUST_BUNDLE_FILE;
use weft_proxy::control_tls::TrustAnchor;
use weft_proxy::identity::{self, CredentialsCell, IdentityMetrics, IdentityRequest};

struct Control {
    running: Running,
    state_dir: PathBuf,
    root: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.running.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn control(name: &str, cert_ttl: Duration, tls: bool) -> Control {
    let root = std::env::temp_dir().join(format!("weft-trust-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let state_dir = root.join("state");
    let mut options = ControlOptions::new(vec![config_dir], state_dir.clone());
    options.listen = "127.0.0.1:0".parse().expect("addr");
    options.admin = "127.0.0.1:0".parse().expect("addr");
    options.cert_ttl = cert_ttl;
    options.tls = tls;
    let running = app::start(options).await.expect("control plane starts");
    Control {
        running,
        state_dir,
        root,
    }
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn bootstrap() -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": { "name": "reviews-v1" },
        "admin": { "address": "127.0.0.1:0" },
        "inbound": { "mesh": "127.0.0.1:0" },
        "outbound": { "listen": null },
    }))
    .expect("config")
}

/// A Sign request the control plane `cp` grants: a fresh token for `reviews-v1` and a CSR.
fn valid_sign_request(cp: &Control) -> weft_api::proto::identity::SignRequest {
    let token = cp
        .running
        .source
        .tokens()
        .create(&weft_control::tokens::Grant::new(
            "reviews-v1",
            "default",
            "default",
        ))
        .expect("token");
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    weft_api::proto::identity::SignRequest {
        token,
        namespace: "default".into(),
        service_account: "default".into(),
        csr_pem: csr,
        instance_id: "reviews-v1.default".into(),
    }
}

/// `request` sent in plaintext gRPC (h2c) to `addr`.
async fn sign_plaintext(
    addr: SocketAddr,
    request: weft_api::proto::identity::SignRequest,
) -> Result<weft_api::proto::identity::SignResponse, tonic::Status> {
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("tcp connects");
    weft_api::proto::identity::identity_client::IdentityClient::new(plain)
        .sign(request)
        .await
        .map(tonic::Response::into_inner)
}

/// A proxy dialing the control plane with `anchor`: discovery and identity.
async fn anchored_proxy(
    cp: &Control,
    anchor: TrustAnchor,
    stop: &CancellationToken,
) -> (weft_proxy::app::Running, CredentialsCell, IdentityMetrics) {
    let token = cp
        .running
        .source
        .tokens()
        .create(&weft_control::tokens::Grant::new(
            "reviews-v1",
            "default",
            "default",
        ))
        .expect("token");
    let config = bootstrap();
    let proxy = weft_proxy::app::start(
        config.clone(),
        weft_proxy::app::Options {
            await_control: true,
            await_identity: true,
            ..Default::default()
        },
    )
    .await
    .expect("proxy starts");
    let endpoint = format!("http://{}", cp.running.listen);
    let sub = weft_proxy::discovery::Subscription::for_instance(
        "reviews-v1.default",
        &token,
        &config,
        Some("127.0.0.1".parse().expect("ip")),
        proxy.bound.mesh.port(),
    );
    tokio::spawn(weft_proxy::discovery::run_anchored(
        endpoint.clone(),
        Some(anchor.clone()),
        sub,
        proxy.shared.clone(),
        stop.clone(),
    ));
    let (cell, metrics) = proxy.identity.clone().expect("awaiting an identity");
    tokio::spawn(identity::run_anchored(
        endpoint,
        Some(anchor),
        IdentityRequest {
            token,
            namespace: "default".into(),
            service_account: String::new(),
            instance_id: "reviews-v1.default".into(),
        },
        cell.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    (proxy, cell, metrics)
}

#[tokio::test]
async fn a_proxy_with_the_right_anchor_converges_over_tls() {
    let cp = control("right", Duration::from_secs(3600), true).await;
    let anchor = TrustAnchor::new(cp.state_dir.join(TRUST_BUNDLE_FILE));
    assert_eq!(
        anchor.load().expect("anchor written"),
        cp.running.ca.trust_bundle()
    );
    let stop = CancellationToken::new();
    let (proxy, cell, metrics) = anchored_proxy(&cp, anchor.clone(), &stop).await;
    wait_for("ready", Duration::from_secs(10), || {
        proxy.shared.is_ready().then_some(())
    })
    .await;
    let creds = cell.load_full().expect("credentials");
    assert_eq!(creds.spiffe_id, "spiffe://cluster.local/ns/default/sa/default");
    assert_eq!(creds.trust_bundle, anchor.load().expect("anchor"));
    assert_eq!(metrics.refreshes(), (1, 0));

    // Plaintext gRPC against the TLS port gets nowhere: a request a plaintext control plane
    // would grant (a valid token and CSR) fails at the transport, not at the token check.
    let plain_cp = control("right-plain", Duration::from_secs(3600), false).await;
    let granted = sign_plaintext(plain_cp.running.listen, valid_sign_request(&plain_cp)).await;
    assert!(
        granted.is_ok(),
        "a plaintext control plane grants it: {granted:?}"
    );
    let refused = sign_plaintext(cp.running.listen, valid_sign_request(&cp))
        .await
        .expect_err("plaintext answered on a TLS port");
    assert!(
        matches!(refused.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
            && refused.metadata().is_empty(),
        "not a transport failure but an answer from the server: {refused:?}"
    );

    // The control plane's /status lists the certificate it issued (for `weft check`).
    let status = http_get(cp.running.admin, "/status", "x").await;
    let body = status.split_once("\r\n\r\n").expect("http").1;
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    let ids = v["identities"].as_array().expect("identities");
    assert_eq!(ids.len(), 1, "{v}");
    assert_eq!(ids[0]["spiffeId"], creds.spiffe_id);
    assert_eq!(ids[0]["instance"], "reviews-v1.default");
    assert_eq!(ids[0]["connected"], true);
    assert_eq!(
        ids[0]["notAfter"].as_u64(),
        creds
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    );
    assert_eq!(v["trustBundle"].as_array().map(Vec::len), Some(1));
    stop.cancel();
}

#[tokio::test]
async fn a_proxy_with_a_wrong_anchor_refuses_the_control_plane() {
    let cp = control("wrong", Duration::from_secs(3600), true).await;
    // Another mesh's root.
    let other = std::env::temp_dir().join(format!("weft-trust-e2e-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    weft_control::identity::CertificateAuthority::load_or_create(&other).expect("other CA");
    let anchor = TrustAnchor::new(other.join(weft_control::identity::CA_CERT_FILE));
    let stop = CancellationToken::new();
    let (proxy, cell, metrics) = anchored_proxy(&cp, anchor, &stop).await;
    wait_for("two refused issuances", Duration::from_secs(10), || {
        (metrics.refreshes().1 >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cell.load().is_none(), "a certificate over an unverified channel");
    assert!(
        !proxy.shared.ready.load(std::sync::atomic::Ordering::Acquire),
        "a config from an unverified control plane"
    );
    assert!(!proxy.shared.is_ready());
    assert!(cp.running.push.status().is_empty(), "the proxy subscribed");
    assert_eq!(metrics.refreshes().0, 0);
    stop.cancel();
    let _ = std::fs::remove_dir_all(&other);
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem")
}

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn server_config(app: SocketAddr) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1", "serviceAccount": "reviews", "labels": {"app": "reviews"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "mtls": "STRICT",
            "listeners": [{"port": app.port(), "app": app.to_string(), "protocol": "http"}],
        },
        "outbound": {"listen": null},
    }))
    .expect("server config")
}

fn client_config(app: SocketAddr, mesh: SocketAddr) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "productpage-v1", "serviceAccount": "productpage", "labels": {"app": "productpage"}},
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
                "identity": REVIEWS,
                "labels": {"app": "reviews"},
            }],
        }],
    }))
    .expect("client config")
}

/// A proxy whose credentials come from the control plane (ttl short), no discovery.
async fn meshed(
    cp: &Control,
    config: ProxyConfig,
    sa: &str,
    stop: &CancellationToken,
) -> (weft_proxy::app::Running, CredentialsCell, IdentityMetrics) {
    let token = cp
        .running
        .source
        .tokens()
        .create(&weft_control::tokens::Grant::new(
            &format!("{sa}-v1"),
            "default",
            sa,
        ))
        .expect("token");
    let cell = identity::new_cell();
    let metrics = IdentityMetrics::default();
    tokio::spawn(identity::run(
        format!("http://{}", cp.running.listen),
        IdentityRequest {
            token,
            namespace: "default".into(),
            service_account: sa.into(),
            ..Default::default()
        },
        cell.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    wait_for("a certificate", Duration::from_secs(10), || cell.load_full()).await;
    let running = weft_proxy::app::start(
        config,
        weft_proxy::app::Options {
            credentials: Some(cell.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("proxy starts");
    (running, cell, metrics)
}

/// One HTTP/2 request on a fresh mTLS connection to `mesh` with the client's current
/// credentials (what a new pooled connection does).
async fn fresh_mesh_request(cell: &CredentialsCell, mesh: SocketAddr, target: u16) -> Result<(), String> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let state = weft_proxy::tls::TlsState::new(cell.clone());
    let tcp = tokio::net::TcpStream::connect(mesh)
        .await
        .map_err(|e| e.to_string())?;
    let (tls, _) = weft_proxy::tls::connect(&state, Some(REVIEWS), mesh, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(|e| format!("h2: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get("http://reviews.default.svc.cluster.local:9080/")
        .header("x-weft-target-port", target)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if resp.status() == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_rotation_under_load_fails_no_request() {
    let ttl = Duration::from_secs(3);
    let cp = control("rotate", ttl, false).await;
    let stop = CancellationToken::new();
    let backend = weft_test_support::HttpEcho::start("reviews-v1")
        .await
        .expect("backend");
    let (server, server_cell, server_metrics) =
        meshed(&cp, server_config(backend.addr()), "reviews", &stop).await;
    let (client, client_cell, _) = meshed(
        &cp,
        client_config(backend.addr(), server.bound.mesh),
        "productpage",
        &stop,
    )
    .await;
    let old_root = cp.running.ca.trust_bundle();
    assert_eq!(old_root.len(), 1);
    let port = client.bound.outbound_ports[0];
    let target = backend.addr().port();

    let mut failures = Vec::new();
    let mut new_root = None;
    let start = Instant::now();
    for i in 0..300 {
        if i == 30 {
            // Trusted at once, signs after one lifetime, the old root goes one lifetime later.
            let pem = cp.running.ca.rotate_root(ttl, ttl).expect("rotate");
            new_root = Some(pem_certs(&pem).remove(0));
            assert_eq!(cp.running.ca.trust_bundle().len(), 2);
            let anchor = std::fs::read_to_string(cp.state_dir.join(TRUST_BUNDLE_FILE)).expect("bundle file");
            assert_eq!(pem_certs(&anchor).len(), 2, "the anchor file holds both roots");
        }
        let resp = http_get(port, "/", "reviews:9080").await;
        if !resp.starts_with("HTTP/1.1 200") {
            failures.push(format!(
                "request {i} at {:?}: {}",
                start.elapsed(),
                resp.lines().next().unwrap_or("")
            ));
        }
        if i % 5 == 0 {
            if let Err(e) = fresh_mesh_request(&client_cell, server.bound.mesh, target).await {
                failures.push(format!("fresh connection {i} at {:?}: {e}", start.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let elapsed = start.elapsed();
    assert!(failures.is_empty(), "{failures:#?}");
    let new_root = new_root.expect("rotated");
    // The loop outlived the rotation: the new root signs, and is the only one trusted.
    assert!(
        elapsed > Duration::from_secs(7),
        "the loop ended at {elapsed:?}, before the rotation did"
    );
    assert_eq!(cp.running.ca.trust_bundle(), vec![new_root.clone()]);
    for cell in [&server_cell, &client_cell] {
        let creds = cell.load_full().expect("credentials");
        assert_eq!(
            creds.chain.last(),
            Some(&new_root),
            "still signed by the old root"
        );
        assert!(creds.trust_bundle.contains(&new_root));
    }
    assert!(
        server_metrics.refreshes().0 >= 4,
        "{:?}",
        server_metrics.refreshes()
    );
    let _ = (PRODUCTPAGE, &server, &client);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchored_proxy_follows_a_root_rotation_through_the_anchor_file() {
    let ttl = Duration::from_secs(2);
    let cp = control("rotate-anchored", ttl, true).await;
    let anchor = TrustAnchor::new(cp.state_dir.join(TRUST_BUNDLE_FILE));
    let stop = CancellationToken::new();
    let (proxy, cell, metrics) = anchored_proxy(&cp, anchor.clone(), &stop).await;
    wait_for("ready", Duration::from_secs(10), || {
        proxy.shared.is_ready().then_some(())
    })
    .await;
    let new_root = pem_certs(&cp.running.ca.rotate_root(ttl, ttl).expect("rotate")).remove(0);
    assert_eq!(anchor.load().expect("anchor").len(), 2);
    // Past the overlap: the anchor file holds only the new root, the control plane presents a
    // server certificate from it, and the proxy still renews (over TLS verified by the file).
    wait_for("the old root retired", Duration::from_secs(10), || {
        (cp.running.ca.trust_bundle() == vec![new_root.clone()]).then_some(())
    })
    .await;
    let before = metrics.refreshes().0;
    wait_for("a renewal after the rotation", Duration::from_secs(10), || {
        (metrics.refreshes().0 > before).then_some(())
    })
    .await;
    assert_eq!(anchor.load().expect("anchor"), vec![new_root.clone()]);
    let creds = cell.load_full().expect("credentials");
    assert_eq!(creds.chain.last(), Some(&new_root));
    assert_eq!(creds.trust_bundle, vec![new_root]);
    assert!(proxy.shared.is_ready());
    stop.cancel();
}
