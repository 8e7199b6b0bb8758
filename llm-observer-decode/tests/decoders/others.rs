//! TGI, llama.cpp native, recognition, ends of responses, bad input, split invariance.

use super::*;

#[test]
fn tgi_generate_stream_without_space_and_pings() {
    let case = Case::new(
        "/generate_stream",
        r#"{"inputs":"What is Deep Learning?","parameters":{"max_new_tokens":3}}"#,
    )
    .ct("text/event-stream")
    .pieces(&[
        ":\n\n",
        "data:{\"index\":1,\"token\":{\"id\":1,\"text\":\"Deep\",\"logprob\":-0.3,\"special\":false},\"generated_text\":null,\"details\":null}\n\n",
        "data:{\"index\":2,\"token\":{\"id\":2,\"text\":\" learning\",\"logprob\":-0.1,\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"index\":3,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.1,\"special\":true},\"generated_text\":\"Deep learning\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":3,\"seed\":null,\"input_length\":7}}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        timings: timings(Some(ts(1)), Some(ts(2)), 2, case.end_ns()),
        tokens: tokens(rep(7), rep(3)),
        finish_reason: Some("eos_token".into()),
        ..base(
            Api::Tgi,
            Operation::TextCompletion,
            "/generate_stream",
            None,
            true,
        )
    };
    assert_eq!(out.exchange, want);
    marker_at(&out.markers, 1);
}

#[test]
fn tgi_generate_json_counts_from_headers() {
    let mut case = Case::new("/generate", r#"{"inputs":"Hi","parameters":{}}"#)
        .ct("application/json")
        .pieces(&[r#"{"generated_text":" there"}"#]);
    case.resp_headers.push(("x-prompt-tokens", "2"));
    case.resp_headers.push(("x-generated-tokens", "20"));
    let out = drive(&case);
    let want = Exchange {
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(rep(2), rep(20)),
        ..base(
            Api::Tgi,
            Operation::TextCompletion,
            "/generate",
            None,
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn tgi_overloaded_429() {
    let case = Case::new("/generate", r#"{"inputs":"Hi"}"#)
        .status(429)
        .ct("application/json")
        .pieces(&[r#"{"error":"Model is overloaded","error_type":"overloaded"}"#]);
    assert_eq!(drive(&case).exchange.error, Some(ErrorKind::Overloaded));
}

#[test]
fn llamacpp_completion_stream() {
    let case = Case::new(
        "/completion",
        r#"{"prompt":"Building a website","n_predict":3,"stream":true}"#,
    )
    .ct("text/event-stream")
    .pieces(&[
        "data: {\"index\":0,\"content\":\" can\",\"tokens\":[],\"stop\":false,\"id_slot\":0}\n\n",
        "data: {\"index\":0,\"content\":\" be\",\"tokens\":[],\"stop\":false,\"id_slot\":0}\n\n",
        "data: {\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":0,\"stop\":true,\"model\":\"gpt-3.5-turbo\",\"tokens_predicted\":3,\"tokens_evaluated\":5,\"stop_type\":\"limit\",\"stopping_word\":\"\",\"tokens_cached\":7,\"timings\":{\"cache_n\":2,\"prompt_n\":3,\"prompt_ms\":1.0,\"predicted_n\":3,\"predicted_ms\":2.0}}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gpt-3.5-turbo".into()),
        timings: timings(Some(ts(0)), Some(ts(1)), 2, case.end_ns()),
        tokens: Tokens {
            prompt: rep(5),
            completion: rep(3),
            cached: rep(2),
            reasoning: ABSENT,
        },
        finish_reason: Some("limit".into()),
        ..base(
            Api::Llamacpp,
            Operation::TextCompletion,
            "/completion",
            None,
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn llamacpp_completion_json() {
    let case = Case::new("/completion", r#"{"prompt":"Hi","n_predict":2}"#)
        .ct("application/json; charset=utf-8")
        .pieces(&[r#"{"index":0,"content":" there","tokens":[],"id_slot":0,"stop":true,"model":"m.gguf","tokens_predicted":2,"tokens_evaluated":2,"stop_type":"eos","timings":{"cache_n":0,"prompt_n":2,"predicted_n":2}}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("m.gguf".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: Tokens {
            prompt: rep(2),
            completion: rep(2),
            cached: rep(0),
            reasoning: ABSENT,
        },
        finish_reason: Some("eos".into()),
        ..base(
            Api::Llamacpp,
            Operation::TextCompletion,
            "/completion",
            None,
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

fn recognized(method: &str, path: &str, body: &str) -> Option<(Api, Operation, bool)> {
    let h = headers(&[]);
    let req = Request {
        method,
        path,
        headers: &h,
        body: body.as_bytes(),
        body_truncated: false,
        start_ns: 0,
        end_ns: 0,
        wire_bytes: 0,
    };
    llm::recognize(&req).map(|d| {
        let s = d.summary();
        (s.api, s.operation, s.stream)
    })
}

#[test]
fn recognition_by_path_and_shape() {
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(
        recognized("POST", "/api/v1/chat/completions", chat),
        Some((Api::Openai, Operation::Chat, false))
    );
    assert_eq!(
        recognized("POST", "/openai/deployments/gpt/chat/completions", chat),
        Some((Api::Openai, Operation::Chat, false))
    );
    // weak suffix without the shape
    assert_eq!(recognized("POST", "/chat/completions", r#"{"a":1}"#), None);
    assert_eq!(recognized("POST", "/generate", r#"{"text":"x"}"#), None);
    assert_eq!(recognized("GET", "/v1/chat/completions", ""), None);
    assert_eq!(recognized("POST", "/v1/models", "{}"), None);
    assert_eq!(recognized("POST", "/upload", "binary"), None);
    assert_eq!(
        recognized("POST", "/v1/chat/completions/", chat),
        Some((Api::Openai, Operation::Chat, false))
    );
    assert_eq!(
        recognized(
            "POST",
            "/api/chat",
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
        ),
        Some((Api::Ollama, Operation::Chat, true))
    );
    assert_eq!(
        recognized(
            "POST",
            "/rpc",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        ),
        Some((Api::Mcp, Operation::McpOther, false))
    );
    // a JSON-RPC response posted by the client is not a request
    assert_eq!(
        recognized("POST", "/mcp", r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
        None
    );
}

#[test]
fn cut_body_is_recognised_by_a_byte_scan() {
    let h = headers(&[]);
    let req = Request {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &h,
        body: br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"xxxx"#,
        body_truncated: true,
        start_ns: 0,
        end_ns: 0,
        wire_bytes: 0,
    };
    let s = llm::recognize(&req).expect("recognised").summary();
    assert_eq!(
        (s.api, s.operation, s.model.as_deref(), s.stream),
        (Api::Openai, Operation::Chat, Some("gpt-4o"), true)
    );
}

const CHAT: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#;

#[test]
fn no_response_by_who_closed() {
    let gap = Incomplete::CaptureGap;
    for (by, kind, incomplete) in [
        (EndedBy::Client, Some(ErrorKind::ClientCancelled), None),
        (EndedBy::Server, Some(ErrorKind::ServerClosed), None),
        // The capture, not a peer, ended it: incomplete, and no error of the server.
        (EndedBy::Capture(gap), None, Some(gap)),
    ] {
        let mut case = Case::new("/v1/chat/completions", CHAT).end(BodyEnd::NoResponse(by));
        case.status = None;
        let want = Exchange {
            status: None,
            timings: Timings {
                response_start_ns: None,
                ..timings(None, None, 0, case.end_ns())
            },
            error: kind,
            incomplete,
            ..base(
                Api::Openai,
                Operation::Chat,
                "/v1/chat/completions",
                Some("m"),
                true,
            )
        };
        assert_eq!(drive(&case).exchange, want);
    }
}

#[test]
fn stream_cut_by_the_capture_is_incomplete_not_an_error() {
    // Bytes lost mid-stream (ring overflow): the server did nothing wrong.
    for why in Incomplete::ALL {
        let case = Case::new("/v1/chat/completions", CHAT)
            .ct("text/event-stream")
            .pieces(&["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"])
            .end(BodyEnd::Cut(EndedBy::Capture(why)));
        let ex = drive(&case).exchange;
        assert_eq!((ex.error, ex.incomplete), (None, Some(why)));
    }
    // A stream error seen before the cut stays the exchange's error.
    let case = Case::new("/v1/chat/completions", CHAT)
        .ct("text/event-stream")
        .pieces(&["data: {\"error\":{\"message\":\"boom\"}}\n\n"])
        .end(BodyEnd::Cut(EndedBy::Capture(Incomplete::CaptureGap)));
    let ex = drive(&case).exchange;
    assert_eq!(
        (ex.error, ex.incomplete),
        (Some(ErrorKind::StreamError), None)
    );
}

#[test]
fn empty_stream_that_ends_cleanly_is_truncated() {
    // llama-cpp-python answers a too-long streamed prompt with 200 and an empty stream.
    let case = Case::new("/v1/chat/completions", CHAT).ct("text/event-stream");
    let want = Exchange {
        timings: timings(None, None, 0, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(0)),
        error: Some(ErrorKind::Truncated),
        ..base(
            Api::Openai,
            Operation::Chat,
            "/v1/chat/completions",
            Some("m"),
            true,
        )
    };
    assert_eq!(drive(&case).exchange, want);
}

#[test]
fn stream_cut_unknown_after_finish_is_complete() {
    // finish_reason seen: the answer is whole even if [DONE] was lost.
    let case = Case::new("/v1/chat/completions", CHAT)
        .ct("text/event-stream")
        .pieces(&["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DO"])
        .end(BodyEnd::Cut(EndedBy::Capture(Incomplete::CaptureGap)));
    let out = drive(&case);
    assert_eq!(out.exchange.error, None);
    assert_eq!(out.exchange.finish_reason.as_deref(), Some("stop"));
}

#[test]
fn bad_json_is_reported_not_fatal() {
    let case = Case::new("/v1/chat/completions", CHAT)
        .ct("text/event-stream")
        .pieces(&[
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}\n\n",
            "data: \u{1F600} not json\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n",
        ]);
    let out = drive(&case);
    assert_eq!(out.errors, vec![DecodeError::BadJson, DecodeError::BadJson]);
    assert_eq!(out.exchange.timings.content_events, 1);
    assert_eq!(out.exchange.error, None);
}

#[test]
fn oversized_event_is_skipped() {
    let big = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(2 * 1024 * 1024)
    );
    let case = Case::new("/v1/chat/completions", CHAT)
        .ct("text/event-stream")
        .pieces(&[
            &big,
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n",
        ]);
    let out = drive(&case);
    assert_eq!(
        out.errors,
        vec![DecodeError::EventTooLarge {
            limit: llm_observer_decode::Limits::default().max_event_bytes
        }]
    );
    assert_eq!(out.exchange.timings.content_events, 1);
}

#[test]
fn long_strings_are_capped() {
    let model = "m".repeat(1000);
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}"#);
    let resp = format!(
        r#"{{"model":"{model}","choices":[{{"index":0,"message":{{"content":"x","tool_calls":[{}]}},"finish_reason":"{}"}}]}}"#,
        (0..20)
            .map(|i| format!(r#"{{"function":{{"name":"{}{i}"}}}}"#, "t".repeat(100)))
            .collect::<Vec<_>>()
            .join(","),
        "r".repeat(500)
    );
    let case = Case::new("/v1/chat/completions", &body)
        .ct("application/json")
        .pieces(&[&resp]);
    let e = drive(&case).exchange;
    assert_eq!(e.request_model.as_deref().map(str::len), Some(256));
    assert_eq!(e.response_model.as_deref().map(str::len), Some(256));
    assert_eq!(e.finish_reason.as_deref().map(str::len), Some(128));
    assert_eq!(e.tool_calls.len(), 16);
    assert!(e.tool_calls.iter().all(|t| t.len() == 64));
}

/// Feeds `body` split at every byte boundary pair (prefix / suffix), one timestamp: the record
/// must not depend on where the pieces were cut.
fn split_invariant(path: &str, req: &str, ct: &str, body: &str) {
    let whole = drive(&Case::new(path, req).ct(ct).pieces(&[body])).exchange;
    for cut in 0..=body.len() {
        let (a, b) = body.as_bytes().split_at(cut);
        let h = headers(&[("content-type", "application/json")]);
        let r = Request {
            method: "POST",
            path,
            headers: &h,
            body: req.as_bytes(),
            body_truncated: false,
            start_ns: REQ_START,
            end_ns: REQ_END,
            wire_bytes: REQ_WIRE,
        };
        let mut d = llm::recognize(&r).expect("recognised");
        let rh = headers(&[("content-type", ct)]);
        d.response_head(&ResponseHead {
            status: 200,
            headers: &rh,
            start_ns: RESP_START,
        });
        let mut errors = Vec::new();
        d.response_body(a, ts(0), &mut errors);
        d.response_body(b, ts(0), &mut errors);
        let e = d.finish(BodyEnd::Complete, ts(1), RESP_WIRE);
        assert_eq!(e, whole, "cut at {cut}");
        assert!(errors.is_empty(), "cut at {cut}: {errors:?}");
    }
}

#[test]
fn split_anywhere_gives_the_same_record() {
    split_invariant(
        "/v1/chat/completions",
        CHAT,
        "text/event-stream",
        "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n: ping\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\u{e9}t\u{e9}\"}}]}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n",
    );
    split_invariant(
        "/api/chat",
        r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        "application/x-ndjson",
        "{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n{\"model\":\"m\",\"message\":{\"content\":\"\"},\"done\":true,\"eval_count\":1}\n",
    );
    split_invariant(
        "/v1/messages",
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        "application/json",
        r#"{"type":"message","model":"c","content":[{"type":"text","text":"a\"}"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#,
    );
}

#[test]
fn framing_sniffed_from_a_cut_field_name() {
    // No content type: the body is sniffed; "da" + "ta:..." must still be SSE (found by fuzzing).
    let body = "data:{\"token\":{\"text\":\"a\",\"special\":false},\"details\":{\"generated_tokens\":1}}\n\n";
    let whole = drive(&Case::new("/generate_stream", r#"{"inputs":"x"}"#).pieces(&[body])).exchange;
    let (a, b) = body.split_at(2);
    let cut =
        drive(&Case::new("/generate_stream", r#"{"inputs":"x"}"#).pieces(&["\n", a, b])).exchange;
    assert_eq!(whole.tokens.completion, rep(1));
    assert_eq!(whole.error, None);
    assert_eq!(
        (cut.tokens, cut.error, cut.timings.content_events),
        (whole.tokens, whole.error, whole.timings.content_events)
    );
}
