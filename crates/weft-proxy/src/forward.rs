//! Sending to an upstream: choosing an endpoint (with failover before any byte went out),
//! shaping the request for the hop, opening TCP tunnels, and metering what comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use weft_api::proxy_config::Protocol;

use crate::balance::{Balancer, Outcome, Slot};
use crate::config::{ServiceInfo, Shared};
use crate::http::error::{Flag, ProxyError};
use crate::http::headers::{self as mesh_headers, strip_hop_by_hop};
use crate::http::Body;
use crate::pool::{ConnPolicy, ConnectError, SendError, NO_CONN_POLICY};
use crate::telemetry::metered::RequestMeta;
use crate::telemetry::metrics::Label;

/// How long an endpoint that refused a connection is skipped by the balancer.
const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(5);
/// Endpoints tried before giving up on a connection failure.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How a request travels to its next hop.
pub enum Hop {
    /// To a peer proxy's mesh port, as an HTTP/2 stream naming the app port.
    Mesh {
        peer: SocketAddr,
        target_port: u16,
        /// The SPIFFE ID the peer must present on mTLS (None: any the bundle vouches for).
        identity: Option<String>,
    },
    /// Straight to an app (or a destination outside the mesh), in the request's own version.
    Direct { addr: SocketAddr },
}

// === impl Hop ===

impl Hop {
    pub fn for_endpoint(slot: &Slot) -> Self {
        let ep = &slot.endpoint;
        match ep.mesh_port {
            Some(p) => Hop::Mesh {
                peer: SocketAddr::new(ep.address.ip(), p),
                target_port: ep.address.port(),
                identity: ep.identity.clone(),
            },
            None => Hop::Direct { addr: ep.address },
        }
    }

    /// Establishes the connection this hop needs, before any request byte is sent.
    /// `policy`: what the service's `connectionPool` asks of the connection.
    async fn ready(&self, shared: &Shared, h2: bool, policy: &ConnPolicy) -> Result<Ready, ConnectError> {
        Ok(match self {
            Hop::Mesh { peer, identity, .. } => {
                let conn = shared.pools.h2_mesh(*peer, identity.as_deref(), policy).await?;
                Ready::H2(conn.sender, conn.peer_identity)
            }
            Hop::Direct { addr } if h2 => Ready::H2(shared.pools.h2(*addr, policy).await?, None),
            Hop::Direct { addr } => Ready::H1(shared.pools.h1(*addr, policy).await?),
        })
    }
}

enum Ready {
    H1(crate::pool::H1Conn),
    /// With the peer's SPIFFE ID when the connection is mTLS.
    H2(hyper::client::conn::http2::SendRequest<Body>, Option<Arc<str>>),
}

impl Ready {
    fn peer_identity(&self) -> Option<&Arc<str>> {
        match self {
            Ready::H2(_, id) => id.as_ref(),
            Ready::H1(_) => None,
        }
    }
}

/// Marks `meta` as having left over mTLS to the peer `id` (the source reporter's
/// `destination_principal` and `connection_security_policy`).
pub fn note_mtls(meta: &mut RequestMeta, id: Option<&Arc<str>>) {
    if let Some(id) = id {
        meta.destination.principal = Label(id.clone());
        meta.connection_security_policy = crate::tls::MUTUAL_TLS;
    }
}

/// Picks an endpoint and connects to it, moving on to another endpoint when one refuses or
/// times out (allowed: nothing of the request has gone upstream yet).
async fn pick_and_connect<'b>(
    shared: &Shared,
    balancer: &'b Balancer,
    service: &str,
    h2: bool,
) -> Result<(&'b Slot, Hop, Ready), ProxyError> {
    let breaker = balancer.breaker();
    // Waiting for a connection holds a place among the pending requests.
    let _pending = match breaker.map(|b| b.pending()).transpose() {
        Ok(admitted) => admitted.flatten(),
        Err(overflow) => return Err(overflow_error(service, &overflow)),
    };
    let policy = breaker.map_or(&NO_CONN_POLICY, |b| &b.conn);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_err = None;
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let Some(slot) = balancer.pick(&tried) else { break };
        let hop = Hop::for_endpoint(slot);
        match hop
            .ready(shared, h2 || matches!(hop, Hop::Mesh { .. }), policy)
            .await
        {
            Ok(ready) => return Ok((slot, hop, ready)),
            // A full endpoint is not a broken one: 503 `UO`, no penalty, no failover.
            Err(e @ ConnectError::Overflow { .. }) => return Err(connect_error(e)),
            Err(e @ ConnectError::ServiceOverflow { .. }) => {
                if let Some(b) = breaker {
                    b.count_connection_overflow();
                }
                return Err(connect_error(e));
            }
            Err(e) => {
                tracing::info!(service, endpoint = %slot.state.addr, error = %e, "endpoint failed, trying another");
                slot.state.mark_unreachable(UNREACHABLE_BACKOFF);
                balancer.observe(slot, Outcome::LocalFailure);
                tried.push(slot.state.addr);
                last_err = Some(e);
            }
        }
    }
    Err(match last_err {
        Some(e) => connect_error(e),
        None => no_healthy_endpoint(balancer, service),
    })
}

