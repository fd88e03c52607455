//! Tests that need what an ordinary account or machine may lack (root for network namespaces,
//! iptables and `SO_MARK`; an IPv6 loopback) skip elsewhere, but must not pass silently in CI:
//! there, a test that cannot run fails, so "all green" means they ran.

/// `CI=true` (as CI services set it) or `WEFT_REQUIRE_ROOT=1` (as `.ci/run` does): a test that
/// needs root or IPv6 must run, and fails when it cannot.
pub fn must_run() -> bool {
    let set = |name: &str, values: &[&str]| {
        std::env::var(name).is_ok_and(|v| values.iter().any(|want| v.eq_ignore_ascii_case(want)))
    };
    set("CI", &["true", "1"]) || set("WEFT_REQUIRE_ROOT", &["1", "true"])
}

/// Whether this process runs with effective uid 0, from `/proc/self/status` (no `unsafe`, no
/// dependency for one number). False where that file cannot be read.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_owned();
            // Real, effective, saved, filesystem: the second is the one permissions use.
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Reports that `test` cannot run because `why`: panics under [`must_run`], otherwise prints
/// that it skipped (to stderr, which `cargo test` shows for a failing test and `--nocapture`
/// shows always).
///
/// # Panics
/// Under `CI=true` or `WEFT_REQUIRE_ROOT=1`: that is the point.
pub fn cannot_run(test: &str, why: &str) {
    if must_run() {
        panic!("{test} cannot run here ({why}), and CI=true or WEFT_REQUIRE_ROOT=1 requires it to");
    }
    eprintln!("skipped {test}: {why}");
}

/// True when running as root; otherwise [`cannot_run`] (panics under CI, else prints
/// "skipped") and false, for `if !require_root(..) { return; }`.
pub fn require_root(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    cannot_run(test, &format!("needs root {why}"));
    false
}
