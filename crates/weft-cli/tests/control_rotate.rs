//! `weft control rotate-root` (and `POST /rotate-root`) end to end: a real `weft control
//! --tls` with a short certificate lifetime, two real sidecars talking mTLS under a constant
//! request loop, and the rotation's three phases seen from outside: the new root trusted at
//! once (in `trust-bundle.pem`), a sidecar serving a certificate from the new root after one
//! lifetime, the old root gone one lifetime later, and no request failing throughout.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control::{sidecar, wait_ready, Control};
use common::{curl, run, tempdir, weft_bin};
use weft_test_support::HttpEcho;

/// The workload certificate lifetime: the rotation activates after one, retires after two.
const CERT_TTL_SECS: u64 = 4;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews, version: v1}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage, version: v1}}
"#;

/// The PEM blocks of a file.
fn pem_blocks(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("PEM file");
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| b.trim().to_string())
        .collect()
}

/// Whether the certificate `addr` serves verifies against the roots in `ca_file` alone
/// (`openssl s_client`, no client certificate: the server's chain is checked first).
fn serves_a_chain_to(addr: std::net::SocketAddr, ca_file: &Path) -> bool {
    let out = run(
        "timeout",
        &[
            "10",
            "openssl",
            "s_client",
            "-connect",
            &addr.to_string(),
            "-alpn",
            "h2",
            "-CAfile",
            ca_file.to_str().expect("utf-8"),
        ],
    );
    format!("{}{}", out.stdout, out.stderr).contains("Verify return code: 0 (ok)")
}

/// Polls `what` until it holds; panics with `why` after `within`.
fn until(within: Duration, why: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !what() {
        assert!(Instant::now() < deadline, "{why} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_root_moves_a_running_mesh_to_a_new_root_without_a_failed_request() {
    let config = tempdir::Dir::new("weft-rotate-config");
    let state = tempdir::Dir::new("weft-rotate-state");
    let roots = tempdir::Dir::new("weft-rotate-roots");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let control = Control::start_tls_with(
        &config.path,
        &state.path,
        &["--cert-ttl-secs", &CERT_TTL_SECS.to_string()],
    );
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let server = sidecar(
        &control,
        "reviews-v1",
        &format!("{{port: 9080, app: \"{}\"}}", app.addr()),
        "",
    );
    let client = sidecar(
        &control,
        "productpage-v1",
        "",
        "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}",
    );
    for p in [&server, &client] {
        wait_ready(p);
    }
    let old_root = pem_blocks(&control.anchor());
    assert_eq!(old_root.len(), 1, "one root before the rotation");
    let old_file = roots.path.join("old.pem");
    std::fs::write(&old_file, &old_root[0]).expect("write");
    assert!(serves_a_chain_to(server.bound.mesh, &old_file));

    // Requests through both sidecars (mTLS between them), all along.
    let url = format!("http://{}/reviews/1", client.bound.outbound_ports[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
                if out.stdout == "200" {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.push(format!("{} {}", out.stdout, out.stderr));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };
    until(Duration::from_secs(10), "no request got through", || {
        ok.load(Ordering::Relaxed) > 0
    });

    // Phase 1: `weft control rotate-root` starts it; the new root is trusted at once.
    let admin = control.admin.to_string();
    let rotate = run(weft_bin(), &["control", "rotate-root", "--control-admin", &admin]);
    assert!(rotate.status.success(), "{}\n{}", rotate.stdout, rotate.stderr);
    let started: serde_json::Value = serde_json::from_str(rotate.stdout.trim()).expect("json");
    assert_eq!(started["rotation"], "started", "{started}");
    assert_eq!(started["activateInSeconds"], CERT_TTL_SECS, "{started}");
    assert_eq!(started["retireOldRootInSeconds"], 2 * CERT_TTL_SECS, "{started}");
    let both = pem_blocks(&control.anchor());
    assert_eq!(both.len(), 2, "old and new root trusted");
    assert_eq!(both[0], old_root[0]);
    let new_file = roots.path.join("new.pem");
    std::fs::write(&new_file, &both[1]).expect("write");
    // One rotation at a time: POST /rotate-root while the new root does not sign yet is 409.
    let again = curl(&[
        "-sS",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        &format!("http://{admin}/rotate-root"),
    ]);
    assert!(again.stdout.ends_with("\n409"), "{}", again.stdout);
    assert!(again.stdout.contains("already in progress"), "{}", again.stdout);

    // Phase 2: after one lifetime the new root signs; the server sidecar, renewing at 2/3 of
    // its certificate's life, soon serves a certificate the new root alone verifies.
    let lifetime = Duration::from_secs(CERT_TTL_SECS);
    until(
        3 * lifetime,
        "the server sidecar never served a new-root certificate",
        || serves_a_chain_to(server.bound.mesh, &new_file),
    );
    assert!(!serves_a_chain_to(server.bound.mesh, &old_file));

    // Phase 3: one lifetime later the old root leaves the bundle.
    until(3 * lifetime, "the old root was never retired", || {
        pem_blocks(&control.anchor()) == [both[1].clone()]
    });
    // A new rotation may start again.
    let once_more = curl(&[
        "-sS",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        &format!("http://{admin}/rotate-root"),
    ]);
    assert!(once_more.stdout.ends_with("\n200"), "{}", once_more.stdout);

    // Traffic went on throughout, on a new-root identity at the end.
    let before = ok.load(Ordering::Relaxed);
    until(
        Duration::from_secs(10),
        "requests stopped after the rotation",
        || ok.load(Ordering::Relaxed) > before + 5,
    );
    stop.store(true, Ordering::Relaxed);
    let failures = load.join().expect("load thread");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation ({} succeeded): {failures:?}",
        ok.load(Ordering::Relaxed)
    );
}
