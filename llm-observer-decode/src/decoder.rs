//! [`ConnDecoder`]: the per-connection entry point the agent drives.
//!
//! The connection layer owns one `ConnDecoder` per TCP connection that looks like HTTP/1.x and feeds
//! it the bytes of both directions in order, already mapped to [`Stream::Request`] /
//! [`Stream::Response`] by the connection's role.
//!
//! Each direction has its own [`Parser`]; this module pairs their messages. Requests are numbered
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

use std::collections::VecDeque;

use crate::exchange::{Api, Exchange, Operation, Stream};
use crate::llm::{self, ApiDecoder, BodyEnd, Headers};
use crate::protocol::head::{Direction, Head};
use crate::protocol::http1::{BodyPlan, Handler, MessageEnd, Outcome, Parser};
use crate::protocol::tsbuf::TsBuf;

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
        Self::with_recognizer(limits, llm::recognize_with_limits)
    }

    /// A decoder that recognises requests with `recognize` instead of [`llm::recognize_with_limits`].
    pub fn with_recognizer(limits: Limits, recognize: Recognizer) -> Self {
        ConnDecoder {
            limits,
            req: Parser::new(Direction::Request, limits),
            resp: Parser::new(Direction::Response, limits),
            pairs: Pairing {
                limits,
                recognize,
                next_seq: 0,
                incoming: None,
                pending: VecDeque::new(),
                inflight: None,
                resp_resynced: false,
                ended_by: EndedBy::Unknown,
                stop: false,
                ts_ns: 0,
            },
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
        let body = self.pairs.incoming.as_ref().map_or(0, |i| i.body.len());
        self.req.buffered_bytes() + self.resp.buffered_bytes() + body
    }

    /// Requests received and waiting for (the end of) their response.
    pub fn pending_requests(&self) -> usize {
        self.pairs.pending.len() + usize::from(self.pairs.inflight.is_some())
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
        let p = &mut self.pairs;
        p.incoming = None;
        if let Some(f) = p.inflight.take() {
            finish(out, f.seq, f.decoder, BodyEnd::Cut(by), ts_ns, 0, false);
        }
        for q in p.pending.drain(..) {
            if let Some(d) = q.decoder {
                finish(out, q.seq, d, BodyEnd::NoResponse(by), ts_ns, 0, false);
            }
        }
    }
}

/// Emits `Done` for an exchange.
fn finish(
    out: &mut Vec<Output>,
    seq: u64,
    decoder: Box<dyn ApiDecoder>,
    end: BodyEnd,
    end_ns: u64,
    wire_bytes: u64,
    truncated: bool,
) {
    let mut exchange = decoder.finish(end, end_ns, wire_bytes);
    exchange.body_truncated |= truncated;
    out.push(Output::Done {
        seq,
        exchange: Box::new(exchange),
    });
}

/// A request received in full, waiting for its response head.
#[derive(Debug)]
struct Pending {
    seq: u64,
    /// `None`: not a recognised API (or lost); framed only.
    decoder: Option<Box<dyn ApiDecoder>>,
    /// A `HEAD` request: its response has no body.
    no_body: bool,
    start_ns: u64,
}

/// The request being received.
#[derive(Debug)]
struct Incoming {
    seq: u64,
    method: String,
    path: String,
    headers: Headers,
    /// Decoded body, cut at `max_body_bytes`.
    body: TsBuf,
    truncated: bool,
    start_ns: u64,
}

/// The response being received, for a recognised request.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    decoder: Box<dyn ApiDecoder>,
    first_token: bool,
}

/// Request/response pairing state, apart from the parsers so both can be borrowed at once.
#[derive(Debug)]
struct Pairing {
    limits: Limits,
    recognize: Recognizer,
    next_seq: u64,
    incoming: Option<Incoming>,
    /// FIFO of complete requests without a response head yet.
    pending: VecDeque<Pending>,
    inflight: Option<InFlight>,
    /// The response stream lost its framing: pair the next response head by capture time.
    resp_resynced: bool,
    ended_by: EndedBy,
    stop: bool,
    /// Capture time of the current call.
    ts_ns: u64,
}

