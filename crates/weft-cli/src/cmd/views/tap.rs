//! `weft tap DEST [--path P] [--method M] [--from W] [--max-rps N]`: the requests the proxies
//! see, live, as `linkerd viz tap` shows them: method, authority, path, status, latency,
//! response flags, and both peers' workloads and verified identities. Each sidecar serves its
//! own stream (`/tap` on its admin port, loopback only); this command opens the ones DEST needs
//! and prints what arrives. Events the proxies dropped (a slow reader, or over `--max-rps`) are
//! counted and reported, never waited for.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use super::mesh::{self, MeshArgs, ProxyAdmin};
use super::Output;

#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// What to tap: a workload (`reviews-v1`, `deploy/reviews-v1`: its requests in and out) or a
    /// service (`svc/reviews`: the requests its endpoints serve).
    pub dest: String,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub path: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only requests from this workload.
    #[arg(long)]
    pub from: Option<String>,
    /// At most this many events per second from each proxy (the rest are counted, not sent).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_rps: u32,
    /// Stop after this many events.
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format (`json`: one event per line, as it arrives).
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// What the proxies are asked for, and which events are kept.
struct Plan {
    proxies: Vec<ProxyAdmin>,
    query: String,
    /// A service tap keeps what the service's endpoints served (not the callers' view of it).
    inbound_only: bool,
}

