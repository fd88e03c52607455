//! `weft load` shows its progress (issue 19, item 7): a line a second with the rate, the
//! answers by status and p50/p99 so far (rewritten in place on a terminal; `--progress` prints
//! them line by line elsewhere, as here).

mod common;

use common::weft_bin;
use weft_test_support::HttpEcho;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_prints_a_progress_line_a_second() {
    let echo = HttpEcho::start("echo").await.expect("echo");
    let url = format!("http://{}/", echo.addr());
    let out = tokio::process::Command::new(weft_bin())
        .args(["load", &url, "--rps", "20", "--duration", "2.5", "--progress"])
        .output()
        .await
        .expect("weft load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("req/s")).collect();
    assert!(lines.len() >= 2, "{stderr}");
    for l in &lines {
        assert!(
            l.contains("200: ") && l.contains("p50 ") && l.contains("p99 "),
            "{l}"
        );
    }
    // Without --progress and off a terminal: only the report.
    let quiet = tokio::process::Command::new(weft_bin())
        .args(["load", &url, "--rps", "20", "--duration", "1.2"])
        .output()
        .await
        .expect("weft load");
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("req/s"));
    assert!(!stdout.is_empty());
}
