//! Protocol detection from a connection's first bytes.
//!
//! An HTTP/1 method, the HTTP/2 preface or a TLS ClientHello decide. A client that sends
//! nothing within the detect timeout is treated as opaque TCP (a server-first protocol).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest HTTP method we recognise (`PROPPATCH`, `MKCALENDAR`...) plus its space.
const MAX_METHOD: usize = 16;

/// Reads just enough of `io` to classify it; returns the bytes read so they can be replayed.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> std::io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = classify(&buf) {
            return Ok((found, buf.freeze()));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(0)) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Classifies a prefix; `None` means more bytes are needed to decide.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        // TLS handshake record: content type 22, then major version 3.
        return match buf.get(1) {
            None => None,
            Some(3) => Some(Detected::Tls),
            Some(_) => Some(Detected::Opaque),
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Detected::Http2)
        } else {
            None
        };
    }
    // An HTTP/1 request line starts with a method token of upper-case letters (and '-').
    for (i, &b) in buf.iter().enumerate().take(MAX_METHOD) {
        match b {
            b' ' if i >= 3 => return Some(Detected::Http1),
            b'A'..=b'Z' | b'-' => {}
            _ => return Some(Detected::Opaque),
        }
    }
    if buf.len() >= MAX_METHOD {
        Some(Detected::Opaque)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"\x16"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Opaque));
        assert_eq!(classify(b"hello world"), Some(Detected::Opaque));
        assert_eq!(classify(b"GE T"), Some(Detected::Opaque));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRS"), Some(Detected::Opaque));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Detected::Http1));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_opaque_after_the_timeout() {
        let (mut a, _b) = tokio::io::duplex(64);
        let (found, bytes) = detect(&mut a, Duration::from_secs(1)).await.expect("detect");
        assert_eq!(found, Detected::Opaque);
        assert!(bytes.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_split_across_reads_are_joined() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            b.write_all(b"PRI * HTTP/2").await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
            b.write_all(b".0\r\n\r\nSM\r\n\r\nrest").await.expect("write");
            b
        });
        let (found, bytes) = detect(&mut a, Duration::from_secs(1)).await.expect("detect");
        assert_eq!(found, Detected::Http2);
        assert!(bytes.starts_with(H2_PREFACE));
        drop(writer);
    }
}
