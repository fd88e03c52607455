//! `GET /tap?to=W&from=W&path=P&method=M&max_rps=N`: a live stream of the requests this proxy
//! finishes, one JSON object per line (the first line says the tap is open). See
//! [`crate::telemetry::tap`] for what an event holds and how a slow reader is handled.
//!
//! Tapping shows who calls whom and on which paths, so it is served only to a caller on the
//! same host (a loopback peer); a remote caller gets 403, and so does everyone when the
//! workload opted out (`config.linkerd.io/disable-tap: "true"` on its Workload).

use std::net::SocketAddr;

use http::{header, Request, Response, StatusCode};

use super::text;
use crate::config::Shared;
use crate::http::Body;
use crate::telemetry::tap::{TapFilter, DEFAULT_MAX_RPS, MAX_RPS_CEILING};

/// `drain` ends the stream when the proxy shuts down.
pub fn respond<B>(
    shared: &Shared,
    peer: Option<SocketAddr>,
    req: &Request<B>,
    drain: &tokio_util::sync::CancellationToken,
) -> Response<Body> {
    if !peer.is_some_and(|p| p.ip().is_loopback()) {
        return text(
            StatusCode::FORBIDDEN,
            "tap is served to loopback callers only\n".into(),
        );
    }
    let mut filter = TapFilter::default();
    let mut max_rps = DEFAULT_MAX_RPS;
    for (key, value) in query_pairs(req.uri().query().unwrap_or("")) {
        let value = Some(value).filter(|v| !v.is_empty());
        match key.as_str() {
            "to" => filter.to = value,
            "from" => filter.from = value,
            "path" => filter.path = value,
            "method" => filter.method = value,
            "max_rps" => match value.as_deref().map(str::parse::<u32>) {
                Some(Ok(n)) if (1..=MAX_RPS_CEILING).contains(&n) => max_rps = n,
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("max_rps: want a whole number from 1 to {MAX_RPS_CEILING}\n"),
                    )
                }
            },
            other => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("unknown tap parameter {other:?}: to, from, path, method, max_rps\n"),
                )
            }
        }
    }
    let snapshot = shared.snapshot.load();
    let w = &snapshot.config.workload;
    if w.tap_disabled {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "workload {}/{} opted out of tap (annotation config.linkerd.io/disable-tap)\n",
                w.namespace, w.name
            ),
        );
    }
    let hello = serde_json::json!({
        "tap": "open",
        "workload": w.name,
        "namespace": w.namespace,
        "maxRps": max_rps,
    });
    let body = shared
        .tap
        .subscribe(filter, max_rps, format!("{hello}\n").into(), drain.clone());
    let mut resp = Response::new(crate::http::boxed(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// `a=1&b=x%2Fy` as decoded pairs (`+` is a space, as in a form).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_pairs("path=%2Freviews%2F1&method=GET&from=a+b&x"),
            [
                ("path".to_string(), "/reviews/1".to_string()),
                ("method".into(), "GET".into()),
                ("from".into(), "a b".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%41"), "A");
    }
}
