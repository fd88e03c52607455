//! Traffic arriving for the workload, from accept to the local app.
//!
//! From other proxies it arrives on the mesh port as HTTP/2: requests name the app port in a
//! mesh header, TCP arrives as CONNECT streams to `ip:port` (shared/ARCHITECTURE.md, "The hop
//! between proxies"). From outside the mesh it arrives on an app port (or redirected there by
//! iptables to the capture port): detected, mesh headers stripped, passed to the app.
//
//! Read top to bottom: [`mesh`] (the mesh port: peers' HTTP/2, mTLS, CONNECT tunnels),
//! [`app_port`] (app ports and the capture port: traffic from outside the mesh), then
//! [`authorize`] (who is calling and what the policies say, for both), and [`to_app`], where
//! every request ends.

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
use weft_api::proxy_config::{MtlsMode, Protocol, RequestAuth};

use crate::config::{InboundTarget, Shared, Snapshot};
use crate::detect::{detect, Detected};
use crate::forward;
use crate::http::canonical::{canonicalize, set_client_identity};
use crate::http::error::{Flag, ProxyError};
use crate::http::headers::{self as mesh_headers, is_grpc, strip_mesh, HeadersView};
use crate::http::server::{check_request, close_after, serve, Version};
use crate::http::Body;
use crate::io::PrefixedIo;
use crate::telemetry::access_log;
use crate::telemetry::metered::RequestMeta;
use crate::telemetry::metrics::{Label, Metrics, Peer};

mod app_port;
mod authorize;
mod mesh;

pub use app_port::handle_app_port;
pub use mesh::handle_mesh;

use authorize::*;

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
pub(crate) enum MeshPeer {
    /// mTLS: the peer's SPIFFE ID and this workload's, and what its mesh headers claimed.
    Mtls {
        peer: Label,
        local: Label,
        claims: Arc<mesh::Claims>,
    },
    /// Plaintext: nothing about the peer is verified.
    Plaintext,
}

async fn to_app(
    shared: &Shared,
    target: InboundTarget,
    mut req: Request<Incoming>,
    mut meta: RequestMeta,
) -> Response<Body> {
    meta.note_upstream(target.app, || {
        access_log::cluster_name(false, target.app.port(), None, "")
    });
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
