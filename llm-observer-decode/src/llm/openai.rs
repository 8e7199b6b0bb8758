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
//! - tool names (and ids) come from the first fragment of each tool-call `index`;
//! - `data: {"error":…}` after HTTP 200 is a stream error;
//! - the stream is complete at `[DONE]` or at a `finish_reason`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::exchange::{Api, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, Native, reported};
use super::errors::classify_stream_body;
use super::fingerprint::{self, Evidence};
use super::json::{Count, count};
use super::skim::{R, Skim};
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

impl Usage {
    /// Reads a usage object with the hot-path walker (cursor at the value; `null` → `None`).
    fn skim(s: &mut Skim<'_>) -> R<Option<Usage>> {
        let mut u = Usage::default();
        let details = |s: &mut Skim<'_>| -> R<Option<Details>> {
            let mut d = Details::default();
            let present = s.object_or_null(|s, k| {
                match k {
                    b"cached_tokens" => d.cached_tokens = Some(Count(s.count()?)),
                    b"reasoning_tokens" => d.reasoning_tokens = Some(Count(s.count()?)),
                    _ => s.skip()?,
                }
                Ok(())
            })?;
            Ok(present.then_some(d))
        };
        let present = s.object_or_null(|s, k| {
            match k {
                b"prompt_tokens" => u.prompt_tokens = Some(Count(s.count()?)),
                b"completion_tokens" => u.completion_tokens = Some(Count(s.count()?)),
                b"prompt_tokens_details" => u.prompt_tokens_details = details(s)?,
                b"completion_tokens_details" => u.completion_tokens_details = details(s)?,
                _ => s.skip()?,
            }
            Ok(())
        })?;
        Ok(present.then_some(u))
    }
}

impl LlamaTimings {
    fn skim(s: &mut Skim<'_>) -> R<Option<LlamaTimings>> {
        let mut t = LlamaTimings::default();
        let present = s.object_or_null(|s, k| {
            match k {
                b"prompt_n" => t.prompt_n = Some(Count(s.count()?)),
                b"predicted_n" => t.predicted_n = Some(Count(s.count()?)),
                b"cache_n" => t.cache_n = Some(Count(s.count()?)),
                _ => s.skip()?,
            }
            Ok(())
        })?;
        Ok(present.then_some(t))
    }
}

/// (choice index, tool index or position, name, id) of a fragment that names a tool.
type ToolFragment<'a> = (u64, u64, Cow<'a, str>, Option<Cow<'a, str>>);

/// What one chunk (or non-stream body) says.
#[derive(Debug, Default)]
struct Chunk<'a> {
    model: Option<Cow<'a, str>>,
    /// Some choice's delta / message carried output.
    content: bool,
    finish_reason: Option<Cow<'a, str>>,
    tools: Vec<ToolFragment<'a>>,
    /// Boxed: rare (one chunk per stream), and large to move around.
    usage: Option<Box<Usage>>,
    timings: Option<Box<LlamaTimings>>,
    /// `error` member, or the flat `"object":"error"` shape.
    error: bool,
    /// Server fingerprint of `id` / `system_fingerprint` (read only while wanted).
    server: Option<Evidence>,
    /// A non-empty `id` or `system_fingerprint` was read.
    ids_seen: bool,
    /// Where the leading identifying members end (just past the last one's value; 0: none).
    prefix_end: usize,
    /// A member that is not one of them was seen.
    prefix_closed: bool,
}

