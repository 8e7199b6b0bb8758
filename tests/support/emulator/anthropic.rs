//! Anthropic Messages API (`/v1/messages`), JSON and SSE, per wire-formats §3.
//!
//! Stream: `message_start` (usage with `input_tokens`, the cache fields and a placeholder
//! `output_tokens: 1`), `content_block_start`, `ping` — all sent at once — then one
//! `content_block_delta` per token, `content_block_stop`, `message_delta` with the cumulative
//! `output_tokens`, `message_stop`. `input_tokens` excludes cache reads, as Anthropic counts them:
//! `input_tokens + cache_read_input_tokens` = the prompt tokens of [`super::plan`].

use hyper::Response;
use hyper::header::HeaderValue;

use super::openai::sse_response;
use super::stream::{StreamFormat, spawn_stream};
use super::{Ctx, Died, EmuBody, Plan, js, respond_complete};

pub async fn respond(plan: Plan, ctx: &Ctx) -> Result<Response<EmuBody>, Died> {
    let request_id = format!("req_emu_{}", plan.id);
    let mut response = if plan.stream {
        sse_response(spawn_stream(plan, Sse, ctx.stats.clone(), ctx.config.log))
    } else {
        let body = message(&plan);
        respond_complete(&plan, ctx, body).await?
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    Ok(response)
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.tool_call.is_some() {
        "tool_use"
    } else if plan.finish_length() {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn usage(plan: &Plan, output_tokens: u32) -> String {
    format!(
        "{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":{output_tokens},\"service_tier\":\"standard\"}}",
        plan.prompt_tokens - plan.cached_tokens,
        plan.cached_tokens
    )
}

fn msg_id(plan: &Plan) -> String {
    format!("msg_emu_{}", plan.id)
}

/// The non-streamed `Message`.
fn message(plan: &Plan) -> String {
    format!(
        "{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[{{\"type\":\"text\",\"text\":{}}}{}],\"stop_reason\":\"{}\",\"stop_sequence\":null,\"usage\":{}}}",
        msg_id(plan),
        js(&plan.model),
        js(&plan.output_text()),
        plan.tool_call
            .as_ref()
            .map_or(String::new(), |name| format!(",{}", tool_use(plan, name))),
        stop_reason(plan),
        usage(plan, plan.output_tokens)
    )
}

/// A `tool_use` content block (its input is always `{}`).
fn tool_use(plan: &Plan, name: &str) -> String {
    format!(
        "{{\"type\":\"tool_use\",\"id\":{},\"name\":{},\"input\":{{}}}}",
        js(&plan.tool_call_id()),
        js(name)
    )
}

/// One named SSE event; the event name equals the `type` in the data, as Anthropic sends them.
fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

struct Sse;

impl StreamFormat for Sse {
    fn preamble(&mut self, plan: &Plan) -> Vec<String> {
        let start = format!(
            "{{\"type\":\"message_start\",\"message\":{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{}}}}}",
            msg_id(plan),
            js(&plan.model),
            usage(plan, 1)
        );
        vec![
            event("message_start", &start),
            event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            event("ping", r#"{"type": "ping"}"#),
        ]
    }

    fn token(&mut self, _plan: &Plan, _index: u32, text: &str) -> String {
        event(
            "content_block_delta",
            &format!(
                "{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}",
                js(text)
            ),
        )
    }

    fn finish(&mut self, plan: &Plan) -> Vec<String> {
        let delta = format!(
            "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
            stop_reason(plan),
            plan.output_tokens
        );
        let mut events = vec![event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        )];
        if let Some(name) = &plan.tool_call {
            // As Anthropic streams a call: the block names it, input JSON arrives in deltas.
            let start = format!(
                "{{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{}}}",
                tool_use(plan, name)
            );
            events.push(event("content_block_start", &start));
            events.push(event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            ));
            events.push(event(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ));
        }
        events.push(event("message_delta", &delta));
        events.push(event("message_stop", r#"{"type":"message_stop"}"#));
        events
    }

    fn error_event(&mut self, _plan: &Plan) -> String {
        event(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    }
}

/// `{"type":"error","error":{"type","message"},"request_id"}` with Anthropic's type for `status`.
pub fn error_body(status: u16, message: &str) -> String {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":{}}},\"request_id\":\"req_emu_error\"}}",
        js(message)
    )
}
