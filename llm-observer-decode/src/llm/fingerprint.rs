//! Which server software answered: fingerprints in the response head and body.
//!
//! The observed response carries marks its server leaves on every answer (research:
//! shared/research/server-processes.md, checked against the captures in shared/fixtures). Each
//! mark has a strength; an exchange keeps its strongest ([`Evidence`]). Headers are written by the
//! server's own framework and beat body fields, which a gateway may pass through from the backend
//! it proxies (LiteLLM relays vLLM's or Ollama's bodies, but adds its own `x-litellm-*` headers).
//! The API shape (a native `/api/chat`, `/generate`, `/completion`) is the weakest mark: other
//! servers emulate those APIs.
//!
//! The agent combines this wire evidence with the observed process's identity (its comm, exe and
//! command line) and keeps the decision stable per process and per peer; the decision table is in
//! docs/metrics.md.

use serde::Serialize;

use super::Headers;
use crate::exchange::Api;

/// Server software, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Ollama,
    Vllm,
    Sglang,
    /// llama.cpp's own C++ `llama-server`.
    Llamacpp,
    /// The Python `llama-cpp-python` server (uvicorn), a different server around the same engine.
    LlamacppPython,
    Tgi,
    Litellm,
    Localai,
}

impl ServerKind {
    pub const ALL: [ServerKind; 8] = [
        ServerKind::Ollama,
        ServerKind::Vllm,
        ServerKind::Sglang,
        ServerKind::Llamacpp,
        ServerKind::LlamacppPython,
        ServerKind::Tgi,
        ServerKind::Litellm,
        ServerKind::Localai,
    ];

    /// Stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Ollama => "ollama",
            ServerKind::Vllm => "vllm",
            ServerKind::Sglang => "sglang",
            ServerKind::Llamacpp => "llamacpp",
            ServerKind::LlamacppPython => "llamacpp_python",
            ServerKind::Tgi => "tgi",
            ServerKind::Litellm => "litellm",
            ServerKind::Localai => "localai",
        }
    }
}

/// How much a fingerprint says, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// The API's native shape (other servers emulate it).
    Api,
    /// A body field (`system_fingerprint`, `id` shape, llama.cpp `timings`); a gateway may relay it.
    Body,
    /// A response header the server's framework writes itself.
    Header,
}

/// A fingerprint seen in one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub kind: ServerKind,
    pub strength: Strength,
}

impl Evidence {
    fn new(kind: ServerKind, strength: Strength) -> Self {
        Evidence { kind, strength }
    }

    /// The stronger of two; on a tie the earlier one stays (first seen wins).
    pub fn stronger(old: Option<Evidence>, new: Option<Evidence>) -> Option<Evidence> {
        match (old, new) {
            (Some(o), Some(n)) if n.strength > o.strength => Some(n),
            (Some(o), _) => Some(o),
            (None, n) => n,
        }
    }
}

/// Marks of the response head, strongest first:
/// `x-litellm-*` → LiteLLM (a gateway: its headers win over what it relays);
/// `server: llama.cpp` → llama-server; TGI's `x-compute-type` → TGI;
/// `server: uvicorn` with `openai-processing-ms` → llama-cpp-python.
pub fn from_headers(h: &Headers) -> Option<Evidence> {
    let kind = if h.0.iter().any(|(n, _)| n.starts_with("x-litellm-")) {
        ServerKind::Litellm
    } else if h
        .get_str("server")
        .is_some_and(|s| s.eq_ignore_ascii_case("llama.cpp"))
    {
        ServerKind::Llamacpp
    } else if h.get("x-compute-type").is_some() {
        ServerKind::Tgi
    } else if h
        .get_str("server")
        .is_some_and(|s| s.eq_ignore_ascii_case("uvicorn"))
        && h.get("openai-processing-ms").is_some()
    {
        ServerKind::LlamacppPython
    } else {
        return None;
    };
    Some(Evidence::new(kind, Strength::Header))
}

/// OpenAI-compatible `system_fingerprint`: Ollama writes `fp_ollama`.
pub fn from_system_fingerprint(fp: &str) -> Option<Evidence> {
    (fp == "fp_ollama").then(|| Evidence::new(ServerKind::Ollama, Strength::Body))
}

