//! [`ConnDecoder`]: the per-connection entry point the agent drives.
//!
//! The connection layer owns one `ConnDecoder` per TCP connection that looks like HTTP/1.x and feeds
//! it the bytes of both directions in order, already mapped to [`Stream::Request`] /
//! [`Stream::Response`] by the connection's role.
//!
//! Each direction has its own [`Parser`]; `protocol::pairing` pairs their messages. Requests are numbered
//! (`seq`) in wire order and queue until their response head arrives (FIFO: keep-alive and
//! pipelining). A complete request is offered to [`llm::recognize_with_limits`]; a recognised one gets
//! `Output::Started`, its response is decoded and fed to its [`llm::ApiDecoder`], and it ends with
//! `Output::Done`. Unrecognised exchanges keep their place in the queue but their response bodies
//! are framed without decoding.
//!
//! Pairing after lost bytes uses capture times, which the kernel gives both directions from one
//! monotonic clock: a response cannot start before its request did. After the response stream
//! resyncs, the next response head is paired with the latest queued request that started before
//! it, and the requests queued before that one are failed (their responses were lost) — right for
//! the usual non-pipelined connection, where request *n+1* is only sent after response *n*.

use crate::exchange::Stream;
use crate::llm;
pub use crate::llm::{Candidate, Recognizer};
use crate::protocol::h2::H2Conn;
use crate::protocol::h2frame::{PREFACE, looks_like_h2_frame, looks_like_server_preface};
use crate::protocol::head::Direction;
use crate::protocol::http1::Parser;
use crate::protocol::pairing::{Pairing, ReqSide, RespSide};
use crate::types::{DecodeError, EndedBy, Limits, Output};

/// Per-connection decoder state.
#[derive(Debug)]
pub struct ConnDecoder {
    limits: Limits,
    req: Parser,
    resp: Parser,
    pairs: Pairing,
    /// Ended, or gave up (not HTTP, unsupported protocol, too many pending): input is ignored.
    dead: bool,
    /// Which protocol the connection speaks, decided by its first bytes.
    mode: Mode,
    recognize: Recognizer,
    candidate: Candidate,
}

/// HTTP/1.x or HTTP/2, told apart by content (the client preface, or a server's SETTINGS frame
/// written before the preface was read), never by port.
#[derive(Debug)]
enum Mode {
    /// Nothing decisive yet; holds request bytes that are a prefix of the HTTP/2 preface.
    Sniff(Vec<u8>),
    Http1,
    Http2(Box<H2Conn>),
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
            mode: Mode::Sniff(Vec::new()),
            recognize,
            candidate,
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
        if let Mode::Sniff(held) = &mut self.mode {
            match stream {
                Stream::Request => {
                    held.extend_from_slice(data);
                    let n = held.len().min(PREFACE.len());
                    if held.get(..n) == PREFACE.get(..n) && n < PREFACE.len() {
                        // Still a prefix of the preface: wait for more.
                        return;
                    }
                    let held = std::mem::take(held);
                    if looks_like_h2_frame(&held) {
                        // HTTP/2 frames without the preface: joined mid-way, HPACK state unknown.
                        out.push(Output::Unsupported(crate::Unsupported::Http2MidStream));
                        self.dead = true;
                        return;
                    }
                    self.mode = if held.starts_with(PREFACE) {
                        self.h2_mode()
                    } else {
                        Mode::Http1
                    };
                    return self.feed_decided(stream, &held, ts_ns, out);
                }
                Stream::Response => {
                    // A server may write its SETTINGS before it reads the client's preface.
                    let held = std::mem::take(held);
                    self.mode = if looks_like_server_preface(data) {
                        self.h2_mode()
                    } else {
                        Mode::Http1
                    };
                    if !held.is_empty() {
                        self.feed_decided(Stream::Request, &held, ts_ns, out);
                    }
                }
            }
        }
        self.feed_decided(stream, data, ts_ns, out);
    }

    fn h2_mode(&self) -> Mode {
        Mode::Http2(Box::new(H2Conn::new(
            self.limits,
            self.recognize,
            self.candidate,
        )))
    }

    fn feed_decided(&mut self, stream: Stream, data: &[u8], ts_ns: u64, out: &mut Vec<Output>) {
        if let Mode::Http2(h2) = &mut self.mode {
            h2.feed(stream == Stream::Request, data, ts_ns, out);
            self.dead = h2.dead;
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
        out.push(Output::Error(DecodeError::Gap { missing }));
        match &mut self.mode {
            Mode::Http2(h2) => {
                // HTTP/2 cannot resync: lost bytes may have changed the HPACK tables.
                h2.gap(ts_ns, out);
                self.dead = true;
                return;
            }
            Mode::Sniff(held) => {
                let held = std::mem::take(held);
                self.mode = Mode::Http1;
                if !held.is_empty() {
                    self.feed_decided(Stream::Request, &held, ts_ns, out);
                }
            }
            Mode::Http1 => {}
        }
        self.pairs.ts_ns = ts_ns;
        match stream {
            Stream::Request => {
                // Between messages a gap may have swallowed whole requests; inside one, that
                // request is the one that lost bytes (and is accounted for as such).
                if !self.req.in_body() && !self.pairs.req_loss_counted {
                    self.pairs.req_gap_unaccounted = true;
                }
                self.req
                    .gap(missing, ts_ns, &mut ReqSide::new(&mut self.pairs, out))
            }
            Stream::Response => {
                if self.pairs.open_requests() == 0 && !self.pairs.req_loss_counted {
                    // Response bytes with no request waiting for them: that request was lost.
                    self.pairs.req_gap_unaccounted = true;
                }
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
        match &mut self.mode {
            Mode::Http2(h2) => {
                h2.stop(by, ts_ns, out);
                self.dead = true;
                return;
            }
            // The start of a preface that never finished: nothing to decode, nothing to keep.
            Mode::Sniff(held) => *held = Vec::new(),
            Mode::Http1 => {}
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
        let mode = match &self.mode {
            Mode::Sniff(held) => held.len(),
            Mode::Http1 => 0,
            Mode::Http2(h2) => h2.buffered_bytes(),
        };
        mode + self.req.buffered_bytes() + self.resp.buffered_bytes() + self.pairs.buffered_bytes()
    }

    /// True once the connection was recognised as HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(self.mode, Mode::Http2(_))
    }

    /// Requests received and waiting for (the end of) their response.
    pub fn pending_requests(&self) -> usize {
        match &self.mode {
            Mode::Http2(h2) => h2.open_streams(),
            _ => self.pairs.open_requests(),
        }
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
            self.shutdown(EndedBy::Capture(self.pairs.stop_why), ts_ns, out);
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
