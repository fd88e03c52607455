//! Trace context parsing, and traces end to end on loopback: two in-process proxies with mTLS,
//! a real app that echoes the headers it got, and a real OTLP/gRPC collector.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_test_support::{CollectedSpan, HttpEcho, OtlpCollector};

use super::*;
use crate::app::{self, Options, Running};
use crate::tls::testing::{TestCa, PRODUCTPAGE, REVIEWS};

const REVIEWS_FQDN: &str = "reviews.default.svc.cluster.local";

#[test]
fn w3c_and_b3_contexts_are_read_and_bad_ones_ignored() {
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let c = extract(&h).expect("w3c");
    assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(c.span_id, 0x00f067aa0ba902b7);
    assert_eq!((c.sampled, c.b3), (Some(true), false));
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-xyz",
    ] {
        h.insert("traceparent", HeaderValue::from_static(bad));
        assert_eq!(extract(&h), None, "{bad}");
    }
    let mut h = HeaderMap::new();
    h.insert(
        "b3",
        HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90"),
    );
    let c = extract(&h).expect("b3 single");
    assert_eq!(c.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    assert_eq!(
        (c.span_id, c.sampled, c.b3),
        (0xe457b5a2e4d86bd1, Some(false), true)
    );
    let mut h = HeaderMap::new();
    h.insert("x-b3-traceid", HeaderValue::from_static("463ac35c9f6413ad"));
    h.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
    h.insert("x-b3-flags", HeaderValue::from_static("1"));
    let c = extract(&h).expect("b3 multi, 64-bit trace id");
    assert_eq!((c.trace_id, c.sampled), (0x463ac35c9f6413ad, Some(true)));
}

#[test]
fn b3_in_leaves_as_w3c_and_b3_with_this_hop_as_the_span() {
    let mut h = HeaderMap::new();
    h.insert("b3", HeaderValue::from_static("1"));
    inject(&mut h, 0xabc, 0x12, Some(0x34), true, true);
    assert_eq!(
        h["traceparent"],
        "00-00000000000000000000000000000abc-0000000000000012-01"
    );
    assert_eq!(h["x-b3-traceid"], "00000000000000000000000000000abc");
    assert_eq!(h["x-b3-spanid"], "0000000000000012");
    assert_eq!(h["x-b3-parentspanid"], "0000000000000034");
    assert_eq!(h["x-b3-sampled"], "1");
    assert!(!h.contains_key("b3"));
    let id = request_id();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.as_bytes()[14], b'4', "{id}");
}

fn tracing_telemetry(percent: f64, collector: &OtlpCollector) -> serde_json::Value {
    serde_json::json!({"tracing": {"randomSamplingPercentage": percent, "collector": collector.endpoint()}})
}

fn server_config(app: SocketAddr, telemetry: serde_json::Value) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "reviews-v1", "serviceAccount": "reviews", "labels": {"app": "reviews"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {
            "mesh": "127.0.0.1:0",
            "listeners": [{"port": app.port(), "app": app.to_string(), "protocol": "http"}],
        },
        "outbound": {"listen": null},
        "telemetry": telemetry,
    }))
    .expect("server config")
}

