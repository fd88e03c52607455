//! Bookinfo-style demo applications for trying Weft, written for this project: a product page
//! that calls a details service and a reviews service (three versions), the reviews service
//! calling a ratings service. Every app speaks HTTP/1.1 on `127.0.0.1`, forwards the trace
//! headers and the `end-user` header on every upstream call, and stamps every response with
//! `x-weft-demo-app: <name>-<version>`, so routing rules are visible on the page.
//!
//! - [`App`] / [`run_app`] / [`serve`]: the applications.
//! - [`Upstreams`]: where an app's calls go (`DETAILS_URL`, `REVIEWS_URL`, `RATINGS_URL`).
//! - [`load`]: a bounded, fixed-rate traffic generator.

#![forbid(unsafe_code)]

mod apps;
mod client;
pub mod echo;
mod load;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use load::{load, load_reporting, LoadReport};

/// The response header naming the app that answered: `<name>-<version>`.
pub const APP_HEADER: &str = "x-weft-demo-app";

/// The headers every app copies from its request onto each upstream call: trace context
/// (W3C, B3 multi and single header, Envoy's request id) and the user.
pub const PROPAGATED_HEADERS: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "end-user",
];

/// How long the product page waits for details or reviews.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long reviews waits for ratings: shorter than [`UPSTREAM_TIMEOUT`], so the inner hop gives
/// up first and the page still shows reviews (with "ratings unavailable") when ratings is slow.
pub const RATINGS_TIMEOUT: Duration = Duration::from_secs(2);

/// Base URLs of the services an app calls, e.g. `http://127.0.0.1:15001`. `None`: not
/// configured, and calls to that service fail (the page says so).
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    pub details: Option<String>,
    pub reviews: Option<String>,
    pub ratings: Option<String>,
}

impl Upstreams {
    /// From `DETAILS_URL`, `REVIEWS_URL` and `RATINGS_URL` (what `weft up` sets).
    pub fn from_env() -> Upstreams {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Upstreams {
            details: get("DETAILS_URL"),
            reviews: get("REVIEWS_URL"),
            ratings: get("RATINGS_URL"),
        }
    }
}

/// A version of the reviews service: v1 shows no stars, v2 black stars, v3 red stars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewsVersion {
    V1,
    V2,
    V3,
}

impl ReviewsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewsVersion::V1 => "v1",
            ReviewsVersion::V2 => "v2",
            ReviewsVersion::V3 => "v3",
        }
    }

    /// The star colour this version shows, if it shows stars.
    pub fn star_color(self) -> Option<&'static str> {
        match self {
            ReviewsVersion::V1 => None,
            ReviewsVersion::V2 => Some("black"),
            ReviewsVersion::V3 => Some("red"),
        }
    }
}

impl std::str::FromStr for ReviewsVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "v1" => Ok(ReviewsVersion::V1),
            "v2" => Ok(ReviewsVersion::V2),
            "v3" => Ok(ReviewsVersion::V3),
            other => anyhow::bail!("reviews version must be v1, v2 or v3, not {other:?}"),
        }
    }
}

/// One demo application.
#[derive(Debug, Clone)]
pub enum App {
    /// `GET /` and `/productpage`: the HTML page; `/api/v1/products/0`: the same as JSON.
    ProductPage { upstreams: Upstreams },
    /// `GET /details/{id}`: the book.
    Details,
    /// `GET /reviews/{id}`: two reviews; v2 and v3 add the ratings (from ratings).
    Reviews {
        version: ReviewsVersion,
        upstreams: Upstreams,
    },
    /// `GET /ratings/{id}`: the stars per reviewer.
    Ratings,
}

impl App {
    /// `productpage`, `details`, `reviews` or `ratings`.
    pub fn name(&self) -> &'static str {
        match self {
            App::ProductPage { .. } => "productpage",
            App::Details => "details",
            App::Reviews { .. } => "reviews",
            App::Ratings => "ratings",
        }
    }

    /// The version in `x-weft-demo-app`: the reviews version, else `v1`.
    pub fn version(&self) -> &'static str {
        match self {
            App::Reviews { version, .. } => version.as_str(),
            _ => "v1",
        }
    }

    /// `<name>-<version>`, the value of [`APP_HEADER`].
    pub fn id(&self) -> String {
        format!("{}-{}", self.name(), self.version())
    }
}

/// Binds `127.0.0.1:port` and serves `app` until the process ends.
pub async fn run_app(app: App, port: u16) -> anyhow::Result<()> {
    run_app_on(app, std::net::SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// Binds `addr` and serves `app` until the process ends.
pub async fn run_app_on(app: App, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(app = %app.id(), %addr, "demo app listening");
    serve(app, listener, CancellationToken::new()).await
}

/// Serves `app` on `listener` until `stop` is cancelled (connections in flight are dropped).
pub async fn serve(app: App, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let state = Arc::new(apps::State::new(app));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                res = conn => if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended");
                },
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Starts `app` on a port of `127.0.0.1` the OS picks; for tests and in-process demos.
pub async fn spawn(app: App, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(app, listener, stop).await {
            tracing::warn!(error = %e, "demo app stopped");
        }
    });
    Ok(addr)
}
