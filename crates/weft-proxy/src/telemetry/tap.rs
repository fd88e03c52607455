//! Live tap: every finished request this proxy sees, streamed to whoever asked on the admin
//! `/tap` endpoint (`weft tap`), as `linkerd viz tap` streams Linkerd's.
//!
//! Tapping never slows traffic:
//! - With nobody tapping, a request pays one relaxed atomic load ([`TapHub::capture`]).
//! - Each tap has a bounded channel: when its reader is slow the event is dropped and counted,
//!   never awaited. Each tap also has a rate limit (`max_rps`); events over it are dropped and
//!   counted too. The counts ride on the next line delivered (`"dropped"`, `"limited"`).
//! - Events carry the request line, status, latency, response flags and both peers' workloads
//!   and verified identities; never headers or bodies.
//!
//! Who may tap is decided by the admin server (loopback only); a workload whose documents opt
//! out of tap is refused there too.

use std::future::Future as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::metered::RequestMeta;
use super::metrics::Label;

/// Events a tap buffers for a slow reader before it drops them.
pub const TAP_BUFFER: usize = 256;
/// The rate limit when the tap names none, and the highest one allowed.
pub const DEFAULT_MAX_RPS: u32 = 100;
pub const MAX_RPS_CEILING: u32 = 10_000;

/// The taps of one proxy.
#[derive(Debug, Default)]
pub struct TapHub {
    /// Open taps; 0 means no request is captured at all.
    active: AtomicUsize,
    next_id: AtomicU64,
    taps: Mutex<Vec<Arc<Tap>>>,
}

/// Which requests a tap wants; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapFilter {
    /// The method, exactly (`GET`).
    pub method: Option<String>,
    /// A prefix of the (normalized) path.
    pub path: Option<String>,
    /// The source workload (`productpage-v1`).
    pub from: Option<String>,
    /// The destination workload or service name (`reviews-v1`, `reviews`).
    pub to: Option<String>,
}

/// One open tap.
#[derive(Debug)]
struct Tap {
    id: u64,
    filter: TapFilter,
    max_rps: u32,
    tx: mpsc::Sender<Bytes>,
    /// The second (since `born`) being counted, and events sent in it.
    second: AtomicU64,
    sent_this_second: AtomicU64,
    born: Instant,
    /// Dropped because the reader was slow / over the rate limit, since the last line sent.
    dropped: AtomicU64,
    limited: AtomicU64,
}

/// What a request's tap event needs from its head, taken at arrival (only while tapping).
#[derive(Debug)]
pub struct TapHead {
    hub: Arc<TapHub>,
    method: http::Method,
    authority: String,
    path: String,
}

/// The response body of `/tap`: the tap's lines until the reader goes (then the tap closes) or
/// the proxy drains (then the stream ends, so a tap never holds a shutdown up).
pub struct TapBody {
    rx: mpsc::Receiver<Bytes>,
    hub: Arc<TapHub>,
    id: u64,
    stop: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

// === impl TapHub ===

impl TapHub {
    /// The request's head, if anyone is tapping; None after one atomic load otherwise.
    pub fn capture<B>(self: &Arc<Self>, req: &http::Request<B>) -> Option<Box<TapHead>> {
        if self.active.load(Relaxed) == 0 {
            return None;
        }
        let authority = crate::forward::request_authority(req).unwrap_or("").to_string();
        Some(Box::new(TapHead {
            hub: Arc::clone(self),
            method: req.method().clone(),
            authority,
            path: req.uri().path().to_string(),
        }))
    }

    /// Opens a tap; its events stream through the returned body, which ends when `stop` is
    /// cancelled. `hello` is its first line.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: TapFilter,
        max_rps: u32,
        hello: Bytes,
        stop: tokio_util::sync::CancellationToken,
    ) -> TapBody {
        let (tx, rx) = mpsc::channel(TAP_BUFFER);
        let _ = tx.try_send(hello);
        let id = self.next_id.fetch_add(1, Relaxed);
        let tap = Arc::new(Tap {
            id,
            filter,
            max_rps: max_rps.clamp(1, MAX_RPS_CEILING),
            tx,
            second: AtomicU64::new(0),
            sent_this_second: AtomicU64::new(0),
            born: Instant::now(),
            dropped: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        });
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.push(tap);
        self.active.store(taps.len(), Relaxed);
        TapBody {
            rx,
            hub: Arc::clone(self),
            id,
            stop: Box::pin(stop.cancelled_owned()),
        }
    }

