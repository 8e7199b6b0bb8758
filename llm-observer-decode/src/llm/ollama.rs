//! Ollama native API: `/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`, `/api/pull`.
//!
//! Streams are NDJSON (`application/x-ndjson`), and `/api/generate`, `/api/chat` and `/api/pull`
//! stream **by default** (a missing `stream` field means true). A non-streamed reply is one object
//! of the same shape as the final line, so both go through [`Ollama::line`].
//!
//! Traps handled:
//! - every metrics field is `omitempty`: a missing `prompt_eval_count` / `eval_count` is unknown
//!   (Absent), never 0;
//! - `done_reason: "load"` / `"unload"` replies (empty prompt, `keep_alive: 0`) are model load /
//!   unload operations, not generations;
//! - after output has started an error arrives as a `{"error":"…"}` line with status 200;
//! - tool calls arrive whole inside one line (`message.tool_calls[].function.name`).

use serde::Deserialize;

use crate::decoder::{DecodeError, Limits};
use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::{Count, NonEmpty, Str, count, has};
use super::{ApiDecoder, Request};

/// Which Ollama endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Generate,
    Chat,
    Embed,
    Embeddings,
    Pull,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolCall<'a> {
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message<'a> {
    content: Option<NonEmpty>,
    thinking: Option<NonEmpty>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

/// One NDJSON line, or a whole non-streamed reply.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Line<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    response: Option<NonEmpty>,
    thinking: Option<NonEmpty>,
    #[serde(borrow)]
    message: Option<Message<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    done: bool,
    #[serde(borrow)]
    done_reason: Option<Str<'a>>,
    load_duration: Option<Count>,
    prompt_eval_count: Option<Count>,
    eval_count: Option<Count>,
    error: Option<NonEmpty>,
    embeddings: Option<NonEmpty>,
    embedding: Option<NonEmpty>,
    #[serde(borrow)]
    status: Option<Str<'a>>,
}

#[derive(Debug)]
pub(crate) struct Ollama {
    endpoint: Endpoint,
}

/// Builds the decoder for a recognised Ollama request.
pub(crate) fn decoder(
    req: &Request<'_>,
    endpoint: Endpoint,
    shape: &super::detect::Shape<'_>,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    let model = shape.model.as_deref().or(shape.name.as_deref());
    // generate / chat / pull stream unless told not to; the embedding endpoints never stream.
    let stream = match endpoint {
        Endpoint::Generate | Endpoint::Chat | Endpoint::Pull => shape.stream.unwrap_or(true),
        Endpoint::Embed | Endpoint::Embeddings => false,
    };
    let operation = match endpoint {
        Endpoint::Generate | Endpoint::Chat => {
            // An empty prompt (generate) or empty `messages` (chat) only loads the model, or with
            // `keep_alive: 0` unloads it.
            let empty = match endpoint {
                Endpoint::Generate => !has(shape.prompt) && !has(shape.images),
                _ => !has(shape.messages),
            };
            match (empty, shape.keep_alive_zero) {
                (true, true) => Operation::ModelUnload,
                (true, false) => Operation::ModelLoad,
                _ if endpoint == Endpoint::Chat => Operation::Chat,
                _ => Operation::TextCompletion,
            }
        }
        Endpoint::Embed | Endpoint::Embeddings => Operation::Embeddings,
        Endpoint::Pull => Operation::ModelPull,
    };
    let core = Core::new(req, Api::Ollama, operation, model, stream);
    Engine::boxed(core, Ollama { endpoint }, limits)
}

impl Ollama {
    /// Interprets one line; false when it was not valid JSON.
    fn line(
        &mut self,
        core: &mut Core,
        bytes: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
    ) -> bool {
        let Ok(line) = serde_json::from_slice::<Line<'_>>(bytes) else {
            errors.push(DecodeError::BadJson);
            return false;
        };
        if has(line.error) {
            core.fail(classify_stream_body(bytes));
            core.terminal = true;
            return true;
        }
        if let Some(m) = &line.model {
            core.response_model(m);
        }
        let mut content = has(line.response) || has(line.thinking);
        if let Some(msg) = &line.message {
            content |= has(msg.content) || has(msg.thinking);
            content |= add_tools(core, msg.tool_calls.as_deref());
        }
        content |= add_tools(core, line.tool_calls.as_deref());
        if content {
            core.content(ts_ns);
        }
        match self.endpoint {
            Endpoint::Pull => {
                if line.status.as_deref() == Some("success") {
                    core.terminal = true;
                }
            }
            Endpoint::Embed | Endpoint::Embeddings => {
                if has(line.embeddings) || has(line.embedding) {
                    core.terminal = true;
                }
                core.tokens.prompt = reported(count(line.prompt_eval_count));
                core.load_duration_ns = count(line.load_duration);
                core.usage_final = true;
            }
            Endpoint::Generate | Endpoint::Chat => {
                if line.done {
                    core.terminal = true;
                    core.usage_final = true;
                    if let Some(reason) = &line.done_reason {
                        core.finish_reason(reason);
                        match reason.as_ref() {
                            "load" => core.operation = Operation::ModelLoad,
                            "unload" => core.operation = Operation::ModelUnload,
                            _ => {}
                        }
                    }
                    core.load_duration_ns = count(line.load_duration);
                    core.tokens.prompt = reported(count(line.prompt_eval_count));
                    core.tokens.completion = reported(count(line.eval_count));
                }
            }
        }
        true
    }
}

/// Records tool names; true when there was at least one call.
fn add_tools(core: &mut Core, calls: Option<&[ToolCall<'_>]>) -> bool {
    let Some(calls) = calls else {
        return false;
    };
    for call in calls {
        if let Some(name) = call.function.as_ref().and_then(|f| f.name.as_deref()) {
            core.tool(name);
        }
    }
    !calls.is_empty()
}

impl Handler for Ollama {
    const NATIVE: Native = Native::Ndjson;

    fn on_line(&mut self, core: &mut Core, line: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        self.line(core, line, ts_ns, errors);
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        // A whole reply that parsed is complete, `done` or not.
        if self.line(core, body, ts_ns, errors) {
            core.terminal = true;
        }
    }

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        // Not Ollama's framing, but a proxy might re-frame it: treat each event as a line.
        self.line(core, ev.data, ev.ts_ns, errors);
    }
}
