//! `weft status`: every connected proxy, the version it runs and whether it is in sync (as
//! `istioctl proxy-status`), and the documents the control plane rejected.

use std::process::ExitCode;

use anyhow::Context as _;

use super::find_mesh::MeshArgs;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format: `text` or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mesh = args.mesh.find()?;
    let body = mesh.control_get("/status")?;
    let v: serde_json::Value =
        serde_json::from_str(&body).context("the control plane's /status is not JSON")?;
    if args.output == "json" {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Which mesh this is, when two run from two directories.
    if let Some(record) = mesh.run.as_ref().and_then(|r| r.record.as_ref()) {
        out!(
            "mesh: `weft up {}` (pid {}), control plane {}\n",
            record.dir,
            record.pid,
            mesh.control_admin
        );
    }
    // CONFIG: the version (a hash) of the config the proxy last applied; PROXY VERSION: its build.
    out!(
        "{:<28} {:<24} {:<12} {:<8} {:<18} PROXY VERSION",
        "PROXY",
        "WORKLOAD",
        "NAMESPACE",
        "SYNC",
        "CONFIG"
    );
    for p in v["proxies"].as_array().into_iter().flatten() {
        let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        let sync = if !p["connected"].as_bool().unwrap_or(false) {
            "GONE"
        } else if p["nack"].is_string() {
            "NACK"
        } else if p["inSync"].as_bool().unwrap_or(false) {
            "SYNCED"
        } else {
            "STALE"
        };
        let config = s("ackedVersion");
        let build = p["proxyVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            .unwrap_or("unknown");
        out!(
            "{:<28} {:<24} {:<12} {:<8} {:<18} {build}",
            s("instance"),
            s("workload"),
            s("namespace"),
            sync,
            // A shortened hash, as git shows commits.
            config.chars().take(16).collect::<String>()
        );
        if let Some(nack) = p["nack"].as_str() {
            out!("    rejected: {nack}");
        }
    }
    let refused: Vec<&str> = v["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["file"].as_str())
        .collect();
    for r in v["refused"].as_array().into_iter().flatten() {
        out!(
            "\nserving the last good version of {} since {}: the version written at {} is refused:",
            r["file"].as_str().unwrap_or("?"),
            r["servingSince"].as_str().unwrap_or("?"),
            r["refusedAt"].as_str().unwrap_or("?"),
        );
        for f in r["errors"].as_array().into_iter().flatten() {
            out!("  {}", finding_line(f));
        }
    }
    let errors: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "error")
        .filter(|f| !f["file"].as_str().is_some_and(|file| refused.contains(&file)))
        .collect();
    if !errors.is_empty() {
        out!("\nconfig errors (these documents are left out; the rest is served):");
        for f in errors {
            out!("  {}", finding_line(f));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `file:line:column: CODE message` of a finding in the `/status` JSON.
fn finding_line(f: &serde_json::Value) -> String {
    let mut at = f["file"].as_str().unwrap_or("?").to_string();
    for key in ["line", "column"] {
        if let Some(n) = f[key].as_u64() {
            at.push_str(&format!(":{n}"));
        }
    }
    format!(
        "{at}: {} {}",
        f["code"].as_str().unwrap_or(""),
        f["message"].as_str().unwrap_or("")
    )
}
