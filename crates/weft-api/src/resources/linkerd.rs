//! Linkerd `linkerd.io/v1alpha2` `ServiceProfile`, as written, and the names of the
//! `retry.linkerd.io/*`, `timeout.linkerd.io/*` and `balancer.linkerd.io/*` annotations.
//!
//! Every field of the upstream schema is accepted; anything else is an unknown field. The
//! translator (translate/linkerd.rs) reports the fields Weft reads but does not act on.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::smi::Weight;

/// `ServiceProfile.spec`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceProfileSpec {
    #[serde(default)]
    pub routes: Vec<ProfileRoute>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
    /// Legacy traffic split: `authority` is a service's FQDN (optionally with `:port`).
    #[serde(default)]
    pub dst_overrides: Vec<DstOverride>,
    #[serde(default)]
    pub opaque_ports: Option<IgnoredAny>,
}

/// One route: requests matching `condition` get its name, timeout and retry policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileRoute {
    pub name: String,
    pub condition: RequestMatch,
    #[serde(default)]
    pub response_classes: Vec<ResponseClass>,
    #[serde(default)]
    pub is_retryable: bool,
    /// Go duration (`300ms`, `1.5s`, `1m`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A request condition; every field given must hold (as if under `all`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMatch {
    /// RE2, matched against the whole path.
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub all: Vec<RequestMatch>,
    #[serde(default)]
    pub any: Vec<RequestMatch>,
    #[serde(default)]
    pub not: Option<Box<RequestMatch>>,
}

/// Responses matching `condition` are failures (or explicitly not).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseClass {
    pub condition: ResponseMatch,
    #[serde(default)]
    pub is_failure: bool,
}

/// A response condition; every field given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseMatch {
    #[serde(default)]
    pub status: Option<StatusRange>,
    #[serde(default)]
    pub all: Vec<ResponseMatch>,
    #[serde(default)]
    pub any: Vec<ResponseMatch>,
    #[serde(default)]
    pub not: Option<Box<ResponseMatch>>,
}

/// Status codes `min..=max`; only one of them given matches just that code.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    #[serde(default)]
    pub min: Option<u16>,
    #[serde(default)]
    pub max: Option<u16>,
}

/// How many retries the service may get: `retryRatio` of the requests seen over `ttl`, plus
/// `minRetriesPerSecond`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    pub retry_ratio: f64,
    pub min_retries_per_second: u32,
    pub ttl: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DstOverride {
    pub authority: String,
    /// A quantity in thousandths, as SMI v1alpha1 writes it (`500m`, `1`).
    pub weight: Weight,
}

// === annotations ===

/// Annotation prefixes Linkerd reads for retries, timeouts and load balancing. Any annotation
/// under one of them that is not in [`ANNOTATIONS`] is an unknown field.
pub const ANNOTATION_PREFIXES: &[&str] =
    &["retry.linkerd.io/", "timeout.linkerd.io/", "balancer.linkerd.io/"];

/// The annotations Linkerd 2.16+ defines under those prefixes.
pub const ANNOTATIONS: &[&str] = &[
    RETRY_HTTP,
    RETRY_GRPC,
    RETRY_LIMIT,
    RETRY_TIMEOUT,
    TIMEOUT_REQUEST,
    TIMEOUT_RESPONSE,
    TIMEOUT_IDLE,
    FAILURE_ACCRUAL,
    FAILURE_ACCRUAL_MAX_FAILURES,
    FAILURE_ACCRUAL_MIN_PENALTY,
    FAILURE_ACCRUAL_MAX_PENALTY,
    FAILURE_ACCRUAL_JITTER,
];

pub const FAILURE_ACCRUAL: &str = "balancer.linkerd.io/failure-accrual";
pub const FAILURE_ACCRUAL_MAX_FAILURES: &str = "balancer.linkerd.io/failure-accrual-consecutive-max-failures";
pub const FAILURE_ACCRUAL_MIN_PENALTY: &str = "balancer.linkerd.io/failure-accrual-consecutive-min-penalty";
pub const FAILURE_ACCRUAL_MAX_PENALTY: &str = "balancer.linkerd.io/failure-accrual-consecutive-max-penalty";
pub const FAILURE_ACCRUAL_JITTER: &str = "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio";

pub const RETRY_HTTP: &str = "retry.linkerd.io/http";
pub const RETRY_GRPC: &str = "retry.linkerd.io/grpc";
pub const RETRY_LIMIT: &str = "retry.linkerd.io/limit";
pub const RETRY_TIMEOUT: &str = "retry.linkerd.io/timeout";
pub const TIMEOUT_REQUEST: &str = "timeout.linkerd.io/request";
pub const TIMEOUT_RESPONSE: &str = "timeout.linkerd.io/response";
pub const TIMEOUT_IDLE: &str = "timeout.linkerd.io/idle";
