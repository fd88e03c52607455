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

// === the ClientHello's ALPN ===

/// The largest TLS record (2^14 bytes of plaintext plus room for the header).
const MAX_RECORD: usize = 16 * 1024 + 5;

/// Reads on until `buf` (which starts with a TLS record) holds that whole first record, so the
/// ClientHello in it can be read; the bytes stay in `buf` to be replayed. Gives up at the
/// deadline or on EOF, returning what there is.
pub async fn read_first_record<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: Bytes,
    timeout: Duration,
) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::from(&buf[..]);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let want = match buf.get(3..5) {
            Some(len) => 5 + usize::from(u16::from_be_bytes([len[0], len[1]])),
            None => 5,
        };
        if buf.len() >= want.min(MAX_RECORD) {
            return Ok(buf.freeze());
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok(buf.freeze()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// The protocols a TLS ClientHello offers by ALPN, read from the first record; None when the
/// bytes are not a (complete) ClientHello or offer no ALPN.
pub fn client_hello_alpn(record: &[u8]) -> Option<Vec<&[u8]>> {
    let mut r = Reader(record);
    // Record header: handshake (22), version, length.
    if r.u8()? != 0x16 {
        return None;
    }
    r.take(2)?;
    let mut r = Reader(r.vec16()?);
    // Handshake header: client_hello (1), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    let len = r.take(3)?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    let mut r = Reader(r.take(len)?);
    r.take(2 + 32)?; // legacy version, random
    let session = usize::from(r.u8()?);
    r.take(session)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let body = exts.vec16()?;
        if kind == 16 {
            // application_layer_protocol_negotiation: a list of length-prefixed names.
            let mut list = Reader(body);
            let mut names = Reader(list.vec16()?);
            let mut out = Vec::new();
            while !names.0.is_empty() {
                let n = usize::from(names.u8()?);
                out.push(names.take(n)?);
            }
            return Some(out);
        }
    }
    None
}

/// A cursor over bytes that fails (None) instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// Bytes prefixed by a 16-bit length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A real ClientHello as rustls writes it, offering `alpn`.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("example.com").expect("name");
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_the_alpn_a_client_hello_offers() {
        let hello = client_hello(&[b"weft-mesh/1", b"h2"]);
        assert_eq!(
            client_hello_alpn(&hello),
            Some(vec![&b"weft-mesh/1"[..], &b"h2"[..]])
        );
        assert_eq!(client_hello_alpn(&client_hello(&[])), None);
        // Cut short anywhere: no answer rather than a wrong one.
        for cut in [1, 5, 40, hello.len() - 1] {
            assert_eq!(client_hello_alpn(&hello[..cut]), None, "cut at {cut}");
        }
        assert_eq!(client_hello_alpn(b"GET / HTTP/1.1\r\n"), None);
    }

    #[tokio::test]
    async fn reads_the_whole_first_record() {
        let hello = client_hello(&[b"h2"]);
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        // The first three bytes were read by detection; the rest arrives later.
        b.write_all(&hello[3..]).await.expect("write");
        let got = read_first_record(
            &mut a,
            Bytes::copy_from_slice(&hello[..3]),
            Duration::from_secs(1),
        )
        .await
        .expect("read");
        assert_eq!(&got[..], &hello[..]);
    }

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
