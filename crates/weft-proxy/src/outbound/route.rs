//! Applying the routing decision to a request for a mesh service: which backend (weighted
//! split, subset), and the policies the matched rule carries — fault, header changes, rewrite,
//! timeout, retries, redirect and direct responses.
//!
//! The decision itself is `weft_api::route::resolve`, the same function `weft explain` calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use weft_api::canonical::parse_authority;
use weft_api::route::{self, Backend, Decision, DecisionKind, HeaderOps, RequestHead, RoutePolicies, Source};

use crate::config::Shared;
use crate::config::{ServiceInfo, Snapshot};
use crate::forward;
use crate::http::error::{Flag, ProxyError};
use crate::http::headers::HeadersView;
use crate::http::replay::{ReplayBody, MAX_REPLAY_BYTES};
use crate::http::retry_budget::RetryBudget;
use crate::http::{full, Body};
use crate::telemetry::metered::RequestMeta;
use crate::telemetry::metrics::Label;

/// Retry conditions when a rule asks for retries without naming any (Istio's default).
const DEFAULT_RETRY_ON: &[&str] = &[
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "503",
];
/// First pause between attempts; doubles each time (Envoy's 25 ms base).
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Routes one request for `svc:port` and sends it.
pub async fn route(
    shared: &Shared,
    snap: &Snapshot,
    svc: &Arc<ServiceInfo>,
    port: u16,
    req: Request<Body>,
    meta: &mut RequestMeta,
) -> Result<Response<Body>, ProxyError> {
    let decision = match snap.route_table(&svc.fqdn, port) {
        None => None,
        Some(table) => {
            let authority = forward::request_authority(&req).and_then(|a| parse_authority(a).ok());
            let host = authority.as_ref().map_or("", |a| a.bare_host());
            let head = RequestHead {
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query(),
                authority: host,
                port,
                headers: &HeadersView(req.headers()),
            };
            let w = &snap.config.workload;
            let source = Source {
                namespace: &w.namespace,
                labels: Some(&w.labels),
            };
            Some(route::resolve(table, &head, &source, false))
        }
    };
    let Some(decision) = decision else {
        // No rules: the service itself, every endpoint.
        return forward::to_service(shared, svc, port, None, req, meta).await;
    };
    match decision.kind {
        DecisionKind::NotFound => Err(ProxyError::no_route(format!("no route of {} matched", svc.fqdn))),
        DecisionKind::Redirect => Ok(redirect(&decision, &req)),
        DecisionKind::DirectResponse => Ok(direct_response(&decision)),
        DecisionKind::Route => send_routed(shared, snap, svc, port, decision, req, meta).await,
    }
}

