//! The accept loop every listener shares: the connection limit, drain, and task tracking.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::telemetry::metrics::Metrics;

/// What every accept loop needs.
#[derive(Clone)]
pub struct Listening {
    pub drain: CancellationToken,
    pub tracker: TaskTracker,
    pub metrics: Arc<Metrics>,
    pub max_connections: usize,
}

/// Accepts until drain starts; each connection runs `handle` as a tracked task so drain can
/// wait for it. Connections past the limit are closed at once and counted.
pub async fn accept_loop<F, Fut>(listener: TcpListener, name: &'static str, l: Listening, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(l.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = l.drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    l.metrics.connection_rejected(name, "max_connections");
                    tracing::warn!(listener = name, %peer, "connection limit reached, closing new connection");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = handle(stream, peer);
                l.tracker.spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(listener = name, "stopped accepting");
}
