//! Linkerd's `retry.linkerd.io/*`, `timeout.linkerd.io/*` and `balancer.linkerd.io/*`
//! annotations (Linkerd 2.16+), on a `Service` (service-wide defaults) or on a Gateway API
//! route (that route's rules).
//!
//! Retries, the request timeout and (on a Service) consecutive failure accrual are acted on. The
//! response and idle timeouts are read and reported as not implemented; an unknown name under
//! those prefixes is an unknown field. Each finding sits at the annotation's own line.

use super::super::core::locate;
use super::super::istio::parse_duration;
use super::super::Translated;
use crate::finding::{codes, Finding};
use crate::model::{HostOutlierDetection, HostProfile};
use crate::proxy_config::{OutlierDetection, ProxyConfig};
use crate::resources::linkerd::{self as l, ANNOTATIONS, ANNOTATION_PREFIXES};
use crate::resources::Document;
use crate::route::{Profile, Retries};
use crate::translate::origin;

/// gRPC status names `retry.linkerd.io/grpc` accepts.
const GRPC_CONDITIONS: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// What the annotations of one document ask for.
#[derive(Debug, Default, PartialEq)]
pub struct Annotated {
    pub timeout_ms: Option<u64>,
    pub retries: Option<Retries>,
    /// `balancer.linkerd.io/failure-accrual: consecutive` and its settings.
    pub failure_accrual: Option<OutlierDetection>,
}

/// The `balancer.linkerd.io/failure-accrual*` annotations as read, before they are combined.
#[derive(Debug, Default)]
struct Accrual {
    /// `failure-accrual: consecutive` was given.
    consecutive: bool,
    max_failures: Option<u32>,
    min_penalty_ms: Option<u64>,
    max_penalty_ms: Option<u64>,
    jitter_ratio: Option<f64>,
}

/// Where Linkerd reads these annotations: a `Service` and a route's own document. `first` is
/// the first of `out.mesh.routes` the document's translation added.
pub(crate) fn apply(doc: &Document, first: usize, out: &mut Translated) {
    match (doc.group(), doc.kind.as_str()) {
        ("", "Service") => service_annotations(doc, out),
        ("gateway.networking.k8s.io" | "policy.linkerd.io", "HTTPRoute" | "GRPCRoute") => {
            route_annotations(doc, first, out)
        }
        _ => {}
    }
}

/// A `Service`'s annotations: defaults for every request to it.
fn service_annotations(doc: &Document, out: &mut Translated) {
    let a = read(doc, out);
    if a == Annotated::default() {
        return;
    }
    if let Some(settings) = a.failure_accrual.clone() {
        out.mesh.outlier_detections.push(HostOutlierDetection {
            host: ProxyConfig::fqdn(&doc.name, &doc.namespace),
            origin: origin(doc),
            settings,
        });
    }
    if a.timeout_ms.is_none() && a.retries.is_none() {
        return;
    }
    out.mesh.profiles.push(HostProfile {
        host: ProxyConfig::fqdn(&doc.name, &doc.namespace),
        origin: origin(doc),
        profile: Profile {
            timeout_ms: a.timeout_ms,
            retries: a.retries,
            ..Profile::default()
        },
    });
}

/// A Gateway API route's annotations: added to the rules translated from it (those of
/// `out.mesh.routes[first..]`) wherever a rule sets no timeout or retries of its own.
fn route_annotations(doc: &Document, first: usize, out: &mut Translated) {
    let a = read(doc, out);
    if a == Annotated::default() {
        return;
    }
    for routes in out.mesh.routes.iter_mut().skip(first) {
        for rule in &mut routes.rules {
            let p = &mut rule.policies;
            p.timeout_ms = p.timeout_ms.or(a.timeout_ms);
            if p.retries.is_none() {
                p.retries = a.retries.clone();
            }
        }
    }
}

