//! The demo apps wired together in one process, each on its own loopback port, as `weft up`
//! wires them (here through [`Upstreams`] rather than the process environment).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use weft_demo::{spawn, App, ReviewsVersion, Upstreams, PROPAGATED_HEADERS};

fn url(addr: SocketAddr) -> Option<String> {
    Some(format!("http://{addr}"))
}

/// A plain `GET`, `Connection: close`, read to the end: (status, head, body).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("answer within 10 s");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

/// A stand-in upstream that records every request's path and headers and answers `status` with
/// a body fit for the path (details or ratings JSON).
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

async fn recorder(status: StatusCode, stop: &CancellationToken) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    let log = seen.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                res = listener.accept() => match res { Ok((s, _)) => s, Err(_) => return },
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    log.lock()
                        .expect("lock")
                        .push((path.clone(), req.headers().clone()));
                    let body = if path.starts_with("/ratings/") {
                        r#"{"id":0,"ratings":{"Reviewer1":3,"Reviewer2":1}}"#
                    } else {
                        r#"{"id":0,"title":"Recorded Book","author":"A. Recorder"}"#
                    };
                    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = status;
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Recorder { addr, seen }
}

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

struct Bookinfo {
    details: SocketAddr,
    ratings: SocketAddr,
    reviews: [SocketAddr; 3],
}

async fn backends(stop: &CancellationToken) -> Bookinfo {
    let ratings = spawn(App::Ratings, stop.clone()).await.expect("ratings");
    let details = spawn(App::Details, stop.clone()).await.expect("details");
    let mut reviews = Vec::new();
    for version in [ReviewsVersion::V1, ReviewsVersion::V2, ReviewsVersion::V3] {
        let app = App::Reviews {
            version,
            upstreams: Upstreams {
                ratings: url(ratings),
                ..Upstreams::default()
            },
        };
        reviews.push(spawn(app, stop.clone()).await.expect("reviews"));
    }
    Bookinfo {
        details,
        ratings,
        reviews: [reviews[0], reviews[1], reviews[2]],
    }
}

async fn productpage(details: SocketAddr, reviews: SocketAddr, stop: &CancellationToken) -> SocketAddr {
    let upstreams = Upstreams {
        details: url(details),
        reviews: url(reviews),
        ratings: None,
    };
    spawn(App::ProductPage { upstreams }, stop.clone())
        .await
        .expect("productpage")
}

#[tokio::test]
async fn the_page_names_the_reviews_version_and_its_stars() {
    let stop = CancellationToken::new();
    let b = backends(&stop).await;

    // v1: no stars.
    let page = productpage(b.details, b.reviews[0], &stop).await;
    let (status, head, body) = get(page, "/productpage", &[]).await;
    assert_eq!(status, 200);
    assert!(head.contains("x-weft-demo-app: productpage-v1"), "{head}");
    assert!(
        body.contains("served by <b class=\"app\">reviews-v1</b>"),
        "{body}"
    );
    assert!(
        body.contains("served by <b class=\"app\">details-v1</b>"),
        "{body}"
    );
    assert!(body.contains("William Shakespeare"), "{body}");
    assert!(!body.contains("class=\"stars"), "v1 shows no stars: {body}");

    // v2: black stars, from ratings (5 and 4).
    let page = productpage(b.details, b.reviews[1], &stop).await;
    let (status, _, body) = get(page, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("reviews-v2"), "{body}");
    assert!(
        body.contains("<div class=\"stars black\" title=\"5 of 5, black stars\">★★★★★</div>"),
        "{body}"
    );
    assert!(body.contains("★★★★☆"), "{body}");
    assert!(!body.contains("stars red"), "{body}");

    // v3: red stars.
    let page = productpage(b.details, b.reviews[2], &stop).await;
    let (_, _, body) = get(page, "/productpage", &[]).await;
    assert!(body.contains("reviews-v3"), "{body}");
    assert!(body.contains("class=\"stars red\""), "{body}");
    assert!(!body.contains("stars black"), "{body}");

    // The JSON API says the same.
    let (status, head, body) = get(page, "/api/v1/products/0", &[]).await;
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["reviews"]["version"], "v3");
    assert_eq!(v["reviews"]["reviews"][0]["rating"]["color"], "red");
    assert_eq!(v["details"]["author"], "William Shakespeare");

    // Every app answers /health and names itself.
    for (addr, name) in [
        (b.ratings, "ratings-v1"),
        (b.details, "details-v1"),
        (b.reviews[1], "reviews-v2"),
    ] {
        let (status, head, _) = get(addr, "/health", &[]).await;
        assert_eq!(status, 200);
        assert!(head.contains(&format!("x-weft-demo-app: {name}")), "{head}");
    }
    let (status, _, body) = get(b.reviews[2], "/reviews/0", &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["version"], "v3");
    assert!(v["podname"].as_str().is_some_and(|p| !p.is_empty()));
    let (status, _, _) = get(b.details, "/details/not-a-number", &[]).await;
    assert_eq!(status, 404);
    stop.cancel();
}

