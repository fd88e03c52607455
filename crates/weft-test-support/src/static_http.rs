//! An HTTP/1.1 server that answers every request with one fixed body (a JWKS, a document), and
//! counts what it served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::serving::Serving;

/// Serves `body` (with `content_type`) at every path; [`StaticHttp::set_body`] changes it.
pub struct StaticHttp {
    serving: Serving,
    requests: Arc<AtomicU64>,
    body: Arc<Mutex<(Bytes, StatusCode)>>,
}

// === impl StaticHttp ===

impl StaticHttp {
    pub async fn start(body: impl Into<Bytes>, content_type: &'static str) -> anyhow::Result<Self> {
        let requests = Arc::new(AtomicU64::new(0));
        let body = Arc::new(Mutex::new((body.into(), StatusCode::OK)));
        let (count, shared) = (requests.clone(), body.clone());
        let serving = Serving::bind(SocketAddr::from(([127, 0, 0, 1], 0)), move |stream| {
            let (count, shared) = (count.clone(), shared.clone());
            async move {
                let service = service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    let (body, status) = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(content_type),
                    );
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await?;
        Ok(Self {
            serving,
            requests,
            body,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// What later requests get.
    pub fn set_body(&self, body: impl Into<Bytes>, status: StatusCode) {
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = (body.into(), status);
    }
}
