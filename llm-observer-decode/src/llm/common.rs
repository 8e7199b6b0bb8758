//! The machinery every API decoder shares: the [`Core`] record being built, response framing
//! selection (SSE / NDJSON / one JSON body), error-status handling and the end-of-response rules.
//!
//! An API decoder is a [`Handler`]: it only interprets events (one SSE event, one NDJSON line, one
//! complete JSON body) and writes what they say into the [`Core`]. [`Engine`] wraps a handler into an
//! [`ApiDecoder`].
//!
//! End-of-response rules ([`Engine::finish`]):
//! - no response head → `ClientCancelled` / `ServerClosed` by who closed, or [`Incomplete`] when
//!   the capture ended it (lost bytes, a forgotten connection) — never an error of the server;
//! - status ≥ 400 → classified from the status and the error body ([`super::errors`]);
//! - a body cut before the API's terminal event (`[DONE]`, `message_stop`, `done:true`, …) →
//!   by who closed, as above; a stream whose framing ended cleanly but without its terminal event (llama.cpp
//!   answers a too-long streamed prompt with 200 and an empty stream) → `Truncated`;
//! - an error already seen in the body (stream error event) is kept over the cut.
//!
//! TTFT marker: the capture time of the first content-bearing event. For a non-streamed body that
//! is the time of the bytes that completed the JSON value (so TTFT equals the latency there), set
//! only when the body carried output; `content_events` is then 1.

use std::fmt;

use crate::exchange::{
    Api, ErrorKind, Exchange, Incomplete, McpInfo, Operation, RequestParams, Timings, TokenCount,
    TokenSource, Tokens, ToolIds, ToolUse,
};
use crate::protocol::jsonarray::{JsonArrayParser, JsonNesting};
use crate::protocol::ndjson::NdjsonParser;
use crate::protocol::sse::{SseEvent, SseParser};
use crate::types::{DecodeError, EndedBy, Limits};

use super::errors::{ErrorFacts, classify_http};
use super::fingerprint::{self, Evidence};
use super::{ApiDecoder, BodyEnd, Request, RequestSummary, ResponseHead};

/// Caps on the strings an [`Exchange`] keeps.
pub(crate) const MAX_MODEL: usize = 256;
pub(crate) const MAX_REASON: usize = 128;
pub(crate) const MAX_TOOL_NAME: usize = 64;
pub(crate) const MAX_TOOLS: usize = 16;
/// Tool-call ids are short opaque tokens (`call_…`, `toolu_…`: ~30 bytes); longer ones are cut.
pub(crate) const MAX_TOOL_ID: usize = 64;
pub(crate) const MAX_PATH: usize = 256;
pub(crate) const MAX_METHOD: usize = 16;
pub(crate) const MAX_MCP: usize = 128;

