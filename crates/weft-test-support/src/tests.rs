//! Each server exercised with real clients: hyper over HTTP/1.1 and HTTP/2, and raw TCP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ReqBody = BoxBody<Bytes, BoxError>;

#[derive(Clone, Copy, Debug)]
enum Proto {
    H1,
    H2,
}

const BOTH: [Proto; 2] = [Proto::H1, Proto::H2];

async fn h1_client(addr: SocketAddr) -> http1::SendRequest<ReqBody> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (sender, conn) = http1::handshake(io).await.expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

async fn h2_client(addr: SocketAddr) -> http2::SendRequest<ReqBody> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn request(addr: SocketAddr, method: &str, path: &str, body: ReqBody) -> Request<ReqBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .header("x-test", "yes")
        .body(body)
        .expect("request")
}

fn full(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into()).map_err(BoxError::from).boxed()
}

fn empty() -> ReqBody {
    Empty::new().map_err(BoxError::from).boxed()
}

/// Sends one request on a fresh connection of protocol `proto`.
async fn send(proto: Proto, req: Request<ReqBody>) -> Response<Incoming> {
    let addr: SocketAddr = req
        .uri()
        .authority()
        .expect("authority")
        .as_str()
        .parse()
        .expect("addr");
    match proto {
        Proto::H1 => {
            let mut req = req;
            // HTTP/1 requests carry origin-form targets, the way a real client sends them.
            *req.uri_mut() = req
                .uri()
                .path_and_query()
                .expect("path")
                .as_str()
                .parse()
                .expect("uri");
            h1_client(addr)
                .await
                .send_request(req)
                .await
                .expect("h1 response")
        }
        Proto::H2 => h2_client(addr)
            .await
            .send_request(req)
            .await
            .expect("h2 response"),
    }
}

async fn get(proto: Proto, addr: SocketAddr, path: &str) -> (Response<()>, String) {
    let rsp = send(proto, request(addr, "GET", path, empty())).await;
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("utf-8 body");
    (Response::from_parts(parts, ()), text)
}

fn header<'a>(rsp: &'a Response<()>, name: &str) -> &'a str {
    rsp.headers()
        .get(name)
        .map_or("", |v| v.to_str().expect("ascii header"))
}

fn protocol_of(proto: Proto) -> &'static str {
    match proto {
        Proto::H1 => "HTTP/1.1",
        Proto::H2 => "HTTP/2.0",
    }
}

/// Reads one raw HTTP/1.1 response to `request` until the server closes.
async fn raw_http1(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    String::from_utf8(out).expect("utf-8 response")
}

// === HttpEcho ===

#[tokio::test]
async fn http_echo_describes_the_request_over_both_protocols() {
    let echo = HttpEcho::start("alpha").await.expect("start");
    for proto in BOTH {
        let (rsp, body) = get(proto, echo.addr(), "/some/path?a=1&b=2").await;
        assert_eq!(rsp.status(), StatusCode::OK, "{proto:?}");
        assert_eq!(header(&rsp, SERVER_HEADER), "alpha");
        assert_eq!(header(&rsp, PROTOCOL_HEADER), protocol_of(proto));
        assert!(
            body.starts_with("alpha GET /some/path?a=1&b=2\n"),
            "{proto:?}: {body}"
        );
        assert!(body.lines().any(|l| l == "x-test: yes"), "{proto:?}: {body}");
    }
    assert_eq!(echo.requests(), 2);
    assert_eq!(echo.connections(), 2);
}