fn client_config(app: SocketAddr, mesh: SocketAddr, telemetry: serde_json::Value) -> ProxyConfig {
    let origin = serde_json::json!({"kind": "VirtualService", "namespace": "default", "name": "reviews"});
    serde_json::from_value(serde_json::json!({
        "workload": {"name": "productpage-v1", "serviceAccount": "productpage", "labels": {"app": "productpage"}},
        "admin": {"address": "127.0.0.1:0"},
        "inbound": {"mesh": "127.0.0.1:0"},
        "outbound": {
            "listen": null,
            "ports": [{"listen": "127.0.0.1:0", "service": "reviews", "port": 9080}],
        },
        "services": [{"name": "reviews", "ports": [{"port": 9080, "protocol": "http"}], "routes": [{
            "port": 9080,
            "table": {"rules": [{
                "origin": origin, "index": 0,
                "action": {"forward": [{"service": REVIEWS_FQDN, "weight": 1}]},
                "policies": {"retries": {"attempts": 2, "retry_on": ["5xx"]}},
            }]},
        }]}],
        "endpoints": [{"service": "reviews", "port": 9080, "endpoints": [{
            "address": app.to_string(),
            "meshPort": mesh.port(),
            "workload": "reviews-v1",
            "identity": REVIEWS,
        }]}],
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

/// A GET with the given headers; the status and the headers the app received (the echo
/// server lists them in its body).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "reviews:9080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let mut seen = HeaderMap::new();
    for line in String::from_utf8_lossy(&body).lines().skip(1) {
        if let Some((k, v)) = line.split_once(": ") {
            if let (Ok(k), Ok(v)) = (
                http::header::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                seen.append(k, v);
            }
        }
    }
    (status, seen)
}

fn traceparent(h: &HeaderMap) -> (String, String, String) {
    let tp = h
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("the app got no traceparent: {h:?}"));
    let parts: Vec<&str> = tp.split('-').collect();
    (parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
}

fn of_trace<'a>(spans: &'a [CollectedSpan], trace: &str) -> Vec<&'a CollectedSpan> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_the_hop_with_istio_names_and_tags() {
    let collector = OtlpCollector::start().await.expect("collector");
    let ca = TestCa::new("test root");
    let app = HttpEcho::start("reviews-v1").await.expect("app");
    let server = start(
        server_config(app.addr(), tracing_telemetry(100.0, &collector)),
        &ca,
        REVIEWS,
    )
    .await;
    let client_cfg = client_config(
        app.addr(),
        server.bound.mesh,
        tracing_telemetry(100.0, &collector),
    );
    let client = start(client_cfg.clone(), &ca, PRODUCTPAGE).await;
    let port = client.bound.outbound_ports[0];

    // No context: the client proxy begins a trace; the server's span is the client's child,
    // and the app's context names the server's span.
    let (status, seen) = get(port, "/reviews/1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (trace, app_parent, flags) = traceparent(&seen);
    assert_eq!(flags, "01");
    assert!(seen.contains_key("x-request-id"), "{seen:?}");
    let spans = collector
        .wait_for(2, Duration::from_secs(10))
        .await
        .expect("two spans");
    let spans = of_trace(&spans, &trace);
    let client_span = spans.iter().find(|s| s.kind == 3).expect("a client span");
    let server_span = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(client_span.parent_span_id, "", "the trace's root");
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert_eq!(server_span.span_id, app_parent);
    assert_eq!(client_span.name, format!("{REVIEWS_FQDN}:9080/*"));
    assert_eq!(client_span.service, "productpage.default");
    assert_eq!(server_span.service, "reviews.default");
    let tags = &client_span.attributes;
    assert_eq!(tags["istio.canonical_service"], "productpage");
    assert_eq!(tags["http.status_code"], "200");
    assert_eq!(tags["http.method"], "GET");
    assert_eq!(tags["upstream_cluster"], format!("outbound|9080||{REVIEWS_FQDN}"));
    assert_eq!(tags["peer.address"], app.addr().to_string());
    assert_eq!(tags["response_flags"], "-");
    assert_eq!(
        tags["guid:x-request-id"],
        seen["x-request-id"].to_str().expect("id")
    );
    assert!(!tags.contains_key("error"), "{tags:?}");
    assert_eq!(server_span.attributes["istio.canonical_service"], "reviews");

    // B3 in, W3C (and B3) out, the same trace continued.
    let (_, seen) = get(
        port,
        "/reviews/2",
        &[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let (trace, _, _) = traceparent(&seen);
    assert_eq!(trace, "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(seen["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    let spans = collector
        .wait_for(4, Duration::from_secs(10))
        .await
        .expect("four spans");
    let spans = of_trace(&spans, &trace);
    let client_span = spans.iter().find(|s| s.kind == 3).expect("client span");
    assert_eq!(client_span.parent_span_id, "e457b5a2e4d86bd1");

    // Retried: one client span, and every attempt's server span is its child.
    let (status, _) = get(port, "/status/503", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let spans = collector
        .wait_for(8, Duration::from_secs(10))
        .await
        .expect("eight spans");
    let retried: Vec<&CollectedSpan> = spans
        .iter()
        .filter(|s| {
            s.attributes
                .get("http.url")
                .is_some_and(|u| u.ends_with("/status/503"))
        })
        .collect();
    let clients: Vec<_> = retried.iter().filter(|s| s.kind == 3).collect();
    let servers: Vec<_> = retried.iter().filter(|s| s.kind == 2).collect();
    assert_eq!((clients.len(), servers.len()), (1, 3), "{retried:#?}");
    assert!(servers
        .iter()
        .all(|s| s.parent_span_id == clients[0].span_id && s.trace_id == clients[0].trace_id));
    assert_eq!(clients[0].attributes["error"], "true");
    assert_eq!(clients[0].attributes["http.status_code"], "503");

    // The caller's "not sampled" is kept even at 100 %: context flows, no span is recorded.
    let (_, seen) = get(
        port,
        "/reviews/3",
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )],
    )
    .await;
    let (trace, _, flags) = traceparent(&seen);
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        ("0af7651916cd43dd8448eb211c80319c", "00")
    );

    // At 0 % no new trace is recorded, but a caller's "sampled" still is.
    let mut zero = client_cfg;
    zero.telemetry = serde_json::from_value(tracing_telemetry(0.0, &collector)).expect("telemetry");
    client.shared.apply(zero);
    let (_, seen) = get(port, "/reviews/4", &[]).await;
    let (unsampled, _, flags) = traceparent(&seen);
    assert_eq!(flags, "00");
    let (_, seen) = get(
        port,
        "/reviews/5",
        &[(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )],
    )
    .await;
    assert_eq!(traceparent(&seen).2, "01");
    let spans = collector
        .wait_for(10, Duration::from_secs(10))
        .await
        .expect("ten spans");
    assert_eq!(of_trace(&spans, "11111111111111111111111111111111").len(), 2);
    // Spans leave each proxy in order: had /reviews/3 or /reviews/4 been recorded, their spans
    // would have arrived before /reviews/5's.
    assert!(of_trace(&spans, "0af7651916cd43dd8448eb211c80319c").is_empty());
    assert!(of_trace(&spans, &unsampled).is_empty());
    assert_eq!(spans.len(), 10, "{spans:#?}");
}

#[tokio::test]
async fn a_full_export_queue_drops_and_counts() {
    let (tx, _rx) = mpsc::channel(1);
    let dropped = Counter::default();
    let plan = Arc::new(Plan {
        sampling: 1.0,
        queue: Some(SpanQueue {
            tx,
            dropped: dropped.clone(),
        }),
        ..Plan::default()
    });
    let peer = super::super::metrics::Peer::unknown();
    let label = super::super::metrics::Label::unknown();
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
    let mut req = Request::get("/").body(()).expect("request");
    let span = ActiveSpan::start(&plan, true, &mut req).expect("sampled at 100 %");
    for _ in 0..3 {
        span.finish(&out);
    }
    assert_eq!(dropped.get(), 2);
}
