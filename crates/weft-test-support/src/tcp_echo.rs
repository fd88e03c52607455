//! Raw TCP peers: an echo server, and a server that speaks first.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{copy, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serving::Serving;

/// A TCP server on `127.0.0.1` that echoes every byte back.
///
/// Half-close is respected: when a client shuts its write side, the server finishes echoing what
/// it received and then shuts its own write side, so a proxy's half-close handling is observable.
/// The server stops when dropped or on [`TcpEcho::stop`].
pub struct TcpEcho {
    serving: Serving,
}

/// A TCP server that, like MySQL or SMTP, writes a banner as soon as it accepts a connection and
/// then echoes like [`TcpEcho`]. Protocol detection in a proxy must not wait for the client to
/// speak first, and this peer proves it.
pub struct ServerFirst {
    serving: Serving,
}

// === impl TcpEcho ===

impl TcpEcho {
    /// Starts an echo server on a port the OS picks.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(localhost()).await
    }

    /// Starts an echo server on `addr`.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let serving = Serving::bind(addr, |stream| echo(stream, Bytes::new())).await?;
        Ok(Self { serving })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// How many connections the server has accepted.
    pub fn connections(&self) -> u64 {
        self.serving.accepted()
    }

    /// Closes the listener and every open connection, and returns once they are closed.
    pub async fn stop(self) {
        self.serving.stop().await;
    }
}

// === impl ServerFirst ===

impl ServerFirst {
    /// Starts a server that greets each connection with `banner`, on a port the OS picks.
    pub async fn start(banner: &str) -> anyhow::Result<Self> {
        Self::start_on(banner, localhost()).await
    }

    /// Starts a server that greets each connection with `banner`, on `addr`.
    pub async fn start_on(banner: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let banner = Bytes::copy_from_slice(banner.as_bytes());
        let serving = Serving::bind(addr, move |stream| echo(stream, banner.clone())).await?;
        Ok(Self { serving })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// How many connections the server has accepted.
    pub fn connections(&self) -> u64 {
        self.serving.accepted()
    }

    /// Closes the listener and every open connection, and returns once they are closed.
    pub async fn stop(self) {
        self.serving.stop().await;
    }
}

/// Writes `banner` (if any), echoes until the client's write side ends, then ends ours.
async fn echo(mut stream: TcpStream, banner: Bytes) {
    let (mut rd, mut wr) = stream.split();
    if !banner.is_empty() && wr.write_all(&banner).await.is_err() {
        return;
    }
    // A reset from the client only ends this connection; there is no one to report it to.
    if copy(&mut rd, &mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
