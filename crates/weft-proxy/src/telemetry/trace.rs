//! Distributed tracing: trace context in and out of every request, a span per hop, spans
//! exported over OTLP/gRPC.
//!
//! - **Propagation**, always: the context a request arrives with (W3C `traceparent` and
//!   `tracestate`, else B3 single `b3` or multi `x-b3-*`) is continued, or a trace begins; the
//!   request leaves with `traceparent` naming this hop's span (and `x-b3-*` too when it came
//!   with B3), so the next hop's span is its child. A request without `x-request-id` gets one.
//! - **Sampling**: a caller's decision is kept; a new trace is recorded with the configured
//!   probability (`Telemetry` `randomSamplingPercentage`, default 1 %).
//! - **Spans**: the outbound proxy records a client span, the inbound one a server span, with
//!   Istio's names (`reviews.default.svc.cluster.local:9080/*`) and tags.
//! - **Export**: finished spans go into a bounded queue (full: dropped and counted, never
//!   waited for); a task sends them in batches with the `opentelemetry-otlp` exporter to the
//!   collector the config names, else to `OTEL_EXPORTER_OTLP_ENDPOINT`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Request};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use weft_api::proxy_config::{ProxyConfig, Telemetry, Tracing};

use super::access_log::Outcome;

/// Spans waiting for export; more are dropped (and counted).
const QUEUE_SPANS: usize = 2048;
/// Spans sent in one export call at most.
const MAX_BATCH: usize = 512;
/// How long a batch waits to fill before it is sent anyway.
const BATCH_DELAY: Duration = Duration::from_millis(100);
/// An export that takes longer fails (its spans are counted as failed).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy's tracing: the bootstrap default, the environment's collector, one exporter per
/// collector in use.
pub struct Tracer {
    defaults: Option<Tracing>,
    env_endpoint: Option<String>,
    exporters: Mutex<HashMap<String, SpanQueue>>,
    counters: Counters,
}

#[derive(Clone)]
struct Counters {
    exported: Counter,
    dropped: Counter,
    failed: Counter,
}

#[derive(Clone)]
struct SpanQueue {
    tx: mpsc::Sender<SpanData>,
    dropped: Counter,
}

/// The tracing of one config; built when the config is applied.
pub struct Plan {
    /// Probability (0 to 1) that a new trace is recorded.
    sampling: f64,
    /// None: spans are not sent anywhere (no collector, or span reporting disabled).
    queue: Option<SpanQueue>,
    /// This workload's `istio.canonical_service` and namespace.
    canonical_service: String,
    namespace: String,
}

/// The context a request arrived with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: u128,
    pub span_id: u64,
    /// None: the caller did not decide.
    pub sampled: Option<bool>,
    /// It came as B3 (and leaves with B3 too).
    pub b3: bool,
}

/// This hop's span while its request runs; recorded when it ends, if sampled.
pub struct ActiveSpan {
    plan: Arc<Plan>,
    client: bool,
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    start: SystemTime,
    authority: String,
    port: u16,
    method: http::Method,
    path: String,
    protocol: &'static str,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    upstream_host: Option<SocketAddr>,
    upstream_cluster: Option<String>,
}

// === impl Tracer ===

impl Tracer {
    /// `env_endpoint`: the process's `OTEL_EXPORTER_OTLP_ENDPOINT`, read by the caller.
    pub fn new(bootstrap: &Telemetry, env_endpoint: Option<String>, registry: &mut Registry) -> Self {
        let counters = Counters {
            exported: Counter::default(),
            dropped: Counter::default(),
            failed: Counter::default(),
        };
        registry.register(
            "weft_trace_spans_exported",
            "Spans accepted by the collector",
            counters.exported.clone(),
        );
        registry.register(
            "weft_trace_spans_dropped",
            "Spans dropped because the export queue was full",
            counters.dropped.clone(),
        );
        registry.register(
            "weft_trace_spans_failed",
            "Spans whose export failed (collector unreachable or refusing)",
            counters.failed.clone(),
        );
        Self {
            defaults: bootstrap.tracing.clone(),
            env_endpoint: env_endpoint.filter(|e| !e.is_empty()),
            exporters: Mutex::default(),
            counters,
        }
    }

    /// The tracing `config` asks for: its documents' decision, else the bootstrap's, else
    /// Istio's default (1 %, the environment's collector).
    pub fn plan(&self, config: &ProxyConfig) -> Arc<Plan> {
        let tracing = config
            .telemetry
            .tracing
            .clone()
            .or_else(|| self.defaults.clone())
            .unwrap_or_default();
        let w = &config.workload;
        let canonical_service = w
            .labels
            .get("service.istio.io/canonical-name")
            .or_else(|| w.labels.get("app"))
            .cloned()
            .unwrap_or_else(|| w.name.clone());
        let collector = tracing.collector.clone().or_else(|| self.env_endpoint.clone());
        let queue = match collector {
            Some(c) if !tracing.disable_span_reporting => {
                self.queue_for(&c, &format!("{canonical_service}.{}", w.namespace))
            }
            _ => None,
        };
        Arc::new(Plan {
            sampling: (tracing.random_sampling_percentage / 100.0).clamp(0.0, 1.0),
            queue,
            canonical_service,
            namespace: w.namespace.clone(),
        })
    }

