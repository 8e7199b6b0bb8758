//! Test harness: a deterministic PRNG, an event-collecting [`Handler`], split drivers, a probe
//! API decoder that records what the HTTP layer handed it, and body encoders.

use std::collections::VecDeque;
use std::io::Write;

use llm_observer_decode::llm::{ApiDecoder, BodyEnd, Request, RequestSummary, ResponseHead};
use llm_observer_decode::protocol::head::{Direction, Head};
use llm_observer_decode::protocol::http1::{BodyPlan, Handler, MessageEnd, Parser};
use llm_observer_decode::{
    Api, ConnDecoder, DecodeError, Exchange, Limits, Operation, Output, Stream, Timings,
    Unsupported,
};

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Random cut of `len` bytes into pieces (lengths), biased towards small pieces.
    pub fn pieces(&mut self, len: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let max = match self.below(4) {
                0 => 1,
                1 => 8,
                2 => 64,
                _ => 1024,
            };
            let n = (1 + self.below(max)).min(left);
            out.push(n);
            left -= n;
        }
        out
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/http/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What a parser reported, with adjacent body pieces merged (so splits compare equal).
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Head(Head),
    Body(Vec<u8>),
    End(MessageEnd),
    Error(DecodeError),
    Unsupported(Unsupported),
}

/// A [`Handler`] that records events. Responses to the methods queued in `no_body` (HEAD) get
/// `no_body`; `deliver` controls decoding.
#[derive(Debug, Default)]
pub struct Collector {
    pub events: Vec<Ev>,
    /// Head start / end capture times, in order.
    pub head_ts: Vec<(u64, u64)>,
    /// Capture time of each body piece, as delivered.
    pub body_ts: Vec<(usize, u64)>,
    pub no_body: VecDeque<bool>,
    pub frame_only: bool,
}

impl Handler for Collector {
    fn head(&mut self, head: &Head, start_ns: u64, ts_ns: u64) -> BodyPlan {
        self.events.push(Ev::Head(head.clone()));
        self.head_ts.push((start_ns, ts_ns));
        let no_body =
            matches!(head, Head::Response(_)) && self.no_body.pop_front().unwrap_or(false);
        BodyPlan {
            deliver: !self.frame_only,
            no_body,
        }
    }

    fn body(&mut self, data: &[u8], ts_ns: u64) {
        assert!(!data.is_empty(), "empty body piece");
        self.body_ts.push((data.len(), ts_ns));
        if let Some(Ev::Body(b)) = self.events.last_mut() {
            b.extend_from_slice(data);
        } else {
            self.events.push(Ev::Body(data.to_vec()));
        }
    }

    fn end(&mut self, end: MessageEnd) {
        self.events.push(Ev::End(end));
    }

    fn error(&mut self, err: DecodeError) {
        self.events.push(Ev::Error(err));
    }

    fn unsupported(&mut self, what: Unsupported) {
        self.events.push(Ev::Unsupported(what));
    }
}

pub fn small_limits() -> Limits {
    Limits {
        max_head_bytes: 4096,
        max_body_bytes: 64 * 1024,
        max_event_bytes: 4096,
        max_pending_requests: 8,
        ..Limits::default()
    }
}

/// Feeds `data` to a fresh parser in pieces of the given lengths (ts = piece index), then ends
/// the stream when `end` is set. Asserts the buffered-bytes cap after every call.
pub fn parse_pieces(
    dir: Direction,
    limits: Limits,
    data: &[u8],
    pieces: &[usize],
    collector: Collector,
    end: bool,
) -> Collector {
    let mut p = Parser::new(dir, limits);
    let mut c = collector;
    let mut at = 0;
    for (i, &n) in pieces.iter().enumerate() {
        let piece = &data[at..at + n];
        at += n;
        p.feed(piece, i as u64, &mut c);
        assert!(
            p.buffered_bytes() <= limits.max_head_bytes + 32,
            "buffered {} over the cap",
            p.buffered_bytes()
        );
    }
    assert_eq!(at, data.len(), "pieces must cover the input");
    if end {
        p.end(pieces.len() as u64, &mut c);
    }
    c
}

/// Parses `data` whole (one piece, ts 0), optionally ending the stream.
pub fn parse_whole(dir: Direction, data: &[u8], end: bool) -> Vec<Ev> {
    parse_pieces(
        dir,
        small_limits(),
        data,
        &[data.len()],
        Collector::default(),
        end,
    )
    .events
}

/// Events with the timestamps of `End` zeroed, for comparing different splits.
pub fn without_ts(events: Vec<Ev>) -> Vec<Ev> {
    events
        .into_iter()
        .map(|e| match e {
            Ev::End(mut m) => {
                m.ts_ns = 0;
                Ev::End(m)
            }
            e => e,
        })
        .collect()
}

// ---- ConnDecoder with a probe API decoder ----

