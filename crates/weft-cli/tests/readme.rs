//! The README is true (issue 19, item 8): every command in its ```sh blocks is run here, in
//! README order, from a directory holding a copy of `examples/`, against a `weft up` this test
//! starts there — the `weft` on PATH is the one just built — and each exit status and a piece
//! of its output is checked. A command the README shows that this test does not know fails it,
//! so the README cannot drift; the few that cannot run here say why.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::up::versions_seen;
use common::{tempdir, weft_bin};

/// What a README command must do here.
enum Expect {
    /// Exits with `status`, its stdout and stderr containing `fragment`.
    Exits { status: i32, fragment: &'static str },
    /// Exits 0, then the product page shows exactly these reviews versions (`?u=jason` when
    /// `jason`), within a few seconds.
    Routes {
        jason: bool,
        versions: &'static [&'static str],
    },
    /// Runs until stopped: prints `fragment` within a few seconds, then is killed.
    Serves { fragment: &'static str },
    /// Changes the network: run in a network namespace of its own (needs root and `unshare`).
    InNetns { fragment: &'static str },
    /// Not run here, and why.
    NotRun(&'static str),
}

/// The expectation of each command the README shows, keyed by its text (comment removed).
fn expectation(command: &str) -> Option<Expect> {
    use Expect::*;
    let e = match command {
        "cargo run --release -- up" => NotRun("a release build takes minutes: this test runs the `weft up` just built, from the same kind of directory"),
        "./scripts/test.sh" => NotRun("the whole test suite, this test included"),
        "cp examples/bookinfo/routing/jason-v2/virtual-services.yaml examples/bookinfo/" => {
            Routes { jason: true, versions: &["reviews-v2"] }
        }
        "cp examples/bookinfo/routing/80-20/virtual-services.yaml examples/bookinfo/" => {
            Routes { jason: false, versions: &["reviews-v1", "reviews-v2"] }
        }
        "rm examples/bookinfo/virtual-services.yaml" => {
            Routes { jason: false, versions: &["reviews-v1", "reviews-v2", "reviews-v3"] }
        }
        "weft status" => Exits { status: 0, fragment: "productpage-v1-0" },
        "weft version" => Exits { status: 0, fragment: "control plane: weft " },
        "weft check" => Exits { status: 0, fragment: "CA: " },
        "weft logs reviews-v2 --tail 20" => Exits { status: 0, fragment: "==> " },
        "weft load http://127.0.0.1:PORT/productpage --rps 20 --duration 3" => {
            Exits { status: 0, fragment: "200" }
        }
        "weft down" => Exits { status: 0, fragment: "stopped the mesh" },
        "weft proxy --config examples/proxy/sidecar.yaml [--threads N] [--outbound-mark MARK]" => {
            Serves { fragment: "weft proxy listening" }
        }
        "weft proxy --config examples/proxy/sidecar.yaml --print-config" => {
            Exits { status: 0, fragment: "\"maxHeaderBytes\"" }
        }
        "weft init-iptables --dry-run" => Exits { status: 0, fragment: "1337" },
        "weft init-iptables" | "weft init-iptables --clean" => InNetns { fragment: "" },
        "weft analyze examples/ -o json" => Exits { status: 0, fragment: "WEFT0009" },
        "weft explain examples/bookinfo examples/bookinfo/routing/jason-v2 --from productpage-v1 'GET http://reviews:9080/reviews/1' -H 'end-user: jason' -o json" => {
            Exits { status: 0, fragment: "\"subset\": \"v2\"" }
        }
        "weft explain --exit-code examples/bookinfo examples/bookinfo/routing/authz 'GET http://reviews:9080/reviews/1'" => {
            Exits { status: 3, fragment: "decision:  deny" }
        }
        "bench/run.sh" | "ONLY=routes bench/run.sh" | "bench/convergence.sh" => {
            NotRun("a benchmark: minutes of a quiet machine (and the peers harness lies outside the repository)")
        }
        _ => return None,
    };
    Some(e)
}

/// The commands of the README's ```sh blocks, comments removed.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
        .expect("README.md");
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // A comment starts at `#` after whitespace (no command here has a `#` of its own).
        let command = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        };
        let command = command.trim();
        if !command.is_empty() && !command.starts_with('#') {
            out.push(command.to_string());
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A shell in `cwd` with the built `weft` first on PATH.
fn shell(cwd: &Path, command: &str) -> Command {
    let bin = Path::new(weft_bin()).parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(cwd).env("PATH", path);
    cmd
}

fn is_root() -> bool {
    common::run("id", &["-u"]).stdout.trim() == "0"
}

#[test]
fn every_readme_command_does_what_the_readme_says() {
    let commands = readme_commands();
    let unknown: Vec<&String> = commands.iter().filter(|c| expectation(c).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "README commands this test does not run (add each to `expectation`): {unknown:#?}"
    );

    let cwd = tempdir::Dir::new("weft-readme");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
        &cwd.path.join("examples"),
    );
    // `cargo run --release -- up`, as the test's `weft up` from that directory.
    let mut up = UpFrom::start(&cwd.path);
    let url = up.wait_for("Open the application: ");
    let url = url.rsplit(' ').next().expect("url").to_string();
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .expect("port")
        .to_string();

    let mut ran = 0;
    for command in &commands {
        let text = command.replace("PORT", &port);
        match expectation(command).expect("known") {
            Expect::NotRun(why) => eprintln!("not run: {command}: {why}"),
            Expect::Exits { status, fragment } => {
                let out = shell(&cwd.path, &text).output().expect("sh");
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.status.code(), Some(status), "`{text}`:\n{all}");
                assert!(all.contains(fragment), "`{text}`: no {fragment:?} in:\n{all}");
                ran += 1;
            }
            Expect::Routes { jason, versions } => {
                let out = shell(&cwd.path, &text).output().expect("sh");
                assert!(
                    out.status.success(),
                    "`{text}`: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let page = if jason {
                    format!("{url}?u=jason")
                } else {
                    url.clone()
                };
                let want: std::collections::BTreeSet<String> =
                    versions.iter().map(|v| v.to_string()).collect();
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let seen = versions_seen(&page, 30);
                    if seen == want {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "after `{text}`: {page} shows {seen:?}, not {want:?}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                ran += 1;
            }
            Expect::Serves { fragment } => {
                // The optional flags in brackets are left out.
                let text = text.split(" [").next().expect("command").to_string();
                let mut child = shell(&cwd.path, &format!("exec {text}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                let lines = read_lines(child.stdout.take().expect("stdout"));
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut printed = Vec::new();
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    match lines.recv_timeout(left) {
                        Ok(line) if line.contains(fragment) => break,
                        Ok(line) => printed.push(line),
                        Err(_) => panic!("`{text}` never printed {fragment:?}:\n{}", printed.join("\n")),
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                ran += 1;
            }
            Expect::InNetns { fragment } => {
                if !is_root() || !common::run("unshare", &["--net", "true"]).status.success() {
                    eprintln!("not run: {command}: needs root and `unshare --net`");
                    continue;
                }
                let out = shell(&cwd.path, &format!("unshare --net sh -c '{text}'"))
                    .output()
                    .expect("sh");
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(out.status.success(), "`{text}`:\n{all}");
                assert!(all.contains(fragment), "`{text}`: {all}");
                ran += 1;
            }
        }
    }
    assert!(ran >= 12, "only {ran} README commands ran");
    // `weft down` was among them: the mesh stopped.
    assert!(
        up.wait_exit(Duration::from_secs(20)),
        "weft up still runs after `weft down`"
    );
}

/// The first line of `out`, read on a thread.
fn read_lines(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// `weft up` (no arguments) started from a directory, killed on drop.
struct UpFrom {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    output: Vec<String>,
    _cwd: PathBuf,
}

impl UpFrom {
    fn start(cwd: &Path) -> UpFrom {
        let mut child = shell(cwd, "exec weft up")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("weft up");
        let lines = read_lines(child.stdout.take().expect("stdout"));
        UpFrom {
            child,
            lines,
            output: Vec::new(),
            _cwd: cwd.to_path_buf(),
        }
    }

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

impl Drop for UpFrom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
