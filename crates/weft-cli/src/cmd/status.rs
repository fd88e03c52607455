//! `weft status`: every connected proxy, the version it runs and whether it is in sync (as
//! `istioctl proxy-status`), and the documents the control plane rejected.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub control_admin: SocketAddr,
    /// Output format: `text` or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let body = http_get(args.control_admin, "/status").with_context(|| {
        format!(
            "asking the control plane at {} (is `weft control` running?)",
            args.control_admin
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&body).context("the control plane's /status is not JSON")?;
    if args.output == "json" {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<28} {:<24} {:<12} {:<8} VERSION",
        "PROXY",
        "WORKLOAD",
        "NAMESPACE",
        "SYNC"
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
        out!(
            "{:<28} {:<24} {:<12} {:<8} {}",
            s("instance"),
            s("workload"),
            s("namespace"),
            sync,
            s("ackedVersion")
        );
        if let Some(nack) = p["nack"].as_str() {
            out!("    rejected: {nack}");
        }
    }
    let errors: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "error")
        .collect();
    if !errors.is_empty() {
        out!("\nconfig errors (these documents are left out; the rest is served):");
        for f in errors {
            let at = format!(
                "{}:{}",
                f["file"].as_str().unwrap_or("?"),
                f["line"].as_u64().unwrap_or(0)
            );
            out!(
                "  {at}: {} {}",
                f["code"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tiny blocking HTTP/1.0 GET: the admin port is local and answers small documents.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    http_request(addr, "GET", path)
}

/// [`http_get`] with any method (no body).
pub(crate) fn http_request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("malformed HTTP response")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}
