//! One way to find a running mesh (issue 19, item 3): every verb that reads one takes
//! `--run-dir` and `--control-admin` and, with neither, finds the `weft up` started from the
//! current directory or says what to pass; every command `weft up` prints works as printed, two
//! meshes run from two directories at once, and `weft logs` says when its run has stopped.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{tempdir, up::bookinfo_copy, weft_bin, Output};

/// A `weft up` started from a directory of its choosing, killed on drop.
struct UpIn {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl UpIn {
    fn start(cwd: &Path, docs: &Path, extra: &[&str]) -> UpIn {
        let mut child = Command::new(weft_bin())
            .current_dir(cwd)
            .arg("up")
            .arg(docs)
            .args(["--ready-timeout", "30"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        UpIn {
            child,
            lines,
            output: Vec::new(),
        }
    }

    /// Reads output until a line contains `what`.
    fn wait_for(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
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
        panic!("weft up never printed {what:?}:\n{}", self.output.join("\n"));
    }

    /// Waits for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for UpIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weft ARGS` run from `cwd`.
fn weft_in(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(weft_bin())
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run weft");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every `weft ...` command quoted in backticks in `lines`.
fn printed_commands(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 1 && part.starts_with("weft ") {
                out.push(part.to_string());
            }
        }
    }
    out
}

#[test]
fn verbs_find_the_run_of_their_directory_and_printed_hints_work_as_printed() {
    let here = tempdir::Dir::new("weft-find-here");
    let elsewhere = tempdir::Dir::new("weft-find-elsewhere");
    let third = tempdir::Dir::new("weft-find-third");
    let docs = bookinfo_copy();
    let docs2 = bookinfo_copy();

    // A mesh with the default run directory, started from `here`.
    let mut first = UpIn::start(&here.path, &docs.path, &[]);
    first.wait_for("Open the application");
    let status = weft_in(&here.path, &["status"]);
    assert!(status.status.success(), "{}", status.stderr);
    assert!(status.stdout.contains("productpage-v1"), "{}", status.stdout);

    // From another directory nothing runs: the error says what to pass (unless a `weft
    // control` with its defaults happens to run on this machine, which is then found).
    let default_control = std::net::TcpStream::connect("127.0.0.1:15014").is_ok();
    let lost = weft_in(&elsewhere.path, &["status"]);
    if !default_control {
        assert!(!lost.status.success());
        assert!(
            lost.stderr.contains("--run-dir") && lost.stderr.contains("--control-admin"),
            "{}",
            lost.stderr
        );
    }
    let run_dir = here.path.join(".weft/run");
    let found = weft_in(
        &elsewhere.path,
        &["status", "--run-dir", run_dir.to_str().expect("utf-8")],
    );
    assert!(found.status.success(), "{}", found.stderr);
    assert!(found.stdout.contains("productpage-v1"), "{}", found.stdout);

    // A second mesh at the same time, from `elsewhere`, with a run directory of its own: every
    // command it prints names that run directory and works, as printed, from a third directory.
    let run_dir2 = elsewhere.path.join("run2");
    let mut second = UpIn::start(
        &elsewhere.path,
        &docs2.path,
        &["--run-dir", run_dir2.to_str().expect("utf-8")],
    );
    second.wait_for("stops everything");
    let commands = printed_commands(&second.output);
    let attach = second
        .output
        .iter()
        .find(|l| l.starts_with("Attach one more proxy: discovery on "))
        .unwrap_or_else(|| panic!("no attach hint:\n{}", second.output.join("\n")));
    assert!(attach.contains("trust-bundle.pem"), "{attach}");
    let (down, rest): (Vec<_>, Vec<_>) = commands.iter().partition(|c| c.starts_with("weft down"));
    assert!(
        rest.iter().any(|c| c.starts_with("weft status")) && rest.iter().any(|c| c.starts_with("weft logs")),
        "{commands:?}"
    );
    for command in &rest {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        if args[0] == "token" {
            continue; // names a placeholder workload; tokens are tested on their own
        }
        assert!(command.contains("--run-dir"), "{command}");
        let out = weft_in(&third.path, &args);
        assert!(
            out.status.success(),
            "`{command}` failed as printed: {}{}",
            out.stdout,
            out.stderr
        );
    }
    // The first mesh is untouched by the second.
    let status = weft_in(&here.path, &["status", "-o", "json"]);
    assert!(status.status.success(), "{}", status.stderr);

    let down: Vec<&str> = down
        .first()
        .unwrap_or_else(|| panic!("no `weft down` hint: {commands:?}"))
        .split_whitespace()
        .skip(1)
        .collect();
    let stopped = weft_in(&third.path, &down);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        second.wait_exit(Duration::from_secs(20)),
        "the second mesh did not stop"
    );

    // Its logs are still there, and `weft logs` says the run is over.
    let logs = weft_in(
        &third.path,
        &[
            "logs",
            "details-v1",
            "--run-dir",
            run_dir2.to_str().expect("utf-8"),
        ],
    );
    assert!(logs.status.success(), "{}", logs.stderr);
    assert!(logs.stderr.contains("is not running"), "{}", logs.stderr);

    // `weft down` from `here`, with no flags, stops the first.
    let stopped = weft_in(&here.path, &["down"]);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        first.wait_exit(Duration::from_secs(20)),
        "the first mesh did not stop"
    );
}

/// `weft logs`: this run's files in plain text; `--tail` and `--since` select lines.
#[test]
fn logs_tail_and_since_select_lines() {
    let here = tempdir::Dir::new("weft-logs-select");
    let docs = bookinfo_copy();
    let mut up = UpIn::start(&here.path, &docs.path, &[]);
    up.wait_for("Open the application");
    let all = weft_in(&here.path, &["logs", "details-v1", "--sidecar"]);
    assert!(all.status.success(), "{}", all.stderr);
    // Plain text for files: no colour codes, one summary line instead of the whole config.
    assert!(!all.stdout.contains('\u{1b}'), "{}", all.stdout);
    assert!(all.stdout.contains("starting"), "{}", all.stdout);
    assert!(!all.stdout.contains("effective config"), "{}", all.stdout);
    // Times and durations for people, not Rust's debug forms.
    let issued = all
        .stdout
        .lines()
        .find(|l| l.contains("certificate issued"))
        .unwrap_or_else(|| panic!("{}", all.stdout));
    assert!(
        !issued.contains("SystemTime") && !issued.contains("tv_sec"),
        "{issued}"
    );
    assert!(issued.contains("Z renew_in=") && issued.contains("h"), "{issued}");
    let two = weft_in(&here.path, &["logs", "details-v1", "--sidecar", "--tail", "2"]);
    assert!(two.status.success(), "{}", two.stderr);
    let files = two.stdout.lines().filter(|l| l.starts_with("==> ")).count();
    let lines = two.stdout.lines().filter(|l| !l.starts_with("==> ")).count();
    assert!(files >= 1 && lines <= 2 * files, "{}", two.stdout);
    // Nothing is stamped in the future.
    let future = weft_in(
        &here.path,
        &[
            "logs",
            "details-v1",
            "--sidecar",
            "--since",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert!(future.status.success(), "{}", future.stderr);
    assert!(
        future.stdout.lines().all(|l| l.starts_with("==> ")),
        "{}",
        future.stdout
    );
    let nonsense = weft_in(&here.path, &["logs", "details-v1", "--since", "yesterday"]);
    assert!(!nonsense.status.success());
    assert!(nonsense.stderr.contains("RFC 3339"), "{}", nonsense.stderr);
    let _ = weft_in(&here.path, &["down"]);
    assert!(up.wait_exit(Duration::from_secs(20)));
}