/// `s` cut to at most `max` bytes at a char boundary.
pub(crate) fn cap(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The record under construction, written by the handlers.
#[derive(Debug)]
pub(crate) struct Core {
    pub api: Api,
    pub operation: Operation,
    pub request_model: Option<String>,
    pub stream: bool,
    pub method: String,
    pub path: String,
    pub timings: Timings,
    pub request_bytes: u64,
    pub body_truncated: bool,
    pub status: Option<u16>,
    pub response_model: Option<String>,
    pub tokens: Tokens,
    pub cache_write_tokens: TokenCount,
    /// The server's final usage report was seen (no counted fallback, even for absent fields).
    pub usage_final: bool,
    pub finish_reason: Option<String>,
    pub error: Option<ErrorKind>,
    /// The capture could not see the exchange whole (set only while no error is known).
    pub incomplete: Option<Incomplete>,
    pub tool_calls: Vec<String>,
    pub tool_ids: ToolIds,
    pub mcp: Option<McpInfo>,
    pub load_duration_ns: Option<u64>,
    /// The API's terminal event (or complete body) was seen: the response is whole.
    pub terminal: bool,
    /// Strongest server fingerprint seen so far (see [`super::fingerprint`]).
    pub server: Option<Evidence>,
    /// The body was framed as a stream (SSE / NDJSON).
    pub streamed: bool,
    /// TTFT marker found during the current `response_body` call, to be returned by it.
    new_first: Option<u64>,
    pub params: RequestParams,
}

impl Core {
    pub(crate) fn new(
        req: &Request<'_>,
        api: Api,
        operation: Operation,
        model: Option<&str>,
        stream: bool,
    ) -> Core {
        Core {
            api,
            operation,
            request_model: model.map(|m| cap(m, MAX_MODEL)),
            stream,
            method: cap(req.method, MAX_METHOD),
            path: cap(req.path, MAX_PATH),
            timings: Timings {
                request_start_ns: req.start_ns,
                request_end_ns: Some(req.end_ns),
                ..Timings::default()
            },
            request_bytes: req.wire_bytes,
            body_truncated: req.body_truncated,
            status: None,
            response_model: None,
            tokens: Tokens::default(),
            cache_write_tokens: TokenCount::ABSENT,
            usage_final: false,
            finish_reason: None,
            error: None,
            incomplete: None,
            tool_calls: Vec::new(),
            tool_ids: ToolIds::default(),
            mcp: None,
            load_duration_ns: None,
            terminal: false,
            server: fingerprint::from_api(api),
            streamed: false,
            new_first: None,
            params: RequestParams {
                trace_parent: req
                    .headers
                    .get("traceparent")
                    .and_then(crate::TraceParent::parse),
                ..RequestParams::default()
            },
        }
    }

    /// A content-bearing event arrived at `ts_ns`.
    pub(crate) fn content(&mut self, ts_ns: u64) {
        if self.timings.first_token_ns.is_none() {
            self.timings.first_token_ns = Some(ts_ns);
            self.new_first = Some(ts_ns);
        }
        self.timings.last_token_ns = Some(ts_ns);
        self.timings.content_events += 1;
    }

    /// Keeps the stronger of the fingerprint so far and `seen`.
    pub(crate) fn fingerprint(&mut self, seen: Option<Evidence>) {
        self.server = Evidence::stronger(self.server, seen);
    }

    /// Body fingerprints can still change the verdict (none stronger than a body field is known),
    /// so the hot path reads `id` and `system_fingerprint` only while this holds.
    pub(crate) fn wants_body_fingerprint(&self) -> bool {
        self.server
            .is_none_or(|e| e.strength < fingerprint::Strength::Body)
    }

    /// Records the served model once (every chunk repeats it; only the first costs an allocation).
    pub(crate) fn response_model(&mut self, model: &str) {
        if self.response_model.is_none() && !model.is_empty() {
            self.response_model = Some(cap(model, MAX_MODEL));
        }
    }

    pub(crate) fn finish_reason(&mut self, reason: &str) {
        if !reason.is_empty() && self.finish_reason.as_deref() != Some(reason) {
            self.finish_reason = Some(cap(reason, MAX_REASON));
        }
    }

    pub(crate) fn tool(&mut self, name: &str) {
        if !name.is_empty() && self.tool_calls.len() < MAX_TOOLS {
            self.tool_calls.push(cap(name, MAX_TOOL_NAME));
        }
    }

    /// A tool call that carried an id (its name is recorded by [`Core::tool`] separately).
    pub(crate) fn tool_id(&mut self, id: &str, name: &str) {
        if !id.is_empty() && self.tool_ids.calls.len() < MAX_TOOLS {
            self.tool_ids.calls.push(ToolUse {
                id: cap(id, MAX_TOOL_ID),
                name: cap(name, MAX_TOOL_NAME),
            });
        }
    }

    /// Reads the tool-result ids a chat request carries (see [`super::tool_ids`]).
    pub(crate) fn tool_results(&mut self, body: &[u8]) {
        self.tool_ids.results = super::tool_ids::results(body);
    }

    /// Records an error unless one is already known (the first cause wins).
    pub(crate) fn fail(&mut self, kind: ErrorKind) {
        if self.error.is_none() {
            self.error = Some(kind);
        }
    }

    /// Generation operations whose output can be counted from stream events.
    fn counts_output(&self) -> bool {
        matches!(
            self.operation,
            Operation::Chat | Operation::TextCompletion | Operation::Responses
        )
    }
}

/// A token count from an optional reported value.
pub(crate) fn reported(v: Option<u64>) -> TokenCount {
    v.map_or(TokenCount::ABSENT, TokenCount::reported)
}

impl Core {
    /// The connection ended before the response was whole. A peer's close fails the exchange
    /// (cancelled by the client, closed by the server); an end the capture caused leaves it
    /// incomplete instead, so an overloaded agent never makes a healthy server look broken. An
    /// error already seen (a stream error event) is kept over either.
    pub(crate) fn cut(&mut self, by: EndedBy) {
        match by {
            EndedBy::Client => self.fail(ErrorKind::ClientCancelled),
            EndedBy::Server => self.fail(ErrorKind::ServerClosed),
            EndedBy::ServerOom => self.fail(ErrorKind::OutOfMemory),
            EndedBy::Capture(why) => {
                if self.error.is_none() && self.incomplete.is_none() {
                    self.incomplete = Some(why);
                }
            }
        }
    }
}

/// How an API streams when the response's content type does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Native {
    Sse,
    Ndjson,
}

