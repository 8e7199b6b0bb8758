//! Google Gemini `generateContent` / `streamGenerateContent` (the Gemini API,
//! `/v1beta/models/{model}:generateContent`, and Vertex AI,
//! `/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`).
//!
//! - The model is in the path, not the body; the response's `modelVersion` is the served model.
//! - Non-streamed: one `GenerateContentResponse`. Streamed with `?alt=sse`: SSE events
//!   `data: {GenerateContentResponse}` (no `[DONE]`); without it: a streamed JSON array of the same
//!   objects. Either way the chunk with a `finishReason` is the last; `usageMetadata` may be on every
//!   chunk (cumulative), the last one's is the total.
//! - Tokens: `promptTokenCount` (includes `cachedContentTokenCount`), `candidatesTokenCount` (the
//!   answer, without thinking), `thoughtsTokenCount`: completion = candidates + thoughts (the
//!   Exchange's completion includes reasoning), reasoning = thoughts, cached = cached content.
//! - Content: a chunk whose candidate has a non-empty text part or a function call; the function
//!   call's name is a tool call.
//! - Errors: `{"error":{"code","message","status"}}` with the HTTP status (classified from it).

use serde::Deserialize;

use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::json::{Count, NonEmpty, Str, count, has};
use super::{ApiDecoder, Request};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Part<'a> {
    text: Option<NonEmpty>,
    #[serde(borrow)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Content<'a> {
    #[serde(borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Usage {
    prompt_token_count: Option<Count>,
    candidates_token_count: Option<Count>,
    cached_content_token_count: Option<Count>,
    thoughts_token_count: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow)]
    candidates: Vec<Candidate<'a>>,
    usage_metadata: Option<Usage>,
    #[serde(borrow)]
    model_version: Option<Str<'a>>,
    error: Option<NonEmpty>,
}

/// The model and streaming flag named by a Gemini path, or `None` for any other path: the last
/// segment is `{model}:generateContent` or `{model}:streamGenerateContent` under `models/`.
pub(crate) fn endpoint(path: &str) -> Option<(&str, bool)> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let (model, method) = last.split_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    let parent = path.get(..path.len().checked_sub(last.len() + 1)?)?;
    (parent.ends_with("/models") && !model.is_empty()).then_some((model, stream))
}

pub(crate) fn decoder(
    req: &Request<'_>,
    model: &str,
    stream: bool,
    limits: &Limits,
) -> Box<dyn ApiDecoder> {
    let core = Core::new(req, Api::Gemini, Operation::Chat, Some(model), stream);
    Engine::boxed(core, Gemini, limits)
}

#[derive(Debug, Default)]
pub(crate) struct Gemini;

impl Gemini {
    /// One `GenerateContentResponse` (a stream event, an array element, or the whole body).
    fn chunk(core: &mut Core, data: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        let Ok(c) = serde_json::from_slice::<Chunk<'_>>(data) else {
            errors.push(DecodeError::BadJson);
            return;
        };
        if has(c.error) {
            core.fail(classify_stream_body(data));
            core.terminal = true;
            return;
        }
        if let Some(m) = &c.model_version {
            core.response_model(m);
        }
        let mut content = false;
        for cand in &c.candidates {
            for part in cand.content.iter().flat_map(|c| &c.parts) {
                content |= has(part.text);
                if let Some(name) = part.function_call.as_ref().and_then(|f| f.name.as_ref()) {
                    content = true;
                    core.tool(name);
                }
            }
            if let Some(r) = &cand.finish_reason {
                core.finish_reason(r);
                core.terminal = true;
            }
        }
        if content {
            core.content(ts_ns);
        }
        if let Some(u) = &c.usage_metadata {
            let prompt = count(u.prompt_token_count);
            let answer = count(u.candidates_token_count);
            let thoughts = count(u.thoughts_token_count);
            if prompt.is_some() {
                core.tokens.prompt = reported(prompt);
            }
            if answer.is_some() || thoughts.is_some() {
                let total = answer.unwrap_or(0) + thoughts.unwrap_or(0);
                core.tokens.completion = reported(Some(total));
                core.usage_final = true;
            }
            if let Some(t) = thoughts {
                core.tokens.reasoning = reported(Some(t));
            }
            if let Some(cached) = count(u.cached_content_token_count) {
                core.tokens.cached = reported(Some(cached));
            }
        }
    }
}

impl Handler for Gemini {
    const NATIVE: Native = Native::Sse;
    const ARRAY_STREAM: bool = true;

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        Self::chunk(core, ev.data, ev.ts_ns, errors);
    }

    fn on_line(&mut self, core: &mut Core, line: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        Self::chunk(core, line, ts_ns, errors);
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>) {
        Self::chunk(core, body, ts_ns, errors);
        // A whole body is the whole answer, finish reason or not.
        core.terminal = true;
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn paths() {
        assert_eq!(
            endpoint("/v1beta/models/gemini-2.0-flash:generateContent"),
            Some(("gemini-2.0-flash", false))
        );
        assert_eq!(
            endpoint("/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
            Some(("gemini-2.5-pro", true))
        );
        assert_eq!(
            endpoint(
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent"
            ),
            Some(("gemini-2.0-flash-001", true))
        );
        for p in [
            "/v1beta/models/gemini:countTokens",
            "/v1beta/models/:generateContent",
            "/v1beta/tunedModels/x:generateContent/extra",
            "/v1/chat/completions",
            ":generateContent",
        ] {
            assert_eq!(endpoint(p), None, "{p}");
        }
    }
}
