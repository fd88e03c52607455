//! `weft routes SERVICE`: the routes of one mesh service as the proxies run them: for each
//! port, the rules in the order they are tried, what each matches, where it sends traffic and
//! the document (file:line) it came from. Read from a sidecar that may reach the service (every
//! such sidecar holds the same compiled table: each service is compiled once and shared).

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{json, Value};
use weft_api::route::{Action, PathMatch, RequestMatch, Rule, StringMatch};

use super::mesh::{self, MeshArgs};
use super::{cell, Output};

#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// The service: `reviews`, `reviews.NAMESPACE` or its full name.
    pub service: String,
    /// Read the routes from this sidecar (instance or workload) rather than the first that
    /// may reach the service.
    #[arg(long)]
    pub from: Option<String>,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: RoutesArgs) -> anyhow::Result<ExitCode> {
    let found = mesh::locate(&args.mesh)?;
    let candidates = match &args.from {
        Some(name) => vec![found.sidecar(&args.mesh, name)?],
        None => found.sidecars(&args.mesh)?.to_vec(),
    };
    let mut reached = None;
    for proxy in &candidates {
        let config = mesh::get_json(proxy.admin, "/proxy_config")?;
        let ns = config["workload"]["namespace"].as_str().unwrap_or("default");
        let fqdn = fqdn_of(&args.service, ns);
        if config["services"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["fqdn"] == fqdn.as_str())
        {
            reached = Some((proxy.clone(), config, fqdn));
            break;
        }
    }
    let (proxy, config, fqdn) = reached.with_context(|| {
        format!(
            "no sidecar{} may reach a service {:?}",
            args.from.as_ref().map_or(String::new(), |f| format!(" {f}")),
            args.service
        )
    })?;
    let service = config["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["fqdn"] == fqdn.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let ports: Vec<Value> = service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let table = config["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["service"] == fqdn.as_str() && t["port"] == p["port"]);
            json!({
                "port": p["port"],
                "protocol": p["protocol"],
                "rules": table.map_or(json!([]), |t| t["rules"].clone()),
                "profile": table.map_or(Value::Null, |t| t["profile"].clone()),
            })
        })
        .collect();
    let doc = json!({
        "service": fqdn,
        "from": proxy.instance,
        "vip": service["vip"],
        "loadBalancer": service["loadBalancer"],
        "ports": ports,
    });
    if args.output == Output::Json {
        super::print_json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{fqdn} (as the sidecar {} runs it)", proxy.instance);
    for p in &ports {
        out!("port {} ({}):", cell(&p["port"]), cell(&p["protocol"]));
        if p["rules"].as_array().is_none_or(Vec::is_empty) {
            out!("  no rules: every request goes to the service's endpoints");
        } else {
            print_rules(&p["rules"], "  ");
        }
        if !p["profile"].is_null() {
            out!("  profile: {}", p["profile"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `reviews` (in `ns`), `reviews.other` or a full name, as a full name.
pub fn fqdn_of(service: &str, ns: &str) -> String {
    let name = service.strip_suffix('.').unwrap_or(service);
    let domain = weft_api::proxy_config::CLUSTER_DOMAIN;
    match name.split('.').count() {
        1 => format!("{name}.{ns}.svc.{domain}"),
        2 => format!("{name}.svc.{domain}"),
        3 => format!("{name}.{domain}"),
        _ => name.to_string(),
    }
}

/// One line per rule, in the order the proxy tries them.
pub fn print_rules(rules: &Value, indent: &str) {
    for (i, raw) in rules.as_array().into_iter().flatten().enumerate() {
        // A rule this build cannot read (a newer proxy) is still shown, as it came.
        let Ok(rule) = serde_json::from_value::<Rule>(raw.clone()) else {
            out!("{indent}{i}. {raw}");
            continue;
        };
        out!("{indent}{i}. {}", describe(&rule));
    }
}

/// `GET /reviews/* -> reviews v2 (80), reviews v3 (20)  [VirtualService default/reviews rule 0, mesh.yaml:17]`.
fn describe(rule: &Rule) -> String {
    let when = if rule.matches.is_empty() {
        "any request".to_string()
    } else {
        rule.matches
            .iter()
            .map(describe_match)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let then = match &rule.action {
        Action::Forward(backends) => backends
            .iter()
            .map(|b| {
                let short = b.service.split('.').next().unwrap_or(&b.service);
                let subset = b.subset.as_deref().map_or(String::new(), |s| format!(" {s}"));
                let port = b.port.map_or(String::new(), |p| format!(":{p}"));
                format!("{short}{port}{subset} ({})", b.weight)
            })
            .collect::<Vec<_>>()
            .join(", "),
        Action::Redirect(r) => format!("redirect {}", r.status),
        Action::DirectResponse(d) => format!("respond {}", d.status),
    };
    let o = &rule.origin;
    let at = match (&o.file, o.line) {
        (Some(f), Some(l)) => format!(", {f}:{l}"),
        (Some(f), None) => format!(", {f}"),
        _ => String::new(),
    };
    let name = rule.name.as_deref().map_or(String::new(), |n| format!(" {n:?}"));
    format!(
        "{when} -> {then}  [{} {}/{}{name} rule {}{at}]",
        o.kind, o.namespace, o.name, rule.index
    )
}

fn describe_match(m: &RequestMatch) -> String {
    let mut parts = Vec::new();
    if let Some(method) = &m.method {
        parts.push(string_match(method));
    }
    if let Some(path) = &m.path {
        parts.push(match path {
            PathMatch::Exact { value, .. } => value.clone(),
            PathMatch::Prefix { value, .. } => format!("{value}*"),
            PathMatch::SegmentPrefix { value } => format!("{}/*", value.trim_end_matches('/')),
            PathMatch::Regex { value, .. } => format!("~{value}"),
        });
    }
    for h in &m.headers {
        let value = h.value.as_ref().map_or("*".to_string(), string_match);
        let not = if h.invert { "!" } else { "" };
        parts.push(format!("{not}{}={value}", h.name));
    }
    for q in &m.query {
        let value = q.value.as_ref().map_or("*".to_string(), string_match);
        parts.push(format!("?{}={value}", q.name));
    }
    if let Some(a) = &m.authority {
        parts.push(format!("host={}", string_match(a)));
    }
    if let Some(p) = m.port {
        parts.push(format!("port={p}"));
    }
    for (k, v) in &m.source_labels {
        parts.push(format!("from {k}={v}"));
    }
    if let Some(ns) = &m.source_namespace {
        parts.push(format!("from ns {ns}"));
    }
    if parts.is_empty() {
        "any request".to_string()
    } else {
        parts.join(" ")
    }
}

fn string_match(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => v.clone(),
        StringMatch::Prefix(v) => format!("{v}*"),
        StringMatch::Regex(v) => format!("~{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::fqdn_of;

    #[test]
    fn short_names_are_read_in_the_callers_namespace() {
        assert_eq!(fqdn_of("reviews", "bank"), "reviews.bank.svc.cluster.local");
        assert_eq!(fqdn_of("reviews.shop", "bank"), "reviews.shop.svc.cluster.local");
        assert_eq!(
            fqdn_of("reviews.shop.svc", "bank"),
            "reviews.shop.svc.cluster.local"
        );
        assert_eq!(
            fqdn_of("reviews.shop.svc.cluster.local.", "bank"),
            "reviews.shop.svc.cluster.local"
        );
    }
}