/// Reads the Linkerd annotations of `doc`, reporting what cannot be read or acted on.
pub fn read(doc: &Document, out: &mut Translated) -> Annotated {
    let mut a = Annotated::default();
    let mut retry_on: Vec<String> = Vec::new();
    let (mut any_retry, mut limit, mut per_try) = (false, 1u32, None);
    let mut accrual = Accrual::default();
    for (key, value) in &doc.annotations {
        if !ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p)) {
            continue;
        }
        let at = locate(doc, &["metadata", "annotations", key]);
        let who = format!("{} {}/{}: annotation {key}", doc.kind, doc.namespace, doc.name);
        // Linkerd reads HTTP retry conditions on HTTP routes and gRPC ones on gRPC routes only.
        let wrong_route = match (key.as_str(), doc.kind.as_str()) {
            (l::RETRY_HTTP, "GRPCRoute") => Some("a GRPCRoute takes retry.linkerd.io/grpc"),
            (l::RETRY_GRPC, "HTTPRoute") => Some("an HTTPRoute takes retry.linkerd.io/http"),
            _ => None,
        };
        if let Some(why) = wrong_route {
            out.findings.push(Finding::warning(
                codes::SCHEMA,
                format!("{who} is not valid on {}s: ignored ({why})", doc.kind),
                &at,
            ));
            continue;
        }
        let mut bad = |what: &str| {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!("{who}: {value:?} {what}; it is ignored"),
                &at,
            ));
        };
        match key.as_str() {
            l::RETRY_HTTP => match http_conditions(value) {
                Some(c) => {
                    any_retry = true;
                    retry_on.extend(c);
                }
                None => bad("is not a list of 5xx, gateway-error, status codes or ranges such as 500-504"),
            },
            l::RETRY_GRPC => match grpc_conditions(value) {
                Some(c) => {
                    any_retry = true;
                    retry_on.extend(c);
                }
                None => bad(&format!("is not a list of {}", GRPC_CONDITIONS.join(", "))),
            },
            l::RETRY_LIMIT => match value.trim().parse::<u32>() {
                Ok(n) => {
                    any_retry = true;
                    limit = n;
                }
                Err(_) => bad("is not a whole number of retries"),
            },
            l::RETRY_TIMEOUT => match parse_duration(value).filter(|ms| *ms > 0) {
                Some(ms) => {
                    any_retry = true;
                    per_try = Some(ms);
                }
                None => bad("is not a duration such as 300ms or 2s"),
            },
            l::TIMEOUT_REQUEST => match parse_duration(value).filter(|ms| *ms > 0) {
                Some(ms) => a.timeout_ms = Some(ms),
                None => bad("is not a duration such as 300ms or 2s"),
            },
            l::TIMEOUT_RESPONSE | l::TIMEOUT_IDLE => out.findings.push(Finding::warning(
                codes::NOT_IMPLEMENTED,
                format!(
                    "{who} is read but not acted on yet: the proxy has one request timeout (timeout.linkerd.io/request)"
                ),
                &at,
            )),
            _ if doc.kind != "Service" && key.starts_with(l::FAILURE_ACCRUAL) => out.findings.push(Finding::warning(
                codes::SCHEMA,
                format!("{who} is read on a Service only: ignored"),
                &at,
            )),
            l::FAILURE_ACCRUAL => match value.trim() {
                "consecutive" => accrual.consecutive = true,
                _ => bad("is not a failure accrual kind Linkerd has (consecutive)"),
            },
            l::FAILURE_ACCRUAL_MAX_FAILURES => match value.trim().parse::<u32>() {
                Ok(n) if n > 0 => accrual.max_failures = Some(n),
                _ => bad("is not a whole number of failures above 0"),
            },
            l::FAILURE_ACCRUAL_MIN_PENALTY | l::FAILURE_ACCRUAL_MAX_PENALTY => {
                match parse_duration(value).filter(|ms| *ms > 0) {
                    Some(ms) if key == l::FAILURE_ACCRUAL_MIN_PENALTY => accrual.min_penalty_ms = Some(ms),
                    Some(ms) => accrual.max_penalty_ms = Some(ms),
                    None => bad("is not a duration such as 1s or 1m"),
                }
            }
            l::FAILURE_ACCRUAL_JITTER => match value.trim().parse::<f64>() {
                Ok(r) if (0.0..=100.0).contains(&r) => accrual.jitter_ratio = Some(r),
                _ => bad("is not a ratio from 0 to 100"),
            },
            _ => out.findings.push(
                Finding::warning(codes::UNKNOWN_FIELD, format!("{who} is not a Linkerd annotation: ignored"), &at)
                    .with_fix(format!("one of {}", ANNOTATIONS.join(", "))),
            ),
        }
    }
    a.failure_accrual = accrual.settings(doc, out);
    if any_retry {
        // A limit or per-try timeout alone retries what Linkerd's HTTP default does: 5xx.
        if retry_on.is_empty() {
            retry_on.push("5xx".to_string());
        }
        a.retries = Some(Retries {
            attempts: limit,
            per_try_timeout_ms: per_try,
            retry_on,
        });
    }
    a
}

