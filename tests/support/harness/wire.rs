//! Raw OpenAI-style HTTP/1.1 messages for tests that serve or send bytes themselves (a server
//! parked in a syscall, a forking server): one chat request and its non-streamed answer with
//! exact token counts (3 prompt, 2 completion).

use serde_json::json;

/// A chat request body for `model`.
pub fn chat(model: &str) -> String {
    json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "a b c"}]})
        .to_string()
}

/// `POST /v1/chat/completions` with [`chat`] as its body.
pub fn post(model: &str) -> Vec<u8> {
    let body = chat(model);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A 200 response completing [`post`]: 3 prompt tokens, 2 completion tokens.
pub fn completion(model: &str) -> Vec<u8> {
    let body = json!({"id": "c1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    .to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