impl Pairing {
    /// Queues a request (recognised or not) for its response.
    fn enqueue(&mut self, pending: Pending, out: &mut Vec<Output>) {
        if self.pending.len() >= self.limits.max_pending_requests {
            // A client that pipelines this deep without answers is not one we can pair: stop
            // rather than guess.
            out.push(Output::Error(DecodeError::TooManyPending));
            self.stop = true;
            if let Some(d) = pending.decoder {
                finish(
                    out,
                    pending.seq,
                    d,
                    BodyEnd::NoResponse(EndedBy::Unknown),
                    self.ts_ns,
                    0,
                    false,
                );
            }
            return;
        }
        self.pending.push_back(pending);
    }

    /// The queued request a response head starting at `start_ns` answers.
    fn request_for(&mut self, start_ns: u64, out: &mut Vec<Output>) -> Option<Pending> {
        if self.resp_resynced {
            let latest = self.pending.iter().rposition(|q| q.start_ns <= start_ns)?;
            // Responses of the earlier ones were in the lost bytes.
            for q in self.pending.drain(..latest) {
                if let Some(d) = q.decoder {
                    let end = BodyEnd::Cut(EndedBy::Unknown);
                    finish(out, q.seq, d, end, start_ns, 0, true);
                }
            }
            self.resp_resynced = false;
        }
        // A response cannot start before its request.
        if self.pending.front()?.start_ns > start_ns {
            return None;
        }
        self.pending.pop_front()
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// [`Handler`] for the request direction.
struct ReqSide<'a> {
    p: &'a mut Pairing,
    out: &'a mut Vec<Output>,
}

impl<'a> ReqSide<'a> {
    fn new(p: &'a mut Pairing, out: &'a mut Vec<Output>) -> Self {
        ReqSide { p, out }
    }
}

impl Handler for ReqSide<'_> {
    fn head(&mut self, head: &Head, start_ns: u64, _ts_ns: u64) -> BodyPlan {
        let Head::Request(r) = head else {
            return BodyPlan::default();
        };
        let seq = self.p.next_seq();
        self.p.incoming = Some(Incoming {
            seq,
            method: r.method.clone(),
            path: r.path.clone(),
            headers: r.headers.clone(),
            body: TsBuf::new(),
            truncated: false,
            start_ns,
        });
        // Recognition needs the request body, so it is always collected (capped).
        BodyPlan {
            deliver: true,
            no_body: false,
        }
    }

    fn body(&mut self, data: &[u8], ts_ns: u64) {
        let max = self.p.limits.max_body_bytes;
        if let Some(inc) = &mut self.p.incoming {
            let take = data.len().min(max.saturating_sub(inc.body.len()));
            inc.body.push(data.get(..take).unwrap_or_default(), ts_ns);
            if take < data.len() {
                inc.truncated = true;
            }
        }
    }

    fn end(&mut self, end: MessageEnd) {
        let Some(inc) = self.p.incoming.take() else {
            return;
        };
        let no_body = inc.method.eq_ignore_ascii_case("HEAD");
        let decoder = match end.outcome {
            Outcome::Complete => {
                if self.p.pending.len() >= self.p.limits.max_pending_requests {
                    None
                } else {
                    let req = llm::Request {
                        method: &inc.method,
                        path: &inc.path,
                        headers: &inc.headers,
                        body: inc.body.as_slice(),
                        body_truncated: inc.truncated || end.truncated,
                        start_ns: inc.start_ns,
                        end_ns: end.ts_ns,
                        wire_bytes: end.wire_bytes,
                    };
                    (self.p.recognize)(&req, &self.p.limits)
                }
            }
            // Its bytes were lost but its response will still come: keep its place.
            Outcome::Lost => None,
            Outcome::Cut | Outcome::Aborted => return,
        };
        if let Some(d) = &decoder {
            let s = d.summary();
            self.out.push(Output::Started {
                seq: inc.seq,
                api: s.api,
                operation: s.operation,
                model: s.model,
                stream: s.stream,
                ts_ns: end.ts_ns,
            });
        }
        let pending = Pending {
            seq: inc.seq,
            decoder,
            no_body,
            start_ns: inc.start_ns,
        };
        self.p.enqueue(pending, self.out);
    }

