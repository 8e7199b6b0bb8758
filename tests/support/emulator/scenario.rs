//! Behaviour selected by the request's model name, so that a real, unmodified client (the official
//! SDKs, curl) can ask for an error or a broken stream without any emulator-specific request field.
//!
//! | model name            | behaviour                                                                |
//! |-----------------------|--------------------------------------------------------------------------|
//! | `err-<status>`        | HTTP `<status>` (400..=599) with the API's error body, no generation      |
//! | `err-after-200`       | HTTP 200, 3 tokens, then the API's in-stream error event, no terminal event |
//! | `err-after-200-<n>`   | the same after `<n>` tokens                                              |
//! | `die-mid-stream`      | HTTP 200, 3 tokens, then the server closes the TCP connection (no terminator) |
//! | `die-mid-stream-<n>`  | the same after `<n>` tokens                                              |
//! | `reset-mid-stream[-<n>]` | as `die-mid-stream`, but the close is a TCP reset (RST, zero linger)  |
//! | `slow`                | 1000 ms between tokens (for client-cancel tests)                          |
//! | `slow-<ms>`           | `<ms>` between tokens                                                    |
//! | `finish-length`       | normal, but the finish reason is `length` / `max_tokens`                  |
//! | `cached-<n>`          | normal, `min(n, prompt)` of the prompt tokens are reported as cache reads  |
//! | `tools`               | an agent's model: when the request offers tools and its last message is not a tool result, the answer also asks for a call of the first tool (see `plan`) |
//! | anything else         | normal generation                                                        |
//!
//! An Ollama-style `:tag` suffix is ignored (`err-429:latest` is `err-429`). Without streaming,
//! `err-after-200*` answers HTTP 500 with the error body once generation would have ended, and
//! `die-mid-stream*` / `reset-mid-stream*` close the connection at that time without sending any
//! response.

use std::time::Duration;

/// Tokens sent before the interruption when the model name gives no count.
const DEFAULT_INTERRUPT_AFTER: u32 = 3;
/// Token interval of the `slow` scenario: long enough that a client cancels long before the end.
const DEFAULT_SLOW_INTERVAL: Duration = Duration::from_millis(1000);

/// What the emulator does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Normal,
    /// Answer with this HTTP status and the API's error body.
    HttpError(u16),
    /// Stream this many tokens, then the API's in-stream error event.
    ErrorAfter(u32),
    /// Stream this many tokens, then close the connection from the server side.
    DieAfter(u32),
    /// As `DieAfter`, closing with a TCP reset.
    ResetAfter(u32),
    /// Stream with this interval between tokens.
    Slow(Duration),
    /// Finish reason `length` (OpenAI, Ollama) / `max_tokens` (Anthropic).
    FinishLength,
    /// Report up to this many prompt tokens as read from the prompt cache.
    Cached(u32),
    /// Ask for a call of the first offered tool unless the conversation ends with a tool result.
    Tools,
}

impl Scenario {
    /// Reads the scenario from a model name; unknown names are [`Scenario::Normal`].
    pub fn from_model(model: &str) -> Scenario {
        // Ollama model names carry a tag; the scenario is the base name.
        let base = model.split(':').next().unwrap_or(model);
        if let Some(rest) = base.strip_prefix("err-after-200") {
            return optional_count(rest).map_or(Scenario::Normal, Scenario::ErrorAfter);
        }
        if let Some(rest) = base.strip_prefix("die-mid-stream") {
            return optional_count(rest).map_or(Scenario::Normal, Scenario::DieAfter);
        }
        if let Some(rest) = base.strip_prefix("reset-mid-stream") {
            return optional_count(rest).map_or(Scenario::Normal, Scenario::ResetAfter);
        }
        if let Some(status) = base.strip_prefix("err-") {
            return match status.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => Scenario::HttpError(code),
                _ => Scenario::Normal,
            };
        }
        if base == "slow" {
            return Scenario::Slow(DEFAULT_SLOW_INTERVAL);
        }
        if let Some(ms) = base.strip_prefix("slow-") {
            return ms.parse::<u64>().map_or(Scenario::Normal, |ms| {
                Scenario::Slow(Duration::from_millis(ms))
            });
        }
        if base == "tools" {
            return Scenario::Tools;
        }
        if base == "finish-length" {
            return Scenario::FinishLength;
        }
        if let Some(n) = base.strip_prefix("cached-") {
            return n.parse::<u32>().map_or(Scenario::Normal, Scenario::Cached);
        }
        Scenario::Normal
    }

    /// Token index at which the stream is interrupted (error event or connection close), if any.
    pub fn interrupt_at(self) -> Option<u32> {
        match self {
            Scenario::ErrorAfter(n) | Scenario::DieAfter(n) | Scenario::ResetAfter(n) => Some(n),
            _ => None,
        }
    }

    /// Whether the connection is to end with a TCP reset.
    pub fn resets(self) -> bool {
        matches!(self, Scenario::ResetAfter(_))
    }
}

/// `""` → the default count, `"-<n>"` → n, anything else is not this scenario.
fn optional_count(rest: &str) -> Option<u32> {
    if rest.is_empty() {
        return Some(DEFAULT_INTERRUPT_AFTER);
    }
    rest.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_select_scenarios() {
        assert_eq!(Scenario::from_model("llama3.2"), Scenario::Normal);
        assert_eq!(Scenario::from_model("err-429"), Scenario::HttpError(429));
        assert_eq!(
            Scenario::from_model("err-529:latest"),
            Scenario::HttpError(529)
        );
        assert_eq!(Scenario::from_model("err-200"), Scenario::Normal);
        assert_eq!(
            Scenario::from_model("err-after-200"),
            Scenario::ErrorAfter(3)
        );
        assert_eq!(
            Scenario::from_model("err-after-200-0"),
            Scenario::ErrorAfter(0)
        );
        assert_eq!(
            Scenario::from_model("die-mid-stream"),
            Scenario::DieAfter(3)
        );
        assert_eq!(
            Scenario::from_model("die-mid-stream-7"),
            Scenario::DieAfter(7)
        );
        assert_eq!(
            Scenario::from_model("slow"),
            Scenario::Slow(DEFAULT_SLOW_INTERVAL)
        );
        assert_eq!(
            Scenario::from_model("slow-250"),
            Scenario::Slow(Duration::from_millis(250))
        );
        assert_eq!(
            Scenario::from_model("finish-length"),
            Scenario::FinishLength
        );
        assert_eq!(Scenario::from_model("cached-4"), Scenario::Cached(4));
        assert_eq!(Scenario::from_model("die-mid-streamx"), Scenario::Normal);
    }
}
