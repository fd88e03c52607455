//! SIGTERM with requests in flight: the real `weft proxy` stops accepting, lets in-flight
//! requests finish within `drainDeadlineMs`, tells keep-alive clients to go, and exits 0.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{curl, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_test_support::HttpEcho;

/// A client sidecar with a per-service port for `reviews:9080` straight to `app`.
fn sidecar(drain_ms: u64, app: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
limits: {{drainDeadlineMs: {drain_ms}}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: null
  ports: [{{listen: "127.0.0.1:0", service: reviews, port: 9080}}]
services:
  - name: reviews
    ports: [{{port: 9080, protocol: http}}]
endpoints:
  - service: reviews
    port: 9080
    endpoints:
      - {{address: "{app}", meshPort: null, workload: reviews-v1, labels: {{app: reviews, version: v1}}}}
"#
    ))
}

/// Reads one HTTP/1 response with a `content-length`.
async fn read_one_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed mid-response: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let mut p = sidecar(5000, app.addr());
    let addr = p.bound.outbound_ports[0];
    let url = format!("http://{addr}/delay/1500");
    let curls: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&["-sS", "-i", &url]))
        })
        .collect();
    // Wait until all five reached the app, so they are truly in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.requests() < 5 {
        assert!(Instant::now() < deadline, "requests did not reach the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sigterm = Instant::now();
    p.terminate();
    // The listener closes at once: a new connection is refused.
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) => {
                // Refused once the listener is gone; reset if the connection was still queued
                // in the closing listener's backlog. Either way it was never accepted.
                use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
                assert!(matches!(e.kind(), ConnectionRefused | ConnectionReset), "{e}");
                break;
            }
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "listener still accepting {:?} after SIGTERM: {}",
                    sigterm.elapsed(),
                    p.logs()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    for c in curls {
        let out = c.join().expect("curl thread");
        assert!(
            out.stdout.starts_with("HTTP/1.1 200"),
            "{} {}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("reviews-v1 GET /delay/1500"),
            "{}",
            out.stdout
        );
    }
    let status = p.wait_exit(Duration::from_secs(5)).expect("proxy exited");
    let took = sigterm.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.logs());
    assert!(
        took >= Duration::from_millis(900),
        "exited before requests could finish: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(p.logs().contains("drained"), "{}", p.logs());
    assert_eq!(app.requests(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_a_request_that_would_outlive_it() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let mut p = sidecar(500, app.addr());
    let addr = p.bound.outbound_ports[0];
    let slow = std::thread::spawn(move || curl(&["-sS", "-i", &format!("http://{addr}/delay/10000")]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.requests() < 1 {
        assert!(Instant::now() < deadline, "request did not reach the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sigterm = Instant::now();
    p.terminate();
    let status = p.wait_exit(Duration::from_secs(5)).expect("proxy exited");
    let took = sigterm.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.logs());
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(
        took < Duration::from_secs(2),
        "drain deadline not enforced: {took:?}"
    );
    assert!(p.logs().contains("drain deadline passed"), "{}", p.logs());
    // The cut client sees its connection end, not a hang.
    let out = slow.join().expect("curl thread");
    assert!(!out.status.success(), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_client_is_told_to_close_during_drain() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let mut p = sidecar(5000, app.addr());
    let addr = p.bound.outbound_ports[0];
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let first = read_one_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    // A request in flight when the drain starts gets its answer, marked to close.
    s.write_all(b"GET /delay/800 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.requests() < 2 {
        assert!(Instant::now() < deadline, "request did not reach the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.terminate();
    let second = read_one_response(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "no Connection: close during drain: {second}"
    );
    // And the connection then ends.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("connection closed after the last response")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
    let status = p.wait_exit(Duration::from_secs(5)).expect("proxy exited");
    assert_eq!(status.code(), Some(0), "{}", p.logs());
}
