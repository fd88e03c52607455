//! Tokens (issue 19, item 7): `weft token create --ttl`, `weft token list` and `weft token
//! revoke`; the running control plane refuses a revoked or expired token at once.

mod common;

use std::time::{Duration, Instant};

use common::control::{ready_status, sidecar_with, sidecar_yaml, wait_ready, Control};
use common::{run, tempdir, weft_bin, Proxy};

const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v1}\nspec: {labels: {app: reviews, version: v1}, ports: [{name: http, port: 9080}]}\n";

fn token(state: &str, args: &[&str]) -> common::Output {
    run(weft_bin(), &[&["token"], args, &["--state-dir", state]].concat())
}

fn create(state: &str, ttl: Option<&str>) -> String {
    let mut args = vec!["create", "--workload", "reviews-v1"];
    if let Some(ttl) = ttl {
        args.extend(["--ttl", ttl]);
    }
    let out = token(state, &args);
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout.trim().to_string()
}

/// The proxy is refused by the control plane (its log says so; it never becomes ready).
fn refused(p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.logs().contains("wrong bootstrap token") {
        assert!(Instant::now() < deadline, "not refused:\n{}", p.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ready_status(p), "503");
}

#[test]
fn tokens_expire_list_and_revoke() {
    let config = tempdir::Dir::new("weft-tokens-config");
    let state = tempdir::Dir::new("weft-tokens-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let s = state.path.to_str().expect("utf-8");
    let yaml = sidecar_yaml("reviews-v1", "default", "", "");

    let good = create(s, Some("1h"));
    let revoked = create(s, None);
    let short = create(s, Some("1s"));
    let listed = token(s, &["list"]);
    assert!(listed.status.success(), "{}", listed.stderr);
    for t in [&good, &revoked, &short] {
        assert!(listed.stdout.contains(&t[..8]), "{}", listed.stdout);
        assert!(
            !listed.stdout.contains(t.as_str()),
            "a whole token listed: {}",
            listed.stdout
        );
    }
    assert!(listed.stdout.contains("never"), "{}", listed.stdout);
    let json = token(s, &["list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");

    let out = token(s, &["revoke", &revoked[..8]]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("reviews-v1"), "{}", out.stdout);
    let again = token(s, &["revoke", &revoked[..8]]);
    assert!(!again.status.success());
    assert!(again.stderr.contains("no token starts with"), "{}", again.stderr);

    let accepted = sidecar_with(&control, &good, &yaml, &[]);
    wait_ready(&accepted);
    drop(accepted);
    let p = sidecar_with(&control, &revoked, &yaml, &[]);
    refused(&p);
    drop(p);
    // Past its one second (expiry is to the second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !token(s, &["list"]).stdout.contains("(expired)") {
        assert!(Instant::now() < deadline, "the 1s token never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = sidecar_with(&control, &short, &yaml, &[]);
    refused(&p);
}
