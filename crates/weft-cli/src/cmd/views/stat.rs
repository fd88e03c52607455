//! `weft stat [KIND[/NAME]] [-n NS] [--from W] [--to W] [-t WINDOW] [-o wide|json]`: success
//! rate, requests per second, latency percentiles, TCP connections and mTLS share per workload,
//! service, namespace or named route, over a window, as `linkerd viz stat` shows them. Computed
//! from two scrapes of every sidecar's metrics (no metrics stack needed).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use weft_control::telemetry::{self, Golden, Group, Query};

use super::mesh::{self, MeshArgs};
use super::scrape::{parse_window, scrape};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatOutput {
    Text,
    Wide,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// What the rows are: `workload` (also `deploy`, `wl`), `service` (`svc`), `namespace`
    /// (`ns`) or `route` (`rt`: named routes), optionally `/NAME` for one row.
    #[arg(default_value = "workload")]
    pub target: String,
    /// Only rows in this namespace.
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// Only requests from this workload (`name` or `name.namespace`), as the receivers saw them.
    #[arg(long)]
    pub from: Option<String>,
    /// Only requests to this workload or service, as the senders saw them (rows are senders).
    #[arg(long)]
    pub to: Option<String>,
    /// The window: the sidecars are scraped at its start and end (`10s`, `1m`).
    #[arg(long = "time-window", short = 't', default_value = "10s", value_parser = parse_window)]
    pub window: Duration,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = StatOutput::Text)]
    pub output: StatOutput,
}

pub fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let (group, name) = match parse_target(&args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("weft stat: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if group == Group::Route && args.from.is_some() {
        eprintln!("weft stat: route rows take --to SERVICE, not --from");
        return Ok(ExitCode::from(2));
    }
    let found = mesh::locate(&args.mesh)?;
    let sidecars = found.sidecars(&args.mesh)?;
    let scraped = scrape(sidecars, args.window);
    for (proxy, why) in &scraped.unreachable {
        eprintln!("weft stat: left out {proxy}: {why}");
    }
    let query = Query {
        name,
        namespace: args.namespace.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let rows = telemetry::stat(&scraped.window, group, &query);
    if args.output == StatOutput::Json {
        super::print_json(&json!({
            "group": group,
            "windowSeconds": scraped.window.seconds,
            "rows": rows,
            "unreachable": scraped.unreachable.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    print_rows(&rows, group, args.output == StatOutput::Wide);
    Ok(ExitCode::SUCCESS)
}

/// `workload`, `deploy/reviews-v1`, `svc/reviews`, `ns`, `route/GET /books/{id}`...
fn parse_target(target: &str) -> Result<(Group, Option<String>), String> {
    let (kind, name) = match target.split_once('/') {
        Some((k, n)) => (k, Some(n.to_string()).filter(|n| !n.is_empty())),
        None => (target, None),
    };
    let group = match kind.to_ascii_lowercase().as_str() {
        "workload" | "workloads" | "wl" | "deploy" | "deployment" | "deployments" => Group::Workload,
        "service" | "services" | "svc" => Group::Service,
        "namespace" | "namespaces" | "ns" => Group::Namespace,
        "route" | "routes" | "rt" => Group::Route,
        other => {
            return Err(format!(
                "{other:?} is not a kind: want workload, service, namespace or route (optionally /NAME)"
            ))
        }
    };
    Ok((group, name))
}

fn print_rows(rows: &[Golden], group: Group, wide: bool) {
    let second = if group == Group::Route {
        "SERVICE"
    } else {
        "NAMESPACE"
    };
    let mut header = format!(
        "{:<24} {:<14} {:>8} {:>8} {:>12} {:>12} {:>12} {:>9} {:>6}",
        "NAME", second, "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN", "MTLS"
    );
    if wide {
        header.push_str(&format!(" {:>8} {:>9}", "PROXIES", "REQUESTS"));
    }
    out!("{header}");
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}ms"));
    for r in rows {
        let mut line = format!(
            "{:<24} {:<14} {:>8} {:>8} {:>12} {:>12} {:>12} {:>9} {:>6}",
            r.name,
            r.service.as_deref().unwrap_or(&r.namespace),
            pct(r.success_rate),
            format!("{:.1}rps", r.rps),
            ms(r.latency_ms_p50),
            ms(r.latency_ms_p95),
            ms(r.latency_ms_p99),
            r.tcp_connections,
            r.mtls_share
                .map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0)),
        );
        if wide {
            line.push_str(&format!(" {:>8} {:>9}", r.proxies, r.requests));
        }
        out!("{line}");
    }
    if rows.is_empty() {
        out!("(no traffic in the window)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("deploy/reviews-v1"),
            Ok((Group::Workload, Some("reviews-v1".into())))
        );
        assert_eq!(parse_target("svc"), Ok((Group::Service, None)));
        assert_eq!(parse_target("ns/"), Ok((Group::Namespace, None)));
        assert_eq!(
            parse_target("route/GET /books/{id}"),
            Ok((Group::Route, Some("GET /books/{id}".into())))
        );
        assert!(parse_target("pods").expect_err("an error").contains("not a kind"));
    }
}