/// One API's interpretation of response events.
pub(crate) trait Handler: Send + fmt::Debug + 'static {
    const NATIVE: Native;
    /// A streamed request answered with a JSON content type is a streamed JSON array (Gemini's
    /// `streamGenerateContent` without `alt=sse`): each element goes to [`Handler::on_line`].
    const ARRAY_STREAM: bool = false;

    /// The final response head (after `Core::status` is set).
    fn on_head(&mut self, core: &mut Core, head: &ResponseHead<'_>) {
        let _ = (core, head);
    }

    /// One SSE event of a 2xx response.
    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        let _ = (core, ev, errors);
    }

    /// One NDJSON line of a 2xx response.
    fn on_line(&mut self, core: &mut Core, line: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        let _ = (core, line, ts_ns, errors);
    }

    /// The complete JSON body of a 2xx response, completed by bytes captured at `ts_ns`.
    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>);

    /// The body of a status ≥ 400 response (`None`: absent, not JSON, or too large).
    fn on_error_body(&mut self, core: &mut Core, status: u16, body: Option<&[u8]>) {
        let facts = body.and_then(ErrorFacts::from_body);
        core.fail(classify_http(status, facts.as_ref()));
    }

    /// Last look before the end-of-response rules (fill tokens, decide `terminal`).
    fn finish(&mut self, core: &mut Core) {
        let _ = core;
    }
}

/// A whole JSON body, buffered up to a cap, with a tiny scanner that notices the moment the
/// top-level value is complete (so its parse, and the TTFT marker, happen at the right capture time).
#[derive(Debug)]
pub(crate) struct JsonBody {
    buf: Vec<u8>,
    max: usize,
    nest: JsonNesting,
    started: bool,
    done: bool,
    /// The body did not start with `{` or `[`.
    not_json: bool,
    /// The body outgrew `max`; scanning goes on, the buffer is dropped.
    truncated: bool,
}

impl JsonBody {
    pub(crate) fn new(max: usize) -> Self {
        JsonBody {
            buf: Vec::new(),
            max,
            nest: JsonNesting::default(),
            started: false,
            done: false,
            not_json: false,
            truncated: false,
        }
    }

