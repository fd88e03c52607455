//! Golden metrics over a window, grouped by workload, service, namespace or route; and edges.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::prom::Sample;

const REQUESTS: &str = "istio_requests_total";
const DURATION_BUCKETS: &str = "istio_request_duration_milliseconds_bucket";
const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
const TCP_CLOSED: &str = "istio_tcp_connections_closed_total";
const ROUTE_REQUESTS: &str = "weft_route_requests_total";

/// One series of one sidecar: how much it grew over the window, and its value at the end.
#[derive(Debug, Clone)]
pub struct Series {
    /// The sidecar (instance) that reported it.
    pub proxy: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub increase: f64,
    pub total: f64,
}

/// Every sidecar's series over one window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub seconds: f64,
    pub series: Vec<Series>,
}

/// What the rows of `weft stat` are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Workload,
    Service,
    Namespace,
    /// Named routes (Linkerd ServiceProfile routes): requests and success only.
    Route,
}

/// Which rows, and which traffic.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only the row of this name (a workload, service, namespace, or route).
    pub name: Option<String>,
    /// Only rows in this namespace.
    pub namespace: Option<String>,
    /// Only requests from this workload (read where they arrive; rows are the receivers).
    pub from: Option<String>,
    /// Only requests to this workload or service (read where they leave; rows are the senders).
    pub to: Option<String>,
}

/// One row of `weft stat`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Golden {
    pub name: String,
    pub namespace: String,
    /// For a route row: the service (full name) the route belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Sidecars that reported this row's traffic.
    pub proxies: usize,
    /// Requests that finished in the window.
    pub requests: f64,
    /// Of those, not failed (no 5xx, no gRPC error); None without requests.
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// Share of the requests that arrived (or left) on mutual TLS; None without requests.
    pub mtls_share: Option<f64>,
    /// Opaque TCP connections open at the end of the window (HTTP rides pooled mesh
    /// connections and is counted in requests).
    pub tcp_connections: f64,
}

/// Who talks to whom.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub source: String,
    pub source_namespace: String,
    pub destination: String,
    pub destination_namespace: String,
    /// The caller's SPIFFE ID as the server's sidecar verified it; None when not mTLS.
    pub source_identity: Option<String>,
    pub destination_identity: Option<String>,
    /// Requests (and TCP connections) since the sidecars started, and per second in the window.
    pub requests: f64,
    pub tcp_connections: f64,
    pub rps: f64,
    /// Share of the edge's requests and connections on mutual TLS (1.0: all of them).
    pub mtls_share: f64,
}

// === impl Window ===

impl Window {
    pub fn new(seconds: f64) -> Self {
        Self {
            seconds,
            series: Vec::new(),
        }
    }

    /// Adds one sidecar's scrapes from the start and the end of the window. A series missing
    /// at the start grew from zero; one that went down was reset (the sidecar restarted).
    pub fn add_proxy(&mut self, proxy: &str, before: &[Sample], after: &[Sample]) {
        let wanted =
            |n: &str| [REQUESTS, DURATION_BUCKETS, TCP_OPENED, TCP_CLOSED, ROUTE_REQUESTS].contains(&n);
        let start: BTreeMap<(&str, &BTreeMap<String, String>), f64> = before
            .iter()
            .filter(|s| wanted(&s.name))
            .map(|s| ((s.name.as_str(), &s.labels), s.value))
            .collect();
        for s in after.iter().filter(|s| wanted(&s.name)) {
            let first = start.get(&(s.name.as_str(), &s.labels)).copied().unwrap_or(0.0);
            let increase = if s.value >= first {
                s.value - first
            } else {
                s.value
            };
            self.series.push(Series {
                proxy: proxy.to_string(),
                name: s.name.clone(),
                labels: s.labels.clone(),
                increase,
                total: s.value,
            });
        }
    }

    fn rate(&self, n: f64) -> f64 {
        if self.seconds > 0.0 {
            n / self.seconds
        } else {
            0.0
        }
    }
}

