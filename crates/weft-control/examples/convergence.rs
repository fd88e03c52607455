//! Control-plane convergence benchmark (shared/BENCHMARKS.md, "Control plane").
//!
//! For each N (default 10, 100, 1000): starts `weft control` as its own process on a generated
//! mesh (50 services, each with two workloads, a DestinationRule and a VirtualService), opens N
//! simulated proxies in this process (real tonic gRPC clients of the discovery API, one HTTP/2
//! connection each, every one a distinct instance that ACKs every push), waits until all are in
//! sync, then rewrites ONE VirtualService file and measures, per proxy, the time from the write
//! to receiving (and ACKing) a push with a new version. Pushes are resources sent as deltas: the
//! table shows the bytes of resources in a full state (a proxy's first push) and in the push each
//! proxy gets per change. Each change is repeated `--rounds`
//! times; the table shows the median over rounds of p50, p90 and max. The control plane's RSS is
//! read from /proc/PID/status before anyone connects and once all N are in sync.
//!
//! A benchmark, not a test: it prints figures and exits 0 (1 on a setup error). Every load is
//! bounded: N proxies, `--rounds` changes, a deadline per change, loopback only; the control
//! plane is killed at the end and on every error path.
//!
//! ```sh
//! cargo build --release -p weft-cli -p weft-control --examples
//! $CARGO_TARGET_DIR/release/examples/convergence --weft $CARGO_TARGET_DIR/release/weft \
//!     [--proxies 10,100,1000] [--rounds 3] [--deadline-s 10] [--services 50] [--poll-ms 50]
//! ```
//! (or `bench/convergence.sh`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use weft_api::proto::discovery_client::DiscoveryClient;
use weft_api::proto::discovery_request::Kind;
use weft_api::proto::{Ack, DiscoveryRequest, Subscribe};

struct Args {
    proxies: Vec<usize>,
    weft: PathBuf,
    rounds: usize,
    deadline: Duration,
    services: usize,
    poll_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        proxies: vec![10, 100, 1000],
        weft: default_weft(),
        rounds: 3,
        deadline: Duration::from_secs(10),
        services: 50,
        poll_ms: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--proxies" => {
                args.proxies = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--proxies: a comma-separated list of numbers")?;
            }
            "--weft" => args.weft = PathBuf::from(value()?),
            "--rounds" => args.rounds = value()?.parse()?,
            "--deadline-s" => args.deadline = Duration::from_secs_f64(value()?.parse()?),
            "--services" => args.services = value()?.parse()?,
            "--poll-ms" => args.poll_ms = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "convergence [--proxies 10,100,1000] [--weft PATH] [--rounds 3] [--deadline-s 10] [--services 50] [--poll-ms 50]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if args.proxies.iter().any(|n| *n == 0 || *n > 10_000) {
        bail!("--proxies: each N must be 1..=10000");
    }
    if args.services == 0 || args.services > 1000 || args.rounds == 0 || args.rounds > 20 {
        bail!("--services must be 1..=1000, --rounds 1..=20");
    }
    Ok(args)
}

/// `$CARGO_TARGET_DIR/release/weft`, else `target/release/weft`, else `weft` on the PATH.
fn default_weft() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let built = target.join("release/weft");
    if built.is_file() {
        return built;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("weft"))
                .find(|p| p.is_file())
        })
        .unwrap_or(built)
}

