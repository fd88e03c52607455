//! `weft version`: this client's version and git commit, and with a running mesh the control
//! plane's and each proxy's (as `istioctl version` and `linkerd version` do).

use std::process::ExitCode;

use super::find_mesh::MeshArgs;

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// The client's version only; do not look for a running mesh.
    #[arg(long)]
    pub client: bool,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format: `text` or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let client = serde_json::json!({
        "version": weft_api::version::VERSION,
        "commit": weft_api::version::commit(),
    });
    let mut out = serde_json::json!({ "client": client });
    let mut note = None;
    if !args.client {
        match mesh_versions(&args.mesh) {
            Ok((control, proxies)) => {
                out["controlPlane"] = control;
                out["proxies"] = proxies;
            }
            Err(e) => note = Some(format!("{e:#}")),
        }
    }
    if args.output == "json" {
        if let Some(n) = &note {
            out["mesh"] = serde_json::json!({ "error": n });
        }
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    out!("client: weft {}", weft_api::version::describe());
    if let Some(control) = out.get("controlPlane") {
        out!("control plane: weft {}", describe(control));
        for p in out["proxies"].as_array().into_iter().flatten() {
            let version = p["version"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("unknown");
            out!("proxy {}: weft {version}", p["instance"].as_str().unwrap_or("?"));
        }
    }
    if let Some(n) = note {
        eprintln!("weft version: no mesh versions: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The control plane's `/version` and each connected proxy's version (from `/status`).
fn mesh_versions(mesh: &MeshArgs) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let found = mesh.find()?;
    let control: serde_json::Value = serde_json::from_str(&found.control_get("/version")?)?;
    let status: serde_json::Value = serde_json::from_str(&found.control_get("/status")?)?;
    let proxies: Vec<serde_json::Value> = status["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"].as_bool().unwrap_or(false))
        .map(|p| serde_json::json!({ "instance": p["instance"], "version": p["proxyVersion"] }))
        .collect();
    Ok((control, serde_json::Value::Array(proxies)))
}

fn describe(v: &serde_json::Value) -> String {
    let version = v["version"].as_str().unwrap_or("?");
    match v["commit"].as_str() {
        Some(c) => format!("{version} ({c})"),
        None => version.to_string(),
    }
}