    fn error(&mut self, err: DecodeError) {
        match err {
            DecodeError::NotHttp => self.p.stop = true,
            DecodeError::HeadTooLarge { .. } => {
                // A request we cannot read still gets a response: hold its place in the queue.
                let seq = self.p.next_seq();
                let pending = Pending {
                    seq,
                    decoder: None,
                    no_body: false,
                    start_ns: self.p.ts_ns,
                };
                self.out.push(Output::Error(err));
                self.p.enqueue(pending, self.out);
                return;
            }
            _ => {}
        }
        self.out.push(Output::Error(err));
    }

    fn unsupported(&mut self, what: Unsupported) {
        self.out.push(Output::Unsupported(what));
        self.p.stop = true;
    }

    fn stopped(&self) -> bool {
        self.p.stop
    }
}

/// [`Handler`] for the response direction.
struct RespSide<'a> {
    p: &'a mut Pairing,
    out: &'a mut Vec<Output>,
}

impl<'a> RespSide<'a> {
    fn new(p: &'a mut Pairing, out: &'a mut Vec<Output>) -> Self {
        RespSide { p, out }
    }
}

impl Handler for RespSide<'_> {
    fn head(&mut self, head: &Head, start_ns: u64, _ts_ns: u64) -> BodyPlan {
        let Head::Response(r) = head else {
            return BodyPlan::default();
        };
        let Some(req) = self.p.request_for(start_ns, self.out) else {
            self.out.push(Output::Error(DecodeError::UnmatchedResponse));
            return BodyPlan::default();
        };
        let Some(mut decoder) = req.decoder else {
            return BodyPlan {
                deliver: false,
                no_body: req.no_body,
            };
        };
        decoder.response_head(&llm::ResponseHead {
            status: r.status,
            headers: &r.headers,
            start_ns,
        });
        self.p.inflight = Some(InFlight {
            seq: req.seq,
            decoder,
            first_token: false,
        });
        BodyPlan {
            deliver: true,
            no_body: req.no_body,
        }
    }

    fn body(&mut self, data: &[u8], ts_ns: u64) {
        let Some(f) = &mut self.p.inflight else {
            return;
        };
        let mut errors = Vec::new();
        let first = f.decoder.response_body(data, ts_ns, &mut errors);
        self.out.extend(errors.into_iter().map(Output::Error));
        if let (Some(ts_ns), false) = (first, f.first_token) {
            f.first_token = true;
            self.out.push(Output::FirstToken { seq: f.seq, ts_ns });
        }
    }

    fn end(&mut self, end: MessageEnd) {
        if end.outcome == Outcome::Aborted {
            self.p.resp_resynced = true;
        }
        let Some(f) = self.p.inflight.take() else {
            return;
        };
        let body_end = match end.outcome {
            Outcome::Complete => BodyEnd::Complete,
            Outcome::Cut => BodyEnd::Cut(self.p.ended_by),
            Outcome::Lost | Outcome::Aborted => BodyEnd::Cut(EndedBy::Unknown),
        };
        finish(
            self.out,
            f.seq,
            f.decoder,
            body_end,
            end.ts_ns,
            end.wire_bytes,
            end.truncated,
        );
    }

    fn error(&mut self, err: DecodeError) {
        match err {
            DecodeError::NotHttp => self.p.stop = true,
            DecodeError::BadHead(_) | DecodeError::HeadTooLarge { .. } | DecodeError::BadChunk => {
                self.p.resp_resynced = true;
            }
            _ => {}
        }
        self.out.push(Output::Error(err));
    }

    fn unsupported(&mut self, what: Unsupported) {
        self.out.push(Output::Unsupported(what));
        self.p.stop = true;
    }

    fn stopped(&self) -> bool {
        self.p.stop
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
