//! Mirroring (Istio `mirror`/`mirrors` with `mirrorPercentage`, Gateway API `RequestMirror`):
//! fire-and-forget copies of a routed request, as Envoy's request shadowing does.
//!
//! - The copy's authority gets `-shadow` on its host (`reviews:9080` -> `reviews-shadow:9080`),
//!   so the mirror's app can tell a copy from real traffic; its response is discarded.
//! - The primary request is never delayed or changed by a copy: the copy's body is a tee of
//!   the primary's, fed without waiting; a copy that falls behind by more than
//!   [`BODY_CHUNKS`] chunks is cut off (its body ends in an error, so the mirror never sees a
//!   truncated body as whole).
//! - Bounded: at most [`MAX_QUEUED`] copies wait and [`MAX_IN_FLIGHT`] are sent at once per
//!   proxy; past that a copy is dropped. Each copy has [`COPY_DEADLINE`] to finish.
//!
//! The copies are sent by one worker task ([`run`]) that holds the proxy's shared state, so the
//! request path only hands a copy over (`try_send`) and returns.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, Semaphore};
use weft_api::canonical::parse_authority;
use weft_api::route::Mirror;

use super::{boxed, Body, BoxError};
use crate::config::{ServiceInfo, Shared, Snapshot};
use crate::telemetry::metrics::Peer;

/// Copies waiting for the worker.
pub const MAX_QUEUED: usize = 256;
/// Copies being sent at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Body chunks a copy may lag behind the primary before it is cut off.
pub const BODY_CHUNKS: usize = 16;
/// Time a copy has to be sent and answered.
pub const COPY_DEADLINE: Duration = Duration::from_secs(30);

/// The request path's end of the copy queue.
pub struct Mirrors {
    tx: mpsc::Sender<Copy>,
}

/// The worker's end.
pub struct MirrorQueue {
    rx: mpsc::Receiver<Copy>,
}

/// One copy to send.
struct Copy {
    service: Arc<ServiceInfo>,
    port: u16,
    subset: Option<String>,
    req: Request<Body>,
}

/// Both ends of a new copy queue.
pub fn queue() -> (Mirrors, MirrorQueue) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED);
    (Mirrors { tx }, MirrorQueue { rx })
}

// === impl Mirrors ===

impl Mirrors {
    /// Hands a copy of `req` to each mirror its percentage picks (after the rule's header
    /// changes and rewrite, as Envoy shadows the request it sends). `req`'s body becomes a tee
    /// when a copy needs it.
    pub fn copy(&self, snap: &Snapshot, mirrors: &[Mirror], port: u16, req: &mut Request<Body>) {
        let mut tees = Vec::new();
        for m in mirrors {
            if !(m.percent >= 100.0 || fastrand::f64() * 100.0 < m.percent) {
                continue;
            }
            let Some(service) = snap.service_by_host(&m.service).cloned() else {
                tracing::debug!(mirror = %m.service, "mirror is no service of this proxy; no copy");
                continue;
            };
            let Ok(permit) = self.tx.try_reserve() else {
                tracing::debug!(mirror = %m.service, "mirror queue full; copy dropped");
                continue;
            };
            let body = if req.body().is_end_stream() {
                super::empty()
            } else {
                let (tx, rx) = mpsc::channel(BODY_CHUNKS);
                tees.push(tx);
                boxed(CopyBody { rx })
            };
            let mut copy = Request::new(body);
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.version_mut() = req.version();
            *copy.headers_mut() = req.headers().clone();
            shadow_authority(&mut copy);
            permit.send(Copy {
                service,
                port,
                subset: m.subset.clone(),
                req: copy,
            });
        }
        if !tees.is_empty() {
            let body = std::mem::replace(req.body_mut(), super::empty());
            *req.body_mut() = boxed(TeeBody {
                inner: body,
                copies: tees,
            });
        }
    }
}

/// `host[:port]` -> `host-shadow[:port]`, in the URI and the `Host` header alike.
fn shadow_authority(req: &mut Request<Body>) {
    let current = req.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let Some(current) = current else { return };
    let shadow = match parse_authority(&current) {
        Ok(a) => match a.port {
            Some(p) => format!("{}-shadow:{p}", a.host),
            None => format!("{}-shadow", a.host),
        },
        Err(_) => return,
    };
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        if let Ok(a) = shadow.parse() {
            parts.authority = Some(a);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}

/// Sends the copies handed over, at most [`MAX_IN_FLIGHT`] at once; responses are discarded.
pub async fn run(shared: Arc<Shared>, mut queue: MirrorQueue) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(copy) = queue.rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let local = shared.snapshot.load().local.clone();
            // Not metered: the primary request is the one the caller made (Envoy's standard
            // metrics count the downstream request, not its shadow).
            let mut meta = crate::telemetry::metered::RequestMeta::new(
                shared.metrics.clone(),
                "source",
                local,
                Peer::unknown(),
                false,
            );
            let service = copy.service.fqdn.clone();
            let send = crate::forward::to_service(
                &shared,
                &copy.service,
                copy.port,
                copy.subset.as_deref(),
                copy.req,
                &mut meta,
            );
            let outcome = tokio::time::timeout(COPY_DEADLINE, async {
                let resp = send.await?;
                let status = resp.status();
                // Read to the end so the connection can carry the next request.
                let _ = resp.into_body().collect().await;
                Ok::<_, crate::http::error::ProxyError>(status)
            })
            .await;
            match outcome {
                Ok(Ok(status)) => tracing::debug!(mirror = %service, %status, "mirror copy answered"),
                Ok(Err(e)) => tracing::debug!(mirror = %service, error = %e, "mirror copy failed"),
                Err(_) => tracing::debug!(mirror = %service, "mirror copy timed out"),
            }
        });
    }
}

/// The primary's body, copying each frame to the mirrors' bodies without waiting for them.
struct TeeBody {
    inner: Body,
    copies: Vec<mpsc::Sender<Result<Frame<Bytes>, BoxError>>>,
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                // Data is reference-counted: a copy costs no bytes.
                let copy = |frame: &Frame<Bytes>| {
                    if let Some(data) = frame.data_ref() {
                        Some(Frame::data(data.clone()))
                    } else {
                        frame.trailers_ref().map(|t| Frame::trailers(t.clone()))
                    }
                };
                this.copies
                    .retain(|tx| copy(frame).is_none_or(|c| feed(tx, Ok(c))));
            }
            Poll::Ready(Some(Err(_))) => {
                for tx in this.copies.drain(..) {
                    let _ = tx.try_send(Err("the primary request's body failed".into()));
                }
            }
            // The end: dropping the senders ends the copies' bodies cleanly.
            Poll::Ready(None) => this.copies.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives a frame to one copy; false when that copy is done for (gone, or cut off because it
/// fell behind: its last slot then carries the error that ends it).
fn feed(tx: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>, frame: Result<Frame<Bytes>, BoxError>) -> bool {
    if tx.capacity() <= 1 {
        let _ = tx.try_send(Err("the mirror fell behind the primary request".into()));
        return false;
    }
    tx.try_send(frame).is_ok()
}

/// A copy's body: the frames the tee gave it.
struct CopyBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl HttpBody for CopyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // Dropped before its end (the primary failed or was cancelled): the copies end in an
        // error rather than looking complete.
        for tx in self.copies.drain(..) {
            let _ = tx.try_send(Err("the primary request ended before its body did".into()));
        }
    }
}