/// A stream `delta` or a non-stream `message`: content-bearing fields and tool names.
fn skim_delta<'a>(s: &mut Skim<'a>, choice: u64, c: &mut Chunk<'a>) -> R<()> {
    s.object_or_null(|s, k| {
        match k {
            b"content" | b"reasoning_content" | b"reasoning" | b"thinking" | b"refusal" => {
                c.content |= s.nonempty()?;
            }
            b"tool_calls" => {
                let n = s.array(|s, pos| {
                    let mut index = pos as u64;
                    let mut name = None;
                    let mut id = None;
                    s.object(|s, k| {
                        match k {
                            b"index" => index = s.count()?.unwrap_or(index),
                            b"id" => id = s.str()?,
                            b"function" => {
                                s.object_or_null(|s, k| {
                                    match k {
                                        b"name" => name = s.str()?,
                                        _ => s.skip()?,
                                    }
                                    Ok(())
                                })?;
                            }
                            _ => s.skip()?,
                        }
                        Ok(())
                    })?;
                    if let Some(name) = name {
                        c.tools.push((choice, index, name, id));
                    }
                    Ok(())
                })?;
                c.content |= n > 0;
            }
            b"function_call" => {
                s.object_or_null(|s, k| {
                    match k {
                        b"name" => {
                            if let Some(name) = s.str()? {
                                c.content = true;
                                c.tools.push((choice, u64::MAX, name, None));
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
    .map(drop)
}

/// What [`skim_chunk`] reads besides what every chunk needs.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    /// `model` (it repeats in every chunk; once known it is skipped).
    model: bool,
    /// The fingerprint fields `id` and `system_fingerprint`: they repeat in every chunk too, so
    /// they are read from the first chunk that has them only.
    ids: bool,
    /// The server is not known from its body yet (llama.cpp's `timings` tell it).
    server: bool,
}

/// Fills `c` in place (returning the struct would cost a memmove per chunk). `resume`: where the
/// walk starts instead (see [`Prefix`]).
fn skim_chunk<'a>(data: &'a [u8], want: Wanted, resume: Option<usize>, c: &mut Chunk<'a>) -> R<()> {
    let Wanted {
        model: want_model,
        ids: want_ids,
        server: want_server,
    } = want;
    // A resumed walk has passed its prefix already.
    c.prefix_closed = resume.is_some();
    Skim::document(data, |s| {
        let member = |s: &mut Skim<'a>, k: &[u8]| {
            // The chunk's leading members that only identify it: a later chunk that starts with
            // the same bytes up to here needs no second look at them.
            let mut identifies = matches!(
                k,
                b"id" | b"created" | b"model" | b"system_fingerprint" | b"object"
            );
            match k {
                b"model" if want_model => c.model = s.str()?,
                b"id" if want_ids => {
                    if let Some(id) = s.str()? {
                        // A placeholder (Azure's content-filter chunk has `"id":""`) says
                        // nothing: the next chunk's id is read.
                        c.ids_seen |= !id.is_empty();
                        c.server = Evidence::stronger(c.server, fingerprint::from_id(&id));
                    }
                }
                b"system_fingerprint" if want_ids => {
                    if let Some(fp) = s.str()? {
                        c.ids_seen |= !fp.is_empty();
                        c.server =
                            Evidence::stronger(c.server, fingerprint::from_system_fingerprint(&fp));
                    }
                }
                b"choices" => {
                    s.array(|s, pos| {
                        // `index` may come after `delta`: collect tools with a placeholder index.
                        let first_tool = c.tools.len();
                        let mut index = pos as u64;
                        s.object(|s, k| {
                            match k {
                                b"index" => index = s.count()?.unwrap_or(index),
                                b"delta" | b"message" => skim_delta(s, u64::MAX, c)?,
                                b"text" => c.content |= s.nonempty()?,
                                b"finish_reason" => {
                                    if let Some(r) = s.str()? {
                                        c.finish_reason = Some(r);
                                    }
                                }
                                _ => s.skip()?,
                            }
                            Ok(())
                        })?;
                        for t in &mut c.tools[first_tool..] {
                            if t.0 == u64::MAX {
                                t.0 = index;
                            }
                        }
                        Ok(())
                    })?;
                }
                b"usage" => c.usage = Usage::skim(s)?.map(Box::new),
                b"timings" => {
                    c.timings = LlamaTimings::skim(s)?.map(Box::new);
                    if c.timings.is_some() && want_server {
                        c.server = Evidence::stronger(
                            c.server,
                            Some(fingerprint::from_llamacpp_timings()),
                        );
                    }
                }
                b"error" => c.error |= s.nonempty()?,
                b"object" => {
                    let error = s.str()?.as_deref() == Some("error");
                    identifies &= !error;
                    c.error |= error;
                }
                _ => s.skip()?,
            }
            if identifies && !c.prefix_closed {
                c.prefix_end = s.pos();
            } else {
                c.prefix_closed = true;
            }
            Ok(())
        };
        match resume {
            Some(at) => s.object_after(at, member),
            None => s.object(member),
        }
    })
}

/// The leading members of the last chunk walked whole (`id`, `object`, `created`, `model`,
/// `system_fingerprint`: every chunk of a stream repeats them byte for byte). Once the model and
/// fingerprint are known nothing in them is wanted, so a chunk that starts with the same bytes is
/// walked from there: most of a small chunk's keys and strings are in that prefix.
#[derive(Debug, Default)]
struct Prefix {
    bytes: Vec<u8>,
}

impl Prefix {
    /// Longest prefix kept (an `id` and a model name fit many times over).
    const MAX: usize = 256;

    fn resume(&self, data: &[u8], want: Wanted) -> Option<usize> {
        let n = self.bytes.len();
        (n > 0 && !want.model && !want.ids && data.starts_with(&self.bytes)).then_some(n)
    }

    /// `end`: just past the last identifying member's value. Kept up to and with the comma that
    /// follows it, so a later chunk whose value only starts the same (`12` of `123`) differs.
    fn remember(&mut self, data: &[u8], end: usize) {
        self.bytes.clear();
        let Some(rest) = data.get(end..).filter(|_| end > 0) else {
            return;
        };
        let Some(comma) = rest.iter().position(|c| !c.is_ascii_whitespace()) else {
            return;
        };
        let n = end + comma + 1;
        if rest[comma] == b',' && n <= Self::MAX {
            self.bytes.extend_from_slice(&data[..n]);
        }
    }
}

#[derive(Debug)]
pub(crate) struct OpenAi {
    endpoint: Endpoint,
    have_usage: bool,
    /// A chunk's `id` / `system_fingerprint` were read: later chunks repeat them.
    ids_read: bool,
    prefix: Prefix,
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
    let mut core = Core::new(req, Api::Openai, operation, shape.model.as_deref(), stream);
    core.params.max_tokens = shape.max_tokens();
    core.params.temperature = shape.temperature();
    match endpoint {
        Endpoint::Chat => core.params.choices = Some(shape.choices()),
        Endpoint::Completions => {
            core.params.prompts = shape.prompt.and_then(|p| p.count);
            // n choices for each prompt of the batch, as the response lists them.
            core.params.choices = core.params.prompts.map(|p| p * shape.choices());
        }
        Endpoint::Embeddings => core.params.prompts = shape.input.and_then(|p| p.count),
    }
    if endpoint == Endpoint::Chat {
        core.tool_results(req.body);
    }
    let h = OpenAi {
        endpoint,
        have_usage: false,
        ids_read: false,
        prefix: Prefix::default(),
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
        let mut c = Chunk::default();
        let server = core.wants_body_fingerprint();
        let want = Wanted {
            model: core.response_model.is_none(),
            ids: server && !self.ids_read,
            server,
        };
        let resume = self.prefix.resume(data, want);
        if skim_chunk(data, want, resume, &mut c).is_err() {
            errors.push(DecodeError::BadJson);
            return false;
        }
        self.ids_read |= c.ids_seen;
        if resume.is_none() && stream {
            self.prefix.remember(data, c.prefix_end);
        }
        if c.error {
            core.fail(classify_stream_body(data));
            core.terminal = true;
            return true;
        }
        if let Some(m) = &c.model {
            core.response_model(m);
        }
        core.fingerprint(c.server);
        let embeddings = self.endpoint == Endpoint::Embeddings;
        if let Some(u) = &c.usage {
            u.apply(core, embeddings);
            self.have_usage = true;
        } else if let (Some(t), false) = (&c.timings, self.have_usage) {
            t.apply(core);
        }
        for (choice, idx, name, id) in &c.tools {
            let key = (*choice, *idx);
            if !stream || !self.seen_tools.contains(&key) {
                if self.seen_tools.len() < 64 {
                    self.seen_tools.push(key);
                }
                core.tool(name);
                if let Some(id) = id {
                    core.tool_id(id, name);
                }
            }
        }
        if c.content {
            core.content(ts_ns);
        }
        if let Some(r) = &c.finish_reason {
            core.finish_reason(r);
            core.terminal = true;
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
