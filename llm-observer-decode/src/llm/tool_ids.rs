//! Tool-result ids in a chat request: what pairs a model's tool call with the request that
//! returns its result (the client view's tool execution time).
//!
//! - OpenAI Chat Completions: `messages[]` with `role: "tool"` carry `tool_call_id`;
//! - Anthropic Messages: `messages[].content[]` blocks of `type: "tool_result"` carry
//!   `tool_use_id`;
//! - OpenAI Responses: `input[]` items of `type: "function_call_output"` (or
//!   `custom_tool_call_output`) carry `call_id` (the echoed `function_call` items carry it too,
//!   and are not results).
//!
//! A request carries the whole conversation, so old results repeat in every later request; the
//! pairing side matches each id once, and this side keeps only the last [`MAX_RESULTS`] ids (the
//! newest results are at the end). Most chat requests carry no tool result at all: a bounded
//! substring check skips the walk for them.

use super::common::{MAX_TOOL_ID, cap};
use super::skim::{R, Skim};

/// Tool results kept per request (the newest).
pub(crate) const MAX_RESULTS: usize = 16;

/// The tool-result ids of a chat request body, oldest first, at most [`MAX_RESULTS`] (the
/// newest). Bodies that are not valid JSON yield what was read before the fault.
pub(crate) fn results(body: &[u8]) -> Vec<String> {
    let finder = |k: &[u8]| memchr::memmem::find(body, k).is_some();
    if !finder(b"\"tool_call_id\"") && !finder(b"\"tool_use_id\"") && !finder(b"_output\"") {
        return Vec::new();
    }
    let mut out = Vec::new();
    // A body that is not valid JSON keeps the ids read before the fault: each one was a
    // complete string value under the right key.
    let _ = Skim::document(body, |s| walk_request(s, &mut out));
    out
}

fn push(out: &mut Vec<String>, id: &str) {
    if id.is_empty() {
        return;
    }
    if out.len() == MAX_RESULTS {
        out.remove(0);
    }
    out.push(cap(id, MAX_TOOL_ID));
}

fn walk_request(s: &mut Skim<'_>, out: &mut Vec<String>) -> R<()> {
    s.object(|s, k| {
        match k {
            b"messages" => s.array(|s, _| walk_message(s, out)).map(drop),
            // Responses API input: a string, or an array of items.
            b"input" if s.peek_byte() == Some(b'[') => s.array(|s, _| walk_item(s, out)).map(drop),
            _ => s.skip(),
        }
    })
}

/// A Responses API input item: a tool output names the call it answers.
fn walk_item(s: &mut Skim<'_>, out: &mut Vec<String>) -> R<()> {
    if s.peek_byte() != Some(b'{') {
        return s.skip();
    }
    let (mut kind, mut call_id) = (None, None);
    s.object(|s, k| {
        match k {
            b"type" => kind = s.str()?,
            b"call_id" => call_id = s.str()?,
            _ => s.skip()?,
        }
        Ok(())
    })?;
    if matches!(
        kind.as_deref(),
        Some("function_call_output" | "custom_tool_call_output")
    ) && let Some(id) = call_id
    {
        push(out, &id);
    }
    Ok(())
}

fn walk_message(s: &mut Skim<'_>, out: &mut Vec<String>) -> R<()> {
    if s.null()? {
        return Ok(());
    }
    s.object(|s, k| match k {
        b"tool_call_id" => {
            if let Some(id) = s.str()? {
                push(out, &id);
            }
            Ok(())
        }
        // Only content-block arrays can hold tool results; a string content is skipped.
        b"content" => walk_content(s, out),
        _ => s.skip(),
    })
}

fn walk_content(s: &mut Skim<'_>, out: &mut Vec<String>) -> R<()> {
    match s.peek_byte() {
        Some(b'[') => s
            .array(|s, _| {
                if s.peek_byte() != Some(b'{') {
                    return s.skip();
                }
                s.object(|s, k| match k {
                    b"tool_use_id" => {
                        if let Some(id) = s.str()? {
                            push(out, &id);
                        }
                        Ok(())
                    }
                    _ => s.skip(),
                })
            })
            .map(drop),
        _ => s.skip(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_tool_messages() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"},{"role":"tool","content":[{"type":"text","text":"x"}],"tool_call_id":"call_2"}]}"#;
        assert_eq!(results(body), vec!["call_1", "call_2"]);
    }

    #[test]
    fn anthropic_tool_result_blocks() {
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"},{"type":"text","text":"go on"}]}]}"#;
        assert_eq!(results(body), vec!["toolu_1"]);
    }

    #[test]
    fn responses_api_function_call_outputs() {
        let body = br#"{"model":"m","input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"call_1","output":"sunny"}]}"#;
        assert_eq!(results(body), vec!["call_1"]);
        assert!(results(br#"{"model":"m","input":"say function_call_output\""}"#).is_empty());
    }

    #[test]
    fn no_results_no_walk_and_bad_json_is_safe() {
        assert!(results(br#"{"messages":[{"role":"user","content":"hi"}]}"#).is_empty());
        // Keys inside strings or outside messages are not results.
        assert!(results(br#"{"tool_call_id":"x","messages":[]}"#).is_empty());
        assert!(
            results(br#"{"messages":[{"role":"user","content":"say \"tool_call_id\""}]}"#)
                .is_empty()
        );
        // Cut in the middle: the ids read before the cut stay.
        let cut =
            br#"{"messages":[{"role":"tool","tool_call_id":"a"},{"role":"tool","tool_call_id":"b"#;
        assert_eq!(results(cut), vec!["a"]);
        assert!(results(b"\"tool_call_id\"").is_empty());
    }

    #[test]
    fn keeps_the_newest_ids_bounded() {
        let msgs: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"role":"tool","tool_call_id":"c{i}","content":"r"}}"#))
            .collect();
        let body = format!(r#"{{"messages":[{}]}}"#, msgs.join(","));
        let got = results(body.as_bytes());
        assert_eq!(got.len(), MAX_RESULTS);
        assert_eq!(got.first().map(String::as_str), Some("c24"));
        assert_eq!(got.last().map(String::as_str), Some("c39"));
        let long = format!(
            r#"{{"messages":[{{"tool_call_id":"{}"}}]}}"#,
            "x".repeat(500)
        );
        assert_eq!(results(long.as_bytes())[0].len(), MAX_TOOL_ID);
    }
}
