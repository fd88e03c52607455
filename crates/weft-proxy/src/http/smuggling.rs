//! Request-smuggling defence for HTTP/1 servers: a request carrying both `Content-Length` and
//! `Transfer-Encoding` is answered 400 and the connection closed (as Envoy does), rather than
//! resolved by RFC 9112's "Transfer-Encoding wins", which hyper implements and which hides the
//! conflict from the proxy.
//!
//! `FramingGuard` sits between the socket and hyper and follows HTTP/1 message framing (heads,
//! `Content-Length` and chunked bodies) so it knows where each request head is. Lines are
//! released to hyper as they complete — except from a `Transfer-Encoding` line to the end of
//! that head, which is held until the head is complete. If the head also has a
//! `Content-Length`, the `Transfer-Encoding` name is renamed to [`CONFLICT_HEADER`] (same length,
//! so nothing shifts); hyper then frames the request by its `Content-Length`, and the request
//! handler sees the marker and answers 400 with `Connection: close`. Anything the guard does
//! not understand is passed through untouched for hyper to judge.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The marker header a conflicting head carries once past the guard. Exactly as long as
/// `transfer-encoding`.
pub const CONFLICT_HEADER: &str = "x-weft-cl-plus-te";

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8192;

/// Wraps a server-side HTTP/1 stream.
pub struct FramingGuard<T> {
    io: T,
    state: State,
    /// Bytes read but not yet examined.
    input: BytesMut,
    /// Bytes examined and ready for hyper.
    output: BytesMut,
    /// The part of the current head held back (from a `Transfer-Encoding` line on).
    held: BytesMut,
    head: HeadInfo,
    max_line: usize,
    eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head, line by line.
    Head,
    /// `n` body bytes left.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// `n` chunk bytes left, then CRLF.
    ChunkData(u64),
    ChunkCrlf,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// No more framing to follow (upgrade, CONNECT, or something hyper must judge).
    Passthrough,
}

#[derive(Debug, Default)]
struct HeadInfo {
    started: bool,
    upgrade: bool,
    connect: bool,
    te: Option<bool>,
    content_length: Option<u64>,
    cl_conflict: bool,
    cl_seen: bool,
}

// === impl FramingGuard ===

impl<T> FramingGuard<T> {
    pub fn new(io: T, max_line: usize) -> Self {
        Self {
            io,
            state: State::Head,
            input: BytesMut::new(),
            output: BytesMut::new(),
            held: BytesMut::new(),
            head: HeadInfo::default(),
            max_line,
            eof: false,
        }
    }

