//! Failures the proxy itself generates, each with an Envoy-style response flag that shows in
//! metrics (`response_flags`), logs, and the response (`x-weft-response-flags`,
//! `x-weft-proxy-error`), so a user can see why without reading code.

use std::fmt;

use http::{HeaderValue, Response, StatusCode};

use super::Body;

/// The response flag vocabulary (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// No healthy upstream: the service has no endpoint to send to.
    NoHealthyUpstream,
    /// Upstream connection failure: connect refused or timed out on every endpoint tried.
    UpstreamConnectFailure,
    /// Upstream request timeout.
    UpstreamTimeout,
    /// Upstream overflow: a limit (connections, pending requests) was hit.
    Overflow,
    /// No route: no mesh service for this destination (REGISTRY_ONLY) or no listener.
    NoRoute,
    /// Downstream connection termination: the client went away mid-request.
    DownstreamTerminated,
    /// Upstream connection termination: the upstream reset the stream or closed.
    UpstreamTerminated,
    /// Passthrough: sent unchanged to a destination outside the mesh (ALLOW_ANY).
    Passthrough,
    /// The request was malformed and refused by the proxy.
    BadRequest,
    /// A fault-injection rule aborted the request.
    FaultInjected,
    /// An authorization policy denied the request or connection (Envoy's RBAC filter).
    Unauthorized,
    /// A request's JWT was refused (RequestAuthentication): 401. Envoy sets no flag for it.
    Unauthenticated,
    /// A local rate limit refused the request (Envoy's local rate limit filter).
    RateLimited,
}

/// An error the proxy answers itself.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub flag: Flag,
    pub status: StatusCode,
    pub message: String,
    /// The upstream provably did not process the request (a refused stream, a request never
    /// written): a retry cannot run it twice.
    pub not_sent: bool,
    /// The `grpc-status` a gRPC client gets, when not the flag's (a fault's `grpcStatus`).
    pub grpc_status: Option<u32>,
    /// Seconds after which the client may try again (`retry-after`), for a rate limit.
    pub retry_after_secs: Option<u64>,
}

pub const FLAGS_HEADER: &str = "x-weft-response-flags";
pub const ERROR_HEADER: &str = "x-weft-proxy-error";

// === impl Flag ===

