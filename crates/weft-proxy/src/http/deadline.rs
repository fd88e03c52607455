//! A response body that ends with an error once the route's timeout passes: the timeout covers
//! the whole exchange, so an upstream that sends its head and then stalls its body cannot hold
//! the stream open forever (Envoy's route `timeout` counts until the response ends).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{Body, BoxError};

/// Wraps `inner` so it fails at `deadline`.
pub fn until(inner: Body, deadline: Instant) -> Body {
    super::boxed(DeadlineBody {
        inner,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    })
}

/// The route timeout passed while the response body was still streaming.
#[derive(Debug, thiserror::Error)]
#[error("upstream response timeout: the route's timeout passed before the response ended")]
pub struct ResponseTimeout;

struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ResponseTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_at_the_deadline() {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(1);
        let start = Instant::now();
        let mut body = until(super::super::boxed(body), start + Duration::from_secs(2));
        tx.send_data(Bytes::from_static(b"head of the body"))
            .await
            .expect("send");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "head of the body");
        // The upstream stalls; the deadline ends the body with an error, not a hang.
        let next = body.frame().await.expect("an end");
        assert!(next.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_in_time_is_untouched() {
        let body = super::super::full("all of it");
        let mut body = until(body, Instant::now() + Duration::from_secs(2));
        let data = body
            .frame()
            .await
            .expect("frame")
            .expect("data")
            .into_data()
            .expect("data");
        assert_eq!(data, "all of it");
        assert!(body.frame().await.is_none());
    }
}
