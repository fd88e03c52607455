//! Route tables in a proxy's config, obeyed end to end: matches, subsets, weighted splits,
//! timeouts, retries, redirects, direct responses and header changes.

mod common;

use common::{curl, metric_sum, Proxy};
use weft_test_support::HttpEcho;

struct Fixture {
    v1: HttpEcho,
    v2: HttpEcho,
    proxy: Proxy,
}

async fn fixture(routes: &str) -> Fixture {
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let v2 = HttpEcho::start("reviews-v2").await.expect("v2");
    let (a1, a2) = (v1.addr(), v2.addr());
    let proxy = Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage}}}}
admin: {{address: "127.0.0.1:0"}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: null
  ports: [{{listen: "127.0.0.1:0", service: reviews, port: 9080}}]
services:
  - name: reviews
    ports: [{{port: 9080, protocol: http}}]
    routes:
      - port: 9080
        table:
{routes}
endpoints:
  - service: reviews
    port: 9080
    endpoints: [{{address: "{a1}", labels: {{version: v1}}}}, {{address: "{a2}", labels: {{version: v2}}}}]
  - {{service: reviews, port: 9080, subset: v1, endpoints: [{{address: "{a1}", labels: {{version: v1}}}}]}}
  - {{service: reviews, port: 9080, subset: v2, endpoints: [{{address: "{a2}", labels: {{version: v2}}}}]}}
"#
    ));
    Fixture { v1, v2, proxy }
}

const ORIGIN: &str = "{kind: VirtualService, namespace: default, name: reviews}";

