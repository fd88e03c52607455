//! `weft up [DIR]`, `weft down`, `weft logs WORKLOAD`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use weft_up::{RunDir, UpOptions};

use super::find_mesh::{self, MeshArgs, DEFAULT_RUN_DIR};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The mesh documents (Workloads, Services, routing). Default: the bundled examples/bookinfo.
    pub dir: Option<PathBuf>,
    /// Where logs and the record of this run go; every verb finds the run through it.
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Seconds to wait for every workload and sidecar to be ready.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
    /// Send this many requests per second to the application's entry point while it runs, so
    /// the metrics have something to show (the report prints when it stops).
    #[arg(long, value_name = "RPS")]
    pub load: Option<u32>,
    /// Run each workload instance in its own network namespace with transparent iptables
    /// capture, like a pod: apps dial `http://reviews:9080` and never see a mesh port. Needs
    /// root and iproute2/iptables.
    #[arg(long)]
    pub netns: bool,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The run directory of the `weft up` to stop.
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// A workload (`reviews-v1`) or instance (`reviews-v1-0`).
    pub workload: String,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Only the sidecar's log (default: the app's and the sidecar's).
    #[arg(long)]
    pub sidecar: bool,
    /// Keep printing lines as they are written (as `tail -f`), until Ctrl-C or the run stops.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines of each file.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines stamped at or after this time: RFC 3339 (`2026-12-07T23:10:00Z`) or an age
    /// (`90s`, `10m`, `2h`). Lines without a time of their own go with the line before.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only the sidecars' access-log lines (one per request or connection; text or JSON as the
    /// `Telemetry` says), without headers, ready for `grep` or `jq`.
    #[arg(long, conflicts_with = "sidecar")]
    pub access: bool,
}

pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.dir {
        Some(d) => d,
        None => default_example()?,
    };
    let options = UpOptions {
        dir,
        run_dir_flag: run_dir_flag(&args.run_dir),
        run_dir: args.run_dir,
        ready_timeout: Duration::from_secs(args.ready_timeout),
        exe: std::env::current_exe().context("finding the weft executable")?,
        netns: args.netns,
    };
    super::runtime(None)?.block_on(async move {
        let stop_load = tokio_util::sync::CancellationToken::new();
        let mut load_task = None;
        let signal = super::shutdown_listener().context("listening for SIGTERM and SIGINT")?;
        let shutdown = async {
            signal.await;
            // Stop the traffic before the workloads, so the report counts no shutdown errors.
            stop_load.cancel();
        };
        let on_ready = |entries: &[weft_up::Entry]| {
            let (Some(rps), Some(entry)) = (args.load, entry_point(entries)) else {
                return;
            };
            let url = entry.to_string();
            println!("weft up: sending {rps} requests/s to {url}");
            let stop = stop_load.clone();
            load_task = Some(tokio::spawn(async move {
                weft_demo::load(&url, rps, None, 64, http::HeaderMap::new(), stop).await
            }));
        };
        weft_up::up(options, shutdown, on_ready).await?;
        stop_load.cancel();
        if let Some(task) = load_task {
            if let Ok(Ok(report)) = task.await {
                println!("load: {report}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// ` --run-dir DIR` (absolute) for a run directory other than the default, else nothing.
fn run_dir_flag(run_dir: &std::path::Path) -> String {
    if run_dir == std::path::Path::new(DEFAULT_RUN_DIR) {
        return String::new();
    }
    let path = find_mesh::shown(run_dir);
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c));
    match plain {
        true => format!(" --run-dir {path}"),
        // Quoted for a shell, so that it still works when pasted.
        false => format!(" --run-dir '{}'", path.replace('\'', "'\\''")),
    }
}

/// The URL a person would open: productpage's when there is one.
fn entry_point(entries: &[weft_up::Entry]) -> Option<String> {
    let e = entries
        .iter()
        .find(|e| e.workload.starts_with("productpage"))
        .or(entries.first())?;
    let path = if e.workload.starts_with("productpage") {
        "productpage"
    } else {
        ""
    };
    Some(format!("{}{path}", e.url))
}

/// examples/bookinfo next to the current directory or next to the executable's repository.
fn default_example() -> anyhow::Result<PathBuf> {
    let mut candidates = vec![PathBuf::from("examples/bookinfo")];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join("examples/bookinfo")));
    }
    candidates
        .into_iter()
        .find(|p| p.join("mesh.yaml").exists())
        .context(
            "no DIR given and no examples/bookinfo found: run `weft up DIR` with a directory of Workloads",
        )
}

pub fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let run = RunDir::new(&args.run_dir);
    let at = find_mesh::shown(&args.run_dir);
    match run.down(Duration::from_secs(20))? {
        weft_up::rundir::Down::Stopped => println!("stopped the mesh running from {at}"),
        weft_up::rundir::Down::Leftovers(0) => {
            println!("nothing is running from {at} (the weft up recorded there had died and left nothing)")
        }
        weft_up::rundir::Down::Leftovers(n) => {
            println!("the weft up recorded in {at} had died: stopped {n} process(es) it left running")
        }
        weft_up::rundir::Down::NothingRunning => println!("nothing is running from {at}"),
    }
    // A `weft up --netns` that was killed could not remove its namespaces; they are recorded.
    if weft_up::netns::clean_leftovers(&run.root)? {
        println!("removed the network namespaces a previous run left behind");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let run = args.mesh.run()?;
    let since = args.since.as_deref().map(super::logs::parse_since).transpose()?;
    if args.access {
        return access_logs(&run.dir, &args);
    }
    let files: Vec<_> = run
        .dir
        .logs_of(&args.workload)?
        .into_iter()
        .filter(|p| !args.sidecar || p.to_string_lossy().contains(".sidecar."))
        .collect();
    if files.is_empty() {
        eprintln!(
            "weft logs: no logs for {} in {}",
            args.workload,
            find_mesh::shown(&run.dir.logs())
        );
        return Ok(ExitCode::from(2));
    }
    // Said first, on stderr: the lines below may be from a run that has ended.
    if !run.running {
        let when = run
            .record
            .as_ref()
            .map_or(String::new(), |r| format!(" (pid {})", r.pid));
        eprintln!(
            "weft logs: the `weft up` of {}{when} is not running: these are its last logs",
            find_mesh::shown(&run.dir.root)
        );
    }
    let mut readers = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let lines = super::logs::select(&text, args.tail, since);
        if files.len() > 1 {
            out!("==> {} <==", f.display());
        }
        for l in lines {
            out!("{l}");
        }
        readers.push(super::logs::Follower::at_end(f.clone(), text.len() as u64));
    }
    if args.follow && run.running {
        super::logs::follow(&mut readers, &run)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft logs --access`: the access-log lines of a workload's sidecars (their stdout, where the
/// default provider writes), in instance order. Lines a `Telemetry` sends to a file are in
/// that file, not here.
fn access_logs(run: &RunDir, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let files: Vec<_> = run
        .logs_of(&args.workload)?
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".sidecar.log"))
        .collect();
    if files.is_empty() {
        eprintln!(
            "weft logs: no sidecar logs for {} in {}",
            args.workload,
            run.root.display()
        );
        return Ok(ExitCode::from(2));
    }
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for line in text
            .lines()
            .filter(|l| weft_proxy::telemetry::access_log::is_line(l))
        {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
