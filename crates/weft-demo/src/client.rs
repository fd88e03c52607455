//! The one HTTP client the apps and the load generator share: HTTP/1.1, keep-alive pooled, every
//! call bounded by a timeout and a body size.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest upstream body read.
const MAX_BODY: usize = 1 << 20;

/// Why an upstream call gave no usable answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The `*_URL` for this service is not set.
    NotConfigured(&'static str),
    /// The URL does not parse.
    BadUrl(String),
    /// No answer within the timeout.
    Timeout(Duration),
    /// Connect or protocol failure.
    Transport(String),
    /// An answer that is not 2xx (the status and the start of the body).
    Status(StatusCode, String),
    /// A 2xx whose body is not the expected JSON.
    BadBody(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotConfigured(var) => write!(f, "{var} is not set"),
            CallError::BadUrl(e) => write!(f, "bad URL: {e}"),
            CallError::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
            CallError::Transport(e) => write!(f, "{e}"),
            CallError::Status(s, body) if body.is_empty() => write!(f, "{s}"),
            CallError::Status(s, body) => write!(f, "{s} ({body})"),
            CallError::BadBody(e) => write!(f, "unreadable answer: {e}"),
        }
    }
}

/// A response read whole.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>,
}

impl Client {
    pub(crate) fn new(max_idle_per_host: usize) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_idle_per_host)
            .build(connector);
        Client { inner }
    }

    /// `GET uri` with `headers`; the whole exchange (connect, head, body) within `timeout`.
    pub(crate) async fn get(
        &self,
        uri: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let uri: Uri = uri
            .parse()
            .map_err(|e: http::uri::InvalidUri| CallError::BadUrl(format!("{uri}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(CallError::BadUrl(format!("{uri}: only http://host:port URLs")));
        }
        let mut req = Request::get(uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| CallError::BadUrl(e.to_string()))?;
        for (name, value) in headers {
            req.headers_mut().append(name, value.clone());
        }
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| CallError::Transport(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("reading the body: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(res) => res,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// `GET base + path`, expecting a 2xx JSON answer.
    pub(crate) async fn get_json(
        &self,
        base: Option<&str>,
        var: &'static str,
        path: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<(serde_json::Value, HeaderMap), CallError> {
        let base = base.ok_or(CallError::NotConfigured(var))?;
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let answer = self.get(&url, headers, timeout).await?;
        if !answer.status.is_success() {
            let text = String::from_utf8_lossy(&answer.body);
            let text: String = text.trim().chars().take(120).collect();
            return Err(CallError::Status(answer.status, text));
        }
        let json = serde_json::from_slice(&answer.body).map_err(|e| CallError::BadBody(e.to_string()))?;
        Ok((json, answer.headers))
    }
}

/// An error and its sources on one line (hyper's top-level message alone is vague).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        if depth >= 8 {
            break;
        }
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
        depth += 1;
    }
    out
}
