//! The control plane's admin endpoint: `/status` (what `weft status` prints: every proxy's
//! sync state, the findings of the documents and the files whose new version is refused),
//! `/metrics` (Prometheus text) and `/ready`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::ControlSource;
use crate::push::PushServer;

pub mod proxy_status;

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    source: Arc<ControlSource>,
    push: PushServer,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (source, push) = (source.clone(), push.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&source, &push, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(source: &ControlSource, push: &PushServer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/ready" => (StatusCode::OK, "ready\n".to_string()),
        "/status" => (StatusCode::OK, status_json(source, push).to_string()),
        "/proxy-status" => (
            StatusCode::OK,
            proxy_status::proxy_status_json(&push.status(), std::time::SystemTime::now()).to_string(),
        ),
        "/metrics" => (StatusCode::OK, metrics_text(source, push)),
        "/version" => (
            StatusCode::OK,
            serde_json::json!({
                "version": weft_api::version::VERSION,
                "commit": weft_api::version::commit(),
            })
            .to_string(),
        ),
        "/rotate-root" if req.method() == http::Method::POST => {
            // The new root signs once every proxy had time to renew (one certificate lifetime)
            // and the old one stays trusted one lifetime more.
            let (ca, ttl) = source.ca();
            match ca.rotate_root(ttl, ttl) {
                Ok(_) => (
                    StatusCode::OK,
                    serde_json::json!({ "rotation": "started", "activateInSeconds": ttl.as_secs(), "retireOldRootInSeconds": 2 * ttl.as_secs() }).to_string(),
                ),
                Err(e) => (StatusCode::CONFLICT, format!("{e}\n")),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "control-plane admin: /status /proxy-status /metrics /version /ready POST /rotate-root\n"
                .to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// The `/status` document.
pub fn status_json(source: &ControlSource, push: &PushServer) -> serde_json::Value {
    let proxies: Vec<serde_json::Value> = push
        .status()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "instance": p.instance_id,
                "workload": p.workload,
                "namespace": p.namespace,
                "proxyVersion": p.proxy_version,
                "sentVersion": p.sent_version,
                "ackedVersion": p.acked_version,
                "nack": p.nack,
                "inSync": p.in_sync,
                "connected": p.connected,
                // What the last push carried (the resources it names only for a small delta),
                // and totals since the control plane started.
                "lastPush": p.last_push.as_ref().map(|l| serde_json::json!({
                    "fullState": l.full_state,
                    "resources": l.sent,
                    "removed": l.removed,
                    "bodyBytes": l.body_bytes,
                    "names": l.resources,
                })),
                "pushes": p.pushes,
                "resourcesSent": p.resources_sent,
            })
        })
        .collect();
    let unix = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (ca, _) = source.ca();
    let connected: std::collections::HashMap<String, bool> = push
        .status()
        .into_iter()
        .map(|p| (p.instance_id, p.connected))
        .collect();
    let identities: Vec<serde_json::Value> = ca
        .issued()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "spiffeId": r.spiffe_id,
                "instance": r.instance,
                // Whether that instance's proxy is connected for discovery now (null: unknown).
                "connected": connected.get(&r.instance),
                "notBefore": unix(r.not_before),
                "notAfter": unix(r.not_after),
                "issued": r.count,
            })
        })
        .collect();
    let roots: Vec<serde_json::Value> = ca
        .trust_bundle()
        .iter()
        .filter_map(|c| crate::check::describe(c).ok())
        .map(|c| serde_json::json!({ "subject": c.subject, "notBefore": c.not_before, "notAfter": c.not_after }))
        .collect();
    let (refused, _) = source.refused();
    let refused: Vec<serde_json::Value> = refused
        .iter()
        .map(|r| {
            serde_json::json!({
                "file": r.file,
                "servingSince": weft_api::human::time(r.serving_since),
                "refusedAt": weft_api::human::time(r.refused_at),
                "errors": r.errors,
            })
        })
        .collect();
    serde_json::json!({
        "proxies": proxies,
        "findings": source.findings(),
        // Files whose new version is refused: their last good version serves.
        "refused": refused,
        "identities": identities,
        "trustBundle": roots,
    })
}

/// The `/metrics` text: the state of the configuration (what a alert watches for a refused
/// edit) and of the connected proxies.
pub fn metrics_text(source: &ControlSource, push: &PushServer) -> String {
    use std::fmt::Write as _;
    let (refused, refusals_total) = source.refused();
    let errors = source
        .findings()
        .iter()
        .filter(|f| f.severity == weft_api::finding::Severity::Error)
        .count();
    let proxies = push.status();
    let connected = proxies.iter().filter(|p| p.connected).count();
    let in_sync = proxies.iter().filter(|p| p.connected && p.in_sync).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP weft_control_config_refused A file whose new version is refused (1): its last good version serves.\n# TYPE weft_control_config_refused gauge"
    );
    for r in &refused {
        let file = r.file.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "weft_control_config_refused{{file=\"{file}\"}} 1");
    }
    let _ = writeln!(
        out,
        "# HELP weft_control_config_refused_files Files whose new version is refused.\n# TYPE weft_control_config_refused_files gauge\nweft_control_config_refused_files {}",
        refused.len()
    );
    let _ = writeln!(
        out,
        "# HELP weft_control_config_refusals_total New file versions refused since the start.\n# TYPE weft_control_config_refusals_total counter\nweft_control_config_refusals_total {refusals_total}"
    );
    let _ = writeln!(
        out,
        "# HELP weft_control_config_errors Errors in the documents as served (left out, or refused).\n# TYPE weft_control_config_errors gauge\nweft_control_config_errors {errors}"
    );
    let _ = writeln!(
        out,
        "# HELP weft_control_proxies_connected Proxies connected for discovery.\n# TYPE weft_control_proxies_connected gauge\nweft_control_proxies_connected {connected}"
    );
    let _ = writeln!(
        out,
        "# HELP weft_control_proxies_in_sync Connected proxies that acknowledged the latest config.\n# TYPE weft_control_proxies_in_sync gauge\nweft_control_proxies_in_sync {in_sync}"
    );
    out
}
