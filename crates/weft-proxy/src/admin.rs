//! The admin server: `/live`, `/ready`, `/metrics` (Prometheus text), `/config_dump`,
//! `/proxy_config` (the compiled config by kind, with live endpoint state: [`config_view`]),
//! `/tap` (a live stream of requests: [`tap`]).

use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::Shared;
use crate::http::server::{serve, Version};
use crate::http::{full, Body};

pub mod config_view;
pub mod tap;

/// Serves one admin connection.
pub async fn handle(
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    stream: TcpStream,
    drain: CancellationToken,
) {
    let limits = shared.snapshot.load().config.limits.clone();
    let peer = stream.peer_addr().ok();
    let tap_drain = drain.clone();
    let handler = move |req: Request<Incoming>| {
        let shared = shared.clone();
        let registry = registry.clone();
        let drain = tap_drain.clone();
        async move {
            if req.uri().path() == "/tap" {
                return tap::respond(&shared, peer, &req, &drain);
            }
            respond(&shared, &registry, &req)
        }
    };
    serve(stream, Version::Http1, &limits, drain, handler).await;
}

fn respond(shared: &Shared, registry: &Registry, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" if shared.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, registry) {
                Ok(()) => with_type(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics: {e}\n"),
                ),
            }
        }
        "/config_dump" => match serde_json::to_string_pretty(&shared.snapshot.load().config) {
            Ok(json) => with_type(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding config: {e}\n"),
            ),
        },
        "/proxy_config" => match serde_json::to_string_pretty(&config_view::proxy_config_json(
            shared,
            std::time::SystemTime::now(),
        )) {
            Ok(json) => with_type(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding config: {e}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /live /ready /metrics /config_dump /proxy_config /tap\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "text/plain", body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
