//! An endpoint that refuses connections, against a running `weft proxy`: the request fails over
//! to another endpoint, and the refusing one is skipped for 5 s (even once it is back), then
//! tried again.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{curl, Proxy};
use weft_test_support::{free_port, HttpEcho};

/// How long a refusing endpoint is left alone (README: "skipped for 5 s").
const SKIPPED_FOR: Duration = Duration::from_secs(5);

/// A client sidecar with `reviews:9080` over `endpoints` in turn (round robin), reached
/// directly.
fn sidecar(endpoints: &[SocketAddr]) -> Proxy {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{address: \"{a}\", meshPort: null}}"))
        .collect();
    Proxy::start(&format!(
        r#"
workload: {{name: productpage-v1, labels: {{app: productpage}}}}
admin: {{address: "127.0.0.1:0"}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound:
  listen: null
  ports: [{{listen: "127.0.0.1:0", service: reviews, port: 9080}}]
services:
  - {{name: reviews, ports: [{{port: 9080, protocol: http}}], loadBalancer: ROUND_ROBIN}}
endpoints:
  - service: reviews
    port: 9080
    endpoints: [{}]
"#,
        eps.join(", ")
    ))
}

/// Who answered `GET url` (`x-echo-server`), or the status line when the proxy did.
fn served_by(url: &str) -> String {
    let out = curl(&["-sS", "-i", url]);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-server: "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| out.stdout.lines().next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_failed_over_and_skipped_for_five_seconds() {
    // Nothing listens on `down` yet: connections to it are refused.
    let down = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let up = HttpEcho::start("up").await.expect("up");
    let proxy = sidecar(&[down, up.addr()]);
    let url = format!("http://{}/", proxy.bound.outbound_ports[0]);

    // Round robin reaches `down` within two requests; each is served by `up` all the same.
    let first_try = Instant::now();
    let mut tried_down = false;
    for _ in 0..2 {
        let url = url.clone();
        let who = tokio::task::spawn_blocking(move || served_by(&url))
            .await
            .expect("curl");
        assert_eq!(who, "up", "a refused connection must fail over");
        let refused = |l: &&str| l.contains("endpoint failed") && l.contains(&down.to_string());
        if proxy.logs().lines().any(|l| refused(&l)) {
            tried_down = true;
            break;
        }
    }
    assert!(tried_down, "round robin never tried {down}:\n{}", proxy.logs());

    // `down` comes back at once, but is skipped until its 5 s are up: what is sent within them
    // all goes to `up` (round robin would otherwise give it every other request).
    let back = HttpEcho::start_on("back", down)
        .await
        .expect("the endpoint comes back");
    // Spread over the whole window, so that a shorter skip is caught.
    let mut within = 0;
    while first_try.elapsed() < SKIPPED_FOR - Duration::from_millis(500) {
        let url = url.clone();
        let who = tokio::task::spawn_blocking(move || served_by(&url))
            .await
            .expect("curl");
        assert_eq!(who, "up", "{:?} after the refusal", first_try.elapsed());
        within += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        within > 0,
        "the machine is too slow to send anything within the 5 s"
    );
    assert_eq!(back.requests(), 0);

    // Then it is tried again, and serves: not before its 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = url.clone();
        let who = tokio::task::spawn_blocking(move || served_by(&url))
            .await
            .expect("curl");
        if who == "back" {
            break;
        }
        assert!(Instant::now() < deadline, "{down} was never tried again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first_try.elapsed() >= SKIPPED_FOR,
        "tried again after only {:?}",
        first_try.elapsed()
    );
}