/// Records what the HTTP layer handed it; its `Exchange` carries the evidence: `request_model`
/// = the request body as text, `response_model` = the response body as text, `finish_reason` =
/// the `BodyEnd`.
#[derive(Debug)]
pub struct Probe {
    method: String,
    path: String,
    request_body: Vec<u8>,
    request_truncated: bool,
    start_ns: u64,
    request_end_ns: u64,
    request_bytes: u64,
    status: Option<u16>,
    response_start_ns: Option<u64>,
    body: Vec<u8>,
    first: Option<u64>,
}

impl ApiDecoder for Probe {
    fn summary(&self) -> RequestSummary {
        RequestSummary {
            api: Api::Openai,
            operation: Operation::Chat,
            model: None,
            stream: false,
            user_labels: Vec::new(),
        }
    }

    fn response_head(&mut self, head: &ResponseHead<'_>) {
        self.status = Some(head.status);
        self.response_start_ns = Some(head.start_ns);
    }

    fn response_body(&mut self, data: &[u8], ts_ns: u64, _: &mut Vec<DecodeError>) -> Option<u64> {
        assert!(!data.is_empty());
        self.body.extend_from_slice(data);
        if self.first.is_none() {
            self.first = Some(ts_ns);
            return Some(ts_ns);
        }
        None
    }

    fn finish(self: Box<Self>, end: BodyEnd, end_ns: u64, response_wire_bytes: u64) -> Exchange {
        Exchange {
            params: Default::default(),
            api: Api::Openai,
            operation: Operation::Chat,
            method: self.method,
            path: self.path,
            request_model: Some(String::from_utf8_lossy(&self.request_body).into_owned()),
            response_model: Some(String::from_utf8_lossy(&self.body).into_owned()),
            stream: false,
            status: self.status,
            timings: Timings {
                request_start_ns: self.start_ns,
                request_end_ns: Some(self.request_end_ns),
                response_start_ns: self.response_start_ns,
                first_token_ns: self.first,
                last_token_ns: None,
                response_end_ns: Some(end_ns),
                content_events: 0,
            },
            tokens: Default::default(),
            cache_write_tokens: Default::default(),
            finish_reason: Some(format!("{end:?}")),
            error: None,
            incomplete: None,
            tool_calls: Vec::new(),
            tool_ids: Default::default(),
            mcp: None,
            load_duration_ns: None,
            request_bytes: self.request_bytes,
            response_bytes: response_wire_bytes,
            body_truncated: self.request_truncated,
            server: None,
        }
    }
}

/// Recognises every request except paths under `/skip`.
pub fn probe(req: &Request<'_>, _: &Limits) -> Option<Box<dyn ApiDecoder>> {
    if req.path.starts_with("/skip") {
        return None;
    }
    Some(Box::new(Probe {
        method: req.method.to_owned(),
        path: req.path.to_owned(),
        request_body: req.body.to_vec(),
        request_truncated: req.body_truncated,
        start_ns: req.start_ns,
        request_end_ns: req.end_ns,
        request_bytes: req.wire_bytes,
        status: None,
        response_start_ns: None,
        body: Vec::new(),
        first: None,
    }))
}

/// One step of a connection script.
#[derive(Debug, Clone)]
pub enum Step {
    Data(Stream, Vec<u8>),
    Gap(Stream, u64),
}

/// Runs a script on a probe-recognising decoder, each step split by `split` (piece lengths for a
/// given length) and stamped with increasing capture times; ends with `Client` when `end`.
/// Asserts the buffered-bytes cap after every call.
pub fn run_conn(
    limits: Limits,
    steps: &[Step],
    mut split: impl FnMut(usize) -> Vec<usize>,
    end: bool,
) -> Vec<Output> {
    let mut d = ConnDecoder::with_recognizer(limits, probe);
    let mut out = Vec::new();
    let mut ts = 1000;
    for step in steps {
        match step {
            Step::Data(stream, bytes) => {
                let mut at = 0;
                for n in split(bytes.len()) {
                    d.feed(*stream, &bytes[at..at + n], ts, &mut out);
                    at += n;
                    assert!(d.buffered_bytes() <= limits.max_buffered_bytes());
                }
                ts += 1000;
            }
            Step::Gap(stream, n) => d.gap(*stream, *n, ts, &mut out),
        }
    }
    if end {
        d.end(llm_observer_decode::EndedBy::Client, ts, &mut out);
    }
    out
}

/// `(seq, method, path, status, request body, response body, end)` of every `Done`, in order.
pub type DoneRow = (u64, String, String, Option<u16>, String, String, String);

pub fn done_rows(out: &[Output]) -> Vec<DoneRow> {
    out.iter()
        .filter_map(|o| match o {
            Output::Done { seq, exchange: e } => Some((
                *seq,
                e.method.clone(),
                e.path.clone(),
                e.status,
                e.request_model.clone().unwrap_or_default(),
                e.response_model.clone().unwrap_or_default(),
                e.finish_reason.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

pub fn errors(out: &[Output]) -> Vec<DecodeError> {
    out.iter()
        .filter_map(|o| match o {
            Output::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

// ---- encoders ----

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// `data` in chunked encoding, `chunk` bytes per chunk.
pub fn chunked(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        out.extend(format!("{:x}\r\n", c.len()).bytes());
        out.extend_from_slice(c);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}
