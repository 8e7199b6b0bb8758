//! HTTP/2 connection decoding (RFC 9113): both directions' frames in, one exchange per stream out.
//!
//! Selected by content, never by port: [`crate::ConnDecoder`] hands a connection here when the
//! request stream starts with the client preface, or the response stream with a server SETTINGS
//! frame (the server may write first). h2c with prior knowledge and h2 over TLS (plaintext from the
//! TLS capture) are the same bytes from here on.
//!
//! Header blocks (HEADERS / PUSH_PROMISE + CONTINUATION) are collected up to `max_head_bytes` and
//! decoded with one HPACK decoder per direction; every block is decoded, whatever its stream, so
//! the dynamic tables stay in step with the peers'. Without the connection's start the tables are
//! unknown: a connection whose request stream does not begin with the preface is reported as
//! [`Unsupported::Http2MidStream`] and not decoded. Flow control and priorities do not change what
//! was said and are ignored. Anything that makes the HPACK state uncertain (lost bytes, an
//! undecodable or oversized block, a framing error) ends decoding of the connection: every open
//! exchange ends incomplete rather than be guessed at.

use std::collections::BTreeMap;

use crate::exchange::Incomplete;
use crate::llm::{BodyEnd, Candidate, Headers, Recognizer};
use crate::types::{DecodeError, EndedBy, Limits, Output, Unsupported};

use super::h2frame::{
    self, CONTINUATION, END_HEADERS, END_STREAM, FrameEvent, FrameHeader, FrameReader, GOAWAY,
    HEADERS, PREFACE, PUSH_PROMISE, RST_STREAM,
};
use super::h2stream::{Block, H2Stream};

/// The two directions, as indices.
const REQ: usize = 0;
const RESP: usize = 1;

/// A header block being collected across HEADERS / PUSH_PROMISE and CONTINUATION frames.
#[derive(Debug)]
struct Collecting {
    stream: u32,
    /// PUSH_PROMISE blocks are decoded (for the table) and dropped.
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    start_ns: u64,
    /// Frame bytes (headers + payloads) of the block's frames.
    wire: u64,
}

/// HPACK decoder of one direction (the crate's type has no `Debug`).
struct Hpack(loona_hpack::Decoder<'static>);

impl std::fmt::Debug for Hpack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hpack")
    }
}

#[derive(Debug)]
pub(crate) struct H2Conn {
    limits: Limits,
    recognize: Recognizer,
    candidate: Candidate,
    frames: [FrameReader; 2],
    hpack: [Hpack; 2],
    collecting: [Option<Collecting>; 2],
    /// Preface bytes still expected at the start of the request stream.
    preface_left: usize,
    streams: BTreeMap<u32, H2Stream>,
    next_seq: u64,
    /// Gave up or ended: input is ignored.
    pub dead: bool,
}

