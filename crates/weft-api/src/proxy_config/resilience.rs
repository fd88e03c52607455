//! What a proxy is told about keeping a service's endpoints healthy: outlier detection (Istio's
//! `DestinationRule.trafficPolicy.outlierDetection`, Linkerd's consecutive failure accrual).
//!
//! Every field is resolved by the control plane (dialect defaults filled in), so the proxy reads
//! plain numbers. A hand-written `weft proxy --config` gets Istio's defaults for what it omits.

use serde::{Deserialize, Serialize};

/// When an endpoint is ejected from its service's balancer, and for how long.
///
/// An endpoint that fails `consecutive_5xx_errors` times in a row (or `consecutive_gateway_errors`
/// 502/503/504s, or `consecutive_local_origin_failures` connect failures and resets when local
/// failures are counted apart) is ejected at once for `base_ejection_time_ms` times the number of
/// its ejections (Envoy; Linkerd doubles instead), at most `max_ejection_time_ms`. An ejected
/// endpoint receives nothing until its time is up; with `probe` (Linkerd) it then receives exactly
/// one request, whose success returns it and whose failure ejects it again for longer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// 5xx responses in a row that eject; 0 turns the rule off. Without
    /// `split_external_local_origin_errors` a connect failure, reset or timeout counts as a 5xx.
    /// Default 5.
    #[serde(default = "default_consecutive")]
    pub consecutive_5xx_errors: u32,
    /// 502, 503 and 504 responses in a row that eject; 0 (the default) turns the rule off.
    #[serde(default)]
    pub consecutive_gateway_errors: u32,
    /// Failures of the proxy's own making in a row (connect refused or timed out, reset before
    /// a response) that eject, read only with `split_external_local_origin_errors`. Default 5.
    #[serde(default = "default_consecutive")]
    pub consecutive_local_origin_failures: u32,
    /// Count local-origin failures apart from the upstream's 5xx responses. Default false.
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    /// Each interval an endpoint spends without being ejected takes one ejection off the
    /// multiplier of its next ejection time. Default 10 s.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// The first ejection's length; later ones grow (see `backoff`). Default 30 s.
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time_ms: u64,
    /// The longest an ejection lasts (Envoy's `max_ejection_time`, Linkerd's max penalty).
    /// Default 300 s.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_time_ms: u64,
    /// At most this percent of a balancer's endpoints are ejected at once; one endpoint may
    /// always be ejected, whatever the percent. Default 10.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// When fewer than this percent of the endpoints are healthy, ejections are ignored and
    /// traffic is balanced over all endpoints (Envoy's panic threshold). 0 (the default)
    /// never ignores them: with every endpoint ejected a request gets 503 `UH`.
    #[serde(default)]
    pub min_health_percent: u32,
    /// How ejection times grow. Default `LINEAR` (Envoy).
    #[serde(default)]
    pub backoff: EjectionBackoff,
    /// Each ejection lasts up to this fraction longer, at random, so endpoints ejected together
    /// are not all tried again at the same instant (Linkerd's jitter ratio). Default 0.
    #[serde(default)]
    pub jitter_ratio: f64,
    /// Once its time is up, an ejected endpoint gets one request (a probe) before any other;
    /// its success returns the endpoint, its failure ejects it again (Linkerd). Without it the
    /// endpoint simply returns (Envoy). Default false.
    #[serde(default)]
    pub probe: bool,
}

/// How the length of an endpoint's n-th ejection in a row grows from the base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EjectionBackoff {
    /// base x n (Envoy, Istio).
    #[default]
    Linear,
    /// base x 2^(n-1) (Linkerd's exponential backoff).
    Exponential,
}

// === impl OutlierDetection ===

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx_errors: default_consecutive(),
            consecutive_gateway_errors: 0,
            consecutive_local_origin_failures: default_consecutive(),
            split_external_local_origin_errors: false,
            interval_ms: default_interval(),
            base_ejection_time_ms: default_base_ejection(),
            max_ejection_time_ms: default_max_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
            min_health_percent: 0,
            backoff: EjectionBackoff::Linear,
            jitter_ratio: 0.0,
            probe: false,
        }
    }
}

