//! Upstream connections: opened with a timeout (and the proxy's socket mark), then pooled.
//!
//! HTTP/2 connections (to peer proxies' mesh ports, and to apps that speak HTTP/2) are one per
//! endpoint and multiplexed. HTTP/1 connections are kept idle per endpoint and reused. A pool
//! entry is established *before* a request is handed to it, so a refused connection can fail
//! over to another endpoint without any request byte having gone upstream.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::http::Body;
use crate::tls::MeshConnector;

/// Why an upstream connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} refused: {source}")]
    Refused { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("handshake with {addr} failed: {source}")]
    Handshake { addr: SocketAddr, source: hyper::Error },
    #[error("mTLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
}

/// A pooled HTTP/2 connection to a peer proxy's mesh port.
#[derive(Clone)]
pub struct MeshH2 {
    pub sender: http2::SendRequest<Body>,
    /// The peer's SPIFFE ID when the connection is mTLS; None when plaintext.
    pub peer_identity: Option<Arc<str>>,
}

/// HTTP/2 connections are pooled per address, expected peer identity and whether they are mTLS:
/// a connection verified for one identity is never reused for an endpoint that must present
/// another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct H2Key {
    addr: SocketAddr,
    identity: Option<String>,
    tls: bool,
}

/// Idle HTTP/1 connections per endpoint, each with the time it went idle.
type IdleH1 = HashMap<SocketAddr, Vec<(Instant, http1::SendRequest<Body>)>>;

/// Connection settings and the pools themselves.
pub struct Pools {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    mark: Option<u32>,
    h1: Mutex<IdleH1>,
    h2: Mutex<HashMap<H2Key, MeshH2>>,
    /// Credentials for mesh hops; None (or an empty cell) keeps them plaintext.
    tls: Option<MeshConnector>,
}

/// An HTTP/1 connection taken from the pool; it returns itself once its response is done.
pub struct H1Conn {
    addr: SocketAddr,
    sender: http1::SendRequest<Body>,
    pools: Arc<Pools>,
}

// === impl Pools ===

