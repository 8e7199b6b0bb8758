//! Turning a request body into a deterministic generation plan: token counts and timing.
//!
//! Token accounting (the contract tests rely on):
//! - **prompt tokens** = the number of whitespace-separated words in every prompt text of the request:
//!   `prompt` (a string or an array of strings), `system` (a string or content blocks) and every
//!   message's `content` (a string, or content parts, whose `text` fields count). Roles, tool
//!   definitions, images and other fields do not count.
//! - **output tokens** = the requested count: `max_completion_tokens` or `max_tokens` (OpenAI,
//!   Anthropic), `options.num_predict` (Ollama, when ≥ 0), else [`super::Config::default_output_tokens`].
//!   Token `i` (0-based) is the text `w<i>`, preceded by a space for `i > 0`, so the whole output has
//!   exactly as many words as tokens.
//! - **tool calls** (scenario `tools`): when the request offers tools (`tools[0].function.name`
//!   for OpenAI, `tools[0].name` for Anthropic) and its last message is not a tool result (OpenAI
//!   `role: "tool"`, Anthropic a user message with a `tool_result` block), the answer carries the
//!   output text and then one call of the first tool, with arguments `{}` and the id
//!   `call_emu_<request>` / `toolu_emu_<request>`; the finish reason is `tool_calls` / `tool_use`.
//!   Output tokens are counted as without the call.
//! - **timing**: token `i` is sent at `ttft + i × interval` after the request body was read; a
//!   non-streamed answer is sent when its last token would have been.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::{Config, Scenario};

/// Which wire API a request came in on; decides the framing and the error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Ollama,
    OpenAi,
    Anthropic,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Ollama => "ollama",
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

/// Everything the emulator decided about one request before answering it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Sequence number of the request in this emulator, used in response ids.
    pub id: u64,
    /// Sequence number of the TCP connection the request came on (1-based; 0 when unknown).
    pub conn: u64,
    pub api: Api,
    pub model: String,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// All prompt tokens, cached ones included.
    pub prompt_tokens: u32,
    /// The part of `prompt_tokens` reported as read from the prompt cache.
    pub cached_tokens: u32,
    pub output_tokens: u32,
    pub scenario: Scenario,
    pub ttft: Duration,
    pub interval: Duration,
    /// When the request body had been read; every deadline is relative to it.
    pub start: Instant,
    /// The connection's "close with RST" flag (see `conn_io`), set by `reset-mid-stream`.
    pub reset_on_close: Arc<AtomicBool>,
    /// The tool the answer asks to call (scenario `tools`).
    pub tool_call: Option<String>,
}

impl Plan {
    pub fn new(id: u64, api: Api, body: &Value, config: &Config, start: Instant) -> Plan {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let scenario = Scenario::from_model(&model);
        let stream = match api {
            // Ollama's native API streams unless told not to; the others only when asked.
            Api::Ollama => body.get("stream").and_then(Value::as_bool).unwrap_or(true),
            Api::OpenAi | Api::Anthropic => {
                body.get("stream").and_then(Value::as_bool).unwrap_or(false)
            }
        };
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let prompt_tokens = prompt_words(body);
        let cached_tokens = match scenario {
            Scenario::Cached(n) => n.min(prompt_tokens),
            _ => 0,
        };
        let interval = match scenario {
            Scenario::Slow(interval) => interval,
            _ => config.token_interval,
        };
        Plan {
            id,
            conn: 0,
            api,
            model,
            stream,
            include_usage,
            prompt_tokens,
            cached_tokens,
            output_tokens: requested_output(api, body).unwrap_or(config.default_output_tokens),
            scenario,
            ttft: config.ttft,
            interval,
            start,
            reset_on_close: Arc::default(),
            tool_call: (scenario == Scenario::Tools)
                .then(|| tool_to_call(api, body))
                .flatten(),
        }
    }

    /// The id of the tool call the answer asks for.
    pub fn tool_call_id(&self) -> String {
        match self.api {
            Api::Anthropic => format!("toolu_emu_{}", self.id),
            _ => format!("call_emu_{}", self.id),
        }
    }

    /// When token `index` is due.
    pub fn token_due(&self, index: u32) -> Instant {
        self.start + self.ttft + self.interval * index
    }

    /// When a non-streamed answer is due: when its last token would have been generated.
    pub fn done_due(&self) -> Instant {
        self.token_due(self.output_tokens.saturating_sub(1))
    }

    /// The text of the whole output.
    pub fn output_text(&self) -> String {
        (0..self.output_tokens).map(token_text).collect()
    }

    /// Whether the finish reason is "the length limit was hit".
    pub fn finish_length(&self) -> bool {
        self.scenario == Scenario::FinishLength
    }
}

/// The text of output token `index`: one word each, so the output has as many words as tokens.
pub fn token_text(index: u32) -> String {
    if index == 0 {
        "w0".to_owned()
    } else {
        format!(" w{index}")
    }
}

fn requested_output(api: Api, body: &Value) -> Option<u32> {
    let as_count = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match api {
        // A negative num_predict means "unlimited" in Ollama; the default count stands in for that.
        Api::Ollama => body.pointer("/options/num_predict").and_then(as_count),
        Api::OpenAi | Api::Anthropic => body
            .get("max_completion_tokens")
            .and_then(as_count)
            .or_else(|| body.get("max_tokens").and_then(as_count)),
    }
}