impl H2Conn {
    pub fn new(limits: Limits, recognize: Recognizer, candidate: Candidate) -> Self {
        let hpack = || {
            let mut d = loona_hpack::Decoder::new();
            // A peer may grow its table only as far as the other side allows (SETTINGS); past our
            // cap the block is refused (and decoding stops) rather than the memory taken.
            d.set_max_allowed_table_size(limits.max_head_bytes);
            Hpack(d)
        };
        H2Conn {
            limits,
            recognize,
            candidate,
            frames: [
                FrameReader::new(limits.max_head_bytes),
                FrameReader::new(limits.max_head_bytes),
            ],
            hpack: [hpack(), hpack()],
            collecting: [None, None],
            preface_left: PREFACE.len(),
            streams: BTreeMap::new(),
            next_seq: 0,
            dead: false,
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.frames
            .iter()
            .map(FrameReader::buffered_bytes)
            .sum::<usize>()
            + self
                .collecting
                .iter()
                .flatten()
                .map(|c| c.buf.len())
                .sum::<usize>()
            + self
                .streams
                .values()
                .map(H2Stream::buffered_bytes)
                .sum::<usize>()
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes of one direction (`request`: client → server).
    pub fn feed(&mut self, request: bool, mut data: &[u8], ts_ns: u64, out: &mut Vec<Output>) {
        if self.dead {
            return;
        }
        if request && self.preface_left > 0 {
            let done = PREFACE.len() - self.preface_left;
            let take = self.preface_left.min(data.len());
            if data.get(..take) != PREFACE.get(done..done + take) {
                // Frames without the connection's start: the HPACK tables are unknown.
                out.push(Output::Unsupported(Unsupported::Http2MidStream));
                self.stop(EndedBy::Capture(Incomplete::Undecodable), ts_ns, out);
                return;
            }
            self.preface_left -= take;
            data = &data[take..];
        }
        let d = if request { REQ } else { RESP };
        let mut reader = std::mem::replace(&mut self.frames[d], FrameReader::new(0));
        reader.feed(data, ts_ns, &mut |ev| {
            if !self.dead {
                self.event(d, ev, out);
            }
        });
        // A decoder that stopped keeps no partial frame.
        if !self.dead {
            self.frames[d] = reader;
        }
    }

    /// Bytes of one direction were lost: the HPACK state can no longer be trusted.
    pub fn gap(&mut self, ts_ns: u64, out: &mut Vec<Output>) {
        self.stop(EndedBy::Capture(Incomplete::CaptureGap), ts_ns, out);
    }

    /// The connection ended (or decoding stops): every open stream ends `by`.
    pub fn stop(&mut self, by: EndedBy, ts_ns: u64, out: &mut Vec<Output>) {
        self.dead = true;
        self.collecting = [None, None];
        self.frames = [FrameReader::new(0), FrameReader::new(0)];
        for (_, s) in std::mem::take(&mut self.streams) {
            s.finish(BodyEnd::Cut(by), ts_ns, out);
        }
    }

    /// A protocol error that leaves the connection's state unknown.
    fn fatal(&mut self, err: DecodeError, ts_ns: u64, out: &mut Vec<Output>) {
        out.push(Output::Error(err));
        self.stop(EndedBy::Capture(Incomplete::Undecodable), ts_ns, out);
    }

    fn event(&mut self, d: usize, ev: FrameEvent<'_>, out: &mut Vec<Output>) {
        match ev {
            FrameEvent::Frame {
                header,
                payload,
                start_ns,
            } => self.frame(d, header, payload, start_ns, out),
            FrameEvent::Data {
                stream,
                bytes,
                ts_ns,
            } => {
                if self.collecting[d].is_some() {
                    return self.fatal(
                        DecodeError::BadFrame("DATA inside a header block"),
                        ts_ns,
                        out,
                    );
                }
                if let Some(s) = self.streams.get_mut(&stream) {
                    if d == REQ {
                        s.request_data(bytes, ts_ns, &self.limits);
                    } else {
                        s.response_data(bytes, ts_ns, out);
                    }
                }
            }
            FrameEvent::DataEnd {
                stream,
                end_stream,
                wire_bytes,
                ts_ns,
            } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.wire(d == REQ, wire_bytes);
                }
                if end_stream {
                    self.end_stream(d, stream, ts_ns, out);
                }
            }
            FrameEvent::Oversized { header } => {
                if matches!(header.kind, HEADERS | CONTINUATION | PUSH_PROMISE) {
                    let limit = self.limits.max_head_bytes;
                    // Its block cannot be decoded, so neither can any after it.
                    self.fatal(DecodeError::HeadTooLarge { limit }, 0, out);
                }
            }
            FrameEvent::BadPadding { .. } => self.fatal(
                DecodeError::BadFrame("padding longer than the frame"),
                0,
                out,
            ),
        }
    }

    fn frame(
        &mut self,
        d: usize,
        h: FrameHeader,
        payload: &[u8],
        start_ns: u64,
        out: &mut Vec<Output>,
    ) {
        let wire = 9 + u64::from(h.len);
        if let Some(c) = &mut self.collecting[d] {
            // RFC 9113 §6.10: only CONTINUATION frames of the same stream may follow.
            if h.kind != CONTINUATION || h.stream != c.stream {
                return self.fatal(
                    DecodeError::BadFrame("header block interrupted"),
                    start_ns,
                    out,
                );
            }
            if c.buf.len() + payload.len() > self.limits.max_head_bytes {
                let limit = self.limits.max_head_bytes;
                return self.fatal(DecodeError::HeadTooLarge { limit }, start_ns, out);
            }
            c.buf.extend_from_slice(payload);
            c.wire += wire;
            if h.has(END_HEADERS) {
                self.block_done(d, out);
            }
            return;
        }
        match h.kind {
            HEADERS | PUSH_PROMISE => {
                let Some(frag) = h2frame::header_fragment(&h, payload) else {
                    return self.fatal(DecodeError::BadFrame("bad header padding"), start_ns, out);
                };
                self.collecting[d] = Some(Collecting {
                    stream: h.stream,
                    push: h.kind == PUSH_PROMISE,
                    end_stream: h.kind == HEADERS && h.has(END_STREAM),
                    buf: frag.to_vec(),
                    start_ns,
                    wire,
                });
                if h.has(END_HEADERS) {
                    self.block_done(d, out);
                }
            }
            CONTINUATION => self.fatal(
                DecodeError::BadFrame("CONTINUATION without a header block"),
                start_ns,
                out,
            ),
            RST_STREAM => {
                let by = if d == REQ {
                    EndedBy::Client
                } else {
                    EndedBy::Server
                };
                if let Some(s) = self.streams.remove(&h.stream) {
                    s.finish(BodyEnd::Cut(by), start_ns, out);
                }
            }
            GOAWAY => {
                // Streams above the last one the sender processed were never acted on.
                let Some(last) = payload.first_chunk::<4>() else {
                    return;
                };
                let last = u32::from_be_bytes(*last) & 0x7fff_ffff;
                let by = if d == REQ {
                    EndedBy::Client
                } else {
                    EndedBy::Server
                };
                let dropped: Vec<u32> = self.streams.range(last + 1..).map(|(k, _)| *k).collect();
                for id in dropped {
                    if let Some(s) = self.streams.remove(&id) {
                        s.finish(BodyEnd::Cut(by), start_ns, out);
                    }
                }
            }
            // SETTINGS, PING, WINDOW_UPDATE, PRIORITY, extensions: nothing about the exchanges.
            _ => {}
        }
    }

