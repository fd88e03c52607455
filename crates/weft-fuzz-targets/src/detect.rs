//! `detect`: protocol detection from a connection's first bytes, then the ClientHello reader.

use std::time::Duration;

use weft_proxy::detect::{classify, client_hello_alpn, detect as detect_io, read_first_record, Detected};

use crate::pieces::{self, Pieces};

/// The HTTP/2 preface is the longest prefix detection may need (24 bytes).
const DECIDES_WITHIN: usize = 24;

/// `data`: a piece-size seed byte, then what a client sends first (see [`pieces`]).
pub fn detect(data: &[u8]) {
    let (sizes, stream) = pieces::split(data);

    // A decision taken on a prefix is never revised by more bytes.
    let whole = classify(stream);
    for n in 0..=stream.len().min(DECIDES_WITHIN + 1) {
        if let Some(found) = classify(&stream[..n]) {
            assert_eq!(
                whole,
                Some(found),
                "decided {found:?} after {n} bytes, then {whole:?}"
            );
            break;
        }
    }
    // Detection must not wait for ever for bytes that cannot change its mind.
    if stream.len() >= DECIDES_WITHIN {
        assert!(whole.is_some(), "undecided after {} bytes", stream.len());
    }

    // The socket path: bytes arriving in pieces, as the inbound listener reads them.
    let runtime = runtime();
    let mut io = Pieces::new(stream, sizes);
    let timeout = Duration::from_secs(10);
    let (found, seen) = match runtime.block_on(detect_io(&mut io, timeout)) {
        Ok(r) => r,
        Err(e) => panic!("an in-memory reader cannot fail: {e}"),
    };
    assert!(
        stream.starts_with(&seen),
        "detection replays exactly what it read"
    );
    match classify(&seen) {
        Some(d) => assert_eq!(d, found),
        None => {
            assert_eq!(found, Detected::Opaque);
            assert_eq!(seen.len(), stream.len(), "undecided only at end of stream");
        }
    }
    // The ClientHello reader, on whatever bytes: it reads only what the lengths allow.
    let offered_in_stream = client_hello_alpn(stream);
    if let Some(names) = &offered_in_stream {
        assert_eq!(stream.first(), Some(&0x16), "only a handshake record offers ALPN");
        assert!(names.iter().all(|n| n.len() < 256));
    }
    if found != Detected::Tls {
        return;
    }
    let record = match runtime.block_on(read_first_record(&mut io, seen, timeout)) {
        Ok(r) => r,
        Err(e) => panic!("an in-memory reader cannot fail: {e}"),
    };
    assert!(stream.starts_with(&record), "the record is replayed as read");
    if let Some(offered) = client_hello_alpn(&record) {
        // A complete record reads the same whatever follows it.
        assert_eq!(offered_in_stream, Some(offered));
    }
}

/// One current-thread runtime per fuzzing thread: detection reads under a deadline.
fn runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RUNTIME: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(rt) => rt,
                Err(e) => panic!("a current-thread runtime: {e}"),
            },
        ));
    }
    RUNTIME.with(|rt| *rt)
}