/// Up to 8,192 open files (each simulated proxy is one socket here and one in the control plane).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(8192);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                eprintln!("warning: cannot raise the open-files limit to {want}: {e}");
            }
        }
    }
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("convergence: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    raise_nofile();
    if !args.weft.is_file() {
        bail!("no weft binary at {} (give --weft PATH)", args.weft.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut rows = Vec::new();
    for &n in &args.proxies {
        eprintln!("== N = {n}");
        let row = rt.block_on(bench_one(&args, n))?;
        rows.push(row);
    }
    print_table(&args, &rows);
    Ok(())
}

struct Row {
    n: usize,
    /// Time from the first connect until every proxy ACKed its first config and pushes stopped.
    initial_sync: Duration,
    initial_pushes: u64,
    /// Streams that broke and were opened again, over the whole run for this N.
    reconnects: u64,
    /// Bytes of resources in a full-state push, and (median over rounds) in a push per change.
    full_bytes: usize,
    change_bytes: u64,
    rss_idle_kb: u64,
    rss_synced_kb: u64,
    hwm_kb: u64,
    /// Per round: sorted per-proxy latencies of those that converged within the deadline.
    rounds: Vec<Vec<Duration>>,
}

/// A running `weft control`, killed on drop (so on every error path too).
struct Control {
    child: Child,
    discovery: SocketAddr,
}

impl Control {
    fn start(weft: &Path, config: &Path, state: &Path, poll_ms: u64) -> anyhow::Result<Control> {
        let log = std::fs::File::create(state.with_extension("log")).context("control-plane log")?;
        let mut child = Command::new(weft)
            .args(["control", "--config-dir"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--poll-ms"])
            .arg(poll_ms.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", weft.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("weft control listening ") {
                    let _ = tx.send(json.to_string());
                }
            }
        });
        let mut control = Control {
            child,
            discovery: "127.0.0.1:0".parse()?,
        };
        let json = rx
            .recv_timeout(Duration::from_secs(20))
            .context("weft control did not print its listening line within 20 s")?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        control.discovery = v["discovery"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("no discovery address")?;
        Ok(control)
    }

    /// (VmRSS, VmHWM) in KB.
    fn rss_kb(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn service_docs(i: usize) -> String {
    let s = format!("svc-{i:03}");
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {s}}}
spec:
  selector: {{app: {s}}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: {s}-v1}}
spec: {{labels: {{app: {s}, version: v1}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: {s}-v2}}
spec: {{labels: {{app: {s}, version: v2}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {s}}}
spec:
  host: {s}
  trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#
    )
}

fn virtual_service(i: usize, v1_weight: u32) -> String {
    let s = format!("svc-{i:03}");
    let v2_weight = 100 - v1_weight;
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {s}}}
spec:
  hosts: [{s}]
  http:
  - match: [{{headers: {{x-canary: {{exact: "1"}}}}}}]
    route:
    - destination: {{host: {s}, subset: v2}}
  - route:
    - {{destination: {{host: {s}, subset: v1}}, weight: {v1_weight}}}
    - {{destination: {{host: {s}, subset: v2}}, weight: {v2_weight}}}
"#
    )
}

/// What the simulated proxies report to the benchmark.
enum Event {
    /// Proxy `idx` received a push and ACKed it.
    Acked {
        idx: usize,
        version: String,
        at: Instant,
        /// Bytes of resource bodies in the push, and whether it was the full state.
        bytes: usize,
        full_state: bool,
    },
    /// A stream broke; the proxy reconnects.
    Reconnect { error: String },
    /// A proxy gave up after its last reconnect.
    Failed { idx: usize, error: String },
}

/// One simulated proxy: its own HTTP/2 connection, Subscribe, ACK every push. Like a real proxy
/// it reconnects after a broken stream (100 ms doubling to 2 s, at most 10 times), and says so.
async fn simulated_proxy(
    idx: usize,
    addr: SocketAddr,
    sub: Subscribe,
    connecting: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    for attempt in 0..=10 {
        let result = session(idx, addr, sub.clone(), &connecting, &events, &stop).await;
        let error = match result {
            Ok(()) => return,
            Err(e) => format!("{e:#}"),
        };
        if attempt == 10 {
            let _ = events.send(Event::Failed { idx, error });
            return;
        }
        let _ = events.send(Event::Reconnect { error });
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// One stream, from connect until `stop` (Ok) or a failure (Err).
async fn session(
    idx: usize,
    addr: SocketAddr,
    sub: Subscribe,
    connecting: &Arc<Semaphore>,
    events: &mpsc::UnboundedSender<Event>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let permit = connecting.clone().acquire_owned().await?;
    // The same connection settings as weft-proxy's discovery client.
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(sub)),
    })
    .await?;
    let mut responses = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    drop(permit);
    let mut parts = weft_api::discovery::Reassembly::default();
    loop {
        let part = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = responses.message() => r?,
        };
        let Some(part) = part else {
            bail!("the control plane ended the stream");
        };
        // A large push comes in parts: answer the whole, as a proxy does.
        let Some(response) = parts.add(part) else {
            continue;
        };
        let bytes = response.resources.iter().map(|r| r.body.len()).sum();
        let full_state = response.full_state;
        tx.send(DiscoveryRequest {
            kind: Some(Kind::Ack(Ack {
                version: response.version.clone(),
                nonce: response.nonce,
                ok: true,
                error: String::new(),
            })),
        })
        .await?;
        let _ = events.send(Event::Acked {
            idx,
            version: response.version,
            at: Instant::now(),
            bytes,
            full_state,
        });
    }
}

