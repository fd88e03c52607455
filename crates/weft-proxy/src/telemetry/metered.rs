//! Per-request metering: what is known of a request as it crosses the proxy, recorded once
//! when its response body ends (so gRPC trailers and streamed sizes count).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use super::access_log::{Outcome, Pending};
use super::metrics::{Label, Metrics, Peer, RequestLabels, SeriesKey};
use super::trace::ActiveSpan;
use crate::config::Snapshot;
use crate::http::error::ProxyError;
use crate::http::{Body, BoxError};

/// What is known of one request, filled in as it is routed.
pub struct RequestMeta {
    metrics: Arc<Metrics>,
    pub reporter: &'static str,
    pub source: Peer,
    pub destination: Peer,
    pub service: Label,
    pub service_name: Label,
    pub service_namespace: Label,
    pub grpc: bool,
    /// `mutual_tls` once the hop this side reports on is known to be mTLS; else `none`.
    pub connection_security_policy: &'static str,
    /// The mesh headers naming the source workload and the service, built once per config
    /// rather than per request (None: built from the labels when needed).
    pub source_value: Option<http::HeaderValue>,
    pub service_value: Option<http::HeaderValue>,
    /// The named route the request took (a ServiceProfile route), for `weft_route_requests`.
    pub route: Option<Label>,
    /// The caller is outside the mesh (not this proxy's app, not a peer verified by mTLS): the
    /// errors it gets name no policy and no internal address.
    pub outside: bool,
    /// The request's head for `weft tap`; set only while someone taps (see [`super::tap`]).
    pub tap: Option<Box<super::tap::TapHead>>,
    /// The access-log entry, when this side logs (see [`RequestMeta::observe`]).
    pub log: Option<Box<Pending>>,
    /// This hop's span, when its trace is sampled and spans are sent (see [`RequestMeta::observe`]).
    pub span: Option<Box<ActiveSpan>>,
    start: Instant,
    request_bytes: Arc<AtomicU64>,
}

/// A response body that records the request's metrics when it ends.
pub struct MeteredBody {
    inner: Body,
    bytes: u64,
    grpc_status: Option<Label>,
    record: Option<(RequestMeta, u16)>,
}

/// A request body that counts its bytes.
pub struct CountedBody {
    inner: Body,
    count: Arc<AtomicU64>,
}

// === impl RequestMeta ===

impl RequestMeta {
    pub fn new(
        metrics: Arc<Metrics>,
        reporter: &'static str,
        source: Peer,
        destination: Peer,
        grpc: bool,
    ) -> Self {
        let u = Label::unknown();
        Self {
            metrics,
            reporter,
            source,
            destination,
            service: u.clone(),
            service_name: u.clone(),
            service_namespace: u,
            grpc,
            connection_security_policy: "none",
            start: Instant::now(),
            request_bytes: Arc::default(),
            source_value: None,
            service_value: None,
            route: None,
            outside: false,
            tap: None,
            log: None,
            span: None,
        }
    }

    /// Continues the request's trace (its trace headers rewritten for the next hop, an
    /// `x-request-id` added if missing; this hop's span started when sampled), then starts its
    /// access-log entry when the config asks for one on this side.
    pub fn observe<B>(&mut self, snap: &Snapshot, req: &mut http::Request<B>) {
        self.span = ActiveSpan::start(&snap.trace, self.is_client(), req);
        self.log = Pending::request(&snap.access_log, self.is_client(), req);
    }

    /// As [`observe`](Self::observe), for a TCP connection.
    pub fn observe_connection(&mut self, snap: &Snapshot) {
        self.log = Pending::connection(&snap.access_log, self.is_client());
    }

    /// Notes an attempt to an upstream endpoint for the access log and the span (its cluster,
    /// Istio's `outbound|PORT|SUBSET|FQDN`, is built only when either is kept).
    pub fn note_upstream(&mut self, host: std::net::SocketAddr, cluster: impl FnOnce() -> String) {
        if self.log.is_none() && self.span.is_none() {
            return;
        }
        let cluster = cluster();
        if let Some(log) = &mut self.log {
            log.upstream(host, || cluster.clone());
        }
        if let Some(span) = &mut self.span {
            span.upstream(host, &cluster);
        }
    }

    /// Writes the access-log line of a TCP connection that moved `received` bytes from the
    /// client and `sent` to it.
    pub fn log_connection(&self, flags: &'static str, received: u64, sent: u64) {
        if let Some(log) = &self.log {
            log.finish(&self.outcome(0, None, flags, received, sent), true);
        }
    }

