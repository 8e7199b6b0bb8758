//! OpenAI-compatible Chat Completions, Completions, Embeddings and the Responses API.

use super::*;

const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

const CHAT_STREAM: &str = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn chat_stream_with_tool_calls_and_usage_chunk() {
    let case = Case::new("/v1/chat/completions", CHAT_STREAM).ct(SSE).pieces(&[
        // role-only first chunk: not content
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":31,\"total_tokens\":111,\"prompt_tokens_details\":{\"cached_tokens\":64,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":7}}}\n\ndata: [DONE]\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gpt-4o-2024-08-06".into()),
        timings: timings(Some(ts(1)), Some(ts(2)), 3, case.end_ns()),
        tokens: Tokens {
            prompt: rep(80),
            completion: rep(31),
            cached: rep(64),
            reasoning: rep(7),
        },
        finish_reason: Some("tool_calls".into()),
        tool_calls: vec!["get_weather".into(), "get_time".into()],
        tool_ids: tool_ids(&[("call_1", "get_weather"), ("call_2", "get_time")], &[]),
        ..base(
            Api::Openai,
            Operation::Chat,
            "/v1/chat/completions",
            Some("gpt-4o"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
    assert!(out.errors.is_empty());
    marker_at(&out.markers, 1);
}

#[test]
fn chat_stream_without_usage_counts_content_chunks() {
    // vLLM style: reasoning_content deltas are content; CRLF event separators.
    let case = Case::new(
        "/openai/v1/chat/completions",
        r#"{"model":"qwen","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct(SSE)
    .pieces(&[
        "data: {\"model\":\"qwen\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n",
        "data: {\"model\":\"qwen\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"}}]}\r\n\r\n",
        "data: {\"model\":\"qwen\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\ndata: {\"model\":\"qwen\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}]}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("qwen".into()),
        timings: timings(Some(ts(1)), Some(ts(2)), 3, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(3)),
        finish_reason: Some("stop".into()),
        ..base(
            Api::Openai,
            Operation::Chat,
            "/openai/v1/chat/completions",
            Some("qwen"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn llamacpp_timings_on_last_chunk_are_reported_counts() {
    let case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct("text/event-stream")
    .pieces(&[
        "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"a\"}}],\"model\":\"tiny\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"delta\":{}}],\"model\":\"tiny\",\"object\":\"chat.completion.chunk\",\"timings\":{\"cache_n\":5,\"prompt_n\":17,\"prompt_ms\":1.2,\"predicted_n\":12,\"predicted_ms\":2.8}}\n\ndata: [DONE]\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("tiny".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: Tokens {
            prompt: rep(22),
            completion: rep(12),
            cached: rep(5),
            reasoning: ABSENT,
        },
        finish_reason: Some("length".into()),
        // `timings` is llama.cpp's mark.
        server: Some(Evidence {
            kind: ServerKind::Llamacpp,
            strength: Strength::Body,
        }),
        ..base(
            Api::Openai,
            Operation::Chat,
            "/v1/chat/completions",
            Some("tiny"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn chat_not_streamed() {
    let case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct(JSON)
    .pieces(&[r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","tool_calls":[{"id":"c","type":"function","function":{"name":"lookup","arguments":"{}"}}]},"finish_reason":"tool_calls","logprobs":null}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gpt-4o-2024-08-06".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: Tokens {
            prompt: rep(19),
            completion: rep(10),
            cached: rep(0),
            reasoning: rep(0),
        },
        finish_reason: Some("tool_calls".into()),
        tool_calls: vec!["lookup".into()],
        tool_ids: tool_ids(&[("c", "lookup")], &[]),
        ..base(
            Api::Openai,
            Operation::Chat,
            "/v1/chat/completions",
            Some("gpt-4o"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn completions_stream_ignores_empty_text() {
    let case = Case::new(
        "/v1/completions",
        r#"{"model":"tiny","prompt":"Once","stream":true}"#,
    )
    .ct(SSE)
    .pieces(&[
        "data: {\"object\":\"text_completion\",\"model\":\"tiny\",\"choices\":[{\"text\":\"upon\",\"index\":0,\"finish_reason\":null}]}\n\n",
        "data: {\"object\":\"text_completion\",\"model\":\"tiny\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n",
        "data: [DONE]\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("tiny".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(1)),
        finish_reason: Some("length".into()),
        ..base(
            Api::Openai,
            Operation::TextCompletion,
            "/v1/completions",
            Some("tiny"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn embeddings_report_prompt_tokens_only() {
    let case = Case::new(
        "/v1/embeddings",
        r#"{"model":"text-embedding-3-small","input":"hello"}"#,
    )
    .ct(JSON)
    .pieces(&[r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8,"completion_tokens":0}}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("text-embedding-3-small".into()),
        timings: timings(None, None, 0, case.end_ns()),
        tokens: tokens(rep(8), ABSENT),
        ..base(
            Api::Openai,
            Operation::Embeddings,
            "/v1/embeddings",
            Some("text-embedding-3-small"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn error_event_after_200() {
    let case = Case::new("/v1/chat/completions", CHAT_STREAM).ct(SSE).pieces(&[
        "data: {\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gpt-4o".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(1)),
        error: Some(ErrorKind::StreamError),
        ..base(
            Api::Openai,
            Operation::Chat,
            "/v1/chat/completions",
            Some("gpt-4o"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

/// Status + body → error kind, for the non-streamed error shapes.
fn error_kind(status: u16, body: &str) -> Exchange {
    let case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
    )
    .status(status)
    .ct(JSON)
    .pieces(&[body]);
    drive(&case).exchange
}

#[test]
fn http_errors_are_classified() {
    let cases: &[(u16, &str, ErrorKind)] = &[
        (
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            ErrorKind::RateLimited,
        ),
        (
            500,
            r#"{"error":{"message":"internal","type":"server_error","param":null,"code":null}}"#,
            ErrorKind::ServerError,
        ),
        (
            503,
            r#"{"error":{"message":"busy","type":"service_unavailable_error","code":"server_is_overloaded"}}"#,
            ErrorKind::Overloaded,
        ),
        (
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ErrorKind::ContextLengthExceeded,
        ),
        (
            400,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","param":null,"code":400}"#,
            ErrorKind::ContextLengthExceeded,
        ),
        (
            500,
            r#"{"object":"error","message":"CUDA out of memory. Tried to allocate 2.00 GiB","type":"InternalServerError","param":null,"code":500}"#,
            ErrorKind::OutOfMemory,
        ),
        (
            500,
            r#"{"error":{"message":"OOM while allocating KV cache","type":"server_error","code":500}}"#,
            ErrorKind::OutOfMemory,
        ),
        (
            401,
            r#"{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            ErrorKind::ClientError,
        ),
        (502, "<html>bad gateway</html>", ErrorKind::ServerError),
    ];
    for (status, body, kind) in cases {
        let want = Exchange {
            status: Some(*status),
            timings: timings(None, None, 0, ts(1)),
            error: Some(*kind),
            ..base(
                Api::Openai,
                Operation::Chat,
                "/v1/chat/completions",
                Some("m"),
                false,
            )
        };
        assert_eq!(error_kind(*status, body), want, "{status} {body}");
    }
}

#[test]
fn responses_stream_with_function_call() {
    let case = Case::new(
        "/v1/responses",
        r#"{"model":"gpt-4.1","stream":true,"input":"weather?"}"#,
    )
    .ct(SSE)
    .pieces(&[
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"usage\":null}}\n\nevent: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"status\":\"in_progress\"}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"Let me\",\"sequence_number\":2}\n\n",
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"get_weather\",\"arguments\":\"\"},\"sequence_number\":3}\n\nevent: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"{}\",\"sequence_number\":4}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":5,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":9,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":39}}}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gpt-4.1-2025-04-14".into()),
        timings: timings(Some(ts(1)), Some(ts(2)), 3, case.end_ns()),
        tokens: Tokens {
            prompt: rep(30),
            completion: rep(9),
            cached: rep(10),
            reasoning: rep(2),
        },
        finish_reason: Some("completed".into()),
        tool_calls: vec!["get_weather".into()],
        tool_ids: tool_ids(&[("call_1", "get_weather")], &[]),
        ..base(
            Api::Openai,
            Operation::Responses,
            "/v1/responses",
            Some("gpt-4.1"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn responses_error_then_failed() {
    let case = Case::new(
        "/v1/responses",
        r#"{"model":"gpt-4.1","stream":true,"input":"x"}"#,
    )
    .ct(SSE)
    .pieces(&[
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"param\":null,\"sequence_number\":3}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"usage\":null}}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(1)),
        finish_reason: Some("failed".into()),
        error: Some(ErrorKind::StreamError),
        ..base(
            Api::Openai,
            Operation::Responses,
            "/v1/responses",
            Some("gpt-4.1"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn responses_not_streamed() {
    let case = Case::new("/v1/responses", r#"{"model":"gpt-4.1","input":"x"}"#)
        .ct(JSON)
        .pieces(&[r#"{"id":"resp_1","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-4.1-2025-04-14","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":5,"output_tokens":16,"total_tokens":21}}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gpt-4.1-2025-04-14".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(rep(5), rep(16)),
        finish_reason: Some("max_output_tokens".into()),
        ..base(
            Api::Openai,
            Operation::Responses,
            "/v1/responses",
            Some("gpt-4.1"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn request_params_and_traceparent_are_recorded() {
    let mut case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"m","max_completion_tokens":12,"temperature":0.25,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct("application/json")
    .pieces(&[r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#]);
    case.req_headers.push((
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    let p = drive(&case).exchange.params;
    assert_eq!((p.max_tokens, p.temperature), (Some(12), Some(0.25)));
    let t = p.trace_parent.expect("traceparent");
    assert_eq!(
        t.parent_id,
        [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    assert_eq!(t.flags, 1);

    // Values of the wrong type are ignored, never a reason not to recognise the request; an
    // invalid traceparent is no parent.
    let mut case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"m","max_tokens":"lots","temperature":{"x":[1]},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct("application/json")
    .pieces(&[r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}]}"#]);
    case.req_headers
        .push(("traceparent", "00-zz-00f067aa0ba902b7-01"));
    let ex = drive(&case).exchange;
    assert_eq!(ex.request_model.as_deref(), Some("m"));
    assert_eq!(
        ex.params,
        llm_observer_decode::RequestParams {
            choices: Some(1),
            ..Default::default()
        }
    );
}

/// Prompts and choices of one request, by what its body asks.
fn batch(path: &str, body: &str) -> (Option<u64>, Option<u64>) {
    let case = Case::new(path, body).ct("application/json").pieces(&[
        r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
    ]);
    let p = drive(&case).exchange.params;
    (p.prompts, p.choices)
}

#[test]
fn batches_of_prompts_and_choices_are_recorded() {
    let c = "/v1/completions";
    // A string, strings, token ids (one tokenized prompt), token arrays (one each).
    assert_eq!(
        batch(c, r#"{"model":"m","prompt":"a"}"#),
        (Some(1), Some(1))
    );
    assert_eq!(
        batch(c, r#"{"model":"m","prompt":["a","b","c"],"n":2}"#),
        (Some(3), Some(6))
    );
    assert_eq!(
        batch(c, r#"{"model":"m","prompt":[1,2,3]}"#),
        (Some(1), Some(1))
    );
    assert_eq!(
        batch(c, r#"{"model":"m","prompt":[[1,2],[3]],"n":3}"#),
        (Some(2), Some(6))
    );
    assert_eq!(batch(c, r#"{"model":"m","prompt":[]}"#), (Some(0), Some(0)));
    // Chat: one conversation, n choices; a bad n is the default.
    let chat = "/v1/chat/completions";
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    assert_eq!(
        batch(chat, &format!(r#"{{"model":"m","n":4,{msgs}}}"#)),
        (None, Some(4))
    );
    for bad in ["0", "1.5", r#""2""#, "-1"] {
        assert_eq!(
            batch(chat, &format!(r#"{{"model":"m","n":{bad},{msgs}}}"#)),
            (None, Some(1)),
            "n={bad}"
        );
    }
    // OpenAI's own limit bounds what one request can add.
    assert_eq!(
        batch(chat, &format!(r#"{{"model":"m","n":4000000000,{msgs}}}"#)),
        (None, Some(128))
    );
    // Embeddings: inputs, no choices.
    assert_eq!(
        batch(
            "/v1/embeddings",
            r#"{"model":"m","input":["a","b","c","d","e"]}"#
        ),
        (Some(5), None)
    );
}

#[test]
fn chat_request_carrying_tool_results_names_their_ids() {
    // The agent's second turn: the assistant's tool call and the tool's result go back.
    let case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{}"}},{"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_a","content":"sunny"},{"role":"tool","tool_call_id":"call_b","content":"noon"}]}"#,
    )
    .ct(JSON)
    .pieces(&[r#"{"id":"chatcmpl-2","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Sunny at noon."},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34}}"#]);
    let out = drive(&case);
    assert_eq!(out.exchange.tool_ids, tool_ids(&[], &["call_a", "call_b"]));
    assert!(out.exchange.tool_calls.is_empty());
}

#[test]
fn batch_api_calls_are_exchanges_by_operation() {
    let object = r#"{"id":"batch_abc123","object":"batch","endpoint":"/v1/chat/completions","status":"validating","input_file_id":"file-abc123","completion_window":"24h","request_counts":{"total":0,"completed":0,"failed":0}}"#;
    let list = r#"{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}"#;
    for (method, path, body, answer, op) in [
        (
            "POST",
            "/v1/batches",
            r#"{"input_file_id":"file-abc123","endpoint":"/v1/chat/completions","completion_window":"24h"}"#,
            object,
            Operation::BatchCreate,
        ),
        (
            "GET",
            "/v1/batches/batch_abc123",
            "",
            object,
            Operation::BatchRetrieve,
        ),
        ("GET", "/v1/batches?limit=2", "", list, Operation::BatchList),
        (
            "POST",
            "/v1/batches/batch_abc123/cancel",
            "",
            object,
            Operation::BatchCancel,
        ),
    ] {
        let mut case = Case::new(path, body).ct(JSON).pieces(&[answer]);
        case.method = method;
        let out = drive(&case);
        let mut want = base(Api::Openai, op, path, None, false);
        want.method = method.into();
        want.timings.response_end_ns = Some(case.end_ns());
        assert_eq!(out.exchange, want, "{method} {path}");
        assert!(out.errors.is_empty());
    }
}

#[test]
fn chunks_repeating_their_leading_members_are_read_exactly() {
    // After the first chunk the leading members (id, object, created, model, fingerprint) are
    // skipped when a chunk starts with the same bytes up to and with the comma after them. A
    // value that only starts the same (`created` 12 → 123), a broken tail after an identical
    // prefix, and an `error` member after it must each still be read as they are.
    let head = |created: &str| {
        format!(
            "data: {{\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"m-1\",\"system_fingerprint\":\"fp_x\","
        )
    };
    let content = |created: &str, text: &str| {
        format!(
            "{}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n",
            head(created)
        )
    };
    let pieces = [
        content("12", "a"),
        content("12", "b"),
        content("123", "c"),
        content("123", "d"),
        format!(
            "{}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"e\"}}\n\n",
            head("123")
        ),
        content("123", "f"),
        format!(
            "{}\"choices\":[],\"error\":{{\"message\":\"overloaded\"}}}}\n\n",
            head("123")
        ),
    ];
    let out = drive_chat_stream(&pieces);
    assert_eq!(out.errors, vec![DecodeError::BadJson]);
    assert_eq!(out.exchange.response_model.as_deref(), Some("m-1"));
    // a, b, c, d and f; e is not JSON.
    assert_eq!(out.exchange.timings.content_events, 5);
    assert_eq!(out.exchange.tokens.completion, TokenCount::counted(5));
    assert!(out.exchange.error.is_some(), "{:?}", out.exchange.error);
}

#[test]
fn a_prefix_ending_before_usage_or_timings_still_reads_them() {
    // The skipped prefix ends at the first member that is not an identifying one: `usage` right
    // after it (the last chunk) is read, and so are llama.cpp's `timings`.
    let head = "data: {\"id\":\"c7\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m-2\",";
    let pieces = [
        format!(
            "{head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"a\"}},\"finish_reason\":null}}]}}\n\n"
        ),
        format!(
            "{head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"b\"}},\"finish_reason\":null}}]}}\n\n"
        ),
        format!(
            "{head}\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}},\"choices\":[]}}\n\n"
        ),
        format!(
            "{head}\"timings\":{{\"prompt_n\":7,\"cache_n\":2,\"predicted_n\":2}},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n"
        ),
    ];
    let out = drive_chat_stream(&pieces);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    // The usage report wins over the later timings (usage, when present, is the count).
    assert_eq!(out.exchange.tokens.prompt, rep(9));
    assert_eq!(out.exchange.tokens.completion, rep(2));
    assert_eq!(out.exchange.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        out.exchange.server.map(|e| e.kind),
        Some(ServerKind::Llamacpp)
    );
}

/// A streamed chat request answered with `pieces`.
fn drive_chat_stream(pieces: &[String]) -> Outcome {
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let case = Case::new(
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct(SSE)
    .pieces(&refs);
    drive(&case)
}
