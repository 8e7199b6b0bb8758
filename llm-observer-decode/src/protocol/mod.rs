//! HTTP/1.1 reassembly and stream framing (SSE, NDJSON).
//!
//! Data flow for one direction: [`http1::Parser`] finds heads ([`head`], httparse) and frames
//! bodies ([`body`]: Content-Length, [`chunked`], until close), undoing content codings
//! ([`decompress`]) on the way; [`tsbuf`] keeps the capture time of every buffered byte. The
//! per-connection pairing of requests and responses lives in [`crate::decoder`].

pub mod body;
pub mod chunked;
pub mod decompress;
pub mod head;
pub mod http1;
pub mod ndjson;
pub(crate) mod pairing;
pub mod sse;
mod start;
pub mod tsbuf;
