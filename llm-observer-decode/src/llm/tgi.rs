//! Hugging Face Text Generation Inference native API: `/generate` (JSON) and `/generate_stream`
//! (SSE written by axum as `data:{…}`, without the space).
//!
//! - A stream event carries one token (`token: {id, text, logprob, special}`): each non-special token
//!   is one content event. The last event has `generated_text` and
//!   `details: {finish_reason, generated_tokens, input_length}`; there is no `[DONE]`.
//! - `/generate` answers `{generated_text, details?}` (`details` only when asked for); its headers
//!   `x-generated-tokens` / `x-prompt-tokens` carry the counts either way. Body counts win.
//! - Errors: `{"error":"…","error_type":"…"}`, also as a stream event after HTTP 200.

use serde::Deserialize;

use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::{Count, NonEmpty, Str, count, has, trim_start};
use super::{ApiDecoder, Request, ResponseHead};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Token {
    special: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Details<'a> {
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
    generated_tokens: Option<Count>,
    input_length: Option<Count>,
}

/// A stream event or a `/generate` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    token: Option<Token>,
    generated_text: Option<NonEmpty>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    error: Option<NonEmpty>,
}

#[derive(Debug, Default)]
pub(crate) struct Tgi {
    header_prompt: Option<u64>,
    header_generated: Option<u64>,
}

pub(crate) fn decoder(
    req: &Request<'_>,
    stream: bool,
    shape: &super::detect::Shape<'_>,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    // TGI serves one model and the request does not name it (`model` is only on `/v1`).
    let core = Core::new(
        req,
        Api::Tgi,
        Operation::TextCompletion,
        shape.model.as_deref(),
        stream,
    );
    Engine::boxed(core, Tgi::default(), limits)
}

fn details(core: &mut Core, d: &Details<'_>) {
    if let Some(r) = &d.finish_reason {
        core.finish_reason(r);
    }
    core.tokens.completion = reported(count(d.generated_tokens));
    if let Some(p) = count(d.input_length) {
        core.tokens.prompt = reported(Some(p));
    }
    core.usage_final = true;
}

impl Handler for Tgi {
    const NATIVE: Native = Native::Sse;

    fn on_head(&mut self, _core: &mut Core, head: &ResponseHead<'_>) {
        let num = |name| {
            head.headers
                .get_str(name)
                .and_then(|v| v.parse::<u64>().ok())
        };
        self.header_prompt = num("x-prompt-tokens");
        self.header_generated = num("x-generated-tokens");
    }

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        let Ok(e) = serde_json::from_slice::<Event<'_>>(data) else {
            errors.push(DecodeError::BadJson);
            return;
        };
        if has(e.error) {
            core.fail(classify_stream_body(data));
            core.terminal = true;
            return;
        }
        if e.token.as_ref().is_some_and(|t| !t.special) {
            core.content(ev.ts_ns);
        }
        if let Some(d) = &e.details {
            details(core, d);
            core.terminal = true;
        } else if has(e.generated_text) {
            core.terminal = true;
        }
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        // The `/` compat route and `best_of` answer an array; the first element is the answer.
        let parsed = if trim_start(body).first() == Some(&b'[') {
            serde_json::from_slice::<Vec<Event<'_>>>(body)
                .ok()
                .and_then(|v| v.into_iter().next())
        } else {
            serde_json::from_slice::<Event<'_>>(body).ok()
        };
        let Some(e) = parsed else {
            errors.push(DecodeError::BadJson);
            return;
        };
        if has(e.error) {
            core.fail(classify_stream_body(body));
            core.terminal = true;
            return;
        }
        if has(e.generated_text) {
            core.content(ts_ns);
        }
        if let Some(d) = &e.details {
            details(core, d);
        }
        core.terminal = true;
    }

    fn finish(&mut self, core: &mut Core) {
        if core.tokens.completion.value.is_none() && self.header_generated.is_some() {
            core.tokens.completion = reported(self.header_generated);
            core.usage_final = true;
        }
        if core.tokens.prompt.value.is_none() {
            core.tokens.prompt = reported(self.header_prompt);
        }
    }
}
