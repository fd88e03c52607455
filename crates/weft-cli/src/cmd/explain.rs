//! `weft explain PATH... [--from WORKLOAD[.NAMESPACE]] 'METHOD URL' [-H 'Name: value']...`:
//! which rule a request matches and where it goes, from the same code the proxies run. Several
//! paths are read together, so a routing variant is previewed beside the base documents
//! (`weft explain examples/bookinfo examples/bookinfo/routing/jason-v2 ...`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::explain::{self, ExplainRequest, Explanation};
use weft_api::validate;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Files or directories of YAML documents, read together, then the request, e.g.
    /// 'GET http://reviews:9080/reviews/1'.
    #[arg(required = true, num_args = 1.., value_name = "PATH... REQUEST")]
    pub words: Vec<String>,
    /// The calling workload, `name` or `name.namespace` (default: namespace `default`).
    #[arg(long)]
    pub from: Option<String>,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Output format: `text` or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Exit 3 when the request would be denied or not found (as `diff --exit-code` tells a
    /// difference), 0 when it is routed; without it, 0 whatever the decision.
    #[arg(long)]
    pub exit_code: bool,
}

/// The exit status of `--exit-code` for a refused request.
const REFUSED: u8 = 3;

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let (request, paths) = match args.words.split_last() {
        Some((request, paths)) if !paths.is_empty() => (request, paths),
        _ => {
            eprintln!(
                "weft explain: give the documents' paths, then the request ('GET http://reviews:9080/')"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let (method, host, port, path, query) = match explain::parse_request_line(request) {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("weft explain: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut headers = BTreeMap::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            eprintln!("weft explain: header {h:?} is not 'Name: value'");
            return Ok(ExitCode::from(2));
        };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let from = args.from.as_deref().map(|f| match f.split_once('.') {
        Some((name, ns)) => (name.to_string(), ns.to_string()),
        None => (f.to_string(), "default".to_string()),
    });
    for p in &paths {
        if !p.exists() {
            eprintln!("weft explain: {} does not exist", p.display());
            return Ok(ExitCode::from(2));
        }
    }
    let (translated, findings) = validate::analyze_paths(&paths);
    if let Some((name, ns)) = &from {
        let known = translated
            .mesh
            .workloads
            .iter()
            .any(|w| &w.name == name && &w.namespace == ns);
        if !known {
            let names: Vec<String> = translated.mesh.workloads.iter().map(|w| w.name.clone()).collect();
            eprintln!(
                "weft explain: --from {name}.{ns}: no Workload {ns}/{name} in these documents{}",
                did_you_mean(name, &names)
            );
            return Ok(ExitCode::from(2));
        }
    }
    let req = ExplainRequest {
        method,
        host,
        port,
        path,
        query,
        headers,
        from,
    };
    let e = explain::explain(&translated.mesh, &req);
    if e.service.is_none() {
        let names: Vec<String> = translated.mesh.services.iter().map(|s| s.name.clone()).collect();
        let short = req.host.split('.').next().unwrap_or(&req.host);
        let hint = did_you_mean(short, &names);
        if !hint.is_empty() {
            eprintln!("weft explain: {} is not a service of the mesh{hint}", req.host);
        }
    }
    let refused = matches!(e.decision, "not_found" | "deny")
        || e.authorization
            .as_ref()
            .is_some_and(|a| a["allowed"].as_bool() == Some(false));
    if args.output == "json" {
        out!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print_text(&e);
        let errors = findings
            .iter()
            .filter(|f| f.severity == weft_api::finding::Severity::Error)
            .count();
        if errors > 0 {
            out!("\nnote: `weft analyze` reports {errors} error(s) in these documents");
        }
    }
    Ok(match args.exit_code && refused && e.service.is_some() {
        true => ExitCode::from(REFUSED),
        false => ExitCode::SUCCESS,
    })
}

/// `; did you mean `X`?` for the name in `names` closest to `name` (at most two edits, or a
/// third of its length), else nothing.
fn did_you_mean(name: &str, names: &[String]) -> String {
    let limit = (name.len() / 3).max(2);
    names
        .iter()
        .filter(|n| n.as_str() != name)
        .map(|n| (edit_distance(name, n), n))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, n)| format!("; did you mean `{n}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn print_text(e: &Explanation) {
    let Some(service) = &e.service else {
        out!("not a mesh service: the request would leave the mesh unchanged (ALLOW_ANY) or be refused (REGISTRY_ONLY)");
        return;
    };
    out!("service:   {service}");
    for s in &e.skipped {
        out!(
            "skipped:   {} {}/{} rule {}: {}",
            s.kind,
            s.namespace,
            s.name,
            s.rule,
            s.reason
        );
    }
    match &e.matched {
        Some(m) => {
            let place = match (&m.file, m.line) {
                (Some(f), Some(l)) => format!(" ({f}:{l})"),
                _ => String::new(),
            };
            out!(
                "matched:   {} {}/{} rule {}{place}",
                m.kind,
                m.namespace,
                m.name,
                m.rule
            );
        }
        None if e.decision == "route" => out!("matched:   no routing rules: the service itself"),
        None => {}
    }
    out!("decision:  {}", e.decision);
    if let Some(reason) = &e.reason {
        out!("reason:    {reason}");
    }
    for b in &e.backends {
        let subset = b
            .subset
            .as_deref()
            .map(|s| format!(" subset {s}"))
            .unwrap_or_default();
        let port = b.port.map(|p| format!(":{p}")).unwrap_or_default();
        out!("backend:   {}{port}{subset} weight {}", b.service, b.weight);
    }
    for (backend, workloads) in &e.endpoints {
        out!(
            "endpoints: {backend}: {}",
            if workloads.is_empty() {
                "none".to_string()
            } else {
                workloads.join(", ")
            }
        );
    }
    let p = &e.policies;
    if let Some(name) = &p.route_name {
        let retryable = if p.retryable == Some(true) {
            " (retryable)"
        } else {
            ""
        };
        out!("route:     {name}{retryable}");
    }
    if let Some(t) = p.timeout_ms {
        out!("timeout:   {t} ms");
    }
    if let Some(r) = &p.retries {
        let per_try = r
            .per_try_timeout_ms
            .map(|t| format!(", {t} ms per try"))
            .unwrap_or_default();
        out!(
            "retries:   {} attempts on {}{per_try}",
            r.attempts,
            if r.retry_on.is_empty() {
                "Istio's defaults".into()
            } else {
                r.retry_on.join(",")
            }
        );
    }
    if let Some(b) = &p.retry_budget {
        out!(
            "budget:    retries up to {}% of requests + {}/s over {} ms",
            b.ratio * 100.0,
            b.min_per_second,
            b.ttl_ms
        );
    }
    if let Some(f) = &p.fault {
        let percent = |p: Option<f64>| p.map_or("all".to_string(), |p| format!("{p}%"));
        if let Some(ms) = f.delay_ms {
            out!(
                "fault:     delay {ms} ms on {} of requests",
                percent(f.delay_percent)
            );
        }
        let abort = match (f.abort_status, &f.abort_grpc_status) {
            (Some(status), _) => Some(format!("HTTP {status}")),
            (None, Some(grpc)) => Some(format!("gRPC {grpc}")),
            (None, None) => None,
        };
        if let Some(abort) = abort {
            out!(
                "fault:     abort with {abort} on {} of requests",
                percent(f.abort_percent)
            );
        }
    }
    if let Some(r) = &p.rewrite {
        if let Some(path) = &r.path {
            out!("rewrite:   path to {path}");
        }
        if let Some(authority) = &r.authority {
            out!("rewrite:   authority to {authority}");
        }
    }
    for (side, ops) in [("request", &p.request_headers), ("response", &p.response_headers)] {
        for (name, value) in &ops.set {
            out!("headers:   {side} set {name}: {value}");
        }
        for (name, value) in &ops.add {
            out!("headers:   {side} add {name}: {value}");
        }
        for name in &ops.remove {
            out!("headers:   {side} remove {name}");
        }
    }
    for m in &p.mirrors {
        out!("mirror:    {} {}%", m.service, m.percent);
    }
    if let Some(r) = &e.redirect {
        out!("redirect:  {} {}", r.status, r.location);
    }
    if let Some(d) = &e.direct_response {
        out!("response:  {} {}", d.status, d.body.as_deref().unwrap_or(""));
    }
    if let Some(a) = &e.authorization {
        let kind = a["kind"].as_str().unwrap_or("AuthorizationPolicy");
        let by = match (a["namespace"].as_str(), a["name"].as_str(), a["rule"].as_u64()) {
            (Some(ns), Some(name), Some(rule)) => format!(" by {kind} {ns}/{name} rule {rule}"),
            (Some(ns), Some(name), None) => format!(" by {kind} {ns}/{name} (no ALLOW rule matched)"),
            _ => " (no ALLOW policy matched)".into(),
        };
        let verdict = if a["allowed"].as_bool() == Some(true) {
            "allowed"
        } else {
            "denied"
        };
        out!("authz:     {verdict}{by}");
        if let Some(audit) = a["audit"].as_object() {
            out!(
                "audit:     {} {}/{} rule {}",
                audit["kind"].as_str().unwrap_or("AuthorizationPolicy"),
                audit["namespace"].as_str().unwrap_or("-"),
                audit["name"].as_str().unwrap_or("-"),
                audit["rule"]
            );
        }
    }
    for a in &e.authentication {
        out!(
            "authn:     {} {}/{} accepts JWTs from {} (authz above is for a request without a verified token)",
            a.kind,
            a.namespace,
            a.name,
            a.issuers.join(", ")
        );
    }
    out!("mtls:      {}", e.mtls.mode);
    for err in &e.errors {
        out!("error:     {err}");
    }
}