    /// The outbound proxy reports as `source`, the inbound one as `destination`.
    fn is_client(&self) -> bool {
        self.reporter == "source"
    }

    fn outcome<'a>(
        &'a self,
        code: u16,
        grpc_status: Option<&'a Label>,
        flags: &'static str,
        bytes_received: u64,
        bytes_sent: u64,
    ) -> Outcome<'a> {
        Outcome {
            code,
            flags,
            grpc_status,
            bytes_received,
            bytes_sent,
            duration_ms: self.start.elapsed().as_millis() as u64,
            reporter: self.reporter,
            source: &self.source,
            destination: &self.destination,
            service: &self.service,
            route: self.route.as_ref(),
            mtls: self.connection_security_policy == crate::tls::MUTUAL_TLS,
        }
    }

    pub fn set_service(&mut self, svc: &crate::config::ServiceInfo) {
        self.service = svc.fqdn_label.clone();
        self.service_name = svc.name.clone();
        self.service_namespace = svc.namespace.clone();
        self.service_value = Some(svc.fqdn_header.clone());
    }

    /// Writes the mesh headers naming this request's source and service (for the peer proxy).
    pub fn write_mesh_headers(&self, h: &mut http::HeaderMap) {
        use crate::http::headers::{SERVICE, SOURCE};
        let source = self
            .source_value
            .clone()
            .or_else(|| http::HeaderValue::from_str(&self.source_header()).ok());
        if let Some(v) = source {
            h.insert(SOURCE, v);
        }
        let service = self
            .service_value
            .clone()
            .or_else(|| http::HeaderValue::from_str(&self.service.0).ok());
        if let Some(v) = service {
            h.insert(SERVICE, v);
        }
    }

    /// The labels of the service a mesh header from a peer proxy names
    /// (`name.namespace.svc.<domain>`): the full name, the name and the namespace.
    pub fn service_labels(fqdn: &str) -> Option<[Label; 3]> {
        let mut parts = fqdn.split('.');
        let (name, ns) = (parts.next()?, parts.next()?);
        Some([Label::new(fqdn), Label::new(name), Label::new(ns)])
    }

    /// Sets the `destination_service*` labels from [`RequestMeta::service_labels`].
    pub fn set_service_labels(&mut self, [service, name, namespace]: [Label; 3]) {
        self.service = service;
        self.service_name = name;
        self.service_namespace = namespace;
    }

    /// The mesh header naming this request's source workload.
    pub fn source_header(&self) -> String {
        let s = &self.source;
        format!("{};{};{};{}", s.workload.0, s.namespace.0, s.app.0, s.version.0)
    }

    /// Wraps a request body so its size is counted.
    pub fn count_request(&self, body: Body) -> Body {
        crate::http::boxed(CountedBody {
            inner: body,
            count: self.request_bytes.clone(),
        })
    }

    fn protocol(&self) -> &'static str {
        if self.grpc {
            "grpc"
        } else {
            "http"
        }
    }

    fn labels(&self, code: u16, grpc_status: Label, flags: &'static str) -> RequestLabels {
        RequestLabels {
            reporter: self.reporter,
            source_workload: self.source.workload.clone(),
            source_workload_namespace: self.source.namespace.clone(),
            source_principal: self.source.principal.clone(),
            source_app: self.source.app.clone(),
            source_version: self.source.version.clone(),
            destination_workload: self.destination.workload.clone(),
            destination_workload_namespace: self.destination.namespace.clone(),
            destination_principal: self.destination.principal.clone(),
            destination_app: self.destination.app.clone(),
            destination_version: self.destination.version.clone(),
            destination_service: self.service.clone(),
            destination_service_name: self.service_name.clone(),
            destination_service_namespace: self.service_namespace.clone(),
            request_protocol: self.protocol(),
            response_code: code,
            grpc_response_status: grpc_status,
            response_flags: flags,
            connection_security_policy: self.connection_security_policy,
        }
    }

    fn record(&self, code: u16, grpc_status: Label, flags: &'static str, response_bytes: u64) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if self.log.is_some() || self.span.is_some() {
            let received = self.request_bytes.load(Ordering::Relaxed);
            let grpc = self.grpc.then_some(&grpc_status);
            let outcome = self.outcome(code, grpc, flags, received, response_bytes);
            if let Some(log) = &self.log {
                log.finish(&outcome, false);
            }
            if let Some(span) = &self.span {
                span.finish(&outcome);
            }
        }
        if let Some(route) = &self.route {
            self.metrics.route_request(&super::metrics::RouteLabels {
                destination_service: self.service.clone(),
                route: route.clone(),
                response_code: code,
            });
        }
        let (s, d) = (&self.source, &self.destination);
        let key = SeriesKey::new(
            [
                &s.workload,
                &s.namespace,
                &s.principal,
                &s.app,
                &s.version,
                &d.workload,
                &d.namespace,
                &d.principal,
                &d.app,
                &d.version,
                &self.service,
                &self.service_name,
                &self.service_namespace,
                &grpc_status,
            ],
            [
                self.reporter,
                self.protocol(),
                flags,
                self.connection_security_policy,
            ],
            code,
        );
        self.metrics.request_keyed(
            key,
            || self.labels(code, grpc_status.clone(), flags),
            ms,
            self.request_bytes.load(Ordering::Relaxed),
            response_bytes,
        );
        if let Some(tap) = &self.tap {
            tap.emit(self, code, &grpc_status, flags, ms);
        }
    }

    /// Records a request the proxy answered itself, and logs why.
    pub fn fail(self, err: &ProxyError) -> Response<Body> {
        let resp = err.to_response(self.grpc, self.outside);
        let grpc_status = if self.grpc {
            resp.headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map_or_else(Label::unknown, grpc_label)
        } else {
            Label::none()
        };
        tracing::info!(reporter = self.reporter, service = %self.service.0, flags = err.flag.code(), status = err.status.as_u16(), "{}", err.message);
        self.record(resp.status().as_u16(), grpc_status, err.flag.code(), 0);
        resp
    }

    /// Meters a response: its metrics are recorded when its body ends or is dropped.
    pub fn meter(self, resp: Response<Body>) -> Response<Body> {
        let code = resp.status().as_u16();
        let grpc_status = self.grpc.then(|| grpc_status(resp.headers())).flatten();
        resp.map(|inner| {
            crate::http::boxed(MeteredBody {
                inner,
                bytes: 0,
                grpc_status,
                record: Some((self, code)),
            })
        })
    }
}

