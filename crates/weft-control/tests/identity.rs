//! Workload identity end to end: a real control plane (`weft_control::app`) serving
//! `weft.identity.v1.Identity` on its discovery port over loopback, and the proxy's side
//! (`weft_proxy::identity::run`, `weft_proxy::app`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;
use weft_api::proto::identity::identity_client::IdentityClient;
use weft_api::proto::identity::SignRequest;
use weft_control::app::{self, ControlOptions, Running};
use weft_control::tokens::Grant;
use weft_proxy::identity::{self, Credentials, IdentityMetrics, IdentityRequest};

struct Control {
    running: Running,
    endpoint: String,
    state_dir: PathBuf,
    root: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.running.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn control(name: &str, cert_ttl: Duration) -> Control {
    let root = std::env::temp_dir().join(format!("weft-identity-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let state_dir = root.join("state");
    let mut options = ControlOptions::new(vec![config_dir], state_dir.clone());
    options.listen = "127.0.0.1:0".parse().expect("addr");
    options.admin = "127.0.0.1:0".parse().expect("addr");
    options.cert_ttl = cert_ttl;
    let running = app::start(options).await.expect("control plane starts");
    let endpoint = format!("http://{}", running.listen);
    Control {
        running,
        endpoint,
        state_dir,
        root,
    }
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

fn csr_asking_for(uri: &str) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri.to_string().try_into().expect("ia5"))];
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem")
}

fn uri_san(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parses");
    let san = cert.subject_alternative_name().expect("san").expect("has san");
    match san.value.general_names.as_slice() {
        [x509_parser::extensions::GeneralName::URI(u)] => (*u).to_string(),
        other => panic!("want one URI SAN, got {other:?}"),
    }
}

/// Verifies `chain` to the roots in `bundle` as a peer would (WebPKI, ring).
fn verify(chain: &[CertificateDer<'static>], bundle: &[CertificateDer<'static>]) {
    let mut roots = rustls::RootCertStore::empty();
    for r in bundle {
        roots.add(r.clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("verifier")
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .expect("the chain verifies to the bundle");
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

#[tokio::test]
async fn sign_over_grpc_refuses_a_wrong_token_and_issues_only_the_granted_identity() {
    let cp = control("sign", Duration::from_secs(24 * 3600)).await;
    let token = cp
        .running
        .source
        .tokens()
        .create(&Grant::new("reviews-v1", "shop", "reviews"))
        .expect("token");
    let mut client = IdentityClient::new(channel(&cp.endpoint).await);
    let greedy = csr_asking_for("spiffe://cluster.local/ns/kube-system/sa/admin");
    let req = |token: &str, ns: &str, sa: &str| SignRequest {
        token: token.into(),
        namespace: ns.into(),
        service_account: sa.into(),
        csr_pem: greedy.clone(),
        instance_id: String::new(),
    };

    for (t, ns, sa) in [("wrong", "shop", "reviews"), ("", "shop", "reviews")] {
        let status = client.sign(req(t, ns, sa)).await.expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{t} {ns} {sa}: {status}"
        );
    }
    // A real token asking for another identity than the one it is bound to: refused, naming
    // the identity the token grants.
    for (ns, sa) in [
        ("shop", "ratings"),
        ("kube-system", "reviews"),
        ("kube-system", "admin"),
    ] {
        let status = client.sign(req(&token, ns, sa)).await.expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{ns} {sa}: {status}"
        );
        assert!(
            status
                .message()
                .contains("bound to namespace \"shop\", service account \"reviews\""),
            "{status}"
        );
    }
    let status = client
        .sign(SignRequest {
            csr_pem: "garbage".into(),
            ..req(&token, "shop", "reviews")
        })
        .await
        .expect_err("bad csr");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let signed = client
        .sign(req(&token, "shop", "reviews"))
        .await
        .expect("signed")
        .into_inner();
    let chain = pem_certs(&signed.cert_chain_pem);
    assert_eq!(uri_san(&chain[0]), "spiffe://cluster.local/ns/shop/sa/reviews");
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
    assert_eq!(leaf.validity().not_after.timestamp(), signed.not_after_unix);
    let life = signed.not_after_unix - leaf.validity().not_before.timestamp();
    assert_eq!(life, 24 * 3600 + 60);
    // The trust anchor out of band (the state dir's ca-cert.pem) is the bundle served.
    let anchor = std::fs::read_to_string(cp.state_dir.join("ca-cert.pem")).expect("ca-cert.pem");
    assert_eq!(pem_certs(&anchor), pem_certs(&signed.trust_bundle_pem));
    verify(&chain, &pem_certs(&anchor));
    // The discovery service still answers on the same port (a wrong token there too).
    let mut discovery = weft_api::proto::discovery_client::DiscoveryClient::new(channel(&cp.endpoint).await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(weft_api::proto::DiscoveryRequest {
        kind: Some(weft_api::proto::discovery_request::Kind::Subscribe(
            weft_api::proto::Subscribe {
                instance_id: "x".into(),
                token: "wrong".into(),
                namespace: "shop".into(),
                ..Default::default()
            },
        )),
    })
    .await
    .expect("send");
    let status = discovery
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_proxy_gets_its_certificate_and_is_ready_only_once_it_has_one() {
    let cp = control("proxy", Duration::from_secs(24 * 3600)).await;
    let token = cp
        .running
        .source
        .tokens()
        .create(&Grant::new("reviews-v1", "default", "default"))
        .expect("token");
    let config: weft_api::proxy_config::ProxyConfig = serde_json::from_value(serde_json::json!({
        "workload": { "name": "reviews-v1" },
        "admin": { "address": "127.0.0.1:0" },
        "inbound": { "mesh": "127.0.0.1:0" },
        "outbound": { "listen": null },
    }))
    .expect("config");
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
    let stop = CancellationToken::new();
    let sub = weft_proxy::discovery::Subscription::for_instance(
        "reviews-v1.default",
        &token,
        &config,
        Some("127.0.0.1".parse().expect("ip")),
        proxy.bound.mesh.port(),
    );
    tokio::spawn(weft_proxy::discovery::run(
        cp.endpoint.clone(),
        sub,
        proxy.shared.clone(),
        stop.clone(),
    ));
    // The config arrives; without an identity the proxy is still not ready.
    wait_for("the first push", Duration::from_secs(10), || {
        proxy
            .shared
            .ready
            .load(std::sync::atomic::Ordering::Acquire)
            .then_some(())
    })
    .await;
    assert!(!proxy.shared.is_ready(), "ready without an identity");

    let (cell, metrics) = proxy.identity.clone().expect("awaiting an identity");
    tokio::spawn(identity::run(
        cp.endpoint.clone(),
        IdentityRequest {
            token: token.clone(),
            namespace: "default".into(),
            service_account: String::new(),
            ..Default::default()
        },
        cell.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    let creds = wait_for("a certificate", Duration::from_secs(10), || cell.load_full()).await;
    assert!(proxy.shared.is_ready());
    assert_eq!(creds.spiffe_id, "spiffe://cluster.local/ns/default/sa/default");
    assert_eq!(uri_san(&creds.chain[0]), creds.spiffe_id);
    verify(&creds.chain, &creds.trust_bundle);
    assert_eq!(creds.trust_bundle, cp.running.ca.trust_bundle());
    let _usable: Credentials = (*creds).clone();
    assert_eq!(metrics.refreshes(), (1, 0));
    // Both metrics are on the proxy's /metrics.
    let body = admin_get(proxy.bound.admin, "/metrics").await;
    assert!(
        body.contains("weft_identity_cert_refresh_total{result=\"ok\"} 1"),
        "{body}"
    );
    let expiry = creds
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("epoch")
        .as_secs();
    assert!(
        body.contains(&format!(
            "weft_identity_cert_expiration_timestamp_seconds {expiry}"
        )),
        "{body}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_wrong_token_gets_no_certificate_and_is_counted() {
    let cp = control("wrong", Duration::from_secs(3600)).await;
    let cell = identity::new_cell();
    let metrics = IdentityMetrics::default();
    let stop = CancellationToken::new();
    tokio::spawn(identity::run(
        cp.endpoint.clone(),
        IdentityRequest {
            token: "wrong".into(),
            namespace: "default".into(),
            service_account: "default".into(),
            ..Default::default()
        },
        cell.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    wait_for("two refusals", Duration::from_secs(10), || {
        (metrics.refreshes().1 >= 2).then_some(())
    })
    .await;
    assert!(cell.load().is_none());
    assert_eq!(metrics.refreshes().0, 0);
    stop.cancel();
}

#[tokio::test]
async fn a_short_lived_certificate_is_replaced_before_it_expires() {
    let cp = control("renew", Duration::from_secs(3)).await;
    let token = cp
        .running
        .source
        .tokens()
        .create(&Grant::new("reviews-v1", "shop", "reviews"))
        .expect("token");
    let cell = identity::new_cell();
    let metrics = IdentityMetrics::default();
    let stop = CancellationToken::new();
    tokio::spawn(identity::run(
        cp.endpoint.clone(),
        IdentityRequest {
            token,
            namespace: "shop".into(),
            service_account: "reviews".into(),
            ..Default::default()
        },
        cell.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    let first = wait_for("a certificate", Duration::from_secs(10), || cell.load_full()).await;
    let second = wait_for("a renewal", Duration::from_secs(5), || {
        cell.load_full().filter(|c| c.chain[0] != first.chain[0])
    })
    .await;
    let replaced_at = SystemTime::now();
    assert!(
        replaced_at < first.not_after,
        "replaced at {replaced_at:?}, after the first expired at {:?}",
        first.not_after
    );
    assert!(second.not_after >= first.not_after);
    assert_eq!(second.spiffe_id, "spiffe://cluster.local/ns/shop/sa/reviews");
    assert_eq!(metrics.refreshes(), (2, 0));
    stop.cancel();
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
