//! Traffic arriving for the workload, from accept to the local app.
//!
//! From other proxies it arrives on the mesh port as HTTP/2: requests name the app port in a
//! mesh header, TCP arrives as CONNECT streams to `ip:port` (shared/ARCHITECTURE.md, "The hop
//! between proxies"). From outside the mesh it arrives on an app port (or redirected there by
//! iptables to the capture port): detected, mesh headers stripped, passed to the app.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, Version as HttpVersion};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use weft_api::authz::{authorize, AuthzDecision, AuthzRequest};
use weft_api::proxy_config::{MtlsMode, Protocol};

use crate::config::{InboundTarget, Shared, Snapshot};
use crate::detect::{detect, Detected};
use crate::forward;
use crate::http::canonical::{canonicalize, set_client_identity};
use crate::http::error::{Flag, ProxyError};
use crate::http::headers::{self as mesh_headers, is_grpc, strip_mesh, HeadersView};
use crate::http::server::{check_request, close_after, serve, Version};
use crate::http::Body;
use crate::io::PrefixedIo;
use crate::telemetry::metered::RequestMeta;
use crate::telemetry::metrics::{Label, Metrics, Peer};

/// How a connection reached the inbound side.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// An app port the proxy fronts directly.
    AppPort(u16),
    /// The capture port: the original destination port picks the app port.
    Capture,
}

/// What the mesh port knows of the peer on one connection.
#[derive(Debug, Clone)]
enum MeshPeer {
    /// mTLS: the peer's SPIFFE ID and this workload's.
    Mtls { peer: Label, local: Label },
    /// Plaintext: nothing about the peer is verified.
    Plaintext,
}

/// Handles one connection on the mesh port: HTTP/2 from a peer proxy, over mTLS (a ClientHello
/// is terminated whenever this proxy has credentials) or plaintext (refused under STRICT).
pub async fn handle_mesh(shared: Arc<Shared>, mut stream: TcpStream, drain: CancellationToken) {
    let snap = shared.snapshot.load_full();
    let limits = snap.config.limits.clone();
    // Plaintext is refused at the connection when every port is STRICT; when a port's own mode
    // (portLevelMtls) relaxes a STRICT workload, plaintext is accepted here and refused per
    // request for the STRICT ports (`port_refuses_plaintext`).
    let inbound = &snap.config.inbound;
    let mode = if inbound.mtls == MtlsMode::Strict
        && inbound
            .listeners
            .iter()
            .all(|l| l.mtls.is_none_or(|m| m == MtlsMode::Strict))
    {
        MtlsMode::Strict
    } else {
        MtlsMode::Permissive
    };
    drop(snap);
    let detect_timeout = Duration::from_millis(limits.detect_timeout_ms);
    let (detected, prefix) = match detect(&mut stream, detect_timeout).await {
        Ok(found) => found,
        Err(_) => return,
    };
    let remote = stream.peer_addr().ok();
    let io = PrefixedIo::new(prefix, stream);
    let tls = shared.mesh_tls.clone().filter(|t| t.ready());
    let peer = if detected == Detected::Tls {
        let Some(acceptor) = tls else {
            shared
                .metrics
                .connection_rejected("mesh", "tls_without_credentials");
            tracing::info!(?remote, "TLS on the mesh port but no credentials yet; closing");
            return;
        };
        return serve_mesh_tls(shared, acceptor, io, remote, &limits, drain).await;
    } else {
        if mode == MtlsMode::Strict {
            shared.metrics.connection_rejected("mesh", "plaintext_strict");
            tracing::warn!(
                ?remote,
                "plaintext connection on the mesh port refused (mTLS STRICT)"
            );
            return;
        }
        MeshPeer::Plaintext
    };
    serve(
        io,
        Version::Http2,
        &limits,
        drain,
        mesh_handler(shared, peer, remote),
    )
    .await;
}

