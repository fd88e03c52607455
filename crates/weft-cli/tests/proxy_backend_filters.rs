//! A backend's own filters (Gateway API `backendRefs[].filters`) obeyed end to end through a
//! real `weft proxy`: request headers set/added/removed and the path rewritten for that backend
//! only, its response headers changed; the rule's own changes still apply first.

mod common;

use common::{curl, Proxy};
use weft_test_support::HttpEcho;

const ORIGIN: &str = "{kind: HTTPRoute, namespace: default, name: reviews}";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_filters_change_what_that_backend_gets() {
    let v1 = HttpEcho::start("reviews-v1").await.expect("v1");
    let v2 = HttpEcho::start("reviews-v2").await.expect("v2");
    let (a1, a2) = (v1.addr(), v2.addr());
    let filters = "{request_headers: {set: {x-header-set: backend}, add: {x-header-add: backend}, remove: [x-header-remove]}, response_headers: {set: {x-backend: v1}}, rewrite: {prefix: /one}}";
    let proxy = Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1}}
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
          rules:
            - origin: {ORIGIN}
              index: 0
              matches: [{{path: {{prefix: {{value: /filtered}}}}}}]
              action: {{forward: [{{service: {REVIEWS}, subset: v1, weight: 1, filters: {filters}}}]}}
              policies: {{request_headers: {{set: {{x-rule: applied}}}}}}
            - origin: {ORIGIN}
              index: 1
              matches: [{{path: {{prefix: {{value: /plain}}}}}}]
              action: {{forward: [{{service: {REVIEWS}, subset: v2, weight: 1}}]}}
endpoints:
  - {{service: reviews, port: 9080, subset: v1, endpoints: [{{address: "{a1}"}}]}}
  - {{service: reviews, port: 9080, subset: v2, endpoints: [{{address: "{a2}"}}]}}
"#
    ));
    let base = format!("http://{}", proxy.bound.outbound_ports[0]);
    let send = |path: &str| {
        curl(&[
            "-sS",
            "-i",
            "-H",
            "x-header-set: client",
            "-H",
            "x-header-add: client",
            "-H",
            "x-header-remove: client",
            &format!("{base}{path}?q=1"),
        ])
        .stdout
    };

    // What v1 saw (the echo's first line is `NAME METHOD PATH?QUERY`, then its headers).
    let out = send("/filtered/lemon");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("reviews-v1 GET /one/lemon?q=1"),
        "path not rewritten: {out}"
    );
    assert!(out.contains("x-header-set: backend"), "{out}");
    assert!(!out.contains("x-header-set: client"), "{out}");
    assert!(
        out.contains("x-header-add: client") && out.contains("x-header-add: backend"),
        "{out}"
    );
    assert!(!out.contains("x-header-remove"), "{out}");
    assert!(out.contains("x-rule: applied"), "the rule's own change: {out}");
    assert!(
        out.to_ascii_lowercase().contains("x-backend: v1"),
        "response header: {out}"
    );

    // Another backend, without filters: the request as sent.
    let out = send("/plain/lemon");
    assert!(out.contains("reviews-v2 GET /plain/lemon?q=1"), "{out}");
    assert!(
        out.contains("x-header-set: client") && out.contains("x-header-remove: client"),
        "{out}"
    );
    assert!(!out.to_ascii_lowercase().contains("x-backend:"), "{out}");
}
