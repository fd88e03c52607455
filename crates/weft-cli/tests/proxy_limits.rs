//! Every class of bad or abusive input against a real `weft proxy`: oversized heads, long
//! targets, smuggling, slowloris, idle connections, connection floods, HTTP/2 rapid reset, and
//! the failures the proxy answers itself (flags, reason headers, gRPC status).
//!
//! Malformed requests that curl refuses to send are written as exact bytes on a raw socket.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{curl, metric_sum, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_test_support::HttpEcho;

/// A client sidecar with a per-service port for `reviews:9080`, whose endpoints are `apps`
/// reached directly (`meshPort: null`), with `limits` (a YAML flow mapping body) applied.
fn sidecar(limits: &str, apps: &[SocketAddr]) -> Proxy {
    let eps: Vec<String> = apps
        .iter()
        .map(|a| format!(r#"      - {{address: "{a}", meshPort: null, workload: reviews-v1, labels: {{app: reviews, version: v1}}}}"#))
        .collect();
    let endpoints = if eps.is_empty() {
        String::new()
    } else {
        format!(
            "endpoints:\n  - service: reviews\n    port: 9080\n    endpoints:\n{}\n",
            eps.join("\n")
        )
    };
    Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
limits: {{{limits}}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: null
  ports: [{{listen: "127.0.0.1:0", service: reviews, port: 9080}}]
services:
  - name: reviews
    ports: [{{port: 9080, protocol: http}}]
{endpoints}"#
    ))
}

fn port(p: &Proxy) -> SocketAddr {
    p.bound.outbound_ports[0]
}

/// Writes `bytes` (ignoring a write error: the proxy may close early) and reads until EOF,
/// reset or `within`; returns what was read and whether the connection ended.
async fn exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    read_to_end(&mut s, within).await
}

async fn read_to_end(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// Reads one HTTP/1 response with a `content-length` from a kept-alive connection.
async fn read_one_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed mid-response: {}",
            String::from_utf8_lossy(&out)
        );
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

