//! The run directory of a `weft up`: who is running (`up.json`), each process's log, the
//! sidecars' bootstrap configs, the control plane's state. `weft down` and `weft logs` find a
//! running mesh through it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// What `up.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub pid: u32,
    pub dir: String,
    pub control_admin: String,
    /// The discovery (and identity) address one more proxy attaches to.
    #[serde(default)]
    pub discovery: Option<String>,
    /// The process that stops this run's process groups if `weft up` dies without doing so.
    #[serde(default)]
    pub reaper_pid: Option<u32>,
    /// Each app and sidecar leads a process group of its own (its pid): what they started
    /// stops with them.
    pub instances: Vec<InstanceRecord>,
}

impl RunRecord {
    /// The process groups of this run (one per app and sidecar).
    pub fn groups(&self) -> Vec<u32> {
        self.instances
            .iter()
            .flat_map(|i| [i.app_pid, i.sidecar_pid])
            .collect()
    }
}

/// What `weft down` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// A running `weft up`, stopped.
    Stopped,
    /// A `weft up` that had died (e.g. `kill -9`): this many processes it left were stopped.
    Leftovers(usize),
    /// Nothing recorded here.
    NothingRunning,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: String,
    pub workload: String,
    pub app_pid: u32,
    pub sidecar_pid: u32,
    /// The sidecar's admin address (`/metrics`, `/config`), as reachable from the host (with
    /// `--netns`, inside the instance's namespace).
    #[serde(default)]
    pub sidecar_admin: Option<String>,
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn record(&self) -> PathBuf {
        self.root.join("up.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn app_log(&self, id: &str) -> PathBuf {
        self.logs().join(format!("{id}.log"))
    }
    pub fn sidecar_log(&self, id: &str) -> PathBuf {
        self.logs().join(format!("{id}.sidecar.log"))
    }
    pub fn sidecar_config(&self, id: &str) -> PathBuf {
        self.root.join("sidecars").join(format!("{id}.json"))
    }
    pub fn control_state(&self) -> PathBuf {
        self.root.join("control")
    }

    /// Creates the layout; refuses if another `weft up` is alive here; stops what a dead one
    /// left (returns how many processes) and keeps its logs once, as `*.prev`, so that this
    /// run's logs are files of its own.
    pub fn prepare(&self, down_hint: &str) -> anyhow::Result<usize> {
        if let Some(rec) = self.read()? {
            if alive(rec.pid) {
                anyhow::bail!(
                    "weft up is already running here (pid {}, run directory {}): `{down_hint}` stops it",
                    rec.pid,
                    self.root.display()
                );
            }
        }
        let left = self.stop_leftovers()?;
        for d in [self.logs(), self.root.join("sidecars"), self.control_state()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.keep_previous_logs()?;
        Ok(left)
    }

    /// Renames every log to `NAME.prev` (replacing an older one).
    fn keep_previous_logs(&self) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(self.logs()).with_context(|| format!("reading {}", self.logs().display()))?;
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                let prev = self.logs().join(format!("{name}.prev"));
                std::fs::rename(&path, &prev)
                    .with_context(|| format!("keeping {} as {}", path.display(), prev.display()))?;
            }
        }
        Ok(())
    }

    /// When the `weft up` recorded here is dead: stops every process its run left (its reaper,
    /// apps, sidecars and whatever they started) and removes the record. Returns how many
    /// processes there were; 0 when nothing is recorded or `weft up` is alive.
    pub fn stop_leftovers(&self) -> anyhow::Result<usize> {
        let Some(rec) = self.read()? else { return Ok(0) };
        if alive(rec.pid) {
            return Ok(0);
        }
        let mut groups = rec.groups();
        // The reaper's own group too, unless this is the reaper (it finishes the job first).
        groups.extend(rec.reaper_pid.filter(|p| *p != std::process::id()));
        let stopped = crate::orphans::stop_groups(&groups, Duration::from_secs(3));
        std::fs::remove_file(self.record()).ok();
        Ok(stopped)
    }

    pub fn read(&self) -> anyhow::Result<Option<RunRecord>> {
        match std::fs::read(self.record()) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("reading {}", self.record().display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.record().display())),
        }
    }

    pub fn write(&self, rec: &RunRecord) -> anyhow::Result<()> {
        let tmp = self.root.join("up.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)?;
        std::fs::rename(&tmp, self.record())?;
        Ok(())
    }

    /// Stops the `weft up` recorded here (SIGTERM, then waits for it to finish its own
    /// cleanup), or what it left when it died.
    pub fn down(&self, timeout: Duration) -> anyhow::Result<Down> {
        let Some(rec) = self.read()? else {
            return Ok(Down::NothingRunning);
        };
        if !alive(rec.pid) {
            return Ok(Down::Leftovers(self.stop_leftovers()?));
        }
        signal(rec.pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while alive(rec.pid) {
            if Instant::now() > deadline {
                anyhow::bail!("weft up (pid {}) did not stop within {timeout:?}", rec.pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Down::Stopped)
    }

    /// The log files of a workload (or instance) in this run (not the previous run's `.prev`),
    /// app first, then sidecar.
    pub fn logs_of(&self, name: &str) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.logs())
            .with_context(|| format!("no logs in {} (is `weft up` running here?)", self.root.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let f = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
                (f.starts_with(&format!("{name}-")) || f.starts_with(&format!("{name}.")))
                    && !f.ends_with(".prev")
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

/// Whether a process exists and has not exited (an exited process stays a zombie until its
/// parent reaps it; it counts as gone).
pub fn alive(pid: u32) -> bool {
    let exists =
        i32::try_from(pid).is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

/// Sends `sig` to `pid` (ignoring a process already gone).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
