//! HTTP/1.1 reassembly and stream framing (SSE, NDJSON).
//!
//! Data flow for one direction: [`http1::Parser`] finds heads ([`head`], httparse) and frames
//! bodies ([`body`]: Content-Length, [`chunked`], until close), undoing content codings
//! ([`decompress`]) on the way; [`tsbuf`] keeps the capture time of every buffered byte. The
//! per-connection pairing of requests and responses lives in [`crate::decoder`].
//!
//! HTTP/2 ([`h2frame`] frames, `h2` connections with HPACK, `h2stream` one exchange per stream)
//! is chosen by [`crate::ConnDecoder`] from the connection's first bytes and feeds the same API
//! decoders.

pub mod body;
pub mod chunked;
pub mod decompress;
pub(crate) mod h2;
pub mod h2frame;
mod h2stream;
pub mod head;
pub mod http1;
pub mod jsonarray;
pub mod ndjson;
pub(crate) mod pairing;
pub mod sse;
mod start;
pub mod tsbuf;
