//! OpenAI Chat Completions and legacy Completions, JSON and SSE, per wire-formats §2.
//!
//! Chat streams start with a role-only chunk (sent at once, before the first token is due), then one
//! content chunk per token, a finish chunk with an empty delta, the usage chunk (`choices: []`) only
//! when `stream_options.include_usage` is true — then every earlier chunk carries `"usage":null`, as
//! OpenAI does — and `data: [DONE]`. Legacy completion streams have no role chunk.

use hyper::Response;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use super::stream::{StreamFormat, spawn_stream};
use super::{Ctx, Died, EmuBody, Plan, js, respond_complete, unix_seconds};

pub async fn respond(plan: Plan, chat: bool, ctx: &Ctx) -> Result<Response<EmuBody>, Died> {
    let shape = Shape {
        chat,
        created: unix_seconds(),
    };
    if !plan.stream {
        let body = shape.complete(&plan);
        return respond_complete(&plan, ctx, body).await;
    }
    let body = spawn_stream(plan, shape, ctx.stats.clone(), ctx.config.log);
    Ok(sse_response(body))
}

/// A `text/event-stream` response around a streamed body.
pub fn sse_response(body: EmuBody) -> Response<EmuBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Which endpoint, and the `created` stamp shared by every chunk of one answer.
struct Shape {
    chat: bool,
    created: u64,
}

impl Shape {
    fn id(&self, plan: &Plan) -> String {
        if self.chat {
            format!("chatcmpl-emu-{}", plan.id)
        } else {
            format!("cmpl-emu-{}", plan.id)
        }
    }

    fn finish_reason(plan: &Plan) -> &'static str {
        if plan.tool_call.is_some() {
            "tool_calls"
        } else if plan.finish_length() {
            "length"
        } else {
            "stop"
        }
    }

    /// One `data:` event with the given `choices` array; `usage` is the raw JSON value to attach,
    /// or `None` to omit the field.
    fn chunk(&self, plan: &Plan, choices: &str, usage: Option<&str>) -> String {
        let (object, fingerprint) = if self.chat {
            (
                "chat.completion.chunk",
                ",\"system_fingerprint\":\"fp_emulator\"",
            )
        } else {
            ("text_completion", "")
        };
        let usage = usage.map(|u| format!(",\"usage\":{u}")).unwrap_or_default();
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":{}{fingerprint},\"choices\":{choices}{usage}}}\n\n",
            self.id(plan),
            self.created,
            js(&plan.model)
        )
    }

    /// `"usage":null` on every chunk but the usage chunk, only when usage was asked for.
    fn null_usage(plan: &Plan) -> Option<&'static str> {
        plan.include_usage.then_some("null")
    }

    fn choice(&self, content: Option<&str>, role: bool, finish: Option<&str>) -> String {
        let finish = finish.map_or("null".to_owned(), js);
        if self.chat {
            let mut delta = Vec::new();
            if role {
                delta.push("\"role\":\"assistant\"".to_owned());
            }
            if let Some(content) = content {
                delta.push(format!("\"content\":{}", js(content)));
            }
            format!(
                "[{{\"index\":0,\"delta\":{{{}}},\"logprobs\":null,\"finish_reason\":{finish}}}]",
                delta.join(",")
            )
        } else {
            format!(
                "[{{\"text\":{},\"index\":0,\"logprobs\":null,\"finish_reason\":{finish}}}]",
                js(content.unwrap_or(""))
            )
        }
    }

    /// The non-streamed answer.
    fn complete(&self, plan: &Plan) -> String {
        let text = plan.output_text();
        let reason = Self::finish_reason(plan);
        let (object, choices) = if self.chat {
            (
                "chat.completion",
                format!(
                    "[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{},\"refusal\":null{}}},\"logprobs\":null,\"finish_reason\":\"{reason}\"}}]",
                    js(&text),
                    tool_calls(plan)
                ),
            )
        } else {
            (
                "text_completion",
                format!(
                    "[{{\"text\":{},\"index\":0,\"logprobs\":null,\"finish_reason\":\"{reason}\"}}]",
                    js(&text)
                ),
            )
        };
        format!(
            "{{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":{choices},\"usage\":{}}}",
            self.id(plan),
            self.created,
            js(&plan.model),
            usage(plan)
        )
    }
}

/// `,"tool_calls":[…]` for a message whose answer asks for a call, else nothing.
fn tool_calls(plan: &Plan) -> String {
    plan.tool_call.as_ref().map_or(String::new(), |name| {
        format!(
            ",\"tool_calls\":[{{\"id\":{},\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":\"{{}}\"}}}}]",
            js(&plan.tool_call_id()),
            js(name)
        )
    })
}

