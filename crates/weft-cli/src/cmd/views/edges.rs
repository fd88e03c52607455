//! `weft edges [-n NS]`: who talks to whom, the identities each side proved, and whether the
//! edge is mTLS, from the sidecars' live metrics (as `linkerd viz edges`).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use weft_control::telemetry;

use super::mesh::{self, MeshArgs};
use super::scrape::{parse_window, scrape};
use super::Output;

#[derive(Debug, clap::Args)]
pub struct EdgesArgs {
    /// Only edges with an end in this namespace.
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// The window over which requests per second are measured (edges are every pair seen
    /// since the sidecars started).
    #[arg(long = "time-window", short = 't', default_value = "2s", value_parser = parse_window)]
    pub window: Duration,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: EdgesArgs) -> anyhow::Result<ExitCode> {
    let found = mesh::locate(&args.mesh)?;
    let scraped = scrape(found.sidecars(&args.mesh)?, args.window);
    for (proxy, why) in &scraped.unreachable {
        eprintln!("weft edges: left out {proxy}: {why}");
    }
    let edges = telemetry::edges(&scraped.window, args.namespace.as_deref());
    if args.output == Output::Json {
        super::print_json(&json!({
            "windowSeconds": scraped.window.seconds,
            "edges": edges,
            "unreachable": scraped.unreachable.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<18} {:<18} {:<10} {:<10} {:<58} {:<58} {:<8} RPS",
        "SRC",
        "DST",
        "SRC_NS",
        "DST_NS",
        "CLIENT_ID",
        "SERVER_ID",
        "SECURED"
    );
    for e in &edges {
        let secured = match e.mtls_share {
            s if s >= 1.0 => "yes".to_string(),
            s if s <= 0.0 => "no".to_string(),
            s => format!("{:.0}%", s * 100.0),
        };
        out!(
            "{:<18} {:<18} {:<10} {:<10} {:<58} {:<58} {:<8} {:.1}",
            e.source,
            e.destination,
            e.source_namespace,
            e.destination_namespace,
            e.source_identity.as_deref().unwrap_or("-"),
            e.destination_identity.as_deref().unwrap_or("-"),
            secured,
            e.rps
        );
    }
    Ok(ExitCode::SUCCESS)
}
