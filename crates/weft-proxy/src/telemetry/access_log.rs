//! Access logs: one line per HTTP request and per TCP connection, in Istio's default text
//! format (Envoy's, with the upstream cluster and route name) or as JSON, on stdout or
//! appended to a file, as the workload's `Telemetry` (or the proxy's bootstrap) says.
//!
//! Writing never blocks a request: a finished request's facts go into a bounded queue that a
//! writer thread drains, formatting and writing off the request path; when the queue is full
//! the line is dropped and counted (`weft_access_log_dropped_total`). The writer flushes each
//! time the queue runs empty, so lines appear promptly at low rates and in batches at high ones.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Version};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;
use weft_api::proxy_config::{AccessLog, AccessLogFormat, ProxyConfig, Telemetry};
use weft_api::telemetry::{Filter, FilterInput};

use super::metrics::{Label, Peer};

/// Lines waiting for the writer; more are dropped (and counted), never waited for.
const QUEUE_LINES: usize = 4096;

/// The proxy's access logging: the bootstrap default and the queue to the writer thread.
pub struct AccessLogger {
    /// The bootstrap config's setting, for a workload no `Telemetry` document decides.
    defaults: Option<Vec<AccessLog>>,
    queue: Arc<Queue>,
}

struct Queue {
    tx: SyncSender<Line>,
    dropped: Counter,
}

/// The access logs of one config, by side; built when the config is applied.
#[derive(Default)]
pub struct Plan {
    client: Vec<Arc<Sink>>,
    server: Vec<Arc<Sink>>,
    queue: Option<Arc<Queue>>,
}

/// One destination: a format, a place, and which requests.
#[derive(Debug)]
pub struct Sink {
    format: AccessLogFormat,
    /// None: stdout.
    path: Option<PathBuf>,
    filter: Option<Filter>,
}

/// What is known of a request (or connection) being logged, from its arrival on.
pub struct Pending {
    plan: Arc<Plan>,
    client: bool,
    start: SystemTime,
    /// None for a TCP connection.
    http: Option<HttpFacts>,
    upstream_host: Option<SocketAddr>,
    upstream_cluster: Option<String>,
    /// Upstream attempts made (the first try and each retry).
    attempts: u32,
}

/// The request head's parts a line shows (cheap clones of the canonical request's values).
#[derive(Clone)]
struct HttpFacts {
    method: Method,
    path: Option<PathAndQuery>,
    protocol: &'static str,
    authority: Option<String>,
    user_agent: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    trace_id: Option<String>,
}

/// How a request or connection ended, as the request path hands it over.
pub struct Outcome<'a> {
    pub code: u16,
    pub flags: &'static str,
    pub grpc_status: Option<&'a Label>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub reporter: &'static str,
    pub source: &'a Peer,
    pub destination: &'a Peer,
    pub service: &'a Label,
    pub route: Option<&'a Label>,
    pub mtls: bool,
}

/// One finished request on its way to the writer.
struct Line {
    sinks: Vec<Arc<Sink>>,
    record: Record,
}

struct Record {
    start: SystemTime,
    http: Option<HttpFacts>,
    code: u16,
    flags: &'static str,
    grpc_status: Option<Label>,
    bytes_received: u64,
    bytes_sent: u64,
    duration_ms: u64,
    upstream_host: Option<SocketAddr>,
    upstream_cluster: Option<String>,
    route: Option<Label>,
    attempts: u32,
    reporter: &'static str,
    source: Peer,
    destination: Peer,
    service: Label,
    mtls: bool,
}

// === impl AccessLogger ===

