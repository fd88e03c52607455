//! Issue 11, the control plane's side, as real processes: `weft control --tls`, real sidecars
//! (`weft proxy`) with per-workload bootstrap tokens, and proxies that lie about who they are.
//! The reported takeover — a process with the ratings identity, a stolen token and
//! `--instance-id reviews-v1-0` replacing reviews' endpoint, reviews left GONE after it went —
//! is refused, and the real instance keeps (or gets back) its endpoint.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::control::{ready_status, sidecar_with, sidecar_yaml, wait_ready, Control};
use common::{curl, tempdir, weft_bin, Proxy};
use weft_test_support::HttpEcho;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews, version: v1}, serviceAccount: reviews, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: ratings-v1}
spec: {labels: {app: ratings, version: v1}, serviceAccount: ratings, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage, version: v1}, serviceAccount: productpage}
"#;

fn inbound(app: SocketAddr) -> String {
    format!("{{port: 9080, app: \"{app}\"}}")
}

fn served_by(url: &str) -> String {
    let out = curl(&["-sS", "-i", "--max-time", "5", url]);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-server: "))
        .map_or(String::new(), |s| s.trim().to_string())
}

/// Until `f` holds or `within` passes; false on timeout.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `weft status`'s entry for `id`.
fn proxy_status(control: &Control, id: &str) -> serde_json::Value {
    let status = control.status();
    status["proxies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["instance"] == id).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the proxy's log shows `what` (its discovery task logs every refusal).
fn refused_with(p: &Proxy, what: &str) {
    assert!(
        eventually(Duration::from_secs(10), || p.logs().contains(what)),
        "no refusal naming {what:?} in the proxy's log:\n{}",
        p.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_token_cannot_take_over_a_live_instance_and_the_real_one_keeps_serving() {
    let config = tempdir::Dir::new("weft-takeover-config");
    let state = tempdir::Dir::new("weft-takeover-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let reviews_app = HttpEcho::start("reviews-v1").await.expect("reviews");
    let attacker_app = HttpEcho::start("attacker").await.expect("attacker");
    let reviews_token = control.mint("reviews-v1", "reviews");
    let ratings_token = control.mint("ratings-v1", "ratings");
    let reviews_yaml = sidecar_yaml("reviews-v1", "reviews", &inbound(reviews_app.addr()), "");
    let real = sidecar_with(
        &control,
        &reviews_token,
        &reviews_yaml,
        &["--instance-id", "reviews-v1-0"],
    );
    let productpage = sidecar_with(
        &control,
        &control.mint("productpage-v1", "productpage"),
        &sidecar_yaml(
            "productpage-v1",
            "productpage",
            "",
            "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}",
        ),
        &[],
    );
    wait_ready(&real);
    wait_ready(&productpage);
    let url = format!("http://{}/reviews/1", productpage.bound.outbound_ports[0]);
    assert!(
        eventually(Duration::from_secs(5), || served_by(&url) == "reviews-v1"),
        "reviews never served"
    );

    // The reported attack: ratings' identity and token, reviews' instance id, endpoints pointed
    // at the attacker's server. Refused: the id is named after reviews-v1, not ratings-v1.
    let ratings_yaml = sidecar_yaml("ratings-v1", "ratings", &inbound(attacker_app.addr()), "");
    let thief = sidecar_with(
        &control,
        &ratings_token,
        &ratings_yaml,
        &["--instance-id", "reviews-v1-0"],
    );
    refused_with(&thief, "is not named after workload");
    // The same token claiming to be reviews: refused as a contradiction of the token.
    let liar_yaml = sidecar_yaml("reviews-v1", "ratings", &inbound(attacker_app.addr()), "");
    let liar = sidecar_with(
        &control,
        &ratings_token,
        &liar_yaml,
        &["--instance-id", "reviews-v1-9"],
    );
    refused_with(&liar, "bound to workload");
    // Reviews' own token, stolen, and a copy of the live instance: refused while it is live.
    let copy_yaml = sidecar_yaml("reviews-v1", "reviews", &inbound(attacker_app.addr()), "");
    let copy = sidecar_with(
        &control,
        &reviews_token,
        &copy_yaml,
        &["--instance-id", "reviews-v1-0"],
    );
    refused_with(&copy, "is held by another live connection");
    for p in [&thief, &liar, &copy] {
        assert_eq!(ready_status(p), "503", "{}", p.logs());
    }
    for _ in 0..10 {
        assert_eq!(served_by(&url), "reviews-v1");
    }
    assert_eq!(attacker_app.requests(), 0, "the attacker received reviews' calls");
    let entry = proxy_status(&control, "reviews-v1-0");
    assert_eq!(entry["connected"], true, "{entry}");
    assert_eq!(entry["workload"], "reviews-v1", "{entry}");

    // The attackers leave; past the endpoint grace (2 s) the real instance is still SERVING.
    drop((thief, liar, copy));
    std::thread::sleep(Duration::from_millis(2500));
    let entry = proxy_status(&control, "reviews-v1-0");
    assert_eq!(entry["connected"], true, "{entry}");
    assert_eq!(entry["inSync"], true, "{entry}");
    for _ in 0..5 {
        assert_eq!(served_by(&url), "reviews-v1");
    }

    // The real instance restarting with its id gets its endpoint back.
    drop(real);
    let real = sidecar_with(
        &control,
        &reviews_token,
        &reviews_yaml,
        &["--instance-id", "reviews-v1-0"],
    );
    wait_ready(&real);
    assert!(
        eventually(Duration::from_secs(5), || served_by(&url) == "reviews-v1"),
        "reviews did not come back"
    );
    assert_eq!(attacker_app.requests(), 0);
}

/// A proxy with a stolen ratings token that claims nothing gets what the ratings-v1 document
/// says: it is an endpoint of ratings, never of reviews, whatever its bootstrap config listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_gets_only_what_its_own_workload_document_says() {
    let config = tempdir::Dir::new("weft-own-doc-config");
    let state = tempdir::Dir::new("weft-own-doc-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let reviews_app = HttpEcho::start("reviews-v1").await.expect("reviews");
    let attacker_app = HttpEcho::start("attacker").await.expect("attacker");
    let real = sidecar_with(
        &control,
        &control.mint("reviews-v1", "reviews"),
        &sidecar_yaml("reviews-v1", "reviews", &inbound(reviews_app.addr()), ""),
        &[],
    );
    let intruder = sidecar_with(
        &control,
        &control.mint("ratings-v1", "ratings"),
        &sidecar_yaml("ratings-v1", "ratings", &inbound(attacker_app.addr()), ""),
        &["--instance-id", "ratings-v1-0"],
    );
    let client = sidecar_with(
        &control,
        &control.mint("productpage-v1", "productpage"),
        &sidecar_yaml(
            "productpage-v1",
            "productpage",
            "",
            "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}, {listen: \"127.0.0.1:0\", service: ratings, port: 9080}",
        ),
        &[],
    );
    for p in [&real, &intruder, &client] {
        wait_ready(p);
    }
    let reviews = format!("http://{}/", client.bound.outbound_ports[0]);
    let ratings = format!("http://{}/", client.bound.outbound_ports[1]);
    assert!(eventually(Duration::from_secs(5), || served_by(&reviews) == "reviews-v1"));
    for _ in 0..10 {
        assert_eq!(served_by(&reviews), "reviews-v1");
    }
    // Its own service is what it serves; the control plane registered it as ratings-v1.
    assert!(eventually(Duration::from_secs(5), || served_by(&ratings) == "attacker"));
    let entry = proxy_status(&control, "ratings-v1-0");
    assert_eq!(entry["workload"], "ratings-v1", "{entry}");
}

/// `weft proxy` flags: a token never as an argument, a token file only its owner reads, and no
/// control plane without a trust anchor unless the insecure flag says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_proxy_refuses_insecure_token_and_control_plane_settings() {
    let dir = tempdir::Dir::new("weft-proxy-flags");
    let yaml = dir.path.join("proxy.yaml");
    std::fs::write(&yaml, sidecar_yaml("reviews-v1", "reviews", "", "")).expect("write");
    let proxy = |args: &[&str], token_env: Option<&str>| {
        let mut cmd = Command::new(weft_bin());
        cmd.arg("proxy").arg("--config").arg(&yaml).args(args);
        cmd.env_remove("WEFT_TOKEN").env_remove("WEFT_TRUST_ANCHOR");
        if let Some(t) = token_env {
            cmd.env("WEFT_TOKEN", t);
        }
        let out = cmd.output().expect("run weft proxy");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let control = "http://127.0.0.1:9";

    let (code, err) = proxy(&["--control", control, "--token", "s3cret"], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--token is refused"), "{err}");
    assert!(
        err.contains("--token-file") && err.contains("WEFT_TOKEN"),
        "{err}"
    );

    let (code, err) = proxy(&["--control", control], Some("s3cret"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--control without --trust-anchor"), "{err}");
    assert!(err.contains("--insecure-plaintext-control-plane"), "{err}");

    let anchor = dir.path.join("anchor.pem");
    std::fs::write(&anchor, "not a certificate").expect("write");
    let token_file = dir.path.join("token");
    std::fs::write(&token_file, "s3cret").expect("write");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, err) = proxy(
        &[
            "--control",
            control,
            "--insecure-plaintext-control-plane",
            "--token-file",
            token_file.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("readable by its group or others (mode 0644)"),
        "{err}"
    );
    assert!(err.contains("chmod 600"), "{err}");

    let (code, err) = proxy(
        &["--control", control, "--insecure-plaintext-control-plane"],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("needs a bootstrap token"), "{err}");

    // The insecure flag says what it gives up, in --help.
    let help = Command::new(weft_bin())
        .args(["proxy", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--insecure-plaintext-control-plane"), "{help}");
    assert!(help.contains("travels in clear"), "{help}");
    assert!(!help.contains("--token <"), "--token is still offered: {help}");
}

/// With the insecure flag, a plaintext control plane still serves a proxy (for a trusted
/// loopback), the token read from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insecure_flag_reaches_a_plaintext_control_plane() {
    let config = tempdir::Dir::new("weft-plain-config");
    let state = tempdir::Dir::new("weft-plain-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let control = Control::start_plaintext(&config.path, &state.path);
    let token = control.mint("reviews-v1", "reviews");
    let endpoint = format!("http://{}", control.discovery);
    let p = Proxy::start_cmd(
        &sidecar_yaml("reviews-v1", "reviews", "", ""),
        &["--control", &endpoint, "--insecure-plaintext-control-plane"],
        |mut c| {
            c.env("WEFT_TOKEN", &token);
            c
        },
    );
    wait_ready(&p);
    assert!(
        p.logs().contains("insecure-plaintext-control-plane"),
        "{}",
        p.logs()
    );
}