impl Pools {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        mark: Option<u32>,
    ) -> Arc<Self> {
        Self::with_tls(connect_timeout, idle_timeout, max_idle, mark, None)
    }

    /// As [`Pools::new`], dialing mTLS to peers' mesh ports whenever `tls` holds credentials.
    pub fn with_tls(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        mark: Option<u32>,
        tls: Option<MeshConnector>,
    ) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            idle_timeout,
            max_idle,
            mark,
            h1: Mutex::default(),
            h2: Mutex::default(),
            tls,
        })
    }

    /// Opens a TCP connection with the connect timeout, `TCP_NODELAY`, and the proxy's mark
    /// (so iptables does not capture the proxy's own traffic again).
    pub async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|source| ConnectError::Refused { addr, source })?;
        if let Some(mark) = self.mark {
            socket2::SockRef::from(&socket)
                .set_mark(mark)
                .map_err(|source| ConnectError::Refused { addr, source })?;
        }
        let stream = tokio::time::timeout(self.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout {
                addr,
                after: self.connect_timeout,
            })?
            .map_err(|source| ConnectError::Refused { addr, source })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A multiplexed plaintext HTTP/2 connection to `addr` (an app that speaks HTTP/2), opened
    /// if there is none.
    pub async fn h2(&self, addr: SocketAddr) -> Result<http2::SendRequest<Body>, ConnectError> {
        let key = H2Key {
            addr,
            identity: None,
            tls: false,
        };
        Ok(self.h2_keyed(key, None).await?.sender)
    }

    /// A multiplexed HTTP/2 connection to a peer proxy's mesh port: mTLS when this proxy has
    /// credentials, the server's SPIFFE ID checked against `identity` (None: any identity the
    /// trust bundle vouches for); plaintext before credentials exist.
    pub async fn h2_mesh(&self, addr: SocketAddr, identity: Option<&str>) -> Result<MeshH2, ConnectError> {
        let tls = self.tls.as_ref().filter(|t| t.ready());
        let key = H2Key {
            addr,
            identity: identity.map(str::to_string),
            tls: tls.is_some(),
        };
        self.h2_keyed(key, tls).await
    }

    async fn h2_keyed(&self, key: H2Key, tls: Option<&MeshConnector>) -> Result<MeshH2, ConnectError> {
        if let Some(conn) = self.lock_h2().get(&key) {
            if !conn.sender.is_closed() {
                return Ok(conn.clone());
            }
        }
        // Two requests racing here may both connect; the later one is kept in the pool and the
        // earlier serves its own request and closes when dropped.
        let addr = key.addr;
        let stream = self.connect_tcp(addr).await?;
        let conn = match tls {
            Some(tls) => {
                let handshake = crate::tls::connect(tls.state(), key.identity.as_deref(), addr, stream);
                let (stream, peer) = tokio::time::timeout(self.connect_timeout, handshake)
                    .await
                    .map_err(|_| ConnectError::Timeout {
                        addr,
                        after: self.connect_timeout,
                    })?
                    .map_err(|source| ConnectError::Tls { addr, source })?;
                MeshH2 {
                    sender: handshake_h2(addr, stream).await?,
                    peer_identity: Some(Arc::from(peer)),
                }
            }
            None => MeshH2 {
                sender: handshake_h2(addr, stream).await?,
                peer_identity: None,
            },
        };
        self.lock_h2().insert(key, conn.clone());
        Ok(conn)
    }

    /// An idle HTTP/1 connection to `addr`, or a new one.
    pub async fn h1(self: &Arc<Self>, addr: SocketAddr) -> Result<H1Conn, ConnectError> {
        let now = Instant::now();
        {
            let mut pools = self.lock_h1();
            if let Some(idle) = pools.get_mut(&addr) {
                // Connections still reading an earlier response stay (they become ready once it
                // ends); closed and long-idle ones go.
                idle.retain(|(since, sender)| {
                    !sender.is_closed() && now.duration_since(*since) < self.idle_timeout
                });
                if let Some(i) = idle.iter().rposition(|(_, sender)| sender.is_ready()) {
                    let (_, sender) = idle.swap_remove(i);
                    return Ok(H1Conn {
                        addr,
                        sender,
                        pools: self.clone(),
                    });
                }
            }
        }
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(H1Conn {
            addr,
            sender,
            pools: self.clone(),
        })
    }

    fn put_h1(&self, addr: SocketAddr, sender: http1::SendRequest<Body>) {
        let mut pools = self.lock_h1();
        let idle = pools.entry(addr).or_default();
        if idle.len() < self.max_idle {
            idle.push((Instant::now(), sender));
        }
    }

    /// Drops pooled state for endpoints no longer in the config.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.lock_h1().retain(|a, _| keep(a));
        self.lock_h2().retain(|k, _| keep(&k.addr));
    }

    fn lock_h1(&self) -> std::sync::MutexGuard<'_, IdleH1> {
        self.h1.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_h2(&self) -> std::sync::MutexGuard<'_, HashMap<H2Key, MeshH2>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The client side of HTTP/2 over `io`, its connection task spawned.
async fn handshake_h2<IO>(addr: SocketAddr, io: IO) -> Result<http2::SendRequest<Body>, ConnectError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let (sender, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(sender)
}

// === impl H1Conn ===

impl H1Conn {
    /// Sends one request; the connection goes back to the pool once its response has been read
    /// to the end (unless it was upgraded or closed).
    pub async fn send(self, req: Request<Body>) -> hyper::Result<Response<Incoming>> {
        let H1Conn {
            addr,
            mut sender,
            pools,
        } = self;
        // A fresh connection becomes ready once its task runs; an idle one already is.
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        // Back in the pool at once (no task per request): it is handed out again only once
        // `is_ready`, i.e. after this response has been read to the end.
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            pools.put_h1(addr, sender);
        }
        Ok(resp)
    }
}
