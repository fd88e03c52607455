//! Drives one accepted HTTP connection with the listener limits, the idle watchdog and drain.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::error::ProxyError;
use super::smuggling::{FramingGuard, CONFLICT_HEADER};
use super::Body;
use crate::io::{Activity, TrackedIo};
use weft_api::proxy_config::Limits;

/// Which HTTP version to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// hyper refuses buffer limits below this.
const HYPER_MIN_BUF: usize = 8192;

/// Serves `io` until the client is done, the connection idles out, or drain ends it gracefully.
pub async fn serve<I, F, Fut>(io: I, version: Version, limits: &Limits, drain: CancellationToken, handler: F)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Activity::new();
    let io = TrackedIo::new(io, activity.clone());
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let svc = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    match version {
        Version::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
                .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF))
                .keep_alive(true);
            let io = TokioIo::new(FramingGuard::new(io, limits.max_header_bytes.max(HYPER_MIN_BUF)));
            let conn = builder.serve_connection(io, svc).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => log_end(res.err()),
                _ = activity.idle_for(idle) => tracing::debug!("closing idle HTTP/1 connection"),
                _ = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await.err());
                }
            }
        }
        Version::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_header_list_size(limits.max_header_bytes as u32)
                .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
                .max_local_error_reset_streams(Some(1024));
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => log_end(res.err()),
                _ = activity.idle_for(idle) => tracing::debug!("closing idle HTTP/2 connection"),
                _ = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await.err());
                }
            }
        }
    }
}

fn log_end(err: Option<hyper::Error>) {
    let Some(e) = err else { return };
    if e.is_parse() || e.is_parse_too_large() || e.is_timeout() {
        // Malformed or too slow requests end here after hyper answered them (400/431/414, or
        // the header-read timeout): worth a log line.
        tracing::info!(error = %e, "HTTP connection closed: bad or slow request");
    } else {
        // Clients closing mid-connection is ordinary (load generators, browsers).
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// Checks hyper does not do for us: an over-long request target, and request smuggling. hyper
/// resolves `Content-Length` + `Transfer-Encoding` by RFC 9112 (Transfer-Encoding wins), which
/// would hide the conflict; `smuggling::FramingGuard` marks such a head before hyper sees it,
/// and here it is refused with 400 (the caller closes the connection).
pub fn check_request<B>(req: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
    let h = req.headers();
    if h.contains_key(CONFLICT_HEADER)
        || (h.contains_key(http::header::TRANSFER_ENCODING) && h.contains_key(http::header::CONTENT_LENGTH))
    {
        return Err(ProxyError::bad_request(
            StatusCode::BAD_REQUEST,
            "both Content-Length and Transfer-Encoding (request smuggling)",
        ));
    }
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(ProxyError::bad_request(
            StatusCode::URI_TOO_LONG,
            "request target too long",
        ));
    }
    Ok(())
}

/// Marks a response so hyper closes the connection after sending it.
pub fn close_after(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    resp
}
