//! A real OTLP/gRPC trace collector: the standard `TraceService` of the OpenTelemetry protos,
//! served by tonic on a port the OS picks, keeping every span it receives for a test to read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// One received span, flattened: ids in lower-case hex, attributes as text.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedSpan {
    pub trace_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 2 server, 3 client.
    pub kind: i32,
    /// The resource's `service.name`.
    pub service: String,
    pub attributes: BTreeMap<String, String>,
}

/// The collector; stops when dropped.
pub struct OtlpCollector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    exports: Arc<Mutex<u64>>,
    received: Arc<std::sync::atomic::AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Receiver {
    /// None: count spans without keeping them (a sink for benchmarks).
    spans: Option<Arc<Mutex<Vec<CollectedSpan>>>>,
    exports: Arc<Mutex<u64>>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

// === impl OtlpCollector ===

impl OtlpCollector {
    /// Starts on `127.0.0.1`, on a port the OS picks.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), true).await
    }

    /// Starts on `addr`; with `keep` false it only counts spans ([`received`](Self::received)),
    /// so a long benchmark does not grow it.
    pub async fn start_on(addr: SocketAddr, keep: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let spans: Arc<Mutex<Vec<CollectedSpan>>> = Arc::default();
        let receiver = Receiver {
            spans: keep.then(|| spans.clone()),
            exports: Arc::default(),
            received: Arc::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(
                    service,
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
            if let Err(e) = served {
                eprintln!("OTLP collector on {addr} ended: {e}");
            }
        });
        Ok(Self {
            addr,
            spans,
            exports: receiver.exports,
            received: receiver.received,
            stop: Some(stop),
        })
    }

    /// Spans received so far (kept or not).
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT`, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How many export calls arrived (each carries a batch).
    pub fn exports(&self) -> u64 {
        self.exports.lock().map(|n| *n).unwrap_or_default()
    }

    /// The spans once at least `n` have arrived, or an error naming what did by `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<CollectedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("{} spans within {timeout:?}, wanted {n}: {spans:#?}", spans.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// === impl Receiver ===

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let n: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.received
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut n) = self.exports.lock() {
            *n += 1;
        }
        let Some(kept) = &self.spans else {
            return Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }));
        };
        let mut received = Vec::new();
        for rs in request.resource_spans {
            let resource_attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = text_attributes(&resource_attrs)
                .remove("service.name")
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(CollectedSpan {
                    trace_id: hex(&span.trace_id),
                    parent_span_id: hex(&span.parent_span_id),
                    span_id: hex(&span.span_id),
                    name: span.name,
                    kind: span.kind,
                    service: service.clone(),
                    attributes: text_attributes(&span.attributes),
                });
            }
        }
        if let Ok(mut spans) = kept.lock() {
            spans.extend(received);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text_attributes(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