    /// Open taps now.
    pub fn open(&self) -> usize {
        self.active.load(Relaxed)
    }

    fn unsubscribe(&self, id: u64) {
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.retain(|t| t.id != id);
        self.active.store(taps.len(), Relaxed);
    }

    fn taps(&self) -> Vec<Arc<Tap>> {
        self.taps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

// === impl TapHead ===

impl TapHead {
    /// Offers the finished request to every tap whose filter it passes.
    pub fn emit(&self, meta: &RequestMeta, status: u16, grpc_status: &Label, flags: &str, ms: f64) {
        let mut line: Option<serde_json::Value> = None;
        for tap in self.hub.taps() {
            if !tap.wants(self, meta) {
                continue;
            }
            if !tap.admit() {
                tap.limited.fetch_add(1, Relaxed);
                continue;
            }
            let mut event = line
                .get_or_insert_with(|| self.event(meta, status, grpc_status, flags, ms))
                .clone();
            let (dropped, limited) = (tap.dropped.swap(0, Relaxed), tap.limited.swap(0, Relaxed));
            event["dropped"] = dropped.into();
            event["limited"] = limited.into();
            let mut bytes = event.to_string().into_bytes();
            bytes.push(b'\n');
            if tap.tx.try_send(Bytes::from(bytes)).is_err() {
                // Slow reader (or gone): this one is lost, and so are the counts it carried.
                tap.dropped.fetch_add(1 + dropped, Relaxed);
                tap.limited.fetch_add(limited, Relaxed);
            }
        }
    }

    fn event(
        &self,
        meta: &RequestMeta,
        status: u16,
        grpc_status: &Label,
        flags: &str,
        ms: f64,
    ) -> serde_json::Value {
        fn identity(l: &Label) -> Option<&str> {
            Some(l.0.as_ref()).filter(|p| *p != "unknown")
        }
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        serde_json::json!({
            "timestampMs": unix_ms,
            "direction": if meta.reporter == "destination" { "inbound" } else { "outbound" },
            "method": self.method.as_str(),
            "authority": self.authority,
            "path": self.path,
            "status": status,
            "grpcStatus": Some(grpc_status.0.as_ref()).filter(|g| *g != "-"),
            "latencyMs": ms,
            "flags": flags,
            "mtls": meta.connection_security_policy == crate::tls::MUTUAL_TLS,
            "source": {
                "workload": meta.source.workload.0.as_ref(),
                "namespace": meta.source.namespace.0.as_ref(),
                "identity": identity(&meta.source.principal),
            },
            "destination": {
                "workload": meta.destination.workload.0.as_ref(),
                "namespace": meta.destination.namespace.0.as_ref(),
                "identity": identity(&meta.destination.principal),
                "service": meta.service.0.as_ref(),
            },
        })
    }
}

// === impl Tap ===

impl Tap {
    fn wants(&self, head: &TapHead, meta: &RequestMeta) -> bool {
        let f = &self.filter;
        f.method
            .as_deref()
            .is_none_or(|m| head.method.as_str().eq_ignore_ascii_case(m))
            && f.path.as_deref().is_none_or(|p| head.path.starts_with(p))
            && f.from.as_deref().is_none_or(|w| *meta.source.workload.0 == *w)
            && f.to.as_deref().is_none_or(|w| {
                *meta.destination.workload.0 == *w || *meta.service_name.0 == *w || *meta.service.0 == *w
            })
    }

    /// Under the rate limit: at most `max_rps` events in each whole second since the tap opened.
    fn admit(&self) -> bool {
        let now = Instant::now().saturating_duration_since(self.born).as_secs();
        if self.second.swap(now, Relaxed) != now {
            self.sent_this_second.store(0, Relaxed);
        }
        self.sent_this_second.fetch_add(1, Relaxed) < u64::from(self.max_rps)
    }
}

// === impl TapBody ===

impl http_body::Body for TapBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests;
