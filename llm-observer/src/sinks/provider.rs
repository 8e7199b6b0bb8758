//! The `provider` label of the client-view families: which LLM provider a call went to, from the
//! request's `Host` (HTTP/1.1) or `:authority` (HTTP/2). A fixed table of well-known API hosts;
//! anything else (a local server, an IP address, a private gateway, no host at all) is
//! `self_hosted`. Bounded by construction: every value is one of [`PROVIDERS`].
//!
//! Names follow the OTel `gen_ai.provider.name` values where they are plain words (`openai`,
//! `anthropic`, `cohere`, `deepseek`, `groq`, `perplexity`), with `_` for the dotted ones
//! (`azure_openai`, `bedrock`, `gemini`, `mistral`, `xai`) so they are valid in any query.

/// Every value the label can take (docs/metrics.md lists the same).
pub const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "azure_openai",
    "bedrock",
    "mistral",
    "groq",
    "together",
    "deepseek",
    "openrouter",
    "xai",
    "fireworks",
    "cohere",
    "perplexity",
    "self_hosted",
];

/// What a call is labelled with when its host is not a known provider's.
pub const SELF_HOSTED: &str = "self_hosted";

/// How a table entry matches a host name.
enum Rule {
    /// The whole name.
    Exact(&'static str),
    /// The name ends with this (a leading `.` or `-` keeps `notopenai.com` out).
    Suffix(&'static str),
    /// `prefix` … `suffix`, e.g. `bedrock-runtime.` + region + `.amazonaws.com`.
    Around(&'static str, &'static str),
}

const TABLE: &[(Rule, &str)] = &[
    (Rule::Exact("api.openai.com"), "openai"),
    (Rule::Exact("api.anthropic.com"), "anthropic"),
    (Rule::Exact("generativelanguage.googleapis.com"), "gemini"),
    // Vertex AI serves Gemini (and partner models) under its regional hosts.
    (Rule::Exact("aiplatform.googleapis.com"), "gemini"),
    (Rule::Suffix("-aiplatform.googleapis.com"), "gemini"),
    (Rule::Suffix(".openai.azure.com"), "azure_openai"),
    (Rule::Suffix(".cognitiveservices.azure.com"), "azure_openai"),
    (Rule::Suffix(".services.ai.azure.com"), "azure_openai"),
    (
        Rule::Around("bedrock-runtime.", ".amazonaws.com"),
        "bedrock",
    ),
    (Rule::Exact("api.mistral.ai"), "mistral"),
    (Rule::Exact("api.groq.com"), "groq"),
    (Rule::Exact("api.together.xyz"), "together"),
    (Rule::Exact("api.together.ai"), "together"),
    (Rule::Exact("api.deepseek.com"), "deepseek"),
    (Rule::Exact("openrouter.ai"), "openrouter"),
    (Rule::Exact("api.x.ai"), "xai"),
    (Rule::Exact("api.fireworks.ai"), "fireworks"),
    (Rule::Exact("api.cohere.com"), "cohere"),
    (Rule::Exact("api.cohere.ai"), "cohere"),
    (Rule::Exact("api.perplexity.ai"), "perplexity"),
];

/// The provider of a request sent to `host` (a `Host` / `:authority` value, port and case as
/// sent). `None` (no host header) is `self_hosted`: a peer address alone names no provider.
pub fn provider(host: Option<&str>) -> &'static str {
    let Some(host) = host else {
        return SELF_HOSTED;
    };
    let name = strip_port(host.trim()).trim_end_matches('.');
    // Host names are short; anything longer than DNS allows is not one of the table's.
    if name.len() > 253 {
        return SELF_HOSTED;
    }
    let name = name.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(rule, _)| match rule {
            Rule::Exact(h) => name == *h,
            Rule::Suffix(s) => name.len() > s.len() && name.ends_with(s),
            Rule::Around(p, s) => {
                name.len() > p.len() + s.len() && name.starts_with(p) && name.ends_with(s)
            }
        })
        .map_or(SELF_HOSTED, |(_, p)| p)
}

/// `host[:port]` or `[v6]:port` → the name part.
fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_hosts() {
        for (host, want) in [
            ("api.openai.com", "openai"),
            ("API.OpenAI.com:443", "openai"),
            ("api.openai.com.", "openai"),
            ("api.anthropic.com", "anthropic"),
            ("generativelanguage.googleapis.com", "gemini"),
            ("us-central1-aiplatform.googleapis.com", "gemini"),
            ("aiplatform.googleapis.com", "gemini"),
            ("my-resource.openai.azure.com", "azure_openai"),
            ("my-res.cognitiveservices.azure.com", "azure_openai"),
            ("bedrock-runtime.us-east-1.amazonaws.com", "bedrock"),
            ("api.mistral.ai", "mistral"),
            ("api.groq.com", "groq"),
            ("api.together.xyz", "together"),
            ("api.deepseek.com", "deepseek"),
            ("openrouter.ai", "openrouter"),
            ("api.x.ai", "xai"),
            ("api.fireworks.ai", "fireworks"),
            ("api.cohere.com", "cohere"),
            ("api.perplexity.ai", "perplexity"),
        ] {
            assert_eq!(provider(Some(host)), want, "{host}");
        }
    }

    #[test]
    fn everything_else_is_self_hosted() {
        for host in [
            "localhost:11434",
            "127.0.0.1:8000",
            "[::1]:8080",
            "vllm.internal",
            "notapi.openai.com.evil.example",
            "evilapi.openai.com",
            "openai.azure.com",
            "bedrock-runtime..amazonaws.com.evil",
            "xopenrouter.ai",
            "",
        ] {
            assert_eq!(provider(Some(host)), SELF_HOSTED, "{host}");
        }
        assert_eq!(provider(None), SELF_HOSTED);
        assert_eq!(provider(Some(&"a".repeat(10_000))), SELF_HOSTED);
    }

    #[test]
    fn every_value_is_listed() {
        for (_, p) in TABLE {
            assert!(PROVIDERS.contains(p), "{p}");
        }
        assert!(PROVIDERS.contains(&SELF_HOSTED));
    }
}
