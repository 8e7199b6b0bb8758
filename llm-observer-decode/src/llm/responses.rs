//! OpenAI Responses API `/v1/responses`, JSON and SSE.
//!
//! The stream has named events (`event: response.output_text.delta` + a `data` object whose `type`
//! repeats the name; the name is taken from `event:` and falls back to `type`):
//! - any `*.delta` event with a non-empty `delta` is content-bearing (output text, reasoning text
//!   and summaries, refusals, function-call arguments);
//! - `response.output_item.added` of a `function_call` (or custom / MCP tool call) item names a
//!   tool (and its `call_id`), and is content-bearing (the model started its output);
//! - usage is only in `response.completed` / `response.incomplete` / `response.failed`
//!   (`response.usage.input_tokens` / `output_tokens`);
//! - `finish_reason` is `incomplete_details.reason` when the response is incomplete, otherwise its
//!   `status` (`completed`), as the API has no finish reason of its own;
//! - `error` and `response.failed` are stream errors; any of the three terminal events, `error`, or a
//!   `[DONE]` sentinel (some compatible servers) completes the stream.

use serde::Deserialize;

use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native};
use super::errors::{ErrorFacts, classify_stream, classify_stream_body};
use super::json::{NonEmpty, Str, has};
use super::openai::Usage;
use super::{ApiDecoder, Request};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    /// What the request carrying the tool's output (`function_call_output`) quotes.
    #[serde(borrow)]
    call_id: Option<Str<'a>>,
    content: Option<NonEmpty>,
    summary: Option<NonEmpty>,
}

impl Item<'_> {
    fn tool_name(&self) -> Option<&str> {
        match self.kind.as_deref()? {
            "function_call" | "custom_tool_call" | "mcp_call" => self.name.as_deref(),
            _ => None,
        }
    }

    /// Records a tool-call item's name and call id; true when it was one.
    fn record_tool(&self, core: &mut Core) -> bool {
        let Some(tool) = self.tool_name() else {
            return false;
        };
        core.tool(tool);
        if let Some(id) = &self.call_id {
            core.tool_id(id, tool);
        }
        true
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Incomplete<'a> {
    #[serde(borrow)]
    reason: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Response<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    status: Option<Str<'a>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    incomplete_details: Option<Incomplete<'a>>,
    error: Option<NonEmpty>,
    #[serde(borrow)]
    output: Option<Vec<Item<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    delta: Option<NonEmpty>,
    #[serde(borrow)]
    response: Option<Response<'a>>,
    #[serde(borrow)]
    item: Option<Item<'a>>,
}

#[derive(Debug)]
pub(crate) struct Responses;

pub(crate) fn decoder(
    req: &Request<'_>,
    shape: &super::detect::Shape<'_>,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    let stream = shape.stream.unwrap_or(false);
    let mut core = Core::new(
        req,
        Api::Openai,
        Operation::Responses,
        shape.model.as_deref(),
        stream,
    );
    core.tool_results(req.body);
    Engine::boxed(core, Responses, limits)
}

/// Model, usage and finish reason of a `Response` object.
fn apply_response(core: &mut Core, r: &Response<'_>) {
    if let Some(m) = &r.model {
        core.response_model(m);
    }
    if let Some(u) = &r.usage {
        u.apply(core, false);
    }
    let reason = r
        .incomplete_details
        .as_ref()
        .and_then(|d| d.reason.as_deref())
        .or(r.status.as_deref());
    if let Some(reason) = reason {
        core.finish_reason(reason);
    }
}

impl Handler for Responses {
    const NATIVE: Native = Native::Sse;

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            core.terminal = true;
            return;
        }
        let Ok(e) = serde_json::from_slice::<Event<'_>>(data) else {
            errors.push(DecodeError::BadJson);
            return;
        };
        let name: &[u8] = if ev.event.is_empty() {
            e.kind.as_deref().unwrap_or("").as_bytes()
        } else {
            ev.event
        };
        match name {
            b"response.created" | b"response.in_progress" => {
                if let Some(m) = e.response.as_ref().and_then(|r| r.model.as_deref()) {
                    core.response_model(m);
                }
            }
            // The guard records the tool (name and call id) when the item is a tool call.
            b"response.output_item.added"
                if e.item.as_ref().is_some_and(|i| i.record_tool(core)) =>
            {
                core.content(ev.ts_ns);
            }
            b"response.completed" | b"response.incomplete" => {
                if let Some(r) = &e.response {
                    apply_response(core, r);
                }
                core.terminal = true;
            }
            b"response.failed" => {
                if let Some(r) = &e.response {
                    apply_response(core, r);
                }
                // The failure's cause is `response.error`; parse it as an error object.
                let facts = serde_json::from_slice::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v.get("response").and_then(ErrorFacts::from_value));
                core.fail(classify_stream(facts.as_ref()));
                core.terminal = true;
            }
            b"error" => {
                core.fail(classify_stream_body(data));
                core.terminal = true;
            }
            _ if name.ends_with(b".delta") && has(e.delta) => core.content(ev.ts_ns),
            _ => {}
        }
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        let Ok(r) = serde_json::from_slice::<Response<'_>>(body) else {
            errors.push(DecodeError::BadJson);
            return;
        };
        apply_response(core, &r);
        let mut content = false;
        for item in r.output.iter().flatten() {
            if item.record_tool(core) {
                content = true;
            }
            content |= has(item.content) || has(item.summary);
        }
        if content {
            core.content(ts_ns);
        }
        if has(r.error) {
            core.fail(classify_stream_body(body));
        }
        core.terminal = true;
    }
}