#[tokio::test]
async fn trace_headers_and_the_user_reach_every_hop() {
    let stop = CancellationToken::new();
    let upstream = recorder(StatusCode::OK, &stop).await;
    // productpage -> details (recorder) and reviews v2 -> ratings (recorder).
    let reviews = spawn(
        App::Reviews {
            version: ReviewsVersion::V2,
            upstreams: Upstreams {
                ratings: url(upstream.addr),
                ..Upstreams::default()
            },
        },
        stop.clone(),
    )
    .await
    .expect("reviews");
    let page = productpage(upstream.addr, reviews, &stop).await;
    let trace: Vec<(&str, String)> = PROPAGATED_HEADERS
        .iter()
        .filter(|h| **h != "end-user")
        .map(|h| (*h, format!("value-of-{h}")))
        .collect();
    let sent: Vec<(&str, &str)> = trace.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = get(page, "/productpage?u=jason", &sent).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("signed in as <b class=\"user\">jason</b>"),
        "{body}"
    );
    assert!(
        body.contains("Recorded Book") || body.contains("A. Recorder"),
        "{body}"
    );
    // The recorder's ratings (3 and 1) in black.
    assert!(
        body.contains("<div class=\"stars black\" title=\"3 of 5, black stars\">★★★☆☆</div>"),
        "{body}"
    );

    let seen = upstream.seen.lock().expect("lock").clone();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"/details/0"), "{paths:?}");
    assert!(paths.contains(&"/ratings/0"), "{paths:?}");
    for (path, headers) in &seen {
        for (name, value) in &trace {
            assert_eq!(
                headers.get(*name).and_then(|v| v.to_str().ok()),
                Some(value.as_str()),
                "{name} on {path}"
            );
        }
        assert_eq!(
            headers.get("end-user").and_then(|v| v.to_str().ok()),
            Some("jason"),
            "end-user on {path}"
        );
    }

    // Without ?u= the end-user header itself is forwarded; no user, no header.
    let before = upstream.seen.lock().expect("lock").len();
    let _ = get(page, "/productpage", &[("end-user", "alice")]).await;
    let _ = get(page, "/productpage", &[]).await;
    let seen = upstream.seen.lock().expect("lock").clone();
    let users: Vec<Option<String>> = seen[before..]
        .iter()
        .map(|(_, h)| h.get("end-user").and_then(|v| v.to_str().ok()).map(String::from))
        .collect();
    assert_eq!(users.len(), 4, "{users:?}");
    assert_eq!(
        users.iter().filter(|u| u.as_deref() == Some("alice")).count(),
        2,
        "{users:?}"
    );
    assert_eq!(users.iter().filter(|u| u.is_none()).count(), 2, "{users:?}");
    stop.cancel();
}

