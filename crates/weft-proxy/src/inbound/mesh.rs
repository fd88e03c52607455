//! The mesh port: HTTP/2 from peer proxies, over mTLS (or plaintext where the port allows
//! it); requests name their app port, TCP and upgrades arrive as CONNECT streams.

use super::app_port::app_request;
use std::sync::Mutex;

use http::HeaderValue;

use super::*;

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
pub(super) async fn serve_mesh_tls<IO>(
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
                claims: Arc::default(),
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

pub(super) fn mesh_handler(
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

/// What a verified peer's mesh headers said last on one connection, parsed once: a peer sends
/// the same source, and mostly the same service, on every stream, and labels reused from here
/// keep metrics on their fast path (found by address, not by hashing text).
#[derive(Debug, Default)]
pub(crate) struct Claims {
    source: Mutex<Option<(HeaderValue, Peer)>>,
    service: Mutex<Option<(HeaderValue, [Label; 3])>>,
}

/// The request's source: the mesh header is believed only on mTLS whose certificate names the
/// header's namespace; otherwise the source is unknown but for the certificate's principal.
pub(super) fn mesh_source(peer: &MeshPeer, header: Option<&HeaderValue>) -> Peer {
    let MeshPeer::Mtls { peer: id, claims, .. } = peer else {
        // Plaintext proves nothing: a claimed source would let any caller write metric labels.
        return Peer::unknown();
    };
    let parse = |h: Option<&HeaderValue>| {
        let claimed = h.and_then(|v| v.to_str().ok()).map(Peer::from_source_header);
        let cert_ns = crate::tls::spiffe_namespace(&id.0);
        let mut source = match claimed {
            Some(p) if cert_ns.is_some_and(|ns| *p.namespace.0 == *ns) => p,
            _ => Peer::unknown(),
        };
        source.principal = id.clone();
        source
    };
    let Some(h) = header else { return parse(None) };
    let mut last = claims.source.lock().unwrap_or_else(|p| p.into_inner());
    match last.as_ref() {
        Some((v, p)) if v == h => p.clone(),
        _ => {
            let p = parse(Some(h));
            *last = Some((h.clone(), p.clone()));
            p
        }
    }
}

/// The `destination_service` labels a verified peer's service header names, parsed once per
/// connection while it names the same one.
fn claimed_service(claims: &Claims, header: &HeaderValue) -> Option<[Label; 3]> {
    let mut last = claims.service.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((v, labels)) = last.as_ref() {
        if v == header {
            return Some(labels.clone());
        }
    }
    let labels = RequestMeta::service_labels(header.to_str().ok()?)?;
    *last = Some((header.clone(), labels.clone()));
    Some(labels)
}

pub(super) async fn mesh_request(
    shared: &Arc<Shared>,
    peer: &MeshPeer,
    remote: Option<SocketAddr>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let headers = req.headers();
    let source = mesh_source(peer, headers.get(mesh_headers::SOURCE));
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
    if let MeshPeer::Mtls { claims, .. } = peer {
        meta.connection_security_policy = crate::tls::MUTUAL_TLS;
        // Believed from a verified peer only: plaintext callers could fill the series cap.
        if let Some(labels) = headers
            .get(mesh_headers::SERVICE)
            .and_then(|v| claimed_service(claims, v))
        {
            meta.set_service_labels(labels);
        }
    } else {
        meta.outside = true;
    }
    meta.observe(&snap, &mut req);
    let who = Caller::of(peer, remote);
    if let Err(e) = canonicalize(&mut req, &snap.config.http) {
        return meta.fail(&e);
    }
    meta.tap = shared.tap.capture(&req);
    let verified = match peer {
        MeshPeer::Mtls { peer, local, .. } => Some((&*peer.0, &*local.0)),
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
    let auth = match authenticate(shared, &snap, &meta, &mut req).await {
        Ok(auth) => auth,
        Err(e) => return unauthenticated(meta, &e),
    };
    if let Err(d) = check(
        &snap,
        Some(&shared.metrics),
        &who,
        port,
        Some(&req),
        auth.as_ref(),
    ) {
        return meta.fail(&denied(&d));
    }
    if let Err(e) = rate_limit(shared, &who, port) {
        return meta.fail(&e);
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
pub(super) async fn mesh_connect(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    mut meta: RequestMeta,
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
    // An HTTP port never becomes a raw pipe, through a tunnel either: the bytes inside are
    // served as HTTP (canonical form, header hygiene, authorization by path), or a CONNECT
    // would carry forged `X-Forwarded-Client-Cert` and the like straight to the app.
    if req.headers().contains_key(mesh_headers::UPGRADE_TUNNEL) || target.protocol.is_http() {
        let verified = verified.map(|(p, l)| (p.to_string(), l.to_string()));
        return tunnelled_http(shared, req, meta, who.clone(), verified, target, port);
    }
    if let Err(d) = check(&snap, Some(&shared.metrics), who, port, None, None) {
        tracing::info!(port, flags = "RBAC", policy = %d.describe(), "TCP connection denied by authorization policy");
        return refused_stream(&meta, "RBAC", StatusCode::FORBIDDEN);
    }
    meta.note_upstream(target.app, || access_log::cluster_name(false, port, None, ""));
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
pub(super) fn tunnelled_http(
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
