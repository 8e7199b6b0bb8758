//! Pure, incremental decoding of LLM traffic: the two byte streams of one TCP connection (each chunk
//! with the kernel capture time of its bytes) go in, [`Exchange`] records come out.
//!
//! Layers, in data-flow order:
//! - [`protocol`]: HTTP/1.1 reassembly (heads, Content-Length / chunked / close-delimited bodies,
//!   decompression) and stream framing (SSE, NDJSON).
//! - [`llm`]: API recognition and decoders (Ollama, OpenAI-compatible, Anthropic, TGI, llama.cpp,
//!   MCP) that turn one HTTP request/response pair into one [`Exchange`].
//! - [`decoder`]: [`ConnDecoder`], the per-connection entry point that wires the two.
//!
//! Nothing here does I/O, reads clocks or needs privileges, so every parser can be driven from byte
//! fixtures, split at arbitrary boundaries, and fuzzed.

pub mod decoder;
pub mod exchange;
pub mod llm;
pub mod protocol;

pub use decoder::{ConnDecoder, DecodeError, EndedBy, Limits, Output, Unsupported};
pub use exchange::*;