/// What the benchmark knows of each proxy: the version it ACKed last.
struct Fleet {
    versions: Vec<Option<String>>,
    pushes: u64,
    reconnects: u64,
    /// The largest full-state push seen (bytes of resource bodies).
    full_bytes: usize,
    /// Delta pushes and their bytes since the counters were last reset.
    deltas: u64,
    delta_bytes: u64,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Fleet {
    /// Applies one event; errors on a proxy failure.
    fn apply(&mut self, e: Event) -> anyhow::Result<Option<(usize, Instant)>> {
        match e {
            Event::Acked {
                idx,
                version,
                at,
                bytes,
                full_state,
            } => {
                self.pushes += 1;
                if full_state {
                    self.full_bytes = self.full_bytes.max(bytes);
                } else {
                    self.deltas += 1;
                    self.delta_bytes += bytes as u64;
                }
                self.versions[idx] = Some(version);
                Ok(Some((idx, at)))
            }
            Event::Reconnect { error } => {
                if self.reconnects == 0 {
                    eprintln!("   first reconnect: {error}");
                }
                self.reconnects += 1;
                Ok(None)
            }
            Event::Failed { idx, error } => bail!("simulated proxy {idx} gave up: {error}"),
        }
    }

    /// Waits until every proxy has a version and no push arrived for `quiet`; bounded by `limit`.
    async fn settle(&mut self, quiet: Duration, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let all = self.versions.iter().all(Option::is_some);
            let wait = if all { quiet } else { limit };
            match tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + wait),
                self.events.recv(),
            )
            .await
            {
                Ok(Some(e)) => {
                    self.apply(e)?;
                }
                Ok(None) => bail!("every simulated proxy is gone"),
                Err(_) if all => return Ok(()),
                Err(_) => {
                    let missing = self.versions.iter().filter(|v| v.is_none()).count();
                    bail!("{missing} proxies had no config within {limit:?}");
                }
            }
        }
    }
}

