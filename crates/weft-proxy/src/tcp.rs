//! Relaying opaque bytes, with the idle timeout and the `istio_tcp_*` metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::io::{Activity, TrackedIo};
use crate::telemetry::metered::RequestMeta;

/// Copies both ways (half-close respected) until both sides are done or the pair idles out.
pub async fn relay<C, U>(client: C, mut upstream: U, idle: Duration, meta: &RequestMeta, flags: &'static str)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let labels = meta.tcp_labels(flags);
    meta.metrics().tcp_opened(&labels);
    let activity = Activity::new();
    let mut client = TrackedIo::new(client, activity.clone());
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "TCP relay ended with an error");
            }
        }
        _ = activity.idle_for(idle) => tracing::debug!("closing idle TCP relay"),
    }
    // Seen from the client: what it sent is what we received.
    let received = activity.received.load(Ordering::Relaxed);
    let sent = activity.sent.load(Ordering::Relaxed);
    meta.metrics().tcp_closed(&labels, sent, received);
    meta.log_connection(flags, received, sent);
}
