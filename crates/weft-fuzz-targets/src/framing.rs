//! `framing_guard`: the HTTP/1 request-smuggling guard between the socket and hyper.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};
use weft_proxy::http::smuggling::{FramingGuard, CONFLICT_HEADER};

use crate::pieces::{self, Pieces};

/// The line limit the server gives the guard by default (hyper's header buffer).
const MAX_LINE: usize = 8192;
/// A small limit, so that over-long lines (passed through for hyper to refuse) are reached too.
const SMALL_MAX_LINE: usize = 40;

/// `data`: a piece-size seed byte, then the bytes a client sends (see [`pieces`]).
///
/// What the guard promises for any input: it invents and loses nothing (hyper reads exactly as
/// many bytes as the client sent), it changes nothing but `Transfer-Encoding` header names into
/// [`CONFLICT_HEADER`] (same length), and how the bytes were cut into reads does not matter.
pub fn framing_guard(data: &[u8]) {
    let (sizes, stream) = pieces::split(data);
    // The size of hyper's reads, chosen by the same byte: small ones split the guard's output.
    let read_size = data.first().map_or(
        MAX_LINE,
        |&b| if b == 0 { MAX_LINE } else { usize::from(b % 61) + 1 },
    );

    let cut = through(stream, sizes.clone(), MAX_LINE, read_size);
    only_renamed(stream, &cut);
    if stream.len() <= MAX_LINE {
        // Below the line limit, the guard's decisions depend on the bytes alone.
        let whole = through(stream, vec![stream.len()], MAX_LINE, MAX_LINE);
        assert!(
            cut == whole,
            "the same bytes cut differently came out differently"
        );
    }
    let small = through(stream, sizes, SMALL_MAX_LINE, read_size);
    only_renamed(stream, &small);
}

/// What hyper reads through a guard from `stream` arriving in `sizes` pieces.
fn through(stream: &[u8], sizes: Vec<usize>, max_line: usize, read_size: usize) -> Vec<u8> {
    let mut guard = FramingGuard::new(Pieces::new(stream, sizes), max_line);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::with_capacity(stream.len());
    let mut chunk = vec![0u8; read_size];
    loop {
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return out,
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            Poll::Ready(Err(e)) => panic!("an in-memory reader cannot fail: {e}"),
            Poll::Pending => panic!("an in-memory reader is never pending"),
        }
        assert!(out.len() <= stream.len(), "the guard invented bytes");
    }
}

/// Asserts `output` is `input` with some `Transfer-Encoding` names turned into the marker.
fn only_renamed(input: &[u8], output: &[u8]) {
    assert_eq!(input.len(), output.len(), "bytes lost or invented");
    let n = CONFLICT_HEADER.len();
    let mut i = 0;
    while i < input.len() {
        if input[i] == output[i] {
            i += 1;
            continue;
        }
        let renamed = (i.saturating_sub(n - 1)..=i).find(|&j| {
            j + n <= input.len()
                && &output[j..j + n] == CONFLICT_HEADER.as_bytes()
                && input[j..j + n].eq_ignore_ascii_case(b"transfer-encoding")
        });
        match renamed {
            Some(j) => i = j + n,
            None => panic!(
                "byte {i} changed ({:?} -> {:?}) outside a renamed Transfer-Encoding",
                char::from(input[i]),
                char::from(output[i])
            ),
        }
    }
}
