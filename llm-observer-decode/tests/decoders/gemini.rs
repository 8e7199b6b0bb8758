//! Gemini `generateContent` / `streamGenerateContent`: non-streamed, SSE (`?alt=sse`), a streamed
//! JSON array (no `alt`), thinking and cached tokens, function calls, errors. Bodies follow the
//! documented `GenerateContentResponse` shape (candidates[].content.parts[], finishReason,
//! usageMetadata{promptTokenCount, candidatesTokenCount, cachedContentTokenCount,
//! thoughtsTokenCount, totalTokenCount}, modelVersion).

use super::*;

const REQ: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Explain how AI works"}]}]}"#;
const PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM_PATH: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";

fn chunk(text: &str, last: bool) -> String {
    let finish = if last {
        r#","finishReason":"STOP""#
    } else {
        ""
    };
    let usage = if last {
        r#","usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":3,"totalTokenCount":16,"thoughtsTokenCount":5,"cachedContentTokenCount":2}"#
    } else {
        r#","usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}"#
    };
    format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{text}"}}],"role":"model"}},"index":0{finish}}}]{usage},"modelVersion":"gemini-2.5-flash-001","responseId":"r1"}}"#
    )
}

fn want_tokens() -> Tokens {
    Tokens {
        prompt: rep(8),
        // candidates (3) + thoughts (5): completion includes reasoning.
        completion: rep(8),
        cached: rep(2),
        reasoning: rep(5),
    }
}

#[test]
fn gemini_generate_content_json() {
    let body = chunk("AI learns patterns.", true);
    let case = Case::new(PATH, REQ)
        .ct("application/json; charset=UTF-8")
        .pieces(&[&body]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gemini-2.5-flash-001".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: want_tokens(),
        finish_reason: Some("STOP".into()),
        ..base(
            Api::Gemini,
            Operation::Chat,
            PATH,
            Some("gemini-2.5-flash"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
    assert!(out.errors.is_empty());
}

#[test]
fn gemini_stream_sse() {
    let (a, b, c) = (
        chunk("AI", false),
        chunk(" learns", false),
        chunk(" patterns.", true),
    );
    let (a, b, c) = (
        format!("data: {a}\r\n\r\n"),
        format!("data: {b}\r\n\r\n"),
        format!("data: {c}\r\n\r\n"),
    );
    let case = Case::new(STREAM_PATH, REQ)
        .ct("text/event-stream")
        .pieces(&[&a, &b, &c]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gemini-2.5-flash-001".into()),
        timings: timings(Some(ts(0)), Some(ts(2)), 3, case.end_ns()),
        tokens: want_tokens(),
        finish_reason: Some("STOP".into()),
        ..base(
            Api::Gemini,
            Operation::Chat,
            STREAM_PATH,
            Some("gemini-2.5-flash"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
    marker_at(&out.markers, 0);
    assert!(out.errors.is_empty());
}

#[test]
fn gemini_stream_json_array_one_event_per_element() {
    let (a, b, c) = (
        chunk("AI", false),
        chunk(" learns", false),
        chunk(" patterns.", true),
    );
    // The array split across pieces mid-element, as a server flushes it.
    let whole = format!("[{a},\r\n{b},\r\n{c}]");
    let cut1 = whole.find(" learns").unwrap();
    let cut2 = whole.find(" patterns.").unwrap() + 3;
    let pieces = [&whole[..cut1], &whole[cut1..cut2], &whole[cut2..]];
    let case = Case::new(STREAM_PATH, REQ)
        .ct("application/json; charset=UTF-8")
        .pieces(&pieces);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("gemini-2.5-flash-001".into()),
        // The first element completes in piece 0; the second in piece 1; the last in piece 2.
        timings: timings(Some(ts(0)), Some(ts(2)), 3, case.end_ns()),
        tokens: want_tokens(),
        finish_reason: Some("STOP".into()),
        ..base(
            Api::Gemini,
            Operation::Chat,
            STREAM_PATH,
            Some("gemini-2.5-flash"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[test]
fn gemini_stream_cut_before_the_end_is_a_cancel() {
    let a = format!("data: {}\r\n\r\n", chunk("AI", false));
    let case = Case::new(STREAM_PATH, REQ)
        .ct("text/event-stream")
        .pieces(&[&a])
        .end(BodyEnd::Cut(EndedBy::Client));
    let out = drive(&case);
    assert_eq!(out.exchange.error, Some(ErrorKind::ClientCancelled));
    // Usage was not final: the content events are counted.
    assert_eq!(out.exchange.tokens.completion, TokenCount::counted(1));
    assert_eq!(out.exchange.tokens.prompt, rep(8));
}

#[test]
fn gemini_function_call_is_a_tool_call() {
    let body = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":6,"totalTokenCount":26}}"#;
    let case = Case::new(PATH, REQ).ct("application/json").pieces(&[body]);
    let out = drive(&case);
    assert_eq!(out.exchange.tool_calls, vec!["get_weather".to_string()]);
    assert_eq!(out.exchange.tokens.completion, rep(6));
    assert_eq!(out.exchange.tokens.reasoning, ABSENT);
    assert_eq!(out.exchange.timings.content_events, 1);
}

#[test]
fn gemini_errors() {
    let case = Case::new(PATH, REQ)
        .status(429)
        .ct("application/json")
        .pieces(&[r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#]);
    assert_eq!(drive(&case).exchange.error, Some(ErrorKind::RateLimited));
    let case = Case::new(PATH, REQ)
        .status(400)
        .ct("application/json")
        .pieces(&[
            r#"{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT"}}"#,
        ]);
    assert_eq!(drive(&case).exchange.error, Some(ErrorKind::ClientError));
    // Garbage in a 200 stream: a counted decode error, never a panic.
    let case = Case::new(STREAM_PATH, REQ)
        .ct("text/event-stream")
        .pieces(&["data: {not json\r\n\r\n"]);
    let out = drive(&case);
    assert_eq!(out.errors, vec![DecodeError::BadJson]);
}

#[test]
fn gemini_is_recognised_by_path_only() {
    let h = headers(&[("content-type", "application/json")]);
    let req = |path, body: &'static str| Request {
        method: "POST",
        path,
        headers: &h,
        body: body.as_bytes(),
        body_truncated: false,
        start_ns: REQ_START,
        end_ns: REQ_END,
        wire_bytes: REQ_WIRE,
    };
    let s = llm::recognize(&req(STREAM_PATH, REQ))
        .expect("gemini")
        .summary();
    assert_eq!(
        (s.api, s.model.as_deref(), s.stream),
        (Api::Gemini, Some("gemini-2.5-flash"), true)
    );
    assert!(llm::recognize(&req("/v1beta/models/gemini-2.5-flash:countTokens", REQ)).is_none());
    assert!(llm::recognize(&req(PATH, "not json")).is_none());
    assert!(llm::is_candidate("POST", PATH, &h));
}
