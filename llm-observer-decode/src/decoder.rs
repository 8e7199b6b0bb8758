//! [`ConnDecoder`]: the per-connection entry point the agent drives.
//!
//! The connection layer owns one `ConnDecoder` per TCP connection that looks like HTTP/1.x and feeds
//! it the bytes of both directions in order, already mapped to [`Stream::Request`] /
//! [`Stream::Response`] by the connection's role.
//!
//! Each direction has its own [`Parser`]; `protocol::pairing` pairs their messages. Requests are numbered
//! (`seq`) in wire order and queue until their response head arrives (FIFO: keep-alive and
//! pipelining). A complete request is offered to [`llm::recognize_with_limits`]; a recognised one gets
//! `Output::Started`, its response is decoded and fed to its [`ApiDecoder`], and it ends with
//! `Output::Done`. Unrecognised exchanges keep their place in the queue but their response bodies
//! are framed without decoding.
//!
//! Pairing after lost bytes uses capture times, which the kernel gives both directions from one
//! monotonic clock: a response cannot start before its request did. After the response stream
//! resyncs, the next response head is paired with the latest queued request that started before
//! it, and the requests queued before that one are failed (their responses were lost) — right for
//! the usual non-pipelined connection, where request *n+1* is only sent after response *n*.

use crate::exchange::{Api, Exchange, Operation, Stream};
use crate::llm::{self, ApiDecoder};
use crate::protocol::head::Direction;
use crate::protocol::http1::Parser;
use crate::protocol::pairing::{Pairing, ReqSide, RespSide};

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

impl Limits {
    /// Upper bound of [`ConnDecoder::buffered_bytes`] under these limits.
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

/// Turns a complete request into an API decoder, or `None` for traffic that is not a known API.
/// [`ConnDecoder::new`] uses [`llm::recognize_with_limits`]; tests (and embedders with their own
/// APIs) can plug in another with [`ConnDecoder::with_recognizer`].
pub type Recognizer = fn(&llm::Request<'_>, &Limits) -> Option<Box<dyn ApiDecoder>>;

/// Judges a request by method, path and headers before its body is read: only candidates have
/// their body collected and offered to the [`Recognizer`]. [`ConnDecoder::new`] uses
/// [`llm::is_candidate`]; [`ConnDecoder::with_recognizer`] collects every body.
pub type Candidate = fn(&str, &str, &llm::Headers) -> bool;

/// Per-connection decoder state.
#[derive(Debug)]
pub struct ConnDecoder {
    limits: Limits,
    req: Parser,
    resp: Parser,
    pairs: Pairing,
    /// Ended, or gave up (not HTTP, unsupported protocol, too many pending): input is ignored.
    dead: bool,
}

impl ConnDecoder {
    pub fn new(limits: Limits) -> Self {
        Self::build(limits, llm::recognize_with_limits, llm::is_candidate)
    }

    /// A decoder that recognises requests with `recognize` instead of [`llm::recognize_with_limits`]
    /// (and collects the body of every request for it).
    pub fn with_recognizer(limits: Limits, recognize: Recognizer) -> Self {
        Self::build(limits, recognize, |_, _, _| true)
    }

    fn build(limits: Limits, recognize: Recognizer, candidate: Candidate) -> Self {
        ConnDecoder {
            limits,
            req: Parser::new(Direction::Request, limits),
            resp: Parser::new(Direction::Response, limits),
            pairs: Pairing::new(limits, recognize, candidate),
            dead: false,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of `stream`, captured at `ts_ns`, in order.
    pub fn feed(&mut self, stream: Stream, data: &[u8], ts_ns: u64, out: &mut Vec<Output>) {
        if self.dead {
            return;
        }
        self.pairs.ts_ns = ts_ns;
        match stream {
            Stream::Request => self
                .req
                .feed(data, ts_ns, &mut ReqSide::new(&mut self.pairs, out)),
            Stream::Response => {
                self.resp
                    .feed(data, ts_ns, &mut RespSide::new(&mut self.pairs, out));
            }
        }
        self.settle(ts_ns, out);
    }

    /// `missing` bytes of `stream` were lost by the capture (ring overflow, truncation): resync.
    pub fn gap(&mut self, stream: Stream, missing: u64, ts_ns: u64, out: &mut Vec<Output>) {
        if self.dead {
            return;
        }
        self.pairs.ts_ns = ts_ns;
        out.push(Output::Error(DecodeError::Gap { missing }));
        match stream {
            Stream::Request => {
                self.req
                    .gap(missing, ts_ns, &mut ReqSide::new(&mut self.pairs, out))
            }
            Stream::Response => {
                self.resp
                    .gap(missing, ts_ns, &mut RespSide::new(&mut self.pairs, out));
                if self.resp.is_resyncing() {
                    self.pairs.resp_resynced = true;
                }
            }
        }
        self.settle(ts_ns, out);
    }

    /// The connection ended. Finishes a close-delimited body, or fails in-flight exchanges as
    /// cancelled / closed / truncated.
    pub fn end(&mut self, by: EndedBy, ts_ns: u64, out: &mut Vec<Output>) {
        if self.dead {
            return;
        }
        self.pairs.ts_ns = ts_ns;
        self.pairs.ended_by = by;
        self.resp
            .end(ts_ns, &mut RespSide::new(&mut self.pairs, out));
        self.req.end(ts_ns, &mut ReqSide::new(&mut self.pairs, out));
        self.shutdown(by, ts_ns, out);
    }

    /// Bytes currently buffered (for the memory-cap assertions and the agent's self-metrics).
    pub fn buffered_bytes(&self) -> usize {
        self.req.buffered_bytes() + self.resp.buffered_bytes() + self.pairs.buffered_bytes()
    }

    /// Requests received and waiting for (the end of) their response.
    pub fn pending_requests(&self) -> usize {
        self.pairs.open_requests()
    }

    /// True once the decoder ignores further input (ended, not HTTP, or unsupported protocol).
    pub fn is_done(&self) -> bool {
        self.dead
    }

    /// After each call: share "this is HTTP" between directions, and stop when told to.
    fn settle(&mut self, ts_ns: u64, out: &mut Vec<Output>) {
        if self.req.seen_http() || self.resp.seen_http() {
            self.req.set_seen_http();
            self.resp.set_seen_http();
        }
        if self.pairs.stop {
            self.shutdown(EndedBy::Unknown, ts_ns, out);
        }
    }

    /// Stops decoding: every exchange still open gets its `Done`.
    fn shutdown(&mut self, by: EndedBy, ts_ns: u64, out: &mut Vec<Output>) {
        self.dead = true;
        self.req.stop();
        self.resp.stop();
        self.pairs.close_all(by, ts_ns, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_decoder_is_send() {
        fn send<T: Send>() {}
        send::<ConnDecoder>();
    }
}
