//! Pure, incremental decoding of LLM traffic: the two byte streams of one TCP connection (each chunk
//! with the kernel capture time of its bytes) go in, [`Exchange`] records come out.
//!
//! Layers, in data-flow order:
//! - [`protocol`]: HTTP/1.1 reassembly (heads, Content-Length / chunked / close-delimited bodies,
//!   decompression), HTTP/2 (frames, HPACK, one exchange per stream) and stream framing (SSE,
//!   NDJSON, streamed JSON arrays).
//! - [`llm`]: API recognition and decoders (Ollama, OpenAI-compatible, Anthropic, Gemini, TGI, llama.cpp,
//!   MCP) that turn one HTTP request/response pair into one [`Exchange`].
//! - [`decoder`]: [`ConnDecoder`], the per-connection entry point that wires the two.
//! - [`types`]: the vocabulary all of them share (limits, [`DecodeError`], [`EndedBy`], [`Output`]).
//!
//! Nothing here does I/O, reads clocks or needs privileges, so every parser can be driven from byte
//! fixtures, split at arbitrary boundaries, and fuzzed.

pub mod decoder;
pub mod exchange;
pub mod labels;
pub mod llm;
pub mod protocol;
pub mod traceparent;
pub mod types;

pub use decoder::{Candidate, ConnDecoder, Recognizer};
pub use exchange::*;
pub use traceparent::TraceParent;
pub use types::{DecodeError, EndedBy, Limits, Output, Unsupported};
