//! `weft run-child` (hidden): how `weft up` starts its children so that none outlives it
//! (`weft_up::orphans`). `--parent P -- PROGRAM ARGS`: die with P, then become PROGRAM.
//! `--parent P --reap RUN_DIR`: when P is gone, stop whatever its run left.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RunChildArgs {
    /// The `weft up` this child belongs to.
    #[arg(long)]
    pub parent: u32,
    /// Be the run's reaper instead of a program.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "command")]
    pub reap: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: RunChildArgs) -> anyhow::Result<ExitCode> {
    match args.reap {
        Some(run_dir) => {
            weft_up::orphans::reap(args.parent, &run_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        None => Err(weft_up::orphans::exec_child(args.parent, &args.command)),
    }
}