/// The error when a balancer picks nothing: no endpoints, or every one ejected.
fn no_healthy_endpoint(balancer: &Balancer, service: &str) -> ProxyError {
    let ejected = balancer.ejected(tokio::time::Instant::now());
    if ejected == 0 {
        return ProxyError::no_endpoints(service);
    }
    ProxyError::new(
        Flag::NoHealthyUpstream,
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "no healthy endpoint for {service}: {ejected} of {} ejected by outlier detection",
            balancer.slots().len()
        ),
    )
}

/// What a request's result tells outlier detection: the upstream's status, a failure of the
/// hop itself, or nothing (a limit of this proxy, a cancelled request).
fn outcome(result: &Result<Response<Body>, ProxyError>) -> Option<Outcome> {
    match result {
        Ok(resp) => {
            let grpc = resp.headers().get("grpc-status").map(HeaderValue::as_bytes);
            Some(Outcome::of_response(resp.status().as_u16(), grpc))
        }
        Err(e) if matches!(e.flag, Flag::UpstreamConnectFailure | Flag::UpstreamTerminated) => {
            Some(Outcome::LocalFailure)
        }
        Err(_) => None,
    }
}

/// A `connectionPool` limit refused the request: 503 `UO` at once, naming the limit.
pub fn overflow_error(service: &str, overflow: &crate::balance::Overflow) -> ProxyError {
    let mut err = ProxyError::new(
        Flag::Overflow,
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{service}: {overflow}"),
    );
    err.not_sent = true;
    err
}

pub fn connect_error(e: ConnectError) -> ProxyError {
    let flag = match e {
        ConnectError::Overflow { .. } | ConnectError::ServiceOverflow { .. } => Flag::Overflow,
        _ => Flag::UpstreamConnectFailure,
    };
    let mut err = ProxyError::new(flag, StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    // Nothing of the request went out.
    err.not_sent = true;
    err
}

/// Forwards an HTTP request to one of the endpoints of `svc` (or of its `subset`).
pub async fn to_service(
    shared: &Shared,
    svc: &Arc<ServiceInfo>,
    port: u16,
    subset: Option<&str>,
    mut req: Request<Body>,
    meta: &mut RequestMeta,
) -> Result<Response<Body>, ProxyError> {
    let balancer = shared
        .balancers
        .get_subset(&svc.fqdn, port, subset)
        .ok_or_else(|| match subset {
            Some(name) => ProxyError::no_endpoints(&format!("{} subset {name}", svc.fqdn)),
            None => ProxyError::no_endpoints(&svc.fqdn),
        })?;
    if mesh_headers::is_upgrade(req.headers()) {
        // The peer proxy reads the upgrade request inside the tunnel as HTTP: it is
        // authorized by its path, headers and method like any request.
        let (slot, stream, peer_id) = open_stream_to_service(shared, &balancer, svc, meta, true).await?;
        meta.destination = slot.peer(&svc.namespace);
        note_mtls(meta, peer_id.as_ref());
        return upgrade(stream, req).await;
    }
    // A port declared HTTP/1 gets HTTP/1.1 whatever the client spoke (gRPC excepted), as the
    // inbound side does for its app: an endpoint without a sidecar may speak nothing else.
    if svc.port_protocol(port) == Some(Protocol::Http) && !meta.grpc {
        *req.version_mut() = Version::HTTP_11;
    }
    let h2 = req.version() == Version::HTTP_2;
    // A place among the requests in flight, held until the response body ends.
    let admitted = match balancer.breaker().map(|b| b.request()).transpose() {
        Ok(admitted) => admitted.flatten(),
        Err(overflow) => return Err(overflow_error(&svc.fqdn, &overflow)),
    };
    let (slot, hop, ready) = pick_and_connect(shared, &balancer, &svc.fqdn, h2).await?;
    meta.destination = slot.peer(&svc.namespace);
    note_mtls(meta, ready.peer_identity());
    meta.note_upstream(slot.endpoint.address, || {
        crate::telemetry::access_log::cluster_name(true, port, subset, &svc.fqdn)
    });
    let in_flight = slot.state.start();
    let fallback = || format!("{}:{port}", svc.fqdn);
    let req = shape(req.map(|b| meta.count_request(b)), &fallback, &hop, meta);
    let resp = send(ready, req).await;
    in_flight.finish_now();
    if let Some(o) = outcome(&resp) {
        balancer.observe(slot, o);
    }
    match admitted {
        None => resp,
        Some(place) => resp.map(|r| r.map(|body| hold_until_end(body, place))),
    }
}

/// The body, holding `place` until it ends or is dropped.
fn hold_until_end(body: Body, place: crate::balance::Admitted) -> Body {
    use http_body_util::BodyExt;
    // The closure owns the place: it is dropped with the body, whichever way the body ends.
    crate::http::boxed(body.map_err(move |e| {
        let _held = &place;
        e
    }))
}

/// Forwards an HTTP request straight to `addr` (an app, or a destination outside the mesh).
pub async fn to_addr(
    shared: &Shared,
    addr: SocketAddr,
    req: Request<Body>,
    meta: &RequestMeta,
) -> Result<Response<Body>, ProxyError> {
    if mesh_headers::is_upgrade(req.headers()) {
        let stream = shared.pools.connect_tcp(addr).await.map_err(connect_error)?;
        return upgrade(stream, req).await;
    }
    let hop = Hop::Direct { addr };
    let h2 = req.version() == Version::HTTP_2;
    let ready = hop
        .ready(shared, h2, &NO_CONN_POLICY)
        .await
        .map_err(connect_error)?;
    let fallback = || addr.to_string();
    let req = shape(req.map(|b| meta.count_request(b)), &fallback, &hop, meta);
    send(ready, req).await
}

async fn send(ready: Ready, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let result = match ready {
        Ready::H1(conn) => conn.send(req).await,
        Ready::H2(mut sender, _) => sender.send_request(req).await.map_err(SendError::from),
    };
    match result {
        Ok(resp) => Ok(shape_response(resp)),
        Err(SendError::Connect(e)) => Err(connect_error(e)),
        Err(SendError::Upstream(e)) => {
            let mut err = ProxyError::new(
                Flag::UpstreamTerminated,
                StatusCode::BAD_GATEWAY,
                format!("upstream failed before responding: {e}"),
            );
            err.not_sent = refused_before_processing(&e);
            Err(err)
        }
    }
}

/// Whether the upstream provably did not process the request: an HTTP/2 stream it refused
/// (`REFUSED_STREAM`, which GOAWAY also gives the streams beyond its last id), or a request
/// hyper never wrote.
fn refused_before_processing(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// The `Host`/`:authority` the client addressed, in canonical form once the request went
/// through [`canonicalize`](crate::http::canonical::canonicalize) (URI and `Host` then agree).
pub fn request_authority<B>(req: &Request<B>) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str());
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok())
}

