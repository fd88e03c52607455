//! The protobuf codec of every generated stub: prost, with buffers sized for long-lived streams.
//!
//! tonic's encoder keeps one buffer per stream for the stream's whole life and never shrinks it;
//! it grows to about twice the largest chunk encoded at once, and by default a chunk gathers
//! queued messages up to 32 KiB. The control plane holds one discovery stream per proxy, so at
//! 1,000 proxies the defaults kept ~70 MB of encode buffers after the initial sync (measured with
//! heaptrack, see bench/README.md). Here each message is its own chunk (messages are at most
//! [`crate::discovery::PART_BYTES`] unless one resource is larger), so a buffer stays at
//! [`ENCODE_BUFFER`]. Decoding starts small: the server reads only subscriptions and ACKs, and
//! the buffer grows for a larger message when one arrives.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial (and, for messages that fit, lasting) size of a stream's encode buffer.
pub const ENCODE_BUFFER: usize = 8 * 1024;
/// Initial size of a stream's decode buffer.
pub const DECODE_BUFFER: usize = 1024;

/// [`ProstCodec`] with [`ENCODE_BUFFER`], one message per chunk, and [`DECODE_BUFFER`].
#[derive(Debug)]
pub struct LeanCodec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        // A yield threshold of 0: every encoded message goes out as its own chunk.
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, 0))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(DECODE_BUFFER, 0))
    }
}
