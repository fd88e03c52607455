//! The accept loop shared by every test server, and the handle that stops it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// A running accept loop. Dropping it aborts the loop, and with it (through the `JoinSet` the loop
/// owns) every connection it spawned, so a test that lets a server go out of scope really loses
/// its upstream.
pub(crate) struct Serving {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

// === impl Serving ===

impl Serving {
    /// Binds `addr` and spawns the accept loop on the current tokio runtime; `on_conn` runs once
    /// per accepted connection, in its own task.
    pub(crate) async fn bind<F, Fut>(addr: SocketAddr, on_conn: F) -> anyhow::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding test server on {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, accepted.clone(), stopped, on_conn));
        Ok(Self {
            addr,
            accepted,
            stop: Some(stop),
            task,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting and waits until the listener and every open connection are closed, so
    /// the caller can assert on what a peer sees next (refused connections, reset streams).
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The loop only ends by our signal, or by a panic we have nothing to add to.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    accepted: Arc<AtomicU64>,
    mut stopped: oneshot::Receiver<()>,
    on_conn: F,
) where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            res = listener.accept() => match res {
                Ok((stream, _peer)) => {
                    // Tests read this right after their client connects, so count before serving.
                    accepted.fetch_add(1, Ordering::Relaxed);
                    // Small writes (banners, echoes) should not sit in Nagle's buffer.
                    let _ = stream.set_nodelay(true);
                    conns.spawn(on_conn(stream));
                }
                // Out of file descriptors and the like: pause instead of spinning on the error.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so a long-lived server does not keep their results.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}