async fn send_routed(
    shared: &Shared,
    snap: &Snapshot,
    svc: &Arc<ServiceInfo>,
    port: u16,
    decision: Decision<'_>,
    mut req: Request<Body>,
    meta: &mut RequestMeta,
) -> Result<Response<Body>, ProxyError> {
    let policies = decision.policies;
    let backend = pick_backend(&decision.backends)
        .ok_or_else(|| ProxyError::no_endpoints("route (every backend has weight 0)"))?;
    let target = snap.service_by_host(&backend.service).cloned().ok_or_else(|| {
        ProxyError::no_endpoints(&format!("{} (not in this proxy's config)", backend.service))
    })?;
    meta.set_service(&target);
    meta.route = policies.route_name.as_deref().map(Label::new);
    let target_port = backend.port.unwrap_or(port);

    if let Some(fault) = &policies.fault {
        if let (Some(ms), pct) = (fault.delay_ms, fault.delay_percent.unwrap_or(100.0)) {
            if chance(pct) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        // As Envoy's fault filter: an HTTP status wins; a gRPC status alone answers HTTP 200
        // carrying it (`grpc-status` for a gRPC client, which is what it is for).
        let grpc_code = fault
            .abort_grpc_status
            .as_deref()
            .and_then(route::grpc_status_code);
        let abort = match (fault.abort_status, grpc_code) {
            (Some(status), _) => Some((
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                None,
            )),
            (None, Some(code)) => Some((StatusCode::OK, Some(code))),
            (None, None) => None,
        };
        if let Some((status, grpc_status)) = abort {
            if chance(fault.abort_percent.unwrap_or(100.0)) {
                let mut err = ProxyError::new(Flag::FaultInjected, status, "fault injected");
                err.grpc_status = grpc_status;
                return Err(err);
            }
        }
    }
    apply_header_ops(req.headers_mut(), &policies.request_headers);
    rewrite(&mut req, policies.rewrite.as_ref());
    if !policies.mirrors.is_empty() {
        shared.mirrors.copy(snap, &policies.mirrors, port, &mut req);
    }
    // The chosen backendRef's own filters, after the rule's (Gateway API).
    let backend_filters = backend.filters.as_deref();
    if let Some(f) = backend_filters {
        apply_header_ops(req.headers_mut(), &f.request_headers);
        rewrite(&mut req, f.rewrite.as_ref());
    }

    // The budget belongs to the service the client called, whichever backend the split chose.
    let budget = policies
        .retry_budget
        .as_ref()
        .map(|params| svc.retry_budget(&shared.retry_budgets, params));
    let attempt_all = retry_loop(
        shared,
        budget,
        &target,
        target_port,
        backend.subset.as_deref(),
        req,
        meta,
        &policies,
    );
    // The route timeout covers the whole exchange: the head within it (else 504 `UT`), and
    // the body ends with an error when it passes.
    let mut resp = match policies.timeout_ms {
        Some(ms) => {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
            let resp = tokio::time::timeout_at(deadline, attempt_all)
                .await
                .map_err(|_| {
                    ProxyError::new(
                        Flag::UpstreamTimeout,
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("upstream request timeout ({ms} ms)"),
                    )
                })??;
            resp.map(|body| crate::http::deadline::until(body, deadline))
        }
        None => attempt_all.await?,
    };
    apply_header_ops(resp.headers_mut(), &policies.response_headers);
    if let Some(f) = backend_filters {
        apply_header_ops(resp.headers_mut(), &f.response_headers);
    }
    Ok(resp)
}

/// Sends, retrying as the rule allows and, when one applies, as the retry budget allows. The
/// request body streams to the first attempt and is kept for retries up to
/// [`MAX_REPLAY_BYTES`](crate::http::replay::MAX_REPLAY_BYTES); past that, the request is not
/// retried.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
async fn retry_loop(
    shared: &Shared,
    budget: Option<&RetryBudget>,
    target: &Arc<ServiceInfo>,
    port: u16,
    subset: Option<&str>,
    req: Request<Body>,
    meta: &mut RequestMeta,
    policies: &RoutePolicies,
) -> Result<Response<Body>, ProxyError> {
    let Some(retries) = policies.retries.as_ref().filter(|r| r.attempts > 0) else {
        return forward::to_service(shared, target, port, subset, req, meta).await;
    };
    let retry_on: Vec<&str> = if retries.retry_on.is_empty() {
        DEFAULT_RETRY_ON.to_vec()
    } else {
        retries.retry_on.iter().map(String::as_str).collect()
    };
    let per_try = retries.per_try_timeout_ms.map(Duration::from_millis);
    if let Some(b) = budget {
        b.deposit(Instant::now());
    }
    let (parts, body) = req.into_parts();
    let body = ReplayBody::new(body, MAX_REPLAY_BYTES);
    let mut backoff = RETRY_BACKOFF;
    // A retry in flight holds a place under the service's `connectionPool.http.maxRetries`.
    let mut _retry_place = None;
    for attempt in 0..=retries.attempts {
        let mut copy = Request::new(body.handle().into_body());
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.version_mut() = parts.version;
        *copy.headers_mut() = parts.headers.clone();
        let sent = forward::to_service(shared, target, port, subset, copy, meta);
        let result = match per_try {
            Some(t) => tokio::time::timeout(t, sent).await.unwrap_or_else(|_| {
                Err(ProxyError::new(
                    Flag::UpstreamTimeout,
                    StatusCode::GATEWAY_TIMEOUT,
                    "per-try timeout",
                ))
            }),
            None => sent.await,
        };
        let last = attempt == retries.attempts;
        if last || !retryable(&result, &retry_on) {
            return result;
        }
        if !body.can_replay() {
            tracing::debug!(service = %target.fqdn, attempt, "request body too large to send again: not retrying");
            return result;
        }
        if budget.is_some_and(|b| !b.try_withdraw(Instant::now())) {
            tracing::debug!(service = %target.fqdn, attempt, "retry budget spent: not retrying");
            meta.metrics().retry(&target.fqdn_label, true);
            return result;
        }
        let breaker = shared.balancers.get_subset(&target.fqdn, port, subset);
        match breaker.as_deref().and_then(|b| b.breaker()).map(|b| b.retry()) {
            Some(Err(overflow)) => {
                tracing::debug!(service = %target.fqdn, attempt, %overflow, "not retrying");
                return result;
            }
            Some(Ok(place)) => _retry_place = place,
            None => _retry_place = None,
        }
        meta.metrics().retry(&target.fqdn_label, false);
        tracing::debug!(service = %target.fqdn, attempt, "retrying");
        // Jitter keeps retries from many clients from arriving in lockstep.
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
    Err(ProxyError::no_endpoints(&target.fqdn))
}

/// Whether a result meets one of the retry conditions: Envoy's `retry_on` vocabulary, plus
/// status codes and ranges (`429`, `500-504`; Linkerd's response classes and annotations). An
/// error the proxy answers for itself meets a range holding the status it answers with.
fn retryable(result: &Result<Response<Body>, ProxyError>, retry_on: &[&str]) -> bool {
    let has = |c: &str| retry_on.contains(&c);
    let in_range = |code: u16| {
        retry_on.iter().any(|c| {
            c.split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
                .is_some_and(|(a, b)| (a..=b).contains(&code))
        })
    };
    match result {
        Err(e) => match e.flag {
            Flag::UpstreamConnectFailure | Flag::NoHealthyUpstream => {
                has("connect-failure") || has("5xx") || has("gateway-error") || in_range(e.status.as_u16())
            }
            // A reset after the request went out may have run it: retried only when the policy
            // says so (`reset`, `5xx`, a status range); `refused-stream` only when it was one.
            Flag::UpstreamTerminated => {
                (e.not_sent && has("refused-stream"))
                    || has("reset")
                    || has("5xx")
                    || in_range(e.status.as_u16())
            }
            Flag::UpstreamTimeout => has("5xx") || has("gateway-error") || in_range(e.status.as_u16()),
            _ => false,
        },
        Ok(resp) => {
            let code = resp.status().as_u16();
            if in_range(code) {
                return true;
            }
            let grpc = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok());
            (has("5xx") && code >= 500)
                || (has("gateway-error") && matches!(code, 502..=504))
                || (has("retriable-4xx") && code == 409)
                || retry_on.iter().any(|c| c.parse::<u16>().ok() == Some(code))
                || matches!(
                    (grpc, retry_on),
                    (Some("14"), r) if r.contains(&"unavailable")
                )
                || matches!((grpc, retry_on), (Some("1"), r) if r.contains(&"cancelled"))
                || matches!((grpc, retry_on), (Some("4"), r) if r.contains(&"deadline-exceeded"))
                || matches!((grpc, retry_on), (Some("8"), r) if r.contains(&"resource-exhausted"))
                || matches!((grpc, retry_on), (Some("13"), r) if r.contains(&"internal"))
        }
    }
}

/// Weighted choice among backends; weight 0 never chosen. Weights are relative.
fn pick_backend(backends: &[Backend]) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(0..total);
    backends.iter().find(|b| {
        let w = u64::from(b.weight);
        if n < w {
            true
        } else {
            n -= w;
            false
        }
    })
}

