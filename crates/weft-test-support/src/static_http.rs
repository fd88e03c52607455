//! An HTTP/1.1 server that answers every request with one fixed body (a JWKS, a document), and
//! records what it was sent (method, path, `Host`, body up to 64 KiB).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::serving::Serving;

/// Bodies recorded up to this size.
const MAX_RECORDED: usize = 64 * 1024;

/// Serves `body` (with `content_type`) at every path; [`StaticHttp::set_body`] changes it.
pub struct StaticHttp {
    serving: Serving,
    state: Arc<State>,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub host: String,
    /// None when the body ended in an error or was larger than 64 KiB.
    pub body: Option<Bytes>,
}

struct State {
    requests: AtomicU64,
    answer: Mutex<(Bytes, StatusCode)>,
    seen: Mutex<Vec<Seen>>,
    content_type: &'static str,
}

// === impl StaticHttp ===

impl StaticHttp {
    pub async fn start(body: impl Into<Bytes>, content_type: &'static str) -> anyhow::Result<Self> {
        let state = Arc::new(State {
            requests: AtomicU64::new(0),
            answer: Mutex::new((body.into(), StatusCode::OK)),
            seen: Mutex::new(Vec::new()),
            content_type,
        });
        let shared = state.clone();
        let serving = Serving::bind(SocketAddr::from(([127, 0, 0, 1], 0)), move |stream| {
            let state = shared.clone();
            async move {
                let service = service_fn(move |req| answer(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await?;
        Ok(Self { serving, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Requests answered so far (each counted once its body was read).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The requests received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What later requests get.
    pub fn set_body(&self, body: impl Into<Bytes>, status: StatusCode) {
        *self.state.answer.lock().unwrap_or_else(|p| p.into_inner()) = (body.into(), status);
    }
}

async fn answer(
    state: Arc<State>,
    req: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let body = Limited::new(req.into_body(), MAX_RECORDED)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes());
    state.seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        method,
        path,
        host,
        body,
    });
    state.requests.fetch_add(1, Ordering::Relaxed);
    let (body, status) = state.answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(state.content_type),
    );
    Ok(resp)
}
