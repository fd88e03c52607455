//! Shared by the end-to-end tests: run the real `weft` binary as a child process with a config,
//! read back the addresses it bound, and stop it (by SIGTERM, then kill) when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The addresses a proxy bound (the `weft proxy listening {...}` line).
#[derive(Debug, Clone)]
pub struct Bound {
    pub admin: SocketAddr,
    pub mesh: SocketAddr,
    pub outbound: Option<SocketAddr>,
    pub outbound_ports: Vec<SocketAddr>,
    pub inbound_ports: Vec<SocketAddr>,
    pub capture: Option<SocketAddr>,
}

/// A running `weft proxy`.
pub struct Proxy {
    pub child: Child,
    pub bound: Bound,
    pub dir: tempdir::Dir,
    pub stderr_path: PathBuf,
}

pub fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

impl Proxy {
    /// Starts `weft proxy --config` with `yaml` and waits for its listening line.
    pub fn start(yaml: &str) -> Proxy {
        Self::start_with(yaml, &[])
    }

    pub fn start_with(yaml: &str, extra_args: &[&str]) -> Proxy {
        Self::start_cmd(yaml, extra_args, |c| c)
    }

    /// Starts with a hook to change the command (e.g. to run it in a network namespace).
    pub fn start_cmd(yaml: &str, extra_args: &[&str], wrap: impl FnOnce(Command) -> Command) -> Proxy {
        let dir = tempdir::Dir::new("weft-proxy");
        let config = dir.path.join("proxy.yaml");
        std::fs::write(&config, yaml).expect("writing config");
        let stderr_path = dir.path.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(weft_bin());
        cmd.arg("proxy").arg("--config").arg(&config).args(extra_args);
        let mut cmd = wrap(cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawning weft proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("weft proxy listening ") {
                    let _ = tx.send(json.to_string());
                }
            }
        });
        let json = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(json) => json,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("weft proxy did not start:\n{log}");
            }
        };
        let v: serde_json::Value = serde_json::from_str(&json).expect("listening line is JSON");
        let addr = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse().ok());
        let list = |v: &serde_json::Value| {
            v.as_array()
                .map(|a| a.iter().filter_map(addr).collect())
                .unwrap_or_default()
        };
        let bound = Bound {
            admin: addr(&v["admin"]).expect("admin"),
            mesh: addr(&v["mesh"]).expect("mesh"),
            outbound: addr(&v["outbound"]),
            outbound_ports: list(&v["outboundPorts"]),
            inbound_ports: list(&v["inboundPorts"]),
            capture: addr(&v["capture"]),
        };
        Proxy {
            child,
            bound,
            dir,
            stderr_path,
        }
    }

    /// Starts `weft proxy` inside network namespace `netns` (`ip netns exec`, which execs the
    /// proxy itself, so killing the child kills the proxy).
    pub fn start_in_netns(netns: &str, yaml: &str, extra_args: &[&str]) -> Proxy {
        let netns = netns.to_string();
        Self::start_cmd(yaml, extra_args, move |c| {
            let mut wrapped = Command::new("ip");
            wrapped
                .args(["netns", "exec", &netns])
                .arg(c.get_program())
                .args(c.get_args());
            wrapped
        })
    }

    /// The admin `/metrics` text, fetched from inside network namespace `netns`.
    pub fn metrics_in_netns(&self, netns: &str) -> String {
        let url = format!("http://{}/metrics", self.bound.admin);
        exposition(
            &url,
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    netns,
                    "curl",
                    "--max-time",
                    "10",
                    "-sS",
                    "-f",
                    &url,
                ],
            ),
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The admin `/metrics` text.
    pub fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.bound.admin);
        exposition(&url, curl(&["-sS", "-f", &url]))
    }
}

/// The text of a `/metrics` fetch, checked to be a whole exposition (it ends with `# EOF`): a
/// failed or cut-short fetch would otherwise read as every counter being zero.
pub fn exposition(url: &str, fetched: Output) -> String {
    assert!(
        fetched.status.success() && fetched.stdout.trim_end().ends_with("# EOF"),
        "{url} gave no whole exposition ({}): {}{}",
        fetched.status,
        fetched.stdout,
        fetched.stderr
    );
    fetched.stdout
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of a finished command.
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `curl` with a 10 s ceiling (`--max-time`) and returns what it printed.
pub fn curl(args: &[&str]) -> Output {
    run("curl", &[&["--max-time", "10"], args].concat())
}

pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sums a metric's samples whose label set contains every `name="value"` pair given.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Path of a peer script in tests/peers.
pub fn peer_script(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub mod control;
pub mod up;

pub mod tempdir {
    use std::path::PathBuf;

    /// A temporary directory removed on drop.
    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("creating temp dir");
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
