//! Traffic the workload sends, from accept to the upstream.
//!
//! It arrives three ways (shared/ARCHITECTURE.md, "Addresses"): on a per-service port (the
//! listener names the service), on the outbound port dialled as an HTTP proxy (the
//! `Host`/`:authority` names it), or redirected to the outbound port by iptables (the original
//! destination VIP:port names it). Then: detect the protocol, canonicalize each HTTP request,
//! apply the routing decision and its policies ([`route`]: split, fault, rewrite, timeout,
//! retries) and send it through [`forward`](crate::forward) to an endpoint the balancer picks;
//! or relay TCP to the service's endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use weft_api::canonical::parse_authority;
use weft_api::proxy_config::{OutboundTrafficPolicy, Protocol};

use crate::config::{ServiceInfo, Shared, Snapshot};
use crate::detect::{detect, Detected};
use crate::forward;
use crate::http::canonical::canonicalize;
use crate::http::error::{Flag, ProxyError};
use crate::http::headers::{is_grpc, strip_mesh};
use crate::http::server::{check_request, close_after, serve, Version};
use crate::http::Body;
use crate::io::PrefixedIo;
use crate::telemetry::metered::RequestMeta;
use crate::telemetry::metrics::Peer;

mod route;

/// How a connection reached the outbound side.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The outbound port: captured (original destination) or dialled as an HTTP proxy.
    Outbound,
    /// A per-service port: always this service port.
    Service { service: String, port: u16 },
}

/// Where a connection or request goes.
#[derive(Debug, Clone)]
pub enum Dest {
    Service(Arc<ServiceInfo>, u16),
    /// Not a mesh service: sent on unchanged (ALLOW_ANY).
    Passthrough(SocketAddr),
}

/// Handles one accepted outbound connection.
pub async fn handle(shared: Arc<Shared>, stream: TcpStream, entry: Entry, drain: CancellationToken) {
    let snap = shared.snapshot.load_full();
    let dest = match entry {
        Entry::Outbound => match crate::capture::original_dst(&stream) {
            Ok(Some(dst)) => Some(match snap.service_by_vip(dst) {
                Some(svc) => Dest::Service(svc.clone(), dst.port()),
                None => Dest::Passthrough(dst),
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "no original destination; serving as HTTP proxy");
                None
            }
        },
        Entry::Service { service, port } => match snap.service_by_host(&service) {
            Some(svc) => Some(Dest::Service(svc.clone(), port)),
            None => {
                tracing::warn!(%service, "outbound port names a service that is no longer configured");
                return;
            }
        },
    };
    let (hint, port) = match &dest {
        Some(Dest::Service(svc, port)) => (svc.port_protocol(*port).unwrap_or_default(), *port),
        Some(Dest::Passthrough(addr)) => (Protocol::Auto, addr.port()),
        None => (Protocol::Http, 0),
    };
    let limits = snap.config.limits.clone();
    let mut stream = stream;
    let (detected, prefix) = if hint.skips_detection(port) {
        (Detected::Opaque, bytes::Bytes::new())
    } else {
        match detect(&mut stream, Duration::from_millis(limits.detect_timeout_ms)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "client went away during detection");
                return;
            }
        }
    };
    let io = PrefixedIo::new(prefix, stream);
    // A service port declared HTTP is never a raw pipe: silence or other bytes meet the HTTP
    // server, its limits and its 400.
    let detected = match (detected, hint) {
        (Detected::Tls | Detected::Opaque, Protocol::Http) => Detected::Http1,
        (Detected::Tls | Detected::Opaque, Protocol::Http2 | Protocol::Grpc) => Detected::Http2,
        (d, _) => d,
    };
    let version = match detected {
        Detected::Http1 => Version::Http1,
        Detected::Http2 => Version::Http2,
        Detected::Tls | Detected::Opaque => {
            match dest {
                Some(dest) => relay(&shared, &snap, dest, io).await,
                None => tracing::info!("non-HTTP bytes on the HTTP proxy port; closing"),
            }
            return;
        }
    };
    drop(snap);
    let handler = move |req: Request<Incoming>| {
        let shared = shared.clone();
        let dest = dest.clone();
        async move { request(&shared, dest, req).await }
    };
    serve(io, version, &limits, drain, handler).await;
}

