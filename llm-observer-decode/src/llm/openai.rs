//! OpenAI-compatible `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` (OpenAI, vLLM,
//! SGLang, llama.cpp, llama-cpp-python, Ollama `/v1`, TGI `/v1`, LM Studio, …), JSON and SSE.
//!
//! Stream rules:
//! - the first chunk is usually role-only (`delta: {"role":"assistant","content":""}`): not content;
//!   content-bearing means a non-empty `content`, `reasoning_content` / `reasoning` / `thinking`,
//!   `refusal`, `tool_calls` or legacy `function_call` in some choice's delta (`text` for
//!   completions);
//! - `usage` arrives (if at all) in a chunk with empty `choices` before `data: [DONE]`, or in every
//!   chunk (vLLM continuous usage): the last one wins;
//! - without usage, llama.cpp's top-level `timings` on the last chunk are server-reported counts
//!   (`prompt_n + cache_n` prompt tokens, `predicted_n` completion tokens); otherwise the completion
//!   count is the number of content-bearing chunks (source Counted) and the prompt is Absent;
//! - tool names come from the first fragment of each tool-call `index`;
//! - `data: {"error":…}` after HTTP 200 is a stream error;
//! - the stream is complete at `[DONE]` or at a `finish_reason`.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::decoder::{DecodeError, Limits};
use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::{Count, NonEmpty, Str, count, has};
use super::{ApiDecoder, Request};

/// Which OpenAI-style endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Details {
    pub cached_tokens: Option<Count>,
    pub reasoning_tokens: Option<Count>,
}

/// Usage of Chat Completions (`prompt_tokens`…) and of the Responses API (`input_tokens`…).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Usage {
    pub prompt_tokens: Option<Count>,
    pub completion_tokens: Option<Count>,
    pub input_tokens: Option<Count>,
    pub output_tokens: Option<Count>,
    pub prompt_tokens_details: Option<Details>,
    pub completion_tokens_details: Option<Details>,
    pub input_tokens_details: Option<Details>,
    pub output_tokens_details: Option<Details>,
}

impl Usage {
    /// Writes the reported counts into `core` (replacing earlier ones: the last report wins).
    pub(crate) fn apply(&self, core: &mut Core, embeddings: bool) {
        let t = &mut core.tokens;
        t.prompt = reported(count(self.prompt_tokens).or(count(self.input_tokens)));
        if !embeddings {
            t.completion = reported(count(self.completion_tokens).or(count(self.output_tokens)));
        }
        let prompt_details = self
            .prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref());
        t.cached = reported(prompt_details.and_then(|d| count(d.cached_tokens)));
        let out_details = self
            .completion_tokens_details
            .as_ref()
            .or(self.output_tokens_details.as_ref());
        t.reasoning = reported(out_details.and_then(|d| count(d.reasoning_tokens)));
        core.usage_final = true;
    }
}

/// llama.cpp's `timings` (OpenAI-compatible endpoints add it as a top-level field; native
/// `/completion` has it on the final object).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LlamaTimings {
    pub prompt_n: Option<Count>,
    pub predicted_n: Option<Count>,
    pub cache_n: Option<Count>,
}

impl LlamaTimings {
    /// `prompt_n` counts only newly evaluated prompt tokens; the prompt is `prompt_n + cache_n`.
    pub(crate) fn apply(&self, core: &mut Core) {
        let cache = count(self.cache_n);
        let t = &mut core.tokens;
        t.prompt = reported(count(self.prompt_n).map(|p| p + cache.unwrap_or(0)));
        t.completion = reported(count(self.predicted_n));
        t.cached = reported(cache);
        core.usage_final = true;
    }
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
    index: Option<u64>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

/// A stream `delta` or a non-stream `message`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delta<'a> {
    content: Option<NonEmpty>,
    reasoning_content: Option<NonEmpty>,
    reasoning: Option<NonEmpty>,
    thinking: Option<NonEmpty>,
    refusal: Option<NonEmpty>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow)]
    function_call: Option<Function<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice<'a> {
    index: u64,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    message: Option<Delta<'a>>,
    text: Option<NonEmpty>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
}

