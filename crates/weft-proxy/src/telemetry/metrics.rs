//! Istio's standard metrics, so existing Grafana and Kiali dashboards work.
//!
//! No label takes an unbounded value (shared/ARCHITECTURE.md, "Metrics that cannot explode"):
//! services are mesh names or `unknown`, and each family caps its distinct label sets, folding
//! the rest into one `overflow` set counted by `weft_metric_label_overflow_total`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rustc_hash::FxBuildHasher;

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

/// Labels of `weft_route_requests_total`: requests per named route (a Linkerd ServiceProfile
/// route, Linkerd's per-route metrics). Route names come from config, so they are bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub destination_service: Label,
    pub route: Label,
    pub response_code: u16,
}

/// Labels of `weft_retries_total`: retries sent, and retries a retry budget refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    pub destination_service: Label,
    /// `sent` or `budget_exhausted`.
    pub outcome: &'static str,
}

/// Labels of the proxy's own listener counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// Labels of `weft_authz_decisions_total`: what authorization did and the policy that decided
/// (`kind/namespace/name`, a name from the config, so bounded; capped like every family).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `deny` or `audit`.
    pub decision: &'static str,
    pub policy: Label,
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
    request_families: RequestFamilies,
    /// Each label set's four request metrics, found with one hash per request rather than
    /// one per family (the families' own maps hash all 19 labels under a lock each time).
    request_series: RwLock<HashMap<RequestLabels, Arc<RequestSeries>, FxBuildHasher>>,
    /// The same series found by where the label values live ([`SeriesKey`]): no string is
    /// hashed or compared on the hot path. Cleared when it holds [`FAST_SERIES_CAP`] entries.
    fast_series: RwLock<HashMap<SeriesKey, FastEntry, FxBuildHasher>>,
    overflow: Counter,
    tcp_sent: Capped<TcpLabels, Counter>,
    tcp_received: Capped<TcpLabels, Counter>,
    tcp_opened: Capped<TcpLabels, Counter>,
    tcp_closed: Capped<TcpLabels, Counter>,
    rejected: Family<ListenerLabels, Counter>,
    authz: Capped<AuthzLabels, Counter>,
    route_requests: Capped<RouteLabels, Counter>,
    retries: Capped<RetryLabels, Counter>,
}

/// The request families, as registered.
struct RequestFamilies {
    requests: Family<RequestLabels, Counter>,
    duration_ms: Family<RequestLabels, Histogram, fn() -> Histogram>,
    request_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    response_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

/// Handles on one label set's request metrics (clones share the families' storage).
struct RequestSeries {
    requests: Counter,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// A request label set named by where its values live. Labels are built once per target (the
/// workload's own, an endpoint's, a service's) and shared as `Arc`s, so the addresses of their
/// text name them without hashing it. A [`FastEntry`] keeps its labels alive, so no address in
/// a key can be reused for another value while the key is in the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    labels: [usize; 14],
    statics: [(usize, usize); 4],
    code: u16,
}

/// A [`SeriesKey`]'s series, with the labels whose addresses the key holds.
struct FastEntry {
    _labels: RequestLabels,
    series: Arc<RequestSeries>,
}

/// Entries in the fast map before it is cleared (label sets that churn, such as callers'
/// principals, cannot grow it without bound).
const FAST_SERIES_CAP: usize = 4096;

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

// === impl SeriesKey ===

impl SeriesKey {
    /// The key of a label set: its fourteen label values (in [`RequestLabels`] order), its four
    /// fixed strings (reporter, protocol, flags, security policy) and the response code.
    pub fn new(labels: [&Label; 14], statics: [&'static str; 4], code: u16) -> Self {
        Self {
            labels: labels.map(|l| Arc::as_ptr(&l.0) as *const u8 as usize),
            statics: statics.map(|s| (s.as_ptr() as usize, s.len())),
            code,
        }
    }
}

// === impl Label ===

impl Label {
    pub fn new(s: &str) -> Self {
        Label(Arc::from(s))
    }