#[tokio::test]
async fn the_page_degrades_section_by_section() {
    let stop = CancellationToken::new();
    let details = spawn(App::Details, stop.clone()).await.expect("details");

    // Reviews not listening at all.
    let page = productpage(details, closed_port().await, &stop).await;
    let (status, _, body) = get(page, "/productpage", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("Reviews unavailable: "), "{body}");
    assert!(
        body.contains("William Shakespeare"),
        "details still shown: {body}"
    );

    // Reviews answering 503 (as a sidecar does with no healthy endpoint).
    let failing = recorder(StatusCode::SERVICE_UNAVAILABLE, &stop).await;
    let page = productpage(details, failing.addr, &stop).await;
    let (status, _, body) = get(page, "/productpage", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Reviews unavailable: 503 Service Unavailable"),
        "{body}"
    );

    // Details down, reviews fine.
    let reviews = spawn(
        App::Reviews {
            version: ReviewsVersion::V1,
            upstreams: Upstreams::default(),
        },
        stop.clone(),
    )
    .await
    .expect("reviews");
    let page = productpage(closed_port().await, reviews, &stop).await;
    let (status, _, body) = get(page, "/productpage", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("Error fetching product details"), "{body}");
    assert!(body.contains("reviews-v1"), "{body}");

    // Reviews v3 with ratings down: reviews still answer, without stars.
    let reviews = spawn(
        App::Reviews {
            version: ReviewsVersion::V3,
            upstreams: Upstreams {
                ratings: url(closed_port().await),
                ..Upstreams::default()
            },
        },
        stop.clone(),
    )
    .await
    .expect("reviews");
    let (status, _, body) = get(reviews, "/reviews/0", &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ratings"], "unavailable", "{body}");
    assert_eq!(v["reviews"].as_array().map(Vec::len), Some(2));
    let page = productpage(details, reviews, &stop).await;
    let (_, _, body) = get(page, "/productpage", &[]).await;
    assert!(
        body.contains("Ratings service is currently unavailable"),
        "{body}"
    );
    assert!(!body.contains("class=\"stars"), "{body}");

    // Not configured at all.
    let page = spawn(
        App::ProductPage {
            upstreams: Upstreams::default(),
        },
        stop.clone(),
    )
    .await
    .expect("productpage");
    let (status, _, body) = get(page, "/productpage", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Reviews unavailable: REVIEWS_URL is not set"),
        "{body}"
    );
    assert!(
        body.contains("Error fetching product details: DETAILS_URL is not set"),
        "{body}"
    );
    stop.cancel();
}

/// 50 rps for 1 s is 50 ticks (at 0, 20, ... 980 ms), in paused time so that the count is
/// exact rather than a window with a tolerance. The target accepts and never answers, so that
/// nothing completes in between (paused time jumps ahead whenever the runtime waits on a
/// socket): with 16 allowed in flight, 16 requests go out and 34 ticks are skipped, and the 16
/// end as failures at their timeout.
#[tokio::test(start_paused = true)]
async fn load_sends_one_request_per_tick_up_to_its_concurrency() {
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", silent.local_addr().expect("addr"));
    let report = weft_demo::load(
        &url,
        50,
        Some(Duration::from_secs(1)),
        16,
        HeaderMap::new(),
        CancellationToken::new(),
    )
    .await
    .expect("load");
    assert_eq!((report.sent, report.skipped), (16, 34), "{report}");
    assert_eq!(report.answered(), 0, "{report}");
    assert_eq!(report.failed(), 16, "{report}");
    // Room for every tick: all 50 go out.
    let report = weft_demo::load(
        &url,
        50,
        Some(Duration::from_secs(1)),
        64,
        HeaderMap::new(),
        CancellationToken::new(),
    )
    .await
    .expect("load");
    assert_eq!((report.sent, report.skipped), (50, 0), "{report}");
    drop(silent);
}

/// Against the real ratings app in real time: every request sent is answered 200 and counted.
/// How many go out depends on the machine (missed ticks are skipped), but never more than
/// the 50 ticks of 50 rps for 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_keeps_its_rate_and_counts_statuses() {
    let stop = CancellationToken::new();
    let echo = spawn(App::Ratings, stop.clone()).await.expect("ratings");
    let report = weft_demo::load(
        &format!("http://{echo}/ratings/0"),
        50,
        Some(Duration::from_secs(1)),
        16,
        HeaderMap::new(),
        CancellationToken::new(),
    )
    .await
    .expect("load");
    assert!((1..=50).contains(&report.sent), "{report}");
    assert_eq!(report.by_status.get(&200).copied(), Some(report.sent), "{report}");
    assert_eq!(report.failed(), 0, "{report}");

    // Statuses are counted as they come; a stop signal ends an unbounded run.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let report = weft_demo::load(
        &format!("http://{echo}/nowhere"),
        100,
        None,
        4,
        HeaderMap::new(),
        cancel,
    )
    .await
    .expect("load");
    assert!(report.sent > 0 && report.sent <= 40, "{report}");
    assert_eq!(report.by_status.get(&404).copied(), Some(report.sent), "{report}");

    // Nothing listening: counted as errors, not answers.
    let report = weft_demo::load(
        &format!("http://{}/", closed_port().await),
        20,
        Some(Duration::from_millis(200)),
        4,
        HeaderMap::new(),
        CancellationToken::new(),
    )
    .await
    .expect("load");
    assert_eq!(report.answered(), 0, "{report}");
    assert_eq!(report.failed(), report.sent, "{report}");
    assert!(
        weft_demo::load("ftp://x/", 1, None, 1, HeaderMap::new(), CancellationToken::new())
            .await
            .is_err()
    );
    stop.cancel();
}
