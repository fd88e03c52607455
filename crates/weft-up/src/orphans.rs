//! Nothing outlives `weft up`, whatever kills it.
//!
//! Three things together:
//! - Each app and sidecar is started through `weft run-child`, which asks the kernel to kill it
//!   when `weft up` dies (`PR_SET_PDEATHSIG`, kept across `exec`) and then execs the program:
//!   the direct children die with `weft up` even on `kill -9`.
//! - Each runs in a process group of its own (its pid), so that whatever it starts in turn can
//!   be found and stopped with it; and a reaper (`weft run-child --reap`), a child of `weft up`
//!   in a group of its own, waits for `weft up` to go and then stops every recorded group: the
//!   grandchildren die too.
//! - The run's record (`up.json`) names the groups: if the reaper was killed as well, `weft
//!   down` and the next `weft up` in that run directory stop what is left
//!   ([`crate::RunDir::stop_leftovers`]).
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that started the child ends: `weft up` starts
//! every child from the thread that runs it (the one `block_on` runs on), which lives as long as
//! the process.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;

use crate::rundir::RunDir;

/// The hidden `weft` subcommand that starts a child of `weft up`.
pub const RUN_CHILD: &str = "run-child";

/// `program`, started through `exe run-child` so that it dies with this process, in a process
/// group of its own.
pub fn child_command(exe: &Path, program: &Path) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(exe);
    cmd.arg(RUN_CHILD)
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--")
        .arg(program)
        .process_group(0);
    cmd
}

/// In the child (`weft run-child --parent P -- PROGRAM ARGS`): die when `parent` does, then
/// become `command`. Returns only on failure.
pub fn exec_child(parent: u32, command: &[OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let Some((program, args)) = command.split_first() else {
        return anyhow::anyhow!("run-child: no command");
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return anyhow::anyhow!("run-child: PR_SET_PDEATHSIG: {e}");
    }
    // The parent may have died before the death signal was asked for.
    if nix::unistd::getppid().as_raw() != i32::try_from(parent).unwrap_or(-1) {
        return anyhow::anyhow!("run-child: weft up (pid {parent}) is gone");
    }
    let e = Command::new(program).args(args).exec();
    anyhow::Error::new(e).context(format!("starting {}", Path::new(program).display()))
}

/// Starts the reaper of this run (see the module comment).
pub fn spawn_reaper(exe: &Path, run: &RunDir) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    Command::new(exe)
        .arg(RUN_CHILD)
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--reap")
        .arg(&run.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not in the terminal's group: Ctrl-C goes to `weft up`, which stops everything itself.
        .process_group(0)
        .spawn()
        .context("starting the reaper of this run")
}

/// In the reaper: waits until `parent` is gone, then stops what its run left (nothing, when
/// it stopped cleanly and removed its record).
pub fn reap(parent: u32, run_root: &Path) -> anyhow::Result<usize> {
    let parent = i32::try_from(parent).context("pid")?;
    while nix::unistd::getppid().as_raw() == parent {
        std::thread::sleep(Duration::from_millis(100));
    }
    RunDir::new(run_root).stop_leftovers()
}

/// Every live process whose process group is one of `groups`.
pub fn members(groups: &[u32]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, ppid, pgrp.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let zombie = fields.next() == Some("Z");
            let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
            !zombie && pgrp.is_some_and(|g| groups.contains(&g))
        })
        .collect()
}

/// Stops every process in `groups`: SIGTERM, then SIGKILL for what is left after `grace`.
/// Returns how many there were.
pub fn stop_groups(groups: &[u32], grace: Duration) -> usize {
    let found = members(groups);
    if found.is_empty() {
        return 0;
    }
    for g in groups {
        signal_group(*g, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while !members(groups).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for g in groups {
        signal_group(*g, Signal::SIGKILL);
    }
    found.len()
}

/// Sends `sig` to process group `group` (ignoring one already gone).
pub fn signal_group(group: u32, sig: Signal) {
    if let Ok(g) = i32::try_from(group) {
        if g > 1 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g), sig);
        }
    }
}
