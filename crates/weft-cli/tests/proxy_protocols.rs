//! Every protocol through real `weft proxy` processes, with real clients and servers: gRPC
//! (python grpcio), HTTP/2 prior knowledge (curl, nghttp), HTTP/1.1 (curl), WebSocket (python
//! websockets) and raw TCP (client-first, opaque-detected and server-first).
//!
//! "Mesh" means client sidecar -> HTTP/2 hop -> server sidecar -> backend; "direct" means client
//! sidecar -> backend, for an endpoint without a sidecar (`meshPort: null`).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{curl, metric_sum, peer_script, run, tempdir, Output, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_test_support::{HttpEcho, ServerFirst, TcpEcho};

/// Ceiling on every step of a test that talks to a proxy.
const STEP: Duration = Duration::from_secs(10);

// === config builders ===

/// A server sidecar fronting apps on the mesh port: `(app, protocol)` per inbound listener,
/// the listener's port being the app's.
fn server_sidecar(apps: &[(SocketAddr, &str)]) -> Proxy {
    let listeners: Vec<String> = apps
        .iter()
        .map(|(app, proto)| format!(r#"{{port: {}, app: "{app}", protocol: {proto}}}"#, app.port()))
        .collect();
    Proxy::start(&format!(
        r#"
workload: {{name: backend-v1, labels: {{app: backend, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
inbound:
  mesh: "127.0.0.1:0"
  listeners: [{listeners}]
outbound: {{listen: null}}
"#,
        listeners = listeners.join(", ")
    ))
}

/// A client sidecar with one service `backend` on `port` (declared `protocol`), whose single
/// endpoint is `app`, behind the sidecar whose mesh port is `mesh` (or none), and a per-service
/// local port for it. `limits` is a YAML flow map.
fn client_sidecar(
    port: u16,
    protocol: &str,
    app: SocketAddr,
    mesh: Option<SocketAddr>,
    limits: &str,
) -> Proxy {
    let mesh = mesh.map_or("null".to_string(), |m| m.port().to_string());
    Proxy::start(&format!(
        r#"
workload: {{name: frontend-v1, labels: {{app: frontend, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
limits: {limits}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: "127.0.0.1:0"
  ports: [{{listen: "127.0.0.1:0", service: backend, port: {port}}}]
services:
  - name: backend
    ports: [{{port: {port}, protocol: {protocol}}}]
endpoints:
  - service: backend
    port: {port}
    endpoints:
      - {{address: "{app}", meshPort: {mesh}, workload: backend-v1, labels: {{app: backend, version: v1}}}}
"#
    ))
}

/// Both paths to one backend: through a server sidecar, and straight to it.
struct Paths {
    server: Proxy,
    mesh: Proxy,
    direct: Proxy,
}

impl Paths {
    fn new(port: u16, protocol: &str, inbound_protocol: &str, app: SocketAddr) -> Self {
        let server = server_sidecar(&[(app, inbound_protocol)]);
        let mesh = client_sidecar(port, protocol, app, Some(server.bound.mesh), "{}");
        let direct = client_sidecar(port, protocol, app, None, "{}");
        Self { server, mesh, direct }
    }

    fn both(&self) -> [(&'static str, &Proxy); 2] {
        [("mesh", &self.mesh), ("direct", &self.direct)]
    }
}

fn local_port(p: &Proxy) -> SocketAddr {
    p.bound.outbound_ports[0]
}

// === python peers ===

/// A python peer server (grpc_peer.py or ws_peer.py), killed when dropped.
struct PeerServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempdir::Dir,
}

impl PeerServer {
    fn start(script: &str) -> Self {
        let dir = tempdir::Dir::new("weft-peer");
        let port_file = dir.path.join("port");
        let mut child = Command::new("/usr/bin/python3")
            .arg(peer_script(script))
            .arg("server")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{script} server exited early: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{script} server wrote no port file");
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a python peer client under a hard 30 s ceiling.
fn peer_client(script: &str, args: &[&str]) -> Output {
    let script = peer_script(script);
    run(
        "timeout",
        &[&["30", "/usr/bin/python3", script.as_str(), "client"], args].concat(),
    )
}

/// Runs a blocking command off the runtime's worker threads, so in-process backends keep serving.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(40), tokio::task::spawn_blocking(f))
        .await
        .expect("command timed out")
        .expect("command panicked")
}

/// Polls `check` against a proxy's metrics (which TCP relays record when they close).
async fn eventually_metrics(p: &Proxy, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let admin = p.bound.admin;
        let m = blocking(move || curl(&["-sS", &format!("http://{admin}/metrics")]).stdout).await;
        if check(&m) {
            return m;
        }
        if Instant::now() > deadline {
            panic!("{what}: metrics never matched:\n{m}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === 1. gRPC ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_bidi_and_failing_status_through_proxies() {
    let server = PeerServer::start("grpc_peer.py");
    let paths = Paths::new(7070, "grpc", "grpc", server.addr);
    for (path, client) in paths.both() {
        let target = local_port(client).to_string();
        for (case, extra) in [
            ("unary", vec![]),
            ("count", vec!["--count", "50"]),
            ("chat", vec![]),
            ("fail", vec!["--status", "UNAVAILABLE"]),
        ] {
            let args: Vec<String> = [target.as_str(), case]
                .into_iter()
                .chain(extra)
                .map(str::to_string)
                .collect();
            let out = blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                peer_client("grpc_peer.py", &args)
            })
            .await;
            assert!(
                out.status.success(),
                "{path} {case}: {}{}\nclient log:\n{}",
                out.stdout,
                out.stderr,
                client.logs()
            );
            let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("peer JSON");
            assert_eq!(v["ok"], true, "{path} {case}: {v}");
            if case == "count" {
                assert_eq!(v["messages"].as_array().map(Vec::len), Some(50), "{v}");
            }
            if case == "fail" {
                assert_eq!(v["code"], "UNAVAILABLE", "{v}");
                assert!(
                    v["details"]
                        .as_str()
                        .is_some_and(|d| d.contains("failing as asked: UNAVAILABLE")),
                    "{v}"
                );
            }
        }
        let m = eventually_metrics(client, path, |m| {
            metric_sum(m, "istio_requests_total", &[("reporter", "source")]) >= 4.0
        })
        .await;
        let grpc = |status: &str| {
            metric_sum(
                &m,
                "istio_requests_total",
                &[
                    ("reporter", "source"),
                    ("request_protocol", "grpc"),
                    ("grpc_response_status", status),
                    ("response_code", "200"),
                ],
            )
        };
        assert_eq!(grpc("0"), 3.0, "{path}: OK calls\n{m}");
        assert_eq!(grpc("14"), 1.0, "{path}: UNAVAILABLE call\n{m}");
    }
    // The server sidecar saw the same calls and statuses (reporter=destination).
    let m = paths.server.metrics();
    let dest = |status: &str| {
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("request_protocol", "grpc"),
                ("grpc_response_status", status),
            ],
        )
    };
    assert_eq!((dest("0"), dest("14")), (3.0, 1.0), "{m}");

    // The outbound port routes gRPC by :authority, like any HTTP/2 request.
    let outbound = paths.mesh.bound.outbound.expect("outbound").to_string();
    for case in ["unary", "fail", "chat"] {
        let target = outbound.clone();
        let out =
            blocking(move || peer_client("grpc_peer.py", &[&target, case, "--authority", "backend:7070"]))
                .await;
        assert!(
            out.status.success(),
            "outbound port {case}: {}{}",
            out.stdout,
            out.stderr
        );
    }
}

// === 2. HTTP/2 prior knowledge ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_from_curl_and_nghttp() {
    let app = HttpEcho::start("h2-app").await.expect("app");
    let paths = Paths::new(8080, "http2", "http2", app.addr());
    for (path, client) in paths.both() {
        let port = local_port(client);
        let out = blocking(move || {
            curl(&[
                "-sS",
                "-i",
                "--http2-prior-knowledge",
                &format!("http://{port}/h2?x=1"),
            ])
        })
        .await;
        assert!(
            out.stdout.starts_with("HTTP/2 200"),
            "{path}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("h2-app GET /h2?x=1"),
            "{path}: {}",
            out.stdout
        );
        // Declared HTTP/2 end to end: the app is spoken to in HTTP/2 too.
        assert!(
            out.stdout.contains("x-echo-protocol: HTTP/2.0"),
            "{path}: {}",
            out.stdout
        );

        // Bodies larger than the HTTP/2 windows flow both ways.
        let dir = tempdir::Dir::new("weft-h2-big");
        let (up, echoed, big) = (dir.path.join("up"), dir.path.join("echoed"), dir.path.join("big"));
        std::fs::write(&up, pattern(3 << 20)).expect("upload");
        // (Two invocations: curl 7.88 fails a second stream after a large upload on one
        // connection even straight against the app.)
        let (u, e) = (up.clone(), echoed.clone());
        let out = blocking(move || {
            curl(&[
                "-sS",
                "--http2-prior-knowledge",
                "--data-binary",
                &format!("@{}", u.display()),
                "-o",
                e.to_str().expect("path"),
                "-w",
                "%{http_code}",
                &format!("http://{port}/echo"),
            ])
        })
        .await;
        assert_eq!(out.stdout, "200", "{path}: {}", out.stderr);
        let b = big.clone();
        let out = blocking(move || {
            curl(&[
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                b.to_str().expect("path"),
                "-w",
                "%{http_code} %{size_download}",
                &format!("http://{port}/bytes/5000000"),
            ])
        })
        .await;
        assert_eq!(out.stdout, "200 5000000", "{path}: {}", out.stderr);
        assert!(
            std::fs::read(&echoed).expect("echoed") == pattern(3 << 20),
            "{path}: echo differs"
        );

        // nghttp speaks h2c with prior knowledge unless told -u; two URIs share one connection
        // as concurrent streams, and one carries a body.
        let dir = tempdir::Dir::new("weft-nghttp");
        let body = dir.path.join("body");
        std::fs::write(&body, "hello h2 body\n").expect("body");
        let out = blocking(move || {
            run(
                "timeout",
                &[
                    "20",
                    "nghttp",
                    "-v",
                    "-d",
                    body.to_str().expect("path"),
                    &format!("http://{port}/echo"),
                    &format!("http://{port}/stream/3"),
                ],
            )
        })
        .await;
        assert!(
            out.status.success(),
            "{path}: nghttp: {}{}",
            tail(&out.stdout),
            out.stderr
        );
        assert_eq!(
            out.stdout.matches(":status: 200").count(),
            2,
            "{path}: {}",
            tail(&out.stdout)
        );
        assert!(out.stdout.contains("chunk 2"), "{path}: {}", tail(&out.stdout));
        assert!(
            out.stdout.contains("hello h2 body"),
            "{path}: {}",
            tail(&out.stdout)
        );
        assert!(
            out.stdout.matches("send HEADERS frame").count() == 2,
            "{path}: one connection, two streams: {}",
            tail(&out.stdout)
        );
    }
}

/// An app that speaks only HTTP/1.1 (like python's http.server): the HTTP/2 preface gets the
/// connection closed. Answers `h1-only <request line>`. Stops when dropped.
struct Http1Only {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Http1Only {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if head.starts_with(b"PRI ") {
                        return;
                    }
                    let head = String::from_utf8_lossy(&head);
                    let line = head.lines().next().unwrap_or_default();
                    let body = format!("h1-only {line}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Http1Only {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_client_reaches_an_http1_only_app_declared_http() {
    let app = Http1Only::start().await;
    let paths = Paths::new(8081, "http", "http", app.addr);
    for (path, client) in paths.both() {
        let port = local_port(client);
        let out = blocking(move || {
            curl(&[
                "-sS",
                "-i",
                "--http2-prior-knowledge",
                &format!("http://{port}/old"),
            ])
        })
        .await;
        assert!(
            out.stdout.starts_with("HTTP/2 200") && out.stdout.contains("h1-only GET /old HTTP/1.1"),
            "{path}: the app declared HTTP/1.1 must be spoken to in HTTP/1.1: {}{}\n{}",
            out.stdout,
            out.stderr,
            client.logs()
        );
    }
}

// === 3. HTTP/1.1 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keepalive_chunked_upload_streaming_and_large_bodies() {
    let app = HttpEcho::start("h1-app").await.expect("app");
    let paths = Paths::new(9080, "http", "http", app.addr());
    let dir = tempdir::Dir::new("weft-h1");
    let upload = dir.path.join("upload");
    std::fs::write(&upload, pattern(1 << 20)).expect("upload");
    for (path, client) in paths.both() {
        let port = local_port(client);

        // Keep-alive: two URLs on one command line, one TCP connection.
        let out = blocking(move || {
            curl(&[
                "-sS",
                &format!("http://{port}/a"),
                &format!("http://{port}/b"),
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{num_connects}\n",
            ])
        })
        .await;
        assert_eq!(out.stdout, "200 1\n200 0\n", "{path}: {}", out.stderr);

        // A 1 MB chunked upload comes back byte for byte.
        let (up, echoed) = (upload.clone(), dir.path.join(format!("echoed-{path}")));
        let echoed2 = echoed.clone();
        let out = blocking(move || {
            curl(&[
                "-sS",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", up.display()),
                "-o",
                echoed2.to_str().expect("path"),
                "-w",
                "%{http_code}",
                &format!("http://{port}/echo"),
            ])
        })
        .await;
        assert_eq!(out.stdout, "200", "{path}: {}", out.stderr);
        assert!(
            std::fs::read(&echoed).expect("echoed") == pattern(1 << 20),
            "{path}: echoed body differs"
        );

        // A large response arrives whole.
        let big = dir.path.join(format!("big-{path}"));
        let big2 = big.clone();
        let out = blocking(move || {
            curl(&[
                "-sS",
                "-o",
                big2.to_str().expect("path"),
                "-w",
                "%{http_code} %{size_download}",
                &format!("http://{port}/bytes/5000000"),
            ])
        })
        .await;
        assert_eq!(out.stdout, "200 5000000", "{path}: {}", out.stderr);
        let got = std::fs::read(&big).expect("big");
        assert!(got.len() == 5_000_000 && got.iter().all(|&b| b == b'x'), "{path}");

        // A streamed response is relayed chunk by chunk, not buffered whole.
        stream_arrives_in_pieces(path, port).await;
    }
}

/// Reads `/stream/20` (20 chunks, 10 ms apart) over a raw HTTP/1.1 connection and checks that
/// the first chunk arrives well before the last.
async fn stream_arrives_in_pieces(path: &str, port: SocketAddr) {
    let work = async {
        let mut s = TcpStream::connect(port).await.expect("connect");
        s.write_all(b"GET /stream/20 HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut first = None;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if first.is_none() && text.contains("chunk 0") {
                first = Some(Instant::now());
            }
            if text.contains("chunk 19\n") {
                break;
            }
        }
        (got, first)
    };
    let (got, first) = tokio::time::timeout(STEP, work).await.expect("stream timed out");
    let last = Instant::now();
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{path}: {text}");
    assert!(text.contains("transfer-encoding: chunked"), "{path}: {text}");
    assert!(text.contains("chunk 19\n"), "{path}: {text}");
    let spread = last - first.expect("first chunk");
    assert!(
        spread >= Duration::from_millis(100),
        "{path}: all chunks arrived within {spread:?}: the response was buffered"
    );
}

// === 4. WebSocket ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_travels_the_mesh_and_echoes() {
    let server = PeerServer::start("ws_peer.py");
    let paths = Paths::new(9090, "http", "http", server.addr);
    for (path, client) in paths.both() {
        let url = format!("ws://{}/chat", local_port(client));
        let out = blocking(move || peer_client("ws_peer.py", &[&url])).await;
        assert!(
            out.status.success(),
            "{path}: {}{}\nclient log:\n{}",
            out.stdout,
            out.stderr,
            client.logs()
        );
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("peer JSON");
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(4), "{v}");
        assert_eq!(v["close_code"], 1000, "{v}");
    }
    // Through the outbound port, routed by Host like an HTTP proxy request.
    let outbound = paths.mesh.bound.outbound.expect("outbound").to_string();
    let out =
        blocking(move || peer_client("ws_peer.py", &["ws://backend:9090/chat", "--connect", &outbound]))
            .await;
    assert!(
        out.status.success(),
        "outbound port: {}{}",
        out.stdout,
        out.stderr
    );
    // The upgraded connection crossed the mesh as a CONNECT tunnel that the server sidecar read
    // as HTTP: each upgrade request was authorized and counted as a request answered 101
    // (as Envoy reports a WebSocket), then joined to the app byte for byte.
    eventually_metrics(&paths.server, "server sidecar", |m| {
        let upgraded = [("reporter", "destination"), ("response_code", "101")];
        metric_sum(m, "istio_requests_total", &upgraded) >= 2.0
    })
    .await;
}

// === 5. raw TCP ===

/// Connects to `addr`, sends `data`, half-closes and reads everything back.
async fn echo_round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(data).await.expect("write");
        s.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        got
    };
    tokio::time::timeout(STEP, work).await.expect("echo timed out")
}

async fn assert_tcp_metered(p: &Proxy, what: &str, connections: f64, sent: f64, received: f64) {
    let src = [("reporter", "source"), ("destination_service_name", "backend")];
    eventually_metrics(p, what, |m| {
        metric_sum(m, "istio_tcp_connections_closed_total", &src) >= connections
    })
    .await;
    let m = p.metrics();
    assert_eq!(
        metric_sum(&m, "istio_tcp_connections_opened_total", &src),
        connections,
        "{what}\n{m}"
    );
    assert_eq!(
        metric_sum(&m, "istio_tcp_sent_bytes_total", &src),
        sent,
        "{what}\n{m}"
    );
    assert_eq!(
        metric_sum(&m, "istio_tcp_received_bytes_total", &src),
        received,
        "{what}\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_port_echoes_with_half_close() {
    let app = TcpEcho::start().await.expect("echo");
    let paths = Paths::new(9000, "tcp", "tcp", app.addr());
    let data = pattern(300_000);
    for (path, client) in paths.both() {
        let got = echo_round_trip(local_port(client), &data).await;
        assert!(got == data, "{path}: echo differs ({} bytes back)", got.len());
        let n = data.len() as f64;
        assert_tcp_metered(client, path, 1.0, n, n).await;
    }
    // The mesh connection crossed the server sidecar as one CONNECT tunnel, bytes intact.
    let n = data.len() as f64;
    // Plaintext between proxies proves nothing: the server does not believe the claimed source.
    let dst = [("reporter", "destination"), ("source_workload", "unknown")];
    eventually_metrics(&paths.server, "server sidecar", |m| {
        metric_sum(m, "istio_tcp_connections_closed_total", &dst) == 1.0
            && metric_sum(m, "istio_tcp_received_bytes_total", &dst) == n
            && metric_sum(m, "istio_tcp_sent_bytes_total", &dst) == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_port_relays_non_http_bytes_as_opaque() {
    let app = TcpEcho::start().await.expect("echo");
    let paths = Paths::new(9001, "auto", "auto", app.addr());
    let mut data = b"\x00\x01\x02 not http at all\r\n".to_vec();
    data.extend(pattern(50_000));
    for (path, client) in paths.both() {
        let got = echo_round_trip(local_port(client), &data).await;
        assert!(got == data, "{path}: echo differs ({} bytes back)", got.len());
        let n = data.len() as f64;
        assert_tcp_metered(client, path, 1.0, n, n).await;
    }
}

/// Connects, waits for the banner without sending anything, then echoes a line.
async fn server_first_round_trip(addr: SocketAddr, banner: &[u8]) -> Duration {
    let work = async {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut got = vec![0u8; banner.len()];
        s.read_exact(&mut got).await.expect("banner");
        let waited = start.elapsed();
        assert_eq!(got, banner);
        s.write_all(b"ping").await.expect("write");
        s.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"ping");
        waited
    };
    tokio::time::timeout(STEP, work)
        .await
        .expect("server-first timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_on_a_well_known_port_skips_detection() {
    const BANNER: &[u8] = b"5.7.0-weft-mysql ready\n";
    let app = ServerFirst::start("5.7.0-weft-mysql ready\n").await.expect("app");
    // The service port is MySQL's: the banner must not wait for the detect timeout (1 s).
    let paths = Paths::new(3306, "auto", "auto", app.addr());
    for (path, client) in paths.both() {
        let waited = server_first_round_trip(local_port(client), BANNER).await;
        assert!(
            waited < Duration::from_millis(500),
            "{path}: banner took {waited:?}"
        );
        let banner = BANNER.len() as f64;
        assert_tcp_metered(client, path, 1.0, banner + 4.0, 4.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_on_an_auto_port_falls_back_to_tcp_after_detect_timeout() {
    const BANNER: &[u8] = b"220 weft smtp ready\r\n";
    let app = ServerFirst::start("220 weft smtp ready\r\n").await.expect("app");
    let server = server_sidecar(&[(app.addr(), "auto")]);
    let limits = "{detectTimeoutMs: 200}";
    let mesh = client_sidecar(9002, "auto", app.addr(), Some(server.bound.mesh), limits);
    let direct = client_sidecar(9002, "auto", app.addr(), None, limits);
    for (path, client) in [("mesh", &mesh), ("direct", &direct)] {
        let waited = server_first_round_trip(local_port(client), BANNER).await;
        assert!(
            waited >= Duration::from_millis(180) && waited < Duration::from_secs(2),
            "{path}: banner took {waited:?}, want just after the 200 ms detect timeout"
        );
        let banner = BANNER.len() as f64;
        assert_tcp_metered(client, path, 1.0, banner + 4.0, 4.0).await;
    }
}

// === helpers ===

/// `n` bytes of a pattern that is not all one byte, so misordered or dropped data shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(3000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