/// Terminates mTLS and serves the peer's HTTP/2 as the mesh port does: on the mesh port, or
/// on an app port for a ClientHello offering the mesh ALPN.
async fn serve_mesh_tls<IO>(
    shared: Arc<Shared>,
    acceptor: crate::tls::MeshAcceptor,
    io: IO,
    remote: Option<SocketAddr>,
    limits: &weft_api::proxy_config::Limits,
    drain: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match acceptor.accept(io).await {
        Ok((tls_io, id)) => {
            let local = acceptor.local_identity().unwrap_or_else(|| "unknown".into());
            let peer = MeshPeer::Mtls {
                peer: Label::new(&id),
                local: Label::new(&local),
            };
            serve(
                tls_io,
                Version::Http2,
                limits,
                drain,
                mesh_handler(shared, peer, remote),
            )
            .await;
        }
        Err(e) => {
            shared.metrics.connection_rejected("mesh", "tls_handshake");
            tracing::info!(?remote, error = %e, "mTLS handshake failed");
        }
    }
}

fn mesh_handler(
    shared: Arc<Shared>,
    peer: MeshPeer,
    remote: Option<SocketAddr>,
) -> impl Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    move |req: Request<Incoming>| {
        let shared = shared.clone();
        let peer = peer.clone();
        Box::pin(async move { mesh_request(&shared, &peer, remote, req).await })
    }
}

/// The request's source: the mesh header is believed only on mTLS whose certificate names the
/// header's namespace; otherwise the source is unknown but for the certificate's principal.
fn mesh_source(peer: &MeshPeer, header: Option<&str>) -> Peer {
    match peer {
        MeshPeer::Mtls { peer: id, .. } => {
            let claimed = header.map(Peer::from_source_header);
            let cert_ns = crate::tls::spiffe_namespace(&id.0);
            let mut source = match claimed {
                Some(p) if cert_ns.is_some_and(|ns| *p.namespace.0 == *ns) => p,
                _ => Peer::unknown(),
            };
            source.principal = id.clone();
            source
        }
        // Plaintext proves nothing: a claimed source would let any caller write metric labels.
        MeshPeer::Plaintext => Peer::unknown(),
    }
}

