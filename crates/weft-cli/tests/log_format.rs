//! Logs people and tools read (issue 19, item 4): `--log-format json` writes one JSON object
//! per line with an RFC 3339 timestamp; text logs written to a file carry no colour codes and
//! start with one summary line, not the whole config.

mod common;

const YAML: &str = "workload: {name: w1}\nadmin: {address: \"127.0.0.1:0\"}\ninbound: {mesh: \"127.0.0.1:0\"}\noutbound: {listen: \"127.0.0.1:0\"}\n";

fn wait_for_log(p: &common::Proxy, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs = p.logs();
        if logs.contains(what) {
            return logs;
        }
        assert!(std::time::Instant::now() < deadline, "no {what:?} in:\n{logs}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let p = common::Proxy::start_with(YAML, &["--log-format", "json"]);
    let logs = wait_for_log(&p, "starting");
    for line in logs.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let t = v["timestamp"].as_str().expect("timestamp");
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
}

#[test]
fn text_logs_in_a_file_are_plain_and_start_with_one_line() {
    let p = common::Proxy::start(YAML);
    let logs = wait_for_log(&p, "starting");
    assert!(!logs.contains('\u{1b}'), "colour codes in a file:\n{logs}");
    let first = logs.lines().next().expect("a line");
    assert!(
        first.contains("weft proxy") && first.contains("starting"),
        "{first}"
    );
    // RFC 3339, UTC.
    let stamp = first.split_whitespace().next().expect("time");
    assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{stamp}");
}
