//! Access logs end to end on loopback: two in-process proxies with mTLS from a test CA, real
//! apps behind them, each proxy logging to files the test reads back and checks field by field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_api::proxy_config::ProxyConfig;
use weft_test_support::{HttpEcho, TcpEcho};

use super::*;
use crate::app::{self, Options, Running};
use crate::tls::testing::{TestCa, PRODUCTPAGE, REVIEWS};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const REVIEWS_FQDN: &str = "reviews.default.svc.cluster.local";

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weft-access-log-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// reviews: an HTTP app and a TCP app; `/admin*` is denied to everyone. Logs JSON to `log`.
fn server_config(http_app: SocketAddr, tcp_app: SocketAddr, log: &Path) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1", "serviceAccount": "reviews", "labels": {"app": "reviews"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "listeners": [
                {"port": http_app.port(), "app": http_app.to_string(), "protocol": "http"},
                {"port": tcp_app.port(), "app": tcp_app.to_string(), "protocol": "tcp"},
            ],
            "authorization": [{
                "name": "deny-admin",
                "action": "DENY",
                // On the HTTP port only: for TCP, Istio ignores a DENY rule's paths and denies.
                "rules": [{"to": [{"paths": ["/admin*"], "ports": [http_app.port().to_string()]}]}],
            }],
        },
        "outbound": {"listen": null},
        "telemetry": {"accessLogs": [{"format": "json", "path": log}]},
    }))
    .expect("server config")
}

/// productpage: reviews (retries on `/status`), a service without endpoints, and a TCP one.
fn client_config(
    http_app: SocketAddr,
    tcp_app: SocketAddr,
    mesh: SocketAddr,
    telemetry: serde_json::Value,
) -> ProxyConfig {
    let endpoint = |app: SocketAddr| {
        serde_json::json!({
            "address": app.to_string(),
            "meshPort": mesh.port(),
            "workload": "reviews-v1",
            "identity": REVIEWS,
        })
    };
    let origin = serde_json::json!({"kind": "VirtualService", "namespace": "default", "name": "reviews"});
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "productpage-v1", "serviceAccount": "productpage", "labels": {"app": "productpage"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {"mesh": "127.0.0.1:0"},
        "outbound": {
            "listen": null,
            "ports": [
                {"listen": "127.0.0.1:0", "service": "reviews", "port": 9080},
                {"listen": "127.0.0.1:0", "service": "ghost", "port": 9080},
                {"listen": "127.0.0.1:0", "service": "db", "port": 7000},
            ],
        },
        "services": [
            {"name": "reviews", "ports": [{"port": 9080, "protocol": "http"}], "routes": [{
                "port": 9080,
                "table": {"rules": [
                    {
                        "origin": origin, "index": 0,
                        "matches": [{"path": {"prefix": {"value": "/status"}}}],
                        "action": {"forward": [{"service": REVIEWS_FQDN, "weight": 1}]},
                        "policies": {"retries": {"attempts": 2, "retry_on": ["5xx"]}},
                    },
                    {
                        "origin": origin, "index": 1,
                        "action": {"forward": [{"service": REVIEWS_FQDN, "weight": 1}]},
                    },
                ]},
            }]},
            {"name": "ghost", "ports": [{"port": 9080, "protocol": "http"}]},
            {"name": "db", "ports": [{"port": 7000, "protocol": "tcp"}]},
        ],
        "endpoints": [
            {"service": "reviews", "port": 9080, "endpoints": [endpoint(http_app)]},
            {"service": "db", "port": 7000, "endpoints": [endpoint(tcp_app)]},
        ],
        "telemetry": telemetry,
    }))
    .expect("client config")
}

async fn start(config: ProxyConfig, ca: &TestCa, id: &str) -> Running {
    let options = Options {
        credentials: Some(ca.cell(id)),
        ..Options::default()
    };
    app::start(config, options).await.expect("proxy starts")
}

/// A GET on a fresh HTTP/1.1 connection, with a user agent, request id and trace context.
async fn get(addr: SocketAddr, path: &str) -> StatusCode {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "reviews:9080")
        .header("user-agent", "weft-test")
        .header("x-request-id", format!("req{path}"))
        .header("traceparent", TRACEPARENT)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    resp.into_body().collect().await.expect("body");
    status
}

/// The file's lines once it has at least `n` (polled to a deadline).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {} lines, wanted {n}:\n{text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn json_lines(path: &Path, n: usize) -> Vec<Value> {
    lines(path, n)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Splits a text line on spaces outside quotes and brackets: `[t] "GET / HTTP/1.1" 200 ...`.
