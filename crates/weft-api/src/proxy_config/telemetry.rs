//! What a proxy reports beyond its metrics: access logs and traces (the settings Istio's
//! `Telemetry` resource carries for them). Metrics are always on and need no setting here.
//!
//! Each field is `None` when no `Telemetry` document decides it for this workload: the proxy
//! then keeps its own default, from its bootstrap config (off unless set there, as Istio's
//! `meshConfig.accessLogFile` is empty by default; `weft up` sets it on, as Istio's demo
//! profile does). `Some(vec![])` is a document that turned logging off. Likewise for tracing:
//! without a setting anywhere, 1 % of new traces are sampled, as in Istio.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The telemetry settings of one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    /// Where access-log lines go, one entry per destination (Istio `accessLogging` providers).
    /// None: not decided by any document (the bootstrap's value applies); empty: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logs: Option<Vec<AccessLog>>,
    /// Distributed tracing (Istio `tracing`). None: not decided by any document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

/// How a proxy takes part in distributed traces. Trace context (W3C `traceparent`, B3,
/// `x-request-id`) is always propagated; these settings decide which traces are recorded and
/// where their spans go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    /// Percent (0 to 100) of new traces recorded; a trace whose caller already decided keeps
    /// that decision. Default 1, as Istio's `randomSamplingPercentage`.
    #[serde(default = "default_sampling")]
    pub random_sampling_percentage: f64,
    /// The OTLP/gRPC collector (`http://host:4317`). None: the proxy's
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; without either, spans are recorded nowhere (context is
    /// still propagated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
    /// Istio's `disableSpanReporting`: propagate and sample, but send no spans. Default false.
    #[serde(default)]
    pub disable_span_reporting: bool,
}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            random_sampling_percentage: default_sampling(),
            collector: None,
            disable_span_reporting: false,
        }
    }
}

fn default_sampling() -> f64 {
    1.0
}

/// One access-log destination: a format, a place, which side's traffic, and a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLog {
    /// `text` (Envoy's default format, as Istio prints it) or `json`. Default `text`.
    #[serde(default)]
    pub format: AccessLogFormat,
    /// A file the lines are appended to; None: the proxy's stdout (Istio's `/dev/stdout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Which side's traffic: the outbound proxy's (`CLIENT`), the inbound one's (`SERVER`) or
    /// both (`CLIENT_AND_SERVER`, the default), as Istio's `match.mode`.
    #[serde(default)]
    pub mode: TrafficMode,
    /// Istio's `filter.expression` (CEL): only requests it is true for are logged. The proxy
    /// understands comparisons of `response.code`, `response.flags`, `response.grpc_status`,
    /// `request.method`, `connection.mtls` and `xds.cluster_name`, joined by `&&`, `||`, `!`
    /// and parentheses ([`crate::telemetry::Filter`]). None: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// How an access-log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// Istio's default text format (Envoy's, with the upstream cluster and route name).
    #[default]
    Text,
    /// One JSON object per line, with the same fields and more (principals, retries, trace id).
    Json,
}

/// Which side of a hop a setting applies to (Istio `WorkloadMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficMode {
    /// Outbound: this proxy is the client side of the hop.
    Client,
    /// Inbound: this proxy is the server side of the hop.
    Server,
    #[default]
    ClientAndServer,
}

// === impl Telemetry ===

impl Telemetry {
    /// What a pushed config says, over what this proxy's bootstrap says (`local`): each field
    /// a document decides wins; the others keep the local value.
    pub fn over(self, local: &Telemetry) -> Telemetry {
        Telemetry {
            access_logs: self.access_logs.or_else(|| local.access_logs.clone()),
            tracing: self.tracing.or_else(|| local.tracing.clone()),
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Telemetry::default()
    }
}

// === impl TrafficMode ===

impl TrafficMode {
    /// Whether this mode covers the outbound (`client`) or the inbound side.
    pub fn covers(self, client: bool) -> bool {
        match self {
            TrafficMode::ClientAndServer => true,
            TrafficMode::Client => client,
            TrafficMode::Server => !client,
        }
    }
}