    /// `unknown`: one shared value, not an allocation per request.
    pub fn unknown() -> Self {
        static UNKNOWN: std::sync::LazyLock<Label> = std::sync::LazyLock::new(|| Label::new("unknown"));
        UNKNOWN.clone()
    }

    /// `-` (no gRPC status, no flag): one shared value.
    pub fn none() -> Self {
        static NONE: std::sync::LazyLock<Label> = std::sync::LazyLock::new(|| Label::new("-"));
        NONE.clone()
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
        let hist = |f: fn() -> Histogram| {
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(f)
        };
        let request_families = RequestFamilies {
            requests: Family::default(),
            duration_ms: hist(duration_histogram),
            request_bytes: hist(size_histogram),
            response_bytes: hist(size_histogram),
        };
        registry.register("istio_requests", "Requests", request_families.requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            request_families.duration_ms.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_families.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            request_families.response_bytes.clone(),
        );
        Arc::new(Self {
            request_families,
            request_series: RwLock::default(),
            fast_series: RwLock::default(),
            overflow: overflow.clone(),
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
            authz: Capped::register(
                registry,
                "weft_authz_decisions",
                "Requests and connections denied or audited by an authorization policy, by policy",
                Family::default(),
                &overflow,
            ),
            route_requests: Capped::register(
                registry,
                "weft_route_requests",
                "Requests per named route (Linkerd ServiceProfile routes)",
                Family::default(),
                &overflow,
            ),
            retries: Capped::register(
                registry,
                "weft_retries",
                "Retries sent, and retries a retry budget refused",
                Family::default(),
                &overflow,
            ),
        })
    }

    /// Counts one finished request on a named route.
    pub fn route_request(&self, labels: &RouteLabels) {
        let overflow = || RouteLabels {
            destination_service: Label::new("overflow"),
            route: Label::new("overflow"),
            response_code: 0,
        };
        self.route_requests.with(labels, overflow, |c| {
            c.inc();
        });
    }

    /// Counts a retry sent to `service`, or one its retry budget refused.
    pub fn retry(&self, service: &Label, budget_exhausted: bool) {
        let labels = RetryLabels {
            destination_service: service.clone(),
            outcome: if budget_exhausted {
                "budget_exhausted"
            } else {
                "sent"
            },
        };
        let overflow = || RetryLabels {
            destination_service: Label::new("overflow"),
            outcome: labels.outcome,
        };
        self.retries.with(&labels, overflow, |c| {
            c.inc();
        });
    }

    /// Records one finished request.
    pub fn request(&self, labels: &RequestLabels, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        let series = self.request_series(labels);
        series.requests.inc();
        series.duration_ms.observe(duration_ms);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
    }

    /// [`Metrics::request`] for a label set known by its [`SeriesKey`]; `labels` is called only
    /// the first time the key is seen.
    pub fn request_keyed(
        &self,
        key: SeriesKey,
        labels: impl FnOnce() -> RequestLabels,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let found = self
            .fast_series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map(|e| e.series.clone());
        let series = match found {
            Some(series) => series,
            None => {
                let labels = labels();
                let series = self.request_series(&labels);
                let mut fast = self.fast_series.write().unwrap_or_else(|p| p.into_inner());
                if fast.len() >= FAST_SERIES_CAP {
                    fast.clear();
                }
                fast.insert(
                    key,
                    FastEntry {
                        _labels: labels,
                        series: series.clone(),
                    },
                );
                series
            }
        };
        series.requests.inc();
        series.duration_ms.observe(duration_ms);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
    }

