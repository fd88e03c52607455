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
    /// The service's endpoints already have as many connections as its `connectionPool`
    /// allows: 503 `UO` too.
    #[error("connectionPool maxConnections ({limit}) reached")]
    ServiceOverflow { limit: usize },
}

/// What a service's `connectionPool` asks of the connections opened for it. The default asks
/// nothing beyond the pools' own settings.
#[derive(Debug, Clone, Default)]
pub struct ConnPolicy {
    /// Time allowed to connect, instead of the pools' default.
    pub connect_timeout: Option<Duration>,
    /// HTTP/1 connections open at once to the service's endpoints: the service's long-lived
    /// counter and its limit.
    pub max_connections: Option<(Arc<AtomicUsize>, usize)>,
    /// Requests one HTTP/1 connection carries before it is closed.
    pub max_requests_per_connection: Option<u32>,
}

/// The policy of a service without a `connectionPool`.
pub static NO_CONN_POLICY: ConnPolicy = ConnPolicy {
    connect_timeout: None,
    max_connections: None,
    max_requests_per_connection: None,
};

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

/// HTTP/1 connections per endpoint: the idle ones, each with the time it went idle and the
/// requests it has carried, and how many are open in all (idle or busy).
#[derive(Default)]
struct EndpointH1 {
    idle: Vec<(Instant, http1::SendRequest<Body>, u32)>,
    open: Arc<AtomicUsize>,
}

type IdleH1 = HashMap<SocketAddr, EndpointH1>;