    /// Scans `data`; returns true when this call completed the top-level value.
    pub(crate) fn feed(&mut self, data: &[u8]) -> bool {
        if self.done || self.not_json {
            return false;
        }
        let mut i = 0;
        if !self.started {
            while i < data.len() && data[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == data.len() {
                return false;
            }
            if data[i] != b'{' && data[i] != b'[' {
                self.not_json = true;
                return false;
            }
            self.started = true;
        }
        let begin = i;
        while i < data.len() {
            let b = data[i];
            i += 1;
            if self.nest.step(b) {
                self.done = true;
                break;
            }
        }
        self.keep(&data[begin..i]);
        self.done
    }

    fn keep(&mut self, part: &[u8]) {
        if self.truncated {
            return;
        }
        if self.buf.len() + part.len() > self.max {
            self.truncated = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    /// The complete value, when it was kept.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        (self.done && !self.truncated).then_some(self.buf.as_slice())
    }
}

#[derive(Debug)]
enum Framing {
    /// Decided by the first body bytes.
    Undecided,
    Sse(SseParser),
    Ndjson(NdjsonParser),
    Json(JsonBody),
    /// A streamed JSON array, one event per element.
    Array(JsonArrayParser),
    /// Nothing to decode (no head yet, 204, not JSON).
    Skip,
}

/// An [`ApiDecoder`] built from a [`Handler`].
#[derive(Debug)]
pub(crate) struct Engine<H: Handler> {
    core: Core,
    handler: H,
    framing: Framing,
    limits: Limits,
    /// The status ≥ 400 body was classified.
    error_body_done: bool,
    /// First body bytes held while the framing is undecided (a prefix of an SSE field name).
    sniffed: Vec<u8>,
}

impl<H: Handler> Engine<H> {
    pub(crate) fn boxed(core: Core, handler: H, limits: &Limits) -> Box<dyn ApiDecoder> {
        Box::new(Engine {
            core,
            handler,
            framing: Framing::Skip,
            limits: *limits,
            error_body_done: false,
            sniffed: Vec::new(),
        })
    }

    /// Picks the framing of a body whose content type did not say, from its first bytes. Returns
    /// the bytes to decode now: `data`, or the held prefix plus `data` once a short prefix (`da`)
    /// was held back, so the choice does not depend on where the capture cut the body.
    fn sniff<'d>(&mut self, data: &'d [u8]) -> std::borrow::Cow<'d, [u8]> {
        const SSE_FIELDS: [&[u8]; 5] = [b"data", b"event", b"id", b":", b"retry"];
        let held = !self.sniffed.is_empty();
        if held {
            self.sniffed.extend_from_slice(data);
        }
        let all: &[u8] = if held { &self.sniffed } else { data };
        // Leading whitespace decides nothing (and blank lines mean nothing to any framing).
        let text = all.trim_ascii_start();
        let Some(&first) = text.first() else {
            self.sniffed.clear();
            return std::borrow::Cow::Borrowed(&[]);
        };
        let framing = if first == b'[' && H::ARRAY_STREAM && self.core.stream {
            Framing::Array(JsonArrayParser::new(self.limits.max_event_bytes))
        } else if first == b'{' || first == b'[' {
            if H::NATIVE == Native::Ndjson && self.core.stream {
                Framing::Ndjson(NdjsonParser::new(self.limits.max_event_bytes))
            } else {
                Framing::Json(JsonBody::new(self.limits.max_body_bytes))
            }
        } else if SSE_FIELDS.iter().any(|f| text.starts_with(f)) {
            Framing::Sse(SseParser::new(self.limits.max_event_bytes))
        } else if SSE_FIELDS.iter().any(|f| f.starts_with(text)) {
            // A prefix of a field name: wait for more (at most 4 bytes are held).
            self.sniffed = text.to_vec();
            return std::borrow::Cow::Borrowed(&[]);
        } else {
            Framing::Skip
        };
        self.framing = framing;
        if matches!(
            self.framing,
            Framing::Sse(_) | Framing::Ndjson(_) | Framing::Array(_)
        ) {
            self.core.streamed = true;
        }
        if held {
            std::borrow::Cow::Owned(std::mem::take(&mut self.sniffed))
        } else {
            std::borrow::Cow::Borrowed(data)
        }
    }
}

impl<H: Handler> ApiDecoder for Engine<H> {
    fn summary(&self) -> RequestSummary {
        RequestSummary {
            api: self.core.api,
            operation: self.core.operation,
            model: self.core.request_model.clone(),
            stream: self.core.stream,
            user_labels: self.core.params.user_labels.clone(),
        }
    }

    fn set_user_labels(&mut self, values: Vec<String>) {
        self.core.params.user_labels = values;
    }

    fn response_head(&mut self, head: &ResponseHead<'_>) {
        self.core.status = Some(head.status);
        self.core.timings.response_start_ns = Some(head.start_ns);
        self.core
            .fingerprint(fingerprint::from_headers(head.headers));
        let ct = head
            .headers
            .get_str("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        self.framing = if head.status >= 400 {
            Framing::Json(JsonBody::new(self.limits.max_body_bytes))
        } else if head.status == 204 || head.status == 304 {
            Framing::Skip
        } else if ct.contains("event-stream") {
            Framing::Sse(SseParser::new(self.limits.max_event_bytes))
        } else if ct.contains("ndjson") || ct.contains("jsonl") {
            Framing::Ndjson(NdjsonParser::new(self.limits.max_event_bytes))
        } else if ct.contains("json") && H::ARRAY_STREAM && self.core.stream {
            Framing::Array(JsonArrayParser::new(self.limits.max_event_bytes))
        } else if ct.contains("json") {
            Framing::Json(JsonBody::new(self.limits.max_body_bytes))
        } else {
            Framing::Undecided
        };
        if matches!(
            self.framing,
            Framing::Sse(_) | Framing::Ndjson(_) | Framing::Array(_)
        ) {
            self.core.streamed = true;
        }
        self.handler.on_head(&mut self.core, head);
    }

