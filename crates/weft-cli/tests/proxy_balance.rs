//! Each load-balancing policy's distribution, measured through a real proxy process.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_test_support::{HttpEcho, SERVER_HEADER};

const REQUESTS: usize = 1000;

/// How long the slow endpoint of the Peak-EWMA service takes to answer.
const SLOW: Duration = Duration::from_millis(150);

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
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        let server = resp.headers()[SERVER_HEADER].to_str().expect("ascii").to_string();
        resp.into_body().collect().await.expect("body");
        *counts.entry(server).or_insert(0) += 1;
    }
    counts
}

/// An HTTP/1.1 server named `slow` (in `x-echo-server`) that holds every answer for `delay`.
async fn slow_server(delay: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                // Bodyless requests, one after another on the kept-alive connection.
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let answer =
                            format!("HTTP/1.1 200 OK\r\n{SERVER_HEADER}: slow\r\ncontent-length: 0\r\n\r\n");
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_spreads_by_weight() {
    let a = HttpEcho::start("a").await.expect("a");
    let b = HttpEcho::start("b").await.expect("b");
    let c = HttpEcho::start("c").await.expect("c");
    let (slow, slow_task) = slow_server(SLOW).await;
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
            // Peak-EWMA is about latency: equal weights, one endpoint slow.
            let (third, weight) = match *p {
                "PEAK_EWMA" => (slow, 1),
                _ => (c.addr(), 2),
            };
            format!(
                "  - service: {name}\n    port: 80\n    endpoints:\n      - {{address: \"{}\", weight: 1}}\n      - {{address: \"{}\", weight: 1}}\n      - {{address: \"{third}\", weight: {weight}}}\n",
                a.addr(),
                b.addr(),
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
    assert_eq!((rr["a"], rr["b"], rr["c"]), (250, 250, 500), "{rr:?}");

    // Random and least-request (idle endpoints: P2C ties fall to the weighted draw) follow the
    // weights. Tolerance: 8 points, 5 sigma for 1,000 draws at p = 0.5 (runs on a busy machine
    // spread about 1.5 times wider than the binomial, so 400 draws were not enough).
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

    // Peak-EWMA avoids the slow endpoint: its first answer puts its estimate at the peak (SLOW,
    // decaying over 10 s), so it loses every pair of power of two choices to a and b, whose
    // loopback answers stay far below. It gets the few requests sent before its first answer
    // came back (sequential requests: one), where a latency-blind policy would give it a
    // third. (Its weighting of latency by weight is tested with paused time in the balance
    // module; through a real process the loopback's scheduling noise is bigger than the effect.)
    const EWMA_REQUESTS: usize = 200;
    let d = distribution_of(proxy.bound.outbound_ports[3], "/", EWMA_REQUESTS).await;
    assert_eq!(d.values().sum::<usize>(), EWMA_REQUESTS);
    let to_slow = d.get("slow").copied().unwrap_or(0);
    assert!(
        to_slow <= 5,
        "PEAK_EWMA sent {to_slow} of {EWMA_REQUESTS} to the endpoint that takes {SLOW:?}: {d:?}"
    );
    assert_eq!(
        d.get("a").copied().unwrap_or(0) + d.get("b").copied().unwrap_or(0) + to_slow,
        EWMA_REQUESTS
    );
    slow_task.abort();
}