impl Flag {
    /// The short code, as Envoy prints it.
    pub fn code(self) -> &'static str {
        match self {
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamTimeout => "UT",
            Flag::Overflow => "UO",
            Flag::NoRoute => "NR",
            Flag::DownstreamTerminated => "DC",
            Flag::UpstreamTerminated => "UC",
            Flag::Passthrough => "PT",
            Flag::BadRequest => "DPE",
            Flag::FaultInjected => "FI",
            Flag::Unauthorized => "RBAC",
            Flag::Unauthenticated => "-",
            Flag::RateLimited => "RL",
        }
    }

    /// gRPC status a gRPC client gets for this failure.
    fn grpc_status(self) -> u32 {
        match self {
            Flag::UpstreamTimeout => 4,      // DEADLINE_EXCEEDED
            Flag::NoRoute => 12,             // UNIMPLEMENTED
            Flag::BadRequest => 13,          // INTERNAL
            Flag::DownstreamTerminated => 1, // CANCELLED
            Flag::Unauthorized => 7,         // PERMISSION_DENIED
            Flag::Unauthenticated => 16,     // UNAUTHENTICATED
            Flag::RateLimited => 8,          // RESOURCE_EXHAUSTED
            _ => 14,                         // UNAVAILABLE
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

// === impl ProxyError ===

impl ProxyError {
    pub fn new(flag: Flag, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            flag,
            status,
            message: message.into(),
            not_sent: false,
            grpc_status: None,
            retry_after_secs: None,
        }
    }

    /// A local rate limit said no: 429 with `retry-after` (gRPC: RESOURCE_EXHAUSTED), flag `RL`.
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(Flag::RateLimited, StatusCode::TOO_MANY_REQUESTS, message);
        // Whole seconds, rounded up: a client told 0 would come straight back.
        e.retry_after_secs = Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0));
        e
    }

    pub fn no_endpoints(service: &str) -> Self {
        Self::new(
            Flag::NoHealthyUpstream,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no endpoints for {service}"),
        )
    }

    pub fn no_route(message: impl Into<String>) -> Self {
        Self::new(Flag::NoRoute, StatusCode::NOT_FOUND, message)
    }

    /// An authorization policy said no: 403 (gRPC: PERMISSION_DENIED), flag `RBAC`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Flag::Unauthorized, StatusCode::FORBIDDEN, message)
    }

    pub fn bad_request(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(Flag::BadRequest, status, message)
    }

    /// What a caller outside the mesh is told: the flag's fixed words, never the detailed
    /// message (which may name a policy or an internal address). A malformed request's own
    /// fault is described, as it names only what the caller sent.
    pub fn public_message(&self) -> &str {
        match self.flag {
            Flag::Unauthorized => "RBAC: access denied",
            // Envoy's fixed words for why the token was refused.
            Flag::BadRequest | Flag::Unauthenticated => &self.message,
            Flag::NoHealthyUpstream => "no healthy upstream",
            Flag::UpstreamConnectFailure => "upstream connect error",
            Flag::UpstreamTimeout => "upstream request timeout",
            Flag::Overflow => "upstream overflow",
            Flag::NoRoute => "no route",
            Flag::DownstreamTerminated => "downstream terminated",
            Flag::UpstreamTerminated => "upstream reset",
            Flag::Passthrough => "passthrough",
            Flag::FaultInjected => "fault filter abort",
            Flag::RateLimited => "local rate limited",
        }
    }

    /// The response a client gets; `outside` (a caller outside the mesh) gets only
    /// [`public_message`](Self::public_message). gRPC clients get a trailers-only response
    /// (HTTP 200 with `grpc-status`), never a bare 5xx.
    pub fn to_response(&self, grpc: bool, outside: bool) -> Response<Body> {
        let message = if outside {
            self.public_message()
        } else {
            &self.message
        };
        let mut builder = Response::builder().header(FLAGS_HEADER, self.flag.code());
        if let Some(secs) = self.retry_after_secs {
            builder = builder.header(http::header::RETRY_AFTER, secs);
        }
        if let Ok(v) = HeaderValue::from_str(&sanitize(message)) {
            builder = builder.header(ERROR_HEADER, v.clone());
            if grpc {
                builder = builder.header("grpc-message", v);
            }
        }
        let built = if grpc {
            builder
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(
                    "grpc-status",
                    self.grpc_status.unwrap_or_else(|| self.flag.grpc_status()),
                )
                .body(super::empty())
        } else {
            builder
                .status(self.status)
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(super::full(match self.flag {
                    // Envoy's RBAC body, word for word.
                    Flag::Unauthorized | Flag::Unauthenticated => format!("{}\n", sanitize(message)),
                    _ => format!("{}: {}\n", self.flag.code(), sanitize(message)),
                }))
        };
        built.unwrap_or_else(|_| {
            let mut r = Response::new(super::empty());
            *r.status_mut() = self.status;
            r
        })
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.flag, self.message)
    }
}

/// Header values cannot hold control characters; messages come partly from the network.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_are_trailers_only() {
        let e = ProxyError::no_endpoints("reviews");
        let r = e.to_response(true, false);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()[FLAGS_HEADER], "UH");
        let r = e.to_response(false, false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[ERROR_HEADER], "no endpoints for reviews");
    }

    #[test]
    fn authorization_denials_are_403_rbac_or_grpc_permission_denied() {
        let e = ProxyError::unauthorized("RBAC: access denied");
        let r = e.to_response(false, true);
        assert_eq!(
            (r.status(), &r.headers()[FLAGS_HEADER]),
            (StatusCode::FORBIDDEN, &HeaderValue::from_static("RBAC"))
        );
        let r = e.to_response(true, true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "7");
    }

    #[test]
    fn rate_limits_are_429_with_retry_after_or_grpc_resource_exhausted() {
        let e = ProxyError::rate_limited(
            "local rate limit (total)",
            std::time::Duration::from_millis(1_200),
        );
        let r = e.to_response(false, true);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[FLAGS_HEADER], "RL");
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "2", "rounded up");
        let r = e.to_response(true, true);
        assert_eq!(
            (r.status(), &r.headers()["grpc-status"]),
            (StatusCode::OK, &HeaderValue::from_static("8"))
        );
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        let e = ProxyError::no_route("bad\r\nhost");
        assert_eq!(e.to_response(false, false).headers()[ERROR_HEADER], "bad  host");
    }

    #[test]
    fn a_caller_outside_the_mesh_learns_no_address_or_policy() {
        let e = ProxyError::new(
            Flag::UpstreamConnectFailure,
            StatusCode::SERVICE_UNAVAILABLE,
            "app at 10.1.2.3:9080: connection refused",
        );
        let r = e.to_response(false, true);
        assert_eq!(r.headers()[ERROR_HEADER], "upstream connect error");
        let r = e.to_response(false, false);
        assert_eq!(
            r.headers()[ERROR_HEADER],
            "app at 10.1.2.3:9080: connection refused"
        );
    }
}