/// OpenAI-compatible response `id` shapes: llama-server writes `chatcmpl-` + 32 random
/// alphanumerics. vLLM's and SGLang's 32 lower-case hex digits of a UUID look alike, so an
/// all-hex id says nothing; Ollama's `chatcmpl-<0..999>` is copied by too many toy servers to
/// count (its `fp_ollama` says it instead).
pub fn from_id(id: &str) -> Option<Evidence> {
    let b = id.strip_prefix("chatcmpl-")?.as_bytes();
    let llamacpp = b.len() == 32
        && b.iter().all(u8::is_ascii_alphanumeric)
        && !b
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    llamacpp.then(|| Evidence::new(ServerKind::Llamacpp, Strength::Body))
}

/// llama.cpp adds a top-level `timings` object to its OpenAI-compatible answers.
pub fn from_llamacpp_timings() -> Evidence {
    Evidence::new(ServerKind::Llamacpp, Strength::Body)
}

/// The API's native shape: Ollama `/api/*`, TGI `/generate*`, llama.cpp `/completion`.
pub fn from_api(api: Api) -> Option<Evidence> {
    let kind = match api {
        Api::Ollama => ServerKind::Ollama,
        Api::Tgi => ServerKind::Tgi,
        Api::Llamacpp => ServerKind::Llamacpp,
        // Gemini's shape is Google's own API, served by no self-hosted server we name.
        Api::Openai | Api::Anthropic | Api::Gemini | Api::Mcp => return None,
    };
    Some(Evidence::new(kind, Strength::Api))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Headers {
        Headers(
            list.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn kind(e: Option<Evidence>) -> Option<ServerKind> {
        e.map(|e| e.kind)
    }

    type HeaderCase<'a> = (&'a [(&'a str, &'a str)], Option<ServerKind>);

    #[test]
    fn header_marks() {
        let cases: &[HeaderCase<'_>] = &[
            (&[("server", "llama.cpp")], Some(ServerKind::Llamacpp)),
            (
                &[
                    ("x-compute-type", "1-nvidia-a10g"),
                    ("x-compute-time", "0.5"),
                ],
                Some(ServerKind::Tgi),
            ),
            // LiteLLM in front of llama-server relays nothing of the backend's head but its own.
            (
                &[("server", "uvicorn"), ("x-litellm-call-id", "abc")],
                Some(ServerKind::Litellm),
            ),
            (
                &[("server", "uvicorn"), ("openai-processing-ms", "6")],
                Some(ServerKind::LlamacppPython),
            ),
            // uvicorn alone: vLLM, SGLang, LiteLLM and llama-cpp-python all use it.
            (&[("server", "uvicorn")], None),
            // OpenAI's cloud sends openai-processing-ms without uvicorn.
            (&[("openai-processing-ms", "6")], None),
            (&[], None),
        ];
        for (h, want) in cases {
            assert_eq!(kind(from_headers(&headers(h))), *want, "{h:?}");
        }
    }

    #[test]
    fn id_shapes() {
        assert_eq!(from_id("chatcmpl-123"), None);
        // From shared/fixtures/llama-server/chat_nonstream.response.http.
        assert_eq!(
            kind(from_id("chatcmpl-J6bEkwpZEHIhdsVKkJi1xjn28TcXTrHm")),
            Some(ServerKind::Llamacpp)
        );
        // vLLM / SGLang: uuid4().hex.
        assert_eq!(from_id("chatcmpl-0123456789abcdef0123456789abcdef"), None);
        // llama-cpp-python: a dashed UUID.
        assert_eq!(
            from_id("chatcmpl-7e047ab5-16aa-45a6-82e0-f118414a8a56"),
            None
        );
        assert_eq!(from_id("chatcmpl-1234"), None);
        assert_eq!(from_id("msg_01"), None);
        assert_eq!(from_id(""), None);
    }

    #[test]
    fn strongest_wins_first_on_tie() {
        let body = Some(Evidence::new(ServerKind::Ollama, Strength::Body));
        let head = Some(Evidence::new(ServerKind::Litellm, Strength::Header));
        let api = Some(Evidence::new(ServerKind::Tgi, Strength::Api));
        assert_eq!(Evidence::stronger(body, head), head);
        assert_eq!(Evidence::stronger(head, body), head);
        assert_eq!(Evidence::stronger(body, api), body);
        assert_eq!(Evidence::stronger(api, body), body);
        let other_body = Some(Evidence::new(ServerKind::Llamacpp, Strength::Body));
        assert_eq!(Evidence::stronger(body, other_body), body);
        assert_eq!(Evidence::stronger(None, None), None);
    }
}
