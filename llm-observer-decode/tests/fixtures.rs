//! Real captures (`tests/data/fixtures/*/`) fed end to end: request bytes on `Stream::Request`,
//! response bytes on `Stream::Response`, one `feed` per captured TCP segment stamped with its time
//! from `*.timeline.tsv`. The resulting `Exchange` is compared whole with one built from the
//! capture's `manifest.json` (what the client saw) and from the timeline (when each event's bytes
//! arrived).
//!
//! Two drivers: [`run_conn`] goes through `ConnDecoder` (the HTTP layer + the API decoders), and
//! [`run_direct`] drives the API decoder alone behind a tiny HTTP reader written here, so the
//! decoders' expectations are checked independently of the HTTP layer.
//!
//! Split invariance: the same bytes cut into more pieces (each piece keeps the capture time of its
//! segment, since a capture never merges segments) must give the identical record: every cut point
//! for small captures, 1,000 seeded random cut patterns for the large ones.

use std::ops::Range;
use std::path::PathBuf;

use llm_observer_decode::llm::fingerprint::{Evidence, ServerKind, Strength};
use llm_observer_decode::llm::{self, BodyEnd, Headers, Request, ResponseHead};
use llm_observer_decode::{
    Api, ConnDecoder, EndedBy, ErrorKind, Exchange, Limits, Operation, Output, Stream, Timings,
    TokenCount, Tokens,
};
use serde_json::Value;

/// Capture times start here (t = 0 in the timeline), so no timestamp is 0.
const BASE_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
struct Seg {
    stream: Stream,
    /// Byte range within its direction's file.
    range: Range<usize>,
    ts_ns: u64,
}

struct Fixture {
    name: String,
    request: Vec<u8>,
    response: Vec<u8>,
    segs: Vec<Seg>,
    manifest: Value,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures")
}

/// "0.004399" seconds → ns, exactly (the timeline has µs resolution).
fn parse_ts(s: &str) -> u64 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut frac = frac.to_owned();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let int: u64 = int.parse().expect("seconds");
    let frac: u64 = frac.parse().expect("fraction");
    BASE_NS + int * 1_000_000_000 + frac
}

