//! End to end through real `weft proxy` processes: a client sidecar and a server sidecar, real
//! curl, real backends.

mod common;

use std::net::SocketAddr;

use common::{curl, metric_sum, Proxy};
use weft_test_support::{HttpEcho, TcpRelay};

/// A server sidecar fronting `app` on the mesh port.
fn server_sidecar(name: &str, version: &str, app: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"
workload: {{name: {name}, labels: {{app: reviews, version: {version}}}}}
admin: {{address: "127.0.0.1:0"}}
inbound:
  mesh: "127.0.0.1:0"
  listeners: [{{port: {port}, app: "{app}", protocol: http}}]
outbound: {{listen: null}}
"#,
        port = app.port()
    ))
}

/// A client sidecar whose `reviews` endpoints are behind the given server sidecars.
fn client_sidecar(lb: &str, endpoints: &[(SocketAddr, Option<SocketAddr>, &str, u32)]) -> Proxy {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(app, mesh, version, weight)| {
            let mesh = mesh.map_or("null".to_string(), |m| m.port().to_string());
            format!(
                r#"      - {{address: "{app}", meshPort: {mesh}, weight: {weight}, workload: reviews-{version}, labels: {{app: reviews, version: {version}}}}}"#
            )
        })
        .collect();
    Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: "127.0.0.1:0"
  ports: [{{listen: "127.0.0.1:0", service: reviews, port: 9080}}]
services:
  - name: reviews
    ports: [{{port: 9080, protocol: http}}]
    loadBalancer: {lb}
endpoints:
  - service: reviews
    port: 9080
    endpoints:
{eps}
"#,
        eps = eps.join("\n")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_two_proxies_reaches_both_versions_and_is_metered() {
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let v2 = HttpEcho::start("reviews-v2").await.expect("v2");
    let s1 = server_sidecar("reviews-v1", "v1", v1.addr());
    let s2 = server_sidecar("reviews-v2", "v2", v2.addr());
    // Counting relays in front of the server sidecars' mesh ports: each accepted connection is
    // one the client sidecar opened.
    let (relay1, relay2) = (
        TcpRelay::start(s1.bound.mesh).await.expect("relay to s1"),
        TcpRelay::start(s2.bound.mesh).await.expect("relay to s2"),
    );
    let client = client_sidecar(
        "ROUND_ROBIN",
        &[
            (v1.addr(), Some(relay1.addr()), "v1", 1),
            (v2.addr(), Some(relay2.addr()), "v2", 1),
        ],
    );
    let port = client.bound.outbound_ports[0];
    let mut seen = Vec::new();
    for _ in 0..4 {
        let out = curl(&["-sS", "-i", &format!("http://{port}/reviews/1")]);
        assert!(out.status.success(), "{}", out.stderr);
        assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
        // The app sees HTTP/1.1 again after the HTTP/2 hop, with the mesh headers gone.
        assert!(out.stdout.contains("x-echo-protocol: HTTP/1.1"), "{}", out.stdout);
        assert!(
            !out.stdout.contains("x-weft-"),
            "mesh headers leaked to the app: {}",
            out.stdout
        );
        let server = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("x-echo-server: "))
            .expect("server header");
        seen.push(server.trim().to_string());
    }
    assert_eq!(seen, ["reviews-v1", "reviews-v2", "reviews-v1", "reviews-v2"]);

    let m = client.metrics();
    let ok = [
        ("reporter", "source"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("response_code", "200"),
    ];
    assert_eq!(metric_sum(&m, "istio_requests_total", &ok), 4.0, "{m}");
    assert_eq!(
        metric_sum(&m, "istio_requests_total", &[("destination_version", "v1")]),
        2.0
    );
    let m1 = s1.metrics();
    let dest = [
        ("reporter", "destination"),
        // Plaintext between proxies proves nothing: the claimed source is not believed.
        ("source_workload", "unknown"),
        ("destination_workload", "reviews-v1"),
    ];
    assert_eq!(metric_sum(&m1, "istio_requests_total", &dest), 2.0, "{m1}");
    assert!(
        metric_sum(&m1, "istio_request_duration_milliseconds_count", &dest) == 2.0,
        "{m1}"
    );
    // One pooled HTTP/2 connection per endpoint carried all four requests (four curls, so
    // four client connections to the client sidecar).
    assert_eq!(v1.requests() + v2.requests(), 4);
    assert_eq!((relay1.connections(), relay2.connections()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_port_routes_by_host() {
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let s1 = server_sidecar("reviews-v1", "v1", v1.addr());
    let client = client_sidecar("LEAST_REQUEST", &[(v1.addr(), Some(s1.bound.mesh), "v1", 1)]);
    let proxy = format!("http://{}", client.bound.outbound.expect("outbound"));
    for host in ["reviews", "reviews.default", "reviews.default.svc.cluster.local"] {
        let out = curl(&["-sS", "-x", &proxy, &format!("http://{host}:9080/p?q=1")]);
        assert!(
            out.stdout.starts_with("reviews-v1 GET /p?q=1"),
            "{host}: {}",
            out.stdout
        );
    }
    // http_proxy as a user would set it (curl reads the lower-case one).
    let out = common::run(
        "env",
        &[
            &format!("http_proxy={proxy}"),
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://reviews:9080/env",
        ],
    );
    assert!(out.stdout.starts_with("reviews-v1 GET /env"), "{}", out.stdout);
    // A port the service does not have: no route.
    let out = curl(&["-sS", "-i", "-x", &proxy, "http://reviews:1234/"]);
    assert!(out.stdout.starts_with("HTTP/1.1 404"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-response-flags: NR"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoint_fails_over_and_no_endpoint_is_uh() {
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    // An address nothing listens on: connections are refused.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let client = client_sidecar(
        "ROUND_ROBIN",
        &[(dead, None, "v0", 1), (v1.addr(), None, "v1", 1)],
    );
    let port = client.bound.outbound_ports[0];
    for _ in 0..6 {
        let out = curl(&["-sS", "-i", &format!("http://{port}/")]);
        assert!(
            out.stdout.starts_with("HTTP/1.1 200"),
            "failover did not happen: {}",
            out.stdout
        );
    }
    assert!(
        client.logs().contains("endpoint failed, trying another"),
        "{}",
        client.logs()
    );

    let only_dead = client_sidecar("ROUND_ROBIN", &[(dead, None, "v0", 1)]);
    let out = curl(&[
        "-sS",
        "-i",
        &format!("http://{}/", only_dead.bound.outbound_ports[0]),
    ]);
    assert!(out.stdout.starts_with("HTTP/1.1 503"), "{}", out.stdout);
    assert!(out.stdout.contains("x-weft-response-flags: UF"), "{}", out.stdout);
    let m = only_dead.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[("response_flags", "UF"), ("response_code", "503")]
        ),
        1.0,
        "{m}"
    );
}
