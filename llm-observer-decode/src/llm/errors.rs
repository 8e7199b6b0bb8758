//! Error bodies → [`ErrorKind`], one classifier for every API.
//!
//! Shapes understood (error bodies are rare, so they are parsed into a `serde_json::Value`):
//! - OpenAI / vLLM new / llama.cpp / Anthropic: `{"error":{"message","type","code"}}` (Anthropic adds
//!   a top-level `"type":"error"`); `code` may be a string (OpenAI) or an int HTTP status (vLLM).
//! - vLLM old / SGLang flat: `{"object":"error","message","type","code"}`.
//! - Ollama / TGI: `{"error":"message"}` (TGI adds `"error_type"`).
//! - FastAPI: `{"detail":"message"}`.
//!
//! Order of the checks, most specific first: context length, out of memory, an explicit
//! overloaded / rate-limit type or code, a timeout, then the HTTP status (429 → rate limited,
//! 408/504/524 → timeout, 503/529 → overloaded, else by class). Messages are matched case-insensitively on their first 4 KiB.

use serde_json::Value;

use crate::exchange::ErrorKind;

/// What an error body said, lower-cased and bounded. Dropped right after classification.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorFacts {
    pub message: String,
    pub kind: String,
    pub code: String,
}

const MAX_MESSAGE: usize = 4096;

fn lower_bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_ascii_lowercase()
}

