//! Recognition: which API (if any) a complete request belongs to.
//!
//! By method, path and body shape, never by port. Cheap for unknown traffic: a non-POST request or
//! a path that ends in none of the known endpoints is rejected after a few suffix compares, without
//! touching the body (except for a bounded look for a JSON-RPC marker, for MCP).
//!
//! Paths are matched by suffix at a segment boundary, so the common prefixes of gateways and
//! proxies (`/openai/v1/chat/completions`, `/api/v1/chat/completions`, `/proxy/ollama/api/chat`)
//! are accepted. To stay conservative, the weaker matches need the body to have the API's shape:
//! `/chat/completions` without `/v1` needs `messages`, `/generate` needs TGI's `inputs`, …
//!
//! A body cut at the size cap cannot be parsed; then the model and stream flag are read by a
//! bounded byte scan (see [`scan_str`]), and only the strong (`/v1/…`, `/api/…`) paths are accepted.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::types::Limits;

use super::json::{NonEmpty, Prompts, RpcId, Str, trim_start};
use super::{ApiDecoder, Headers, Request};
use super::{anthropic, batches, gemini, llamacpp, mcp, ollama, openai, responses, tgi};

/// JSON-RPC `params` fields that name the target of a call.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RpcParams<'a> {
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub uri: Option<Str<'a>>,
}

/// The request-body fields recognition and the decoders need.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Shape<'a> {
    #[serde(borrow)]
    pub model: Option<Str<'a>>,
    /// Ollama `/api/pull` legacy name of the model.
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    pub stream: Option<bool>,
    pub messages: Option<NonEmpty>,
    pub prompt: Option<Prompts>,
    pub images: Option<NonEmpty>,
    pub input: Option<Prompts>,
    pub inputs: Option<NonEmpty>,
    #[serde(deserialize_with = "keep_alive_zero")]
    #[serde(rename = "keep_alive")]
    pub keep_alive_zero: bool,
    #[serde(borrow)]
    pub jsonrpc: Option<Str<'a>>,
    #[serde(borrow)]
    pub method: Option<Str<'a>>,
    pub id: Option<RpcId>,
    #[serde(borrow)]
    pub params: Option<RpcParams<'a>>,
    /// Sampling parameters, recorded when present; a value of another type is ignored (it must
    /// not make the request unrecognisable).
    #[serde(deserialize_with = "lenient_number")]
    pub max_tokens: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    pub max_completion_tokens: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    pub temperature: Option<f64>,
    /// OpenAI `n`: choices asked for.
    #[serde(deserialize_with = "lenient_number")]
    pub n: Option<f64>,
}

impl Shape<'_> {
    /// `max_tokens` (or OpenAI's newer `max_completion_tokens`) as a whole non-negative count.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
            .or(self.max_completion_tokens)
            .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= u64::MAX as f64)
            .map(|v| v as u64)
    }

    pub fn temperature(&self) -> Option<f64> {
        self.temperature.filter(|t| t.is_finite())
    }

    /// Choices asked for: `n` as a whole count of at least 1 (at most 128, OpenAI's own limit,
    /// so one request cannot inflate the counters), else the default 1.
    pub fn choices(&self) -> u64 {
        self.n
            .filter(|v| v.fract() == 0.0 && *v >= 1.0)
            .map_or(1, |v| v.min(128.0) as u64)
    }
}

/// A JSON number as `f64`; any other value (string, object, array, bool, null) is skipped.
fn lenient_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Ollama `keep_alive`: a number of seconds or a Go duration string; true when it is zero.
fn keep_alive_zero<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a keep_alive value")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            Ok(v == 0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            Ok(v == 0)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
            Ok(v == 0.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            // "0", "0s", "0m", "0h", "0.0s": digits and dots that are all zero, then a unit.
            let num = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            Ok(!num.is_empty() && num.chars().all(|c| c == '0' || c == '.'))
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(V)
}

/// Known endpoints, by path suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    OpenAi(openai::Endpoint),
    Responses,
    Anthropic,
    Ollama(ollama::Endpoint),
    Tgi { stream: bool },
    Llamacpp,
}