    fn request_series(&self, labels: &RequestLabels) -> Arc<RequestSeries> {
        if let Some(s) = self
            .request_series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(labels)
        {
            return s.clone();
        }
        let mut map = self.request_series.write().unwrap_or_else(|p| p.into_inner());
        let labels = if map.len() >= LABEL_SET_CAP && !map.contains_key(labels) {
            self.overflow.inc();
            RequestLabels::overflow(labels.reporter)
        } else {
            labels.clone()
        };
        let f = &self.request_families;
        map.entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(RequestSeries {
                    requests: f.requests.get_or_create(&labels).clone(),
                    duration_ms: f.duration_ms.get_or_create(&labels).clone(),
                    request_bytes: f.request_bytes.get_or_create(&labels).clone(),
                    response_bytes: f.response_bytes.get_or_create(&labels).clone(),
                })
            })
            .clone()
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

    /// Counts one request or connection denied (`deny`) or audited (`audit`) by `policy`.
    pub fn authz(&self, decision: &'static str, policy: &str) {
        let labels = AuthzLabels {
            decision,
            policy: Label::new(policy),
        };
        let overflow = || AuthzLabels {
            decision,
            policy: Label::new("overflow"),
        };
        self.authz.with(&labels, overflow, |c| {
            c.inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(service: &str) -> RequestLabels {
        let mut l = RequestLabels::overflow("source");
        l.destination_service = Label::new(service);
        l.request_protocol = "http";
        l.response_code = 200;
        l
    }

    fn key(l: &RequestLabels) -> SeriesKey {
        SeriesKey::new(
            [
                &l.source_workload,
                &l.source_workload_namespace,
                &l.source_principal,
                &l.source_app,
                &l.source_version,
                &l.destination_workload,
                &l.destination_workload_namespace,
                &l.destination_principal,
                &l.destination_app,
                &l.destination_version,
                &l.destination_service,
                &l.destination_service_name,
                &l.destination_service_namespace,
                &l.grpc_response_status,
            ],
            [
                l.reporter,
                l.request_protocol,
                l.response_flags,
                l.connection_security_policy,
            ],
            l.response_code,
        )
    }

    fn count(registry: &Registry, service: &str) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text.lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("destination_service=\"{service}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("none")
            .to_string()
    }

    #[test]
    fn a_label_set_found_by_address_counts_on_the_series_of_its_text() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        // Same text in separate allocations: two keys, one series.
        let (a, b) = (labels("svc"), labels("svc"));
        assert_ne!(key(&a), key(&b));
        for l in [&a, &b, &a, &a] {
            m.request_keyed(key(l), || l.clone(), 1.0, 0, 0);
        }
        assert_eq!(count(&registry, "svc"), "4");
        assert_eq!(m.fast_series.read().expect("lock").len(), 2);
        // Past its cap the fast map starts again; the counts do not.
        for i in 0..FAST_SERIES_CAP + 1 {
            let l = labels(&format!("svc-{i}"));
            m.request_keyed(key(&l), || l.clone(), 1.0, 0, 0);
        }
        assert!(m.fast_series.read().expect("lock").len() <= FAST_SERIES_CAP);
        m.request_keyed(key(&a), || a.clone(), 1.0, 0, 0);
        assert_eq!(count(&registry, "svc"), "5");
    }

    #[test]
    fn label_sets_past_the_cap_fold_into_overflow() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        for i in 0..LABEL_SET_CAP + 5 {
            m.request(&labels(&format!("svc-{i}")), 1.0, 0, 0);
        }
        // The same label set again is counted on its own series.
        m.request(&labels("svc-0"), 1.0, 0, 0);
        assert_eq!(m.overflow.get(), 5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("weft_metric_label_overflow_total 5"),
            "overflow counter missing"
        );
        let svc0 = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("destination_service=\"svc-0\""))
            .expect("svc-0 series");
        assert!(svc0.ends_with(" 2"), "{svc0}");
        let overflow = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("request_protocol=\"overflow\""))
            .expect("overflow series");
        assert!(overflow.ends_with(" 5"), "{overflow}");
    }
}