fn load(set: &str, name: &str) -> Fixture {
    let base = dir().join(set);
    let read = |ext: &str| std::fs::read(base.join(format!("{name}.{ext}"))).expect(ext);
    let request = read("request.http");
    let response = read("response.http");
    let timeline = String::from_utf8(read("timeline.tsv")).expect("utf-8");
    let mut pos = [0usize; 2];
    let mut segs = Vec::new();
    for line in timeline.lines().skip(1) {
        let mut cols = line.split('\t');
        let ts_ns = parse_ts(cols.next().expect("t_s"));
        let dir = cols.next().expect("dir");
        let len: usize = cols.next().expect("bytes").parse().expect("len");
        let (stream, i) = match dir {
            "c2s" => (Stream::Request, 0),
            "s2c" => (Stream::Response, 1),
            other => panic!("direction {other}"),
        };
        segs.push(Seg {
            stream,
            range: pos[i]..pos[i] + len,
            ts_ns,
        });
        pos[i] += len;
    }
    assert_eq!(
        pos,
        [request.len(), response.len()],
        "{name}: timeline sizes"
    );
    let manifests: Value =
        serde_json::from_slice(&std::fs::read(base.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    let manifest = manifests
        .as_array()
        .and_then(|a| a.iter().find(|c| c["case"] == name))
        .cloned()
        .expect("case in manifest");
    Fixture {
        name: format!("{set}/{name}"),
        request,
        response,
        segs,
        manifest,
    }
}

impl Fixture {
    fn bytes(&self, s: &Seg) -> &[u8] {
        match s.stream {
            Stream::Request => &self.request[s.range.clone()],
            Stream::Response => &self.response[s.range.clone()],
        }
    }

    /// Capture time of the response byte at `offset`.
    fn response_ts_at(&self, offset: usize) -> u64 {
        self.segs
            .iter()
            .find(|s| s.stream == Stream::Response && s.range.contains(&offset))
            .map(|s| s.ts_ns)
            .expect("offset in a segment")
    }

    /// Capture time of the bytes that complete the SSE event holding `marker` (its blank line).
    fn event_end_ts(&self, marker: &str, last: bool) -> u64 {
        let hay = &self.response;
        let m = marker.as_bytes();
        let mut windows = hay.windows(m.len());
        let at = if last {
            windows.rposition(|w| w == m)
        } else {
            windows.position(|w| w == m)
        }
        .unwrap_or_else(|| panic!("{}: marker {marker}", self.name));
        let end = hay[at..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("event end");
        self.response_ts_at(at + end + 1)
    }

    fn first_ts(&self, stream: Stream) -> u64 {
        self.segs
            .iter()
            .find(|s| s.stream == stream)
            .expect("seg")
            .ts_ns
    }

    fn last_ts(&self, stream: Stream) -> u64 {
        self.segs
            .iter()
            .rev()
            .find(|s| s.stream == stream)
            .expect("seg")
            .ts_ns
    }
}

/// Feeds `segs` to a `ConnDecoder`; returns every finished exchange.
fn run_conn(fx: &Fixture, segs: &[Seg]) -> Vec<Exchange> {
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    for s in segs {
        d.feed(s.stream, fx.bytes(s), s.ts_ns, &mut out);
    }
    let end = segs.last().map_or(BASE_NS, |s| s.ts_ns) + 1_000_000;
    d.end(EndedBy::Client, end, &mut out);
    out.into_iter()
        .filter_map(|o| match o {
            Output::Done { exchange, .. } => Some(*exchange),
            _ => None,
        })
        .collect()
}

/// End of the head (index after `\r\n\r\n`), the head lines, and the lower-cased headers.
fn head(bytes: &[u8]) -> (usize, String, Headers) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end")
        + 4;
    let text = std::str::from_utf8(&bytes[..end]).expect("ascii head");
    let mut lines = text.split("\r\n");
    let first = lines.next().expect("start line").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    (end, first, Headers(headers))
}

/// Wire ranges of the response body's data (de-chunked when chunked).
fn body_ranges(resp: &[u8], body_start: usize, headers: &Headers) -> Vec<Range<usize>> {
    let chunked = headers
        .get_str("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut out = Vec::new();
    if !chunked {
        out.push(body_start..resp.len());
        return out;
    }
    let mut i = body_start;
    loop {
        let line_end = i + resp[i..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&resp[i..line_end]).expect("hex").trim(),
            16,
        )
        .expect("chunk size");
        if size == 0 {
            return out;
        }
        let data = line_end + 2;
        out.push(data..data + size);
        i = data + size + 2;
    }
}

/// Drives the API decoder directly: the request as one `Request`, the response body de-chunked
/// here, each decoded piece stamped with the time of the segment that carried it.
fn run_direct(fx: &Fixture, segs: &[Seg]) -> Exchange {
    let (req_head_end, req_line, req_headers) = head(&fx.request);
    let mut parts = req_line.split(' ');
    let method = parts.next().expect("method").to_owned();
    let path = parts.next().expect("path").to_owned();
    let req_segs: Vec<&Seg> = segs
        .iter()
        .filter(|s| s.stream == Stream::Request)
        .collect();
    let req = Request {
        method: &method,
        path: &path,
        headers: &req_headers,
        body: &fx.request[req_head_end..],
        body_truncated: false,
        start_ns: req_segs[0].ts_ns,
        end_ns: req_segs[req_segs.len() - 1].ts_ns,
        wire_bytes: fx.request.len() as u64,
    };
    let mut d = llm::recognize(&req).expect("recognised");
    let (resp_head_end, status_line, resp_headers) = head(&fx.response);
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let resp_segs: Vec<&Seg> = segs
        .iter()
        .filter(|s| s.stream == Stream::Response)
        .collect();
    d.response_head(&ResponseHead {
        status,
        headers: &resp_headers,
        start_ns: resp_segs[0].ts_ns,
    });
    let data = body_ranges(&fx.response, resp_head_end, &resp_headers);
    let mut errors = Vec::new();
    for s in &resp_segs {
        for r in &data {
            let a = r.start.max(s.range.start);
            let b = r.end.min(s.range.end);
            if a < b {
                d.response_body(&fx.response[a..b], s.ts_ns, &mut errors);
            }
        }
    }
    assert!(errors.is_empty(), "{}: {errors:?}", fx.name);
    let end = resp_segs[resp_segs.len() - 1].ts_ns;
    d.finish(BodyEnd::Complete, end, fx.response.len() as u64)
}

/// What a case is, beyond what the manifest says.
struct Spec {
    set: &'static str,
    name: &'static str,
    api: Api,
    op: Operation,
    path: &'static str,
    stream: bool,
    /// Markers of the first and last content-bearing SSE events (non-stream: body end).
    content: Option<(&'static str, &'static str)>,
    content_events: u64,
    /// Completion counted from events (no usage in the stream).
    counted: bool,
    /// Finish reason where the manifest does not record one (checked against it where it does).
    finish: Option<&'static str>,
    error: Option<ErrorKind>,
}

fn count(v: &Value) -> TokenCount {
    v.as_u64().map_or(TokenCount::ABSENT, TokenCount::reported)
}

/// OpenAI chat/completions and Anthropic messages record the request's `max_tokens`
/// (`max_completion_tokens`) and `temperature`; the captures carry no `traceparent`.
fn expected_params(fx: &Fixture, spec: &Spec) -> llm_observer_decode::RequestParams {
    let records =
        matches!(spec.api, Api::Openai | Api::Anthropic) && spec.op != Operation::Responses;
    let body = fx
        .request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|i| serde_json::from_slice::<Value>(&fx.request[i + 4..]).ok());
    match body {
        Some(b) if records => {
            // OpenAI's batch shapes: a string is one prompt, an array one per element (an
            // array of token ids is one); `n` choices for each.
            let prompts = |v: &Value| match v {
                Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_number) => 1,
                Value::Array(a) => a.len() as u64,
                _ => 1,
            };
            let n = b["n"].as_u64().unwrap_or(1);
            let (prompts, choices) = match (spec.api, spec.op) {
                (Api::Openai, Operation::Chat) => (None, Some(n)),
                (Api::Openai, Operation::TextCompletion) => {
                    let p = prompts(&b["prompt"]);
                    (Some(p), Some(p * n))
                }
                (Api::Openai, Operation::Embeddings) => (Some(prompts(&b["input"])), None),
                _ => (None, None),
            };
            llm_observer_decode::RequestParams {
                max_tokens: b["max_tokens"]
                    .as_u64()
                    .or(b["max_completion_tokens"].as_u64()),
                temperature: b["temperature"].as_f64(),
                trace_parent: None,
                prompts,
                choices,
                user_labels: Vec::new(),
            }
        }
        _ => llm_observer_decode::RequestParams::default(),
    }
}

