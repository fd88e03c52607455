//! The failures of a full or broken upstream, and the HTTP/2 stream limit, against a real
//! `weft proxy`: `UO` when `limits.maxConnectionsPerEndpoint` is reached, `UC` when the
//! upstream resets before it answers, and `limits.h2MaxConcurrentStreams` advertised and
//! enforced on a client that ignores it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{curl, metric_sum, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_test_support::HttpEcho;

/// A client sidecar whose `reviews:9080` port reaches `app` directly (`meshPort: null`, so
/// pooled HTTP/1 connections), with `limits` (a YAML flow mapping body).
fn sidecar(limits: &str, app: SocketAddr) -> Proxy {
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
endpoints:
  - service: reviews
    port: 9080
    endpoints: [{{address: "{app}", meshPort: null, workload: reviews-v1, labels: {{app: reviews}}}}]
"#
    ))
}

/// Status line and headers of `GET url`, lower-cased.
fn head_of(url: &str) -> String {
    let out = curl(&["-sS", "-i", url]);
    out.stdout
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Runs a blocking command off the runtime's worker threads, so in-process servers keep serving.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(40), tokio::task::spawn_blocking(f))
        .await
        .expect("command timed out")
        .expect("command panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_endpoint_answers_503_uo_and_serves_again_once_a_connection_frees() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let proxy = sidecar("maxConnectionsPerEndpoint: 1", app.addr());
    let base = format!("http://{}", proxy.bound.outbound_ports[0]);

    // One slow request holds the endpoint's only connection...
    let slow = {
        let url = format!("{base}/delay/1500");
        tokio::task::spawn_blocking(move || head_of(&url))
    };
    // ...(wait until the app has it, so the next request really finds it busy)...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.connections() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...so another one gets 503 `UO` from the proxy, without a new connection to the app.
    let url = format!("{base}/fast");
    let head = blocking(move || head_of(&url)).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nx-weft-response-flags: uo\r\n"), "{head}");
    assert_eq!(app.connections(), 1);
    assert!(slow.await.expect("slow request").starts_with("http/1.1 200"));

    // The connection is free again: the next request is served on it.
    let url = format!("{base}/fast");
    let head = blocking(move || head_of(&url)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(app.connections(), 1, "the freed connection was reused");
    let m = proxy.metrics();
    let overflow = [
        ("reporter", "source"),
        ("response_code", "503"),
        ("response_flags", "UO"),
    ];
    assert_eq!(metric_sum(&m, "istio_requests_total", &overflow), 1.0, "{m}");
}

/// An upstream that reads each request and closes the connection without a word.
async fn hang_up_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Wait for the request head, then close without answering.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_up_before_answering_gets_502_uc() {
    let (app, server) = hang_up_server().await;
    let proxy = sidecar("", app);
    let url = format!("http://{}/reviews/1", proxy.bound.outbound_ports[0]);
    let head = blocking(move || head_of(&url)).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(head.contains("\r\nx-weft-response-flags: uc\r\n"), "{head}");
    let m = proxy.metrics();
    let reset = [
        ("reporter", "source"),
        ("response_code", "502"),
        ("response_flags", "UC"),
    ];
    assert_eq!(metric_sum(&m, "istio_requests_total", &reset), 1.0, "{m}");
    server.abort();
}

// === HTTP/2 frames, by hand: a client that does not hold itself to the server's limit ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame").to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET path` as an HPACK block of static-table references and literals without indexing.
fn get_headers(authority: &str, path: &str) -> Vec<u8> {
    // :method GET (static 2), :scheme http (static 6).
    let mut block = vec![0x82, 0x86];
    for (name_index, value) in [(4u8, path), (1u8, authority)] {
        // Literal without indexing, name from the static table (:path 4, :authority 1).
        block.push(name_index);
        block.push(u8::try_from(value.len()).expect("short value"));
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// One frame: (type, flags, stream, payload).
async fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_h2_concurrent_stream_limit_is_advertised_and_a_stream_past_it_refused() {
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let proxy = sidecar("h2MaxConcurrentStreams: 2", app.addr());
    let mut s = TcpStream::connect(proxy.bound.outbound_ports[0])
        .await
        .expect("connect");
    s.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .await
        .expect("preface");

    // The server's SETTINGS advertise the limit; ours ACKs them, which puts them in force.
    let advertised = loop {
        let (kind, flags, _, payload) = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s))
            .await
            .expect("SETTINGS in time")
            .expect("a frame");
        if kind == SETTINGS && flags & ACK == 0 {
            break payload
                .chunks_exact(6)
                .find(|p| u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
                .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
        }
    };
    assert_eq!(advertised, Some(2));
    s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.expect("ack");

    // Three slow requests at once: two may be open, the third is refused, and the proxy keeps
    // serving the two (and the connection).
    let authority = "reviews:9080";
    let mut requests = Vec::new();
    for stream in [1, 3, 5] {
        requests.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &get_headers(authority, "/delay/1000"),
        ));
    }
    s.write_all(&requests).await.expect("requests");
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    let mut finished = Vec::new();
    while finished.len() < 2 || refused.is_empty() {
        let (kind, flags, stream, payload) =
            tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s))
                .await
                .unwrap_or_else(|_| {
                    panic!("answered {answered:?}, refused {refused:?}, finished {finished:?}")
                })
                .expect("the connection stays open");
        match kind {
            HEADERS => answered.push(stream),
            RST_STREAM => refused.push((
                stream,
                u32::from_be_bytes(payload[..4].try_into().expect("4 bytes")),
            )),
            DATA if flags & END_STREAM != 0 => finished.push(stream),
            GOAWAY => panic!("GOAWAY instead of refusing one stream: {payload:?}"),
            _ => {}
        }
        if kind == HEADERS && flags & END_STREAM != 0 {
            finished.push(stream);
        }
    }
    assert_eq!(refused, [(5, REFUSED_STREAM)]);
    answered.sort_unstable();
    assert_eq!(answered, [1, 3]);
    assert_eq!(app.requests(), 2, "the refused stream never reached the app");
}
