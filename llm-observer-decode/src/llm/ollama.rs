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

use std::borrow::Cow;

use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::has;
use super::skim::{R, Skim};
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

/// What one NDJSON line (or a whole non-streamed reply) says.
#[derive(Debug, Default)]
struct Line<'a> {
    model: Option<Cow<'a, str>>,
    /// `response`, `thinking`, `message.content` / `thinking`, or a tool call carried output.
    content: bool,
    tools: Vec<Cow<'a, str>>,
    done: bool,
    done_reason: Option<Cow<'a, str>>,
    load_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    error: bool,
    /// `embeddings` / `embedding` present and non-empty.
    embedded: bool,
    status: Option<Cow<'a, str>>,
}

/// `tool_calls: [{function: {name, arguments}}]` → names; true when there was a call.
fn skim_tools<'a>(s: &mut Skim<'a>, tools: &mut Vec<Cow<'a, str>>) -> R<bool> {
    let n = s.array(|s, _| {
        s.object(|s, k| {
            match k {
                b"function" => {
                    s.object_or_null(|s, k| {
                        match k {
                            b"name" => {
                                if let Some(name) = s.str()? {
                                    tools.push(name);
                                }
                            }
                            _ => s.skip()?,
                        }
                        Ok(())
                    })?;
                }
                _ => s.skip()?,
            }
            Ok(())
        })
    })?;
    Ok(n > 0)
}

/// `want_model`: read `model` (it repeats on every line; once known it is skipped).
/// Fills `l` in place (returning the struct would cost a memmove per line).
fn skim_line<'a>(data: &'a [u8], want_model: bool, l: &mut Line<'a>) -> R<()> {
    Skim::document(data, |s| {
        s.object(|s, k| {
            match k {
                b"model" if want_model => l.model = s.str()?,
                b"response" | b"thinking" => l.content |= s.nonempty()?,
                b"message" => {
                    s.object_or_null(|s, k| {
                        match k {
                            b"content" | b"thinking" => l.content |= s.nonempty()?,
                            b"tool_calls" => l.content |= skim_tools(s, &mut l.tools)?,
                            _ => s.skip()?,
                        }
                        Ok(())
                    })?;
                }
                b"tool_calls" => l.content |= skim_tools(s, &mut l.tools)?,
                b"done" => l.done = s.bool()? == Some(true),
                b"done_reason" => l.done_reason = s.str()?,
                b"load_duration" => l.load_duration = s.count()?,
                b"prompt_eval_count" => l.prompt_eval_count = s.count()?,
                b"eval_count" => l.eval_count = s.count()?,
                b"error" => l.error |= s.nonempty()?,
                b"embeddings" | b"embedding" => l.embedded |= s.nonempty()?,
                b"status" => l.status = s.str()?,
                _ => s.skip()?,
            }
            Ok(())
        })
    })
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
                Endpoint::Generate => {
                    !shape.prompt.is_some_and(|p| p.non_empty) && !has(shape.images)
                }
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
        let mut line = Line::default();
        if skim_line(bytes, core.response_model.is_none(), &mut line).is_err() {
            errors.push(DecodeError::BadJson);
            return false;
        }
        if line.error {
            core.fail(classify_stream_body(bytes));
            core.terminal = true;
            return true;
        }
        if let Some(m) = &line.model {
            core.response_model(m);
        }
        for name in &line.tools {
            core.tool(name);
        }
        if line.content {
            core.content(ts_ns);
        }
        match self.endpoint {
            Endpoint::Pull => {
                if line.status.as_deref() == Some("success") {
                    core.terminal = true;
                }
            }
            Endpoint::Embed | Endpoint::Embeddings => {
                if line.embedded {
                    core.terminal = true;
                }
                core.tokens.prompt = reported(line.prompt_eval_count);
                core.load_duration_ns = line.load_duration;
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
                    core.load_duration_ns = line.load_duration;
                    core.tokens.prompt = reported(line.prompt_eval_count);
                    core.tokens.completion = reported(line.eval_count);
                }
            }
        }
        true
    }
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
