//! `weft explain` agrees with the proxy and previews variants (issue 19, item 6): a port the
//! service does not have is `not_found` with the proxy's reason; several paths are read
//! together; an unknown `--from` is an error; an unknown host gets a "did you mean"; with
//! `--exit-code` a refused request exits 3.

mod common;

use common::{run, weft_bin};

fn bookinfo() -> String {
    format!("{}/../../examples/bookinfo", env!("CARGO_MANIFEST_DIR"))
}

fn explain(args: &[&str]) -> common::Output {
    run(weft_bin(), &[&["explain"], args].concat())
}

#[test]
fn a_port_the_service_does_not_have_is_not_found_as_the_proxy_says() {
    let base = bookinfo();
    for url in ["GET http://reviews:9999/", "GET http://reviews/"] {
        let out = explain(&[&base, url, "-o", "json"]);
        assert!(out.status.success(), "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(v["decision"], "not_found", "{url}: {v}");
        assert!(v["reason"].as_str().is_some_and(|r| r.starts_with("NR: ")), "{v}");
        let refused = explain(&["--exit-code", &base, url]);
        assert_eq!(refused.status.code(), Some(3), "{}", refused.stdout);
    }
    let routed = explain(&["--exit-code", &base, "GET http://reviews:9080/"]);
    assert_eq!(routed.status.code(), Some(0), "{}", routed.stdout);
}

#[test]
fn a_variant_is_previewed_beside_the_base_documents() {
    let base = bookinfo();
    let jason = format!("{base}/routing/jason-v2");
    let out = explain(&[
        &base,
        &jason,
        "-H",
        "end-user: jason",
        "GET http://reviews:9080/",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["decision"], "route", "{v}");
    assert_eq!(v["backends"][0]["subset"], "v2", "{v}");
    // The base alone has no routing rules: the service itself.
    let out = explain(&[
        &base,
        "-H",
        "end-user: jason",
        "GET http://reviews:9080/",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["backends"][0]["subset"], serde_json::Value::Null, "{v}");
    // A denial exits 3 with --exit-code, 0 without.
    let authz = format!("{base}/routing/authz");
    let denied = explain(&["--exit-code", &base, &authz, "GET http://reviews:9080/"]);
    assert_eq!(denied.status.code(), Some(3), "{}", denied.stdout);
    let denied = explain(&[&base, &authz, "GET http://reviews:9080/"]);
    assert_eq!(denied.status.code(), Some(0), "{}", denied.stdout);
}

#[test]
fn unknown_callers_and_hosts_are_named() {
    let base = bookinfo();
    let out = explain(&[&base, "--from", "nosuch", "GET http://reviews:9080/"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    assert!(
        out.stderr.contains("no Workload default/nosuch"),
        "{}",
        out.stderr
    );
    let out = explain(&[&base, "--from", "productpag-v1", "GET http://reviews:9080/"]);
    assert!(
        out.stderr.contains("did you mean `productpage-v1`?"),
        "{}",
        out.stderr
    );
    let out = explain(&[&base, "GET http://reviewz:9080/"]);
    assert!(out.stderr.contains("did you mean `reviews`?"), "{}", out.stderr);
    let out = explain(&["GET http://reviews:9080/"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

/// `weft analyze examples/`: routing variants skipped at any depth (with a note), the sidecar's
/// ProxyConfig recognised as one: no errors.
#[test]
fn analyze_skips_nested_variants_and_knows_a_proxy_config() {
    let examples = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    let out = run(weft_bin(), &["analyze", &examples, "-o", "json"]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(findings[0]["code"], "WEFT0009", "{v}");
    assert_eq!(findings[0]["severity"], "info", "{v}");
    assert!(
        out.stderr.contains("note: skipped") && out.stderr.contains("bookinfo/routing"),
        "{}",
        out.stderr
    );
}
