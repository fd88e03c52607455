use std::sync::Arc;

use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::telemetry::metrics::{Metrics, Peer};

fn meta(from: &str) -> RequestMeta {
    let mut source = Peer::unknown();
    source.workload = Label::new(from);
    let mut m = RequestMeta::new(
        Metrics::new(&mut Registry::default()),
        "destination",
        source,
        Peer::unknown(),
        false,
    );
    m.set_service_labels(RequestMeta::service_labels("reviews.default.svc.cluster.local").expect("labels"));
    m
}

fn request(path: &str) -> http::Request<()> {
    http::Request::get(path)
        .header("host", "reviews:9080")
        .body(())
        .expect("request")
}

/// Every line the body holds now.
async fn lines(body: &mut TapBody) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(std::time::Duration::from_millis(10), body.frame()).await
    {
        let data = frame.into_data().expect("data");
        out.push(serde_json::from_slice(&data).expect("a JSON line"));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn nothing_is_captured_until_someone_taps_and_after_they_go() {
    let hub = Arc::new(TapHub::default());
    assert!(hub.capture(&request("/")).is_none());
    let body = hub.subscribe(
        TapFilter::default(),
        10,
        Bytes::from_static(b"{}\n"),
        CancellationToken::new(),
    );
    assert_eq!(hub.open(), 1);
    assert!(hub.capture(&request("/")).is_some());
    drop(body);
    assert_eq!(hub.open(), 0);
    assert!(hub.capture(&request("/")).is_none());
}

#[tokio::test(start_paused = true)]
async fn events_pass_the_filter_and_carry_the_request() {
    let hub = Arc::new(TapHub::default());
    let filter = TapFilter {
        path: Some("/reviews".into()),
        from: Some("productpage-v1".into()),
        to: Some("reviews".into()),
        method: Some("get".into()),
    };
    let mut body = hub.subscribe(
        filter,
        10,
        Bytes::from_static(b"{\"tap\":\"open\"}\n"),
        CancellationToken::new(),
    );
    for (path, from) in [
        ("/reviews/1", "productpage-v1"),
        ("/health", "productpage-v1"),
        ("/reviews/2", "other"),
    ] {
        let head = hub.capture(&request(path)).expect("captured");
        head.emit(&meta(from), 200, &Label::none(), "-", 12.5);
    }
    let got = lines(&mut body).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["tap"], "open");
    let e = &got[1];
    assert_eq!(
        (e["method"].as_str(), e["path"].as_str(), e["authority"].as_str()),
        (Some("GET"), Some("/reviews/1"), Some("reviews:9080"))
    );
    assert_eq!(
        (e["status"].as_u64(), e["latencyMs"].as_f64()),
        (Some(200), Some(12.5))
    );
    assert_eq!(e["direction"], "inbound");
    assert_eq!(e["source"]["workload"], "productpage-v1");
    assert_eq!(e["destination"]["service"], "reviews.default.svc.cluster.local");
    assert_eq!((e["dropped"].as_u64(), e["limited"].as_u64()), (Some(0), Some(0)));
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_loses_events_and_is_told_how_many() {
    let hub = Arc::new(TapHub::default());
    let mut body = hub.subscribe(
        TapFilter::default(),
        MAX_RPS_CEILING,
        Bytes::from_static(b"{}\n"),
        CancellationToken::new(),
    );
    let extra = 40;
    for _ in 0..TAP_BUFFER + extra {
        hub.capture(&request("/"))
            .expect("captured")
            .emit(&meta("a"), 200, &Label::none(), "-", 1.0);
    }
    let got = lines(&mut body).await;
    assert_eq!(got.len(), TAP_BUFFER, "the buffer, hello included, and no more");
    hub.capture(&request("/"))
        .expect("captured")
        .emit(&meta("a"), 200, &Label::none(), "-", 1.0);
    let next = lines(&mut body).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["dropped"].as_u64(), Some((extra + 1) as u64), "{next:?}");
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_drops_and_counts_the_excess() {
    let hub = Arc::new(TapHub::default());
    let mut body = hub.subscribe(
        TapFilter::default(),
        5,
        Bytes::from_static(b"{}\n"),
        CancellationToken::new(),
    );
    for _ in 0..20 {
        hub.capture(&request("/"))
            .expect("captured")
            .emit(&meta("a"), 200, &Label::none(), "-", 1.0);
    }
    assert_eq!(lines(&mut body).await.len(), 1 + 5);
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    hub.capture(&request("/"))
        .expect("captured")
        .emit(&meta("a"), 503, &Label::none(), "UF", 1.0);
    let next = lines(&mut body).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0]["limited"].as_u64(), next[0]["flags"].as_str()),
        (Some(15), Some("UF"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_the_stream_and_closes_the_tap() {
    let hub = Arc::new(TapHub::default());
    let stop = CancellationToken::new();
    let mut body = hub.subscribe(
        TapFilter::default(),
        10,
        Bytes::from_static(b"{}\n"),
        stop.clone(),
    );
    stop.cancel();
    assert!(body.frame().await.is_none(), "the stream ends");
    drop(body);
    assert_eq!(hub.open(), 0);
}