/// The first offered tool, unless the conversation already ends with a tool's result.
fn tool_to_call(api: Api, body: &Value) -> Option<String> {
    let first = body.get("tools")?.as_array()?.first()?;
    let name = match api {
        Api::OpenAi => first.pointer("/function/name"),
        _ => first.get("name"),
    }?
    .as_str()?;
    let last = body.get("messages")?.as_array()?.last()?;
    let answered = last.get("role").and_then(Value::as_str) == Some("tool")
        || last
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| {
                blocks
                    .iter()
                    .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            });
    (!answered).then(|| name.to_owned())
}

/// Counts the words of every prompt text of a request (see the module comment for which fields).
pub fn prompt_words(body: &Value) -> u32 {
    let mut words = 0usize;
    for field in ["prompt", "system"] {
        if let Some(v) = body.get(field) {
            words += text_words(v);
        }
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for message in messages {
            if let Some(content) = message.get("content") {
                words += text_words(content);
            }
        }
    }
    u32::try_from(words).unwrap_or(u32::MAX)
}

/// Words in a string, an array of strings, or content parts (`{"type":"text","text":…}`).
fn text_words(v: &Value) -> usize {
    match v {
        Value::String(s) => s.split_whitespace().count(),
        Value::Array(items) => items.iter().map(text_words).sum(),
        Value::Object(part) => part
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |s| s.split_whitespace().count()),
        _ => 0,
    }
}

/// Whether an Ollama request is a "load the model" request: an empty prompt (generate) or no
/// messages (chat); Ollama answers those with `done_reason: "load"` (or `"unload"` when
/// `keep_alive` is 0) and no metrics.
pub fn ollama_load_reason(body: &Value, chat: bool) -> Option<&'static str> {
    let empty = if chat {
        body.get("messages")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    } else {
        body.get("prompt")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    };
    if !empty {
        return None;
    }
    let unload = body
        .get("keep_alive")
        .is_some_and(|k| k.as_i64() == Some(0) || k.as_str() == Some("0"));
    Some(if unload { "unload" } else { "load" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_words_cover_every_text_field() {
        let body = json!({
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "hello there  world"},
                {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "image"}]}
            ]
        });
        assert_eq!(prompt_words(&body), 2 + 3 + 2);
        assert_eq!(prompt_words(&json!({"prompt": ["a b", "c"]})), 3);
        assert_eq!(prompt_words(&json!({"prompt": ""})), 0);
    }

    #[test]
    fn output_count_follows_the_api_field() {
        let config = Config::default();
        let now = Instant::now();
        let plan = |api, body: Value| Plan::new(1, api, &body, &config, now).output_tokens;
        assert_eq!(plan(Api::OpenAi, json!({"max_tokens": 5})), 5);
        assert_eq!(
            plan(
                Api::OpenAi,
                json!({"max_completion_tokens": 6, "max_tokens": 5})
            ),
            6
        );
        assert_eq!(plan(Api::Anthropic, json!({"max_tokens": 7})), 7);
        assert_eq!(plan(Api::Ollama, json!({"options": {"num_predict": 8}})), 8);
        assert_eq!(
            plan(Api::Ollama, json!({"options": {"num_predict": -1}})),
            config.default_output_tokens
        );
        assert_eq!(plan(Api::OpenAi, json!({})), config.default_output_tokens);
    }

    #[test]
    fn output_text_has_one_word_per_token() {
        let config = Config::default();
        let plan = Plan::new(
            1,
            Api::OpenAi,
            &json!({"max_tokens": 4}),
            &config,
            Instant::now(),
        );
        assert_eq!(plan.output_text(), "w0 w1 w2 w3");
    }

    #[test]
    fn tools_scenario_calls_the_first_tool_until_answered() {
        let config = Config::default();
        let now = Instant::now();
        let plan = |api, body: Value| Plan::new(3, api, &body, &config, now).tool_call;
        let tools = json!([{"type": "function", "function": {"name": "get_weather"}}]);
        let ask = json!({"model": "tools", "tools": tools, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(plan(Api::OpenAi, ask), Some("get_weather".into()));
        let answered = json!({"model": "tools", "tools": tools, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_emu_1", "content": "sunny"}]});
        assert_eq!(plan(Api::OpenAi, answered), None);
        let other_model =
            json!({"model": "m1", "tools": tools, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(plan(Api::OpenAi, other_model), None);
        let a_tools = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
        let a_ask = json!({"model": "tools", "tools": a_tools, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(plan(Api::Anthropic, a_ask), Some("lookup".into()));
        let a_answered = json!({"model": "tools", "tools": a_tools, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_emu_1", "content": "x"}]}]});
        assert_eq!(plan(Api::Anthropic, a_answered), None);
        assert_eq!(
            Plan::new(3, Api::Anthropic, &json!({}), &config, now).tool_call_id(),
            "toolu_emu_3"
        );
    }

    #[test]
    fn ollama_load_requests() {
        assert_eq!(
            ollama_load_reason(&json!({"model": "m"}), false),
            Some("load")
        );
        assert_eq!(
            ollama_load_reason(&json!({"prompt": "", "keep_alive": 0}), false),
            Some("unload")
        );
        assert_eq!(ollama_load_reason(&json!({"prompt": "hi"}), false), None);
        assert_eq!(
            ollama_load_reason(&json!({"messages": []}), true),
            Some("load")
        );
    }
}