/// One HTTP request from the app.
async fn request(shared: &Shared, dest: Option<Dest>, mut req: Request<Incoming>) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let mut meta = RequestMeta::new(
        shared.metrics.clone(),
        "source",
        snap.local.clone(),
        Peer::unknown(),
        is_grpc(req.headers()),
    );
    meta.source_value = snap.local_source_value.clone();
    meta.observe(&snap, &mut req);
    if let Err(e) = check_request(&req, &snap.config.limits) {
        return close_after(meta.fail(&e));
    }
    if let Err(e) = canonicalize(&mut req, &snap.config.http) {
        return close_after(meta.fail(&e));
    }
    meta.tap = shared.tap.capture(&req);
    // Mesh headers are believed only between proxies: an app cannot forge them.
    strip_mesh(req.headers_mut());
    let dest = match dest {
        Some(d) => d,
        None => match dest_from_authority(&snap, &req).await {
            Ok(d) => d,
            Err(e) => return meta.fail(&e),
        },
    };
    if let Dest::Service(svc, _) = &dest {
        meta.set_service(svc);
    }
    if req.method() == Method::CONNECT {
        return connect(shared, &snap, dest, req, meta).await;
    }
    let result = match &dest {
        Dest::Service(svc, port) => {
            route::route(shared, &snap, svc, *port, req.map(crate::http::boxed), &mut meta).await
        }
        Dest::Passthrough(addr) => forward::to_addr(shared, *addr, req.map(crate::http::boxed), &meta).await,
    };
    match result {
        Ok(resp) => meta.meter(resp),
        Err(e) => meta.fail(&e),
    }
}

/// The destination an HTTP-proxy request names by its authority.
async fn dest_from_authority(snap: &Snapshot, req: &Request<Incoming>) -> Result<Dest, ProxyError> {
    let authority = forward::request_authority(req)
        .ok_or_else(|| ProxyError::bad_request(StatusCode::BAD_REQUEST, "request names no host"))?;
    let authority = parse_authority(authority)
        .map_err(|e| ProxyError::bad_request(StatusCode::BAD_REQUEST, format!("malformed host: {e}")))?;
    let default_port = if req.method() == Method::CONNECT { 443 } else { 80 };
    let port = authority.port.unwrap_or(default_port);
    let host = authority.bare_host();
    if let Some(svc) = snap.service_by_host(host) {
        if svc.port_protocol(port).is_none() {
            return Err(ProxyError::no_route(format!(
                "service {} has no port {port}",
                svc.fqdn
            )));
        }
        return Ok(Dest::Service(svc.clone(), port));
    }
    if let Ok(ip) = host.parse() {
        let addr = SocketAddr::new(ip, port);
        if let Some(svc) = snap.service_by_vip(addr) {
            return Ok(Dest::Service(svc.clone(), port));
        }
    }
    match snap.traffic_policy() {
        OutboundTrafficPolicy::RegistryOnly => Err(ProxyError::new(
            Flag::NoRoute,
            StatusCode::BAD_GATEWAY,
            format!("{host} is not a mesh service (outbound traffic policy REGISTRY_ONLY)"),
        )),
        OutboundTrafficPolicy::AllowAny => {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    ProxyError::new(
                        Flag::NoRoute,
                        StatusCode::BAD_GATEWAY,
                        format!("cannot resolve {host}"),
                    )
                })?;
            Ok(Dest::Passthrough(addr))
        }
    }
}