/// Counts one open connection, to its endpoint and (with a `connectionPool` limit) to its
/// service, until dropped with the connection's task.
struct OpenGuard(Arc<AtomicUsize>, Option<Arc<AtomicUsize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        if let Some(service) = &self.1 {
            service.fetch_sub(1, Ordering::Relaxed);
        }
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
    /// Requests it carried before this one.
    served: u32,
    policy: ConnPolicy,
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
        self.connect_tcp_within(addr, self.connect_timeout).await
    }

    /// As [`Pools::connect_tcp`], with a connect timeout of `timeout`.
    async fn connect_tcp_within(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, ConnectError> {
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
        let stream = tokio::time::timeout(timeout, socket.connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout { addr, after: timeout })?
            .map_err(|source| ConnectError::Refused { addr, source })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A multiplexed plaintext HTTP/2 connection to `addr` (an app that speaks HTTP/2), opened
    /// if there is none.
    pub async fn h2(
        &self,
        addr: SocketAddr,
        policy: &ConnPolicy,
    ) -> Result<http2::SendRequest<Body>, ConnectError> {
        let key = H2Key {
            addr,
            identity: None,
            tls: false,
        };
        Ok(self.h2_keyed(key, None, policy).await?.sender)
    }

    /// A multiplexed HTTP/2 connection to a peer proxy's mesh port: mTLS when this proxy has
    /// credentials, the server's SPIFFE ID checked against `identity` (None: any identity the
    /// trust bundle vouches for); plaintext before credentials exist.
    pub async fn h2_mesh(
        &self,
        addr: SocketAddr,
        identity: Option<&str>,
        policy: &ConnPolicy,
    ) -> Result<MeshH2, ConnectError> {
        let tls = self.tls.as_ref().filter(|t| t.ready());
        let key = H2Key {
            addr,
            identity: identity.map(str::to_string),
            tls: tls.is_some(),
        };
        self.h2_keyed(key, tls, policy).await
    }

    async fn h2_keyed(
        &self,
        key: H2Key,
        tls: Option<&MeshConnector>,
        policy: &ConnPolicy,
    ) -> Result<MeshH2, ConnectError> {
        if let Some(conn) = self.lock_h2().get(&key) {
            if !conn.sender.is_closed() {
                return Ok(conn.clone());
            }
        }
        // Two requests racing here may both connect; the later one is kept in the pool and the
        // earlier serves its own request and closes when dropped.
        let addr = key.addr;
        let timeout = policy.connect_timeout.unwrap_or(self.connect_timeout);
        let stream = self.connect_tcp_within(addr, timeout).await?;
        let conn = match tls {
            Some(tls) => {
                let handshake = crate::tls::connect(tls.state(), key.identity.as_deref(), addr, stream);
                let (stream, peer) = tokio::time::timeout(timeout, handshake)
                    .await
                    .map_err(|_| ConnectError::Timeout { addr, after: timeout })?
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
    pub async fn h1(self: &Arc<Self>, addr: SocketAddr, policy: &ConnPolicy) -> Result<H1Conn, ConnectError> {
        let now = Instant::now();
        {
            let mut pools = self.lock_h1();
            if let Some(idle) = pools.get_mut(&addr).map(|e| &mut e.idle) {
                // Connections still reading an earlier response stay (they become ready once it
                // ends); closed and long-idle ones go.
                idle.retain(|(since, sender, _)| {
                    !sender.is_closed() && now.duration_since(*since) < self.idle_timeout
                });
                if let Some(i) = idle.iter().rposition(|(_, sender, _)| sender.is_ready()) {
                    let (_, sender, served) = idle.swap_remove(i);
                    return Ok(H1Conn {
                        addr,
                        sender,
                        pools: self.clone(),
                        reused: true,
                        served,
                        policy: policy.clone(),
                    });
                }
            }
        }
        self.new_h1(addr, policy).await
    }

    /// A new HTTP/1 connection to `addr`.
    async fn new_h1(self: &Arc<Self>, addr: SocketAddr, policy: &ConnPolicy) -> Result<H1Conn, ConnectError> {
        let open = self.lock_h1().entry(addr).or_default().open.clone();
        if open.fetch_add(1, Ordering::Relaxed) >= self.max_per_endpoint {
            open.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectError::Overflow {
                addr,
                limit: self.max_per_endpoint,
            });
        }
        let mut guard = OpenGuard(open, None);
        if let Some((service, limit)) = &policy.max_connections {
            if service.fetch_add(1, Ordering::Relaxed) >= *limit {
                service.fetch_sub(1, Ordering::Relaxed);
                return Err(ConnectError::ServiceOverflow { limit: *limit });
            }
            guard.1 = Some(Arc::clone(service));
        }
        let timeout = policy.connect_timeout.unwrap_or(self.connect_timeout);
        let stream = self.connect_tcp_within(addr, timeout).await?;
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
            served: 0,
            policy: policy.clone(),
        })
    }

    /// Keeps a connection that carried `served` requests for reuse, unless the service's
    /// `maxRequestsPerConnection` is reached: dropped, it closes once its response is read.
    fn put_h1(&self, addr: SocketAddr, sender: http1::SendRequest<Body>, served: u32, policy: &ConnPolicy) {
        if policy
            .max_requests_per_connection
            .is_some_and(|max| served >= max)
        {
            return;
        }
        let mut pools = self.lock_h1();
        let idle = &mut pools.entry(addr).or_default().idle;
        if idle.len() < self.max_idle {
            idle.push((Instant::now(), sender, served));
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
            served,
            policy,
        } = self;
        // A fresh connection becomes ready once its task runs; an idle one already is.
        let ready = sender.ready().await;
        let sent = match ready {
            Ok(()) => sender.try_send_request(req).await,
            Err(_) if reused => return Box::pin(pools.new_h1(addr, &policy).await?.send(req)).await,
            Err(e) => return Err(e.into()),
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(mut e) => match (reused, e.take_message()) {
                (true, Some(req)) => {
                    tracing::debug!(%addr, "pooled connection closed before the request went out; sending on a new one");
                    return Box::pin(pools.new_h1(addr, &policy).await?.send(req)).await;
                }
                _ => return Err(e.into_error().into()),
            },
        };
        // Back in the pool at once (no task per request): it is handed out again only once
        // `is_ready`, i.e. after this response has been read to the end.
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            pools.put_h1(addr, sender, served + 1, &policy);
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
        let mut conn = pools.new_h1(addr, &ConnPolicy::default()).await.expect("connect");
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
        let a = pools.new_h1(addr, &ConnPolicy::default()).await.expect("first");
        let _b = pools.new_h1(addr, &ConnPolicy::default()).await.expect("second");
        assert!(matches!(
            pools.new_h1(addr, &ConnPolicy::default()).await,
            Err(ConnectError::Overflow { limit: 2, .. })
        ));
        // A closed connection frees its place.
        drop(a);
        for _ in 0..50 {
            if pools.new_h1(addr, &ConnPolicy::default()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a closed connection never freed its place");
    }

    #[tokio::test]
    async fn a_services_connection_limit_spans_its_endpoints_and_outlives_the_policy_value() {
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = listener.accept().await {
                    held.push(s);
                }
            });
        }
        let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(60), 8, None);
        let counter = Arc::new(AtomicUsize::new(0));
        let policy = ConnPolicy {
            max_connections: Some((Arc::clone(&counter), 2)),
            ..ConnPolicy::default()
        };
        let a = pools.new_h1(addrs[0], &policy).await.expect("first");
        let _b = pools
            .new_h1(addrs[1], &policy)
            .await
            .expect("second, other endpoint");
        assert!(matches!(
            pools.new_h1(addrs[0], &policy).await,
            Err(ConnectError::ServiceOverflow { limit: 2 })
        ));
        // A push builds a new policy value on the same counter: still full.
        let pushed = ConnPolicy {
            max_connections: Some((Arc::clone(&counter), 2)),
            ..ConnPolicy::default()
        };
        assert!(pools.new_h1(addrs[1], &pushed).await.is_err());
        drop(a);
        for _ in 0..50 {
            if pools.new_h1(addrs[0], &pushed).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a closed connection never freed its place");
    }

    #[tokio::test]
    async fn a_connection_is_not_reused_past_max_requests_per_connection() {
        let echo = weft_test_support::HttpEcho::start("e").await.expect("echo");
        let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(60), 8, None);
        let policy = ConnPolicy {
            max_requests_per_connection: Some(2),
            ..ConnPolicy::default()
        };
        for _ in 0..6 {
            let conn = pools.h1(echo.addr(), &policy).await.expect("conn");
            let req = Request::get("/")
                .header("host", "e")
                .body(crate::http::empty())
                .expect("request");
            let resp = conn.send(req).await.expect("response");
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body");
        }
        assert_eq!(echo.requests(), 6);
        assert_eq!(echo.connections(), 3, "two requests per connection");
    }

    #[tokio::test]
    async fn a_new_connection_that_fails_is_an_error_not_a_second_try() {
        let (addr, server) = closes_first_then_answers().await;
        let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(60), 8, None);
        let conn = pools.new_h1(addr, &ConnPolicy::default()).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = Request::get("/x")
            .header("host", "x")
            .body(crate::http::empty())
            .expect("request");
        assert!(matches!(conn.send(req).await, Err(SendError::Upstream(_))));
        server.abort();
    }
}