impl AccessLogger {
    /// Starts the writer thread; `bootstrap` is what applies where no document decides.
    pub fn new(bootstrap: &Telemetry, registry: &mut Registry) -> anyhow::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let dropped = Counter::default();
        let written = Counter::default();
        registry.register(
            "weft_access_log_dropped",
            "Access-log lines dropped because the writer fell behind (or a file could not be written)",
            dropped.clone(),
        );
        registry.register(
            "weft_access_log_lines",
            "Access-log lines written",
            written.clone(),
        );
        let failed = dropped.clone();
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_lines(rx, written, failed))?;
        Ok(Self {
            defaults: bootstrap.access_logs.clone(),
            queue: Arc::new(Queue { tx, dropped }),
        })
    }

    /// The access logs `config` asks for: its documents' decision, else the bootstrap's.
    pub fn plan(&self, config: &ProxyConfig) -> Arc<Plan> {
        let logs = config.telemetry.access_logs.as_ref().or(self.defaults.as_ref());
        let mut plan = Plan {
            queue: Some(self.queue.clone()),
            ..Plan::default()
        };
        for log in logs.into_iter().flatten() {
            let filter = log.filter.as_deref().and_then(|f| {
                // A pushed config is validated first; a bootstrap file is too, at load.
                Filter::parse(f)
                    .inspect_err(|e| tracing::warn!(error = %e, "access-log filter ignored"))
                    .ok()
            });
            let sink = Arc::new(Sink {
                format: log.format,
                path: log.path.clone(),
                filter,
            });
            if log.mode.covers(true) {
                plan.client.push(sink.clone());
            }
            if log.mode.covers(false) {
                plan.server.push(sink);
            }
        }
        Arc::new(plan)
    }
}

// === impl Pending ===

impl Pending {
    /// Starts a log entry for an HTTP request, if this side logs at all.
    pub fn request<B>(plan: &Arc<Plan>, client: bool, req: &Request<B>) -> Option<Box<Self>> {
        plan.enabled(client)?;
        let h = req.headers();
        let header = |name: &str| h.get(name).cloned();
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| h.get(http::header::HOST)?.to_str().ok().map(str::to_string));
        let http = HttpFacts {
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            // Between proxies HTTP/1.1 rides HTTP/2 with a header naming the client's protocol.
            protocol: match req.version() {
                _ if h.contains_key(crate::http::headers::ORIG_PROTO) => "HTTP/1.1",
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            authority,
            user_agent: header("user-agent"),
            forwarded_for: header("x-forwarded-for"),
            request_id: header("x-request-id"),
            trace_id: trace_id(h),
        };
        Some(Box::new(Self::new(plan, client, Some(http))))
    }

    /// Starts a log entry for a TCP connection, if this side logs at all.
    pub fn connection(plan: &Arc<Plan>, client: bool) -> Option<Box<Self>> {
        plan.enabled(client)?;
        Some(Box::new(Self::new(plan, client, None)))
    }

    fn new(plan: &Arc<Plan>, client: bool, http: Option<HttpFacts>) -> Self {
        Self {
            plan: plan.clone(),
            client,
            start: SystemTime::now(),
            http,
            upstream_host: None,
            upstream_cluster: None,
            attempts: 0,
        }
    }

    /// Notes one attempt to an upstream (`cluster` is built only here, when logging).
    pub fn upstream(&mut self, host: SocketAddr, cluster: impl FnOnce() -> String) {
        self.attempts += 1;
        self.upstream_host = Some(host);
        if self.upstream_cluster.is_none() {
            self.upstream_cluster = Some(cluster());
        }
    }