// === impl Accrual ===

impl Accrual {
    /// The outlier detection these annotations ask for: Linkerd's consecutive failure accrual
    /// with its defaults for what is not given. Settings without `failure-accrual:
    /// consecutive` do nothing in Linkerd; they are reported.
    fn settings(self, doc: &Document, out: &mut Translated) -> Option<OutlierDetection> {
        let tuned = self.max_failures.is_some()
            || self.min_penalty_ms.is_some()
            || self.max_penalty_ms.is_some()
            || self.jitter_ratio.is_some();
        if !self.consecutive {
            if tuned {
                out.findings.push(Finding::warning(
                    codes::SCHEMA,
                    format!(
                        "{} {}/{}: failure-accrual settings without {}: consecutive do nothing",
                        doc.kind,
                        doc.namespace,
                        doc.name,
                        l::FAILURE_ACCRUAL
                    ),
                    &locate(doc, &["metadata", "annotations"]),
                ));
            }
            return None;
        }
        let mut od = OutlierDetection::linkerd_consecutive();
        if let Some(n) = self.max_failures {
            od.consecutive_5xx_errors = n;
            od.consecutive_local_origin_failures = n;
        }
        if let Some(ms) = self.min_penalty_ms {
            od.base_ejection_time_ms = ms;
        }
        if let Some(ms) = self.max_penalty_ms {
            od.max_ejection_time_ms = ms;
        }
        if let Some(r) = self.jitter_ratio {
            od.jitter_ratio = r;
        }
        if od.max_ejection_time_ms < od.base_ejection_time_ms {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "{} {}/{}: {} is shorter than {}; failure accrual is not applied",
                    doc.kind,
                    doc.namespace,
                    doc.name,
                    l::FAILURE_ACCRUAL_MAX_PENALTY,
                    l::FAILURE_ACCRUAL_MIN_PENALTY
                ),
                &locate(doc, &["metadata", "annotations", l::FAILURE_ACCRUAL_MAX_PENALTY]),
            ));
            return None;
        }
        Some(od)
    }
}

/// `5xx`, `gateway-error`, `429`, `500-504`, comma-separated.
fn http_conditions(value: &str) -> Option<Vec<String>> {
    value
        .split(',')
        .map(str::trim)
        .map(|c| {
            let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
            let ok = match c {
                "5xx" | "gateway-error" => true,
                _ => match c.split_once('-') {
                    Some((a, b)) => code(a).zip(code(b)).is_some_and(|(a, b)| a <= b),
                    None => code(c).is_some(),
                },
            };
            ok.then(|| c.to_string())
        })
        .collect()
}

fn grpc_conditions(value: &str) -> Option<Vec<String>> {
    value
        .split(',')
        .map(str::trim)
        .map(|c| GRPC_CONDITIONS.contains(&c).then(|| c.to_string()))
        .collect()
}
