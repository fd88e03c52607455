//! `weft proxy-config KIND INSTANCE`: one proxy's compiled configuration, as
//! `istioctl proxy-config` shows Envoy's: its listeners, services (Envoy's clusters), routes,
//! endpoints with their balancer state, and its certificate (identity and expiry only). Read
//! from the sidecar's admin `/proxy_config`.

use std::process::ExitCode;

use serde_json::Value;

use super::mesh::{self, MeshArgs};
use super::{age, cell, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    All,
    Listeners,
    /// The mesh services this proxy may reach (Envoy's clusters).
    #[value(alias = "clusters", alias = "cluster", alias = "service")]
    Services,
    #[value(alias = "route")]
    Routes,
    #[value(alias = "endpoint")]
    Endpoints,
    #[value(alias = "secret")]
    Secrets,
}

#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// What to show.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The proxy: an instance (`reviews-v1-0`), a workload (its first instance), optionally
    /// `.NAMESPACE`, or an admin address (`127.0.0.1:15000`).
    pub instance: String,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let found = mesh::locate(&args.mesh)?;
    let proxy = found.sidecar(&args.mesh, &args.instance)?;
    let v = mesh::get_json(proxy.admin, "/proxy_config")?;
    let key = match args.kind {
        Kind::All => None,
        Kind::Listeners => Some("listeners"),
        Kind::Services => Some("services"),
        Kind::Routes => Some("routes"),
        Kind::Endpoints => Some("endpoints"),
        Kind::Secrets => Some("secrets"),
    };
    if args.output == Output::Json {
        super::print_json(key.map_or(&v, |k| &v[k]))?;
        return Ok(ExitCode::SUCCESS);
    }
    let all = key.is_none();
    for (kind, print) in [
        ("listeners", listeners as fn(&Value)),
        ("services", services),
        ("routes", routes),
        ("endpoints", endpoints),
        ("secrets", secrets),
    ] {
        if all || key == Some(kind) {
            if all {
                out!("== {kind} ==");
            }
            print(&v[kind]);
            if all {
                out!("");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rows(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn listeners(v: &Value) {
    out!(
        "{:<34} {:<9} {:<22} {:<9} {:<11} DETAIL",
        "NAME",
        "DIRECTION",
        "ADDRESS",
        "PROTOCOL",
        "MTLS"
    );
    for l in rows(v) {
        let detail = if !l["app"].is_null() {
            format!("app {}", cell(&l["app"]))
        } else if !l["service"].is_null() {
            format!("to {}:{}", cell(&l["service"]), cell(&l["port"]))
        } else if !l["trafficPolicy"].is_null() {
            format!("HTTP proxy, {}", cell(&l["trafficPolicy"]))
        } else {
            String::new()
        };
        out!(
            "{:<34} {:<9} {:<22} {:<9} {:<11} {detail}",
            cell(&l["name"]),
            cell(&l["direction"]),
            cell(&l["address"]),
            cell(&l["protocol"]),
            cell(&l["mtls"]),
        );
    }
}

fn services(v: &Value) {
    out!(
        "{:<44} {:<16} {:<22} {:<14} ROUTED PORTS",
        "SERVICE",
        "VIP",
        "PORTS",
        "BALANCER"
    );
    for s in rows(v) {
        let ports: Vec<String> = rows(&s["ports"])
            .map(|p| format!("{}/{}", cell(&p["port"]), cell(&p["protocol"])))
            .collect();
        let routed: Vec<String> = rows(&s["routedPorts"]).map(cell).collect();
        out!(
            "{:<44} {:<16} {:<22} {:<14} {}",
            cell(&s["fqdn"]),
            cell(&s["vip"]),
            ports.join(","),
            cell(&s["loadBalancer"]),
            if routed.is_empty() {
                "-".to_string()
            } else {
                routed.join(",")
            },
        );
    }
}

fn routes(v: &Value) {
    for table in rows(v) {
        out!("{}:{}", cell(&table["service"]), cell(&table["port"]));
        super::routes::print_rules(&table["rules"], "  ");
    }
}

fn endpoints(v: &Value) {
    out!(
        "{:<48} {:<8} {:<22} {:<20} {:<6} {:<9} {:<8} STATE",
        "SERVICE:PORT",
        "SUBSET",
        "ADDRESS",
        "WORKLOAD",
        "WEIGHT",
        "IN-FLIGHT",
        "RTT"
    );
    for set in rows(v) {
        let name = format!("{}:{}", cell(&set["service"]), cell(&set["port"]));
        for e in rows(&set["endpoints"]) {
            let st = &e["state"];
            let rtt = st["rttEstimateMs"]
                .as_f64()
                .map_or("-".to_string(), |ms| format!("{ms:.1}ms"));
            let state = match st["unreachable"].as_bool() {
                Some(true) => "UNREACHABLE",
                Some(false) => "HEALTHY",
                None => "-",
            };
            out!(
                "{:<48} {:<8} {:<22} {:<20} {:<6} {:<9} {:<8} {state}",
                name,
                cell(&set["subset"]),
                cell(&e["address"]),
                cell(&e["workload"]),
                cell(&e["weight"]),
                cell(&st["inFlight"]),
                rtt,
            );
        }
    }
}

fn secrets(v: &Value) {
    out!(
        "{:<8} {:<58} {:<8} {:<12} NOT AFTER (unix)",
        "NAME",
        "IDENTITY",
        "STATE",
        "EXPIRES IN"
    );
    for s in rows(v) {
        out!(
            "{:<8} {:<58} {:<8} {:<12} {}",
            cell(&s["name"]),
            cell(&s["spiffeId"]),
            cell(&s["state"]),
            s["expiresInSeconds"].as_f64().map_or("-".to_string(), age),
            cell(&s["notAfter"]),
        );
    }
}