#[tokio::test]
async fn http_echo_keeps_http1_connections_alive() {
    let echo = HttpEcho::start("keep").await.expect("start");
    let mut client = h1_client(echo.addr()).await;
    for _ in 0..3 {
        let rsp = client
            .send_request(request(echo.addr(), "GET", "/", empty()))
            .await
            .expect("response");
        assert_eq!(rsp.status(), StatusCode::OK);
        rsp.into_body().collect().await.expect("body");
    }
    assert_eq!(echo.requests(), 3);
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn http_echo_multiplexes_http2_streams() {
    let echo = HttpEcho::start("mux").await.expect("start");
    let client = h2_client(echo.addr()).await;
    let calls = (0..5).map(|_| {
        let mut client = client.clone();
        let req = request(echo.addr(), "GET", "/delay/100", empty());
        async move { client.send_request(req).await.expect("response").status() }
    });
    let started = Instant::now();
    let statuses = futures_join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    // Concurrent streams on one connection: five 100 ms delays overlap.
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(echo.connections(), 1);
}

/// Runs futures concurrently without pulling in futures-util for one test.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

#[tokio::test]
async fn http_echo_status_delay_and_bytes() {
    let echo = HttpEcho::start("paths").await.expect("start");
    for proto in BOTH {
        let (rsp, _) = get(proto, echo.addr(), "/status/503").await;
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&rsp, SERVER_HEADER), "paths");
        let (rsp, _) = get(proto, echo.addr(), "/status/204").await;
        assert_eq!(rsp.status(), StatusCode::NO_CONTENT);
        let (rsp, _) = get(proto, echo.addr(), "/status/nope").await;
        assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);

        let started = Instant::now();
        let (rsp, body) = get(proto, echo.addr(), "/delay/60").await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(body.starts_with("paths GET /delay/60\n"));

        let (rsp, body) = get(proto, echo.addr(), "/bytes/100000").await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(body.len(), 100_000);
        assert!(body.bytes().all(|b| b == b'x'));
    }
}

#[tokio::test]
async fn http_echo_echoes_large_bodies() {
    let echo = HttpEcho::start("big").await.expect("start");
    let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    for proto in BOTH {
        let rsp = send(proto, request(echo.addr(), "POST", "/echo", full(data.clone()))).await;
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        assert!(body == data, "{proto:?}: echoed {} bytes", body.len());
    }
}

/// A request body sent in pieces (chunked on HTTP/1) comes back piece by piece, before the
/// request has ended: proof the server streams instead of buffering.
#[tokio::test]
async fn http_echo_streams_the_body_back_as_it_arrives() {
    let echo = HttpEcho::start("duplex").await.expect("start");
    for proto in BOTH {
        let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
        let req = request(echo.addr(), "POST", "/echo", body.boxed());
        let rsp = tokio::spawn(send(proto, req));
        tx.send_data(Bytes::from_static(b"first ")).await.expect("send");
        let mut rsp_body = rsp.await.expect("join").into_body();
        let frame = next_data(&mut rsp_body).await;
        assert_eq!(frame, "first ", "{proto:?}");
        tx.send_data(Bytes::from_static(b"second")).await.expect("send");
        assert_eq!(next_data(&mut rsp_body).await, "second", "{proto:?}");
        drop(tx);
        // HTTP/2 may close the stream with an empty DATA frame; nothing more may follow.
        let rest = rsp_body.collect().await.expect("clean end").to_bytes();
        assert!(rest.is_empty(), "{proto:?}: {rest:?}");
    }
}

async fn next_data(body: &mut Incoming) -> Bytes {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("frame in time")
            .expect("a frame")
            .expect("frame ok");
        if let Ok(data) = frame.into_data() {
            return data;
        }
    }
}

#[tokio::test]
async fn http_echo_streams_chunks() {
    let echo = HttpEcho::start("chunks").await.expect("start");
    let (rsp, body) = get(Proto::H2, echo.addr(), "/stream/4").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");

    // Raw bytes to see the framing: chunked encoding, one chunk per line.
    let raw = raw_http1(
        echo.addr(),
        "GET /stream/3 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{raw}");
    assert!(lower.contains("x-echo-protocol: http/1.1"), "{raw}");
    assert!(raw.ends_with("8\r\nchunk 2\n\r\n0\r\n\r\n"), "{raw}");
}

