//! API recognition and decoders: a request (path and content type picked by the input, body from
//! the input) to `llm::recognize_with_limits`, then a response head and an arbitrary body at
//! arbitrary cuts, then an arbitrary end. Never panics; the record is bounded and consistent, the
//! TTFT marker is returned at most once, and the record does not depend on the cuts.
//!
//! Input: 8 bytes of split seed; 1 selector byte (`% PATHS.len()` picks the path, `/ PATHS.len() %
//! 4` the response content type, `/ (4 * PATHS.len()) % 4` the status); 1 byte picking the end
//! (`% 4`); 2 bytes request-body length (little-endian); the request body; the response body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_observer_decode::llm::{self, BodyEnd, Headers, Request, ResponseHead};
use llm_observer_decode::{EndedBy, Exchange, Incomplete, Limits};

#[path = "common.rs"]
mod common;

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/pull",
    "/generate_stream",
    "/generate",
    "/completion",
    "/mcp",
];
const CONTENT_TYPES: &[&str] = &[
    "text/event-stream",
    "application/x-ndjson",
    "application/json",
    "",
];
const STATUSES: &[u16] = &[200, 202, 429, 500];
const ENDS: &[BodyEnd] = &[
    BodyEnd::Complete,
    BodyEnd::Cut(EndedBy::Client),
    BodyEnd::Cut(EndedBy::Capture(Incomplete::CaptureGap)),
    BodyEnd::NoResponse(EndedBy::Server),
];

const LIMITS: Limits = Limits {
    max_head_bytes: 1024,
    max_body_bytes: 4096,
    max_event_bytes: 1024,
    max_pending_requests: 4,
    labels: &llm_observer_decode::labels::NO_LABELS,
};

fn run(sel: u8, end: u8, req_body: &[u8], pieces: &[&[u8]]) -> Option<Exchange> {
    let n = PATHS.len();
    let path = PATHS[usize::from(sel) % n];
    let ct = CONTENT_TYPES[usize::from(sel) / n % 4];
    let status = STATUSES[usize::from(sel) / (n * 4) % 4];
    let end = ENDS[usize::from(end) % 4];
    let req_headers = Headers(vec![("content-type".into(), b"application/json".to_vec())]);
    let req = Request {
        method: "POST",
        path,
        headers: &req_headers,
        body: req_body,
        body_truncated: false,
        start_ns: 1,
        end_ns: 2,
        wire_bytes: req_body.len() as u64,
    };
    let mut d = llm::recognize_with_limits(&req, &LIMITS)?;
    let _ = d.summary();
    let mut markers = 0;
    if !matches!(end, BodyEnd::NoResponse(_)) {
        let h = Headers(vec![("content-type".into(), ct.as_bytes().to_vec())]);
        d.response_head(&ResponseHead {
            status,
            headers: &h,
            start_ns: 3,
        });
        let mut errors = Vec::new();
        for p in pieces {
            // One capture time for every piece, so cuts cannot change the record.
            if d.response_body(p, 10, &mut errors).is_some() {
                markers += 1;
            }
        }
    }
    let e = d.finish(end, 20, 100);
    assert!(markers <= 1);
    let t = &e.timings;
    assert_eq!(t.first_token_ns.is_some(), t.content_events > 0);
    assert_eq!(t.first_token_ns.is_some(), t.last_token_ns.is_some());
    assert!(t.first_token_ns <= t.last_token_ns);
    assert!(e.tool_calls.len() <= 16 && e.tool_calls.iter().all(|n| n.len() <= 64));
    assert!(e.request_model.as_ref().is_none_or(|m| m.len() <= 256));
    assert!(e.response_model.as_ref().is_none_or(|m| m.len() <= 256));
    assert!(e.finish_reason.as_ref().is_none_or(|m| m.len() <= 128));
    for c in [
        e.tokens.prompt,
        e.tokens.completion,
        e.tokens.cached,
        e.tokens.reasoning,
    ] {
        assert_eq!(
            c.value.is_none(),
            c.source == llm_observer_decode::TokenSource::Absent
        );
    }
    Some(e)
}

fuzz_target!(|input: &[u8]| {
    let Some((head, rest)) = input.split_at_checked(12) else {
        return;
    };
    let req_len = usize::from(u16::from_le_bytes([head[10], head[11]])).min(rest.len());
    let (req_body, body) = rest.split_at(req_len);
    let whole = run(head[8], head[9], req_body, &[body]);
    let pieces = common::Splits::new(&head[..8]).cut(body);
    assert_eq!(run(head[8], head[9], req_body, &pieces), whole);
});