async fn bench_one(args: &Args, n: usize) -> anyhow::Result<Row> {
    let base = std::env::temp_dir().join(format!("weft-convergence-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let scratch = Scratch(base.clone());
    let config = base.join("config");
    let state = base.join("state");
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(&state)?;
    for i in 0..args.services {
        std::fs::write(config.join(format!("svc-{i:03}.yaml")), service_docs(i))?;
        std::fs::write(config.join(format!("vs-{i:03}.yaml")), virtual_service(i, 90))?;
    }
    // One bootstrap token per workload, bound to it (as `weft token create --workload` mints).
    let tokens = weft_control::tokens::TokenStore::new(&state);
    let mut token_of = HashMap::new();
    for i in 0..args.services {
        for version in ["v1", "v2"] {
            let workload = format!("svc-{i:03}-{version}");
            let grant = weft_control::tokens::Grant::new(&workload, "default", "default");
            token_of.insert(workload, tokens.create(&grant)?);
        }
    }

    let control = Control::start(&args.weft, &config, &state, args.poll_ms)?;
    // Let it load and compile the documents, then read its idle footprint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle_kb, _) = control.rss_kb()?;

    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let connecting = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for idx in 0..n {
        let svc = (idx / 2) % args.services;
        let version = if idx % 2 == 0 { "v1" } else { "v2" };
        let app = format!("svc-{svc:03}");
        let workload = format!("{app}-{version}");
        // Labels and address are the control plane's to decide (the Workload document, the
        // connection's peer): a proxy claims neither.
        let sub = Subscribe {
            instance_id: format!("{app}-{version}-{idx}"),
            token: token_of.get(&workload).cloned().unwrap_or_default(),
            workload,
            namespace: "default".into(),
            labels: HashMap::new(),
            service_account: "default".into(),
            ip: String::new(),
            mesh_port: 20_000 + u32::try_from(idx)?,
            app_ports: [(8080, 40_000 + u32::try_from(idx)?)].into(),
            proxy_version: weft_api::version::describe(),
        };
        tasks.push(tokio::spawn(simulated_proxy(
            idx,
            control.discovery,
            sub,
            connecting.clone(),
            tx.clone(),
            stop.clone(),
        )));
    }
    drop(tx);
    let mut fleet = Fleet {
        versions: vec![None; n],
        pushes: 0,
        reconnects: 0,
        full_bytes: 0,
        deltas: 0,
        delta_bytes: 0,
        events: rx,
    };
    let result = measure(args, n, &control, &config, &mut fleet, started, rss_idle_kb).await;
    stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let warnings = std::fs::read_to_string(state.with_extension("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(5)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    if !warnings.is_empty() {
        eprintln!("control-plane warnings (first 5):\n  {}", warnings.join("\n  "));
    }
    drop(control);
    drop(scratch);
    result
}

async fn measure(
    args: &Args,
    n: usize,
    control: &Control,
    config: &Path,
    fleet: &mut Fleet,
    started: Instant,
    rss_idle_kb: u64,
) -> anyhow::Result<Row> {
    // Every connect registers an endpoint and so changes every proxy's config: wait until all
    // have one and the pushes stop.
    let quiet = Duration::from_secs(1);
    fleet.settle(quiet, Duration::from_secs(180)).await?;
    let initial_sync = started.elapsed().saturating_sub(quiet);
    let initial_pushes = fleet.pushes;
    let full_bytes = fleet.full_bytes;
    let (rss_synced_kb, _) = control.rss_kb()?;
    eprintln!(
        "   {n} in sync after {:.2} s ({initial_pushes} pushes, full state {full_bytes} bytes); RSS {rss_idle_kb} -> {rss_synced_kb} KB",
        initial_sync.as_secs_f64()
    );

    let weights = [80, 70, 60, 50, 40, 30, 20, 10];
    let mut rounds = Vec::new();
    let mut change_bytes = Vec::new();
    for round in 0..args.rounds {
        (fleet.deltas, fleet.delta_bytes) = (0, 0);
        let before: Vec<Option<String>> = fleet.versions.clone();
        let mut latency: Vec<Option<Duration>> = vec![None; n];
        let mut done = 0;
        let written = Instant::now();
        std::fs::write(
            config.join("vs-000.yaml"),
            virtual_service(0, weights[round % weights.len()]),
        )?;
        let deadline = tokio::time::Instant::from_std(written + args.deadline);
        while done < n {
            let e = match tokio::time::timeout_at(deadline, fleet.events.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => bail!("every simulated proxy is gone"),
                Err(_) => break,
            };
            if let Some((idx, at)) = fleet.apply(e)? {
                if latency[idx].is_none() && fleet.versions[idx] != before[idx] {
                    latency[idx] = Some(at.duration_since(written));
                    done += 1;
                }
            }
        }
        let mut got: Vec<Duration> = latency.into_iter().flatten().collect();
        got.sort();
        eprintln!(
            "   round {}: {}/{n} converged, p50 {} p90 {} max {}",
            round + 1,
            got.len(),
            ms(pct(&got, 50)),
            ms(pct(&got, 90)),
            ms(got.last().copied()),
        );
        rounds.push(got);
        // Let stragglers and any follow-up pushes drain before the next change.
        fleet
            .settle(Duration::from_millis(500), Duration::from_secs(60))
            .await?;
        let per_push = fleet.delta_bytes.checked_div(fleet.deltas).unwrap_or(0);
        eprintln!(
            "   round {}: {} delta pushes, {per_push} bytes of resources each",
            round + 1,
            fleet.deltas
        );
        change_bytes.push(per_push);
    }
    let (_, hwm_kb) = control.rss_kb()?;
    Ok(Row {
        n,
        initial_sync,
        initial_pushes,
        reconnects: fleet.reconnects,
        full_bytes,
        change_bytes: median(change_bytes).unwrap_or(0),
        rss_idle_kb,
        rss_synced_kb,
        hwm_kb,
        rounds,
    })
}

/// The `p`th percentile (nearest rank) of sorted durations.
fn pct(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> Option<T> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn print_table(args: &Args, rows: &[Row]) {
    println!();
    println!(
        "Control-plane convergence: {} services, 1 VirtualService edited, {} rounds per N (medians over rounds), deadline {} s, poll {} ms",
        args.services,
        args.rounds,
        args.deadline.as_secs_f64(),
        args.poll_ms
    );
    println!();
    println!("| N | p50 | p90 | max | converged | reconnects | initial sync | full state | push per change | CP RSS idle | CP RSS with N | KB/proxy | CP peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let per_round = |f: &dyn Fn(&[Duration]) -> Option<Duration>| {
            // A round where nobody converged counts as the deadline.
            median(r.rounds.iter().map(|g| f(g).unwrap_or(args.deadline)).collect())
        };
        let converged: HashMap<usize, usize> =
            r.rounds.iter().enumerate().map(|(i, g)| (i, g.len())).collect();
        let min_converged = converged.values().min().copied().unwrap_or(0);
        let kb_per_proxy = r.rss_synced_kb.saturating_sub(r.rss_idle_kb) as f64 / r.n as f64;
        println!(
            "| {} | {} | {} | {} | {}/{} (worst round) | {} | {:.2} s ({} pushes) | {:.0} KB | {:.1} KB | {:.1} MB | {:.1} MB | {:.0} | {:.1} MB |",
            r.n,
            ms(per_round(&|g| pct(g, 50))),
            ms(per_round(&|g| pct(g, 90))),
            ms(per_round(&|g| g.last().copied())),
            min_converged,
            r.n,
            r.reconnects,
            r.initial_sync.as_secs_f64(),
            r.initial_pushes,
            r.full_bytes as f64 / 1024.0,
            r.change_bytes as f64 / 1024.0,
            r.rss_idle_kb as f64 / 1024.0,
            r.rss_synced_kb as f64 / 1024.0,
            kb_per_proxy,
            r.hwm_kb as f64 / 1024.0,
        );
    }
    println!();
    println!("Targets (shared/BENCHMARKS.md): 1,000 proxies p90 <= 0.5 s; <= 150 KB of control-plane memory per proxy.");
}
