//! App ports and the capture port: traffic from outside the mesh, detected (an HTTP port
//! never falls back to raw TCP), canonicalized, authorized, then handed to the app.

use super::mesh::serve_mesh_tls;
use super::*;

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
            let mut meta = RequestMeta::new(
                shared.metrics.clone(),
                "destination",
                Peer::unknown(),
                snap.local.clone(),
                false,
            );
            meta.observe_connection(&snap);
            if let Err(d) = check(&snap, Some(&shared.metrics), &who, port, None, None) {
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

pub(super) async fn outside_request(
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
pub(super) async fn app_request(
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
    meta.observe(&snap, &mut req);
    if let Err(e) = check_request(&req, &snap.config.limits) {
        return close_after(meta.fail(&e));
    }
    if let Err(e) = canonicalize(&mut req, &snap.config.http) {
        return close_after(meta.fail(&e));
    }
    meta.tap = shared.tap.capture(&req);
    strip_mesh(req.headers_mut());
    set_client_identity(req.headers_mut(), verified);
    let auth = match authenticate(shared, &snap, &meta, &mut req).await {
        Ok(auth) => auth,
        Err(e) => return unauthenticated(meta, &e),
    };
    if let Err(d) = check(&snap, Some(&shared.metrics), who, port, Some(&req), auth.as_ref()) {
        return meta.fail(&denied(&d));
    }
    if let Err(e) = rate_limit(shared, who, port) {
        return meta.fail(&e);
    }
    to_app(shared, target, req, meta).await
}