/// `CONNECT host:port` on the HTTP proxy port: a TCP tunnel to a service (or passthrough).
async fn connect(
    shared: &Shared,
    snap: &Snapshot,
    dest: Dest,
    mut req: Request<Incoming>,
    mut meta: RequestMeta,
) -> Response<Body> {
    let stream: Box<dyn forward::StreamBox> = match &dest {
        Dest::Service(svc, port) => {
            let Some(balancer) = shared.balancers.get(&svc.fqdn, *port) else {
                return meta.fail(&ProxyError::no_endpoints(&svc.fqdn));
            };
            match forward::open_stream_to_service(shared, &balancer, svc, &meta, false).await {
                Ok((slot, s, peer_id)) => {
                    meta.destination = slot.peer(&svc.namespace);
                    forward::note_mtls(&mut meta, peer_id.as_ref());
                    s
                }
                Err(e) => return meta.fail(&e),
            }
        }
        Dest::Passthrough(addr) => match shared.pools.connect_tcp(*addr).await {
            Ok(s) => Box::new(s),
            Err(e) => return meta.fail(&forward::connect_error(e)),
        },
    };
    let idle = Duration::from_millis(snap.config.limits.idle_timeout_ms);
    // A tunnel outside the mesh is counted as passed through (`PT`), as a captured
    // connection to such an address is by `relay`.
    let flags = match dest {
        Dest::Service(..) => "-",
        Dest::Passthrough(_) => "PT",
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => crate::tcp::relay(TokioIo::new(upgraded), stream, idle, &meta, flags).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT client went away"),
        }
    });
    Response::new(crate::http::empty())
}

/// Relays an opaque (or TLS) connection to its destination.
async fn relay(shared: &Shared, snap: &Snapshot, dest: Dest, io: PrefixedIo<TcpStream>) {
    let idle = Duration::from_millis(snap.config.limits.idle_timeout_ms);
    let mut meta = RequestMeta::new(
        shared.metrics.clone(),
        "source",
        snap.local.clone(),
        Peer::unknown(),
        false,
    );
    meta.source_value = snap.local_source_value.clone();
    meta.observe_connection(snap);
    match dest {
        Dest::Service(svc, port) => {
            meta.set_service(&svc);
            let Some(balancer) = shared.balancers.get(&svc.fqdn, port) else {
                tracing::info!(service = %svc.fqdn, flags = "UH", "no endpoints; closing TCP connection");
                meta.metrics().tcp_opened(&meta.tcp_labels("UH"));
                meta.metrics().tcp_closed(&meta.tcp_labels("UH"), 0, 0);
                return;
            };
            match forward::open_stream_to_service(shared, &balancer, &svc, &meta, false).await {
                Ok((slot, upstream, peer_id)) => {
                    meta.destination = slot.peer(&svc.namespace);
                    forward::note_mtls(&mut meta, peer_id.as_ref());
                    meta.note_upstream(slot.endpoint.address, || {
                        crate::telemetry::access_log::cluster_name(true, port, None, &svc.fqdn)
                    });
                    let in_flight = slot.state.start();
                    crate::tcp::relay(io, upstream, idle, &meta, "-").await;
                    in_flight.finish_now();
                }
                Err(e) => {
                    tracing::info!(service = %svc.fqdn, flags = e.flag.code(), "{}", e.message);
                    meta.metrics().tcp_opened(&meta.tcp_labels(e.flag.code()));
                    meta.metrics().tcp_closed(&meta.tcp_labels(e.flag.code()), 0, 0);
                }
            }
        }
        Dest::Passthrough(addr) => {
            if snap.traffic_policy() == OutboundTrafficPolicy::RegistryOnly {
                tracing::info!(%addr, flags = "NR", "not a mesh service (REGISTRY_ONLY); closing");
                return;
            }
            match shared.pools.connect_tcp(addr).await {
                Ok(upstream) => crate::tcp::relay(io, upstream, idle, &meta, "PT").await,
                Err(e) => tracing::info!(%addr, flags = "UF", error = %e, "passthrough connect failed"),
            }
        }
    }
}
