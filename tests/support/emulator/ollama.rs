//! Ollama's native API (`/api/generate`, `/api/chat`, `/api/tags`), per wire-formats §1.
//!
//! Streams are NDJSON (`application/x-ndjson`), one object per line; as with Go's net/http, the
//! response head goes out with the first token, not before. The final object carries the metrics:
//! `prompt_eval_count` = prompt tokens, `eval_count` = output tokens, `load_duration` = the configured
//! load time, `prompt_eval_duration` = TTFT, `eval_duration` = interval × (output tokens − 1),
//! `total_duration` = their sum; every duration in ns, and (as Ollama's `omitempty`) a zero is absent.

use std::time::Duration;

use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::stream::{StreamFormat, spawn_stream};
use super::{Ctx, Died, EmuBody, Plan, js, respond_complete, rfc3339_now};

pub async fn respond(plan: Plan, chat: bool, ctx: &Ctx) -> Result<Response<EmuBody>, Died> {
    if !plan.stream {
        let body = final_object(&plan, chat, &plan.output_text(), ctx.config.load_duration);
        return respond_complete(&plan, ctx, body).await;
    }
    // Go writes the head with the first body write, so the head is as late as the first token.
    tokio::time::sleep_until(plan.token_due(0)).await;
    let format = Ndjson {
        chat,
        load: ctx.config.load_duration,
    };
    let body = spawn_stream(plan, format, ctx.stats.clone(), ctx.config.log);
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

struct Ndjson {
    chat: bool,
    load: Duration,
}

impl StreamFormat for Ndjson {
    fn preamble(&mut self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }

    fn token(&mut self, plan: &Plan, _index: u32, text: &str) -> String {
        format!(
            "{{\"model\":{},\"created_at\":{},{},\"done\":false}}\n",
            js(&plan.model),
            js(&rfc3339_now()),
            content_field(self.chat, text)
        )
    }

    fn finish(&mut self, plan: &Plan) -> Vec<String> {
        vec![format!(
            "{}\n",
            final_object(plan, self.chat, "", self.load)
        )]
    }

    fn error_event(&mut self, _plan: &Plan) -> String {
        format!(
            "{}\n",
            error_body("an error was encountered while running the model: emulated failure")
        )
    }
}

/// `"response":…` for generate, `"message":{…}` for chat.
fn content_field(chat: bool, text: &str) -> String {
    if chat {
        format!(
            "\"message\":{{\"role\":\"assistant\",\"content\":{}}}",
            js(text)
        )
    } else {
        format!("\"response\":{}", js(text))
    }
}

/// The `done: true` object: the whole answer without streaming, the last line with it.
fn final_object(plan: &Plan, chat: bool, text: &str, load: Duration) -> String {
    let eval = plan.interval * plan.output_tokens.saturating_sub(1);
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let metrics = [
        ("total_duration", nanos(load + plan.ttft + eval)),
        ("load_duration", nanos(load)),
        ("prompt_eval_count", u64::from(plan.prompt_tokens)),
        ("prompt_eval_duration", nanos(plan.ttft)),
        ("eval_count", u64::from(plan.output_tokens)),
        ("eval_duration", nanos(eval)),
    ];
    let metrics: String = metrics
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!(",\"{k}\":{v}"))
        .collect();
    let reason = if plan.finish_length() {
        "length"
    } else {
        "stop"
    };
    format!(
        "{{\"model\":{},\"created_at\":{},{},\"done\":true,\"done_reason\":\"{reason}\"{metrics}}}",
        js(&plan.model),
        js(&rfc3339_now()),
        content_field(chat, text)
    )
}

/// The single reply to an empty prompt / no messages: the model was (un)loaded, no metrics.
pub fn load_reply(plan: &Plan, chat: bool, reason: &str) -> String {
    format!(
        "{{\"model\":{},\"created_at\":{},{},\"done\":true,\"done_reason\":{}}}",
        js(&plan.model),
        js(&rfc3339_now()),
        content_field(chat, ""),
        js(reason)
    )
}

/// `{"error":"…"}`, the body of every Ollama error (before output) and the in-stream error line.
pub fn error_body(message: &str) -> String {
    format!("{{\"error\":{}}}", js(message))
}

/// `/api/tags`: a fixed list, enough for clients that look a model up first.
/// What `/api/ps` reports for every loaded model (Ollama's documented shape): fixed figures, so
/// a test can predict the inventory series exactly.
pub const PS_SIZE: u64 = 2_000_000_000;
pub const PS_SIZE_VRAM: u64 = 1_500_000_000;
pub const PS_CONTEXT_LENGTH: u64 = 4096;
/// `2030-01-01T00:00:00Z`.
pub const PS_EXPIRES_UNIX: u64 = 1_893_456_000;

/// `/api/ps`: the models asked for so far, as loaded.
pub fn ps(loaded: &std::collections::BTreeSet<String>) -> String {
    let models: Vec<String> = loaded
        .iter()
        .map(|name| {
            format!(
                "{{\"name\":{n},\"model\":{n},\"size\":{PS_SIZE},\
                 \"digest\":\"0000000000000000000000000000000000000000000000000000000000000000\",\
                 \"details\":{{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"emulator\",\
                 \"families\":[\"emulator\"],\"parameter_size\":\"1M\",\"quantization_level\":\"Q4_0\"}},\
                 \"expires_at\":\"2030-01-01T00:00:00Z\",\"size_vram\":{PS_SIZE_VRAM},\
                 \"context_length\":{PS_CONTEXT_LENGTH}}}",
                n = js(name)
            )
        })
        .collect();
    format!("{{\"models\":[{}]}}", models.join(","))
}

pub fn tags() -> String {
    let model = |name: &str| {
        format!(
            "{{\"name\":{n},\"model\":{n},\"modified_at\":\"2024-01-01T00:00:00Z\",\"size\":1000000,\
             \"digest\":\"0000000000000000000000000000000000000000000000000000000000000000\",\
             \"details\":{{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"emulator\",\
             \"families\":[\"emulator\"],\"parameter_size\":\"1M\",\"quantization_level\":\"Q4_0\"}}}}",
            n = js(name)
        )
    };
    format!(
        "{{\"models\":[{},{}]}}",
        model("m1:latest"),
        model("m2:latest")
    )
}