fn served_by(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("x-echo-server: "))
        .map_or("", str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_match_picks_a_subset_and_the_rest_splits_by_weight() {
    let routes = format!(
        r#"          rules:
            - origin: {ORIGIN}
              index: 0
              matches: [{{headers: [{{name: end-user, value: {{exact: jason}}}}]}}]
              action: {{forward: [{{service: reviews.default.svc.cluster.local, subset: v2, weight: 100}}]}}
            - origin: {ORIGIN}
              index: 1
              action: {{forward: [{{service: reviews.default.svc.cluster.local, subset: v1, weight: 80}}, {{service: reviews.default.svc.cluster.local, subset: v2, weight: 20}}]}}
"#
    );
    let f = fixture(&routes).await;
    let url = format!("http://{}/reviews/1", f.proxy.bound.outbound_ports[0]);
    for _ in 0..5 {
        let out = curl(&["-sS", "-i", "-H", "end-user: jason", &url]);
        assert_eq!(served_by(&out.stdout), "reviews-v2", "{}", out.stdout);
    }
    let mut v1 = 0;
    let n = 200;
    for _ in 0..n {
        let out = curl(&["-sS", "-i", &url]);
        if served_by(&out.stdout) == "reviews-v1" {
            v1 += 1;
        }
    }
    // 80/20 over 200 requests: 160 expected, sigma about 5.7; allow 4 sigma.
    assert!((137..=183).contains(&v1), "v1 got {v1} of {n}");
    assert_eq!(f.v1.requests() + f.v2.requests(), n + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_retries_redirect_direct_response_and_headers() {
    let routes = format!(
        r#"          rules:
            - origin: {ORIGIN}
              index: 0
              matches: [{{path: {{prefix: {{value: /slow}}}}}}]
              action: {{forward: [{{service: reviews.default.svc.cluster.local, weight: 1}}]}}
              policies: {{timeout_ms: 300}}
            - origin: {ORIGIN}
              index: 1
              matches: [{{path: {{prefix: {{value: /status}}}}}}]
              action: {{forward: [{{service: reviews.default.svc.cluster.local, subset: v1, weight: 1}}]}}
              policies: {{retries: {{attempts: 2, retry_on: [5xx]}}}}
            - origin: {ORIGIN}
              index: 2
              matches: [{{path: {{exact: {{value: /old}}}}}}]
              action: {{redirect: {{status: 301, path: /new}}}}
            - origin: {ORIGIN}
              index: 3
              matches: [{{path: {{exact: {{value: /teapot}}}}}}]
              action: {{direct_response: {{status: 418, body: "short and stout"}}}}
            - origin: {ORIGIN}
              index: 4
              matches: [{{path: {{prefix: {{value: /h}}}}}}]
              action: {{forward: [{{service: reviews.default.svc.cluster.local, subset: v2, weight: 1}}]}}
              policies: {{request_headers: {{set: {{x-added: "yes"}}}}, response_headers: {{add: {{x-route: h}}}}}}
"#
    );
    let f = fixture(&routes).await;
    let base = format!("http://{}", f.proxy.bound.outbound_ports[0]);

    // A fast request under a route timeout is untouched by it.
    let out = curl(&["-sS", "-i", &format!("{base}/slow")]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);

    // /status/503 on v1: one try plus two retries reach the backend, then the 503 is returned.
    let before = f.v1.requests();
    let out = curl(&["-sS", "-i", &format!("{base}/status/503")]);
    assert!(out.stdout.starts_with("HTTP/1.1 503"), "{}", out.stdout);
    assert_eq!(f.v1.requests() - before, 3);

    let out = curl(&["-sS", "-i", &format!("{base}/old?x=1")]);
    assert!(out.stdout.starts_with("HTTP/1.1 301"), "{}", out.stdout);
    assert!(
        out.stdout.to_lowercase().contains("location: http://127.0.0.1:"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("/new?x=1"), "{}", out.stdout);

    let out = curl(&["-sS", "-i", &format!("{base}/teapot")]);
    assert!(out.stdout.starts_with("HTTP/1.1 418"), "{}", out.stdout);
    assert!(out.stdout.ends_with("short and stout"), "{}", out.stdout);

    let out = curl(&["-sS", "-i", &format!("{base}/hello")]);
    assert_eq!(served_by(&out.stdout), "reviews-v2");
    assert!(
        out.stdout.contains("x-added: yes"),
        "request header not set: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("x-route: h"),
        "response header not added: {}",
        out.stdout
    );

    // No rule matches: 404 with flag NR.
    let out = curl(&["-sS", "-i", &format!("{base}/nothing-matches")]);
    assert!(out.stdout.starts_with("HTTP/1.1 404"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-response-flags: NR"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_timeout_answers_504_ut() {
    let routes = format!(
        r#"          rules:
            - origin: {ORIGIN}
              index: 0
              action: {{forward: [{{service: reviews.default.svc.cluster.local, weight: 1}}]}}
              policies: {{timeout_ms: 300}}
"#
    );
    let f = fixture(&routes).await;
    let started = std::time::Instant::now();
    let out = curl(&[
        "-sS",
        "-i",
        &format!("http://{}/delay/3000", f.proxy.bound.outbound_ports[0]),
    ]);
    let took = started.elapsed();
    assert!(out.stdout.starts_with("HTTP/1.1 504"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-response-flags: UT"), "{}", out.stdout);
    assert!(took < std::time::Duration::from_millis(2500), "took {took:?}");
    let m = f.proxy.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[("response_flags", "UT"), ("response_code", "504")]
        ),
        1.0,
        "{m}"
    );
}

/// An upstream that reads each request's whole body (by Content-Length) and answers the
/// requests whose number (from 0, over all connections) is in `fail` with 503, every other
/// one with 200 and the body it received.
struct Flaky {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn flaky(fail: &'static [usize]) -> Flaky {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let response = if fail.contains(&n) {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec()
                    } else {
                        let mut r =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                        r.extend_from_slice(&body);
                        r
                    };
                    if stream.get_mut().write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Flaky { addr, requests }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_sent_again_on_retry_up_to_64_kib() {
    use std::sync::atomic::Ordering;
    // Request 0 (the first try of the small body) and request 2 (the big body) fail.
    let upstream = flaky(&[0, 2]).await;
    let proxy = Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage}}}}
admin: {{address: "127.0.0.1:0"}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: null
  ports: [{{listen: "127.0.0.1:0", service: ratings, port: 9080}}]
services:
  - name: ratings
    ports: [{{port: 9080, protocol: http}}]
    routes:
      - port: 9080
        table:
          rules:
            - origin: {{kind: VirtualService, namespace: default, name: ratings}}
              index: 0
              action: {{forward: [{{service: ratings.default.svc.cluster.local, weight: 1}}]}}
              policies: {{retries: {{attempts: 2, retry_on: [5xx]}}}}
endpoints:
  - {{service: ratings, port: 9080, endpoints: [{{address: "{}"}}]}}
"#,
        upstream.addr
    ));
    let url = format!("http://{}/rate", proxy.bound.outbound_ports[0]);
    let dir = std::env::temp_dir().join(format!("weft-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let post = |name: &str, content: &str| {
        let file = dir.join(name);
        std::fs::write(&file, content).expect("write");
        let data = format!("@{}", file.display());
        let out = curl(&[
            "-sS",
            "-X",
            "POST",
            "--data-binary",
            &data,
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        let (body, code) = out.stdout.rsplit_once('\n').expect("status line");
        (code.to_string(), body.to_string())
    };

    // 40 KiB: the first try gets a 503 after the upstream read the whole body; the retry
    // carries the same bytes, and they come back.
    let small: String = (0..40 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (code, body) = post("small", &small);
    assert_eq!(code, "200");
    assert!(
        body == small,
        "the retry sent other bytes ({} of {})",
        body.len(),
        small.len()
    );
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);

    // 100 KiB is more than is kept for a retry: the one try's 503 is the answer.
    let (code, _) = post("big", &"x".repeat(100 * 1024));
    assert_eq!(code, "503");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
