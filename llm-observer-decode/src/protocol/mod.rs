//! HTTP/1.1 reassembly and stream framing (SSE, NDJSON).

pub mod ndjson;
pub mod sse;
