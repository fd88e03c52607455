//! An HTTP server that answers what it was asked, over HTTP/1.1 and HTTP/2 on one port.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use crate::serving::Serving;

/// The error type of every response body, so one service can return bodies of several kinds.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of the echo server's responses.
type EchoBody = BoxBody<Bytes, BoxError>;

/// Header naming the server that answered, so a test can tell which endpoint a proxy picked.
pub const SERVER_HEADER: &str = "x-echo-server";

/// Header naming the protocol the request arrived in (`HTTP/1.1` or `HTTP/2.0`), so a test can
/// check what a proxy spoke upstream.
pub const PROTOCOL_HEADER: &str = "x-echo-protocol";

/// `/bytes/N` refuses more than this, so a typo in a test cannot take the machine's memory.
const MAX_BYTES: usize = 256 * 1024 * 1024;

/// Pause between the chunks of `/stream/N`, long enough that each arrives as its own write.
const STREAM_GAP: Duration = Duration::from_millis(10);

/// An HTTP echo server on a real socket, speaking HTTP/1.1 (keep-alive, chunked) and HTTP/2 with
/// prior knowledge on the same port.
///
/// Every response carries `x-echo-server: <name>` and `x-echo-protocol: HTTP/1.1|HTTP/2.0`.
/// By path:
/// - `/status/NNN`: that status (200..=599), empty body;
/// - `/delay/MS`: waits MS milliseconds, then answers like `/`;
/// - `/bytes/N`: N bytes of `x`, with a content-length;
/// - `/echo`: the request body streamed back as it arrives (large and chunked bodies work);
/// - `/stream/N`: N chunks `chunk i\n`, 10 ms apart, with no content-length (chunked on HTTP/1);
/// - anything else: 200 with `<name> <METHOD> <path?query>\n` and then one `name: value` line
///   per request header.
///
/// The server stops when dropped or on [`HttpEcho::stop`].
pub struct HttpEcho {
    serving: Serving,
    requests: Arc<AtomicU64>,
}

// === impl HttpEcho ===

impl HttpEcho {
    /// Starts a server named `name` on `127.0.0.1`, on a port the OS picks.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server named `name` on `addr`; used to bring an endpoint back on the same address.
    pub async fn start_on(name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        // Checked once here so that answering never has to handle a bad name.
        let name = HeaderValue::from_str(name)
            .map_err(|_| anyhow::anyhow!("echo server name {name:?} is not a header value"))?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let serving = Serving::bind(addr, move |stream| {
            serve_connection(stream, name.clone(), counter.clone())
        })
        .await?;
        Ok(Self { serving, requests })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// How many requests the server has received, over all connections and protocols.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// How many TCP connections the server has accepted.
    pub fn connections(&self) -> u64 {
        self.serving.accepted()
    }

    /// Closes the listener and every open connection, and returns once they are closed.
    pub async fn stop(self) {
        self.serving.stop().await;
    }
}

async fn serve_connection(stream: TcpStream, name: HeaderValue, requests: Arc<AtomicU64>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let name = name.clone();
        requests.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(respond(&name, req).await) }
    });
    // Clients that reset or vanish mid-request are ordinary in proxy tests, not failures.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Answers one request; every path is a total function of the request, so it never fails.
async fn respond(name: &HeaderValue, req: Request<Incoming>) -> Response<EchoBody> {
    let protocol = format!("{:?}", req.version());
    let mut rsp = route(name, req).await;
    let headers = rsp.headers_mut();
    headers.insert(SERVER_HEADER, name.clone());
    if let Ok(protocol) = HeaderValue::from_str(&protocol) {
        headers.insert(PROTOCOL_HEADER, protocol);
    }
    rsp
}

async fn route(name: &HeaderValue, req: Request<Incoming>) -> Response<EchoBody> {
    let path = req.uri().path();
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>() {
            // 1xx are not final responses; hyper cannot send them as one.
            Ok(code @ 200..=599) => match StatusCode::from_u16(code) {
                Ok(status) => with_status(status, empty()),
                Err(_) => bad_request("unknown status"),
            },
            _ => bad_request("/status/NNN takes a status from 200 to 599"),
        };
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return bad_request("/delay/MS takes milliseconds");
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return describe(name, &req);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<usize>() {
            Ok(n) if n <= MAX_BYTES => ok(full(vec![b'x'; n])),
            _ => bad_request("/bytes/N takes a count up to 256 MiB"),
        };
    }
    if let Some(n) = path.strip_prefix("/stream/") {
        let Ok(n) = n.parse::<u64>() else {
            return bad_request("/stream/N takes a count");
        };
        return ok(stream_chunks(n));
    }
    if path == "/echo" {
        // Handing the request body to the response streams it back frame by frame, so bodies
        // larger than any buffer, and bodies still arriving, echo as they come.
        return ok(req.into_body().map_err(BoxError::from).boxed());
    }
    describe(name, &req)
}

/// The default answer: who answered, what was asked, and with which headers.
fn describe(name: &HeaderValue, req: &Request<Incoming>) -> Response<EchoBody> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let mut text = format!(
        "{} {} {}\n",
        String::from_utf8_lossy(name.as_bytes()),
        req.method(),
        target
    );
    for (header, value) in req.headers() {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{}: {}", header, String::from_utf8_lossy(value.as_bytes()));
    }
    ok(full(text))
}

/// A body of `n` chunks sent as separate frames, so HTTP/1 frames it with chunked encoding and a
/// test can watch data arrive over time.
fn stream_chunks(n: u64) -> EchoBody {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(STREAM_GAP).await;
            }
            // The client went away: nobody is left to stream to.
            if tx
                .send(Frame::data(Bytes::from(format!("chunk {i}\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    body.boxed()
}

fn full(data: impl Into<Bytes>) -> EchoBody {
    Full::new(data.into()).map_err(BoxError::from).boxed()
}

fn empty() -> EchoBody {
    Empty::new().map_err(BoxError::from).boxed()
}

fn ok(body: EchoBody) -> Response<EchoBody> {
    with_status(StatusCode::OK, body)
}

fn bad_request(why: &str) -> Response<EchoBody> {
    with_status(StatusCode::BAD_REQUEST, full(format!("{why}\n")))
}

fn with_status(status: StatusCode, body: EchoBody) -> Response<EchoBody> {
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    rsp
}
