//! Running the real `weft control` (over TLS) as a child process, minting bootstrap tokens with
//! `weft token create`, and starting sidecars that subscribe to it with a token file and the
//! control plane's trust anchor.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{curl, run, tempdir, weft_bin, Proxy};

/// A running `weft control --tls`, killed on drop.
pub struct Control {
    child: Child,
    pub discovery: SocketAddr,
    pub admin: SocketAddr,
    pub state: PathBuf,
}

impl Control {
    pub fn start(config: &Path, state: &Path, discovery: &str, admin: &str) -> Control {
        Self::start_with(config, state, &["--tls", "--listen", discovery, "--admin", admin])
    }

    /// `weft control --tls` on loopback ports of its choosing, with `extra` arguments (e.g. a
    /// short `--cert-ttl-secs`).
    pub fn start_tls_with(config: &Path, state: &Path, extra: &[&str]) -> Control {
        let args = [
            &["--tls", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
            extra,
        ]
        .concat();
        Self::start_with(config, state, &args)
    }

    /// `weft control` without `--tls`, on loopback ports of its choosing.
    pub fn start_plaintext(config: &Path, state: &Path) -> Control {
        Self::start_with(
            config,
            state,
            &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        )
    }

    fn start_with(config: &Path, state: &Path, args: &[&str]) -> Control {
        let mut child = Command::new(weft_bin())
            .args(["control", "--config-dir"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .args(args)
            .args(["--poll-ms", "100", "--endpoint-grace-ms", "2000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft control");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("weft control listening ") {
                    let _ = tx.send(json.to_string());
                }
            }
        });
        let json = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("weft control started");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let addr = |k: &str| v[k].as_str().and_then(|s| s.parse().ok()).expect("address");
        Control {
            child,
            discovery: addr("discovery"),
            admin: addr("admin"),
            state: state.to_path_buf(),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let out = run(
            weft_bin(),
            &["status", "--control-admin", &self.admin.to_string(), "-o", "json"],
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status ({e}): {} {}", out.stdout, out.stderr))
    }

    /// The roots sidecars trust the control plane with, out of band.
    pub fn anchor(&self) -> PathBuf {
        self.state.join("trust-bundle.pem")
    }

    /// A token bound to `workload` (namespace `default`, service account `sa`), minted by
    /// `weft token create`.
    pub fn mint(&self, workload: &str, sa: &str) -> String {
        let out = run(
            weft_bin(),
            &[
                "token",
                "create",
                "--workload",
                workload,
                "--service-account",
                sa,
                "--state-dir",
                self.state.to_str().expect("utf-8"),
            ],
        );
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout.trim().to_string()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sidecar's bootstrap config: workload `name`, inbound listeners and outbound ports as given.
pub fn sidecar_yaml(name: &str, sa: &str, inbound: &str, outbound: &str) -> String {
    format!(
        "workload: {{name: {name}, serviceAccount: {sa}}}\nadmin: {{address: \"127.0.0.1:0\"}}\ninbound:\n  mesh: \"127.0.0.1:0\"\n  listeners: [{inbound}]\noutbound:\n  listen: null\n  ports: [{outbound}]\n"
    )
}

/// A sidecar of `name` (service account `default`) with a token minted for it.
pub fn sidecar(control: &Control, name: &str, inbound: &str, outbound: &str) -> Proxy {
    let token = control.mint(name, "default");
    sidecar_with(
        control,
        &token,
        &sidecar_yaml(name, "default", inbound, outbound),
        &[],
    )
}

/// A sidecar from `yaml` subscribing with `token` (in a private file) and the control plane's
/// trust anchor, plus `extra` arguments.
pub fn sidecar_with(control: &Control, token: &str, yaml: &str, extra: &[&str]) -> Proxy {
    let dir = tempdir::Dir::new("weft-token");
    let token_file = dir.path.join("token");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&token_file)
            .expect("token file");
        f.write_all(token.as_bytes()).expect("write token");
    }
    let endpoint = format!("http://{}", control.discovery);
    let anchor = control.anchor();
    let mut args = vec![
        "--control",
        &endpoint,
        "--token-file",
        token_file.to_str().expect("utf-8"),
        "--trust-anchor",
        anchor.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    // The proxy reads the token at start, before it prints where it listens.
    Proxy::start_with(yaml, &args)
}

/// The HTTP status of the proxy's `/ready`.
pub fn ready_status(p: &Proxy) -> String {
    curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/ready", p.bound.admin),
    ])
    .stdout
}

pub fn wait_ready(p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ready_status(p) == "200" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("proxy never became ready:\n{}", p.logs());
}
