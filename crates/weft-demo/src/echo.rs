//! `weft demo`'s backends: a server that answers every request with who it is and what it was
//! asked (`<name> <METHOD> <path>` and an `x-echo-server: <name>` header), so the demo shows
//! which backend the balancer chose. Its own, small: the shipped binary links no test code.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The header naming the backend that answered.
pub const SERVER_HEADER: &str = "x-echo-server";

/// Starts a named backend on a port of `127.0.0.1` the OS picks; it stops with `stop`.
pub async fn start(name: &str, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let name = http::HeaderValue::from_str(name)?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                res = listener.accept() => match res {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let name = name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let name = name.clone();
                    async move { Ok::<_, Infallible>(answer(&name, &req)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &http::HeaderValue, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = format!(
        "{} {} {}\n",
        String::from_utf8_lossy(name.as_bytes()),
        req.method(),
        req.uri().path()
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(SERVER_HEADER, name.clone());
    resp
}