async fn mesh_request(
    shared: &Arc<Shared>,
    peer: &MeshPeer,
    remote: Option<SocketAddr>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let headers = req.headers();
    let source = mesh_source(
        peer,
        headers.get(mesh_headers::SOURCE).and_then(|v| v.to_str().ok()),
    );
    let mut destination = snap.local.clone();
    if let MeshPeer::Mtls { local, .. } = peer {
        destination.principal = local.clone();
    }
    let mut meta = RequestMeta::new(
        shared.metrics.clone(),
        "destination",
        source,
        destination,
        is_grpc(headers),
    );
    if let MeshPeer::Mtls { .. } = peer {
        meta.connection_security_policy = crate::tls::MUTUAL_TLS;
        // Believed from a verified peer only: plaintext callers could fill the series cap.
        if let Some(svc) = headers.get(mesh_headers::SERVICE).and_then(|v| v.to_str().ok()) {
            meta.set_service_from_header(svc);
        }
    } else {
        meta.outside = true;
    }
    let who = Caller::of(peer, remote);
    if let Err(e) = canonicalize(&mut req, &snap.config.http) {
        return meta.fail(&e);
    }
    let verified = match peer {
        MeshPeer::Mtls { peer, local } => Some((&*peer.0, &*local.0)),
        MeshPeer::Plaintext => None,
    };
    set_client_identity(req.headers_mut(), verified);
    if req.method() == Method::CONNECT {
        return mesh_connect(shared, req, meta, &who, verified).await;
    }
    let headers = req.headers();
    let port = headers
        .get(mesh_headers::TARGET_PORT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let Some(port) = port else {
        return meta.fail(&ProxyError::bad_request(
            StatusCode::BAD_REQUEST,
            "mesh request names no target port",
        ));
    };
    let Some(target) = snap.inbound(port) else {
        return meta.fail(&ProxyError::no_route(format!(
            "no inbound listener for port {port}"
        )));
    };
    if port_refuses_plaintext(&snap, &who, port) {
        shared.metrics.connection_rejected("mesh", "plaintext_strict");
        return meta.fail(&ProxyError::bad_request(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("plaintext request for port {port} refused (mTLS STRICT on this port)"),
        ));
    }
    if let Err(d) = check(&snap, Some(&shared.metrics), &who, port, Some(&req)) {
        return meta.fail(&denied(&d));
    }
    let headers = req.headers();
    let orig_h1 = headers.contains_key(mesh_headers::ORIG_PROTO);
    // The app gets the protocol the client spoke; an HTTP/2 request for an app declared as
    // HTTP/1 (and not gRPC) is handed over as HTTP/1.1.
    if orig_h1 || (target.protocol == Protocol::Http && !meta.grpc) {
        *req.version_mut() = HttpVersion::HTTP_11;
    }
    strip_mesh(req.headers_mut());
    to_app(shared, target, req, meta).await
}

/// A CONNECT stream from a peer: TCP for an app port, or an HTTP/1.1 upgrade request
/// (WebSocket) that is served as HTTP (see [`tunnelled_http`]).
async fn mesh_connect(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    meta: RequestMeta,
    who: &Caller,
    verified: Option<(&str, &str)>,
) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let port = req.uri().authority().and_then(|a| a.port_u16());
    let Some((port, target)) = port.and_then(|p| Some((p, snap.inbound(p)?))) else {
        let e = ProxyError::no_route(format!("no inbound listener for CONNECT {}", req.uri()));
        return meta.fail(&e);
    };
    // Refused streams are answered with a status (the peer closes its client's connection)
    // and counted as TCP connections with their flag.
    if port_refuses_plaintext(&snap, who, port) {
        shared.metrics.connection_rejected("mesh", "plaintext_strict");
        tracing::info!(port, "plaintext CONNECT refused (mTLS STRICT on this port)");
        return refused_stream(&meta, "DPE", StatusCode::SERVICE_UNAVAILABLE);
    }
    if req.headers().contains_key(mesh_headers::UPGRADE_TUNNEL) {
        let verified = verified.map(|(p, l)| (p.to_string(), l.to_string()));
        return tunnelled_http(shared, req, meta, who.clone(), verified, target, port);
    }
    if let Err(d) = check(&snap, Some(&shared.metrics), who, port, None) {
        tracing::info!(port, flags = "RBAC", policy = %d.describe(), "TCP connection denied by authorization policy");
        return refused_stream(&meta, "RBAC", StatusCode::FORBIDDEN);
    }
    let app = match shared.pools.connect_tcp(target.app).await {
        Ok(s) => s,
        Err(e) => return meta.fail(&forward::connect_error(e)),
    };
    let idle = Duration::from_millis(snap.config.limits.idle_timeout_ms);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let revoked = until_revoked(shared.clone(), who.clone(), port);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let client = Revocable::new(TokioIo::new(upgraded), revoked);
                crate::tcp::relay(client, app, idle, &meta, "-").await
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT stream ended before upgrade"),
        }
    });
    Response::new(crate::http::empty())
}

/// A CONNECT stream carrying an HTTP/1.1 upgrade request (WebSocket): accepted, then served
/// as HTTP/1 so the request inside is canonicalized, authorized (by its path, method and
/// headers, as the peer's verified identity) and forwarded like any other — a path-scoped
/// policy applies to it, and only configured upgrades reach the app.
fn tunnelled_http(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    meta: RequestMeta,
    who: Caller,
    verified: Option<(String, String)>,
    target: InboundTarget,
    port: u16,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    let source = meta.source.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "upgrade tunnel ended before it opened"),
        };
        let limits = shared.snapshot.load().config.limits.clone();
        let handler = move |req: Request<Incoming>| {
            let shared = shared.clone();
            let who = who.clone();
            let source = source.clone();
            let verified = verified.clone();
            async move {
                let verified = verified.as_ref().map(|(p, l)| (p.as_str(), l.as_str()));
                app_request(&shared, target, port, &who, source, verified, req).await
            }
        };
        // The tunnel lives inside a mesh connection that drains on its own.
        serve(
            TokioIo::new(upgraded),
            Version::Http1,
            &limits,
            CancellationToken::new(),
            handler,
        )
        .await;
    });
    Response::new(crate::http::empty())
}