/// (suffix, endpoint, strong). A strong suffix is specific enough to accept any JSON object body;
/// a weak one needs the API's body shape too. Longer suffixes come before their own tails.
const SUFFIXES: &[(&str, Endpoint, bool)] = {
    use Endpoint as E;
    use ollama::Endpoint as O;
    use openai::Endpoint as A;
    &[
        ("/v1/chat/completions", E::OpenAi(A::Chat), true),
        ("/v1/completions", E::OpenAi(A::Completions), true),
        ("/v1/embeddings", E::OpenAi(A::Embeddings), true),
        ("/v1/responses", E::Responses, true),
        ("/v1/messages", E::Anthropic, true),
        ("/api/generate", E::Ollama(O::Generate), true),
        ("/api/chat", E::Ollama(O::Chat), true),
        ("/api/embed", E::Ollama(O::Embed), true),
        ("/api/embeddings", E::Ollama(O::Embeddings), true),
        ("/api/pull", E::Ollama(O::Pull), true),
        ("/generate_stream", E::Tgi { stream: true }, false),
        ("/generate", E::Tgi { stream: false }, false),
        ("/completion", E::Llamacpp, false),
        ("/chat/completions", E::OpenAi(A::Chat), false),
        ("/completions", E::OpenAi(A::Completions), false),
        ("/embeddings", E::OpenAi(A::Embeddings), false),
        ("/responses", E::Responses, false),
    ]
};

fn endpoint(path: &str) -> Option<(Endpoint, bool)> {
    let path = path.strip_suffix('/').unwrap_or(path);
    SUFFIXES
        .iter()
        .find(|(suffix, _, _)| path.ends_with(suffix))
        .map(|&(_, e, strong)| (e, strong))
}

/// The body's shape is right for a weakly matched endpoint.
fn shape_fits(e: Endpoint, s: &Shape<'_>) -> bool {
    use super::json::has;
    match e {
        Endpoint::OpenAi(openai::Endpoint::Chat) | Endpoint::Anthropic => has(s.messages),
        Endpoint::OpenAi(openai::Endpoint::Completions) | Endpoint::Llamacpp => s.prompt.is_some(),
        Endpoint::OpenAi(openai::Endpoint::Embeddings) | Endpoint::Responses => s.input.is_some(),
        Endpoint::Tgi { .. } => s.inputs.is_some(),
        Endpoint::Ollama(_) => s.model.is_some() || s.name.is_some(),
    }
}

/// Headers only MCP's Streamable HTTP transport sends.
const MCP_HEADERS: [&str; 3] = ["mcp-method", "mcp-session-id", "mcp-protocol-version"];

fn has_mcp_headers(headers: &Headers) -> bool {
    MCP_HEADERS.iter().any(|h| headers.get(h).is_some())
}

/// See [`super::is_candidate`]: a POST to a known endpoint, with MCP headers, or a JSON (or
/// untyped) POST that looks like MCP's Streamable HTTP transport — its clients must accept
/// `text/event-stream` with JSON, and its endpoints are conventionally `/mcp` (`/messages` for the
/// older HTTP+SSE transport). Everything else is framed without collecting its body: a JSON POST
/// to any other path on the node (`/upload`, a REST API) costs no buffering.
pub(crate) fn candidate(method: &str, path: &str, headers: &Headers) -> bool {
    // The Batch API is also read with GET (bodyless: nothing to buffer).
    if batches::endpoint(method, path).is_some() {
        return true;
    }
    if !method.eq_ignore_ascii_case("POST") {
        return false;
    }
    if endpoint(path).is_some() || gemini::endpoint(path).is_some() || has_mcp_headers(headers) {
        return true;
    }
    let json_or_untyped = headers
        .get_str("content-type")
        .is_none_or(|ct| ct.to_ascii_lowercase().contains("json"));
    json_or_untyped && (mcp_accept(headers) || mcp_path(path))
}

/// `Accept` naming both JSON and SSE, as the MCP Streamable HTTP transport requires of clients.
fn mcp_accept(headers: &Headers) -> bool {
    headers.get_str("accept").is_some_and(|a| {
        let a = a.to_ascii_lowercase();
        a.contains("text/event-stream") && a.contains("json")
    })
}

/// The conventional MCP endpoint names, as the path's last segment (query and trailing `/` aside).
fn mcp_path(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    matches!(last, "mcp" | "messages" | "message")
}

