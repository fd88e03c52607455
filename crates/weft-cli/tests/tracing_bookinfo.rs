//! Traces from a live `weft up` Bookinfo: the sidecars inherit `OTEL_EXPORTER_OTLP_ENDPOINT`
//! from `weft up` and send their spans to a real OTLP/gRPC collector in this test; the demo apps
//! forward the trace headers, so one product-page request is one trace across the services.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use common::up::{bookinfo_copy, Up};
use common::{curl, tempdir};
use weft_test_support::OtlpCollector;

const TRACE: &str = "5b8efff798038103d269b633813fc60c";
const CALLER_SPAN: &str = "eee19b7ec3c1b174";

#[test]
fn a_productpage_request_is_one_trace_with_every_hop_linked() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let collector = runtime.block_on(OtlpCollector::start()).expect("collector");
    // The only test in this binary: the child `weft up` inherits the variable, as a user's
    // shell would pass it.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint());
    let dir = bookinfo_copy();
    let run_dir = tempdir::Dir::new("weft-tracing-run");
    let mut up = Up::start(&dir.path, &run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();

    let traceparent = format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01");
    let out = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &traceparent,
        &url,
    ]);
    assert_eq!(out.stdout, "200", "{}", out.stderr);

    // productpage's server span, a client and a server span for details and for reviews (and
    // for ratings when the reviews version calls it): at least five.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == TRACE)
            .collect();
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let called_ratings = spans
            .iter()
            .any(|s| s.kind == 3 && s.name.starts_with("ratings."));
        let ratings_in = services.contains("ratings.default");
        if spans.len() >= 5 && (!called_ratings || ratings_in) || std::time::Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(spans.len() >= 5, "{spans:#?}");
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for s in ["productpage.default", "details.default", "reviews.default"] {
        assert!(services.contains(s), "{s} missing: {services:?}");
    }
    // Every span's parent is in the trace, except the root's: the caller's span.
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    assert_eq!(roots[0].parent_span_id, CALLER_SPAN);
    assert_eq!(
        (roots[0].kind, roots[0].service.as_str()),
        (2, "productpage.default")
    );
    // Each server span past the first is the child of a client span of the calling service.
    for server in spans
        .iter()
        .filter(|s| s.kind == 2 && s.parent_span_id != CALLER_SPAN)
    {
        let parent = spans
            .iter()
            .find(|s| s.span_id == server.parent_span_id)
            .expect("parent in the trace");
        assert_eq!(parent.kind, 3, "{server:#?} under {parent:#?}");
        assert_eq!(
            parent.name.split(':').next(),
            Some(&*format!("{}.svc.cluster.local", server.service)),
            "the client span names the service the server span is in"
        );
    }
    drop(up);
}
