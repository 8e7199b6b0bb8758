//! Anthropic Messages API `/v1/messages` (Anthropic, and the compatible endpoints of Ollama,
//! llama.cpp, vLLM), JSON and SSE.
//!
//! Token normalisation: Anthropic's `input_tokens` excludes cached tokens, so
//! prompt = `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` and
//! cached = `cache_read_input_tokens`.
//!
//! Stream rules:
//! - `message_start.message.usage` has the input and cache counts; its `output_tokens` is a
//!   placeholder (0 or 1) and is not used;
//! - `message_delta.usage` is cumulative: the last one wins, for output and (when present) input
//!   and cache counts; without any `message_delta` the output is counted from content events;
//! - content-bearing: a `content_block_delta` with non-empty text / thinking / tool-input JSON, or a
//!   `content_block_start` of a tool-use block (which also names the tool) or with non-empty text;
//! - `ping` is never content (and never the TTFT marker);
//! - `event: error` after HTTP 200: `overloaded_error` → Overloaded, `rate_limit_error` →
//!   RateLimited, anything else → StreamError;
//! - `message_stop` (or `error`) completes the stream; `stop_reason` → `finish_reason`.

use serde::Deserialize;

use crate::exchange::{Api, Operation, TokenCount};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::{Count, NonEmpty, Str, count, has};
use super::{ApiDecoder, Request};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Usage {
    input_tokens: Option<Count>,
    output_tokens: Option<Count>,
    cache_creation_input_tokens: Option<Count>,
    cache_read_input_tokens: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    /// `tool_use.id`: what the `tool_result` of the next request quotes.
    #[serde(borrow)]
    id: Option<Str<'a>>,
    text: Option<NonEmpty>,
    thinking: Option<NonEmpty>,
    partial_json: Option<NonEmpty>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
}

impl Block<'_> {
    fn tool_name(&self) -> Option<&str> {
        match self.kind.as_deref()? {
            "tool_use" | "server_tool_use" | "mcp_tool_use" => self.name.as_deref(),
            _ => None,
        }
    }

    /// Records a tool-use block's name and id.
    fn record_tool(&self, core: &mut Core) -> bool {
        let Some(tool) = self.tool_name() else {
            return false;
        };
        core.tool(tool);
        if let Some(id) = &self.id {
            core.tool_id(id, tool);
        }
        true
    }

    fn has_output(&self) -> bool {
        has(self.text) || has(self.thinking) || has(self.partial_json)
    }
}

/// A `Message` (non-stream body, or `message_start.message`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    content: Option<Vec<Block<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Message<'a>>,
    #[serde(borrow)]
    content_block: Option<Block<'a>>,
    #[serde(borrow)]
    delta: Option<Block<'a>>,
    usage: Option<Usage>,
}

/// Usage as reported so far (cumulative fields overwrite).
#[derive(Debug, Default)]
pub(crate) struct Anthropic {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

pub(crate) fn decoder(
    req: &Request<'_>,
    shape: &super::detect::Shape<'_>,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    let stream = shape.stream.unwrap_or(false);
    let mut core = Core::new(
        req,
        Api::Anthropic,
        Operation::Chat,
        shape.model.as_deref(),
        stream,
    );
    core.params.max_tokens = shape.max_tokens();
    core.params.temperature = shape.temperature();
    core.tool_results(req.body);
    Engine::boxed(core, Anthropic::default(), limits)
}

impl Anthropic {
    /// Merges a usage object; `output` only from final / cumulative reports.
    fn usage(&mut self, u: &Usage, with_output: bool) {
        if let Some(v) = count(u.input_tokens) {
            self.input = Some(v);
        }
        if let Some(v) = count(u.cache_creation_input_tokens) {
            self.cache_creation = Some(v);
        }
        if let Some(v) = count(u.cache_read_input_tokens) {
            self.cache_read = Some(v);
        }
        if with_output && let Some(v) = count(u.output_tokens) {
            self.output = Some(v);
        }
    }
}

impl Handler for Anthropic {
    const NATIVE: Native = Native::Sse;

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        if ev.event == b"ping" || ev.data.trim_ascii().is_empty() {
            return;
        }
        let Ok(e) = serde_json::from_slice::<Event<'_>>(ev.data) else {
            errors.push(DecodeError::BadJson);
            return;
        };
        let name: &[u8] = if ev.event.is_empty() {
            e.kind.as_deref().unwrap_or("").as_bytes()
        } else {
            ev.event
        };
        match name {
            b"message_start" => {
                if let Some(m) = &e.message {
                    if let Some(model) = &m.model {
                        core.response_model(model);
                    }
                    if let Some(u) = &m.usage {
                        self.usage(u, false);
                    }
                }
            }
            b"content_block_start" => {
                if let Some(b) = &e.content_block {
                    // A tool-use block is output even before its input arrives.
                    let tool = b.record_tool(core);
                    if tool || b.has_output() {
                        core.content(ev.ts_ns);
                    }
                }
            }
            b"content_block_delta" if e.delta.as_ref().is_some_and(Block::has_output) => {
                core.content(ev.ts_ns);
            }
            b"message_delta" => {
                if let Some(r) = e.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    core.finish_reason(r);
                }
                if let Some(u) = &e.usage {
                    self.usage(u, true);
                    core.usage_final = true;
                }
            }
            b"message_stop" => core.terminal = true,
            b"error" => {
                core.fail(classify_stream_body(ev.data));
                core.terminal = true;
            }
            _ => {}
        }
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        let Ok(m) = serde_json::from_slice::<Message<'_>>(body) else {
            errors.push(DecodeError::BadJson);
            return;
        };
        if let Some(model) = &m.model {
            core.response_model(model);
        }
        if let Some(r) = &m.stop_reason {
            core.finish_reason(r);
        }
        if let Some(u) = &m.usage {
            self.usage(u, true);
            core.usage_final = true;
        }
        let mut content = false;
        for b in m.content.iter().flatten() {
            if b.record_tool(core) {
                content = true;
            }
            content |= b.has_output();
        }
        if content {
            core.content(ts_ns);
        }
        core.terminal = true;
    }

    fn finish(&mut self, core: &mut Core) {
        let t = &mut core.tokens;
        t.prompt = reported(
            self.input
                .map(|i| i + self.cache_creation.unwrap_or(0) + self.cache_read.unwrap_or(0)),
        );
        t.cached = reported(self.cache_read);
        core.cache_write_tokens = reported(self.cache_creation);
        t.completion = match self.output {
            Some(v) => TokenCount::reported(v),
            None => TokenCount::ABSENT,
        };
    }
}
