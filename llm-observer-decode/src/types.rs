//! The vocabulary every layer shares: decode limits, who ended a connection, what the decoder
//! emits and why bytes could not be decoded. A leaf: it imports only [`crate::exchange`], so the
//! protocol and API layers can use it without depending on [`crate::decoder`].

use crate::exchange::{Api, Exchange, Incomplete, Operation};

/// Memory caps per connection. Every buffer the decoder keeps is bounded by one of these.
///
/// What the HTTP layer holds between calls, per connection, is at most
/// [`Limits::max_buffered_bytes`]: per direction one incomplete head (`max_head_bytes`) and a few
/// resync bytes, plus one request body being received (`max_body_bytes`). Decompression output is
/// capped at `max_body_bytes` per body; decompressor windows are bounded by their formats (see
/// [`crate::protocol::decompress`]). The API decoders' own buffers use `max_body_bytes` /
/// `max_event_bytes` and are not counted here.
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
    /// User-defined labels to read off each recognised request (set once at start; a `'static`
    /// reference keeps `Limits` a small `Copy` value).
    pub labels: &'static crate::labels::LabelRules,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
            max_pending_requests: 64,
            labels: &crate::labels::NO_LABELS,
        }
    }
}

impl Limits {
    /// Upper bound of [`ConnDecoder::buffered_bytes`] for an HTTP/2 connection: per direction one
    /// partial frame and one header block being collected (each at most `max_head_bytes`), and per
    /// open stream (at most `max_pending_requests`) either its request body or its response
    /// decoder's buffer (each at most `max_body_bytes` / `max_event_bytes`), plus the held preface.
    pub fn max_buffered_bytes_h2(&self) -> usize {
        // Frame headers in progress (9 bytes a direction) and the held preface (24); a stream
        // decoder holds at most an event and a partial line, plus a few sniffed bytes.
        4 * self.max_head_bytes
            + 2 * 9
            + 24
            + self.max_pending_requests * (self.max_body_bytes.max(2 * self.max_event_bytes) + 8)
    }

    /// Upper bound of [`ConnDecoder::buffered_bytes`] for an HTTP/1 connection under these limits.
    pub fn max_buffered_bytes(&self) -> usize {
        // Two heads, two resync tails (< 24 bytes each), two deflate sniff bytes, one request body.
        2 * self.max_head_bytes + self.max_body_bytes + 2 * 24 + 2
    }
}

/// Who ended the connection, as far as the capture can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Client,
    Server,
    /// The server process was killed by the kernel's OOM killer: its in-flight requests failed
    /// as `out_of_memory`.
    ServerOom,
    /// Neither peer: the capture lost bytes, or the agent stopped following the connection. The
    /// exchanges it ends are [`Incomplete`], never an error of the observed server.
    Capture(Incomplete),
}

/// Traffic the decoder recognises but does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unsupported {
    /// HTTP/2 connection preface (`PRI * HTTP/2.0`) inside an HTTP/1 stream (after requests).
    Http2,
    /// HTTP/2 frames on a connection whose start the capture did not see (no client preface; the
    /// HPACK dynamic table is unknown), so its headers cannot be decoded.
    Http2MidStream,
    /// A gRPC stream (`content-type: application/grpc*`) on an HTTP/2 connection: skipped.
    Grpc,
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
    #[error("malformed HTTP/2 frame: {0}")]
    BadFrame(&'static str),
    #[error("HPACK header block undecodable")]
    Hpack,
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
            DecodeError::BadFrame(_) => "bad_h2_frame",
            DecodeError::Hpack => "hpack",
        }
    }
}

/// Longest `Host` value passed on in [`Output::Started`] (DNS names are at most 253 bytes).
pub const MAX_HOST_BYTES: usize = 255;

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
        /// The request's `Host` (HTTP/1.1) or `:authority` (HTTP/2), at most
        /// [`MAX_HOST_BYTES`] bytes; the agent derives the client view's `provider` from it.
        host: Option<String>,
        /// The user-defined labels' values ([`crate::labels`]), in rule order.
        user_labels: Vec<String>,
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
    /// Request `seq`, which could be an API call (a candidate), lost bytes to the capture before it
    /// could be recognised: no `Started`/`Done` will come for it, and it is the capture's loss,
    /// not the server's failure.
    Incomplete {
        seq: u64,
        why: Incomplete,
    },
}