    /// The queue to `collector`'s exporter, started on first use.
    fn queue_for(&self, collector: &str, service_name: &str) -> Option<SpanQueue> {
        let mut exporters = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = exporters.get(collector) {
            return Some(q.clone());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                collector,
                "no runtime to export spans on; tracing spans are not sent"
            );
            return None;
        };
        let mut exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(collector)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(collector, error = %e, "cannot export spans to this collector");
                return None;
            }
        };
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service_name.to_string())
                .build(),
        );
        let (tx, rx) = mpsc::channel(QUEUE_SPANS);
        runtime.spawn(export_batches(rx, exporter, self.counters.clone()));
        let queue = SpanQueue {
            tx,
            dropped: self.counters.dropped.clone(),
        };
        exporters.insert(collector.to_string(), queue.clone());
        Some(queue)
    }
}

/// Sends spans in batches (up to [`MAX_BATCH`], or what arrived within [`BATCH_DELAY`]) until
/// every queue sender is gone.
async fn export_batches(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    counters: Counters,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(span) => batch.push(span),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        let n = batch.len() as u64;
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
            Ok(Ok(())) => {
                counters.exported.inc_by(n);
            }
            Ok(Err(e)) => {
                counters.failed.inc_by(n);
                tracing::debug!(error = %e, spans = n, "span export failed");
            }
            Err(_) => {
                counters.failed.inc_by(n);
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    }
}

// === propagation ===