#[tokio::test]
async fn http_echo_accepts_http1_chunked_requests() {
    let echo = HttpEcho::start("raw").await.expect("start");
    let raw = raw_http1(
        echo.addr(),
        "POST /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("hello") && raw.contains(" world"), "{raw}");
}

#[tokio::test]
async fn http_echo_counts_http10_and_reports_its_protocol() {
    let echo = HttpEcho::start("old").await.expect("start");
    let raw = raw_http1(echo.addr(), "GET /x HTTP/1.0\r\n\r\n").await;
    assert!(
        raw.to_ascii_lowercase().contains("x-echo-protocol: http/1.0"),
        "{raw}"
    );
    assert_eq!(echo.requests(), 1);
}

#[tokio::test]
async fn http_echo_rejects_names_that_are_not_header_values() {
    assert!(HttpEcho::start("bad\nname").await.is_err());
}

#[tokio::test]
async fn http_echo_stops_and_restarts_on_the_same_address() {
    let echo = HttpEcho::start("first").await.expect("start");
    let addr = echo.addr();
    let mut open = h1_client(addr).await;
    echo.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    assert!(
        open.send_request(request(addr, "GET", "/", empty()))
            .await
            .is_err(),
        "open connections closed"
    );

    let again = HttpEcho::start_on("second", addr).await.expect("restart");
    assert_eq!(again.addr(), addr);
    let (rsp, _) = get(Proto::H1, addr, "/").await;
    assert_eq!(header(&rsp, SERVER_HEADER), "second");
}

#[tokio::test]
async fn http_echo_stops_when_dropped() {
    let echo = HttpEcho::start("gone").await.expect("start");
    let addr = echo.addr();
    drop(echo);
    // Abort is asynchronous: the listener closes at the task's next poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening after drop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// === TcpEcho and ServerFirst ===

#[tokio::test]
async fn tcp_echo_echoes_and_respects_half_close() {
    let echo = TcpEcho::start().await.expect("start");
    let mut stream = TcpStream::connect(echo.addr()).await.expect("connect");
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    let (mut rd, mut wr) = stream.split();
    let write = async {
        wr.write_all(&data).await.expect("write");
        // Half-close: we are done sending but still want every echoed byte.
        wr.shutdown().await.expect("shutdown");
    };
    let mut out = Vec::new();
    let read = rd.read_to_end(&mut out);
    let ((), read) = tokio::join!(write, read);
    read.expect("read until the server's half-close");
    assert!(out == data, "echoed {} bytes", out.len());
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn tcp_echo_counts_connections_and_stops() {
    let echo = TcpEcho::start().await.expect("start");
    let addr = echo.addr();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
    }
    assert_eq!(echo.connections(), 3);
    echo.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn server_first_greets_before_the_client_speaks() {
    let server = ServerFirst::start("220 weft ESMTP\r\n").await.expect("start");
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    let mut banner = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut banner))
        .await
        .expect("banner without speaking first")
        .expect("read banner");
    assert_eq!(&banner, b"220 weft ESMTP\r\n");
    s.write_all(b"HELO x\r\n").await.expect("write");
    s.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("read echo");
    assert_eq!(rest, b"HELO x\r\n");
    assert_eq!(server.connections(), 1);
}

// === Helpers ===

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port still free");
}

#[tokio::test]
async fn wait_for_http_sees_a_server_and_times_out_without_one() {
    let echo = HttpEcho::start("ready").await.expect("start");
    wait_for_http(echo.addr(), "/status/503", Duration::from_secs(5))
        .await
        .expect("any status means ready");

    let nobody = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let started = Instant::now();
    let err = wait_for_http(nobody, "/", Duration::from_millis(200))
        .await
        .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(format!("{err:#}").contains("did not answer"), "{err:#}");

    // A server that accepts but never answers HTTP: the timeout still holds.
    let silent = TcpEcho::start().await.expect("start");
    let started = Instant::now();
    wait_for_http(silent.addr(), "/", Duration::from_millis(200))
        .await
        .expect_err("an echo is not HTTP");
    assert!(started.elapsed() < Duration::from_secs(2));
}
