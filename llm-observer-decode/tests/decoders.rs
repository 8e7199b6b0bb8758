//! API decoders driven directly (no HTTP layer): a `Request`, a `ResponseHead`, de-chunked body
//! pieces with capture times, and the end of the body. Every test compares whole `Exchange`s.
//!
//! Bodies are hand-written after the documented formats (see the module docs in `src/llm/`).

use llm_observer_decode::llm::fingerprint::{Evidence, ServerKind, Strength};
use llm_observer_decode::llm::{self, BodyEnd, Headers, Request, ResponseHead};
use llm_observer_decode::{
    Api, DecodeError, EndedBy, ErrorKind, Exchange, Incomplete, McpInfo, Operation, Timings,
    TokenCount, Tokens, ToolIds, ToolUse,
};

const REQ_START: u64 = 1_000;
const REQ_END: u64 = 2_000;
const RESP_START: u64 = 3_000;
const REQ_WIRE: u64 = 500;
const RESP_WIRE: u64 = 999;

/// Capture time of the i-th body piece.
fn ts(i: usize) -> u64 {
    10_000 + 1_000 * i as u64
}

fn headers(list: &[(&str, &str)]) -> Headers {
    Headers(
        list.iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect(),
    )
}

/// One request/response, described.
struct Case<'a> {
    method: &'a str,
    path: &'a str,
    req_headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
    status: Option<u16>,
    resp_headers: Vec<(&'a str, &'a str)>,
    /// Body pieces; piece i is captured at `ts(i)`.
    pieces: Vec<&'a str>,
    end: BodyEnd,
}

impl<'a> Case<'a> {
    fn new(path: &'a str, body: &'a str) -> Self {
        Case {
            method: "POST",
            path,
            req_headers: vec![("content-type", "application/json")],
            body,
            status: Some(200),
            resp_headers: vec![],
            pieces: vec![],
            end: BodyEnd::Complete,
        }
    }
    fn ct(mut self, ct: &'a str) -> Self {
        self.resp_headers.push(("content-type", ct));
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.status = Some(s);
        self
    }
    fn pieces(mut self, p: &[&'a str]) -> Self {
        self.pieces = p.to_vec();
        self
    }
    fn end(mut self, e: BodyEnd) -> Self {
        self.end = e;
        self
    }
    fn end_ns(&self) -> u64 {
        ts(self.pieces.len())
    }
}

struct Outcome {
    exchange: Exchange,
    errors: Vec<DecodeError>,
    /// Values returned by `response_body`, one per piece.
    markers: Vec<Option<u64>>,
}

fn drive(case: &Case<'_>) -> Outcome {
    let h = headers(&case.req_headers);
    let req = Request {
        method: case.method,
        path: case.path,
        headers: &h,
        body: case.body.as_bytes(),
        body_truncated: false,
        start_ns: REQ_START,
        end_ns: REQ_END,
        wire_bytes: REQ_WIRE,
    };
    let mut d = llm::recognize(&req).expect("recognised");
    let mut errors = Vec::new();
    let mut markers = Vec::new();
    let rh = headers(&case.resp_headers);
    if let Some(status) = case.status {
        d.response_head(&ResponseHead {
            status,
            headers: &rh,
            start_ns: RESP_START,
        });
        for (i, p) in case.pieces.iter().enumerate() {
            markers.push(d.response_body(p.as_bytes(), ts(i), &mut errors));
        }
    }
    let exchange = d.finish(case.end, case.end_ns(), RESP_WIRE);
    Outcome {
        exchange,
        errors,
        markers,
    }
}

/// The record of a successful exchange with no response content yet; tests fill in the rest.
fn base(api: Api, op: Operation, path: &str, model: Option<&str>, stream: bool) -> Exchange {
    // OpenAI's batch parameters of a one-prompt request without `n`.
    let (prompts, choices) = match (api, op) {
        (Api::Openai, Operation::Chat) => (None, Some(1)),
        (Api::Openai, Operation::TextCompletion) => (Some(1), Some(1)),
        (Api::Openai, Operation::Embeddings) => (Some(1), None),
        _ => (None, None),
    };
    Exchange {
        params: llm_observer_decode::RequestParams {
            prompts,
            choices,
            ..Default::default()
        },
        api,
        operation: op,
        method: "POST".into(),
        path: path.into(),
        request_model: model.map(Into::into),
        response_model: None,
        stream,
        status: Some(200),
        timings: Timings {
            request_start_ns: REQ_START,
            request_end_ns: Some(REQ_END),
            response_start_ns: Some(RESP_START),
            first_token_ns: None,
            last_token_ns: None,
            response_end_ns: None,
            content_events: 0,
        },
        tokens: Tokens::default(),
        cache_write_tokens: Default::default(),
        finish_reason: None,
        error: None,
        incomplete: None,
        tool_calls: vec![],
        tool_ids: Default::default(),
        mcp: None,
        load_duration_ns: None,
        request_bytes: REQ_WIRE,
        response_bytes: RESP_WIRE,
        body_truncated: false,
        // The API's native shape is the only fingerprint these bodies carry (tests of the others
        // set their own).
        server: match api {
            Api::Ollama => Some(ServerKind::Ollama),
            Api::Tgi => Some(ServerKind::Tgi),
            Api::Llamacpp => Some(ServerKind::Llamacpp),
            Api::Openai | Api::Anthropic | Api::Gemini | Api::Mcp => None,
        }
        .map(|kind| Evidence {
            kind,
            strength: Strength::Api,
        }),
    }
}

/// `(id, name)` pairs of tool calls and the result ids of the request.
fn tool_ids(calls: &[(&str, &str)], results: &[&str]) -> ToolIds {
    ToolIds {
        calls: calls
            .iter()
            .map(|(id, name)| ToolUse {
                id: (*id).into(),
                name: (*name).into(),
            })
            .collect(),
        results: results.iter().map(|r| (*r).into()).collect(),
    }
}

fn timings(first: Option<u64>, last: Option<u64>, events: u64, end: u64) -> Timings {
    Timings {
        request_start_ns: REQ_START,
        request_end_ns: Some(REQ_END),
        response_start_ns: Some(RESP_START),
        first_token_ns: first,
        last_token_ns: last,
        response_end_ns: Some(end),
        content_events: events,
    }
}

fn rep(v: u64) -> TokenCount {
    TokenCount::reported(v)
}

const ABSENT: TokenCount = TokenCount::ABSENT;

fn tokens(prompt: TokenCount, completion: TokenCount) -> Tokens {
    Tokens {
        prompt,
        completion,
        ..Tokens::default()
    }
}

/// Exactly one marker, at piece `i`.
fn marker_at(markers: &[Option<u64>], i: usize) {
    let want: Vec<Option<u64>> = (0..markers.len())
        .map(|j| (j == i).then(|| ts(i)))
        .collect();
    assert_eq!(markers, want.as_slice());
}

// One file per API, kept beside this one (not picked up as separate test targets).
#[path = "decoders/anthropic.rs"]
mod anthropic;
#[path = "decoders/gemini.rs"]
mod gemini;
#[path = "decoders/mcp.rs"]
mod mcp;
#[path = "decoders/ollama.rs"]
mod ollama;
#[path = "decoders/openai.rs"]
mod openai;
#[path = "decoders/others.rs"]
mod others;
#[path = "decoders/servers.rs"]
mod servers;