    /// A header block is complete: decode it (always, for the table) and apply it.
    fn block_done(&mut self, d: usize, out: &mut Vec<Output>) {
        let Some(c) = self.collecting[d].take() else {
            return;
        };
        let max = self.limits.max_head_bytes;
        let mut block = Block::default();
        // RFC 9113 §6.5.2 SETTINGS_MAX_HEADER_LIST_SIZE arithmetic: name + value + 32 per field.
        let mut list_size = 0usize;
        let mut bad_utf8 = false;
        let r = self.hpack[d].0.decode_with_cb(&c.buf, |n, v| {
            list_size += n.len() + v.len() + 32;
            if list_size > max {
                return;
            }
            match &n[..] {
                b":method" | b":path" | b":authority" | b":status" => {
                    let Ok(v) = std::str::from_utf8(&v) else {
                        bad_utf8 = true;
                        return;
                    };
                    match &n[..] {
                        b":method" => block.method = Some(v.to_owned()),
                        b":path" => block.path = Some(v.to_owned()),
                        b":authority" => block.authority = Some(v.to_owned()),
                        _ => block.status = v.parse().ok(),
                    }
                }
                n if n.first() == Some(&b':') => {}
                n => block.headers.0.push((
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    v.into_owned(),
                )),
            }
        });
        if r.is_err() {
            return self.fatal(DecodeError::Hpack, c.start_ns, out);
        }
        if list_size > max {
            // The table is still in step; only this stream is skipped.
            out.push(Output::Error(DecodeError::HeadTooLarge { limit: max }));
            if let Some(s) = self.streams.remove(&c.stream) {
                s.finish(
                    BodyEnd::Cut(EndedBy::Capture(Incomplete::DecoderLimit)),
                    c.start_ns,
                    out,
                );
            }
            return;
        }
        if bad_utf8 {
            out.push(Output::Error(DecodeError::BadHead(
                "non-UTF-8 pseudo-header",
            )));
            return;
        }
        if c.push {
            return;
        }
        if d == REQ {
            self.request_block(c, block, out);
        } else if let Some(s) = self.streams.get_mut(&c.stream) {
            s.wire(false, c.wire);
            s.response_headers(block, c.start_ns, &self.limits, out);
            if c.end_stream {
                self.end_stream(RESP, c.stream, c.start_ns, out);
            }
        }
    }

    /// A request header block: a new stream's head, or a known stream's trailers.
    fn request_block(&mut self, c: Collecting, block: Block, out: &mut Vec<Output>) {
        if !self.streams.contains_key(&c.stream) {
            // Client streams are odd-numbered and new ones carry their method (RFC 9113 §5.1.1).
            if c.stream.is_multiple_of(2) || block.method.is_none() {
                return;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            if is_grpc(&block.headers) {
                out.push(Output::Unsupported(Unsupported::Grpc));
                return;
            }
            if self.streams.len() >= self.limits.max_pending_requests {
                out.push(Output::Error(DecodeError::TooManyPending));
                return;
            }
            let method = block.method.as_deref().unwrap_or_default();
            let path = block.path.as_deref().unwrap_or_default();
            let path = path.split(['?', '#']).next().unwrap_or_default();
            let candidate = !method.eq_ignore_ascii_case("CONNECT")
                && (self.candidate)(method, path, &block.headers);
            let s = H2Stream::new(seq, block, candidate, c.start_ns, &self.limits);
            self.streams.insert(c.stream, s);
        }
        if let Some(s) = self.streams.get_mut(&c.stream) {
            s.wire(true, c.wire);
        }
        if c.end_stream {
            self.end_stream(REQ, c.stream, c.start_ns, out);
        }
    }

    /// END_STREAM in direction `d`.
    fn end_stream(&mut self, d: usize, stream: u32, ts_ns: u64, out: &mut Vec<Output>) {
        if d == REQ {
            let Some(s) = self.streams.get_mut(&stream) else {
                return;
            };
            if s.request_done {
                return;
            }
            s.request_end(ts_ns, self.recognize, &self.limits, out);
            if !s.is_recognised() {
                // Not an API call: nothing more to follow on it.
                self.streams.remove(&stream);
            }
        } else if let Some(s) = self.streams.remove(&stream)
            // A response that ended before its request did (the server answered early): the
            // request's exchange is not decoded.
            && s.request_done
        {
            s.finish(BodyEnd::Complete, ts_ns, out);
        }
    }
}

/// gRPC rides HTTP/2 with its own framing; it is not an LLM HTTP API this decoder knows.
fn is_grpc(h: &Headers) -> bool {
    h.get_str("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/grpc"))
}
