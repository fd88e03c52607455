//! Real servers for Weft's end-to-end tests and demos, each on `127.0.0.1` and a port the OS
//! picks, so tests never depend on fixed ports or on a process started by hand.
//!
//! - [`HttpEcho`]: HTTP/1.1 and HTTP/2 (prior knowledge) on one port, answering what it was asked.
//! - [`TcpEcho`]: raw TCP echo that respects half-close.
//! - [`ServerFirst`]: raw TCP that greets first (like MySQL or SMTP), then echoes.
//! - [`TcpRelay`]: relays TCP to a target unchanged, counting connections (reuse, pooling).
//! - [`privilege`]: tests that need root or IPv6 skip elsewhere and fail under CI.
//! - [`StaticHttp`]: one fixed body at every path (a JWKS for end-user authentication tests).
//! - [`JwtIssuer`]: signs test JWTs (RS256, ES256) and gives its JWKS.
//! - [`OtlpCollector`]: an OTLP/gRPC trace collector keeping the spans it receives.
//!
//! Servers spawn on the current tokio runtime and stop when dropped.

#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

mod http_echo;
pub mod jwt;
mod otlp;
pub mod privilege;
mod relay;
mod serving;
mod static_http;
mod tcp_echo;

pub use http_echo::{HttpEcho, PROTOCOL_HEADER, SERVER_HEADER};
pub use jwt::JwtIssuer;
pub use otlp::{CollectedSpan, OtlpCollector};
pub use relay::TcpRelay;
pub use static_http::{Seen, StaticHttp};
pub use tcp_echo::{ServerFirst, TcpEcho};

/// Pause between two probes of [`wait_for_http`].
const PROBE_GAP: Duration = Duration::from_millis(25);

/// A port on `127.0.0.1` that was free a moment ago, for a process that must be told its port on
/// the command line. Another process may take it before it is used; prefer binding port 0.
///
/// # Panics
/// If no port can be bound on `127.0.0.1`, in which case no test could run anyway.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port on 127.0.0.1")
}

/// Waits until `addr` answers an HTTP/1.1 `GET path` with any response, for a process started
/// in the background (the proxy, a demo) to be ready. Any status counts: it shows the server is
/// up, and what it answered is for the test to check.
///
/// Fails with the last connection or protocol error once `timeout` has passed.
pub async fn wait_for_http(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // Bounded per attempt too: a server that accepts but never answers must not hang us.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(remaining, probe(addr, path)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("no answer"),
        };
        if Instant::now() + PROBE_GAP >= deadline {
            return Err(err.context(format!("http://{addr}{path} did not answer within {timeout:?}")));
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
}

async fn probe(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await;
    conn.abort();
    res?;
    Ok(())
}

#[cfg(test)]
mod tests;
