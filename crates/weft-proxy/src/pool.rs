//! Upstream connections: opened with a timeout (and the proxy's socket mark), then pooled.
//!
//! HTTP/2 connections (to peer proxies' mesh ports, and to apps that speak HTTP/2) are one per
//! endpoint and multiplexed. HTTP/1 connections are kept idle per endpoint and reused. A pool
//! entry is established *before* a request is handed to it, so a refused connection can fail
//! over to another endpoint without any request byte having gone upstream.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The endpoint already has as many connections as the limit allows (Envoy's circuit
    /// breaker `max_connections`): the request gets 503 with flag `UO`.
    #[error("{addr} has {limit} connections open (the per-endpoint limit)")]
    Overflow { addr: SocketAddr, limit: usize },
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

/// HTTP/1 connections per endpoint: the idle ones, each with the time it went idle, and how
/// many are open in all (idle or busy).
#[derive(Default)]
struct EndpointH1 {
    idle: Vec<(Instant, http1::SendRequest<Body>)>,
    open: Arc<AtomicUsize>,
}

type IdleH1 = HashMap<SocketAddr, EndpointH1>;

/// Counts one open connection until dropped (with the connection's task).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connection settings and the pools themselves.
pub struct Pools {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    mark: Option<u32>,
    /// HTTP/1 connections open at once per endpoint.
    max_per_endpoint: usize,
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
    /// Taken from the pool (not opened for this request): it may have been closed by the
    /// server while idle.
    reused: bool,
}

/// Why a request on a pooled HTTP/1 connection got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection failed after the request may have been written.
    #[error("{0}")]
    Upstream(#[from] hyper::Error),
    /// The pooled connection was closed before the request went out, and a new one could not
    /// be opened: nothing reached the upstream.
    #[error("{0}")]
    Connect(#[from] ConnectError),
}

// === impl Pools ===

impl Pools {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        mark: Option<u32>,
    ) -> Arc<Self> {
        Self::with_tls(connect_timeout, idle_timeout, max_idle, usize::MAX, mark, None)
    }

    /// As [`Pools::new`], dialing mTLS to peers' mesh ports whenever `tls` holds credentials.
    pub fn with_tls(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        max_per_endpoint: usize,
        mark: Option<u32>,
        tls: Option<MeshConnector>,
    ) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            idle_timeout,
            max_idle,
            max_per_endpoint,
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
            if let Some(idle) = pools.get_mut(&addr).map(|e| &mut e.idle) {
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
                        reused: true,
                    });
                }
            }
        }
        self.new_h1(addr).await
    }

    /// A new HTTP/1 connection to `addr`.
    async fn new_h1(self: &Arc<Self>, addr: SocketAddr) -> Result<H1Conn, ConnectError> {
        let open = self.lock_h1().entry(addr).or_default().open.clone();
        if open.fetch_add(1, Ordering::Relaxed) >= self.max_per_endpoint {
            open.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectError::Overflow {
                addr,
                limit: self.max_per_endpoint,
            });
        }
        let guard = OpenGuard(open);
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            let _counted = guard;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(H1Conn {
            addr,
            sender,
            pools: self.clone(),
            reused: false,
        })
    }

    fn put_h1(&self, addr: SocketAddr, sender: http1::SendRequest<Body>) {
        let mut pools = self.lock_h1();
        let idle = &mut pools.entry(addr).or_default().idle;
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
    /// to the end (unless it was upgraded or closed). A pooled connection found closed before
    /// the request was written (the server closed it while idle) costs nothing: the request
    /// goes out at once on a new connection, which is not a retry — nothing reached the app.
    pub async fn send(self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let H1Conn {
            addr,
            mut sender,
            pools,
            reused,
        } = self;
        // A fresh connection becomes ready once its task runs; an idle one already is.
        let ready = sender.ready().await;
        let sent = match ready {
            Ok(()) => sender.try_send_request(req).await,
            Err(_) if reused => return Box::pin(pools.new_h1(addr).await?.send(req)).await,
            Err(e) => return Err(e.into()),
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(mut e) => match (reused, e.take_message()) {
                (true, Some(req)) => {
                    tracing::debug!(%addr, "pooled connection closed before the request went out; sending on a new one");
                    return Box::pin(pools.new_h1(addr).await?.send(req)).await;
                }
                _ => return Err(e.into_error().into()),
            },
        };
        // Back in the pool at once (no task per request): it is handed out again only once
        // `is_ready`, i.e. after this response has been read to the end.
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            pools.put_h1(addr, sender);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that closes its first connection at once (as one that closed an idle
    /// keep-alive connection) and answers `ok` on the next.
    async fn closes_first_then_answers() -> (SocketAddr, tokio::task::JoinHandle<u32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (first, _) = listener.accept().await.expect("accept");
            drop(first);
            let (mut second, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let n = second.read(&mut buf).await.expect("read");
            assert!(buf[..n].starts_with(b"GET /x HTTP/1.1"));
            second
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("write");
            2
        });
        (addr, server)
    }

    #[tokio::test]
    async fn a_pooled_connection_found_closed_sends_the_request_on_a_new_one() {
        let (addr, server) = closes_first_then_answers().await;
        let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(60), 8, None);
        let mut conn = pools.new_h1(addr).await.expect("connect");
        // It sat idle in the pool while the server closed it.
        conn.reused = true;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = Request::get("/x")
            .header("host", "x")
            .body(crate::http::empty())
            .expect("request");
        let resp = conn.send(req).await.expect("sent on a new connection");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            server.await.expect("server"),
            2,
            "the second connection served it"
        );
    }

    #[tokio::test]
    async fn connections_past_the_per_endpoint_limit_overflow() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let pools = Pools::with_tls(Duration::from_secs(1), Duration::from_secs(60), 8, 2, None, None);
        let a = pools.new_h1(addr).await.expect("first");
        let _b = pools.new_h1(addr).await.expect("second");
        assert!(matches!(
            pools.new_h1(addr).await,
            Err(ConnectError::Overflow { limit: 2, .. })
        ));
        // A closed connection frees its place.
        drop(a);
        for _ in 0..50 {
            if pools.new_h1(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a closed connection never freed its place");
    }

    #[tokio::test]
    async fn a_new_connection_that_fails_is_an_error_not_a_second_try() {
        let (addr, server) = closes_first_then_answers().await;
        let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(60), 8, None);
        let conn = pools.new_h1(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = Request::get("/x")
            .header("host", "x")
            .body(crate::http::empty())
            .expect("request");
        assert!(matches!(conn.send(req).await, Err(SendError::Upstream(_))));
        server.abort();
    }
}