/// `choices`, folded while parsing so no per-chunk `Vec` is built.
#[derive(Debug, Default)]
struct Choices<'a> {
    content: bool,
    finish_reason: Option<Str<'a>>,
    /// (choice index, tool index or position, name), only when a fragment names a tool.
    tools: Vec<(u64, u64, Str<'a>)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Choices<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a choices array")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Choices<'a>, E> {
                Ok(Choices::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'a>, A::Error> {
                let mut out = Choices::default();
                while let Some(c) = seq.next_element::<Choice<'de>>()? {
                    out.content |= has(c.text);
                    for d in [c.delta, c.message].into_iter().flatten() {
                        out.content |= has(d.content)
                            || has(d.reasoning_content)
                            || has(d.reasoning)
                            || has(d.thinking)
                            || has(d.refusal);
                        if let Some(calls) = d.tool_calls {
                            out.content |= !calls.is_empty();
                            for (pos, call) in calls.into_iter().enumerate() {
                                if let Some(name) = call.function.and_then(|f| f.name) {
                                    let idx = call.index.unwrap_or(pos as u64);
                                    out.tools.push((c.index, idx, name));
                                }
                            }
                        }
                        if let Some(name) = d.function_call.and_then(|f| f.name) {
                            out.content = true;
                            out.tools.push((c.index, u64::MAX, name));
                        }
                    }
                    if let Some(r) = c.finish_reason {
                        out.finish_reason = Some(r);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// One stream chunk or a whole non-stream body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    choices: Option<Choices<'a>>,
    usage: Option<Usage>,
    timings: Option<LlamaTimings>,
    error: Option<NonEmpty>,
    #[serde(borrow)]
    object: Option<Str<'a>>,
}

#[derive(Debug)]
pub(crate) struct OpenAi {
    endpoint: Endpoint,
    have_usage: bool,
    /// (choice, tool index) pairs already named, so a server repeating the name is counted once.
    seen_tools: Vec<(u64, u64)>,
}

pub(crate) fn decoder(
    req: &Request<'_>,
    endpoint: Endpoint,
    shape: &super::detect::Shape<'_>,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    let operation = match endpoint {
        Endpoint::Chat => Operation::Chat,
        Endpoint::Completions => Operation::TextCompletion,
        Endpoint::Embeddings => Operation::Embeddings,
    };
    let stream = endpoint != Endpoint::Embeddings && shape.stream.unwrap_or(false);
    let core = Core::new(req, Api::Openai, operation, shape.model.as_deref(), stream);
    let h = OpenAi {
        endpoint,
        have_usage: false,
        seen_tools: Vec::new(),
    };
    Engine::boxed(core, h, limits)
}

impl OpenAi {
    /// Interprets one chunk (`stream`) or body; false when it was not valid JSON.
    fn chunk(
        &mut self,
        core: &mut Core,
        data: &[u8],
        ts_ns: u64,
        stream: bool,
        errors: &mut Vec<DecodeError>,
    ) -> bool {
        let Ok(c) = serde_json::from_slice::<Chunk<'_>>(data) else {
            errors.push(DecodeError::BadJson);
            return false;
        };
        if has(c.error) || c.object.as_deref() == Some("error") {
            core.fail(classify_stream_body(data));
            core.terminal = true;
            return true;
        }
        if let Some(m) = &c.model {
            core.response_model(m);
        }
        let embeddings = self.endpoint == Endpoint::Embeddings;
        if let Some(u) = &c.usage {
            u.apply(core, embeddings);
            self.have_usage = true;
        } else if let (Some(t), false) = (&c.timings, self.have_usage) {
            t.apply(core);
        }
        if let Some(ch) = c.choices {
            for (choice, idx, name) in &ch.tools {
                let key = (*choice, *idx);
                if !stream || !self.seen_tools.contains(&key) {
                    if self.seen_tools.len() < 64 {
                        self.seen_tools.push(key);
                    }
                    core.tool(name);
                }
            }
            if ch.content {
                core.content(ts_ns);
            }
            if let Some(r) = &ch.finish_reason {
                core.finish_reason(r);
                core.terminal = true;
            }
        }
        true
    }
}

impl Handler for OpenAi {
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
        // Anything after [DONE] / the error is ignored by clients too.
        self.chunk(core, data, ev.ts_ns, true, errors);
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        if self.chunk(core, body, ts_ns, false, errors) {
            core.terminal = true;
        }
    }
}
