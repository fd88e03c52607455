//! Istio's standard metrics, so existing Grafana and Kiali dashboards work.
//!
//! No label takes an unbounded value (shared/ARCHITECTURE.md, "Metrics that cannot explode"):
//! services are mesh names or `unknown`, and each family caps its distinct label sets, folding
//! the rest into one `overflow` set counted by `weft_metric_label_overflow_total`.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A cheaply cloned label value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(pub Arc<str>);

/// One side of a request or connection: who it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub workload: Label,
    pub namespace: Label,
    pub principal: Label,
    pub app: Label,
    pub version: Label,
}

/// Labels of `istio_requests_total` and its siblings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: Label,
    pub source_workload_namespace: Label,
    pub source_principal: Label,
    pub source_app: Label,
    pub source_version: Label,
    pub destination_workload: Label,
    pub destination_workload_namespace: Label,
    pub destination_principal: Label,
    pub destination_app: Label,
    pub destination_version: Label,
    pub destination_service: Label,
    pub destination_service_name: Label,
    pub destination_service_namespace: Label,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: Label,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

/// Labels of the `istio_tcp_*` family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: &'static str,
    pub source_workload: Label,
    pub source_workload_namespace: Label,
    pub source_principal: Label,
    pub source_app: Label,
    pub source_version: Label,
    pub destination_workload: Label,
    pub destination_workload_namespace: Label,
    pub destination_principal: Label,
    pub destination_app: Label,
    pub destination_version: Label,
    pub destination_service: Label,
    pub destination_service_name: Label,
    pub destination_service_namespace: Label,
    pub request_protocol: &'static str,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

/// Labels of the proxy's own listener counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// A family with a ceiling on distinct label sets.
pub struct Capped<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    distinct: AtomicUsize,
    cap: usize,
    overflow: Counter,
}

/// Every metric the proxy reports.
pub struct Metrics {
    requests: Capped<RequestLabels, Counter>,
    duration_ms: Capped<RequestLabels, Histogram>,
    request_bytes: Capped<RequestLabels, Histogram>,
    response_bytes: Capped<RequestLabels, Histogram>,
    tcp_sent: Capped<TcpLabels, Counter>,
    tcp_received: Capped<TcpLabels, Counter>,
    tcp_opened: Capped<TcpLabels, Counter>,
    tcp_closed: Capped<TcpLabels, Counter>,
    rejected: Family<ListenerLabels, Counter>,
}

/// Distinct label sets kept per family before folding into `overflow`.
pub const LABEL_SET_CAP: usize = 10_000;

const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    // Istio's: 1 B to 100 MB, x10 each.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 10.0, 9,
    ))
}

// === impl Label ===

impl Label {
    pub fn new(s: &str) -> Self {
        Label(Arc::from(s))
    }

