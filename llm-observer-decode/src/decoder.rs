//! [`ConnDecoder`]: the per-connection entry point the agent drives.
//!
//! The connection layer owns one `ConnDecoder` per TCP connection that looks like HTTP/1.x and feeds
//! it the bytes of both directions in order, already mapped to [`Stream::Request`] /
//! [`Stream::Response`] by the connection's role.

use crate::exchange::{Api, Exchange, Operation, Stream};

/// Memory caps per connection. Every buffer the decoder keeps is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest HTTP head (request line / status line + headers) kept while waiting for its end.
    pub max_head_bytes: usize,
    /// Largest (decoded) body buffered for JSON decoding; beyond it the body is skipped while
    /// framing continues and the exchange is marked `body_truncated`.
    pub max_body_bytes: usize,
    /// Largest single SSE event / NDJSON line.
    pub max_event_bytes: usize,
    /// Most requests waiting for their response on one connection (pipelining depth).
    pub max_pending_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
            max_pending_requests: 64,
        }
    }
}

/// Who ended the connection, as far as the capture can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Client,
    Server,
    Unknown,
}

/// Traffic the decoder recognises but does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unsupported {
    /// HTTP/2 connection preface (`PRI * HTTP/2.0`).
    Http2,
    /// `101 Switching Protocols` (WebSocket, h2c) — the rest of the connection is not HTTP/1.
    Upgrade,
    /// `CONNECT` tunnel.
    Connect,
}

/// Why bytes could not be decoded. Each is counted by the agent under its [`DecodeError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not HTTP/1.x")]
    NotHttp,
    #[error("malformed HTTP head: {0}")]
    BadHead(&'static str),
    #[error("HTTP head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("malformed chunked encoding")]
    BadChunk,
    #[error("body decompression failed")]
    Decompress,
    #[error("malformed JSON in an LLM body")]
    BadJson,
    #[error("stream event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
    #[error("response without a request")]
    UnmatchedResponse,
    #[error("too many pipelined requests")]
    TooManyPending,
    #[error("{missing} bytes lost by the capture")]
    Gap { missing: u64 },
}

impl DecodeError {
    /// Bounded label value.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::NotHttp => "not_http",
            DecodeError::BadHead(_) => "bad_head",
            DecodeError::HeadTooLarge { .. } => "head_too_large",
            DecodeError::BadChunk => "bad_chunk",
            DecodeError::Decompress => "decompress",
            DecodeError::BadJson => "bad_json",
            DecodeError::EventTooLarge { .. } => "event_too_large",
            DecodeError::UnmatchedResponse => "unmatched_response",
            DecodeError::TooManyPending => "too_many_pending",
            DecodeError::Gap { .. } => "capture_gap",
        }
    }
}

/// What the decoder emits. `seq` numbers the requests of one connection from 0, so `Started`,
/// `FirstToken` and `Done` of one request can be matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A request to a recognised LLM/MCP API was fully received (its body parsed).
    Started {
        seq: u64,
        api: Api,
        operation: Operation,
        model: Option<String>,
        stream: bool,
        ts_ns: u64,
    },
    /// The first content-bearing response event of request `seq` arrived (TTFT marker).
    FirstToken {
        seq: u64,
        ts_ns: u64,
    },
    /// Request `seq` is complete (or failed); the record.
    Done {
        seq: u64,
        exchange: Box<Exchange>,
    },
    Unsupported(Unsupported),
    Error(DecodeError),
}

/// Per-connection decoder state.
#[derive(Debug)]
pub struct ConnDecoder {
    limits: Limits,
}

impl ConnDecoder {
    pub fn new(limits: Limits) -> Self {
        ConnDecoder { limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of `stream`, captured at `ts_ns`, in order.
    pub fn feed(&mut self, stream: Stream, data: &[u8], ts_ns: u64, out: &mut Vec<Output>) {
        let _ = (stream, data, ts_ns, out);
    }

    /// `missing` bytes of `stream` were lost by the capture (ring overflow, truncation): resync.
    pub fn gap(&mut self, stream: Stream, missing: u64, ts_ns: u64, out: &mut Vec<Output>) {
        let _ = (stream, missing, ts_ns, out);
    }

    /// The connection ended. Finishes a close-delimited body, or fails in-flight exchanges as
    /// cancelled / closed / truncated.
    pub fn end(&mut self, by: EndedBy, ts_ns: u64, out: &mut Vec<Output>) {
        let _ = (by, ts_ns, out);
    }

    /// Bytes currently buffered (for the memory-cap assertions and the agent's self-metrics).
    pub fn buffered_bytes(&self) -> usize {
        0
    }
}