fn text(v: Option<&Value>, max: usize) -> String {
    match v {
        Some(Value::String(s)) => lower_bounded(s, max),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

impl ErrorFacts {
    /// Extracts the facts from a parsed error value (a whole body, or one stream event).
    pub(crate) fn from_value(v: &Value) -> Option<ErrorFacts> {
        let obj = v.as_object()?;
        match obj.get("error") {
            Some(Value::Object(e)) => Some(ErrorFacts {
                message: text(e.get("message"), MAX_MESSAGE),
                kind: text(e.get("type"), 128),
                code: text(e.get("code"), 128),
            }),
            Some(Value::String(s)) => Some(ErrorFacts {
                message: lower_bounded(s, MAX_MESSAGE),
                kind: text(obj.get("error_type").or(obj.get("type")), 128),
                code: text(obj.get("code"), 128),
            }),
            _ if obj.get("object").and_then(Value::as_str) == Some("error")
                || obj.get("type").and_then(Value::as_str) == Some("error") =>
            {
                Some(ErrorFacts {
                    message: text(obj.get("message"), MAX_MESSAGE),
                    kind: text(obj.get("type"), 128),
                    code: text(obj.get("code"), 128),
                })
            }
            _ => match obj.get("detail") {
                Some(Value::String(s)) => Some(ErrorFacts {
                    message: lower_bounded(s, MAX_MESSAGE),
                    ..ErrorFacts::default()
                }),
                _ => None,
            },
        }
    }

    /// Parses `body` and extracts the facts; `None` when it is not a JSON error shape.
    pub(crate) fn from_body(body: &[u8]) -> Option<ErrorFacts> {
        let v: Value = serde_json::from_slice(body).ok()?;
        ErrorFacts::from_value(&v)
    }

    fn type_or_code(&self, needle: &str) -> bool {
        self.kind.contains(needle) || self.code.contains(needle)
    }

    fn context_length(&self) -> bool {
        const MESSAGES: &[&str] = &[
            "maximum context length",
            "context length",
            "exceeds the context",
            "context size",
            "context window",
            "maximum model length",
            "too long",
            "`max_new_tokens` must be <=",
            "`inputs` must have less than",
        ];
        self.type_or_code("context_length")
            || self.type_or_code("exceed_context")
            || MESSAGES.iter().any(|m| self.message.contains(m))
    }

    /// A gateway or server that gave up waiting: `timeout` / `timed out` / `deadline exceeded` in
    /// the type, code or message (vLLM, TGI, LiteLLM, Envoy and cloud gateways word it so).
    fn timeout(&self) -> bool {
        const MESSAGES: &[&str] = &["timed out", "timeout", "deadline exceeded"];
        self.type_or_code("timeout")
            || self.type_or_code("deadline_exceeded")
            || MESSAGES.iter().any(|m| self.message.contains(m))
    }

    fn out_of_memory(&self) -> bool {
        self.message.contains("out of memory")
            || self.message.contains("outofmemory")
            || has_word(&self.message, "oom")
            || self.type_or_code("out_of_memory")
    }
}

/// `word` occurs in `s` delimited by non-alphanumerics (so `oom` matches "OOM" but not "room").
fn has_word(s: &str, word: &str) -> bool {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find(word) {
        let start = from + i;
        let end = start + word.len();
        let before = start == 0 || !b[start - 1].is_ascii_alphanumeric();
        let after = end == b.len() || !b[end].is_ascii_alphanumeric();
        if before && after {
            return true;
        }
        from = start + 1;
    }
    false
}

/// Classifies a failed HTTP response (status ≥ 400) from its status and, when it parsed, its body.
pub(crate) fn classify_http(status: u16, facts: Option<&ErrorFacts>) -> ErrorKind {
    if let Some(f) = facts {
        if f.context_length() {
            return ErrorKind::ContextLengthExceeded;
        }
        if f.out_of_memory() {
            return ErrorKind::OutOfMemory;
        }
        if f.type_or_code("overloaded") {
            return ErrorKind::Overloaded;
        }
        if f.type_or_code("rate_limit") {
            return ErrorKind::RateLimited;
        }
        if f.timeout() {
            return ErrorKind::Timeout;
        }
    }
    match status {
        429 => ErrorKind::RateLimited,
        // Request Timeout, Gateway Timeout, and the de-facto gateway codes for a timed-out
        // upstream (Cloudflare 524, nginx 499 is the client's and stays a client error).
        408 | 504 | 524 => ErrorKind::Timeout,
        503 | 529 => ErrorKind::Overloaded,
        400..=499 => ErrorKind::ClientError,
        _ => ErrorKind::ServerError,
    }
}

/// Classifies an error object that arrived inside a stream after HTTP 200: an explicit overloaded /
/// rate-limit type keeps its kind (Anthropic `overloaded_error`, `rate_limit_error`); anything else
/// is a [`ErrorKind::StreamError`].
pub(crate) fn classify_stream(facts: Option<&ErrorFacts>) -> ErrorKind {
    match facts {
        Some(f) if f.type_or_code("overloaded") => ErrorKind::Overloaded,
        Some(f) if f.type_or_code("rate_limit") => ErrorKind::RateLimited,
        _ => ErrorKind::StreamError,
    }
}

/// Classifies a stream-error event body (`data: {"error":..}`, Anthropic `event: error`).
pub(crate) fn classify_stream_body(data: &[u8]) -> ErrorKind {
    classify_stream(ErrorFacts::from_body(data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: &str) -> ErrorKind {
        classify_http(status, ErrorFacts::from_body(body.as_bytes()).as_ref())
    }

    #[test]
    fn shapes_and_kinds() {
        assert_eq!(
            http(
                400,
                r#"{"error":{"message":"x","type":"invalid_request_error","code":"context_length_exceeded"}}"#
            ),
            ErrorKind::ContextLengthExceeded
        );
        assert_eq!(
            http(
                400,
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","param":null,"code":400}"#
            ),
            ErrorKind::ContextLengthExceeded
        );
        assert_eq!(
            http(500, r#"{"error":"CUDA out of memory. Tried to allocate"}"#),
            ErrorKind::OutOfMemory
        );
        assert_eq!(
            http(500, r#"{"error":"no room left"}"#),
            ErrorKind::ServerError
        );
        assert_eq!(
            http(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            ErrorKind::Overloaded
        );
        assert_eq!(http(429, "<html>"), ErrorKind::RateLimited);
        assert_eq!(http(503, ""), ErrorKind::Overloaded);
        assert_eq!(
            http(404, r#"{"error":"model not found"}"#),
            ErrorKind::ClientError
        );
        assert_eq!(http(408, ""), ErrorKind::Timeout);
        assert_eq!(
            http(504, "<html>Gateway Time-out</html>"),
            ErrorKind::Timeout
        );
        assert_eq!(http(524, ""), ErrorKind::Timeout);
        assert_eq!(
            http(
                500,
                r#"{"error":{"message":"Request timed out.","type":"timeout"}}"#
            ),
            ErrorKind::Timeout
        );
        assert_eq!(
            http(400, r#"{"detail":"upstream deadline exceeded"}"#),
            ErrorKind::Timeout
        );
        assert_eq!(
            classify_stream_body(br#"{"type":"error","error":{"type":"rate_limit_error"}}"#),
            ErrorKind::RateLimited
        );
        assert_eq!(
            classify_stream_body(br#"{"error":"boom"}"#),
            ErrorKind::StreamError
        );
    }
}