    pub fn unknown() -> Self {
        Label::new("unknown")
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label::new(s)
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

// === impl Peer ===

impl Peer {
    pub fn unknown() -> Self {
        let u = Label::unknown();
        Self {
            workload: u.clone(),
            namespace: u.clone(),
            principal: u.clone(),
            app: u.clone(),
            version: u,
        }
    }
}

// === impl Capped ===

impl<L, M, C> Capped<L, M, C>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    C: MetricConstructor<M> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    fn register(
        registry: &mut Registry,
        name: &str,
        help: &str,
        family: Family<L, M, C>,
        overflow: &Counter,
    ) -> Self {
        registry.register(name, help, family.clone());
        Self {
            family,
            distinct: AtomicUsize::new(0),
            cap: LABEL_SET_CAP,
            overflow: overflow.clone(),
        }
    }

    /// Applies `f` to the metric for `labels`, or to the overflow set once the cap is reached.
    fn with(&self, labels: &L, overflow_labels: impl FnOnce() -> L, f: impl FnOnce(&M)) {
        if let Some(m) = self.family.get(labels) {
            return f(&m);
        }
        if self.distinct.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.distinct.fetch_sub(1, Ordering::Relaxed);
            self.overflow.inc();
            return f(&self.family.get_or_create(&overflow_labels()));
        }
        f(&self.family.get_or_create(labels))
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every family in `registry` (created by the app, never global).
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let overflow = Counter::default();
        registry.register(
            "weft_metric_label_overflow",
            "Observations folded into the overflow label set because a family hit its cap",
            overflow.clone(),
        );
        let rejected = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "weft_listener_connections_rejected",
            "Connections closed on accept, by listener and reason",
            rejected.clone(),
        );
        let hist = |f: fn() -> Histogram| Family::<RequestLabels, Histogram>::new_with_constructor(f);
        Arc::new(Self {
            requests: Capped::register(
                registry,
                "istio_requests",
                "Requests",
                Family::default(),
                &overflow,
            ),
            duration_ms: Capped::register(
                registry,
                "istio_request_duration_milliseconds",
                "Request duration",
                hist(duration_histogram),
                &overflow,
            ),
            request_bytes: Capped::register(
                registry,
                "istio_request_bytes",
                "Request body sizes",
                hist(size_histogram),
                &overflow,
            ),
            response_bytes: Capped::register(
                registry,
                "istio_response_bytes",
                "Response body sizes",
                hist(size_histogram),
                &overflow,
            ),
            tcp_sent: Capped::register(
                registry,
                "istio_tcp_sent_bytes",
                "Bytes sent to the client",
                Family::default(),
                &overflow,
            ),
            tcp_received: Capped::register(
                registry,
                "istio_tcp_received_bytes",
                "Bytes received from the client",
                Family::default(),
                &overflow,
            ),
            tcp_opened: Capped::register(
                registry,
                "istio_tcp_connections_opened",
                "TCP connections opened",
                Family::default(),
                &overflow,
            ),
            tcp_closed: Capped::register(
                registry,
                "istio_tcp_connections_closed",
                "TCP connections closed",
                Family::default(),
                &overflow,
            ),
            rejected,
        })
    }

    /// Records one finished request.
    pub fn request(&self, labels: &RequestLabels, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        let overflow = || RequestLabels::overflow(labels.reporter);
        self.requests.with(labels, overflow, |c| {
            c.inc();
        });
        self.duration_ms
            .with(labels, overflow, |h| h.observe(duration_ms));
        self.request_bytes
            .with(labels, overflow, |h| h.observe(request_bytes as f64));
        self.response_bytes
            .with(labels, overflow, |h| h.observe(response_bytes as f64));
    }

    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.with(
            labels,
            || TcpLabels::overflow(labels.reporter),
            |c| {
                c.inc();
            },
        );
    }

    /// Records a closed connection and the bytes it carried.
    pub fn tcp_closed(&self, labels: &TcpLabels, sent: u64, received: u64) {
        let overflow = || TcpLabels::overflow(labels.reporter);
        self.tcp_closed.with(labels, overflow, |c| {
            c.inc();
        });
        self.tcp_sent.with(labels, overflow, |c| {
            c.inc_by(sent);
        });
        self.tcp_received.with(labels, overflow, |c| {
            c.inc_by(received);
        });
    }

    pub fn connection_rejected(&self, listener: &'static str, reason: &'static str) {
        self.rejected
            .get_or_create(&ListenerLabels { listener, reason })
            .inc();
    }
}

impl RequestLabels {
    fn overflow(reporter: &'static str) -> Self {
        let o = Label::new("overflow");
        Self {
            reporter,
            source_workload: o.clone(),
            source_workload_namespace: o.clone(),
            source_principal: o.clone(),
            source_app: o.clone(),
            source_version: o.clone(),
            destination_workload: o.clone(),
            destination_workload_namespace: o.clone(),
            destination_principal: o.clone(),
            destination_app: o.clone(),
            destination_version: o.clone(),
            destination_service: o.clone(),
            destination_service_name: o.clone(),
            destination_service_namespace: o.clone(),
            request_protocol: "overflow",
            response_code: 0,
            grpc_response_status: o,
            response_flags: "-",
            connection_security_policy: "unknown",
        }
    }
}

impl TcpLabels {
    fn overflow(reporter: &'static str) -> Self {
        let r = RequestLabels::overflow(reporter);
        Self {
            reporter,
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
            response_flags: "-",
            connection_security_policy: "unknown",
        }
    }
}
