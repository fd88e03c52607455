//! Finding the running mesh, one way for every verb that reads one (`status`, `logs`, `down`,
//! `check`, `version`, ...): `--run-dir DIR` (a `weft up` run) or `--control-admin ADDR` (any
//! control plane, e.g. a `weft control`); with neither, the `weft up` started from the current
//! directory (`.weft/run`), else a `weft control` on its default admin address, else an error
//! that says exactly what to pass.
//!
//! A verb takes [`MeshArgs`] with `#[command(flatten)]` and calls [`MeshArgs::find`] (it needs the
//! control plane) or [`MeshArgs::run`] (it needs a `weft up`'s run directory, e.g. for logs).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use weft_up::rundir::{self, RunDir, RunRecord};

/// The run directory `weft up` uses, and every verb looks in, by default (relative: each
/// directory a mesh is started from has its own).
pub const DEFAULT_RUN_DIR: &str = ".weft/run";

/// The admin address of a `weft control` started with its defaults.
pub const DEFAULT_CONTROL_ADMIN: &str = "127.0.0.1:15014";

/// Which mesh a verb reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MeshArgs {
    /// The run directory of the `weft up` to read (default: `.weft/run`, the one started from
    /// the current directory).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The control plane's admin address (`weft up` prints it; a `weft control` listens on
    /// 127.0.0.1:15014 unless told otherwise).
    #[arg(long, value_name = "ADDR")]
    pub control_admin: Option<SocketAddr>,
}

/// A running mesh: its control plane, and the `weft up` run when it is one.
#[derive(Debug, Clone)]
pub struct FoundMesh {
    /// The control plane's admin address (`/status`, `/metrics`, `/version`).
    pub control_admin: SocketAddr,
    /// The `weft up` that runs it, when it is one (its processes, proxies and logs).
    pub run: Option<FoundRun>,
}

/// A `weft up` run directory and what it records.
#[derive(Debug, Clone)]
pub struct FoundRun {
    pub dir: RunDir,
    /// The last record written there (`up.json`); `None` when no run ever recorded itself.
    pub record: Option<RunRecord>,
    /// Whether the recorded `weft up` process is alive.
    pub running: bool,
}

impl MeshArgs {
    /// The run directory asked for, or the default.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
    }

    /// The `weft up` run directory (running or not: a finished run's logs are still readable).
    pub fn run(&self) -> anyhow::Result<FoundRun> {
        let dir = RunDir::new(self.run_dir());
        let record = dir.read()?;
        let running = record.as_ref().is_some_and(|r| rundir::alive(r.pid));
        Ok(FoundRun { dir, record, running })
    }

    /// The running mesh, or an error that says what to pass.
    pub fn find(&self) -> anyhow::Result<FoundMesh> {
        if let Some(control_admin) = self.control_admin {
            // A run directory given too still names the run (its processes and logs).
            let run = match &self.run_dir {
                Some(_) => Some(self.run()?),
                None => None,
            };
            return Ok(FoundMesh { control_admin, run });
        }
        let run = self.run()?;
        if run.running {
            let record = run.record.as_ref().context("a running run has a record")?;
            let control_admin = record.control_admin.parse().with_context(|| {
                format!(
                    "{} names no control-plane address ({:?})",
                    run.dir.record().display(),
                    record.control_admin
                )
            })?;
            return Ok(FoundMesh {
                control_admin,
                run: Some(run),
            });
        }
        if self.run_dir.is_some() {
            anyhow::bail!("{}", not_running(&run));
        }
        // Nothing from this directory: a `weft control` with its defaults, if one answers.
        let default: SocketAddr = DEFAULT_CONTROL_ADMIN.parse()?;
        if TcpStream::connect_timeout(&default, Duration::from_millis(300)).is_ok() {
            return Ok(FoundMesh {
                control_admin: default,
                run: None,
            });
        }
        anyhow::bail!(
            "no running mesh found: {}, and no `weft control` answers on {DEFAULT_CONTROL_ADMIN}. \
             Pass --run-dir DIR (the run directory of a `weft up` started elsewhere) or \
             --control-admin ADDR (the control-plane address `weft up` or `weft control` printed)",
            not_running(&run)
        )
    }
}

/// Why a run directory names no running mesh, in one clause.
fn not_running(run: &FoundRun) -> String {
    let at = shown(&run.dir.root);
    match &run.record {
        Some(rec) => format!(
            "the `weft up` recorded in {at} (pid {}) is not running any more",
            rec.pid
        ),
        None => format!("no `weft up` is running from {at}"),
    }
}

/// A path as a person can use it from anywhere: absolute when it can be made so.
pub fn shown(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

impl FoundMesh {
    /// GET `path` on the control plane's admin port.
    pub fn control_get(&self, path: &str) -> anyhow::Result<String> {
        http_get(self.control_admin, path)
            .with_context(|| format!("asking the control plane at {} for {path}", self.control_admin))
    }
}

/// A tiny blocking HTTP/1.0 GET: admin ports are local and answer small documents.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    http_request(addr, "GET", path)
}

/// [`http_get`] with any method (no body). Fails unless the answer is 200.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("malformed HTTP response")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}
