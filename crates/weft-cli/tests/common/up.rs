//! Running the real `weft up` as a child process: read its output, find what it started, and
//! the bundled Bookinfo example with its routing variants.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{curl, run, tempdir, weft_bin};

/// A running `weft up`, killed (and reaped) on drop.
pub struct Up {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub output: Vec<String>,
    stderr: PathBuf,
}

impl Up {
    pub fn start(dir: &Path, run_dir: &Path) -> Up {
        Self::start_with(dir, run_dir, &[])
    }

    /// `weft up DIR --run-dir RUN_DIR extra_args...`.
    pub fn start_with(dir: &Path, run_dir: &Path, extra_args: &[&str]) -> Up {
        // Kept for a failure message; removed with the run directory.
        let stderr = run_dir.join("up.stderr.log");
        let mut child = Command::new(weft_bin())
            .arg("up")
            .arg(dir)
            .arg("--run-dir")
            .arg(run_dir)
            .args(["--ready-timeout", "30"])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).expect("stderr file")))
            .spawn()
            .expect("spawn weft up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Up {
            child,
            lines,
            output: Vec::new(),
            stderr,
        }
    }

    /// Reads output until a line contains `what`.
    pub fn wait_for(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        let status = self.child.try_wait().ok().flatten();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        panic!(
            "weft up never printed {what:?} (exit status: {status:?}); output so far:\n{}\nstderr:\n{stderr}\nthreads:\n{}",
            self.output.join("\n"),
            threads_of(self.child.id())
        );
    }
}

/// What each thread of a live process is doing (name, state, kernel wait channel), for a
/// failure message about a process that stopped making progress.
fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(process gone)".into();
    };
    let mut out = String::new();
    for task in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or_default()
            .to_string();
        out.push_str(&format!(
            "{} {} {} wchan={}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            state,
            read("wchan")
        ));
    }
    out
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process a running `weft up` recorded (apps and sidecars).
pub fn recorded_pids(run_dir: &Path) -> Vec<u32> {
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("up.json")).expect("up.json")).expect("json");
    let mut pids = vec![rec["pid"].as_u64().expect("pid") as u32];
    for i in rec["instances"].as_array().expect("instances") {
        pids.push(i["appPid"].as_u64().expect("app pid") as u32);
        pids.push(i["sidecarPid"].as_u64().expect("sidecar pid") as u32);
    }
    pids
}

/// Those still running (a zombie waiting for its parent counts as gone).
pub fn still_running(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        })
        .collect()
}

pub fn processes_of(run_dir: &Path) -> Vec<String> {
    let out = run("pgrep", &["-af", &run_dir.display().to_string()]);
    out.stdout
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

/// Copies the bundled example (base documents only) so a test can edit it.
pub fn bookinfo_copy() -> tempdir::Dir {
    let dir = tempdir::Dir::new("weft-up-bookinfo");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    for f in ["mesh.yaml", "destination-rules.yaml"] {
        std::fs::copy(src.join(f), dir.path.join(f)).expect("copy example");
    }
    dir
}

pub fn routing(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo/routing")
        .join(variant)
}

/// Which reviews versions the product page showed over `n` loads.
pub fn versions_seen(url: &str, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let page = curl(&["-sS", url]).stdout;
        for v in ["reviews-v1", "reviews-v2", "reviews-v3"] {
            if page.contains(v) {
                seen.insert(v.to_string());
            }
        }
    }
    seen
}

/// Polls until `n` consecutive loads of `url` show exactly the reviews versions `want` (a
/// routing change has reached the sidecars), then checks that a second run of `n` loads agrees
/// (it stays). Panics with what was last seen once `within` has passed.
pub fn wait_for_versions(url: &str, want: &[&str], n: usize, within: Duration) {
    let want: std::collections::BTreeSet<String> = want.iter().map(|v| v.to_string()).collect();
    let deadline = Instant::now() + within;
    loop {
        let seen = versions_seen(url, n);
        if seen == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still shows {seen:?}, not {want:?}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(versions_seen(url, n), want, "{url} changed back");
}

/// Every sidecar a running `weft up` recorded holds its bootstrap token in its environment
/// (`WEFT_TOKEN`, readable only by its own user) and nowhere in its arguments (readable by every
/// local user through `ps` and /proc/PID/cmdline); each workload has its own token.
pub fn assert_tokens_only_in_environment(run_dir: &Path) {
    let tokens: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("control/tokens.json")).expect("the run's tokens.json"),
    )
    .expect("json");
    let tokens = tokens.as_object().expect("token map");
    assert!(!tokens.is_empty());
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("up.json")).expect("up.json")).expect("json");
    for i in rec["instances"].as_array().expect("instances") {
        let pid = i["sidecarPid"].as_u64().expect("sidecar pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains(" proxy "), "not the sidecar: {cmdline}");
        assert!(!cmdline.contains("--token"), "{cmdline}");
        for token in tokens.keys() {
            assert!(
                !cmdline.contains(token.as_str()),
                "a token in the arguments: {cmdline}"
            );
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let environ = String::from_utf8_lossy(&environ);
        let token = environ
            .split('\0')
            .find_map(|kv| kv.strip_prefix("WEFT_TOKEN="))
            .unwrap_or_else(|| panic!("no WEFT_TOKEN in the sidecar's environment: {environ}"));
        let grant = &tokens[token];
        assert_eq!(grant["workload"], i["workload"], "{grant}");
    }
}