    /// Examines as much input as possible, moving bytes to `output`.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Passthrough => {
                    self.flush_held();
                    let all = self.input.split();
                    self.emit(all);
                    return;
                }
                State::Body(n) | State::ChunkData(n) => {
                    if self.input.is_empty() {
                        return;
                    }
                    let take = (self.input.len() as u64).min(n) as usize;
                    let part = self.input.split_to(take);
                    self.emit(part);
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkCrlf,
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::Head | State::ChunkSize | State::ChunkCrlf | State::Trailers => {
                    // A line ends at LF, with or without CR before it: hyper (httparse) accepts
                    // a bare LF, so the guard must see the same lines hyper will.
                    let Some(end) = self.input.iter().position(|b| *b == b'\n') else {
                        if self.input.len() > self.max_line {
                            // Too long for us: hyper answers it (431/414).
                            self.state = State::Passthrough;
                            continue;
                        }
                        return;
                    };
                    let line = self.input.split_to(end + 1);
                    self.on_line(line);
                }
            }
        }
    }

    /// Hands `bytes` to hyper: moved when nothing is waiting before them, copied otherwise.
    fn emit(&mut self, bytes: BytesMut) {
        if self.output.is_empty() {
            self.output = bytes;
        } else {
            self.output.extend_from_slice(&bytes);
        }
    }

    fn on_line(&mut self, line: BytesMut) {
        let text = &line[..text_len(&line)];
        match self.state {
            State::Head => self.on_head_line(line),
            State::ChunkSize => {
                let size = std::str::from_utf8(text)
                    .ok()
                    .map(|s| s.split(';').next().unwrap_or("").trim())
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                self.output.extend_from_slice(&line);
                self.state = match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Passthrough,
                };
            }
            State::ChunkCrlf => {
                self.output.extend_from_slice(&line);
                self.state = if text.is_empty() {
                    State::ChunkSize
                } else {
                    State::Passthrough
                };
            }
            State::Trailers => {
                self.output.extend_from_slice(&line);
                if text.is_empty() {
                    self.state = State::Head;
                }
            }
            State::Body(_) | State::ChunkData(_) | State::Passthrough => self.output.extend_from_slice(&line),
        }
    }

    fn on_head_line(&mut self, line: BytesMut) {
        let text_len = text_len(&line);
        if text_len == 0 {
            if !self.head.started {
                // Stray CRLF before a request line: RFC 9112 lets servers ignore it.
                self.output.extend_from_slice(&line);
                return;
            }
            self.end_of_head(line);
            return;
        }
        if !self.head.started {
            self.head = HeadInfo {
                started: true,
                ..HeadInfo::default()
            };
            self.head.connect = line.starts_with(b"CONNECT ");
            self.output.extend_from_slice(&line);
            return;
        }
        let Some(colon) = line[..text_len].iter().position(|b| *b == b':') else {
            // Not a header line: let hyper refuse it, with every byte in its order (lines held
            // back from a Transfer-Encoding line on go first).
            self.flush_held();
            self.output.extend_from_slice(&line);
            self.state = State::Passthrough;
            return;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..text_len])
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => {
                let chunked_last = value.rsplit(',').next().is_some_and(|v| v.trim() == "chunked");
                self.head.te = Some(self.head.te.unwrap_or(true) && chunked_last);
                if self.held.len() + line.len() > self.max_line {
                    self.flush_held();
                    self.output.extend_from_slice(&line);
                    self.state = State::Passthrough;
                    return;
                }
                self.held.extend_from_slice(&line);
                return;
            }
            "content-length" => {
                self.head.cl_seen = true;
                match (value.parse::<u64>().ok(), self.head.content_length) {
                    (Some(v), Some(prev)) if v != prev => self.head.cl_conflict = true,
                    (Some(v), _) => self.head.content_length = Some(v),
                    (None, _) => self.head.cl_conflict = true,
                }
            }
            "upgrade" => self.head.upgrade = true,
            _ => {}
        }
        if self.held.is_empty() {
            self.output.extend_from_slice(&line);
        } else if self.held.len() + line.len() > self.max_line {
            // Held lines never grow past the head limit: past it the head is too large for
            // hyper too, which answers 431 and closes.
            self.flush_held();
            self.output.extend_from_slice(&line);
            self.state = State::Passthrough;
        } else {
            self.held.extend_from_slice(&line);
        }
    }

    fn end_of_head(&mut self, line: BytesMut) {
        let head = std::mem::take(&mut self.head);
        if head.te.is_some() && head.cl_seen {
            rename_transfer_encoding(&mut self.held);
            self.flush_held();
            self.output.extend_from_slice(&line);
            // hyper frames it by Content-Length and the handler answers 400 + close; nothing
            // after it on this connection will be served.
            self.state = State::Passthrough;
            return;
        }
        self.flush_held();
        self.output.extend_from_slice(&line);
        self.state = if head.upgrade || head.connect || head.cl_conflict {
            State::Passthrough
        } else {
            match (head.te, head.content_length) {
                (Some(true), _) => State::ChunkSize,
                (Some(false), _) => State::Passthrough,
                (None, Some(n)) if n > 0 => State::Body(n),
                (None, _) => State::Head,
            }
        };
    }

    fn flush_held(&mut self) {
        if !self.held.is_empty() {
            let held = self.held.split();
            self.output.extend_from_slice(&held);
        }
    }
}

/// The length of a line without its ending (CRLF or a bare LF).
fn text_len(line: &[u8]) -> usize {
    match line {
        [.., b'\r', b'\n'] => line.len() - 2,
        [.., b'\n'] => line.len() - 1,
        _ => line.len(),
    }
}

