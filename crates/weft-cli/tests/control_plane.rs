//! `weft control` end to end, as real processes: documents in a directory, three sidecars that
//! subscribe with bootstrap tokens, live edits reaching traffic, a broken document rejected
//! while the rest keeps serving, `weft status`, and a control-plane restart that drops nothing.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::control::{ready_status, sidecar, sidecar_with, sidecar_yaml, wait_ready, Control};
use common::{curl, metric_sum, run, tempdir, weft_bin};
use weft_test_support::HttpEcho;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews, version: v1}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v2}
spec: {labels: {app: reviews, version: v2}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn route_to(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
    )
}

fn served_by(url: &str) -> String {
    let out = curl(&["-sS", "-i", url]);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-server: "))
        .map_or(String::new(), |s| s.trim().to_string())
}

/// Polls until every request of a small batch is served by `want`, returning how long it took.
fn until_all(url: &str, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if (0..4).all(|_| served_by(url) == want) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("traffic did not move to {want} within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_config_from_documents_to_traffic() {
    let config = tempdir::Dir::new("weft-cp-config");
    let state = tempdir::Dir::new("weft-cp-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    std::fs::write(config.path.join("reviews-vs.yaml"), route_to("v1")).expect("write");

    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let v2 = HttpEcho::start("reviews-v2").await.expect("v2");
    let inbound = |app: SocketAddr| format!("{{port: 9080, app: \"{app}\"}}");
    let s1 = sidecar(&control, "reviews-v1", &inbound(v1.addr()), "");
    let s2 = sidecar(&control, "reviews-v2", &inbound(v2.addr()), "");
    let client = sidecar(
        &control,
        "productpage-v1",
        "",
        "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}",
    );
    for p in [&s1, &s2, &client] {
        wait_ready(p);
    }
    let url = format!("http://{}/reviews/1", client.bound.outbound_ports[0]);
    until_all(&url, "reviews-v1", Duration::from_secs(5));

    // A wrong token is refused: that proxy never becomes ready.
    let intruder = sidecar_with(
        &control,
        "not-a-token",
        &sidecar_yaml("evil", "default", "", ""),
        &[],
    );
    // Polled until the proxy logged the control plane's refusal: a slow but legitimate proxy
    // is also not ready yet, so readiness alone would prove nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !intruder.logs().contains("wrong bootstrap token") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {}",
            intruder.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ready_status(&intruder), "503");
    // And the control plane admitted no such proxy: only the three legitimate ones are listed.
    let status = control.status();
    let listed: Vec<&str> = status["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .filter_map(|p| p["workload"].as_str())
        .collect();
    assert_eq!(listed.len(), 3, "{status}");
    assert!(!listed.contains(&"evil"), "{status}");
    drop(intruder);

    // Editing a file moves live traffic, well within a second.
    std::fs::write(config.path.join("reviews-vs.yaml"), route_to("v2")).expect("write");
    let took = until_all(&url, "reviews-v2", Duration::from_secs(3));
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A broken document is rejected with its finding; the rest keeps serving.
    std::fs::write(config.path.join("broken.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [reviews]\n  htttp: []\n").expect("write");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(served_by(&url), "reviews-v2");
    let status = control.status();
    let findings = status["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["file"] == "broken.yaml" && f["severity"] == "error"),
        "{status}"
    );
    let text = run(
        weft_bin(),
        &["status", "--control-admin", &control.admin.to_string()],
    );
    assert!(text.stdout.contains("broken.yaml:6"), "{}", text.stdout);
    let proxies = status["proxies"].as_array().expect("proxies");
    let synced: Vec<_> = proxies
        .iter()
        .filter(|p| p["connected"] == true && p["inSync"] == true)
        .collect();
    assert_eq!(synced.len(), 3, "{status}");

    // Deleting a file removes its effect: no VirtualService, both versions serve.
    std::fs::remove_file(config.path.join("reviews-vs.yaml")).expect("rm");
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 && started.elapsed() < Duration::from_secs(3) {
        seen.insert(served_by(&url));
    }
    assert!(
        seen.contains("reviews-v1") && seen.contains("reviews-v2"),
        "{seen:?}"
    );

    // The control plane goes away: proxies keep serving their last config.
    let (discovery, admin) = (control.discovery, control.admin);
    drop(control);
    for _ in 0..10 {
        assert!(
            served_by(&url).starts_with("reviews-v"),
            "a request failed without the control plane"
        );
    }
    // It comes back on the same address and the proxies converge again, in sync.
    std::fs::write(config.path.join("reviews-vs.yaml"), route_to("v1")).expect("write");
    let control = Control::start(
        &config.path,
        &state.path,
        &discovery.to_string(),
        &admin.to_string(),
    );
    until_all(&url, "reviews-v1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = control.status();
        let synced = status["proxies"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["inSync"] == true).count());
        if synced == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "proxies did not resync: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Linkerd ServiceProfile for reviews: a retryable route under a small budget, a route with
/// a 300 ms timeout, a route that is not retryable.
fn reviews_profile(delay_timeout: &str) -> String {
    format!(
        r#"apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{name: reviews.default.svc.cluster.local}}
spec:
  routes:
  - name: GET /status/{{code}}
    condition: {{method: GET, pathRegex: '/status/\d+'}}
    isRetryable: true
  - name: GET /delay/{{ms}}
    condition: {{method: GET, pathRegex: '/delay/\d+'}}
    timeout: {delay_timeout}
  - name: POST /status/{{code}}
    condition: {{method: POST, pathRegex: '/status/\d+'}}
  retryBudget: {{retryRatio: 0.5, minRetriesPerSecond: 0, ttl: 60s}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_profile_retries_within_its_budget_and_times_out_live() {
    let config = tempdir::Dir::new("weft-sp-config");
    let state = tempdir::Dir::new("weft-sp-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    std::fs::write(config.path.join("profile.yaml"), reviews_profile("300ms")).expect("write");

    // What explain says is what the proxies will do.
    let explained = run(
        weft_bin(),
        &[
            "explain",
            config.path.to_str().expect("utf-8"),
            "GET http://reviews:9080/status/503",
            "-o",
            "json",
        ],
    );
    let e: serde_json::Value = serde_json::from_str(&explained.stdout).expect("explain json");
    assert_eq!(e["policies"]["route_name"], "GET /status/{code}", "{e}");
    assert_eq!(e["policies"]["retryable"], true, "{e}");
    assert_eq!(e["policies"]["retry_budget"]["ttl_ms"], 60_000, "{e}");
    assert_eq!(e["policies"]["retries"]["retry_on"][0], "5xx", "{e}");

    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let server = sidecar(
        &control,
        "reviews-v1",
        &format!("{{port: 9080, app: \"{}\"}}", v1.addr()),
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
    let base = format!("http://{}", client.bound.outbound_ports[0]);
    until_all(&format!("{base}/"), "reviews-v1", Duration::from_secs(5));
    let upstream = |method: &str, path: &str| {
        let before = v1.requests();
        let out = curl(&["-sS", "-i", "-X", method, &format!("{base}{path}")]);
        (out.stdout, v1.requests() - before)
    };

    // Not retryable: one try.
    let (out, tries) = upstream("POST", "/status/503");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert_eq!(tries, 1);
    // Retryable, under a budget of half the requests over 60 s (no per-second reserve): four
    // good requests earn two retries, each later request half a retry more.
    for _ in 0..4 {
        assert_eq!(upstream("GET", "/status/200").1, 1);
    }
    let (out, tries) = upstream("GET", "/status/503");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert_eq!(tries, 3, "5 requests allow 2.5 retries");
    assert_eq!(upstream("GET", "/status/500").1, 2, "6 requests allow 3");
    assert_eq!(
        upstream("GET", "/status/503").1,
        1,
        "7 allow 3.5: the budget is spent"
    );
    // The client's metrics say the same: per-route requests, retries sent and refused.
    let m = client.metrics();
    let route = ("route", "GET /status/{code}");
    assert_eq!(
        metric_sum(
            &m,
            "weft_route_requests_total",
            &[route, ("response_code", "503")]
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "weft_route_requests_total",
            &[route, ("response_code", "200")]
        ),
        4.0
    );
    assert_eq!(metric_sum(&m, "weft_retries_total", &[("outcome", "sent")]), 3.0);
    assert_eq!(
        metric_sum(&m, "weft_retries_total", &[("outcome", "budget_exhausted")]),
        3.0
    );

    // The route timeout answers 504 (UT) long before the upstream would.
    let started = Instant::now();
    let (out, _) = upstream("GET", "/delay/3000");
    assert!(out.starts_with("HTTP/1.1 504"), "{out}");
    assert!(out.contains("x-weft-response-flags: UT"), "{out}");
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "{:?}",
        started.elapsed()
    );

    // Editing the profile under the running control plane: a longer timeout, live.
    std::fs::write(config.path.join("profile.yaml"), reviews_profile("5s")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (out, _) = upstream("GET", "/delay/600");
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the new timeout never applied: {out}");
    }
    // The push kept the budget's counts: 8 requests allow 4 retries, 3 are spent, so one more
    // (a budget reset by the push would allow none: 1 request, half a retry).
    assert_eq!(
        upstream("GET", "/status/503").1,
        2,
        "a push must not reset the budget"
    );

    // The profile gone, Linkerd's annotations on the Service take over: 2 retries on 5xx (no
    // budget) and a 300 ms request timeout.
    std::fs::remove_file(config.path.join("profile.yaml")).expect("rm");
    let annotated = MESH.replacen(
        "metadata: {name: reviews}\n",
        "metadata:\n  name: reviews\n  annotations:\n    retry.linkerd.io/http: 5xx\n    retry.linkerd.io/limit: \"2\"\n    timeout.linkerd.io/request: 300ms\n",
        1,
    );
    assert_ne!(annotated, MESH);
    std::fs::write(config.path.join("mesh.yaml"), annotated).expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (out, _) = upstream("GET", "/delay/1000");
        if out.starts_with("HTTP/1.1 504") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the annotation timeout never applied: {out}"
        );
    }
    assert_eq!(upstream("GET", "/status/503").1, 3);
    assert_eq!(upstream("GET", "/status/404").1, 1);
}

/// Every proxy in `status`, by workload.
fn proxies_by_workload(status: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    status["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .map(|p| (p["workload"].as_str().unwrap_or_default().to_string(), p.clone()))
        .collect()
}

/// Resources travel as deltas: a change to one VirtualService sends each proxy that one
/// `MeshService` and nothing else (as `weft status` reports the pushes), and the proxy's
/// `/config_dump` shows the new route beside the services it already held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_service_change_sends_only_its_mesh_service() {
    let config = tempdir::Dir::new("weft-cp-delta-config");
    let state = tempdir::Dir::new("weft-cp-delta-state");
    let ratings = "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n";
    std::fs::write(config.path.join("mesh.yaml"), format!("{MESH}{ratings}")).expect("write");
    std::fs::write(config.path.join("reviews-vs.yaml"), route_to("v1")).expect("write");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let s1 = sidecar(
        &control,
        "reviews-v1",
        &format!("{{port: 9080, app: \"{}\"}}", v1.addr()),
        "",
    );
    let client = sidecar(
        &control,
        "productpage-v1",
        "",
        "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}",
    );
    for p in [&s1, &client] {
        wait_ready(p);
    }
    let in_sync = |status: &serde_json::Value| {
        let proxies = proxies_by_workload(status);
        proxies.len() == 2 && proxies.values().all(|p| p["inSync"] == true)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let status = control.status();
        if in_sync(&status) {
            break proxies_by_workload(&status);
        }
        assert!(Instant::now() < deadline, "never in sync: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };

    let url = format!("http://{}/reviews/1", client.bound.outbound_ports[0]);
    until_all(&url, "reviews-v1", Duration::from_secs(5));

    std::fs::write(config.path.join("reviews-vs.yaml"), route_to("v2")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let status = control.status();
        let proxies = proxies_by_workload(&status);
        let moved = proxies
            .iter()
            .all(|(w, p)| p["ackedVersion"] != before[w]["ackedVersion"]);
        if in_sync(&status) && moved {
            break proxies;
        }
        assert!(Instant::now() < deadline, "the change never converged: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for (workload, p) in &after {
        let push = &p["lastPush"];
        assert_eq!(push["fullState"], false, "{workload}: {p}");
        assert_eq!(
            push["names"],
            serde_json::json!(["MeshService/reviews.default.svc.cluster.local"]),
            "{workload}: {p}"
        );
        assert_eq!(push["removed"], 0, "{workload}: {p}");
        let sent = p["resourcesSent"].as_u64().expect("resourcesSent")
            - before[workload]["resourcesSent"].as_u64().expect("resourcesSent");
        let pushes =
            p["pushes"].as_u64().expect("pushes") - before[workload]["pushes"].as_u64().expect("pushes");
        assert_eq!(sent, pushes, "{workload}: one resource per push: {p}");
    }

    // The proxy assembled the new route into the config it already held.
    let dump = curl(&["-sS", &format!("http://{}/config_dump", client.bound.admin)]);
    let dump: serde_json::Value = serde_json::from_str(&dump.stdout).expect("config_dump");
    let services: Vec<&str> = dump["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(services, ["ratings", "reviews"], "{dump}");
    let routes = dump["services"][1]["routes"].to_string();
    assert!(routes.contains("v2") && !routes.contains("\"v1\""), "{routes}");
    // Traffic follows: v2 has no endpoint here, so the route now reaches no app: the proxy
    // answers 503 with flag `UH` (no healthy upstream) itself.
    let out = curl(&["-sS", "-i", &url]);
    let head = out.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{}", out.stdout);
    assert!(
        head.contains("\r\nx-weft-response-flags: uh\r\n"),
        "{}",
        out.stdout
    );
    assert!(!head.contains("x-echo-server"), "{}", out.stdout);
}