/// The trace context of a request's headers: W3C first, then B3 single, then B3 multi.
pub fn extract(h: &HeaderMap) -> Option<Incoming> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(tp) = get("traceparent") {
        if let Some(c) = parse_traceparent(tp) {
            return Some(c);
        }
    }
    if let Some(b3) = get("b3") {
        if let Some(c) = parse_b3_single(b3) {
            return Some(c);
        }
    }
    let trace_id = get("x-b3-traceid").and_then(parse_trace_id)?;
    let span_id = get("x-b3-spanid").and_then(parse_span_id)?;
    let sampled = match (get("x-b3-flags"), get("x-b3-sampled")) {
        (Some("1"), _) => Some(true),
        (_, Some("1" | "true")) => Some(true),
        (_, Some("0" | "false")) => Some(false),
        _ => None,
    };
    Some(Incoming {
        trace_id,
        span_id,
        sampled,
        b3: true,
    })
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; zero ids and version `ff` refused.
fn parse_traceparent(v: &str) -> Option<Incoming> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add some.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        trace_id: parse_trace_id(trace)?,
        span_id: parse_span_id(span)?,
        sampled: Some(flags & 1 == 1),
        b3: false,
    })
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`; a lone sampling state
/// (`0`, `1`, `d`) carries no context.
fn parse_b3_single(v: &str) -> Option<Incoming> {
    let mut parts = v.trim().split('-');
    let trace_id = parse_trace_id(parts.next()?)?;
    let span_id = parse_span_id(parts.next()?)?;
    let sampled = match parts.next() {
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        _ => None,
    };
    Some(Incoming {
        trace_id,
        span_id,
        sampled,
        b3: true,
    })
}

/// 32 or (B3's 64-bit ids) 16 lower- or upper-case hex digits, not all zero.
fn parse_trace_id(s: &str) -> Option<u128> {
    if (s.len() != 32 && s.len() != 16) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|id| *id != 0)
}

fn parse_span_id(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|id| *id != 0)
}

/// Writes this hop's context into the request the next hop gets.
fn inject(h: &mut HeaderMap, trace_id: u128, span_id: u64, parent: Option<u64>, sampled: bool, b3: bool) {
    let value = |s: String| HeaderValue::from_str(&s).ok();
    if let Some(v) = value(format!(
        "00-{trace_id:032x}-{span_id:016x}-{:02x}",
        u8::from(sampled)
    )) {
        h.insert("traceparent", v);
    }
    if b3 {
        h.remove("b3");
        let pairs = [
            ("x-b3-traceid", Some(format!("{trace_id:032x}"))),
            ("x-b3-spanid", Some(format!("{span_id:016x}"))),
            ("x-b3-parentspanid", parent.map(|p| format!("{p:016x}"))),
            ("x-b3-sampled", Some(if sampled { "1" } else { "0" }.to_string())),
        ];
        for (name, v) in pairs {
            match v.and_then(value) {
                Some(v) => h.insert(name, v),
                None => h.remove(name),
            };
        }
        h.remove("x-b3-flags");
    }
}

/// A random (version 4) UUID, as Envoy generates `x-request-id`.
fn request_id() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

// === impl Plan ===

impl Default for Plan {
    /// Before any config: Istio's default sampling, nowhere to send spans.
    fn default() -> Self {
        Self {
            sampling: Tracing::default().random_sampling_percentage / 100.0,
            queue: None,
            canonical_service: "unknown".into(),
            namespace: "default".into(),
        }
    }
}

impl Plan {
    fn sample(&self) -> bool {
        self.sampling >= 1.0 || (self.sampling > 0.0 && fastrand::f64() < self.sampling)
    }
}

// === impl ActiveSpan ===

impl ActiveSpan {
    /// Continues (or begins) the request's trace: rewrites its trace headers for the next hop,
    /// gives it an `x-request-id` if it has none, and returns this hop's span when the trace is
    /// sampled and spans are sent somewhere.
    pub fn start<B>(plan: &Arc<Plan>, client: bool, req: &mut Request<B>) -> Option<Box<Self>> {
        let incoming = extract(req.headers());
        let (trace_id, parent, sampled, b3) = match incoming {
            Some(c) => (
                c.trace_id,
                Some(c.span_id),
                c.sampled.unwrap_or_else(|| plan.sample()),
                c.b3,
            ),
            None => (fastrand::u128(1..), None, plan.sample(), false),
        };
        let span_id = fastrand::u64(1..);
        let h = req.headers_mut();
        inject(h, trace_id, span_id, parent, sampled, b3);
        if !h.contains_key("x-request-id") {
            if let Ok(v) = HeaderValue::from_str(&request_id()) {
                h.insert("x-request-id", v);
            }
        }
        if !sampled || plan.queue.is_none() {
            return None;
        }
        let authority = crate::forward::request_authority(req).unwrap_or("").to_string();
        let port = weft_api::canonical::parse_authority(&authority)
            .ok()
            .and_then(|a| a.port)
            .unwrap_or(80);
        let h = req.headers();
        Some(Box::new(Self {
            plan: plan.clone(),
            client,
            trace_id,
            span_id,
            parent,
            start: SystemTime::now(),
            authority,
            port,
            method: req.method().clone(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            user_agent: h.get("user-agent").cloned(),
            request_id: h.get("x-request-id").cloned(),
            upstream_host: None,
            upstream_cluster: None,
        }))
    }

    pub fn upstream(&mut self, host: SocketAddr, cluster: &str) {
        self.upstream_host = Some(host);
        if self.upstream_cluster.is_none() {
            self.upstream_cluster = Some(cluster.to_string());
        }
    }

    /// Records the span (queued for export; dropped and counted when the queue is full).
    pub fn finish(&self, out: &Outcome<'_>) {
        let Some(queue) = &self.plan.queue else { return };
        let service = &*out.service.0;
        let host = if service == "unknown" {
            self.authority.split(':').next().unwrap_or("unknown")
        } else {
            service
        };
        let name = format!("{host}:{}/*", self.port);
        let error = out.code >= 500 || out.flags != "-";
        let s = |v: &str| opentelemetry::Value::from(v.to_string());
        let hv = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let mut attributes = vec![
            KeyValue::new("istio.canonical_service", s(&self.plan.canonical_service)),
            KeyValue::new("istio.namespace", s(&self.plan.namespace)),
            KeyValue::new("istio.mesh_id", "cluster.local"),
            KeyValue::new("component", "proxy"),
            KeyValue::new("http.method", s(self.method.as_str())),
            KeyValue::new("http.url", s(&format!("http://{}{}", self.authority, self.path))),
            KeyValue::new("http.protocol", self.protocol),
            KeyValue::new("http.status_code", s(&out.code.to_string())),
            KeyValue::new("response_flags", out.flags),
            KeyValue::new("response_size", s(&out.bytes_sent.to_string())),
            KeyValue::new("request_size", s(&out.bytes_received.to_string())),
            KeyValue::new("user_agent", s(&hv(&self.user_agent))),
            KeyValue::new("guid:x-request-id", s(&hv(&self.request_id))),
            KeyValue::new(
                "upstream_cluster",
                s(self.upstream_cluster.as_deref().unwrap_or("-")),
            ),
            KeyValue::new(
                "upstream_cluster.name",
                s(self.upstream_cluster.as_deref().unwrap_or("-")),
            ),
        ];
        if let Some(peer) = self.upstream_host {
            attributes.push(KeyValue::new("peer.address", s(&peer.to_string())));
        }
        if let Some(g) = out.grpc_status {
            attributes.push(KeyValue::new("grpc.status_code", s(&g.0)));
        }
        if error {
            attributes.push(KeyValue::new("error", "true"));
        }
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(self.trace_id.to_be_bytes()),
                SpanId::from_bytes(self.span_id.to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self
                .parent
                .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.to_be_bytes())),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: if self.client {
                SpanKind::Client
            } else {
                SpanKind::Server
            },
            name: name.into(),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if error {
                Status::error(format!("{} {}", out.code, out.flags))
            } else {
                Status::Unset
            },
            instrumentation_scope: InstrumentationScope::builder("weft-proxy").build(),
        };
        if queue.tx.try_send(span).is_err() {
            queue.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests;
