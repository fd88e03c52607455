//! Resilience end to end, as real processes: `weft control` serving documents, sidecars beside a
//! healthy backend and one that fails on command, a client sidecar sending real requests, and an
//! unrelated config push in the middle of each run that must not reset what the proxies learnt.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::control::{sidecar, wait_ready, Control};
use common::{curl, metric_sum, tempdir, Proxy};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use weft_test_support::HttpEcho;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// A Service `reviews` with a healthy workload and a failing one, and a client workload.
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
metadata: {name: reviews-broken}
spec: {labels: {app: reviews, version: broken}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage, version: v1}}
"#;

/// A document about another service: pushing it changes nothing about `reviews`.
const UNRELATED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - timeout: 2s
    route:
    - destination: {host: ratings}
"#;

/// An HTTP/1.1 server that answers 503 to everything, counting what it is sent.
struct AlwaysFails {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl AlwaysFails {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        counted.fetch_add(1, Ordering::Relaxed);
                        async {
                            let resp = http::Response::builder()
                                .status(503)
                                .header("x-echo-server", "reviews-broken")
                                .body(Full::new(Bytes::from_static(b"broken\n")))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, requests, task }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for AlwaysFails {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request through the client's outbound port: its status and who answered.
fn get(url: &str) -> (u16, String) {
    let out = curl(&["-sS", "-i", "--max-time", "10", url]);
    let status = out
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let server = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-server: "))
        .map_or(String::new(), |s| s.trim().to_string());
    (status, server)
}

/// Waits until the proxy at `p` runs a config that has `service` (a push reached it).
fn wait_for_service(p: &Proxy, service: &str) {
    wait_for_config(p, &format!("\"name\": \"{service}\""));
}

/// Waits until the proxy's `/config_dump` contains `text`.
fn wait_for_config(p: &Proxy, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let dump = curl(&["-sS", &format!("http://{}/config_dump", p.bound.admin)]).stdout;
        if dump.contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no push with {text} reached the proxy");
}

/// The mesh: control plane over `config`, both reviews backends behind sidecars, a client.
struct Mesh {
    _control: Control,
    _servers: Vec<Proxy>,
    client: Proxy,
    url: String,
}

async fn mesh(config: &Path, state: &Path, healthy: &HttpEcho, broken: &AlwaysFails) -> Mesh {
    let control = Control::start(config, state, "127.0.0.1:0", "127.0.0.1:0");
    let inbound = |app: SocketAddr| format!("{{port: 9080, app: \"{app}\"}}");
    let servers = vec![
        sidecar(&control, "reviews-v1", &inbound(healthy.addr()), ""),
        sidecar(&control, "reviews-broken", &inbound(broken.addr), ""),
    ];
    let client = sidecar(
        &control,
        "productpage-v1",
        "",
        "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}",
    );
    for p in servers.iter().chain([&client]) {
        wait_ready(p);
    }
    let url = format!("http://{}/reviews/1", client.bound.outbound_ports[0]);
    Mesh {
        _control: control,
        _servers: servers,
        client,
        url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_an_endpoint_that_always_fails_and_a_push_keeps_it_out() {
    let config = tempdir::Dir::new("weft-od-config");
    let state = tempdir::Dir::new("weft-od-state");
    let rule = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 10m}\n";
    std::fs::write(config.path.join("mesh.yaml"), format!("{MESH}{rule}")).expect("write");
    let healthy = HttpEcho::start("reviews-v1").await.expect("v1");
    let broken = AlwaysFails::start().await;
    let m = mesh(&config.path, &state.path, &healthy, &broken).await;
    // Both endpoints must be in the client's balancer before counting starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broken.requests() == 0 {
        assert!(Instant::now() < deadline, "the broken endpoint never got traffic");
        get(&m.url);
    }

    // Round robin sends it every other request until its third 503 in a row ejects it: then
    // every request reaches the healthy endpoint.
    let mut failures = 0;
    for _ in 0..8 {
        if get(&m.url).0 == 503 {
            failures += 1;
        }
    }
    assert!(
        failures <= 3,
        "{failures} 503s: the endpoint was not ejected after 3"
    );
    let sent_to_broken = broken.requests();
    assert_eq!(sent_to_broken, 3, "exactly three failures eject it");
    for _ in 0..10 {
        assert_eq!(get(&m.url), (200, "reviews-v1".to_string()));
    }
    let metrics = m.client.metrics();
    let service = [("destination_service", REVIEWS)];
    assert_eq!(
        metric_sum(
            &metrics,
            "weft_outlier_ejections_total",
            &[service[0], ("reason", "consecutive_5xx")]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "weft_outlier_ejections_active", &service),
        1.0,
        "{metrics}"
    );

    // A push about another service: the ejection stays, the broken endpoint gets nothing.
    std::fs::write(config.path.join("ratings.yaml"), UNRELATED).expect("write");
    wait_for_service(&m.client, "ratings");
    for _ in 0..10 {
        assert_eq!(get(&m.url), (200, "reviews-v1".to_string()));
    }
    assert_eq!(broken.requests(), sent_to_broken, "ejected across the push");
    let metrics = m.client.metrics();
    assert_eq!(
        metric_sum(&metrics, "weft_outlier_ejections_active", &service),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "weft_outlier_ejections_total", &service),
        1.0,
        "one ejection, not a second after a reset"
    );

    // A push that rebuilds reviews' balancer (new settings, same endpoints) carries the
    // endpoint's state into it: still out.
    let tuned = rule.replace(
        "consecutive5xxErrors: 3",
        "consecutive5xxErrors: 4, maxEjectionPercent: 50",
    );
    std::fs::write(config.path.join("mesh.yaml"), format!("{MESH}{tuned}")).expect("write");
    wait_for_config(&m.client, "\"maxEjectionPercent\": 50");
    for _ in 0..10 {
        assert_eq!(get(&m.url), (200, "reviews-v1".to_string()));
    }
    assert_eq!(broken.requests(), sent_to_broken, "ejected across the rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_failure_accrual_probes_the_failing_endpoint_with_one_request_per_penalty() {
    let config = tempdir::Dir::new("weft-fa-config");
    let state = tempdir::Dir::new("weft-fa-state");
    let annotated = MESH.replace(
        "metadata: {name: reviews}\nspec:\n  selector",
        "metadata:\n  name: reviews\n  annotations:\n    balancer.linkerd.io/failure-accrual: consecutive\n    balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"2\"\n    balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 400ms\n    balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 400ms\n    balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: \"0\"\nspec:\n  selector",
    );
    assert_ne!(annotated, MESH);
    std::fs::write(config.path.join("mesh.yaml"), annotated).expect("write");
    let healthy = HttpEcho::start("reviews-v1").await.expect("v1");
    let broken = AlwaysFails::start().await;
    let m = mesh(&config.path, &state.path, &healthy, &broken).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while broken.requests() < 2 {
        assert!(Instant::now() < deadline, "the broken endpoint was never ejected");
        get(&m.url);
    }

    // Ejected after two failures; then one probe per 400 ms penalty, each failing. Over about
    // 2 s of steady traffic the broken endpoint sees one request per penalty (timing on a busy
    // machine may stretch a penalty, never shorten it: at most 2 s / 400 ms + 1 probes).
    let before = broken.requests();
    let (mut ok, mut failed) = (0, 0);
    let started = Instant::now();
    let mut pushed = false;
    while started.elapsed() < Duration::from_secs(2) {
        match get(&m.url).0 {
            200 => ok += 1,
            _ => failed += 1,
        }
        if !pushed && started.elapsed() > Duration::from_secs(1) {
            // A push in the middle: the accrual carries on where it was.
            std::fs::write(config.path.join("ratings.yaml"), UNRELATED).expect("write");
            pushed = true;
        }
    }
    wait_for_service(&m.client, "ratings");
    let probes = broken.requests() - before;
    let elapsed = started.elapsed();
    let most = elapsed.as_millis() as u64 / 400 + 1;
    assert!(
        (1..=most).contains(&probes),
        "{probes} probes in {elapsed:?} (ok {ok}, failed {failed})"
    );
    assert_eq!(failed as u64, probes, "only the probes fail");
    assert!(ok > 4 * probes, "ok {ok}, probes {probes}");
    let metrics = m.client.metrics();
    assert!(
        metric_sum(
            &metrics,
            "weft_outlier_ejections_total",
            &[("reason", "failed_probe")]
        ) >= 1.0,
        "{metrics}"
    );
}

/// Starts `n` requests to `url` on their own threads; each returns its status line and headers.
fn in_background(url: &str, n: usize) -> Vec<std::thread::JoinHandle<String>> {
    (0..n)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || curl(&["-sS", "-i", "--max-time", "20", &url]).stdout)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_limits_answer_overflow_at_once_and_a_push_keeps_the_count() {
    let config = tempdir::Dir::new("weft-cp-config");
    let state = tempdir::Dir::new("weft-cp-state");
    let rule = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool: {http: {http2MaxRequests: 2, maxRetries: 0}}\n";
    // Only the healthy workload serves here: the broken one has no proxy, so it is no endpoint.
    std::fs::write(config.path.join("mesh.yaml"), format!("{MESH}{rule}")).expect("write");
    let healthy = HttpEcho::start("reviews-v1").await.expect("v1");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let server = sidecar(
        &control,
        "reviews-v1",
        &format!("{{port: 9080, app: \"{}\"}}", healthy.addr()),
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{base}/")).0 != 200 {
        assert!(Instant::now() < deadline, "reviews never answered");
    }

    // Two slow requests take both places; a third is refused at once, while they still run.
    let slow = in_background(&format!("{base}/delay/6000"), 2);
    let deadline = Instant::now() + Duration::from_secs(3);
    while healthy.requests() < 3 {
        assert!(
            Instant::now() < deadline,
            "the slow requests never reached the app"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = curl(&["-sS", "-i", &format!("{base}/")]).stdout;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("x-weft-response-flags: UO"), "{refused}");
    assert!(refused.contains("http2MaxRequests (2) reached"), "{refused}");
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "refused before the slow ones ended: no queueing"
    );

    // A push about another service while they run: the two places stay taken.
    std::fs::write(config.path.join("ratings.yaml"), UNRELATED).expect("write");
    wait_for_service(&client, "ratings");
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "the push took longer than the slow requests"
    );
    let again = curl(&["-sS", "-i", &format!("{base}/")]).stdout;
    assert!(
        again.contains("x-weft-response-flags: UO"),
        "a push reset the count: {again}"
    );
    for t in slow {
        let out = t.join().expect("slow request");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    // Their bodies done, the places are free again.
    assert_eq!(get(&format!("{base}/")).0, 200);
    let metrics = client.metrics();
    assert!(
        metric_sum(
            &metrics,
            "weft_upstream_overflow_total",
            &[("destination_service", REVIEWS), ("limit", "http2MaxRequests")]
        ) >= 1.0,
        "{metrics}"
    );
}

/// A Linkerd Server on reviews' port with a local rate limit of 2 requests a second.
const RATE_LIMITED: &str = r#"
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: reviews-http}
spec:
  podSelector: {matchLabels: {app: reviews}}
  port: http
  accessPolicy: all-unauthenticated
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: reviews-rl}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: reviews-http}
  total: {requestsPerSecond: 2}
