//! The verbs that look at a running mesh (`proxy-status`, `proxy-config`, `routes`, `stat`,
//! `edges`, `tap`, `top`), run as a person runs them against a real `weft up` Bookinfo with
//! traffic, their `-o json` asserted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::up::{bookinfo_copy, routing, Up};
use common::{curl, run, tempdir, weft_bin};
use serde_json::Value;

/// `weft ARGS... --run-dir RUN_DIR -o json`, which must succeed, parsed.
fn json(run_dir: &Path, args: &[&str]) -> Value {
    let out = text_of(run_dir, &[args, &["-o", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("weft {args:?}: not JSON ({e}): {out}"))
}

/// `weft ARGS... --run-dir RUN_DIR`, which must succeed: its stdout.
fn text_of(run_dir: &Path, args: &[&str]) -> String {
    let run_dir = run_dir.to_str().expect("utf-8");
    let out = run(weft_bin(), &[args, &["--run-dir", run_dir]].concat());
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Polls `f` until it returns Some, or panics with `what` after `within`.
fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `weft down` on drop: `weft up` stops its workloads and sidecars and exits.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(weft_bin())
            .arg("down")
            .arg("--run-dir")
            .arg(self.0)
            .output();
    }
}

fn rows<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

#[test]
fn views_of_a_running_bookinfo() {
    let dir = bookinfo_copy();
    // ratings opts out of tap, as Linkerd's annotation says.
    let mesh_yaml = dir.path.join("mesh.yaml");
    let docs = std::fs::read_to_string(&mesh_yaml).expect("mesh.yaml");
    let annotated = docs.replace(
        "  name: ratings-v1\n",
        "  name: ratings-v1\n  annotations: {config.linkerd.io/disable-tap: \"true\"}\n",
    );
    assert_ne!(docs, annotated, "the example names ratings-v1");
    std::fs::write(&mesh_yaml, annotated).expect("write");
    let vs = dir.path.join("virtual-services.yaml");
    std::fs::copy(routing("80-20").join("virtual-services.yaml"), &vs).expect("copy");
    // Linkerd ServiceProfiles name reviews' and ratings' routes (for `stat route`).
    std::fs::copy(
        routing("linkerd-profiles").join("service-profiles.yaml"),
        dir.path.join("service-profiles.yaml"),
    )
    .expect("copy");
    let run_dir = tempdir::Dir::new("weft-views-run");
    let mut up = Up::start(&dir.path, &run_dir.path);
    // Dropped before `up` (which only kills `weft up` itself): stops every app and sidecar,
    // whether the test passes or fails.
    let _down = Down(&run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();
    for _ in 0..20 {
        let page = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
        assert_eq!(page.stdout, "200", "{}", page.stderr);
    }
    let rd = run_dir.path.as_path();

    // proxy-status: the six sidecars, each having ACKed what was pushed to it.
    let status = json(rd, &["proxy-status"]);
    let proxies = rows(&status, "proxies");
    let names: Vec<&str> = proxies.iter().filter_map(|p| p["instance"].as_str()).collect();
    assert_eq!(names.len(), 6, "{status}");
    for want in ["productpage-v1-0", "reviews-v1-0", "reviews-v3-0", "ratings-v1-0"] {
        assert!(names.contains(&want), "{want} missing: {status}");
    }
    for p in proxies {
        assert_eq!(p["sync"], "SYNCED", "{p}");
        assert!(
            p["ackedVersion"].is_string() && p["ackedVersion"] == p["sentVersion"],
            "{p}"
        );
        let age = p["lastAckAgeSeconds"].as_f64().expect("an ACK age");
        assert!((0.0..120.0).contains(&age), "{p}");
    }
    let table = text_of(rd, &["proxy-status"]);
    assert!(
        table.contains("reviews-v2-0") && table.contains("SYNCED"),
        "{table}"
    );

    // proxy-config: productpage's listeners, services, endpoints with live state, certificate.
    let config = json(rd, &["proxy-config", "all", "productpage-v1"]);
    let listeners: Vec<&str> = rows(&config, "listeners")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(
        listeners.contains(&"mesh") && listeners.contains(&"inbound|9080"),
        "{listeners:?}"
    );
    assert!(
        listeners.iter().any(|l| l.starts_with("outbound|9080|reviews")),
        "a per-service port to reviews: {listeners:?}"
    );
    let reviews_eps: Vec<&Value> = rows(&config, "endpoints")
        .iter()
        .filter(|s| s["service"] == "reviews.default.svc.cluster.local" && s["subset"].is_null())
        .flat_map(|s| rows(s, "endpoints"))
        .collect();
    let mut workloads: Vec<&str> = reviews_eps
        .iter()
        .filter_map(|e| e["workload"].as_str())
        .collect();
    workloads.sort();
    assert_eq!(workloads, ["reviews-v1", "reviews-v2", "reviews-v3"], "{config}");
    for e in &reviews_eps {
        assert_eq!(e["state"]["inFlight"], 0, "{e}");
        assert_eq!(e["state"]["unreachable"], false, "{e}");
        assert!(
            e["identity"]
                .as_str()
                .is_some_and(|i| i.ends_with("/sa/bookinfo-reviews")),
            "{e}"
        );
    }
    assert!(
        reviews_eps
            .iter()
            .all(|e| e["state"]["rttEstimateMs"].as_f64().is_some_and(f64::is_finite)),
        "{reviews_eps:?}"
    );
    let secrets = rows(&config, "secrets");
    assert_eq!(secrets.len(), 1, "{config}");
    assert_eq!(
        secrets[0]["spiffeId"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert!(
        secrets[0]["expiresInSeconds"].as_u64().is_some_and(|s| s > 3600),
        "{}",
        secrets[0]
    );
    let raw = config.to_string();
    assert!(
        !raw.contains("PRIVATE KEY") && !raw.contains("BEGIN"),
        "no key, no PEM: {raw}"
    );
    // One kind alone, as text and JSON.
    let eps = json(rd, &["proxy-config", "endpoints", "productpage-v1-0"]);
    assert!(eps.as_array().is_some_and(|a| !a.is_empty()), "{eps}");
    let eps_text = text_of(rd, &["proxy-config", "clusters", "productpage-v1"]);
    assert!(
        eps_text.contains("reviews.default.svc.cluster.local"),
        "{eps_text}"
    );

    // routes: the 80/20 rule as the proxies compiled it, with its document.
    let routes = json(rd, &["routes", "reviews"]);
    assert_eq!(routes["service"], "reviews.default.svc.cluster.local", "{routes}");
    let rules = rows(&rows(&routes, "ports")[0], "rules");
    assert_eq!(rules.len(), 1, "{routes}");
    assert_eq!(rules[0]["origin"]["kind"], "VirtualService");
    let split: Vec<(String, u64)> = rules[0]["action"]["forward"]
        .as_array()
        .expect("forward")
        .iter()
        .map(|b| {
            (
                b["subset"].as_str().unwrap_or("").to_string(),
                b["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        split,
        [("v1".to_string(), 80), ("v2".to_string(), 20)],
        "{routes}"
    );

    // stat and edges over live traffic: a load generator on the product page meanwhile.
    let mut load = std::process::Command::new(weft_bin())
        .args(["load", &url, "--rps", "20", "--duration", "45"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weft load");
    let stat = json(rd, &["stat", "-t", "3s"]);
    let row = |name: &str| rows(&stat, "rows").iter().find(|r| r["name"] == name).cloned();
    let page = row("productpage-v1").unwrap_or_else(|| panic!("{stat}"));
    let rps = page["rps"].as_f64().expect("rps");
    assert!((5.0..40.0).contains(&rps), "about 20 requests/s: {page}");
    assert_eq!(page["successRate"], 1.0, "{page}");
    assert_eq!(
        page["mtlsShare"], 0.0,
        "the front door is plaintext from outside the mesh: {page}"
    );
    let p = |q: &str| page[q].as_f64().unwrap_or_else(|| panic!("{q}: {page}"));
    assert!(
        0.0 < p("latencyMsP50")
            && p("latencyMsP50") <= p("latencyMsP95")
            && p("latencyMsP95") <= p("latencyMsP99"),
        "{page}"
    );
    for served in ["details-v1", "reviews-v1", "reviews-v2", "ratings-v1"] {
        let r = row(served).unwrap_or_else(|| panic!("{served}: {stat}"));
        assert_eq!(r["mtlsShare"], 1.0, "mesh traffic is mTLS: {r}");
        assert!(r["rps"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    assert!(
        row("reviews-v3").is_none(),
        "the 80/20 split sends v3 nothing: {stat}"
    );
    let to = json(rd, &["stat", "deploy", "--to", "reviews", "-t", "1s"]);
    let senders: Vec<&str> = rows(&to, "rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(senders, ["productpage-v1"], "{to}");
    let one = json(rd, &["stat", "svc/reviews", "-t", "1s"]);
    assert_eq!(rows(&one, "rows").len(), 1, "{one}");
    assert_eq!(rows(&one, "rows")[0]["proxies"], 2, "v1 and v2 served: {one}");
    let routes_stat = json(rd, &["stat", "route", "-t", "2s"]);
    let named = rows(&routes_stat, "rows")
        .iter()
        .find(|r| r["name"] == "GET /reviews/{id}")
        .unwrap_or_else(|| panic!("the ServiceProfile route: {routes_stat}"));
    assert_eq!(named["service"], "reviews.default.svc.cluster.local", "{named}");
    assert_eq!(named["successRate"], 1.0, "{named}");
    assert!(named["rps"].as_f64().is_some_and(|r| r > 0.0), "{named}");
    let ratings_routes = json(rd, &["stat", "rt", "--to", "ratings", "-t", "1s"]);
    let names: Vec<&str> = rows(&ratings_routes, "rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["GET /ratings/{id}"], "{ratings_routes}");
    let table = text_of(rd, &["stat", "-t", "1s", "-o", "wide"]);
    assert!(
        table.contains("LATENCY_P99") && table.contains("reviews-v1"),
        "{table}"
    );

    let edges = json(rd, &["edges", "-t", "1s"]);
    let edge = |src: &str, dst: &str| {
        rows(&edges, "edges")
            .iter()
            .find(|e| e["source"] == src && e["destination"] == dst)
            .cloned()
            .unwrap_or_else(|| panic!("{src} -> {dst}: {edges}"))
    };
    let secured = edge("productpage-v1", "reviews-v1");
    assert_eq!(
        secured["sourceIdentity"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(
        secured["destinationIdentity"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(secured["mtlsShare"], 1.0);
    assert_eq!(edge("reviews-v2", "ratings-v1")["mtlsShare"], 1.0);
    let outside = edge("unknown", "productpage-v1");
    assert_eq!(
        (outside["mtlsShare"].as_f64(), outside["sourceIdentity"].is_null()),
        (Some(0.0), true)
    );

    // tap: reviews-v1's requests as its sidecar sees them, with the caller's verified identity.
    let tapped = text_of(
        rd,
        &[
            "tap",
            "deploy/reviews-v1",
            "--max-events",
            "6",
            "--duration",
            "20",
            "-o",
            "json",
        ],
    );
    let events: Vec<Value> = tapped
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 6, "{tapped}");
    let served = events
        .iter()
        .find(|e| e["direction"] == "inbound")
        .unwrap_or_else(|| panic!("no inbound event: {tapped}"));
    assert_eq!(served["source"]["workload"], "productpage-v1", "{served}");
    assert_eq!(
        served["source"]["identity"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(
        (served["mtls"].as_bool(), served["status"].as_u64()),
        (Some(true), Some(200)),
        "{served}"
    );
    assert!(
        served["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/reviews/")),
        "{served}"
    );
    assert_eq!(served["proxy"], "reviews-v1-0");
    // Filters and the rate limit: at most one event a second, the rest counted.
    let limited = text_of(
        rd,
        &[
            "tap",
            "productpage-v1",
            "--path",
            "/productpage",
            "--max-rps",
            "1",
            "--duration",
            "3",
            "-o",
            "json",
        ],
    );
    let events: Vec<Value> = limited
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!((1..=4).contains(&events.len()), "one a second: {limited}");
    assert!(events.iter().all(|e| e["path"] == "/productpage"), "{limited}");
    assert!(
        events.iter().filter_map(|e| e["limited"].as_u64()).sum::<u64>() > 0,
        "{limited}"
    );
    let refused = run(
        weft_bin(),
        &[
            "tap",
            "deploy/ratings-v1",
            "--duration",
            "2",
            "-o",
            "json",
            "--run-dir",
            rd.to_str().expect("utf-8"),
        ],
    );
    assert!(
        refused.stdout.is_empty(),
        "no events from an opted-out workload: {}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("403") && refused.stderr.contains("opted out of tap"),
        "{}",
        refused.stderr
    );
    let out = run(
        weft_bin(),
        &["tap", "deploy/nosuch", "--run-dir", rd.to_str().expect("utf-8")],
    );
    assert!(
        !out.status.success() && out.stderr.contains("no workload"),
        "{}",
        out.stderr
    );

    // top: the busiest paths by source and destination, streamed as JSON, then drawn in a
    // terminal (a pseudo-terminal of a known size, through `script`).
    let streamed = text_of(rd, &["top", "-o", "json", "--duration", "3"]);
    let last: Value = serde_json::from_str(streamed.lines().last().expect("a line")).expect("json");
    let top_rows = rows(&last, "rows");
    let busiest = |src: &str, dst: &str, path: &str| {
        top_rows
            .iter()
            .find(|r| r["source"] == src && r["destination"] == dst && r["path"] == path)
            .and_then(|r| r["count"].as_u64())
    };
    assert!(
        busiest("productpage-v1", "reviews-v1", "/reviews/0").is_some_and(|n| n > 0),
        "{last}"
    );
    assert!(
        busiest("unknown", "productpage-v1", "/productpage").is_some_and(|n| n > 0),
        "{last}"
    );
    assert!(
        top_rows.iter().all(|r| r["destination"] != "reviews-v3"),
        "80/20: {last}"
    );
    let screen = run(
        "script",
        &[
            "-qec",
            &format!(
                "stty cols 160 rows 30; {} top --duration 2 --run-dir {}",
                weft_bin(),
                rd.display()
            ),
            "/dev/null",
        ],
    );
    assert!(screen.status.success(), "{}{}", screen.stdout, screen.stderr);
    assert!(
        screen.stdout.contains("SOURCE") && screen.stdout.contains("/reviews/0"),
        "the table was drawn: {}",
        screen.stdout
    );
    let piped = run(weft_bin(), &["top", "--run-dir", rd.to_str().expect("utf-8")]);
    assert!(
        !piped.status.success() && piped.stderr.contains("-o json"),
        "{}",
        piped.stderr
    );
    let _ = load.kill();
    let _ = load.wait();

    // An edit reaches every proxy: a new version, ACKed, and the new rule in `routes`.
    let before: Value = proxies
        .iter()
        .find(|p| p["instance"] == "productpage-v1-0")
        .map(|p| p["ackedVersion"].clone())
        .expect("productpage");
    std::fs::copy(routing("jason-v2").join("virtual-services.yaml"), &vs).expect("copy");
    eventually(
        "productpage ACKs the jason-v2 routes",
        Duration::from_secs(20),
        || {
            let s = json(rd, &["proxy-status"]);
            let p = rows(&s, "proxies")
                .iter()
                .find(|p| p["instance"] == "productpage-v1-0")?
                .clone();
            (p["sync"] == "SYNCED" && p["ackedVersion"] != before).then_some(())
        },
    );
    let text = text_of(rd, &["routes", "reviews"]);
    assert!(text.contains("end-user=jason"), "{text}");
    assert!(text.contains("VirtualService default/reviews"), "{text}");

    // Bad names say what exists.
    let out = run(
        weft_bin(),
        &[
            "proxy-config",
            "listeners",
            "nosuch",
            "--run-dir",
            rd.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no sidecar \"nosuch\"") && out.stderr.contains("reviews-v1-0"),
        "{}",
        out.stderr
    );
    let out = run(
        weft_bin(),
        &["routes", "nosuch", "--run-dir", rd.to_str().expect("utf-8")],
    );
    assert!(
        !out.status.success() && out.stderr.contains("may reach a service"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_a_mesh_the_verbs_say_so() {
    let empty = tempdir::Dir::new("weft-views-none");
    let rd = empty.path.to_str().expect("utf-8");
    let out = run(weft_bin(), &["proxy-status", "--run-dir", rd]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("no running mesh found"), "{}", out.stderr);
    let out = run(
        weft_bin(),
        &["proxy-config", "all", "reviews-v1", "--run-dir", rd],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("no sidecars found"), "{}", out.stderr);
}

/// A standalone proxy named by its admin address: an endpoint whose port refuses connections is
/// shown UNREACHABLE once traffic found it so, the live one not.
#[test]
fn proxy_config_shows_the_balancers_unreachable_mark() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let echo = rt
        .block_on(weft_test_support::HttpEcho::start("live"))
        .expect("echo");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let proxy = common::Proxy::start(&format!(
        "admin: {{address: \"127.0.0.1:0\"}}\ninbound: {{mesh: \"127.0.0.1:0\"}}\noutbound:\n  listen: null\n  ports:\n    - {{listen: \"127.0.0.1:0\", service: web, port: 80}}\nservices:\n  - {{name: web, ports: [{{port: 80, protocol: http}}], loadBalancer: ROUND_ROBIN}}\nendpoints:\n  - service: web\n    port: 80\n    endpoints:\n      - {{address: \"{}\", workload: live}}\n      - {{address: \"{closed}\", workload: gone}}\n",
        echo.addr()
    ));
    let admin = proxy.bound.admin.to_string();
    let state = |workload: &str| -> Value {
        let out = run(weft_bin(), &["proxy-config", "endpoints", &admin, "-o", "json"]);
        assert!(out.status.success(), "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).expect("json");
        let e = rows(&v[0], "endpoints")
            .iter()
            .find(|e| e["workload"] == workload)
            .cloned()
            .unwrap_or_else(|| panic!("{workload}: {v}"));
        e["state"].clone()
    };
    assert_eq!(state("gone")["unreachable"], false, "nothing tried it yet");
    let url = format!("http://{}/", proxy.bound.outbound_ports[0]);
    for _ in 0..4 {
        let out = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
        assert_eq!(out.stdout, "200", "failover to the live endpoint: {}", out.stderr);
    }
    assert_eq!(state("gone")["unreachable"], true);
    assert_eq!(state("live")["unreachable"], false);
    let text = run(weft_bin(), &["proxy-config", "endpoints", &admin]).stdout;
    assert!(
        text.lines()
            .any(|l| l.contains("gone") && l.ends_with("UNREACHABLE")),
        "{text}"
    );
}

/// A proxy whose admin port listens on every address serves `/tap` to loopback callers only;
/// bad parameters are refused with what is accepted.
#[test]
fn tap_is_served_to_loopback_callers_only() {
    let proxy = common::Proxy::start(
        "admin: {address: \"0.0.0.0:0\"}\ninbound: {mesh: \"127.0.0.1:0\"}\noutbound: {listen: null}\n",
    );
    let port = proxy.bound.admin.port();
    // This host's address on its default route: a peer that is not loopback.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    probe.connect("192.0.2.1:9").expect("a default route");
    let host_ip = probe.local_addr().expect("local address").ip();
    assert!(!host_ip.is_loopback(), "{host_ip}");
    let status = |url: &str| curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", url]).stdout;
    assert_eq!(status(&format!("http://{host_ip}:{port}/tap")), "403");
    let body = curl(&["-s", &format!("http://{host_ip}:{port}/tap")]).stdout;
    assert!(body.contains("loopback callers only"), "{body}");
    assert_eq!(status(&format!("http://127.0.0.1:{port}/tap?max_rps=0")), "400");
    assert_eq!(status(&format!("http://127.0.0.1:{port}/tap?bogus=1")), "400");
    // From loopback it opens: the first line says so, and the stream stays open (curl gives up).
    let open = curl(&["-s", "--max-time", "1", &format!("http://127.0.0.1:{port}/tap")]);
    assert!(open.stdout.contains("\"tap\":\"open\""), "{}", open.stdout);
    assert_eq!(open.status.code(), Some(28), "curl timed out on the open stream");
}
