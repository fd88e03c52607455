//! `weft check`: how soon each certificate of the mesh expires (the CA from the control plane's
//! state directory, the workload certificates from its `/status`), with warnings well ahead.
//! Exit 1 when one has expired. The logic is `weft_control::check`.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_control::check::{self, Item, Level, Thresholds};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The control plane's state directory (its CA). Default: the running `weft up`'s
    /// (`<run-dir>/control`), else `.weft/control`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The mesh whose workload certificates to check (default: the running `weft up`'s; with
    /// none found, only the CA is checked).
    #[command(flatten)]
    pub mesh: super::find_mesh::MeshArgs,
    /// Warn when a root or intermediate expires within this many days.
    #[arg(long, default_value_t = 30)]
    pub warn_days: u64,
    /// Output format: `text` or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let run = args.mesh.run()?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        if run.record.is_some() {
            run.dir.control_state()
        } else {
            PathBuf::from(".weft/control")
        }
    });
    let mut notes = Vec::new();
    let admin = match args.mesh.find() {
        Ok(mesh) => Some(mesh.control_admin),
        Err(e) => {
            notes.push(format!("{e:#}: workload certificates not checked"));
            None
        }
    };
    let t = Thresholds::new(args.warn_days);
    let mut items = check::check_state_dir(&state_dir, &t)?;
    if let Some(addr) = admin {
        match super::find_mesh::http_get(addr, "/status")
            .and_then(|b| Ok(serde_json::from_str::<serde_json::Value>(&b)?))
        {
            Ok(status) => items.extend(check::check_status(&status, &t)),
            Err(e) => notes.push(format!(
                "cannot read the control plane's /status at {addr} ({e}): workload certificates not checked"
            )),
        }
    }
    let worst = items.iter().map(|i| i.level).max().unwrap_or(Level::Ok);
    if args.output == "json" {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "stateDir": state_dir.display().to_string(),
                "certificates": items,
                "notes": notes,
                "result": worst,
            }))?
        );
    } else {
        out!("CA: {}", state_dir.display());
        out!("{:<8} {:<13} {:<48} DETAIL", "LEVEL", "KIND", "NAME");
        for Item {
            kind,
            name,
            level,
            message,
            ..
        } in &items
        {
            let level = match level {
                Level::Ok => "ok",
                Level::Warning => "WARNING",
                Level::Error => "ERROR",
            };
            out!("{level:<8} {kind:<13} {name:<48} {message}");
        }
        for n in &notes {
            out!("note: {n}");
        }
    }
    Ok(if worst == Level::Error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