/// Accumulates one row.
#[derive(Default)]
struct Acc {
    proxies: BTreeSet<String>,
    requests: f64,
    failures: f64,
    mtls: f64,
    /// Bucket upper bound (as written) -> increase.
    buckets: BTreeMap<String, f64>,
    tcp_open: f64,
}

fn label<'a>(s: &'a Series, k: &str) -> &'a str {
    s.labels.get(k).map_or("unknown", String::as_str)
}

/// `name` names this side: a bare name or `name.namespace`.
fn names(s: &Series, side: &str, name: &str) -> bool {
    let (n, ns) = match name.split_once('.') {
        Some((n, ns)) => (n, Some(ns)),
        None => (name, None),
    };
    let ns_ok = ns.is_none_or(|ns| label(s, &format!("{side}_workload_namespace")) == ns);
    ns_ok
        && (label(s, &format!("{side}_workload")) == n
            || (side == "destination" && label(s, "destination_service_name") == n))
}

/// The golden metrics of every row `query` selects, sorted by namespace and name.
pub fn stat(window: &Window, group: Group, query: &Query) -> Vec<Golden> {
    if group == Group::Route {
        return route_stat(window, query);
    }
    // Rows are the side the traffic is read at: receivers, or with --to the senders.
    let (reporter, side) = match query.to {
        Some(_) => ("source", "source"),
        None => ("destination", "destination"),
    };
    let mut rows: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for s in &window.series {
        if label(s, "reporter") != reporter {
            continue;
        }
        if query.from.as_deref().is_some_and(|f| !names(s, "source", f)) {
            continue;
        }
        if query.to.as_deref().is_some_and(|t| !names(s, "destination", t)) {
            continue;
        }
        let key = match group {
            Group::Workload => (
                label(s, &format!("{side}_workload")),
                label(s, &format!("{side}_workload_namespace")),
            ),
            Group::Service if side == "destination" => (
                label(s, "destination_service_name"),
                label(s, "destination_service_namespace"),
            ),
            // The senders of requests to a service are workloads.
            Group::Service => (label(s, "source_workload"), label(s, "source_workload_namespace")),
            Group::Namespace => {
                let ns = label(s, &format!("{side}_workload_namespace"));
                (ns, ns)
            }
            Group::Route => unreachable!("handled above"),
        };
        if query.name.as_deref().is_some_and(|n| n != key.0)
            || query.namespace.as_deref().is_some_and(|n| n != key.1)
        {
            continue;
        }
        let acc = rows.entry((key.1.to_string(), key.0.to_string())).or_default();
        acc.proxies.insert(s.proxy.clone());
        match s.name.as_str() {
            REQUESTS => {
                acc.requests += s.increase;
                if failed(s) {
                    acc.failures += s.increase;
                }
                if label(s, "connection_security_policy") == "mutual_tls" {
                    acc.mtls += s.increase;
                }
            }
            DURATION_BUCKETS => {
                *acc.buckets.entry(label(s, "le").to_string()).or_default() += s.increase;
            }
            TCP_OPENED => acc.tcp_open += s.total,
            TCP_CLOSED => acc.tcp_open -= s.total,
            _ => {}
        }
    }
    rows.into_iter()
        .map(|((namespace, name), acc)| golden(window, name, namespace, &acc))
        .collect()
}

fn golden(window: &Window, name: String, namespace: String, acc: &Acc) -> Golden {
    let share = |n: f64| (acc.requests > 0.0).then(|| n / acc.requests);
    let buckets = sorted_buckets(&acc.buckets);
    Golden {
        name,
        namespace,
        service: None,
        proxies: acc.proxies.len(),
        requests: acc.requests,
        success_rate: share(acc.requests - acc.failures),
        rps: window.rate(acc.requests),
        latency_ms_p50: quantile(0.50, &buckets),
        latency_ms_p95: quantile(0.95, &buckets),
        latency_ms_p99: quantile(0.99, &buckets),
        mtls_share: share(acc.mtls),
        tcp_connections: acc.tcp_open.max(0.0),
    }
}

