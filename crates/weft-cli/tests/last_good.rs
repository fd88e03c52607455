//! Last good documents (issue 19, item 1): a live edit that does not parse or validate is
//! refused as a whole and the file's last good version stays in force — named with file:line
//! on its own line in `weft up`'s output, in `weft status` and in the control plane's metrics —
//! while deleting a file still removes what it defined.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::up::{bookinfo_copy, routing, versions_seen, Up};
use common::{curl, run, tempdir, weft_bin};

/// Polls until the product page shows exactly `want` over a few loads (a routing change takes
/// effect within a second; the deadline is generous for a loaded machine).
fn until_versions(url: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = versions_seen(url, 12);
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "{url}: saw {seen:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(run_dir: &std::path::Path) -> String {
    let out = run(
        weft_bin(),
        &["status", "--run-dir", run_dir.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
}

fn control_metrics(run_dir: &std::path::Path) -> String {
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("up.json")).expect("up.json")).expect("json");
    let admin = rec["controlAdmin"].as_str().expect("controlAdmin");
    let out = curl(&["-sS", "-f", &format!("http://{admin}/metrics")]);
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
}

#[test]
fn a_broken_edit_keeps_the_last_good_routing() {
    let dir = bookinfo_copy();
    let run_dir = tempdir::Dir::new("weft-last-good-run");
    let vs = dir.path.join("virtual-services.yaml");
    let jason = std::fs::read_to_string(routing("jason-v2").join("virtual-services.yaml")).expect("variant");
    std::fs::write(&vs, &jason).expect("write");
    let mut up = Up::start(&dir.path, &run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();
    let jason_url = format!("{url}?u=jason");
    until_versions(&url, &["reviews-v1"]);
    until_versions(&jason_url, &["reviews-v2"]);
    assert!(!status(&run_dir.path).contains("last good"));

    // A syntax error: one `}` missing. Refused, named on a line of its own, routing unchanged.
    let broken = jason.replacen("{host: reviews, subset: v1}", "{host: reviews, subset: v1", 1);
    assert_ne!(broken, jason);
    std::fs::write(&vs, &broken).expect("write");
    let refused = up.wait_for("refused", Duration::from_secs(15));
    assert!(
        refused.starts_with("weft up: refused virtual-services.yaml:"),
        "{refused}"
    );
    let named = up.wait_for("virtual-services.yaml:", Duration::from_secs(5));
    assert!(named.contains("WEFT0001"), "{named}");
    until_versions(&url, &["reviews-v1"]);
    until_versions(&jason_url, &["reviews-v2"]);
    let text = status(&run_dir.path);
    assert!(
        text.contains("serving the last good version of virtual-services.yaml since "),
        "{text}"
    );
    assert!(text.contains("virtual-services.yaml:"), "{text}");
    let metrics = control_metrics(&run_dir.path);
    assert!(
        metrics.contains("weft_control_config_refused{file=\"virtual-services.yaml\"} 1"),
        "{metrics}"
    );

    // A schema error (an unknown field): refused as well.
    let misspelt = jason.replacen("    route:\n", "    rout:\n", 1);
    assert_ne!(misspelt, jason);
    std::fs::write(&vs, &misspelt).expect("write");
    let refused = up.wait_for("WEFT0003", Duration::from_secs(15));
    assert!(refused.contains("virtual-services.yaml:"), "{refused}");
    until_versions(&jason_url, &["reviews-v2"]);
    until_versions(&url, &["reviews-v1"]);

    // A good edit applies, and the refusal is over.
    std::fs::copy(routing("all-v1").join("virtual-services.yaml"), &vs).expect("copy");
    up.wait_for("accepted virtual-services.yaml", Duration::from_secs(15));
    until_versions(&jason_url, &["reviews-v1"]);
    assert!(!status(&run_dir.path).contains("last good"));
    let metrics = control_metrics(&run_dir.path);
    assert!(!metrics.contains("weft_control_config_refused{"), "{metrics}");
    assert!(
        metrics.contains("weft_control_config_refusals_total 2"),
        "{metrics}"
    );

    // Deleting the file removes what it defined: every version serves again.
    std::fs::remove_file(&vs).expect("rm");
    until_versions(&url, &["reviews-v1", "reviews-v2", "reviews-v3"]);
}