/// Shapes a request for its hop: HTTP/2 with an absolute URI towards a peer proxy (plus the
/// mesh headers naming the app port, the app's protocol and the source), or the app's own
/// version towards an app.
/// `fallback` names the authority when the request carries none (built only then).
fn shape(
    mut req: Request<Body>,
    fallback: &dyn Fn() -> String,
    hop: &Hop,
    meta: &RequestMeta,
) -> Request<Body> {
    let was_h1 = req.version() != Version::HTTP_2;
    strip_hop_by_hop(req.headers_mut());
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let to_h2 = match hop {
        Hop::Mesh { target_port, .. } => {
            let h = req.headers_mut();
            h.insert(mesh_headers::TARGET_PORT, HeaderValue::from(*target_port));
            if was_h1 {
                h.insert(mesh_headers::ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
            }
            meta.write_mesh_headers(h);
            true
        }
        Hop::Direct { .. } => !was_h1,
    };
    if to_h2 {
        // `:authority` from the URI (an HTTP/2 request already has it), else from `Host`.
        let authority = match req.uri().authority() {
            Some(a) => Some(a.clone()),
            None => {
                let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
                Authority::try_from(host.map_or_else(fallback, str::to_string)).ok()
            }
        };
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(header::HOST);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = authority;
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    } else {
        // Canonical already: `Host` equals the URI's authority when both exist.
        let host = match (req.headers().contains_key(header::HOST), req.uri().authority()) {
            (true, _) => None,
            (false, Some(a)) => HeaderValue::from_str(a.as_str()).ok(),
            (false, None) => HeaderValue::from_str(&fallback()).ok(),
        };
        if let Some(v) = host {
            req.headers_mut().insert(header::HOST, v);
        }
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::from(path);
    }
    req
}

fn shape_response(resp: Response<Incoming>) -> Response<Body> {
    let mut resp = resp.map(crate::http::boxed);
    strip_hop_by_hop(resp.headers_mut());
    resp
}

// === TCP: tunnels and upgrades ===

/// Opens a byte stream to one of `svc`'s endpoints: an HTTP/2 CONNECT tunnel through the
/// endpoint's proxy, or a TCP connection to an endpoint without one. With the peer proxy's
/// SPIFFE ID when the tunnel rides mTLS.
pub async fn open_stream_to_service<'b>(
    shared: &Shared,
    balancer: &'b Balancer,
    svc: &ServiceInfo,
    meta: &RequestMeta,
    http_upgrade: bool,
) -> Result<(&'b Slot, Box<dyn StreamBox>, Option<Arc<str>>), ProxyError> {
    let mut tried = Vec::new();
    let mut last = None;
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let Some(slot) = balancer.pick(&tried) else { break };
        let opened: Result<Opened, ProxyError> = match Hop::for_endpoint(slot) {
            Hop::Mesh { peer, identity, .. } => {
                let target = slot.endpoint.address;
                tunnel(shared, peer, identity.as_deref(), target, meta, http_upgrade).await
            }
            Hop::Direct { addr } => match shared.pools.connect_tcp(addr).await {
                Ok(s) => Ok((Box::new(s), None)),
                Err(e) => Err(connect_error(e)),
            },
        };
        match opened {
            Ok((stream, peer_id)) => return Ok((slot, stream, peer_id)),
            Err(e) if e.flag == Flag::UpstreamConnectFailure => {
                tracing::info!(service = %svc.fqdn, endpoint = %slot.state.addr, error = %e, "endpoint failed, trying another");
                slot.state.mark_unreachable(UNREACHABLE_BACKOFF);
                balancer.observe(slot, Outcome::LocalFailure);
                tried.push(slot.state.addr);
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| no_healthy_endpoint(balancer, &svc.fqdn)))
}

