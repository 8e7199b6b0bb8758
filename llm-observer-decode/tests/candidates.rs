//! Only requests that could belong to a known API have their body collected: an upload to an
//! unknown path is framed without buffering it, while the same connection keeps pairing.

use llm_observer_decode::{ConnDecoder, Limits, Output, Stream, llm};

fn headers(pairs: &[(&str, &str)]) -> llm::Headers {
    llm::Headers(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
    )
}

#[test]
fn candidates_by_method_path_and_content_type() {
    let json = headers(&[("content-type", "application/json")]);
    let form = headers(&[("content-type", "multipart/form-data; boundary=x")]);
    let none = headers(&[]);
    let mcp = headers(&[("content-type", "text/plain"), ("mcp-session-id", "abc")]);
    // What the MCP SDKs send on `initialize`, before any session header exists.
    let mcp_init = headers(&[
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ]);
    let cases = [
        ("POST", "/v1/chat/completions", &form, true),
        ("POST", "/openai/v1/chat/completions", &none, true),
        ("POST", "/api/generate", &form, true),
        ("POST", "/mcp", &json, true),
        ("POST", "/mcp/", &none, true),
        ("POST", "/messages/?session_id=1", &json, true),
        ("POST", "/anything", &mcp_init, true),
        ("POST", "/anything", &mcp, true),
        // A JSON POST to any other path is not buffered (an upload, a REST API).
        ("POST", "/anything", &none, false),
        ("post", "/x", &json, false),
        ("POST", "/upload", &json, false),
        ("POST", "/upload", &form, false),
        ("PUT", "/v1/chat/completions", &json, false),
        ("GET", "/v1/models", &json, false),
    ];
    for (method, path, h, want) in cases {
        assert_eq!(
            llm::is_candidate(method, path, h),
            want,
            "{method} {path} {h:?}"
        );
    }
}

#[test]
fn an_upload_is_framed_without_buffering_and_pairing_goes_on() {
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    let body_len = 2 * 1024 * 1024;
    let head = format!(
        "POST /upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {body_len}\r\n\r\n"
    );
    d.feed(Stream::Request, head.as_bytes(), 1, &mut out);
    let piece = vec![b'u'; 64 * 1024];
    for i in 0..body_len / piece.len() {
        d.feed(Stream::Request, &piece, 2 + i as u64, &mut out);
        assert!(
            d.buffered_bytes() < 1024,
            "upload body buffered: {} bytes",
            d.buffered_bytes()
        );
    }
    d.feed(
        Stream::Response,
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        100,
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    // The next request on the connection is an API call, recognised and paired.
    let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    d.feed(Stream::Request, req.as_bytes(), 200, &mut out);
    d.feed(Stream::Request, body, 201, &mut out);
    let json = br#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"y"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    d.feed(Stream::Response, resp.as_bytes(), 300, &mut out);
    d.feed(Stream::Response, json, 301, &mut out);
    let seqs: Vec<(&'static str, u64)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Started { seq, .. } => Some(("started", *seq)),
            Output::Done { seq, .. } => Some(("done", *seq)),
            _ => None,
        })
        .collect();
    // seq 0 was the upload: numbered, framed, never offered to the decoders.
    assert_eq!(seqs, vec![("started", 1), ("done", 1)]);
    let Some(Output::Done { exchange, .. }) = out.iter().find(|o| matches!(o, Output::Done { .. }))
    else {
        unreachable!("checked above")
    };
    assert_eq!(
        (
            exchange.status,
            exchange.tokens.prompt.value,
            exchange.tokens.completion.value
        ),
        (Some(200), Some(3), Some(1))
    );
}

#[test]
fn a_candidate_request_lost_before_recognition_is_incomplete() {
    use llm_observer_decode::Incomplete;
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo";
    d.feed(Stream::Request, head.as_bytes(), 1, &mut out);
    d.gap(Stream::Request, 96, 2, &mut out);
    let incomplete: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Incomplete { .. }))
        .collect();
    assert_eq!(
        incomplete,
        [&Output::Incomplete {
            seq: 0,
            why: Incomplete::CaptureGap
        }]
    );
    // An upload that is no candidate costs nothing and is not the capture's loss to report.
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    let head =
        "POST /upload HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    d.feed(Stream::Request, head.as_bytes(), 1, &mut out);
    d.gap(Stream::Request, 99, 2, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Incomplete { .. })));
}

/// A gap between requests may have swallowed a whole request, head included: the response that
/// then arrives unmatched, or the end of a connection that answered nothing, is one incomplete
/// exchange (the capture's loss), not an unmatched-response decode error.
#[test]
fn a_request_lost_whole_to_a_gap_is_one_incomplete_exchange() {
    use llm_observer_decode::{DecodeError, EndedBy, Incomplete};
    let incompletes = |out: &[Output]| {
        out.iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Incomplete {
                        why: Incomplete::CaptureGap,
                        ..
                    }
                )
            })
            .count()
    };
    let unmatched = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Error(DecodeError::UnmatchedResponse)))
            .count()
    };
    let resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    // The whole request lost, its response seen.
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.gap(Stream::Request, 4096, 1, &mut out);
    d.feed(Stream::Response, resp.as_bytes(), 2, &mut out);
    d.end(EndedBy::Client, 3, &mut out);
    assert_eq!((incompletes(&out), unmatched(&out)), (1, 0));
    // Request and response both lost: the connection's end accounts for one.
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.gap(Stream::Request, 4096, 1, &mut out);
    d.gap(Stream::Response, 512, 2, &mut out);
    d.end(EndedBy::Client, 3, &mut out);
    assert_eq!((incompletes(&out), unmatched(&out)), (1, 0));
    // The lost request's body after the gap does not parse as a head: the place it holds is
    // that lost request, accounted once when its response arrives.
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.gap(Stream::Request, 8192, 1, &mut out);
    let body = vec![b'w'; Limits::default().max_head_bytes + 1];
    d.feed(Stream::Request, &body, 2, &mut out);
    d.feed(Stream::Response, resp.as_bytes(), 3, &mut out);
    d.gap(Stream::Request, 4096, 4, &mut out);
    d.end(EndedBy::Client, 5, &mut out);
    assert_eq!((incompletes(&out), unmatched(&out)), (1, 0));
    // Without a gap an unmatched response stays a decode error.
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Response, resp.as_bytes(), 2, &mut out);
    d.end(EndedBy::Client, 3, &mut out);
    assert_eq!((incompletes(&out), unmatched(&out)), (0, 1));
    // A gap inside a non-candidate upload is that upload's, not an LLM exchange lost.
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    let head =
        "POST /upload HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    d.feed(Stream::Request, head.as_bytes(), 1, &mut out);
    d.gap(Stream::Request, 99, 2, &mut out);
    d.end(EndedBy::Client, 3, &mut out);
    assert_eq!(incompletes(&out), 0);
}