pub fn run(args: TapArgs) -> anyhow::Result<ExitCode> {
    let found = mesh::locate(&args.mesh)?;
    let filters = Filters {
        path: args.path.clone(),
        method: args.method.clone(),
        from: args.from.clone(),
        max_rps: args.max_rps,
    };
    let events = open(Some(&args.dest), &filters, found.sidecars(&args.mesh)?)?;
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut seen = 0u64;
    while let Some(event) = events.next(deadline) {
        print_event(&event, args.output)?;
        seen += 1;
        if args.max_events.is_some_and(|m| seen >= m) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What every tap asks the proxies for besides its target.
pub struct Filters {
    pub path: Option<String>,
    pub method: Option<String>,
    pub from: Option<String>,
    pub max_rps: u32,
}

/// Events arriving from the open taps, each with `"proxy"` set to the sidecar that saw it.
pub struct Events {
    rx: mpsc::Receiver<(String, anyhow::Result<Value>)>,
    inbound_only: bool,
}

impl Events {
    /// The next event, or None once every stream ended or `deadline` passed. A stream's error
    /// is said on stderr and the others go on.
    pub fn next(&self, deadline: Option<Instant>) -> Option<Value> {
        loop {
            let (proxy, event) = match deadline {
                Some(d) => self
                    .rx
                    .recv_timeout(d.checked_duration_since(Instant::now())?)
                    .ok()?,
                None => self.rx.recv().ok()?,
            };
            let mut event = match event {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("weft: tap of {proxy}: {e:#}");
                    continue;
                }
            };
            if event["tap"] == "open" || (self.inbound_only && event["direction"] != "inbound") {
                continue;
            }
            event["proxy"] = proxy.into();
            return Some(event);
        }
    }
}

/// Opens the taps `dest` needs (None: every sidecar, each request once, where it arrives).
pub fn open(dest: Option<&str>, filters: &Filters, sidecars: &[ProxyAdmin]) -> anyhow::Result<Events> {
    let plan = plan(dest, filters, sidecars)?;
    let (tx, rx) = mpsc::channel::<(String, anyhow::Result<Value>)>();
    for proxy in plan.proxies {
        let (tx, query) = (tx.clone(), plan.query.clone());
        std::thread::spawn(move || {
            if let Err(e) = stream(&proxy, &query, &tx) {
                let _ = tx.send((proxy.instance.clone(), Err(e)));
            }
        });
    }
    Ok(Events {
        rx,
        inbound_only: plan.inbound_only,
    })
}

fn plan(dest: Option<&str>, args: &Filters, sidecars: &[ProxyAdmin]) -> anyhow::Result<Plan> {
    let mut query = vec![("max_rps", args.max_rps.to_string())];
    for (k, v) in [
        ("path", &args.path),
        ("method", &args.method),
        ("from", &args.from),
    ] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    let encoded = |query: &[(&str, String)]| {
        query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let Some(dest) = dest else {
        return Ok(Plan {
            proxies: sidecars.to_vec(),
            query: encoded(&query),
            inbound_only: true,
        });
    };
    let (kind, name) = match dest.split_once('/') {
        Some((k, n)) => (Some(k.to_ascii_lowercase()), n.to_string()),
        None => (None, dest.to_string()),
    };
    let of_workload: Vec<ProxyAdmin> = sidecars
        .iter()
        .filter(|p| p.workload == name || p.instance == name)
        .cloned()
        .collect();
    let service = match kind.as_deref() {
        Some("svc" | "service" | "services") => true,
        Some("workload" | "wl" | "deploy" | "deployment" | "po" | "pod") => false,
        Some(other) => {
            anyhow::bail!("{other:?} is not a kind: tap a workload (deploy/NAME) or a service (svc/NAME)")
        }
        None => of_workload.is_empty(),
    };
    let mut query = vec![("max_rps", args.max_rps.to_string())];
    for (k, v) in [
        ("path", &args.path),
        ("method", &args.method),
        ("from", &args.from),
    ] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    let proxies = if service {
        query.push(("to", name.clone()));
        sidecars.to_vec()
    } else {
        anyhow::ensure!(
            !of_workload.is_empty(),
            "no workload {name:?} in this mesh; its sidecars: {}",
            sidecars
                .iter()
                .map(|p| p.instance.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        of_workload
    };
    Ok(Plan {
        proxies,
        query: encoded(&query),
        inbound_only: service,
    })
}

/// Reads one sidecar's tap until it ends, sending each event.
fn stream(
    proxy: &ProxyAdmin,
    query: &str,
    tx: &mpsc::Sender<(String, anyhow::Result<Value>)>,
) -> anyhow::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&proxy.admin, Duration::from_secs(2))
        .with_context(|| format!("connecting to {}", proxy.admin))?;
    // HTTP/1.0: the stream is the body until the proxy closes it, with no chunk framing.
    write!(s, "GET /tap?{query} HTTP/1.0\r\nHost: {}\r\n\r\n", proxy.admin)?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let ok = status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200");
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    if !ok {
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut why);
        anyhow::bail!("{}: {}", status.trim(), why.trim());
    }
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let event =
            serde_json::from_str(&line).with_context(|| format!("a tap line that is not JSON: {line}"));
        if tx.send((proxy.instance.clone(), event)).is_err() {
            return Ok(());
        }
    }
}

fn print_event(e: &Value, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        out!("{}", serde_json::to_string(e)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let who = |side: &Value| match side["identity"].as_str() {
        Some(id) => format!("{} ({id})", s(&side["workload"])),
        None => s(&side["workload"]),
    };
    let dir = if e["direction"] == "inbound" { "in " } else { "out" };
    out!(
        "{dir} {} {}{} :status={} latency={:.1}ms flags={} tls={} src={} dst={} proxy={}",
        s(&e["method"]),
        s(&e["authority"]),
        s(&e["path"]),
        e["status"],
        e["latencyMs"].as_f64().unwrap_or(0.0),
        s(&e["flags"]),
        if e["mtls"] == true { "mtls" } else { "none" },
        who(&e["source"]),
        who(&e["destination"]),
        s(&e["proxy"]),
    );
    let (dropped, limited) = (
        e["dropped"].as_u64().unwrap_or(0),
        e["limited"].as_u64().unwrap_or(0),
    );
    if dropped + limited > 0 {
        out!("    ({dropped} events dropped before this one: reader too slow; {limited} over --max-rps)");
    }
    Ok(())
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(super::encode("/reviews/1 x"), "%2Freviews%2F1%20x");
        assert_eq!(super::encode("GET"), "GET");
    }
}
