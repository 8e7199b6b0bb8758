//! llama.cpp `llama-server` native `/completion`, SSE (`stream: true`) or JSON.
//!
//! Stream events carry `content` (and `tokens` when asked for) with `stop: false`; the final object
//! has `stop: true`, `stop_type` (`none|eos|limit|word`, used as the finish reason), `model` and
//! `timings` (`prompt_n` newly evaluated prompt tokens, `cache_n` reused ones, `predicted_n`
//! generated ones). A non-streamed reply is that final object with the whole `content`.
//! Errors use the OpenAI shape `{"error":{"code","message","type"}}`, in the stream too.

use serde::Deserialize;

use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::{Count, NonEmpty, Str, count, has};
use super::openai::LlamaTimings;
use super::{ApiDecoder, Request};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    content: Option<NonEmpty>,
    tokens: Option<NonEmpty>,
    stop: bool,
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    stop_type: Option<Str<'a>>,
    timings: Option<LlamaTimings>,
    tokens_evaluated: Option<Count>,
    tokens_predicted: Option<Count>,
    error: Option<NonEmpty>,
}

#[derive(Debug)]
pub(crate) struct Llamacpp;

pub(crate) fn decoder(
    req: &Request<'_>,
    shape: &super::detect::Shape<'_>,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    let stream = shape.stream.unwrap_or(false);
    let core = Core::new(
        req,
        Api::Llamacpp,
        Operation::TextCompletion,
        shape.model.as_deref(),
        stream,
    );
    Engine::boxed(core, Llamacpp, limits)
}

impl Llamacpp {
    /// Interprets one event or body; false when it was not valid JSON.
    fn event(
        &mut self,
        core: &mut Core,
        data: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
    ) -> bool {
        let Ok(e) = serde_json::from_slice::<Event<'_>>(data) else {
            errors.push(DecodeError::BadJson);
            return false;
        };
        if has(e.error) {
            core.fail(classify_stream_body(data));
            core.terminal = true;
            return true;
        }
        if has(e.content) || has(e.tokens) {
            core.content(ts_ns);
        }
        if e.stop {
            core.terminal = true;
            if let Some(m) = &e.model {
                core.response_model(m);
            }
            if let Some(r) = &e.stop_type {
                core.finish_reason(r);
            }
            if let Some(t) = &e.timings {
                t.apply(core);
            } else if e.tokens_predicted.is_some() {
                core.tokens.prompt = reported(count(e.tokens_evaluated));
                core.tokens.completion = reported(count(e.tokens_predicted));
                core.usage_final = true;
            }
        }
        true
    }
}

impl Handler for Llamacpp {
    const NATIVE: Native = Native::Sse;

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        let data = ev.data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        self.event(core, data, ev.ts_ns, errors);
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        // A complete reply is whole, `stop` or not (older servers).
        if self.event(core, body, ts_ns, errors) {
            core.terminal = true;
        }
    }
}
