//! A control plane killed and restarted on the same state directory serves the endpoints it knew
//! before any proxy is back (issue: 20 × 503 `UH` in 0.4 s while the first proxies to reconnect
//! were pushed empty endpoint sets), and forgets an endpoint whose proxy never comes back once the
//! endpoint grace period (2 s in these tests) has passed.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::control::{sidecar_with, sidecar_yaml, wait_ready, Control};
use common::{curl, tempdir, Proxy};
use weft_test_support::HttpEcho;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews, version: v1}, serviceAccount: reviews, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage, version: v1}, serviceAccount: productpage}
"#;

const TO_REVIEWS: &str = "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}";

fn reviews(control: &Control, app: SocketAddr) -> Proxy {
    let yaml = sidecar_yaml(
        "reviews-v1",
        "reviews",
        &format!("{{port: 9080, app: \"{app}\"}}"),
        "",
    );
    sidecar_with(
        control,
        &control.mint("reviews-v1", "reviews"),
        &yaml,
        &["--instance-id", "reviews-v1-0"],
    )
}

fn productpage(control: &Control, id: &str) -> Proxy {
    let yaml = sidecar_yaml("productpage-v1", "productpage", "", TO_REVIEWS);
    sidecar_with(
        control,
        &control.mint("productpage-v1", "productpage"),
        &yaml,
        &["--instance-id", id],
    )
}

/// The mesh ports of the endpoints of `reviews` in the config the proxy runs.
fn reviews_endpoints(p: &Proxy) -> Vec<u64> {
    let out = curl(&[
        "-sS",
        "--max-time",
        "5",
        &format!("http://{}/config_dump", p.bound.admin),
    ]);
    let dump: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("config_dump ({e}): {} {}", out.stdout, out.stderr));
    dump["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|set| set["service"].as_str().is_some_and(|s| s.starts_with("reviews")))
        .flat_map(|set| set["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["meshPort"].as_u64())
        .collect()
}

fn signal(p: &Proxy, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

fn status_code(url: &str) -> String {
    curl(&[
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "5",
        "-w",
        "%{http_code}",
        url,
    ])
    .stdout
}

/// Until the control plane's `registry.json` in `state` holds instance `id`.
fn registered_on_disk(state: &tempdir::Dir, id: &str) {
    let file = state.path.join("registry.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if json["instances"].get(id).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {}: {text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restart(control: Control, config: &tempdir::Dir, state: &tempdir::Dir) -> Control {
    let (discovery, admin) = (control.discovery, control.admin);
    drop(control); // SIGKILL: nothing is flushed on the way out
    Control::start(
        &config.path,
        &state.path,
        &discovery.to_string(),
        &admin.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_serves_the_endpoints_it_knew_before_any_proxy_is_back() {
    let config = tempdir::Dir::new("weft-restart-config");
    let state = tempdir::Dir::new("weft-restart-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let app = HttpEcho::start("reviews-v1").await.expect("echo");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let reviews = reviews(&control, app.addr());
    let pp = productpage(&control, "productpage-v1-0");
    wait_ready(&reviews);
    wait_ready(&pp);
    let url = format!("http://{}/", pp.bound.outbound_ports[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_code(&url) != "200" {
        assert!(Instant::now() < deadline, "reviews never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The registry is written at most once a second: wait until the registration is on disk.
    registered_on_disk(&state, "reviews-v1-0");
    let mesh_port = reviews.bound.mesh.port() as u64;

    // Both sidecars frozen, so neither can reconnect; the control plane killed and started again.
    signal(&reviews, "-STOP");
    signal(&pp, "-STOP");
    let control = restart(control, &config, &state);
    // The first proxy to connect to the new control plane is given reviews' endpoint at once.
    let first = productpage(&control, "productpage-v1-1");
    wait_ready(&first);
    assert_eq!(
        reviews_endpoints(&first),
        vec![mesh_port],
        "the restarted control plane pushed reviews without its endpoint:\n{}",
        first.logs()
    );
    // Everyone back: requests through the old productpage sidecar keep succeeding while both
    // reconnect (bounded: 60 requests).
    signal(&reviews, "-CONT");
    signal(&pp, "-CONT");
    let mut failed = Vec::new();
    for _ in 0..60 {
        let code = status_code(&url);
        if code != "200" {
            failed.push(code);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        failed.is_empty(),
        "requests failed across the restart: {failed:?}"
    );
    // Reconnected, reviews is live again: it outlives the grace period.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(reviews_endpoints(&first), vec![mesh_port]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_proxy_never_comes_back_goes_after_the_grace_period() {
    let config = tempdir::Dir::new("weft-restart-gone-config");
    let state = tempdir::Dir::new("weft-restart-gone-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let app = HttpEcho::start("reviews-v1").await.expect("echo");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let reviews = reviews(&control, app.addr());
    wait_ready(&reviews);
    let mesh_port = reviews.bound.mesh.port() as u64;
    registered_on_disk(&state, "reviews-v1-0");

    // reviews' sidecar dies with the control plane and never comes back.
    signal(&reviews, "-KILL");
    let control = restart(control, &config, &state);
    let pp = productpage(&control, "productpage-v1-0");
    wait_ready(&pp);
    assert_eq!(reviews_endpoints(&pp), vec![mesh_port], "restored at start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reviews_endpoints(&pp).is_empty() {
        assert!(Instant::now() < deadline, "the dead endpoint was never removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(control);
}