fn text_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut open: Option<char> = None;
    for c in line.chars() {
        match (open, c) {
            (None, '"') => open = Some('"'),
            (None, '[') => open = Some(']'),
            (Some(end), c) if c == end => open = None,
            (None, ' ') => fields.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_and_connection_is_logged_field_by_field() {
    let dir = temp_dir();
    let (client_json, client_text, server_json) = (
        dir.join("client.json"),
        dir.join("client.log"),
        dir.join("server.json"),
    );
    let ca = TestCa::new("test root");
    let http_app = HttpEcho::start("reviews-v1").await.expect("http app");
    let tcp_app = TcpEcho::start().await.expect("tcp app");
    let server = start(
        server_config(http_app.addr(), tcp_app.addr(), &server_json),
        &ca,
        REVIEWS,
    )
    .await;
    let telemetry = serde_json::json!({"accessLogs": [
        {"format": "json", "path": client_json, "mode": "CLIENT"},
        {"format": "text", "path": client_text, "mode": "CLIENT"},
    ]});
    let client_cfg = client_config(http_app.addr(), tcp_app.addr(), server.bound.mesh, telemetry);
    let client = start(client_cfg.clone(), &ca, PRODUCTPAGE).await;
    let [reviews, ghost, db] = client.bound.outbound_ports[..] else {
        panic!("three outbound ports")
    };

    // A success: both sides log it, with the peer's identity, the endpoint and the trace.
    assert_eq!(get(reviews, "/reviews/1").await, StatusCode::OK);
    let c = &json_lines(&client_json, 1).await[0];
    assert_eq!(c["method"], "GET");
    assert_eq!(c["path"], "/reviews/1");
    assert_eq!(c["protocol"], "HTTP/1.1");
    assert_eq!(c["response_code"], 200);
    assert_eq!(c["response_flags"], "-");
    assert_eq!(c["response_code_details"], "via_upstream");
    assert_eq!(c["upstream_host"], http_app.addr().to_string());
    assert_eq!(c["upstream_cluster"], format!("outbound|9080||{REVIEWS_FQDN}"));
    assert_eq!(c["authority"], "reviews:9080");
    assert_eq!(c["user_agent"], "weft-test");
    assert_eq!(c["request_id"], "req/reviews/1");
    assert_eq!(c["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(c["retry_count"], 0);
    assert_eq!(c["reporter"], "source");
    assert_eq!(c["source_workload"], "productpage-v1");
    assert_eq!(c["destination_workload"], "reviews-v1");
    assert_eq!(c["destination_principal"], REVIEWS);
    assert_eq!(c["destination_service"], REVIEWS_FQDN);
    assert_eq!(c["connection_security_policy"], "mutual_tls");
    assert!(c["bytes_sent"].as_u64().is_some_and(|b| b > 0), "{c}");
    let s = &json_lines(&server_json, 1).await[0];
    assert_eq!(s["reporter"], "destination");
    assert_eq!(s["response_code"], 200);
    assert_eq!(s["source_principal"], PRODUCTPAGE);
    assert_eq!(s["source_workload"], "productpage-v1");
    assert_eq!(s["destination_workload"], "reviews-v1");
    assert_eq!(s["upstream_host"], http_app.addr().to_string());
    assert_eq!(
        s["upstream_cluster"],
        format!("inbound|{}||", http_app.addr().port())
    );
    assert_eq!(s["request_id"], "req/reviews/1");
    // The text line: Istio's default format, field by field.
    let t = text_fields(&lines(&client_text, 1).await[0]);
    assert_eq!(t.len(), 22, "{t:?}");
    assert!(t[0].ends_with('Z') && t[0].contains('T'), "{t:?}");
    assert_eq!(t[1], "GET /reviews/1 HTTP/1.1");
    assert_eq!(&t[2..5], ["200", "-", "via_upstream"]);
    assert_eq!(t[7], "0");
    assert!(t[8].parse::<u64>().is_ok_and(|b| b > 0), "{t:?}");
    assert!(t[9].parse::<u64>().is_ok(), "{t:?}");
    assert_eq!(&t[11..15], ["-", "weft-test", "req/reviews/1", "reviews:9080"]);
    assert_eq!(t[15], http_app.addr().to_string());
    assert_eq!(t[16], format!("outbound|9080||{REVIEWS_FQDN}"));

    // No endpoints: 503 UH from the client proxy, never reaching the server.
    assert_eq!(get(ghost, "/x").await, StatusCode::SERVICE_UNAVAILABLE);
    let c = &json_lines(&client_json, 2).await[1];
    assert_eq!(
        (
            &c["response_code"],
            &c["response_flags"],
            &c["response_code_details"]
        ),
        (
            &Value::from(503),
            &Value::from("UH"),
            &Value::from("no_healthy_upstream")
        )
    );
    assert_eq!(c["upstream_host"], Value::Null);
    let t = text_fields(&lines(&client_text, 2).await[1]);
    assert_eq!(&t[1..5], ["GET /x HTTP/1.1", "503", "UH", "no_healthy_upstream"]);

    // Denied by the server's policy: 403 RBAC on the server's line.
    assert_eq!(get(reviews, "/admin/users").await, StatusCode::FORBIDDEN);
    let s = &json_lines(&server_json, 2).await[1];
    assert_eq!(
        (&s["path"], &s["response_code"], &s["response_flags"]),
        (
            &Value::from("/admin/users"),
            &Value::from(403),
            &Value::from("RBAC")
        )
    );
    assert_eq!(s["upstream_host"], Value::Null);
    assert_eq!(json_lines(&client_json, 3).await[2]["response_code"], 403);

    // Retried: one line on the client with the retries counted, three on the server.
    assert_eq!(get(reviews, "/status/503").await, StatusCode::SERVICE_UNAVAILABLE);
    let c = &json_lines(&client_json, 4).await[3];
    assert_eq!(
        (&c["path"], &c["response_code"], &c["retry_count"]),
        (&Value::from("/status/503"), &Value::from(503), &Value::from(2))
    );
    let s = json_lines(&server_json, 5).await;
    assert!(s[2..5].iter().all(|l| l["path"] == "/status/503"), "{s:?}");

    // A TCP connection: one line per side when it closes, with its bytes.
    let mut conn = TcpStream::connect(db).await.expect("connect");
    conn.write_all(b"hello").await.expect("write");
    let mut echoed = [0u8; 5];
    conn.read_exact(&mut echoed).await.expect("echo");
    drop(conn);
    let c = &json_lines(&client_json, 5).await[4];
    assert_eq!(c["method"], Value::Null);
    assert_eq!(
        (&c["response_code"], &c["bytes_received"], &c["bytes_sent"]),
        (&Value::from(0), &Value::from(5), &Value::from(5))
    );
    assert_eq!(c["upstream_host"], tcp_app.addr().to_string());
    assert_eq!(
        c["upstream_cluster"],
        "outbound|7000||db.default.svc.cluster.local"
    );
    let t = text_fields(&lines(&client_text, 5).await[4]);
    assert_eq!(&t[1..4], ["- - -", "0", "-"]);
    assert_eq!(&t[7..9], ["5", "5"]);
    let s = &json_lines(&server_json, 6).await[5];
    assert_eq!(
        (&s["response_code"], &s["bytes_received"], &s["bytes_sent"]),
        (&Value::from(0), &Value::from(5), &Value::from(5))
    );
    assert_eq!(s["upstream_host"], tcp_app.addr().to_string());
    assert_eq!(s["source_principal"], PRODUCTPAGE);

    // A Telemetry change applied live: from now on only errors are logged on the client.
    let mut filtered = client_cfg;
    filtered.telemetry = serde_json::from_value(serde_json::json!({"accessLogs": [
        {"format": "json", "path": client_json, "mode": "CLIENT", "filter": "response.code >= 400"},
    ]}))
    .expect("telemetry");
    client.shared.apply(filtered);
    assert_eq!(get(reviews, "/reviews/2").await, StatusCode::OK);
    assert_eq!(get(ghost, "/y").await, StatusCode::SERVICE_UNAVAILABLE);
    // Lines are written in order: had the 200 been logged, it would come before the 503.
    let c = json_lines(&client_json, 6).await;
    assert_eq!(c[5]["path"], "/y", "{:?}", c[5]);
    // The text sink is gone with the change.
    assert_eq!(lines(&client_text, 5).await.len(), 5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_full_queue_drops_and_counts_rather_than_waits() {
    let (tx, _rx) = sync_channel(1);
    let dropped = Counter::default();
    let plan = Arc::new(Plan {
        client: vec![Arc::new(Sink {
            format: AccessLogFormat::Text,
            path: None,
            filter: None,
        })],
        server: Vec::new(),
        queue: Some(Arc::new(Queue {
            tx,
            dropped: dropped.clone(),
        })),
    });
    let req = Request::get("/").body(()).expect("request");
    let pending = Pending::request(&plan, true, &req).expect("the client side logs");
    assert!(
        Pending::request(&plan, false, &req).is_none(),
        "the server side does not"
    );
    let peer = Peer::unknown();
    let label = Label::unknown();
    let out = Outcome {
        code: 200,
        flags: "-",
        grpc_status: None,
        bytes_received: 0,
        bytes_sent: 0,
        duration_ms: 1,
        reporter: "source",
        source: &peer,
        destination: &peer,
        service: &label,
        route: None,
        mtls: false,
    };
    // Nobody drains the queue: the first line fills it, the next two are dropped at once.
    for _ in 0..3 {
        pending.finish(&out, false);
    }
    assert_eq!(dropped.get(), 2);
}
