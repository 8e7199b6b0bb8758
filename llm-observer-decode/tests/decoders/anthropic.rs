//! Anthropic Messages API.

use super::*;

const SSE: &str = "text/event-stream; charset=utf-8";
const REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn want_stream(case: &Case<'_>) -> Exchange {
    base(
        Api::Anthropic,
        Operation::Chat,
        "/v1/messages",
        Some("claude-sonnet-4-5"),
        true,
    )
    .with_end(case.end_ns())
    .with_max_tokens(1024)
}

trait WithEnd {
    fn with_end(self, end: u64) -> Self;
    fn with_max_tokens(self, n: u64) -> Self;
}

impl WithEnd for Exchange {
    fn with_end(mut self, end: u64) -> Self {
        self.timings.response_end_ns = Some(end);
        self
    }

    fn with_max_tokens(mut self, n: u64) -> Self {
        self.params.max_tokens = Some(n);
        self
    }
}

#[test]
fn stream_with_cache_tokens_tool_use_and_cumulative_usage() {
    let case = Case::new("/v1/messages", REQ).ct(SSE).pieces(&[
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,\"output_tokens\":1}}}\n\n",
        // ping before any content: never the TTFT marker
        "event: ping\ndata: {\"type\": \"ping\"}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":10}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("claude-sonnet-4-5-20250929".into()),
        timings: timings(Some(ts(2)), Some(ts(4)), 3, case.end_ns()),
        tokens: Tokens {
            prompt: rep(2125),
            completion: rep(42),
            cached: rep(2000),
            reasoning: ABSENT,
        },
        finish_reason: Some("tool_use".into()),
        tool_calls: vec!["get_weather".into()],
        tool_ids: tool_ids(&[("toolu_1", "get_weather")], &[]),
        cache_write_tokens: rep(100),
        ..want_stream(&case)
    };
    assert_eq!(out.exchange, want);
    assert!(out.errors.is_empty());
    marker_at(&out.markers, 2);
}

#[test]
fn overloaded_error_event_after_200() {
    let case = Case::new("/v1/messages", REQ).ct(SSE).pieces(&[
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5-20250929\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("claude-sonnet-4-5-20250929".into()),
        timings: timings(Some(ts(1)), Some(ts(1)), 1, case.end_ns()),
        // input reported by message_start; no message_delta → output counted
        tokens: tokens(rep(7), TokenCount::counted(1)),
        error: Some(ErrorKind::Overloaded),
        ..want_stream(&case)
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn other_error_event_is_a_stream_error() {
    let case = Case::new("/v1/messages", REQ).ct(SSE).pieces(&[
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}\n\n",
    ]);
    let out = drive(&case);
    assert_eq!(out.exchange.error, Some(ErrorKind::StreamError));
}

#[test]
fn not_streamed() {
    let case = Case::new(
        "/v1/messages",
        r#"{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct("application/json")
    .pieces(&[r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":15,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("claude-haiku-4-5-20251001".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: Tokens {
            prompt: rep(25),
            completion: rep(15),
            cached: rep(0),
            reasoning: ABSENT,
        },
        finish_reason: Some("tool_use".into()),
        tool_calls: vec!["get_weather".into()],
        tool_ids: tool_ids(&[("toolu_1", "get_weather")], &[]),
        cache_write_tokens: rep(0),
        ..base(
            Api::Anthropic,
            Operation::Chat,
            "/v1/messages",
            Some("claude-haiku-4-5"),
            false,
        )
        .with_max_tokens(64)
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn status_529_is_overloaded_and_prompt_too_long_is_context_length() {
    let over = drive(
        &Case::new("/v1/messages", REQ)
            .status(529)
            .ct("application/json")
            .pieces(&[r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#]),
    );
    assert_eq!(over.exchange.error, Some(ErrorKind::Overloaded));
    assert_eq!(over.exchange.status, Some(529));
    let long = drive(
        &Case::new("/v1/messages", REQ)
            .status(400)
            .ct("application/json")
            .pieces(&[r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#]),
    );
    assert_eq!(long.exchange.error, Some(ErrorKind::ContextLengthExceeded));
    let rate = drive(
        &Case::new("/v1/messages", REQ)
            .status(429)
            .ct("application/json")
            .pieces(&[
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            ]),
    );
    assert_eq!(rate.exchange.error, Some(ErrorKind::RateLimited));
}

#[test]
fn stream_cut_by_server() {
    let case = Case::new("/v1/messages", REQ)
        .ct(SSE)
        .pieces(&[
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_blo",
        ])
        .end(BodyEnd::Cut(EndedBy::Server));
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("c".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(rep(3), TokenCount::counted(1)),
        error: Some(ErrorKind::ServerClosed),
        ..want_stream(&case)
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn request_carrying_tool_results_names_their_ids() {
    let req = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"get_weather","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"sunny"}]}]}"#;
    let case = Case::new("/v1/messages", req).ct(SSE).pieces(&[
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"get_time\",\"input\":{}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ]);
    let out = drive(&case);
    assert_eq!(
        out.exchange.tool_ids,
        tool_ids(&[("toolu_b", "get_time")], &["toolu_a"])
    );
    assert_eq!(out.exchange.tool_calls, vec!["get_time".to_string()]);
}
