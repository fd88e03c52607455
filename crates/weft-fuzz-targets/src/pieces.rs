//! Input split at fuzzer-chosen points: the first byte seeds the piece sizes, the rest is the
//! stream. Byte 0 means "all in one piece", so a realistic input is `\0` followed by it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// `(piece sizes, stream)` for `data`; the sizes cover the stream exactly.
pub(crate) fn split(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let mut sizes = Vec::new();
    if seed == 0 {
        if !stream.is_empty() {
            sizes.push(stream.len());
        }
        return (sizes, stream);
    }
    // xorshift: cheap, and every seed gives a different, reproducible cut.
    let mut x = u32::from(seed) | 0x9e37_7900;
    let mut left = stream.len();
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Mostly small pieces (a byte or a few), sometimes a larger one.
        let n = if x % 4 == 0 {
            x as usize % 512 + 1
        } else {
            x as usize % 8 + 1
        };
        let n = n.min(left);
        sizes.push(n);
        left -= n;
    }
    (sizes, stream)
}

/// A reader that returns `stream` in the given pieces, then end of stream.
pub(crate) struct Pieces<'a> {
    stream: &'a [u8],
    sizes: std::vec::IntoIter<usize>,
    /// What is left of the current piece.
    current: &'a [u8],
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(stream: &'a [u8], sizes: Vec<usize>) -> Self {
        Self {
            stream,
            sizes: sizes.into_iter(),
            current: &[],
        }
    }
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.current.is_empty() {
            let n = self
                .sizes
                .next()
                .unwrap_or(self.stream.len())
                .min(self.stream.len());
            let (piece, rest) = self.stream.split_at(n);
            self.current = piece;
            self.stream = rest;
        }
        let n = self.current.len().min(buf.remaining());
        let (now, later) = self.current.split_at(n);
        buf.put_slice(now);
        self.current = later;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_stream_exactly() {
        for seed in [0u8, 1, 7, 255] {
            let mut data = vec![seed];
            data.extend((0..2000u32).map(|i| i as u8));
            let (sizes, stream) = split(&data);
            assert_eq!(stream, &data[1..]);
            assert_eq!(sizes.iter().sum::<usize>(), stream.len(), "seed {seed}");
            assert!(sizes.iter().all(|n| *n > 0));
            if seed != 0 {
                assert!(sizes.len() > 10, "seed {seed} cuts the stream");
            }
        }
        assert_eq!(split(b""), (Vec::new(), &b""[..]));
    }
}
