//! User-defined labels (`--label-header`, `--label-body-field`): values a request carries, named
//! by the operator, copied into the exchange as short strings. A leaf module: the rules come in
//! through [`crate::Limits`], the values leave on [`crate::Exchange::user_labels`] and
//! [`crate::llm::RequestSummary::user_labels`], in the rules' order.
//!
//! Only what a rule names is read: a header's value, or one JSON value of the request body by
//! RFC 6901 pointer (`/user`, `/metadata/user_id`). A value that is absent, not a string, number
//! or bool, longer than [`MAX_VALUE`] bytes, or not printable ASCII is `""` — never a cut or
//! cleaned-up copy, so an API key sent in a tenant header can never leak by part.

use crate::llm::Request;

/// Longest value kept.
pub const MAX_VALUE: usize = 64;

/// Where one label's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// A request header, by lower-case name.
    Header(String),
    /// A JSON value of the request body, by JSON pointer.
    BodyField(String),
}

/// One user label: its name and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRule {
    pub name: String,
    pub source: LabelSource,
}

/// The configured rules, in label order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LabelRules {
    pub rules: Vec<LabelRule>,
}

/// No user labels: what [`crate::Limits::default`] carries.
pub static NO_LABELS: LabelRules = LabelRules { rules: Vec::new() };

fn usable(v: &str) -> bool {
    v.len() <= MAX_VALUE && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl LabelRules {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The request's value of each rule (`""` where it has none).
    pub fn extract(&self, req: &Request<'_>) -> Vec<String> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        // The body is parsed at most once, and only when a rule reads it.
        let wants_body = self
            .rules
            .iter()
            .any(|r| matches!(r.source, LabelSource::BodyField(_)));
        let body: Option<serde_json::Value> = if wants_body && !req.body_truncated {
            serde_json::from_slice(req.body).ok()
        } else {
            None
        };
        self.rules
            .iter()
            .map(|r| {
                let v = match &r.source {
                    LabelSource::Header(h) => req
                        .headers
                        .get_str(h)
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default(),
                    LabelSource::BodyField(p) => match body.as_ref().and_then(|b| b.pointer(p)) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(serde_json::Value::Number(n)) => n.to_string(),
                        Some(serde_json::Value::Bool(b)) => b.to_string(),
                        _ => String::new(),
                    },
                };
                if usable(&v) { v } else { String::new() }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Headers;

    #[test]
    fn headers_and_body_fields_in_rule_order() {
        let rules = LabelRules {
            rules: vec![
                LabelRule {
                    name: "tenant".into(),
                    source: LabelSource::Header("x-tenant".into()),
                },
                LabelRule {
                    name: "user".into(),
                    source: LabelSource::BodyField("/user".into()),
                },
                LabelRule {
                    name: "user_id".into(),
                    source: LabelSource::BodyField("/metadata/user_id".into()),
                },
                LabelRule {
                    name: "tier".into(),
                    source: LabelSource::BodyField("/metadata/tier".into()),
                },
                LabelRule {
                    name: "missing".into(),
                    source: LabelSource::Header("x-none".into()),
                },
            ],
        };
        let headers = Headers(vec![("x-tenant".into(), b" acme ".to_vec())]);
        let body = br#"{"model":"m","user":"u-1","metadata":{"user_id":42,"tier":{"x":1}}}"#;
        let req = Request {
            method: "POST",
            path: "/v1/chat/completions",
            headers: &headers,
            body,
            body_truncated: false,
            start_ns: 0,
            end_ns: 0,
            wire_bytes: 0,
        };
        assert_eq!(rules.extract(&req), ["acme", "u-1", "42", "", ""]);
        // Too long or not printable: nothing, not a part.
        let long = "k".repeat(MAX_VALUE + 1);
        let headers = Headers(vec![("x-tenant".into(), long.into_bytes())]);
        let bad = br#"{"user":"caf\u00e9"}"#;
        let req = Request {
            headers: &headers,
            body: bad,
            ..req
        };
        assert_eq!(rules.extract(&req), ["", "", "", "", ""]);
        assert!(NO_LABELS.extract(&req).is_empty());
    }
}