/// An opened byte stream, with the peer proxy's SPIFFE ID when it rides mTLS.
pub type Opened = (Box<dyn StreamBox>, Option<Arc<str>>);

/// A boxed byte stream (TCP or tunnel), so both kinds travel the same path.
pub trait StreamBox: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> StreamBox for T {}

/// An HTTP/2 CONNECT stream through the peer proxy at `peer` (which must present `identity`
/// on mTLS) to the app at `target`; with the peer's SPIFFE ID when the tunnel rides mTLS.
/// `http_upgrade`: the stream carries an HTTP/1.1 upgrade request (WebSocket) that the peer
/// serves as HTTP ([`mesh_headers::UPGRADE_TUNNEL`]), not raw bytes.
pub async fn tunnel(
    shared: &Shared,
    peer: SocketAddr,
    identity: Option<&str>,
    target: SocketAddr,
    meta: &RequestMeta,
    http_upgrade: bool,
) -> Result<Opened, ProxyError> {
    let conn = shared
        .pools
        .h2_mesh(peer, identity, &NO_CONN_POLICY)
        .await
        .map_err(connect_error)?;
    let mut sender = conn.sender;
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(target.to_string())
        .body(crate::http::empty())
        .map_err(|e| ProxyError::new(Flag::BadRequest, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    meta.write_mesh_headers(req.headers_mut());
    if http_upgrade {
        req.headers_mut()
            .insert(mesh_headers::UPGRADE_TUNNEL, HeaderValue::from_static("http/1.1"));
    }
    let resp = sender.send_request(req).await.map_err(|e| {
        ProxyError::new(
            Flag::UpstreamConnectFailure,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tunnel via {peer}: {e}"),
        )
    })?;
    if resp.status() != StatusCode::OK {
        let why = resp
            .headers()
            .get(crate::http::error::ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The peer's authorization said no: final, not a connection failure to retry
        // elsewhere or to hold against the endpoint.
        if resp.status() == StatusCode::FORBIDDEN {
            return Err(ProxyError::unauthorized(format!(
                "tunnel to {target} denied by the peer: {why}"
            )));
        }
        return Err(ProxyError::new(
            Flag::UpstreamConnectFailure,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tunnel via {peer} to {target} refused: {} {why}", resp.status()),
        ));
    }
    let upgraded = hyper::upgrade::on(resp).await.map_err(|e| {
        ProxyError::new(
            Flag::UpstreamConnectFailure,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tunnel via {peer}: {e}"),
        )
    })?;
    Ok((Box::new(TokioIo::new(upgraded)), conn.peer_identity))
}

/// Relays an HTTP/1 `Upgrade` (WebSocket) over `stream`: the request goes out as HTTP/1.1 and,
/// on `101 Switching Protocols`, both sides are joined byte for byte.
async fn upgrade<S: StreamBox + 'static>(
    stream: S,
    mut req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let client_side = hyper::upgrade::on(&mut req);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            ProxyError::new(
                Flag::UpstreamConnectFailure,
                StatusCode::BAD_GATEWAY,
                e.to_string(),
            )
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade connection ended");
        }
    });
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
    mesh_headers::strip_mesh(req.headers_mut());
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| ProxyError::new(Flag::UpstreamTerminated, StatusCode::BAD_GATEWAY, e.to_string()))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_side, server_side) {
                Ok((client, server)) => {
                    let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    Ok(resp.map(crate::http::boxed))
}