fn expected(fx: &Fixture, spec: &Spec) -> Exchange {
    let m = &fx.manifest;
    let u = &m["usage"];
    let tokens = if spec.api == Api::Anthropic {
        let u = if u["message_start"].is_object() {
            // stream: input/cache from message_start, output from message_delta
            let mut merged = u["message_start"].clone();
            merged["output_tokens"] = u["message_delta"]["output_tokens"].clone();
            merged
        } else {
            u.clone()
        };
        let sum = [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .iter()
        .map(|k| u[*k].as_u64().unwrap_or(0))
        .sum();
        Tokens {
            prompt: TokenCount::reported(sum),
            completion: count(&u["output_tokens"]),
            cached: count(&u["cache_read_input_tokens"]),
            reasoning: TokenCount::ABSENT,
        }
    } else if spec.counted {
        Tokens {
            completion: TokenCount::counted(spec.content_events),
            ..Tokens::default()
        }
    } else {
        let details = if u["prompt_tokens_details"].is_object() {
            &u["prompt_tokens_details"]
        } else {
            &u["input_tokens_details"]
        };
        Tokens {
            prompt: count(if u["prompt_tokens"].is_null() {
                &u["input_tokens"]
            } else {
                &u["prompt_tokens"]
            }),
            completion: count(if u["completion_tokens"].is_null() {
                &u["output_tokens"]
            } else {
                &u["completion_tokens"]
            }),
            cached: count(&details["cached_tokens"]),
            reasoning: TokenCount::ABSENT,
        }
    };
    if let Some(n) = m["content_chunks"].as_u64() {
        assert_eq!(
            n, spec.content_events,
            "{}: manifest content_chunks",
            fx.name
        );
    }
    let end = fx.last_ts(Stream::Response);
    let (first, last) = match spec.content {
        Some((a, b)) if spec.stream => (
            Some(fx.event_end_ts(a, false)),
            Some(fx.event_end_ts(b, true)),
        ),
        Some(_) => (Some(end), Some(end)),
        None => (None, None),
    };
    let finish = m["finish_reason"]
        .as_str()
        .or(m["stop_reason"].as_str())
        .or(spec.finish)
        .map(str::to_owned);
    let model = m["model"].as_str().map(str::to_owned);
    // Every llama-server answer says `Server: llama.cpp`; llama-cpp-python's uvicorn adds
    // `openai-processing-ms` to each answer of its OpenAI routes, but not to its error answers.
    let server = match (spec.set, spec.name) {
        ("llama-server", _) => Some(ServerKind::Llamacpp),
        ("llama-cpp-python", "error_400_too_long" | "error_500_invalid_param") => None,
        ("llama-cpp-python", _) => Some(ServerKind::LlamacppPython),
        (set, _) => panic!("no server fingerprint expected for set {set}"),
    }
    .map(|kind| Evidence {
        kind,
        strength: Strength::Header,
    });
    Exchange {
        params: expected_params(fx, spec),
        api: spec.api,
        operation: spec.op,
        method: "POST".into(),
        path: spec.path.into(),
        request_model: Some("tiny".into()),
        response_model: model,
        stream: spec.stream,
        status: m["status"].as_u64().map(|s| s as u16),
        timings: Timings {
            request_start_ns: fx.first_ts(Stream::Request),
            request_end_ns: Some(fx.last_ts(Stream::Request)),
            response_start_ns: Some(fx.first_ts(Stream::Response)),
            first_token_ns: first,
            last_token_ns: last,
            response_end_ns: Some(end),
            content_events: spec.content_events,
        },
        tokens,
        cache_write_tokens: Default::default(),
        finish_reason: finish,
        error: spec.error,
        incomplete: None,
        tool_calls: vec![],
        tool_ids: Default::default(),
        mcp: None,
        load_duration_ns: None,
        request_bytes: m["request_bytes"].as_u64().expect("request_bytes"),
        response_bytes: m["response_bytes"].as_u64().expect("response_bytes"),
        body_truncated: false,
        server,
    }
}

#[path = "fixtures/cases.rs"]
mod cases;