    /// Queues the line for an HTTP request (`tcp`: as a TCP connection's line), if a sink's
    /// filter takes it; drops and counts it when the writer is behind.
    pub fn finish(&self, out: &Outcome<'_>, tcp: bool) {
        let sinks = if self.client {
            &self.plan.client
        } else {
            &self.plan.server
        };
        let grpc_status = out.grpc_status.and_then(|g| g.0.parse().ok());
        let method = match (&self.http, tcp) {
            (Some(h), false) => h.method.as_str(),
            _ => "",
        };
        let cluster = match (out.flags, self.upstream_cluster.as_deref()) {
            ("PT", _) => "PassthroughCluster",
            ("NR", None) => "BlackHoleCluster",
            (_, c) => c.unwrap_or(""),
        };
        let input = FilterInput {
            code: if tcp { 0 } else { out.code },
            flags: out.flags,
            grpc_status,
            method,
            mtls: out.mtls,
            cluster,
        };
        let chosen: Vec<Arc<Sink>> = sinks
            .iter()
            .filter(|s| s.filter.as_ref().is_none_or(|f| f.matches(&input)))
            .cloned()
            .collect();
        let Some(queue) = self.plan.queue.as_ref().filter(|_| !chosen.is_empty()) else {
            return;
        };
        let record = Record {
            start: self.start,
            http: if tcp { None } else { self.http.clone() },
            code: input.code,
            flags: out.flags,
            grpc_status: out.grpc_status.filter(|_| grpc_status.is_some()).cloned(),
            bytes_received: out.bytes_received,
            bytes_sent: out.bytes_sent,
            duration_ms: out.duration_ms,
            upstream_host: self.upstream_host,
            upstream_cluster: self.upstream_cluster.clone(),
            route: out.route.cloned(),
            attempts: self.attempts,
            reporter: out.reporter,
            source: out.source.clone(),
            destination: out.destination.clone(),
            service: out.service.clone(),
            mtls: out.mtls,
        };
        match queue.tx.try_send(Line {
            sinks: chosen,
            record,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                queue.dropped.inc();
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Plan {
    fn enabled(&self, client: bool) -> Option<()> {
        let sinks = if client { &self.client } else { &self.server };
        (!sinks.is_empty()).then_some(())
    }
}

/// The trace id a request carries: W3C `traceparent` (`00-<32 hex>-<16 hex>-<flags>`), else
/// B3 (`x-b3-traceid`, or the first field of the single `b3` header).
fn trace_id(h: &http::HeaderMap) -> Option<String> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(id) = get("traceparent").and_then(|v| v.split('-').nth(1)) {
        return Some(id.to_string());
    }
    get("x-b3-traceid")
        .or_else(|| get("b3").and_then(|v| v.split('-').next()))
        .map(str::to_string)
}

// === the writer ===

/// Drains the queue until every sender is gone, flushing whenever it runs empty.
fn write_lines(rx: Receiver<Line>, written: Counter, failed: Counter) {
    let mut stdout = BufWriter::new(std::io::stdout());
    let mut files: HashMap<PathBuf, Option<BufWriter<File>>> = HashMap::new();
    let mut text = String::with_capacity(512);
    loop {
        let line = match rx.try_recv() {
            Ok(line) => line,
            Err(TryRecvError::Empty) => {
                let _ = stdout.flush();
                for f in files.values_mut().flatten() {
                    let _ = f.flush();
                }
                match rx.recv() {
                    Ok(line) => line,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        for sink in &line.sinks {
            text.clear();
            match sink.format {
                AccessLogFormat::Text => format_text(&line.record, &mut text),
                AccessLogFormat::Json => format_json(&line.record, &mut text),
            }
            text.push('\n');
            let out: &mut dyn Write = match &sink.path {
                None => &mut stdout,
                Some(path) => match files.entry(path.clone()).or_insert_with(|| open(path)) {
                    Some(f) => f,
                    None => {
                        failed.inc();
                        continue;
                    }
                },
            };
            match out.write_all(text.as_bytes()) {
                Ok(()) => {
                    written.inc();
                }
                Err(_) => {
                    failed.inc();
                }
            }
        }
    }
    let _ = stdout.flush();
    for f in files.values_mut().flatten() {
        let _ = f.flush();
    }
}

fn open(path: &PathBuf) -> Option<BufWriter<File>> {
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(BufWriter::new(f)),
        Err(e) => {
            // Once per path: the entry stays None and later lines are counted as dropped.
            tracing::warn!(path = %path.display(), error = %e, "cannot open the access-log file; its lines are dropped");
            None
        }
    }
}

// === formats ===

/// `2026-12-07T23:40:01.123Z`, as Envoy prints `%START_TIME%`.
fn timestamp(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for what Weft knows: the upstream answered, or why the
/// proxy did.
fn details(r: &Record) -> &'static str {
    match r.flags {
        "-" | "PT" if r.http.is_some() => "via_upstream",
        "-" | "PT" => "-",
        "UH" => "no_healthy_upstream",
        "UF" => "upstream_reset_before_response_started{connection_failure}",
        "UT" => "upstream_response_timeout",
        "UO" => "upstream_overflow",
        "NR" => "route_not_found",
        "DC" => "downstream_remote_disconnect",
        "UC" => "upstream_reset_before_response_started{connection_termination}",
        "DPE" => "invalid_request",
        "FI" => "fault_filter_abort",
        "RBAC" => "rbac_access_denied",
        _ => "-",
    }
}

/// Whether a line of a sidecar's stdout is an access-log line (the sidecar prints its effective
/// config and its addresses there too): the text format's `[START_TIME]` or a JSON line.
pub fn is_line(line: &str) -> bool {
    let text = line.starts_with('[') && line.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
    text || line.starts_with("{\"start_time\":")
}

/// The upstream cluster as Istio names it: `outbound|9080|v1|reviews.default.svc.cluster.local`
/// or `inbound|9080||`.
pub fn cluster_name(outbound: bool, port: u16, subset: Option<&str>, fqdn: &str) -> String {
    let dir = if outbound { "outbound" } else { "inbound" };
    format!("{dir}|{port}|{}|{fqdn}", subset.unwrap_or(""))
}

/// Istio's default text format:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
/// "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
/// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
/// %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
/// %REQUESTED_SERVER_NAME% %ROUTE_NAME%`; what Weft does not know prints `-`.
fn format_text(r: &Record, out: &mut String) {
    let hv = |v: &Option<HeaderValue>| {
        v.as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let (method, path, protocol, xff, ua, rid, authority) = match &r.http {
        Some(h) => (
            h.method.as_str().to_string(),
            h.path.as_ref().map_or("-", |p| p.as_str()).to_string(),
            h.protocol,
            hv(&h.forwarded_for),
            hv(&h.user_agent),
            hv(&h.request_id),
            h.authority.clone().unwrap_or_else(|| "-".into()),
        ),
        None => (
            "-".into(),
            "-".into(),
            "-",
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ),
    };
    let host = r.upstream_host.map_or_else(|| "-".to_string(), |h| h.to_string());
    let _ = write!(
        out,
        "[{}] \"{method} {path} {protocol}\" {} {} {} - \"-\" {} {} {} - \"{xff}\" \"{ua}\" \"{rid}\" \"{authority}\" \"{host}\" {} - - - - {}",
        timestamp(r.start),
        r.code,
        r.flags,
        details(r),
        r.bytes_received,
        r.bytes_sent,
        r.duration_ms,
        r.upstream_cluster.as_deref().unwrap_or("-"),
        r.route.as_ref().map_or("-", |l| &l.0),
    );
}

/// The JSON form: Istio's JSON access-log keys, plus who called whom, retries and the trace.
#[derive(Serialize)]
struct JsonLine<'a> {
    start_time: String,
    method: Option<&'a str>,
    path: Option<&'a str>,
    protocol: Option<&'a str>,
    response_code: u16,
    response_flags: &'a str,
    response_code_details: &'a str,
    grpc_status: Option<&'a str>,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<String>,
    upstream_cluster: Option<&'a str>,
    route_name: Option<&'a str>,
    retry_count: u32,
    trace_id: Option<&'a str>,
    reporter: &'a str,
    source_workload: &'a str,
    source_namespace: &'a str,
    source_principal: &'a str,
    destination_workload: &'a str,
    destination_namespace: &'a str,
    destination_principal: &'a str,
    destination_service: &'a str,
    connection_security_policy: &'a str,
}

fn format_json(r: &Record, out: &mut String) {
    let h = r.http.as_ref();
    let hv = |f: fn(&HttpFacts) -> &Option<HeaderValue>| h.and_then(|h| f(h).as_ref()?.to_str().ok());
    let line = JsonLine {
        start_time: timestamp(r.start),
        method: h.map(|h| h.method.as_str()),
        path: h.and_then(|h| h.path.as_ref()).map(PathAndQuery::as_str),
        protocol: h.map(|h| h.protocol),
        response_code: r.code,
        response_flags: r.flags,
        response_code_details: details(r),
        grpc_status: r.grpc_status.as_ref().map(|g| &*g.0),
        bytes_received: r.bytes_received,
        bytes_sent: r.bytes_sent,
        duration: r.duration_ms,
        x_forwarded_for: hv(|h| &h.forwarded_for),
        user_agent: hv(|h| &h.user_agent),
        request_id: hv(|h| &h.request_id),
        authority: h.and_then(|h| h.authority.as_deref()),
        upstream_host: r.upstream_host.map(|a| a.to_string()),
        upstream_cluster: r.upstream_cluster.as_deref(),
        route_name: r.route.as_ref().map(|l| &*l.0),
        retry_count: r.attempts.saturating_sub(1),
        trace_id: h.and_then(|h| h.trace_id.as_deref()),
        reporter: r.reporter,
        source_workload: &r.source.workload.0,
        source_namespace: &r.source.namespace.0,
        source_principal: &r.source.principal.0,
        destination_workload: &r.destination.workload.0,
        destination_namespace: &r.destination.namespace.0,
        destination_principal: &r.destination.principal.0,
        destination_service: &r.service.0,
        connection_security_policy: if r.mtls { "mutual_tls" } else { "none" },
    };
    if let Ok(s) = serde_json::to_string(&line) {
        out.push_str(&s);
    }
}

#[cfg(test)]
mod tests;
