//! `weft check`: certificate expiry of a CA in a state directory, text and JSON, exit codes.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{run, tempdir, weft_bin};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};

/// A root CA (what `from_files` loads) valid until `now + offset` (negative: already expired).
fn root(dir: &Path, cn: &str, expires_in_secs: i64) {
    std::fs::create_dir_all(dir).expect("dir");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(400 * 86_400)).into();
    params.not_after = if expires_in_secs >= 0 {
        now + Duration::from_secs(expires_in_secs.unsigned_abs())
    } else {
        now - Duration::from_secs(expires_in_secs.unsigned_abs())
    }
    .into();
    let cert = params.self_signed(&key).expect("root");
    std::fs::write(dir.join("ca-cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).expect("write");
    weft_control::identity::CertificateAuthority::from_files(
        &dir.join("ca-cert.pem"),
        &dir.join("ca-key.pem"),
    )
    .expect("a usable CA");
}

fn check(dir: &Path, extra: &[&str]) -> common::Output {
    let state = dir.join("state");
    let run_dir = dir.join("no-run");
    let mut args = vec![
        "check",
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--run-dir",
        run_dir.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    run(weft_bin(), &args)
}

#[test]
fn a_root_expiring_within_the_warning_window_warns_and_an_expired_one_fails() {
    let tmp = tempdir::Dir::new("weft-check-soon");
    let dir = tmp.path.clone();
    root(&dir.join("state"), "short-lived root", 10 * 86_400);

    let out = check(&dir, &[]);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("short-lived root"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.starts_with("WARNING") && line.contains("root"), "{line}");
    assert!(
        line.contains("expires in 9 days") || line.contains("expires in 10 days"),
        "{line}"
    );
    assert!(
        out.stdout.contains("workload certificates not checked"),
        "{}",
        out.stdout
    );

    let out = check(&dir, &["-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["result"], "warning", "{v}");
    assert_eq!(v["certificates"][0]["kind"], "root");
    assert_eq!(v["certificates"][0]["level"], "warning");
    assert!(v["certificates"][0]["notAfter"].as_i64().is_some());

    let out = check(&dir, &["--warn-days", "7", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["result"], "ok", "{v}");

    root(&dir.join("state"), "expired root", -86_400);
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ERROR") && l.contains("expired root")),
        "{}",
        out.stdout
    );

    let out = run(
        weft_bin(),
        &[
            "check",
            "--state-dir",
            dir.join("missing").to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("ca-cert.pem"), "{}", out.stderr);
}