/// A request failed: a 5xx (or no response at all), or a gRPC status other than OK.
fn failed(s: &Series) -> bool {
    let code: u16 = label(s, "response_code").parse().unwrap_or(0);
    let grpc = label(s, "grpc_response_status");
    code >= 500 || code == 0 || !matches!(grpc, "-" | "" | "0" | "unknown")
}

/// Named routes: `weft_route_requests_total{destination_service, route, response_code}`.
fn route_stat(window: &Window, query: &Query) -> Vec<Golden> {
    let mut rows: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for s in window.series.iter().filter(|s| s.name == ROUTE_REQUESTS) {
        let service = label(s, "destination_service");
        let route = label(s, "route");
        if query.name.as_deref().is_some_and(|n| n != route) {
            continue;
        }
        if query
            .to
            .as_deref()
            .is_some_and(|t| service != t && !service.starts_with(&format!("{t}.")))
        {
            continue;
        }
        let acc = rows.entry((service.to_string(), route.to_string())).or_default();
        acc.proxies.insert(s.proxy.clone());
        acc.requests += s.increase;
        if failed(s) {
            acc.failures += s.increase;
        }
    }
    rows.into_iter()
        .map(|((service, route), acc)| {
            let namespace = service.split('.').nth(1).unwrap_or("unknown").to_string();
            let mut g = golden(window, route, namespace, &acc);
            g.service = Some(service);
            g.mtls_share = None;
            g
        })
        .collect()
}

/// Bucket bounds and increases, by bound.
fn sorted_buckets(buckets: &BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, *n))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile of a cumulative histogram, interpolated linearly inside its bucket (as
/// Prometheus's `histogram_quantile`); in the `+Inf` bucket, the largest finite bound.
pub fn quantile(q: f64, cumulative: &[(f64, f64)]) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in cumulative {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let fraction = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// Every pair of workloads that exchanged requests or TCP connections since their sidecars
/// started, as the receiving sidecar saw it (it verified the caller's identity).
pub fn edges(window: &Window, namespace: Option<&str>) -> Vec<Edge> {
    let mut out: BTreeMap<(String, String, String, String), Edge> = BTreeMap::new();
    let mut secured: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    for s in &window.series {
        let tcp = s.name == TCP_OPENED;
        if !(s.name == REQUESTS || tcp) || label(s, "reporter") != "destination" || s.total <= 0.0 {
            continue;
        }
        let key = (
            label(s, "source_workload").to_string(),
            label(s, "source_workload_namespace").to_string(),
            label(s, "destination_workload").to_string(),
            label(s, "destination_workload_namespace").to_string(),
        );
        if namespace.is_some_and(|ns| ns != key.1 && ns != key.3) {
            continue;
        }
        let identity = |k: &str| Some(label(s, k).to_string()).filter(|v| v != "unknown");
        let e = out.entry(key.clone()).or_insert_with(|| Edge {
            source: key.0.clone(),
            source_namespace: key.1.clone(),
            destination: key.2.clone(),
            destination_namespace: key.3.clone(),
            source_identity: None,
            destination_identity: None,
            requests: 0.0,
            tcp_connections: 0.0,
            rps: 0.0,
            mtls_share: 0.0,
        });
        let mtls = label(s, "connection_security_policy") == "mutual_tls";
        if mtls {
            e.source_identity = e.source_identity.take().or_else(|| identity("source_principal"));
            e.destination_identity = e
                .destination_identity
                .take()
                .or_else(|| identity("destination_principal"));
            *secured.entry(key).or_default() += s.total;
        }
        if tcp {
            e.tcp_connections += s.total;
        } else {
            e.requests += s.total;
            e.rps += window.rate(s.increase);
        }
    }
    out.into_iter()
        .map(|(key, mut e)| {
            let all = e.requests + e.tcp_connections;
            e.mtls_share = secured.get(&key).map_or(0.0, |n| n / all);
            e
        })
        .collect()
}

#[cfg(test)]
mod tests;
