//! Mirroring end to end through a real `weft proxy`: copies reach the mirror with `-shadow` on
//! the authority and the request's body, at the route's percentage; a mirror that is down never
//! fails the primary request, which the primary backend serves unchanged.

mod common;

use std::time::{Duration, Instant};

use common::{curl, Proxy};
use weft_test_support::{free_port, HttpEcho, StaticHttp};

const ORIGIN: &str = "{kind: VirtualService, namespace: default, name: reviews}";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// Polls until `count()` stops moving (two reads 200 ms apart agree), then returns it.
fn settled(count: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = count();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_get_shadow_copies_and_never_touch_the_primary() {
    let primary = HttpEcho::start("reviews-v1").await.expect("v1");
    let shadow = StaticHttp::start("from the mirror", "text/plain")
        .await
        .expect("mirror");
    // Nothing listens here: a mirror that is down.
    let dead = format!("127.0.0.1:{}", free_port());
    let mirror = |service: &str, subset: &str, percent: u32| {
        format!("{{service: {service}, subset: {subset}, percent: {percent}}}")
    };
    let rule = |index: usize, prefix: &str, mirrors: String| {
        format!(
            "            - origin: {ORIGIN}\n              index: {index}\n              matches: [{{path: {{prefix: {{value: {prefix}}}}}}}]\n              action: {{forward: [{{service: {REVIEWS}, subset: v1, weight: 1}}]}}\n              policies: {{mirrors: [{mirrors}]}}\n"
        )
    };
    let routes = [
        rule(0, "/m", mirror(REVIEWS, "shadow", 100)),
        rule(1, "/dead", mirror(REVIEWS, "dead", 100)),
        rule(2, "/half", mirror(REVIEWS, "shadow", 50)),
    ]
    .concat();
    let (a1, a2) = (primary.addr(), shadow.addr());
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
{routes}
endpoints:
  - {{service: reviews, port: 9080, subset: v1, endpoints: [{{address: "{a1}"}}]}}
  - {{service: reviews, port: 9080, subset: shadow, endpoints: [{{address: "{a2}"}}]}}
  - {{service: reviews, port: 9080, subset: dead, endpoints: [{{address: "{dead}"}}]}}
"#
    ));
    let base = format!("http://{}", proxy.bound.outbound_ports[0]);
    let host = "reviews:9080";

    // A GET and a POST with a body: the primary answers as if nothing were mirrored; the
    // mirror gets copies with the host shadowed and the same body.
    let out = curl(&[
        "-sS",
        "-i",
        "-H",
        &format!("host: {host}"),
        &format!("{base}/m/get"),
    ]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    assert!(out.stdout.contains("x-echo-server: reviews-v1"), "{}", out.stdout);
    assert!(!out.stdout.contains("from the mirror"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("host: {host}")),
        "primary host changed: {}",
        out.stdout
    );
    let out = curl(&[
        "-sS",
        "-i",
        "-H",
        &format!("host: {host}"),
        "--data-binary",
        "hello mirror",
        &format!("{base}/m/post"),
    ]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    assert_eq!(settled(|| shadow.requests()), 2);
    let seen = shadow.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/m/get"),
        "{seen:?}"
    );
    assert_eq!(seen[0].host, "reviews-shadow:9080", "{seen:?}");
    assert_eq!(seen[1].method, "POST", "{seen:?}");
    assert_eq!(seen[1].body.as_deref(), Some(&b"hello mirror"[..]), "{seen:?}");
    assert_eq!(primary.requests(), 2);

    // A mirror that is down: every primary request still succeeds.
    for i in 0..20 {
        let out = curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/dead/{i}"),
        ]);
        assert_eq!(out.stdout, "200", "request {i}");
    }

    // 50%: about half of 200 requests are copied (the bounds are > 7 standard deviations).
    let before = shadow.requests();
    for i in 0..200 {
        let out = curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/half/{i}"),
        ]);
        assert_eq!(out.stdout, "200", "request {i}");
    }
    let copied = settled(|| shadow.requests()) - before;
    assert!((50..=150).contains(&copied), "{copied} of 200 copied at 50%");
}
