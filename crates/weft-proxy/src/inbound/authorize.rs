//! Who is calling (the certificate's identity, never a header) and what the workload's
//! authorization policies say; open TCP connections are checked again when a push changes them.

use super::*;

/// Who is calling, as authorization sees it: the certificate's identity (never a header).
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) principal: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) ip: IpAddr,
    pub(super) mtls: bool,
}

/// Takes a token for one request to `port` from the caller; 429 `RL` when a limit refuses.
pub(super) fn rate_limit(shared: &crate::config::Shared, who: &Caller, port: u16) -> Result<(), ProxyError> {
    shared
        .rate_limits
        .check(port, who.principal.as_deref())
        .map_err(|l| {
            tracing::debug!(port, limit = l.which, "request rate limited");
            ProxyError::rate_limited(
                format!("local rate limit ({}) on port {port}", l.which),
                l.retry_after,
            )
        })
}

impl Caller {
    pub(super) fn of(peer: &MeshPeer, remote: Option<SocketAddr>) -> Self {
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
pub(super) fn declared_port(snap: &Snapshot, port: u16) -> u16 {
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
pub(super) fn port_refuses_plaintext(snap: &Snapshot, who: &Caller, port: u16) -> bool {
    !who.mtls && snap.config.inbound.mtls_for(port) == MtlsMode::Strict
}

/// Verifies the request's end-user JWT (Istio `RequestAuthentication`) before authorization:
/// `Ok(None)` without a token or without rules, `Ok(Some)` with a verified one (the token's
/// header removed, output headers written), `Err` with the 401 for a refused token.
pub(super) async fn authenticate(
    shared: &Shared,
    snap: &Snapshot,
    meta: &RequestMeta,
    req: &mut Request<Incoming>,
) -> Result<Option<RequestAuth>, ProxyError> {
    if snap.authn.is_empty() {
        return Ok(None);
    }
    let uri = req.uri().clone();
    match snap
        .authn
        .authenticate(&shared.jwks, req.headers_mut(), &uri, crate::authn::now_secs())
        .await
    {
        Ok(verified) => Ok(verified.map(|v| v.auth)),
        Err(e) => {
            let detail = match &e {
                crate::authn::AuthnError::JwksFetchFailed(why) => why.as_str(),
                _ => "",
            };
            tracing::info!(service = %meta.service.0, reason = %e, detail, "request JWT refused");
            Err(ProxyError::new(
                Flag::Unauthenticated,
                StatusCode::UNAUTHORIZED,
                e.to_string(),
            ))
        }
    }
}

/// The 401 for a refused token, with the `WWW-Authenticate` challenge Envoy sends.
pub(super) fn unauthenticated(meta: RequestMeta, e: &ProxyError) -> Response<Body> {
    let mut resp = meta.fail(e);
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    resp
}

/// Runs the workload's authorization policies; `req` None for a TCP connection. With
/// `metrics` (a new request or connection, not a re-check of an open one) a denial and an
/// AUDIT match are counted with their policy, and an audited request is logged.
pub(super) fn check(
    snap: &Snapshot,
    metrics: Option<&Metrics>,
    who: &Caller,
    port: u16,
    req: Option<&Request<Incoming>>,
    request_auth: Option<&RequestAuth>,
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
            request_auth,
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
pub(super) fn denied(_: &AuthzDecision) -> ProxyError {
    ProxyError::unauthorized("RBAC: access denied")
}

/// A CONNECT stream refused before it opened: counted as a TCP connection with `flags`.
pub(super) fn refused_stream(meta: &RequestMeta, flags: &'static str, status: StatusCode) -> Response<Body> {
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
pub(super) const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// Completes when a config pushed after the connection opened no longer allows it
/// (shared/ARCHITECTURE.md, "State that outlives a push": open connections are checked again).
pub(super) fn until_revoked(
    shared: Arc<Shared>,
    who: Caller,
    port: u16,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
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
            if let Err(d) = check(&seen, None, &who, port, None, None) {
                tracing::info!(port, principal = ?who.principal, flags = "RBAC", policy = %d.describe(), "open TCP connection closed: no longer authorized");
                return;
            }
        }
    })
}

/// A client stream that fails (and so ends its relay) once `revoked` completes.
pub(super) struct Revocable<T> {
    inner: T,
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl<T> Revocable<T> {
    pub(super) fn new(inner: T, revoked: Pin<Box<dyn Future<Output = ()> + Send>>) -> Self {
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
