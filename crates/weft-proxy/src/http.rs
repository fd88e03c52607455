//! HTTP pieces shared by the inbound and outbound paths: the body type, the errors the proxy
//! itself answers with, header hygiene and the server-side connection driver.

pub mod canonical;
pub mod deadline;
pub mod error;
pub mod headers;
pub mod mirror;
pub mod replay;
pub mod retry_budget;
pub mod server;
pub mod smuggling;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

/// Error type of bodies crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends or receives, boxed once so the two sides can meet.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(http_body_util::Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> Body {
    boxed(http_body_util::Empty::new())
}