"#;

/// Sends `n` requests one after another; returns (admitted, refused responses).
fn burst(url: &str, n: usize) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut refused = Vec::new();
    for _ in 0..n {
        let out = curl(&["-sS", "-i", url]).stdout;
        if out.starts_with("HTTP/1.1 200") {
            ok += 1;
        } else {
            refused.push(out);
        }
    }
    (ok, refused)
}

/// Starts the control plane over `documents`, reviews-v1 behind a sidecar and a client; waits
/// until reviews answers through the client, then lets its limiter refill. Returns the URL.
async fn limited_mesh(
    documents: &str,
    config: &Path,
    state: &Path,
    healthy: &HttpEcho,
) -> (Control, Vec<Proxy>, String) {
    std::fs::write(config.join("mesh.yaml"), documents).expect("write");
    let control = Control::start(config, state, "127.0.0.1:0", "127.0.0.1:0");
    let server = sidecar(
        &control,
        "reviews-v1",
        &format!("{{port: 9080, app: \"{}\"}}", healthy.addr()),
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
    let url = format!("http://{}/", client.bound.outbound_ports[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&url).0 != 200 {
        assert!(Instant::now() < deadline, "reviews never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1_100));
    (control, vec![server, client], url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weft_rate_limit_policy_gives_an_overridden_identity_its_own_rate() {
    let config = tempdir::Dir::new("weft-wrl-config");
    let state = tempdir::Dir::new("weft-wrl-state");
    let policy = "---\napiVersion: weft.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: reviews-rl}\nspec:\n  targetRef: {kind: Service, name: reviews}\n  identity: {requestsPerSecond: 1}\n  overrides:\n  - requestsPerSecond: 3\n    clients: [ns/default/sa/default]\n";
    let healthy = HttpEcho::start("reviews-v1").await.expect("v1");
    let (_control, _proxies, url) =
        limited_mesh(&format!("{MESH}{policy}"), &config.path, &state.path, &healthy).await;
    // The client's mTLS identity (service account default) has the override's bucket of 3,
    // not the per-identity 1: the server's proxy knows who calls.
    let (ok, refused) = burst(&url, 8);
    assert!((3..=4).contains(&ok), "{ok} admitted: {refused:?}");
    assert!(refused[0].contains("x-weft-response-flags: RL"), "{}", refused[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linkerd_local_rate_limit_answers_429_with_retry_after_through_the_mesh() {
    let config = tempdir::Dir::new("weft-rl-config");
    let state = tempdir::Dir::new("weft-rl-state");
    let healthy = HttpEcho::start("reviews-v1").await.expect("v1");
    let (_control, proxies, url) = limited_mesh(
        &format!("{MESH}{RATE_LIMITED}"),
        &config.path,
        &state.path,
        &healthy,
    )
    .await;

    // A bucket of 2, refilled at 2 a second: of 8 quick requests, 2 (3 on a slow machine) pass.
    let (ok, refused) = burst(&url, 8);
    assert!((2..=3).contains(&ok), "{ok} admitted: {refused:?}");
    let first = &refused[0];
    assert!(first.starts_with("HTTP/1.1 429"), "{first}");
    assert!(first.contains("x-weft-response-flags: RL"), "{first}");
    assert!(first.contains("retry-after: 1"), "{first}");
    let app_saw = healthy.requests();

    // A push about another service: the limit still holds right after it.
    std::fs::write(config.path.join("ratings.yaml"), UNRELATED).expect("write");
    wait_for_service(&proxies[0], "ratings");
    let (ok, refused) = burst(&url, 8);
    assert!(ok <= 3, "{ok} admitted after the push: {refused:?}");
    assert_eq!(
        healthy.requests(),
        app_saw + ok as u64,
        "refused requests never reach the app"
    );
}