fn chance(percent: f64) -> bool {
    percent >= 100.0 || fastrand::f64() * 100.0 < percent
}

fn apply_header_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// Replaces the path (keeping the query) and/or the authority.
fn rewrite(req: &mut Request<Body>, rw: Option<&route::Rewrite>) {
    let Some(rw) = rw else { return };
    if let Some(path) = &rw.path {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(authority) = &rw.authority {
        if let Ok(v) = HeaderValue::from_str(authority) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let mut parts = req.uri().clone().into_parts();
        if parts.authority.is_some() {
            parts.authority = authority.parse().ok();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}

fn redirect(decision: &Decision<'_>, req: &Request<Body>) -> Response<Body> {
    let Some(r) = &decision.redirect else {
        return direct_response(decision);
    };
    let authority = forward::request_authority(req).and_then(|a| parse_authority(a).ok());
    let host = authority
        .as_ref()
        .map_or_else(String::new, |a| a.host.to_string());
    let req_port = authority.as_ref().and_then(|a| a.port).map(|p| p.to_string());
    let scheme = r.scheme.clone().unwrap_or_else(|| "http".to_string());
    let host = r.authority.clone().unwrap_or(host);
    let port = r
        .port
        .map(|p| p.to_string())
        .or(req_port.filter(|_| r.authority.is_none()));
    let path = r.path.clone().unwrap_or_else(|| req.uri().path().to_string());
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push(':');
        location.push_str(&p);
    }
    location.push_str(&path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(crate::http::empty());
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

fn direct_response(decision: &Decision<'_>) -> Response<Body> {
    let (status, body) = decision
        .direct_response
        .as_ref()
        .map_or((500, None), |d| (d.status, d.body.clone()));
    let mut resp = Response::new(full(body.unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(subset: &str, weight: u32) -> Backend {
        Backend {
            service: "s".into(),
            subset: Some(subset.into()),
            port: None,
            weight,
            filters: None,
        }
    }

    #[test]
    fn weighted_pick_follows_weights_and_never_picks_zero() {
        let backends = [b("v1", 80), b("v2", 20), b("v3", 0)];
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            let pick = pick_backend(&backends).expect("a backend");
            let i = backends.iter().position(|x| x == pick).expect("one of them");
            counts[i] += 1;
        }
        assert_eq!(counts[2], 0);
        // 80/20 within 2 points over 10,000 draws (over 5 sigma).
        assert!((7_800..=8_200).contains(&counts[0]), "{counts:?}");
        assert!(pick_backend(&[b("v1", 0)]).is_none());
    }

    #[test]
    fn retry_conditions() {
        let resp = |code: u16| -> Result<Response<Body>, ProxyError> {
            let mut r = Response::new(crate::http::empty());
            *r.status_mut() = StatusCode::from_u16(code).expect("status");
            Ok(r)
        };
        assert!(retryable(&resp(503), DEFAULT_RETRY_ON));
        assert!(!retryable(&resp(500), DEFAULT_RETRY_ON));
        assert!(retryable(&resp(500), &["5xx"]));
        assert!(retryable(&resp(504), &["gateway-error"]));
        assert!(!retryable(&resp(500), &["gateway-error"]));
        assert!(!retryable(&resp(200), &["5xx"]));
        let refused = Err(ProxyError::new(
            Flag::UpstreamConnectFailure,
            StatusCode::SERVICE_UNAVAILABLE,
            "x",
        ));
        assert!(retryable(&refused, DEFAULT_RETRY_ON));
        assert!(!retryable(&refused, &["retriable-4xx"]));
        // Ranges from Linkerd's response classes: the proxy's own 503 counts as a 503.
        assert!(retryable(&resp(429), &["429", "500-599"]));
        assert!(retryable(&resp(502), &["500-504"]));
        assert!(!retryable(&resp(505), &["500-504"]));
        assert!(!retryable(&resp(200), &["100-199"]));
        assert!(retryable(&refused, &["503-503"]));
        assert!(!retryable(&refused, &["500-502"]));
        // A reset after the request went out is retried only when the policy asks for resets;
        // the default (`refused-stream`) retries only a stream the upstream refused.
        let mut reset = ProxyError::new(Flag::UpstreamTerminated, StatusCode::BAD_GATEWAY, "x");
        assert!(!retryable(&Err(reset.clone()), DEFAULT_RETRY_ON));
        assert!(retryable(&Err(reset.clone()), &["reset"]));
        reset.not_sent = true;
        assert!(retryable(&Err(reset), DEFAULT_RETRY_ON));
    }
}