/// The body looks like a JSON-RPC message, or the headers are MCP's.
fn mcp_candidate(req: &Request<'_>) -> bool {
    if has_mcp_headers(req.headers) {
        return true;
    }
    let body = trim_start(req.body);
    if body.first() != Some(&b'{') {
        return false;
    }
    // SDKs put `jsonrpc` first; look at a bounded head and tail only.
    let head = &body[..body.len().min(512)];
    let tail = &body[body.len().saturating_sub(128)..];
    memchr::memmem::find(head, b"\"jsonrpc\"").is_some()
        || memchr::memmem::find(tail, b"\"jsonrpc\"").is_some()
}

/// See [`super::recognize`].
pub(crate) fn recognize(req: &Request<'_>, limits: &Limits) -> Option<Box<dyn ApiDecoder>> {
    // By method and path alone: a create's body is a file id and options, never a prompt.
    if let Some(op) = batches::endpoint(req.method, req.path) {
        return Some(batches::decoder(req, op, limits));
    }
    if !req.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    if let Some((model, stream)) = gemini::endpoint(req.path) {
        // The path says it all (model and streaming); the body only has to be a JSON object.
        if trim_start(req.body).first() == Some(&b'{') || req.body_truncated {
            return Some(gemini::decoder(req, model, stream, limits));
        }
        return None;
    }
    let matched = endpoint(req.path);
    let mcp = mcp_candidate(req);
    if matched.is_none() && !mcp {
        return None;
    }
    let parsed = if req.body_truncated {
        None
    } else {
        serde_json::from_slice::<Shape<'_>>(req.body).ok()
    };
    if mcp && let Some(d) = mcp::decoder(req, parsed.as_ref(), limits) {
        return Some(d);
    }
    let (e, strong) = matched?;
    let shape = match parsed {
        Some(s) => {
            if !strong && !shape_fits(e, &s) {
                return None;
            }
            s
        }
        // Unparseable: accept only strong paths, with what a byte scan finds.
        None if strong && trim_start(req.body).first() == Some(&b'{') => Shape {
            model: scan_str(req.body, b"model").map(Cow::Owned),
            stream: scan_bool(req.body, b"stream"),
            // Unknown: assume the request asked for output (never a load/unload guess).
            messages: Some(NonEmpty(true)),
            prompt: Some(Prompts::UNKNOWN),
            input: Some(Prompts::UNKNOWN),
            ..Shape::default()
        },
        None => return None,
    };
    Some(match e {
        Endpoint::OpenAi(op) => openai::decoder(req, op, &shape, limits),
        Endpoint::Responses => responses::decoder(req, &shape, limits),
        Endpoint::Anthropic => anthropic::decoder(req, &shape, limits),
        Endpoint::Ollama(op) => ollama::decoder(req, op, &shape, limits),
        Endpoint::Tgi { stream } => tgi::decoder(req, stream, &shape, limits),
        Endpoint::Llamacpp => llamacpp::decoder(req, &shape, limits),
    })
}

/// Position just after `"key"` `:` (whitespace allowed) in `body`, for the first occurrence.
fn after_key(body: &[u8], key: &[u8]) -> Option<usize> {
    let mut pat = Vec::with_capacity(key.len() + 2);
    pat.push(b'"');
    pat.extend_from_slice(key);
    pat.push(b'"');
    let mut i = memchr::memmem::find(body, &pat)? + pat.len();
    while body.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    if body[i] != b':' {
        return None;
    }
    i += 1;
    while body.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    Some(i)
}

/// Best-effort `"key": "value"` from a cut body (no escapes in the value, at most 256 bytes). A
/// quote cannot appear unescaped inside a JSON string, so the first `"key"` is a real key (though it
/// may belong to a nested object).
pub(crate) fn scan_str(body: &[u8], key: &[u8]) -> Option<String> {
    let i = after_key(body, key)?;
    if body[i] != b'"' {
        return None;
    }
    let rest = &body[i + 1..];
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] != b'"' || end > 256 {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
}

/// Best-effort `"key": true|false` from a cut body.
pub(crate) fn scan_bool(body: &[u8], key: &[u8]) -> Option<bool> {
    let rest = &body[after_key(body, key)?..];
    if rest.starts_with(b"true") {
        Some(true)
    } else if rest.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}
