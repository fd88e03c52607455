//! `weft proxy-status`: every proxy the control plane serves, the config version it ACKed, and
//! whether that is the version last pushed to it (SYNCED, STALE, NACK, DISCONNECTED) with how
//! long ago it ACKed, as `istioctl proxy-status` shows it. Read from the control plane's
//! `/proxy-status`.

use std::process::ExitCode;

use super::mesh::{self, MeshArgs};
use super::{age, cell, Output};

#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let found = mesh::locate(&args.mesh)?;
    let control = found.control(&args.mesh)?;
    let v = mesh::get_json(control, "/proxy-status")?;
    if args.output == Output::Json {
        super::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<28} {:<22} {:<12} {:<13} {:<17} {:<9} BEHIND",
        "PROXY",
        "WORKLOAD",
        "NAMESPACE",
        "SYNC",
        "ACKED VERSION",
        "ACKED"
    );
    for p in v["proxies"].as_array().into_iter().flatten() {
        let since = |k: &str| {
            p[k].as_f64()
                .map_or("-".to_string(), |s| format!("{} ago", age(s)))
        };
        out!(
            "{:<28} {:<22} {:<12} {:<13} {:<17} {:<9} {}",
            cell(&p["instance"]),
            cell(&p["workload"]),
            cell(&p["namespace"]),
            cell(&p["sync"]),
            cell(&p["ackedVersion"]),
            since("lastAckAgeSeconds"),
            p["behindForSeconds"].as_f64().map_or("-".to_string(), age),
        );
        if let Some(nack) = p["nack"].as_str() {
            out!("    rejected: {nack}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
