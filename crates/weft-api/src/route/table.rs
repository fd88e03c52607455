//! The route table as it travels to a proxy: plain data, in the order rules are tried.
//!
//! Field names are those of the `weft explain -o json` contract (shared/ARCHITECTURE.md), so
//! what a user scripts against and what a proxy receives say the same thing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The routes of one service port, in the order they are tried: Istio rules in document
/// order, Gateway API rules by the spec's precedence (sorted when compiled from documents).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What a Linkerd ServiceProfile and Linkerd's annotations on the Service add to every
    /// request, whichever rule decides its destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

impl RouteTable {
    /// No rules and no profile: requests go to the service itself, untouched.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.profile.is_none()
    }
}

/// Where a rule came from: the document and its place in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// One routing rule: any of its matches selects its action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub origin: Origin,
    /// Index of the rule in its document.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any of these selects the rule; none at all matches every request.
    #[serde(default)]
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    #[serde(default)]
    pub policies: RoutePolicies,
}

/// Conditions that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// How a path is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact {
        value: String,
        #[serde(default)]
        ignore_case: bool,
    },
    /// Istio's `prefix`: a plain string prefix.
    Prefix {
        value: String,
        #[serde(default)]
        ignore_case: bool,
    },
    /// Gateway API's `PathPrefix`: whole segments (`/v2` matches `/v2/x`, not `/v2example`).
    SegmentPrefix { value: String },
    /// RE2 syntax, matching the whole path.
    Regex {
        value: String,
        #[serde(default)]
        ignore_case: bool,
    },
}

/// How a string is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, matching the whole value.
    Regex(String),
}

/// A header condition (names are case-insensitive, values case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Lower-case name.
    pub name: String,
    /// None: the header must be present (with any value).
    #[serde(default)]
    pub value: Option<StringMatch>,
    /// The condition must NOT hold (Istio `withoutHeaders`).
    #[serde(default)]
    pub invert: bool,
}

/// A query-parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryMatch {
    pub name: String,
    /// None: the parameter must be present.
    #[serde(default)]
    pub value: Option<StringMatch>,
}

/// What a matched rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Forward(Vec<Backend>),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// A weighted destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Fully qualified service name.
    pub service: String,
    #[serde(default)]
    pub subset: Option<String>,
    /// None: the port the request was sent to.
    #[serde(default)]
    pub port: Option<u16>,
    /// As written in the documents; relative to the rule's other backends. 0 gets nothing.
    pub weight: u32,
    /// Changes made only to requests sent to this backend, after the rule's (Gateway API
    /// `backendRefs[].filters`). None: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Box<BackendFilters>>,
}

/// What a Gateway API backendRef's filters do to the requests it gets and their responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFilters {
    #[serde(default)]
    pub request_headers: HeaderOps,
    #[serde(default)]
    pub response_headers: HeaderOps,
    /// A rewrite; a prefix one is resolved against the request's path by `route::resolve`.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
}

/// An HTTP redirect answered by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub status: u16,
    /// Parts replaced in the request's URL; None keeps the request's own.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    /// The matched path prefix becomes this (Gateway API `ReplacePrefixMatch`); resolved
    /// against each request's path into `path` by `route::resolve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A response answered by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
}

/// Everything a rule adds to the request besides where it goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicies {
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
    #[serde(default)]
    pub fault: Option<Fault>,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub request_headers: HeaderOps,
    #[serde(default)]
    pub response_headers: HeaderOps,
    #[serde(default)]
    pub route_name: Option<String>,
    #[serde(default)]
    pub retryable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub attempts: u32,
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub delay_percent: Option<f64>,
    #[serde(default)]
    pub abort_status: Option<u16>,
    /// A gRPC status name (`UNAVAILABLE`), as Istio's `abort.grpcStatus` takes it; used only
    /// when `abort_status` is not set, as Envoy's fault filter does.
    #[serde(default)]
    pub abort_grpc_status: Option<String>,
    #[serde(default)]
    pub abort_percent: Option<f64>,
}

/// The gRPC status names, in code order (`OK` is 0, `UNAUTHENTICATED` 16): what Istio accepts
/// in `abort.grpcStatus` (its `SupportedGRPCStatus`).
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of gRPC status `name` (`UNAVAILABLE` is 14), None for no such name.
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUS_NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub service: String,
    #[serde(default)]
    pub subset: Option<String>,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// The whole path becomes this (Gateway API `ReplaceFullPath`). In a [`Decision`]
    /// (crate::route::Decision) it is the path this request is sent with.
    #[serde(default)]
    pub path: Option<String>,
    /// The matched path prefix becomes this (Gateway API `ReplacePrefixMatch`, Istio's
    /// `rewrite.uri`); after an exact or regex path match, the whole path. Resolved into
    /// `path` per request by `route::resolve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// No header changes.
    pub const EMPTY: HeaderOps = HeaderOps {
        set: BTreeMap::new(),
        add: BTreeMap::new(),
        remove: Vec::new(),
    };
}

/// A service's Linkerd profile: a ServiceProfile's named routes with their timeouts and retry
/// policy and its retry budget; or, for a Service without a ServiceProfile, the service-wide
/// timeout and retries of Linkerd's annotations on it.
///
/// It never chooses a destination. Per field, the matched rule's own policy wins (an Istio or
/// Gateway API timeout/retry is the more specific statement), then the first matching profile
/// route, then the annotations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The ServiceProfile, when there is one (annotations alone have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Tried in order; the first whose condition holds is the request's route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ProfileRoute>,
    /// Limits retries made under this profile; None: retries are not budgeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Service-wide timeout (`timeout.linkerd.io/request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Service-wide retries (`retry.linkerd.io/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
}

/// A ServiceProfile route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRoute {
    /// As written, e.g. `GET /books/{id}`.
    pub name: String,
    pub condition: RouteCondition,
    /// Covers the whole request, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `isRetryable`: failed requests are retried while the budget allows.
    #[serde(default)]
    pub retryable: bool,
    /// The responses that count as failures (from `responseClasses`), in the retry
    /// vocabulary: `5xx`, or status ranges such as `500-504`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
}

/// A ServiceProfile request condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteCondition {
    All(Vec<RouteCondition>),
    Any(Vec<RouteCondition>),
    Not(Box<RouteCondition>),
    Method(String),
    /// RE2, matching the whole path.
    PathRegex(String),
}
