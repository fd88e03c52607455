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

#[test]
fn the_demo_balances_over_both_versions_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(weft_bin())
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn weft demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().expect("demo printed its URLs").expect("utf-8");
        if let Some(rest) = line.split("per-service port   curl http://").nth(1) {
            break rest.trim_end_matches('/').to_string();
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let out = common::curl(&["-sS", "-i", &format!("http://{port}/")]);
        if let Some(s) = out.stdout.lines().find_map(|l| l.strip_prefix("x-echo-server: ")) {
            seen.insert(s.trim().to_string());
        }
    }
    assert_eq!(seen, ["reviews-v1".to_string(), "reviews-v2".to_string()].into());
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "weft demo did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