/// The `usage` object: prompt tokens include the cached ones, as OpenAI counts them.
fn usage(plan: &Plan) -> String {
    format!(
        "{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{t},\
         \"prompt_tokens_details\":{{\"cached_tokens\":{cached},\"audio_tokens\":0}},\
         \"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\
         \"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        p = plan.prompt_tokens,
        c = plan.output_tokens,
        t = u64::from(plan.prompt_tokens) + u64::from(plan.output_tokens),
        cached = plan.cached_tokens
    )
}

impl StreamFormat for Shape {
    fn preamble(&mut self, plan: &Plan) -> Vec<String> {
        if !self.chat {
            return Vec::new();
        }
        vec![self.chunk(
            plan,
            &self.choice(Some(""), true, None),
            Self::null_usage(plan),
        )]
    }

    fn token(&mut self, plan: &Plan, _index: u32, text: &str) -> String {
        self.chunk(
            plan,
            &self.choice(Some(text), false, None),
            Self::null_usage(plan),
        )
    }

    fn finish(&mut self, plan: &Plan) -> Vec<String> {
        let mut events = Vec::new();
        if let (Some(name), true) = (&plan.tool_call, self.chat) {
            // As OpenAI streams a call: the first fragment names it, the next carry arguments.
            let first = format!(
                "[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":{},\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":\"\"}}}}]}},\"logprobs\":null,\"finish_reason\":null}}]",
                js(&plan.tool_call_id()),
                js(name)
            );
            let args = "[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"logprobs\":null,\"finish_reason\":null}]";
            events.push(self.chunk(plan, &first, Self::null_usage(plan)));
            events.push(self.chunk(plan, args, Self::null_usage(plan)));
        }
        let content = if self.chat { None } else { Some("") };
        let finish = self.choice(content, false, Some(Self::finish_reason(plan)));
        events.push(self.chunk(plan, &finish, Self::null_usage(plan)));
        if plan.include_usage {
            events.push(self.chunk(plan, "[]", Some(&usage(plan))));
        }
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    fn error_event(&mut self, _plan: &Plan) -> String {
        format!(
            "data: {}\n\n",
            error_body(
                500,
                "The server had an error while processing your request."
            )
        )
    }
}

/// `{"error":{"message","type","param","code"}}` with the type/code OpenAI uses for `status`.
pub fn error_body(status: u16, message: &str) -> String {
    let (kind, param, code) = match status {
        400 => (
            "invalid_request_error",
            "\"messages\"",
            "\"context_length_exceeded\"",
        ),
        401 => ("invalid_request_error", "null", "\"invalid_api_key\""),
        403 => (
            "invalid_request_error",
            "null",
            "\"unsupported_country_region_territory\"",
        ),
        404 => ("invalid_request_error", "\"model\"", "\"model_not_found\""),
        429 => ("requests", "null", "\"rate_limit_exceeded\""),
        503 => (
            "service_unavailable_error",
            "null",
            "\"server_is_overloaded\"",
        ),
        s if s >= 500 => ("server_error", "null", "null"),
        _ => ("invalid_request_error", "null", "null"),
    };
    format!(
        "{{\"error\":{{\"message\":{},\"type\":\"{kind}\",\"param\":{param},\"code\":{code}}}}}",
        js(message)
    )
}

/// `/v1/models`.
pub fn models() -> String {
    let model = |id: &str| {
        format!(
            "{{\"id\":{},\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"emulator\"}}",
            js(id)
        )
    };
    format!(
        "{{\"object\":\"list\",\"data\":[{},{}]}}",
        model("m1"),
        model("m2")
    )
}

/// A Batch API `batch` object (OpenAI's documented shape) in `status`.
pub fn batch(status: &str) -> String {
    format!(
        "{{\"id\":\"batch_emu1\",\"object\":\"batch\",\"endpoint\":\"/v1/chat/completions\",\
         \"errors\":null,\"input_file_id\":\"file-emu1\",\"completion_window\":\"24h\",\
         \"status\":{},\"output_file_id\":null,\"created_at\":1714508499,\
         \"request_counts\":{{\"total\":0,\"completed\":0,\"failed\":0}},\"metadata\":null}}",
        super::js(status)
    )
}

/// `GET /v1/batches`: an empty page.
pub fn batch_list() -> String {
    "{\"object\":\"list\",\"data\":[],\"first_id\":null,\"last_id\":null,\"has_more\":false}"
        .to_owned()
}
