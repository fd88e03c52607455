//! `weft proxy --config` with bad input: refused with every problem, located, exit status 2.

mod common;

use common::{run, tempdir, weft_bin};

#[test]
fn a_bad_config_is_refused_with_file_line_and_field() {
    let dir = tempdir::Dir::new("weft-cli-config");
    let path = dir.path.join("bad.yaml");
    std::fs::write(&path, "admin:\n  address: \"127.0.0.1:0\"\n  adress: typo\n").expect("write");
    let out = run(weft_bin(), &["proxy", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("bad.yaml:3"), "{}", out.stderr);
    assert!(out.stderr.contains("adress"), "{}", out.stderr);

    std::fs::write(
        &path,
        "services:\n  - {name: a.b, ports: []}\nendpoints:\n  - {service: nope, port: 1}\n",
    )
    .expect("write");
    let out = run(weft_bin(), &["proxy", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    for field in ["services[0].name", "services[0].ports", "endpoints[0].service"] {
        assert!(out.stderr.contains(field), "missing {field}: {}", out.stderr);
    }
}

#[test]
fn a_missing_file_says_so() {
    let out = run(weft_bin(), &["proxy", "--config", "/nonexistent/weft.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("/nonexistent/weft.yaml") && out.stderr.contains("cannot read"),
        "{}",
        out.stderr
    );
}

#[test]
fn ready_and_config_dump_are_served() {
    let proxy = common::Proxy::start(
        "workload: {name: w1}\nadmin: {address: \"127.0.0.1:0\"}\ninbound: {mesh: \"127.0.0.1:0\"}\noutbound: {listen: \"127.0.0.1:0\"}\n",
    );
    let admin = proxy.bound.admin;
    for (path, want) in [("/live", "live"), ("/ready", "ready")] {
        let out = common::curl(&["-sS", "-f", &format!("http://{admin}{path}")]);
        assert_eq!(out.stdout.trim(), want, "{path}: {}", out.stderr);
    }
    let out = common::curl(&["-sS", "-f", &format!("http://{admin}/config_dump")]);
    let dump: serde_json::Value = serde_json::from_str(&out.stdout).expect("config_dump is JSON");
    assert_eq!(dump["workload"]["name"], "w1");
    // Defaults are filled in: the effective config, not the file.
    assert_eq!(dump["limits"]["detectTimeoutMs"], 1000);
    let out = common::curl(&["-sS", &format!("http://{admin}/metrics")]);
    assert!(out.stdout.contains("# EOF"), "{}", out.stdout);
}