fn assert_ok_curl(addr: SocketAddr) {
    let out = curl(&["-sS", "-i", &format!("http://{addr}/after")]);
    assert!(
        out.stdout.starts_with("HTTP/1.1 200"),
        "{} {}",
        out.stdout,
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_gets_431_and_the_next_client_is_served() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("maxHeaderBytes: 16384", &[app.addr()]);
    let big = "a".repeat(20_000);
    let req = format!("GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: {big}\r\n\r\n");
    let (resp, closed) = exchange(port(&p), req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(closed, "connection left open after 431");
    // Just under the limit is fine.
    let fits = "a".repeat(12_000);
    let out = curl(&[
        "-sS",
        "-i",
        "-H",
        &format!("X-Fits: {fits}"),
        &format!("http://{}/", port(&p)),
    ]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    assert_ok_curl(port(&p));
    assert_eq!(app.requests(), 2, "the oversized request reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_request_target_gets_414_with_flags() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("maxUriBytes: 1024", &[app.addr()]);
    let long = format!("http://{}/{}", port(&p), "u".repeat(2000));
    let out = curl(&["-sS", "-i", &long]);
    assert!(out.stdout.starts_with("HTTP/1.1 414"), "{}", out.stdout);
    assert!(
        out.stdout.contains("x-weft-response-flags: DPE"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("x-weft-proxy-error: request target too long"),
        "{}",
        out.stdout
    );
    let ok = format!("http://{}/{}", port(&p), "u".repeat(900));
    let out = curl(&["-sS", "-i", &ok]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    assert_eq!(app.requests(), 1);
    let m = p.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[("response_code", "414"), ("response_flags", "DPE")]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_400_and_close() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("", &[app.addr()]);
    let addr = port(&p);
    // Each is followed by a second request that must never be read as one (smuggling).
    let cases: [(&str, &str); 2] = [
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "bad header syntax",
            "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ),
    ];
    for (what, head) in cases {
        let bytes = format!("{head}GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let (resp, closed) = exchange(addr, bytes.as_bytes(), Duration::from_secs(5)).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(closed, "{what}: connection not closed: {resp}");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{what}: {resp}");
    }
    assert_eq!(app.requests(), 0, "a malformed request reached the app");
    assert_ok_curl(addr);
}

/// Both `Content-Length` and `Transfer-Encoding`, in either order. hyper (1.x) follows RFC 9112
/// section 6.3: Transfer-Encoding wins, Content-Length is removed before the proxy sees the
/// request, and the connection is closed after the response. So the request is never ambiguous
/// past the proxy: the app gets one chunked request without Content-Length, and the bytes after
/// the chunked body are never read as a second (smuggled) request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_gets_400_and_close() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("", &[app.addr()]);
    let addr = port(&p);
    let cases = [
        (
            "Content-Length then Transfer-Encoding",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "Transfer-Encoding then Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
    ];
    for (what, framing) in cases {
        // Read by Content-Length, the body would be `0\r\n\r\n` and `GET /smuggled` would
        // follow; read as chunked, it is an empty body and then a second request. Neither:
        // the proxy refuses the request and closes.
        let bytes = format!(
            "POST /first HTTP/1.1\r\nHost: x\r\n{framing}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let (resp, closed) = exchange(addr, bytes.as_bytes(), Duration::from_secs(5)).await;
        assert!(closed, "{what}: connection not closed: {resp}");
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{what}: {resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{what}: {resp}"
        );
        assert!(resp.contains("x-weft-response-flags: DPE"), "{what}: {resp}");
    }
    assert_eq!(app.requests(), 0, "nothing reached the app");
    let m = p.metrics();
    assert_eq!(
        common::metric_sum(
            &m,
            "istio_requests_total",
            &[("response_code", "400"), ("response_flags", "DPE")]
        ),
        2.0,
        "{m}"
    );
    assert_ok_curl(addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_after_the_header_read_timeout() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("headerReadTimeoutMs: 300", &[app.addr()]);
    let mut s = TcpStream::connect(port(&p)).await.expect("connect");
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (resp, closed) = read_to_end(&mut s, Duration::from_secs(3)).await;
    let took = start.elapsed();
    assert!(closed, "slow client still connected after 3 s");
    assert!(took >= Duration::from_millis(250), "closed too early: {took:?}");
    assert!(took < Duration::from_secs(2), "closed too late: {took:?}");
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert_eq!(app.requests(), 0);
    assert_ok_curl(port(&p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("idleTimeoutMs: 500", &[app.addr()]);
    let mut s = TcpStream::connect(port(&p)).await.expect("connect");
    // Busy for longer than the idle timeout, in steps shorter than it: stays open.
    for _ in 0..4 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let resp = read_one_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    let (rest, closed) = read_to_end(&mut s, Duration::from_secs(3)).await;
    let took = start.elapsed();
    assert!(closed, "idle connection still open after 3 s");
    assert!(rest.is_empty(), "{rest}");
    assert!(took >= Duration::from_millis(200), "closed too early: {took:?}");
    assert!(took < Duration::from_millis(1500), "closed too late: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_counted() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let p = sidecar("maxConnections: 2", &[app.addr()]);
    let addr = port(&p);
    let mut a = TcpStream::connect(addr).await.expect("a");
    let mut b = TcpStream::connect(addr).await.expect("b");
    // Both accepted and serving before the third arrives.
    for s in [&mut a, &mut b] {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(read_one_response(s).await.starts_with("HTTP/1.1 200"));
    }
    let mut c = TcpStream::connect(addr)
        .await
        .expect("c connects (the kernel accepts)");
    let start = Instant::now();
    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (resp, closed) = read_to_end(&mut c, Duration::from_secs(3)).await;
    assert!(closed && resp.is_empty(), "third connection was served: {resp}");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    // The first two still work.
    for s in [&mut a, &mut b] {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(read_one_response(s).await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(app.requests(), 4);
    // The admin listener has its own limit: metrics are reachable while the port is full.
    let m = p.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "weft_listener_connections_rejected_total",
            &[("reason", "max_connections")]
        ),
        1.0,
        "{m}"
    );
    // Freeing a slot lets a new client in.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let out = curl(&["-sS", "-i", &format!("http://{addr}/")]);
        if out.stdout.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {}", out.stderr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `n` streams on one HTTP/2 connection and resets each right after sending its headers.
/// Returns how many were sent before the connection failed, and the connection's error.
async fn rapid_reset(addr: SocketAddr, n: usize) -> (usize, Option<String>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    let mut err = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent < n && Instant::now() < deadline {
        let mut ready = match client.clone().ready().await {
            Ok(r) => r,
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        };
        let req = http::Request::get(format!("http://{addr}/delay/1000"))
            .body(())
            .expect("request");
        match ready.send_request(req, false) {
            Ok((_resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
        client = ready;
        if sent % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // A GOAWAY ends the connection future with its error; without one it stays open.
    let ended = match tokio::time::timeout(Duration::from_secs(2), conn).await {
        Ok(Ok(Err(e))) => Some(e.to_string()),
        _ => None,
    };
    drop(client);
    (sent, err.or(ended))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_bounded_and_the_proxy_keeps_serving() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let mut p = sidecar("", &[app.addr()]);
    let addr = port(&p);
    let (sent, err) = rapid_reset(addr, 2000).await;
    let reached = app.requests();
    eprintln!("rapid reset: sent {sent}, app saw {reached}, connection error {err:?}");
    // h2's pending-accept-reset limit (h2MaxPendingResetStreams, 20) answers with GOAWAY
    // ENHANCE_YOUR_CALM ("too_many_resets") and closes the connection, and almost none of the
    // streams reach the app. The client sees the GOAWAY, or, when it is still writing streams
    // as the proxy closes, a broken pipe or reset.
    let err = err.expect("the connection survived 2,000 reset streams");
    assert!(
        ["too_many_resets", "excessive load", "broken pipe", "reset"]
            .iter()
            .any(|s| err.contains(s)),
        "{err}"
    );
    assert!(reached < 200, "the app saw {reached} of {sent} reset requests");
    // A new client on a new connection is served normally.
    let out = curl(&[
        "-sS",
        "-i",
        "--http2-prior-knowledge",
        &format!("http://{addr}/after"),
    ]);
    assert!(
        out.stdout.starts_with("HTTP/2 200"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert_ok_curl(addr);
    assert!(p.child.try_wait().expect("try_wait").is_none(), "{}", p.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_failures_carry_flag_and_reason_headers_and_metrics() {
    // No endpoint at all: UH.
    let empty = sidecar("", &[]);
    let out = curl(&["-sS", "-i", &format!("http://{}/", port(&empty))]);
    assert!(out.stdout.starts_with("HTTP/1.1 503"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-response-flags: UH"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("x-weft-proxy-error: no endpoints for reviews.default.svc.cluster.local"),
        "{}",
        out.stdout
    );
    let m = empty.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[("response_code", "503"), ("response_flags", "UH")]
        ),
        1.0,
        "{m}"
    );

    // An endpoint that refuses connections: UF.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let refused = sidecar("", &[dead]);
    let out = curl(&["-sS", "-i", &format!("http://{}/", port(&refused))]);
    assert!(out.stdout.starts_with("HTTP/1.1 503"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-response-flags: UF"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-proxy-error: "), "{}", out.stdout);
    let m = refused.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[("response_code", "503"), ("response_flags", "UF")]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_gets_unavailable_status_not_a_bare_503() {
    let empty = sidecar("", &[]);
    let addr = port(&empty);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::post(format!("http://{addr}/reviews.Reviews/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (resp, mut body) = client.send_request(req, false).expect("send");
    // The proxy may answer (trailers-only, no endpoint) and close the stream before this body
    // is sent, as HTTP/2 allows: the body failing then is not the test's concern, the answer is.
    let _ = body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("answer in time")
        .expect("response");
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.headers()["grpc-status"], "14", "{resp:?}");
    assert_eq!(resp.headers()["x-weft-response-flags"], "UH", "{resp:?}");
    assert!(resp.headers().contains_key("grpc-message"), "{resp:?}");
    assert!(resp.body().is_end_stream(), "not trailers-only: {resp:?}");
    conn.abort();
    let m = empty.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                ("response_flags", "UH"),
                ("grpc_response_status", "14"),
                ("request_protocol", "grpc")
            ]
        ),
        1.0,
        "{m}"
    );
}