/// Renames every `Transfer-Encoding` header name in `held` to the marker, in place.
fn rename_transfer_encoding(held: &mut BytesMut) {
    let mut start = 0;
    while start < held.len() {
        let end = held[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(held.len(), |p| start + p + 1);
        let line = &mut held[start..end];
        if line.len() > CONFLICT_HEADER.len()
            && line[..CONFLICT_HEADER.len()].eq_ignore_ascii_case(b"transfer-encoding")
            && line[CONFLICT_HEADER.len()] == b':'
        {
            line[..CONFLICT_HEADER.len()].copy_from_slice(CONFLICT_HEADER.as_bytes());
        }
        start = end;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Straight into the input buffer's spare capacity: no zeroed scratch buffer and no
            // copy per read.
            this.input.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.input) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    // End of stream: whatever is held or unexamined goes to hyper as it is.
                    this.eof = true;
                    this.flush_held();
                    let rest = this.input.split();
                    this.output.extend_from_slice(&rest);
                }
                Poll::Ready(Ok(_)) => this.process(),
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FramingGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Feeds `input` in pieces of `step` bytes and returns what hyper would read.
    async fn through(input: &[u8], step: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut guard = FramingGuard::new(server, 8192);
        let owned = input.to_vec();
        let writer = tokio::spawn(async move {
            for piece in owned.chunks(step) {
                client.write_all(piece).await.expect("write");
                tokio::task::yield_now().await;
            }
            client.shutdown().await.expect("shutdown");
        });
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.expect("read");
        writer.await.expect("writer");
        out
    }

    #[tokio::test]
    async fn ordinary_keep_alive_traffic_passes_unchanged() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /last HTTP/1.1\r\nHost: a\r\n\r\n";
        for step in [1, 3, 7, 1000] {
            assert_eq!(through(input, step).await, input.to_vec(), "step {step}");
        }
    }

    #[tokio::test]
    async fn both_framings_in_one_head_are_marked_in_either_order() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            &b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
        ] {
            for step in [1, 5, 1000] {
                let out = String::from_utf8(through(head, step).await).expect("utf-8");
                assert!(out.contains("x-weft-cl-plus-te: chunked"), "{out}");
                assert!(!out.to_ascii_lowercase().contains("transfer-encoding"), "{out}");
                assert_eq!(out.len(), head.len(), "same length, nothing shifts");
            }
        }
    }

    #[tokio::test]
    async fn bare_lf_line_endings_do_not_hide_transfer_encoding() {
        // hyper reads bare LF as a line end; so must the guard, or CL+TE slips past it.
        let head =
            b"POST / HTTP/1.1\r\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\r\n0\r\n\r\n";
        for step in [1, 1000] {
            let out = String::from_utf8(through(head, step).await).expect("utf-8");
            assert!(out.contains("x-weft-cl-plus-te: chunked"), "{out}");
            assert_eq!(out.len(), head.len());
        }
    }

    #[tokio::test]
    async fn a_line_hyper_must_refuse_after_a_held_line_keeps_its_place() {
        // Found by the framing_guard fuzz target: the colon-less line overtook the held
        // Transfer-Encoding line.
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nnot a header\r\n\r\n";
        for step in [1, 1000] {
            assert_eq!(through(head, step).await, head.to_vec(), "step {step}");
        }
    }

    #[test]
    fn held_lines_stop_at_the_head_limit() {
        let mut g = FramingGuard::new(tokio::io::empty(), 8192);
        g.input
            .extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n");
        for _ in 0..1000 {
            g.input
                .extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        g.process();
        assert!(g.held.len() <= 8192, "held {} bytes", g.held.len());
        assert_eq!(g.state, State::Passthrough);
    }

    #[test]
    fn a_head_looking_line_inside_a_body_is_not_a_head() {
        // Content-Length framing carries a "Transfer-Encoding" text inside the body: untouched.
        let mut g = FramingGuard::new(tokio::io::empty(), 8192);
        let body = "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        let text = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let input = text.as_bytes();
        g.input.extend_from_slice(input);
        g.process();
        assert_eq!(&g.output[..], input);
        assert_eq!(g.state, State::Head);
    }
}
