//! Request bodies that a retry can send again.
//!
//! A request body streams to the first attempt as it arrives (nothing waits for the whole
//! body, so a streaming gRPC call whose client waits for an answer before ending its stream
//! still works), and what passes is kept, up to a limit. A retry gets a new handle that first
//! replays what was kept, then goes on reading the client's body where the last attempt left
//! it. Once more than the limit has passed, nothing is kept and no retry may be sent.
//!
//! Only the newest handle reads: an attempt that was given up on may still be polled by its
//! connection for a while; its handle then ends with an error instead of taking frames (and
//! wake-ups) from the attempt that replaced it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};

use super::{Body, BoxError};

/// How much of a request body is kept for retries (as Linkerd and Envoy keep 64 KiB).
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// The client's body and what has been read of it, shared by every attempt's handle.
pub struct ReplayBody {
    state: Arc<Mutex<State>>,
}

/// One attempt's view of the body.
pub struct Handle {
    state: Arc<Mutex<State>>,
    generation: u64,
    /// Frames of `State::kept` this handle has sent.
    cursor: usize,
}

struct State {
    /// The client's body; None once it ended.
    inner: Option<Body>,
    kept: VecDeque<Bytes>,
    kept_bytes: usize,
    trailers: Option<HeaderMap>,
    /// More than the limit passed: `kept` is no longer the whole prefix.
    overflowed: bool,
    /// The client's body ended (all of it is in `kept`, unless overflowed).
    ended: bool,
    limit: usize,
    generation: u64,
}

impl ReplayBody {
    pub fn new(body: Body, limit: usize) -> Self {
        let ended = body.is_end_stream();
        Self {
            state: Arc::new(Mutex::new(State {
                inner: (!ended).then_some(body),
                kept: VecDeque::new(),
                kept_bytes: 0,
                trailers: None,
                overflowed: false,
                ended,
                limit,
                generation: 0,
            })),
        }
    }

    /// Whether another attempt can be sent with the whole body.
    pub fn can_replay(&self) -> bool {
        !self.lock().overflowed
    }

    /// The body for the next attempt; earlier handles stop reading.
    pub fn handle(&self) -> Handle {
        let mut state = self.lock();
        state.generation += 1;
        Handle {
            state: self.state.clone(),
            generation: state.generation,
            cursor: 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Handle {
    /// Boxed as every body the proxy sends.
    pub fn into_body(self) -> Body {
        super::boxed(self)
    }
}

/// The error a superseded handle ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a retry")]
struct Superseded;

impl http_body::Body for Handle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.generation != this.generation {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if this.cursor < state.kept.len() {
            let data = state.kept[this.cursor].clone();
            this.cursor += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(inner) = state.inner.as_mut() else {
            // Ended: the trailers, if any, once per handle.
            return match state.trailers.clone() {
                Some(t) if this.cursor == state.kept.len() => {
                    this.cursor += 1;
                    Poll::Ready(Some(Ok(Frame::trailers(t))))
                }
                _ => Poll::Ready(None),
            };
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.inner = None;
                state.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The client's body broke: no attempt can have it whole.
                state.inner = None;
                state.overflowed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        state.keep(data.clone());
                        this.cursor = state.kept.len();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(frame) => frame,
                };
                if let Some(t) = frame.trailers_ref() {
                    state.trailers = Some(t.clone());
                    // Counted as sent by this handle.
                    this.cursor = state.kept.len() + 1;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.generation == self.generation
            && state.ended
            && self.cursor >= state.kept.len() + usize::from(state.trailers.is_some())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.ended && !state.overflowed {
            let rest: usize = state.kept.iter().skip(self.cursor).map(Bytes::len).sum();
            return SizeHint::with_exact(rest as u64);
        }
        SizeHint::default()
    }
}

impl State {
    fn keep(&mut self, data: Bytes) {
        if self.overflowed {
            return;
        }
        self.kept_bytes += data.len();
        if self.kept_bytes > self.limit {
            self.overflowed = true;
            self.kept.clear();
            return;
        }
        self.kept.push_back(data);
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn chunks(parts: &[&'static str], trailers: Option<HeaderMap>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        super::super::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn read_all(body: Body) -> Result<(String, Option<HeaderMap>), BoxError> {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((
            String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        ))
    }

    #[tokio::test]
    async fn a_retry_sends_the_whole_body_again_with_its_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-timeout", "1S".parse().expect("value"));
        let replay = ReplayBody::new(chunks(&["hello ", "world"], Some(trailers.clone())), 1024);
        let first = read_all(replay.handle().into_body()).await.expect("first");
        assert_eq!(first, ("hello world".to_string(), Some(trailers.clone())));
        assert!(replay.can_replay());
        let second = read_all(replay.handle().into_body()).await.expect("second");
        assert_eq!(second, ("hello world".to_string(), Some(trailers)));
    }

    #[tokio::test]
    async fn a_retry_after_a_partial_read_replays_then_continues() {
        let replay = ReplayBody::new(chunks(&["a", "b", "c"], None), 1024);
        let mut first = replay.handle().into_body();
        let frame = first.frame().await.expect("a frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), "a");
        let second = replay.handle().into_body();
        // The first attempt was given up on: it may not take frames from the second.
        assert!(first.frame().await.expect("an error").is_err());
        assert_eq!(read_all(second).await.expect("second").0, "abc");
    }

    #[tokio::test]
    async fn more_than_the_limit_streams_through_and_forbids_retries() {
        let replay = ReplayBody::new(chunks(&["0123456789", "0123456789"], None), 15);
        let first = read_all(replay.handle().into_body()).await.expect("first");
        assert_eq!(first.0, "01234567890123456789");
        assert!(!replay.can_replay());
    }

    #[tokio::test]
    async fn an_empty_body_is_ended_from_the_start() {
        let replay = ReplayBody::new(super::super::empty(), 1024);
        let handle = replay.handle();
        assert!(http_body::Body::is_end_stream(&handle));
        assert_eq!(read_all(handle.into_body()).await.expect("empty").0, "");
        assert!(replay.can_replay());
    }
}