/// Handles one connection on an app port or the capture port: traffic from outside the mesh.
pub async fn handle_app_port(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    entry: Entry,
    drain: CancellationToken,
) {
    let snap = shared.snapshot.load_full();
    let port = match entry {
        Entry::AppPort(port) => Some(port),
        Entry::Capture => match crate::capture::original_dst(&stream) {
            Ok(Some(dst)) => Some(dst.port()),
            _ => None,
        },
    };
    let Some((port, target)) = port.and_then(|p| Some((p, snap.inbound(p)?))) else {
        tracing::info!(?port, flags = "NR", "no inbound listener for this port; closing");
        shared.metrics.connection_rejected("inbound", "no_listener");
        return;
    };
    let remote = stream.peer_addr().ok();
    if snap.config.inbound.mtls_for(port) == MtlsMode::Strict {
        // Only mesh traffic is accepted under STRICT, and it arrives on the mesh port.
        shared.metrics.connection_rejected("inbound", "plaintext_strict");
        tracing::warn!(?remote, port, "connection on an app port refused (mTLS STRICT)");
        return;
    }
    let who = Caller::of(&MeshPeer::Plaintext, remote);
    let limits = snap.config.limits.clone();
    let (detected, prefix) = if target.protocol.skips_detection(port) {
        (Detected::Opaque, bytes::Bytes::new())
    } else {
        match detect(&mut stream, Duration::from_millis(limits.detect_timeout_ms)).await {
            Ok(found) => found,
            Err(_) => return,
        }
    };
    let mode = snap.config.inbound.mtls_for(port);
    let prefix = match (detected, shared.mesh_tls.clone().filter(|t| t.ready())) {
        // A ClientHello offering the mesh ALPN is a peer: terminated as on the mesh port,
        // except under DISABLE, where the port's TLS is the app's own and passes untouched.
        (Detected::Tls, Some(acceptor)) if mode != MtlsMode::Disable => {
            let detect_timeout = Duration::from_millis(limits.detect_timeout_ms);
            let Ok(record) = crate::detect::read_first_record(&mut stream, prefix, detect_timeout).await
            else {
                return;
            };
            let alpn = crate::detect::client_hello_alpn(&record);
            if alpn.is_some_and(|a| a.contains(&crate::tls::ALPN_MESH)) {
                drop(snap);
                let io = PrefixedIo::new(record, stream);
                return serve_mesh_tls(shared, acceptor, io, remote, &limits, drain).await;
            }
            record
        }
        _ => prefix,
    };
    let io = PrefixedIo::new(prefix, stream);
    // A port declared HTTP, or one that has carried HTTP, is never a raw pipe to the app: a
    // client that stays silent past the detect timeout or sends other bytes meets the HTTP
    // server, its limits and its 400.
    let http_port = target.protocol.is_http() || shared.http_seen.contains(port);
    let detected = match detected {
        Detected::Tls | Detected::Opaque if http_port => match target.protocol {
            Protocol::Http2 | Protocol::Grpc => Detected::Http2,
            _ => Detected::Http1,
        },
        Detected::Http1 | Detected::Http2 => {
            shared.http_seen.mark(port);
            detected
        }
        other => other,
    };
    let version = match detected {
        Detected::Http1 => Version::Http1,
        Detected::Http2 => Version::Http2,
        Detected::Tls | Detected::Opaque => {
            // The app's own TLS passes through untouched, like any opaque bytes.
            let meta = RequestMeta::new(
                shared.metrics.clone(),
                "destination",
                Peer::unknown(),
                snap.local.clone(),
                false,
            );
            if let Err(d) = check(&snap, Some(&shared.metrics), &who, port, None) {
                tracing::info!(?remote, port, flags = "RBAC", policy = %d.describe(), "TCP connection denied by authorization policy");
                let labels = meta.tcp_labels("RBAC");
                shared.metrics.tcp_opened(&labels);
                shared.metrics.tcp_closed(&labels, 0, 0);
                return;
            }
            match shared.pools.connect_tcp(target.app).await {
                Ok(app) => {
                    let idle = Duration::from_millis(limits.idle_timeout_ms);
                    let io = Revocable::new(io, until_revoked(shared.clone(), who, port));
                    crate::tcp::relay(io, app, idle, &meta, "-").await;
                }
                Err(e) => {
                    tracing::info!(app = %target.app, flags = "UF", error = %e, "app refused connection")
                }
            }
            return;
        }
    };
    drop(snap);
    let handler = move |req: Request<Incoming>| {
        let shared = shared.clone();
        let who = who.clone();
        async move { outside_request(&shared, target, port, &who, req).await }
    };
    serve(io, version, &limits, drain, handler).await;
}

