//! `CONNECT` on the outbound HTTP-proxy port (`http_proxy=http://127.0.0.1:15001`), against
//! real proxies: a tunnel to a mesh service crosses the server sidecar, a tunnel to an address
//! outside the mesh passes through (flag `PT`), a port the service does not have is refused.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{metric_sum, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_test_support::TcpEcho;

/// A server sidecar fronting the TCP app `app` on the mesh port.
fn server_sidecar(app: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"
workload: {{name: db-v1, labels: {{app: db, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
inbound:
  mesh: "127.0.0.1:0"
  listeners: [{{port: {port}, app: "{app}", protocol: tcp}}]
outbound: {{listen: null}}
"#,
        port = app.port()
    ))
}

/// A client sidecar with the HTTP-proxy port, knowing service `db:5432` behind `server`.
fn client_sidecar(app: SocketAddr, server: &Proxy) -> Proxy {
    Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound: {{listen: "127.0.0.1:0"}}
services:
  - name: db
    ports: [{{port: 5432, protocol: tcp}}]
endpoints:
  - service: db
    port: 5432
    endpoints: [{{address: "{app}", meshPort: {mesh}, workload: db-v1, labels: {{app: db, version: v1}}}}]
"#,
        mesh = server.bound.mesh.port()
    ))
}

/// Sends `CONNECT target` to the proxy at `proxy`: the response head, and the stream (a tunnel
/// when the head says 200).
async fn connect(proxy: SocketAddr, target: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.expect("connect to the proxy");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be consumed, it belongs to the tunnel.
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("a response in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "closed before the head ended: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), s)
}

/// Writes `msg`, ends our side, reads everything back: an echo through the tunnel.
async fn echo_through(mut tunnel: TcpStream, msg: &[u8]) -> Vec<u8> {
    tunnel.write_all(msg).await.expect("write through the tunnel");
    tunnel.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_to_end(&mut back))
        .await
        .expect("echo in time")
        .expect("read the echo");
    back
}

/// Polls `p`'s metrics until `name` with `labels` sums to `want` (TCP relays record when they
/// close).
async fn until_metric(p: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let admin = p.bound.admin;
        let m = tokio::task::spawn_blocking(move || {
            common::exposition(
                "metrics",
                common::curl(&["-sS", "-f", &format!("http://{admin}/metrics")]),
            )
        })
        .await
        .expect("metrics");
        let got = metric_sum(&m, name, labels);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {labels:?} is {got}, not {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_to_a_mesh_service_pass_outside_ones_through_and_refuse_unknown_ports() {
    let db = TcpEcho::start().await.expect("db");
    let outside = TcpEcho::start().await.expect("outside");
    let server = server_sidecar(db.addr());
    let client = client_sidecar(db.addr(), &server);
    let proxy = client.bound.outbound.expect("the HTTP-proxy port");

    // A mesh service by name: 200, then bytes both ways through both sidecars.
    let (head, tunnel) = connect(proxy, "db:5432").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echo_through(tunnel, b"ping\n").await, b"ping\n");
    assert_eq!(db.connections(), 1);
    until_metric(
        &client,
        "istio_tcp_connections_closed_total",
        &[
            ("reporter", "source"),
            ("destination_service", "db.default.svc.cluster.local"),
        ],
        1.0,
    )
    .await;
    // It crossed the server sidecar (its mesh port), not straight to the app.
    until_metric(
        &server,
        "istio_tcp_connections_closed_total",
        &[("reporter", "destination"), ("destination_workload", "db-v1")],
        1.0,
    )
    .await;

    // An address outside the mesh passes through, counted with flag PT.
    let (head, tunnel) = connect(proxy, &outside.addr().to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echo_through(tunnel, b"hello\n").await, b"hello\n");
    assert_eq!(outside.connections(), 1);
    until_metric(
        &client,
        "istio_tcp_connections_closed_total",
        &[("reporter", "source"), ("response_flags", "PT")],
        1.0,
    )
    .await;

    // A port the service does not have: refused by the proxy with flag NR, nothing opened.
    let (head, _) = connect(proxy, "db:1234").await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 404"), "{head}");
    assert!(lower.contains("\r\nx-weft-response-flags: nr\r\n"), "{head}");
    assert_eq!((db.connections(), outside.connections()), (1, 1));
}
