//! Traffic arriving for the workload, from accept to the local app.
//!
//! From other proxies it arrives on the mesh port as HTTP/2: requests name the app port in a
//! mesh header, TCP arrives as CONNECT streams to `ip:port` (shared/ARCHITECTURE.md, "The hop
//! between proxies"). From outside the mesh it arrives on an app port (or redirected there by
//! iptables to the capture port): detected, mesh headers stripped, passed to the app.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Version as HttpVersion};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use weft_api::proxy_config::{MtlsMode, Protocol};

use crate::config::{InboundTarget, Shared};
use crate::detect::{detect, Detected};
use crate::forward;
use crate::http::error::{Flag, ProxyError};
use crate::http::headers::{self as mesh_headers, is_grpc, strip_mesh};
use crate::http::server::{check_request, close_after, serve, Version};
use crate::http::Body;
use crate::io::PrefixedIo;
use crate::telemetry::metered::RequestMeta;
use crate::telemetry::metrics::{Label, Peer};

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
    /// Plaintext. `trusted`: this proxy has no credentials yet, so nothing can be verified and
    /// the source header is believed as before identities existed.
    Plaintext { trusted: bool },
}

/// Handles one connection on the mesh port: HTTP/2 from a peer proxy, over mTLS (a ClientHello
/// is terminated whenever this proxy has credentials) or plaintext (refused under STRICT).
pub async fn handle_mesh(shared: Arc<Shared>, mut stream: TcpStream, drain: CancellationToken) {
    let snap = shared.snapshot.load_full();
    let limits = snap.config.limits.clone();
    let mode = snap.config.inbound.mtls;
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
        match acceptor.accept(io).await {
            Ok((tls_io, id)) => {
                let local = acceptor.local_identity().unwrap_or_else(|| "unknown".into());
                let peer = MeshPeer::Mtls {
                    peer: Label::new(&id),
                    local: Label::new(&local),
                };
                serve(tls_io, Version::Http2, &limits, drain, mesh_handler(shared, peer)).await;
            }
            Err(e) => {
                shared.metrics.connection_rejected("mesh", "tls_handshake");
                tracing::info!(?remote, error = %e, "mTLS handshake on the mesh port failed");
            }
        }
        return;
    } else {
        if mode == MtlsMode::Strict {
            shared.metrics.connection_rejected("mesh", "plaintext_strict");
            tracing::warn!(
                ?remote,
                "plaintext connection on the mesh port refused (mTLS STRICT)"
            );
            return;
        }
        MeshPeer::Plaintext {
            trusted: tls.is_none(),
        }
    };
    serve(io, Version::Http2, &limits, drain, mesh_handler(shared, peer)).await;
}

fn mesh_handler(
    shared: Arc<Shared>,
    peer: MeshPeer,
) -> impl Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    move |req: Request<Incoming>| {
        let shared = shared.clone();
        let peer = peer.clone();
        Box::pin(async move { mesh_request(&shared, &peer, req).await })
    }
}

/// The request's source: the mesh header is believed only on mTLS whose certificate names the
/// header's namespace (or on plaintext before this proxy has credentials); otherwise the source
/// is unknown but for the certificate's principal.
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
        MeshPeer::Plaintext { trusted: true } => header.map_or_else(Peer::unknown, Peer::from_source_header),
        MeshPeer::Plaintext { trusted: false } => Peer::unknown(),
    }
}

async fn mesh_request(shared: &Shared, peer: &MeshPeer, mut req: Request<Incoming>) -> Response<Body> {
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
    if matches!(peer, MeshPeer::Mtls { .. }) {
        meta.connection_security_policy = crate::tls::MUTUAL_TLS;
    }
    if let Some(svc) = headers.get(mesh_headers::SERVICE).and_then(|v| v.to_str().ok()) {
        meta.set_service_from_header(svc);
    }
    if req.method() == Method::CONNECT {
        return mesh_connect(shared, req, meta).await;
    }
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
    let orig_h1 = headers.contains_key(mesh_headers::ORIG_PROTO);
    // The app gets the protocol the client spoke; an HTTP/2 request for an app declared as
    // HTTP/1 (and not gRPC) is handed over as HTTP/1.1.
    if orig_h1 || (target.protocol == Protocol::Http && !meta.grpc) {
        *req.version_mut() = HttpVersion::HTTP_11;
    }
    strip_mesh(req.headers_mut());
    to_app(shared, target, req, meta).await
}

/// A CONNECT stream from a peer: TCP (or an upgraded HTTP/1 connection) for an app port.
async fn mesh_connect(shared: &Shared, mut req: Request<Incoming>, meta: RequestMeta) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let port = req.uri().authority().and_then(|a| a.port_u16());
    let Some(target) = port.and_then(|p| snap.inbound(p)) else {
        let e = ProxyError::no_route(format!("no inbound listener for CONNECT {}", req.uri()));
        return meta.fail(&e);
    };
    let app = match shared.pools.connect_tcp(target.app).await {
        Ok(s) => s,
        Err(e) => return meta.fail(&forward::connect_error(e)),
    };
    let idle = Duration::from_millis(snap.config.limits.idle_timeout_ms);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => crate::tcp::relay(TokioIo::new(upgraded), app, idle, &meta, "-").await,
            Err(e) => tracing::debug!(error = %e, "CONNECT stream ended before upgrade"),
        }
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
    let limits = snap.config.limits.clone();
    let (detected, prefix) = if target.protocol.skips_detection(port) {
        (Detected::Opaque, bytes::Bytes::new())
    } else {
        match detect(&mut stream, Duration::from_millis(limits.detect_timeout_ms)).await {
            Ok(found) => found,
            Err(_) => return,
        }
    };
    let io = PrefixedIo::new(prefix, stream);
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
            match shared.pools.connect_tcp(target.app).await {
                Ok(app) => {
                    let idle = Duration::from_millis(limits.idle_timeout_ms);
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
        async move { outside_request(&shared, target, req).await }
    };
    serve(io, version, &limits, drain, handler).await;
}

async fn outside_request(
    shared: &Shared,
    target: InboundTarget,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let meta = RequestMeta::new(
        shared.metrics.clone(),
        "destination",
        Peer::unknown(),
        snap.local.clone(),
        is_grpc(req.headers()),
    );
    if let Err(e) = check_request(&req, &snap.config.limits) {
        return close_after(meta.fail(&e));
    }
    strip_mesh(req.headers_mut());
    to_app(shared, target, req, meta).await
}

async fn to_app(
    shared: &Shared,
    target: InboundTarget,
    req: Request<Incoming>,
    meta: RequestMeta,
) -> Response<Body> {
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