impl OutlierDetection {
    /// Linkerd's `balancer.linkerd.io/failure-accrual: consecutive` with its defaults: 7
    /// failures, penalties from 1 s doubling to 1 min with 0.5 jitter, probed after each.
    pub fn linkerd_consecutive() -> Self {
        Self {
            consecutive_5xx_errors: 7,
            consecutive_gateway_errors: 0,
            consecutive_local_origin_failures: 7,
            split_external_local_origin_errors: false,
            interval_ms: default_interval(),
            base_ejection_time_ms: 1_000,
            max_ejection_time_ms: 60_000,
            max_ejection_percent: 100,
            min_health_percent: 0,
            backoff: EjectionBackoff::Exponential,
            jitter_ratio: 0.5,
            probe: true,
        }
    }

    /// Why these settings cannot run, each naming its field under `at`.
    pub fn problems(&self, at: &str) -> Vec<super::Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, why: &str| {
            out.push(super::Problem::field(format!("{at}.{field}"), why.to_string()));
        };
        if self.max_ejection_percent > 100 {
            bad("maxEjectionPercent", "must be 0..=100");
        }
        if self.min_health_percent > 100 {
            bad("minHealthPercent", "must be 0..=100");
        }
        if !(0.0..=100.0).contains(&self.jitter_ratio) {
            bad("jitterRatio", "must be 0..=100");
        }
        if self.interval_ms == 0 {
            bad("intervalMs", "must be more than 0");
        }
        out
    }
}

fn default_consecutive() -> u32 {
    5
}
fn default_interval() -> u64 {
    10_000
}
fn default_base_ejection() -> u64 {
    30_000
}
fn default_max_ejection() -> u64 {
    300_000
}
fn default_max_ejection_percent() -> u32 {
    10
}

/// Limits on what this proxy sends one service at once (Istio's `connectionPool`, Envoy's
/// circuit breakers), counted per proxy across the service's endpoints. Past a limit a request
/// is answered at once with 503 and flag `UO` (gRPC `UNAVAILABLE`), naming the limit in
/// `x-weft-proxy-error`; nothing is queued. None: no limit beyond the proxy's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPool {
    /// HTTP/1 connections open at once to the service's apps (`tcp.maxConnections`). Requests
    /// to peer proxies share one multiplexed connection per endpoint and are limited by
    /// `max_requests` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Time allowed to open a connection (`tcp.connectTimeout`), instead of the proxy's
    /// `limits.connectTimeoutMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Requests waiting at once for a connection to open (`http.http1MaxPendingRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight at once, until their response ends (`http.http2MaxRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Requests one HTTP/1 connection carries before it is closed
    /// (`http.maxRequestsPerConnection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Retries in flight at once (`http.maxRetries`); a retry past it is not sent and the
    /// failed attempt's answer stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Local rate limits on one inbound port (Linkerd's `HTTPLocalRateLimitPolicy`): token buckets
/// in this proxy, refilled continuously, each holding at most one second of requests. A request
/// past a limit gets 429 with `retry-after` (gRPC `RESOURCE_EXHAUSTED`) and flag `RL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per second across every caller. None: no total limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// Requests per second per caller identity (callers without an mTLS identity share one
    /// bucket). None: no per-identity limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<u32>,
    /// Callers with a limit of their own instead of `identity`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
}

/// A per-identity limit for some callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitOverride {
    pub requests_per_second: u32,
    /// Caller identities: a SPIFFE ID, or `ns/NAMESPACE/sa/SERVICE_ACCOUNT` for that service
    /// account in any trust domain.
    pub clients: Vec<String>,
}

// === impl RateLimitOverride ===

impl RateLimitOverride {
    /// Whether the caller with SPIFFE ID `principal` is one of `clients`.
    pub fn covers(&self, principal: &str) -> bool {
        self.clients.iter().any(|c| {
            c == principal
                || principal
                    .strip_suffix(c.as_str())
                    .is_some_and(|head| head.ends_with('/') && c.starts_with("ns/"))
        })
    }
}