fn grpc_status(h: &HeaderMap) -> Option<Label> {
    h.get("grpc-status").and_then(|v| v.to_str().ok()).map(grpc_label)
}

/// A gRPC status as a label: the seventeen codes are shared values (no allocation, and the
/// metrics' fast path finds them by address); anything else is its own.
fn grpc_label(status: &str) -> Label {
    static CODES: std::sync::LazyLock<Vec<Label>> =
        std::sync::LazyLock::new(|| (0..=16).map(|c: u8| Label::new(&c.to_string())).collect());
    status
        .parse::<usize>()
        .ok()
        .and_then(|n| CODES.get(n))
        .filter(|l| *l.0 == *status)
        .cloned()
        .unwrap_or_else(|| Label::new(status))
}

// === impl MeteredBody ===

impl MeteredBody {
    fn finish(&mut self) {
        if let Some((meta, code)) = self.record.take() {
            let grpc = match (&self.grpc_status, meta.grpc) {
                (Some(s), _) => s.clone(),
                (None, true) => Label::unknown(),
                (None, false) => Label::none(),
            };
            meta.record(code, grpc, "-", self.bytes);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(s) = grpc_status(trailers) {
                        self.grpc_status = Some(s);
                    }
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}

// === impl CountedBody ===

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Peer ===

impl Peer {
    /// Parses the mesh source header (`workload;namespace;app;version`).
    pub fn from_source_header(v: &str) -> Self {
        let mut it = v.split(';').map(|s| {
            if s.is_empty() {
                Label::unknown()
            } else {
                Label::new(s)
            }
        });
        let mut next = || it.next().unwrap_or_else(Label::unknown);
        Peer {
            workload: next(),
            namespace: next(),
            principal: Label::unknown(),
            app: next(),
            version: next(),
        }
    }
}

impl RequestMeta {
    /// The `istio_tcp_*` labels for a connection with what this meta knows.
    pub fn tcp_labels(&self, flags: &'static str) -> super::metrics::TcpLabels {
        let r = self.labels(0, Label::unknown(), flags);
        super::metrics::TcpLabels {
            reporter: r.reporter,
            source_workload: r.source_workload,
            source_workload_namespace: r.source_workload_namespace,
            source_principal: r.source_principal,
            source_app: r.source_app,
            source_version: r.source_version,
            destination_workload: r.destination_workload,
            destination_workload_namespace: r.destination_workload_namespace,
            destination_principal: r.destination_principal,
            destination_app: r.destination_app,
            destination_version: r.destination_version,
            destination_service: r.destination_service,
            destination_service_name: r.destination_service_name,
            destination_service_namespace: r.destination_service_namespace,
            request_protocol: "tcp",
            response_flags: flags,
            connection_security_policy: r.connection_security_policy,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
