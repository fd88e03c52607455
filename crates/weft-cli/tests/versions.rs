//! Versions (issue 19, item 5): `weft version` and `--version` print the client's version and
//! git commit, and with a running mesh the control plane's and each proxy's; `weft status`
//! shows each proxy's build and the config it runs under honest column names.

mod common;

use std::time::Duration;

use common::up::{bookinfo_copy, Up};
use common::{run, tempdir, weft_bin};

/// The commit `weft --version` names, checked to look like one when built in a git checkout.
fn client_build() -> String {
    let out = run(weft_bin(), &["--version"]);
    assert!(out.status.success(), "{}", out.stderr);
    let line = out.stdout.trim().to_string();
    let build = line
        .strip_prefix("weft ")
        .expect("weft VERSION (COMMIT)")
        .to_string();
    let in_git = run("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .status
        .success();
    if in_git {
        let commit = build
            .split_once(" (")
            .and_then(|(_, c)| c.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no commit in {line:?}"));
        assert!(
            commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{line:?}"
        );
    }
    build
}

#[test]
fn version_names_the_client_control_plane_and_every_proxy() {
    let build = client_build();
    let client = run(weft_bin(), &["version", "--client"]);
    assert!(client.status.success(), "{}", client.stderr);
    assert_eq!(client.stdout.trim(), format!("client: weft {build}"));

    let dir = bookinfo_copy();
    let run_dir = tempdir::Dir::new("weft-versions-run");
    let mut up = Up::start(&dir.path, &run_dir.path);
    up.wait_for("Open the application:", Duration::from_secs(60));
    let rd = run_dir.path.to_str().expect("utf-8");
    let out = run(weft_bin(), &["version", "--run-dir", rd, "-o", "json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let describe = |v: &serde_json::Value| match v["commit"].as_str() {
        Some(c) => format!("{} ({c})", v["version"].as_str().expect("version")),
        None => v["version"].as_str().expect("version").to_string(),
    };
    assert_eq!(describe(&v["client"]), build);
    assert_eq!(describe(&v["controlPlane"]), build);
    let proxies = v["proxies"].as_array().expect("proxies");
    assert_eq!(proxies.len(), 6, "{v}");
    for p in proxies {
        assert_eq!(p["version"].as_str(), Some(build.as_str()), "{p}");
    }
    let text = run(weft_bin(), &["version", "--run-dir", rd]);
    assert!(
        text.stdout.contains(&format!("control plane: weft {build}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains(&format!("proxy productpage-v1-0: weft {build}")),
        "{}",
        text.stdout
    );

    let status = run(weft_bin(), &["status", "--run-dir", rd]);
    assert!(status.status.success(), "{}", status.stderr);
    let header = status
        .stdout
        .lines()
        .find(|l| l.starts_with("PROXY "))
        .unwrap_or_else(|| panic!("{}", status.stdout));
    assert!(
        header.contains("CONFIG") && header.ends_with("PROXY VERSION"),
        "{header}"
    );
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("productpage-v1-0"))
        .unwrap_or_else(|| panic!("{}", status.stdout));
    assert!(row.ends_with(&build), "{row}");
}
