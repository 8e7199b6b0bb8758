//! Label values: every value that comes from the wire (models, process names, peers, tool names) is
//! sanitised here and admitted through a [`super::admission::LabelCap`], so no family can grow
//! without bound.

/// Value used once a cap is full. Never consumes a slot.
pub const OTHER: &str = "other";
/// Value used when the record has no value (no model named, no peer known). Never consumes a slot.
pub const UNKNOWN: &str = "unknown";
/// Longest label value kept, in bytes; longer values are cut at a char boundary. Model names and
/// tool names are client-chosen strings, and a 1 MiB "model" must not become a 1 MiB series.
pub const MAX_VALUE_BYTES: usize = 128;

/// Cuts `raw` to [`MAX_VALUE_BYTES`] and replaces control characters, which some scrapers and
/// terminals mishandle even though the text format escapes only `\`, `"` and newline.
pub fn sanitize(raw: &str) -> String {
    cut(raw.trim(), MAX_VALUE_BYTES)
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// HTTP status class: `1xx`..`5xx`, `none` when no response head arrived, `other` for codes
/// outside 100..=599.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "none",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => OTHER,
    }
}

/// MCP methods defined by the specification (2025-06-18 revision). Anything else — a typo, a
/// vendor extension, garbage — is `other`, so the method label needs no cap.
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
];

/// Bounded label value for an MCP JSON-RPC method.
pub fn mcp_method(method: &str) -> &'static str {
    MCP_METHODS
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_cuts_and_replaces() {
        let long = "é".repeat(100); // 200 bytes
        let s = sanitize(&long);
        assert_eq!(s.len(), 128);
        assert_eq!(sanitize("a\tb\nc"), "a_b_c");
        assert_eq!(sanitize(" qwen2.5:7b "), "qwen2.5:7b");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(None), "none");
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(404)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(Some(999)), "other");
    }

    #[test]
    fn mcp_methods_bounded() {
        assert_eq!(mcp_method("tools/call"), "tools/call");
        assert_eq!(mcp_method("x/evil\"label"), "other");
    }
}
