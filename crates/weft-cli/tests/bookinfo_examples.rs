//! examples/bookinfo stays valid: the base documents and every routing variant pass
//! `weft analyze` without findings, and `weft explain` routes as each variant's README line says.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const VARIANTS: &[&str] = &[
    "80-20",
    "all-v1",
    "authz",
    "fault-abort",
    "fault-delay",
    "gateway-api-80-20",
    "jason-v2",
    "linkerd-authz",
    "linkerd-profiles",
    "smi-80-20",
    "v3",
];

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

fn bookinfo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo")
}

/// (exit code, stdout, stderr)
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running weft");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running directory as the README builds it: the base documents plus one variant's files.
fn running_dir(variant: Option<&str>) -> TempDir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weft-bookinfo-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for base in ["mesh.yaml", "destination-rules.yaml"] {
        std::fs::copy(bookinfo().join(base), dir.join(base)).expect("copy base");
    }
    if let Some(v) = variant {
        let from = bookinfo().join("routing").join(v);
        for entry in std::fs::read_dir(&from).expect("variant dir").flatten() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy variant");
        }
    }
    TempDir(dir)
}

fn explain(dir: &Path, from: &str, url: &str, user: Option<&str>) -> Value {
    let mut cmd = weft();
    cmd.arg("explain")
        .arg(dir)
        .args(["--from", from, &format!("GET {url}"), "-o", "json"]);
    if let Some(u) = user {
        cmd.args(["-H", &format!("end-user: {u}")]);
    }
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// (service, subset, weight) of each backend.
fn backends(e: &Value) -> Vec<(String, Option<String>, u64)> {
    e["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["service"].as_str().unwrap_or_default().to_string(),
                b["subset"].as_str().map(String::from),
                b["weight"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";

fn subset(host: &str, subset: &str) -> Vec<(String, Option<String>, u64)> {
    vec![(host.to_string(), Some(subset.to_string()), 100)]
}

#[test]
fn every_example_folder_passes_analyze() {
    let root = bookinfo();
    let mut found: Vec<String> = std::fs::read_dir(root.join("routing"))
        .expect("routing dir")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    found.sort();
    assert_eq!(found, VARIANTS, "a new variant? add it here and to the README");

    // The base alone: no findings at all.
    let (code, stdout, stderr) = run(weft()
        .arg("analyze")
        .arg(root.join("mesh.yaml"))
        .arg(root.join("destination-rules.yaml")));
    assert_eq!((code, stdout.trim()), (0, "no findings"), "{stderr}");

    // The base with each variant: no findings either.
    for v in VARIANTS {
        let (code, stdout, stderr) = run(weft()
            .arg("analyze")
            .arg(root.join("mesh.yaml"))
            .arg(root.join("destination-rules.yaml"))
            .arg(root.join("routing").join(v)));
        assert_eq!((code, stdout.trim()), (0, "no findings"), "variant {v}: {stderr}");
        // As a running directory, the way the README has users build it.
        let dir = running_dir(Some(v));
        let (code, stdout, stderr) = run(weft().arg("analyze").arg(&dir.0));
        assert_eq!((code, stdout.trim()), (0, "no findings"), "variant {v}: {stderr}");
    }

    // The whole folder at once (every variant together) still has no errors: only warnings
    // about variants overlapping, which is why the README copies one variant at a time.
    let (code, stdout, stderr) = run(weft().arg("analyze").arg(&root));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains(": error "), "{stdout}");
}

#[test]
fn the_base_spreads_reviews_over_three_versions() {
    let dir = running_dir(None);
    let e = explain(&dir.0, "productpage-v1", "http://reviews:9080/reviews/0", None);
    assert_eq!(e["service"], REVIEWS);
    let endpoints = e["endpoints"].to_string();
    for w in ["reviews-v1.default", "reviews-v2.default", "reviews-v3.default"] {
        assert!(endpoints.contains(w), "{endpoints}");
    }
}

#[test]
fn jason_goes_to_v2_and_everyone_else_to_v1() {
    let dir = running_dir(Some("jason-v2"));
    let url = "http://reviews:9080/reviews/0";
    let jason = explain(&dir.0, "productpage-v1", url, Some("jason"));
    assert_eq!(backends(&jason), subset(REVIEWS, "v2"), "{jason}");
    for user in [None, Some("alice")] {
        let other = explain(&dir.0, "productpage-v1", url, user);
        assert_eq!(backends(&other), subset(REVIEWS, "v1"), "{other}");
    }
    // The other services go to their v1.
    let details = explain(&dir.0, "productpage-v1", "http://details:9080/details/0", None);
    assert_eq!(
        backends(&details),
        subset("details.default.svc.cluster.local", "v1")
    );
}

#[test]
fn all_v1_and_v3_pin_one_version() {
    let url = "http://reviews:9080/reviews/0";
    let dir = running_dir(Some("all-v1"));
    for user in [None, Some("jason")] {
        let e = explain(&dir.0, "productpage-v1", url, user);
        assert_eq!(backends(&e), subset(REVIEWS, "v1"), "{e}");
    }
    let dir = running_dir(Some("v3"));
    let e = explain(&dir.0, "productpage-v1", url, Some("jason"));
    assert_eq!(backends(&e), subset(REVIEWS, "v3"), "{e}");
}

#[test]
fn linkerd_profiles_name_routes_and_bound_them() {
    let dir = running_dir(Some("linkerd-profiles"));
    let e = explain(&dir.0, "reviews-v2", "http://ratings:9080/ratings/0", None);
    let p = &e["policies"];
    assert_eq!(p["route_name"], "GET /ratings/{id}", "{e}");
    assert_eq!(
        (p["timeout_ms"].as_u64(), p["retryable"].as_bool()),
        (Some(1000), Some(true)),
        "{e}"
    );
    assert_eq!(p["retries"]["retry_on"], serde_json::json!(["5xx"]), "{e}");
    assert_eq!(p["retry_budget"]["ratio"], 0.2, "{e}");
    let e = explain(&dir.0, "productpage-v1", "http://reviews:9080/reviews/0", None);
    let p = &e["policies"];
    assert_eq!(
        (p["route_name"].as_str(), p["timeout_ms"].as_u64()),
        (Some("GET /reviews/{id}"), Some(3000)),
        "{e}"
    );
    assert_eq!(
        (p["retryable"].as_bool(), p["retries"].is_null()),
        (None, true),
        "{e}"
    );
    // The profile does not choose destinations: reviews still spreads over its versions.
    assert_eq!(backends(&e), vec![(REVIEWS.to_string(), None, 1)], "{e}");
}

#[test]
fn the_80_20_splits_in_all_three_dialects() {
    let url = "http://reviews:9080/reviews/0";
    let dir = running_dir(Some("80-20"));
    let e = explain(&dir.0, "productpage-v1", url, None);
    assert_eq!(
        backends(&e),
        vec![
            (REVIEWS.to_string(), Some("v1".to_string()), 80),
            (REVIEWS.to_string(), Some("v2".to_string()), 20),
        ],
        "{e}"
    );
    // Gateway API and SMI split between per-version Services, in their own weight units.
    for (variant, kind, w1, w2) in [
        ("gateway-api-80-20", "HTTPRoute", 80, 20),
        ("smi-80-20", "TrafficSplit", 800, 200),
    ] {
        let dir = running_dir(Some(variant));
        let e = explain(&dir.0, "productpage-v1", url, None);
        assert_eq!(e["matched"]["kind"], kind, "{e}");
        assert_eq!(
            backends(&e),
            vec![
                ("reviews-v1.default.svc.cluster.local".to_string(), None, w1),
                ("reviews-v2.default.svc.cluster.local".to_string(), None, w2),
            ],
            "{variant}: {e}"
        );
        let endpoints = e["endpoints"].to_string();
        assert!(endpoints.contains("reviews-v1.default"), "{endpoints}");
        assert!(endpoints.contains("reviews-v2.default"), "{endpoints}");
        assert!(!endpoints.contains("reviews-v3.default"), "{endpoints}");
    }
}

#[test]
fn faults_hit_jason_only() {
    let url = "http://ratings:9080/ratings/0";
    let dir = running_dir(Some("fault-delay"));
    let jason = explain(&dir.0, "reviews-v2", url, Some("jason"));
    assert_eq!(jason["policies"]["fault"]["delay_ms"], 7000, "{jason}");
    assert_eq!(backends(&jason), subset(RATINGS, "v1"));
    let other = explain(&dir.0, "reviews-v2", url, Some("alice"));
    assert!(other["policies"]["fault"].is_null(), "{other}");
    // jason reaches ratings at all: his reviews are v2.
    let reviews = explain(
        &dir.0,
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        Some("jason"),
    );
    assert_eq!(backends(&reviews), subset(REVIEWS, "v2"));

    let dir = running_dir(Some("fault-abort"));
    let jason = explain(&dir.0, "reviews-v2", url, Some("jason"));
    assert_eq!(jason["policies"]["fault"]["abort_status"], 500, "{jason}");
    let other = explain(&dir.0, "reviews-v2", url, None);
    assert!(other["policies"]["fault"].is_null(), "{other}");
}

/// `weft demo-app` as `weft up` starts it (port from `PORT`, upstreams from `*_URL`), and
/// `weft load` against it.
#[test]
fn demo_app_and_load_commands() {
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = weft_test_support::free_port();
    let _app = Kill(
        weft()
            .args(["demo-app", "reviews", "--version", "v3"])
            .env("PORT", port.to_string())
            .env("RATINGS_URL", "http://127.0.0.1:1")
            .env("WEFT_WORKLOAD", "reviews-v3")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn weft demo-app"),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(weft_test_support::wait_for_http(
        addr,
        "/health",
        std::time::Duration::from_secs(10),
    ))
    .expect("demo app up");
    let (code, stdout, stderr) = run(weft().args([
        "load",
        &format!("http://{addr}/reviews/0"),
        "--rps",
        "20",
        "--duration",
        "0.5",
    ]));
    assert_eq!(code, 0, "{stderr}");
    // 20 rps for 0.5 s: at most its 10 ticks (a loaded machine may skip some; the exact rate
    // is checked tick for tick in paused time by weft-demo's tests), each answered 200.
    let sent: u32 = stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count: {stdout}"));
    assert!((1..=10).contains(&sent), "{stdout}");
    assert!(stdout.contains(&format!("200: {sent}")), "{stdout}");

    let (code, _, stderr) = run(weft().args(["demo-app", "reviews", "--version", "v9", "--port", "1"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("v1, v2 or v3"), "{stderr}");
}

#[test]
fn authz_lets_each_service_hear_only_its_callers() {
    let dir = running_dir(Some("authz"));
    let url = "http://reviews:9080/reviews/0";
    let ok = explain(&dir.0, "productpage-v1", url, None);
    assert_eq!(ok["decision"], "route", "{ok}");
    assert_eq!(ok["authorization"]["allowed"], true, "{ok}");
    assert_eq!(ok["authorization"]["name"], "reviews-viewer", "{ok}");
    assert_eq!(ok["mtls"]["mode"], "PERMISSIVE", "{ok}");
    let denied = explain(&dir.0, "ratings-v1", url, None);
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(denied["authorization"]["allowed"], false, "{denied}");
    let ratings = explain(&dir.0, "reviews-v2", "http://ratings:9080/ratings/0", None);
    assert_eq!(ratings["authorization"]["name"], "ratings-viewer", "{ratings}");
}

#[test]
fn linkerd_authz_lets_each_service_hear_only_its_callers() {
    let dir = running_dir(Some("linkerd-authz"));
    let url = "http://reviews:9080/reviews/0";
    let ok = explain(&dir.0, "productpage-v1", url, None);
    assert_eq!(ok["decision"], "route", "{ok}");
    assert_eq!(ok["authorization"]["allowed"], true, "{ok}");
    assert_eq!(ok["authorization"]["kind"], "Server", "{ok}");
    assert_eq!(ok["authorization"]["name"], "reviews-http", "{ok}");
    let denied = explain(&dir.0, "ratings-v1", url, None);
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(denied["authorization"]["allowed"], false, "{denied}");
    assert_eq!(denied["authorization"]["name"], "reviews-http", "{denied}");
    let ratings = explain(&dir.0, "reviews-v2", "http://ratings:9080/ratings/0", None);
    assert_eq!(ratings["authorization"]["allowed"], true, "{ratings}");
    assert_eq!(ratings["authorization"]["name"], "ratings-http", "{ratings}");
    // The page's port has no Server: the default policy lets the browser in.
    let page = explain(&dir.0, "details-v1", "http://productpage:9080/productpage", None);
    assert_eq!(page["authorization"], Value::Null, "{page}");
}