async fn outside_request(
    shared: &Shared,
    target: InboundTarget,
    port: u16,
    who: &Caller,
    req: Request<Incoming>,
) -> Response<Body> {
    app_request(shared, target, port, who, Peer::unknown(), None, req).await
}

/// One HTTP request for an app port, from outside the mesh or (`verified`: the peer's and this
/// workload's SPIFFE IDs) from a peer through an upgrade tunnel: limits, canonical form, header
/// hygiene, authorization, then the app.
async fn app_request(
    shared: &Shared,
    target: InboundTarget,
    port: u16,
    who: &Caller,
    source: Peer,
    verified: Option<(&str, &str)>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let mut meta = RequestMeta::new(
        shared.metrics.clone(),
        "destination",
        source,
        snap.local.clone(),
        is_grpc(req.headers()),
    );
    meta.outside = verified.is_none();
    if verified.is_some() {
        meta.connection_security_policy = crate::tls::MUTUAL_TLS;
    }
    if let Err(e) = check_request(&req, &snap.config.limits) {
        return close_after(meta.fail(&e));
    }
    if let Err(e) = canonicalize(&mut req, &snap.config.http) {
        return close_after(meta.fail(&e));
    }
    strip_mesh(req.headers_mut());
    set_client_identity(req.headers_mut(), verified);
    if let Err(d) = check(&snap, Some(&shared.metrics), who, port, Some(&req)) {
        return meta.fail(&denied(&d));
    }
    to_app(shared, target, req, meta).await
}

/// Who is calling, as authorization sees it: the certificate's identity (never a header).
#[derive(Debug, Clone)]
struct Caller {
    principal: Option<String>,
    namespace: Option<String>,
    ip: IpAddr,
    mtls: bool,
}

impl Caller {
    fn of(peer: &MeshPeer, remote: Option<SocketAddr>) -> Self {
        let ip = remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        match peer {
            MeshPeer::Mtls { peer, .. } => Self {
                principal: Some(peer.0.to_string()),
                namespace: crate::tls::spiffe_namespace(&peer.0).map(str::to_string),
                ip,
                mtls: true,
            },
            MeshPeer::Plaintext => Self {
                principal: None,
                namespace: None,
                ip,
                mtls: false,
            },
        }
    }
}

/// The port as the mesh declares it (policies name declared ports; peers may name the port
/// the app really listens on).
fn declared_port(snap: &Snapshot, port: u16) -> u16 {
    let listeners = &snap.config.inbound.listeners;
    if listeners.iter().any(|l| l.port == port) {
        return port;
    }
    listeners
        .iter()
        .find(|l| l.app.is_some_and(|a| a.port() == port))
        .map_or(port, |l| l.port)
}

/// A plaintext mesh request or stream for a port whose own mode is STRICT. (A workload-wide
/// STRICT with no relaxed port already refused the connection in `handle_mesh`.) Refused per
/// request, 503 with flag `DPE`: the peer should have spoken mTLS; one HTTP/2 connection
/// may carry requests for other, PERMISSIVE ports.
fn port_refuses_plaintext(snap: &Snapshot, who: &Caller, port: u16) -> bool {
    !who.mtls && snap.config.inbound.mtls_for(port) == MtlsMode::Strict
}

