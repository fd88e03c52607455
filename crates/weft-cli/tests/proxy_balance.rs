//! Each load-balancing policy's distribution, measured through a real proxy process.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use weft_test_support::{HttpEcho, SERVER_HEADER};

const REQUESTS: usize = 400;

/// Sends `REQUESTS` sequential `GET /` on one keep-alive connection; counts who answered.
async fn distribution(port: SocketAddr) -> HashMap<String, usize> {
    distribution_of(port, "/", REQUESTS).await
}

/// Sends `n` sequential `GET path` on one keep-alive connection; counts who answered.
async fn distribution_of(port: SocketAddr, path: &str, n: usize) -> HashMap<String, usize> {
    let stream = tokio::net::TcpStream::connect(port).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut counts = HashMap::new();
    for _ in 0..n {
        sender.ready().await.expect("connection ready");
        let req = http::Request::get(path)
            .header("host", "reviews")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        let server = resp.headers()[SERVER_HEADER].to_str().expect("ascii").to_string();
        resp.into_body().collect().await.expect("body");
        *counts.entry(server).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_spreads_by_weight() {
    let a = HttpEcho::start("a").await.expect("a");
    let b = HttpEcho::start("b").await.expect("b");
    let c = HttpEcho::start("c").await.expect("c");
    let policies = ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "PEAK_EWMA"];
    let services: String = policies
        .iter()
        .map(|p| {
            let name = p.to_lowercase().replace('_', "-");
            format!("  - {{name: {name}, ports: [{{port: 80, protocol: http}}], loadBalancer: {p}}}\n")
        })
        .collect();
    let endpoints: String = policies
        .iter()
        .map(|p| {
            let name = p.to_lowercase().replace('_', "-");
            format!(
                "  - service: {name}\n    port: 80\n    endpoints:\n      - {{address: \"{}\", weight: 1}}\n      - {{address: \"{}\", weight: 1}}\n      - {{address: \"{}\", weight: 2}}\n",
                a.addr(),
                b.addr(),
                c.addr()
            )
        })
        .collect();
    let ports: String = policies
        .iter()
        .map(|p| {
            let name = p.to_lowercase().replace('_', "-");
            format!("    - {{listen: \"127.0.0.1:0\", service: {name}, port: 80}}\n")
        })
        .collect();
    let proxy = common::Proxy::start(&format!(
        "admin: {{address: \"127.0.0.1:0\"}}\ninbound: {{mesh: \"127.0.0.1:0\"}}\noutbound:\n  listen: null\n  ports:\n{ports}services:\n{services}endpoints:\n{endpoints}"
    ));
    let share =
        |counts: &HashMap<String, usize>, s: &str| *counts.get(s).unwrap_or(&0) as f64 / REQUESTS as f64;

    // Smooth weighted round robin is exact: 1:1:2 over every cycle of four.
    let rr = distribution(proxy.bound.outbound_ports[0]).await;
    assert_eq!((rr["a"], rr["b"], rr["c"]), (100, 100, 200), "{rr:?}");

    // Random and least-request (idle endpoints: P2C ties fall to the weighted draw) follow the
    // weights. Tolerance: 8 points, over 4 sigma for 400 draws at p = 0.25.
    for (i, policy) in [(1, "RANDOM"), (2, "LEAST_REQUEST")] {
        let d = distribution(proxy.bound.outbound_ports[i]).await;
        for (server, want) in [("a", 0.25), ("b", 0.25), ("c", 0.5)] {
            let got = share(&d, server);
            assert!(
                (got - want).abs() < 0.08,
                "{policy}: {server} got {got}, want {want}: {d:?}"
            );
        }
    }

    // Peak-EWMA with equal latencies (sequential requests: nothing in flight) compares
    // latency / weight, so in power of two choices the heavy endpoint c wins every pair it is
    // in, and a and b split the pairs {a, b}. With weighted draws of two distinct endpoints, c
    // is in the pair with odds 1/2 + 2 * (1/4 * 2/3) = 5/6; {a, b} comes up 1/6 of the time.
    // Every answer waits 25 ms at the server, so that equal means equal: with loopback's
    // sub-millisecond answers one scheduling hiccup on a busy machine doubles an endpoint's
    // estimate (the "peak") and turns c's pairs over to a or b for seconds. 200 requests:
    // sigma 0.026 at p = 5/6; tolerance 0.1.
    const EWMA_REQUESTS: usize = 200;
    let d = distribution_of(proxy.bound.outbound_ports[3], "/delay/25", EWMA_REQUESTS).await;
    assert_eq!(d.values().sum::<usize>(), EWMA_REQUESTS);
    let share = |s: &str| *d.get(s).unwrap_or(&0) as f64 / EWMA_REQUESTS as f64;
    assert!(
        (share("c") - 5.0 / 6.0).abs() < 0.1,
        "PEAK_EWMA: c got {}, want 5/6: {d:?}",
        share("c")
    );
    // Which of a and b wins the pair {a, b} is not a coin toss: both start at the default
    // estimate (30 ms), and the one that answered first is pulled below the other, so it keeps
    // winning while the estimates decay (tower's PeakEwma, which linkerd2-proxy uses, does the
    // same). So the model holds for the pair's share as a whole, not for each of a and b.
    let pair = share("a") + share("b");
    assert!(
        (pair - 1.0 / 6.0).abs() < 0.1,
        "PEAK_EWMA: a and b got {pair} together, want 1/6: {d:?}"
    );
}