    fn response_body(
        &mut self,
        data: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
    ) -> Option<u64> {
        let sniffed;
        let data = if matches!(self.framing, Framing::Undecided) {
            sniffed = self.sniff(data);
            &*sniffed
        } else {
            data
        };
        let Engine {
            core,
            handler,
            framing,
            error_body_done,
            ..
        } = self;
        match framing {
            Framing::Sse(p) => p.feed(data, ts_ns, errors, |ev, errors| {
                handler.on_sse(core, ev, errors)
            }),
            Framing::Ndjson(p) => p.feed(data, ts_ns, errors, |line, ts, errors| {
                handler.on_line(core, line, ts, errors)
            }),
            Framing::Array(p) => {
                p.feed(data, ts_ns, errors, |el, ts, errors| {
                    handler.on_line(core, el, ts, errors)
                });
                if p.is_closed() {
                    core.terminal = true;
                }
            }
            Framing::Json(body) => {
                if body.feed(data) {
                    let status = core.status.unwrap_or(200);
                    if status >= 400 {
                        *error_body_done = true;
                        handler.on_error_body(core, status, body.value());
                    } else if let Some(v) = body.value() {
                        handler.on_json(core, v, ts_ns, errors);
                    } else {
                        core.body_truncated = true;
                    }
                }
            }
            Framing::Undecided | Framing::Skip => {}
        }
        core.new_first.take()
    }

    fn buffered_bytes(&self) -> usize {
        let framing = match &self.framing {
            Framing::Sse(p) => p.buffered_bytes(),
            Framing::Ndjson(p) => p.buffered_bytes(),
            Framing::Array(p) => p.buffered_bytes(),
            Framing::Json(b) => b.buf.len(),
            Framing::Undecided | Framing::Skip => 0,
        };
        framing + self.sniffed.len()
    }

    fn finish(
        mut self: Box<Self>,
        end: BodyEnd,
        end_ns: u64,
        response_wire_bytes: u64,
    ) -> Exchange {
        // Decode problems found here have no caller to go to: the record itself shows them (no
        // tokens, an error kind).
        let mut dropped = Vec::new();
        let Engine {
            core,
            handler,
            framing,
            error_body_done,
            ..
        } = &mut *self;
        match end {
            BodyEnd::NoResponse(by) => core.cut(by),
            BodyEnd::Complete | BodyEnd::Cut(_) => {
                if let (Framing::Ndjson(p), BodyEnd::Complete) = (&mut *framing, end) {
                    p.finish(end_ns, &mut dropped, |line, ts, errors| {
                        handler.on_line(core, line, ts, errors)
                    });
                }
                if let Framing::Json(body) = framing
                    && body.truncated
                {
                    core.body_truncated = true;
                }
                let status = core.status.unwrap_or(0);
                if status >= 400 && !*error_body_done {
                    handler.on_error_body(core, status, None);
                }
                handler.finish(core);
                if !core.terminal && status < 400 {
                    match end {
                        BodyEnd::Cut(by) => core.cut(by),
                        // A stream that ended cleanly but never said it was done.
                        _ if core.streamed && (200..300).contains(&status) => {
                            core.fail(ErrorKind::Truncated)
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut core = self.core;
        if core.streamed
            && !core.usage_final
            && core.counts_output()
            && core.tokens.completion.source == TokenSource::Absent
        {
            core.tokens.completion = TokenCount::counted(core.timings.content_events);
        }
        core.timings.response_end_ns = Some(end_ns);
        Exchange {
            api: core.api,
            operation: core.operation,
            method: core.method,
            path: core.path,
            request_model: core.request_model,
            response_model: core.response_model,
            stream: core.stream,
            status: core.status,
            timings: core.timings,
            tokens: core.tokens,
            cache_write_tokens: core.cache_write_tokens,
            finish_reason: core.finish_reason,
            error: core.error,
            incomplete: core.incomplete,
            tool_calls: core.tool_calls,
            tool_ids: core.tool_ids,
            mcp: core.mcp,
            load_duration_ns: core.load_duration_ns,
            request_bytes: core.request_bytes,
            response_bytes: response_wire_bytes,
            body_truncated: core.body_truncated,
            params: core.params,
            server: core.server,
        }
    }
}