/// Runs the workload's authorization policies; `req` None for a TCP connection. With
/// `metrics` (a new request or connection, not a re-check of an open one) a denial and an
/// AUDIT match are counted with their policy, and an audited request is logged.
fn check(
    snap: &Snapshot,
    metrics: Option<&Metrics>,
    who: &Caller,
    port: u16,
    req: Option<&Request<Incoming>>,
) -> Result<(), AuthzDecision> {
    let policies = &snap.config.inbound.authorization;
    if policies.is_empty() {
        return Ok(());
    }
    let no_headers = HeaderMap::new();
    let headers = HeadersView(req.map_or(&no_headers, |r| r.headers()));
    // Canonical by now: the URI's authority and `Host` agree.
    let host = req.and_then(forward::request_authority);
    let decision = authorize(
        policies,
        &AuthzRequest {
            source_principal: who.principal.as_deref(),
            source_namespace: who.namespace.as_deref(),
            source_ip: who.ip,
            method: req.map(|r| r.method().as_str()),
            path: req.map(|r| r.uri().path()),
            host,
            port: declared_port(snap, port),
            headers: &headers,
        },
    );
    if let Some(metrics) = metrics {
        if let Some(a) = &decision.audit {
            let policy = format!("{}/{}/{}", a.kind, a.namespace, a.name);
            metrics.authz("audit", &policy);
            tracing::info!(
                port,
                principal = ?who.principal,
                source_ip = %who.ip,
                method = req.map(|r| r.method().as_str()),
                path = req.map(|r| r.uri().path()),
                allowed = decision.allowed,
                audit = %format!("{policy} rule {}", a.rule),
                "request audited by authorization policy"
            );
        }
        if !decision.allowed {
            metrics.authz("deny", &decision.policy_label());
            if let Some(r) = req {
                tracing::info!(port, principal = ?who.principal, source_ip = %who.ip, method = %r.method(), flags = "RBAC", policy = %decision.describe(), "request denied by authorization policy");
            }
        }
    }
    if decision.allowed {
        Ok(())
    } else {
        Err(decision)
    }
}

/// The answer to a denied request names no policy (as Envoy's RBAC filter): the deciding policy
/// is in the log line `check` wrote, in `weft_authz_decisions_total` and in `weft explain`.
fn denied(_: &AuthzDecision) -> ProxyError {
    ProxyError::unauthorized("RBAC: access denied")
}

/// A CONNECT stream refused before it opened: counted as a TCP connection with `flags`.
fn refused_stream(meta: &RequestMeta, flags: &'static str, status: StatusCode) -> Response<Body> {
    let labels = meta.tcp_labels(flags);
    meta.metrics().tcp_opened(&labels);
    meta.metrics().tcp_closed(&labels, 0, 0);
    let mut resp = Response::new(crate::http::empty());
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(flags) {
        resp.headers_mut().insert(crate::http::error::FLAGS_HEADER, v);
    }
    resp
}

/// How often an open TCP connection looks for a new config to check itself against.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// Completes when a config pushed after the connection opened no longer allows it
/// (shared/ARCHITECTURE.md, "State that outlives a push": open connections are checked again).
fn until_revoked(shared: Arc<Shared>, who: Caller, port: u16) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut seen = shared.snapshot.load_full();
        loop {
            tokio::time::sleep(RECHECK_EVERY).await;
            let now = shared.snapshot.load_full();
            if Arc::ptr_eq(&now, &seen) {
                continue;
            }
            seen = now;
            if port_refuses_plaintext(&seen, &who, port) {
                tracing::info!(port, principal = ?who.principal, "open plaintext connection closed: the port is now mTLS STRICT");
                return;
            }
            if let Err(d) = check(&seen, None, &who, port, None) {
                tracing::info!(port, principal = ?who.principal, flags = "RBAC", policy = %d.describe(), "open TCP connection closed: no longer authorized");
                return;
            }
        }
    })
}

/// A client stream that fails (and so ends its relay) once `revoked` completes.
struct Revocable<T> {
    inner: T,
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl<T> Revocable<T> {
    fn new(inner: T, revoked: Pin<Box<dyn Future<Output = ()> + Send>>) -> Self {
        Self {
            inner,
            revoked,
            done: false,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.done && self.revoked.as_mut().poll(cx).is_ready() {
            self.done = true;
        }
        if self.done {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "authorization revoked",
            ));
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Revocable<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Revocable<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn to_app(
    shared: &Shared,
    target: InboundTarget,
    mut req: Request<Incoming>,
    meta: RequestMeta,
) -> Response<Body> {
    // An app declared HTTP/1 gets HTTP/1.1 whatever the client spoke (gRPC excepted).
    if target.protocol == Protocol::Http && !meta.grpc {
        *req.version_mut() = HttpVersion::HTTP_11;
    }
    match forward::to_addr(shared, target.app, req.map(crate::http::boxed), &meta).await {
        Ok(resp) => meta.meter(resp),
        Err(e) => {
            let e = if e.flag == Flag::UpstreamConnectFailure {
                ProxyError::new(
                    e.flag,
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("app at {}: {}", target.app, e.message),
                )
            } else {
                e
            };
            meta.fail(&e)
        }
    }
}

#[cfg(test)]
mod tests;
