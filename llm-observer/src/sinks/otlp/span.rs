//! One [`ExchangeRecord`] → one OTLP span in the OpenTelemetry GenAI semantic conventions, plus
//! the resource (host, process, container, pod) it belongs to.
//!
//! Name `{gen_ai.operation.name} {gen_ai.request.model}` (MCP `tools/call`: `execute_tool {tool}`),
//! kind SERVER for the server view and CLIENT for the client view, times from the kernel's capture
//! times converted to wall clock. TTFT is both an attribute and a `gen_ai.first_token` event.

use llm_observer_decode::{Api, ErrorKind, Operation, Role, TokenCount};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value},
    trace::v1::{
        Span, Status,
        span::{Event, SpanKind},
        status::StatusCode,
    },
};

use crate::sinks::record::ExchangeRecord;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub fn string(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

pub fn int(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

fn double(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}

fn strings(key: &str, v: &[&str]) -> KeyValue {
    let values = v
        .iter()
        .map(|s| AnyValue {
            value: Some(Value::StringValue((*s).to_owned())),
        })
        .collect();
    kv(key, Value::ArrayValue(ArrayValue { values }))
}

/// `gen_ai.operation.name`: the semantic conventions' well-known values where one applies.
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat | Operation::Responses => "chat",
        Operation::TextCompletion => "text_completion",
        Operation::Embeddings => "embeddings",
        Operation::ToolCall => "execute_tool",
        other => other.as_str(),
    }
}

/// `error.type`: the bounded error kind, or the capture's own reason for an incomplete exchange.
fn error_type(r: &ExchangeRecord<'_>) -> Option<&'static str> {
    r.error_type.or(r.incomplete)
}

fn usage(attrs: &mut Vec<KeyValue>, key: &str, t: TokenCount) {
    if let Some(v) = t.value {
        attrs.push(int(key, i64::try_from(v).unwrap_or(i64::MAX)));
        attrs.push(string(&format!("{key}.source"), t.source.as_str()));
    }
}

/// The span of one exchange.
pub fn span(r: &ExchangeRecord<'_>) -> Span {
    let ex = r.exchange;
    let op = operation_name(ex.operation);
    let tool = r.mcp_tool;
    let name = match (ex.api, ex.operation, tool) {
        (Api::Mcp, Operation::ToolCall, Some(t)) => format!("execute_tool {t}"),
        (Api::Mcp, _, _) => r.mcp_method.unwrap_or("mcp").to_owned(),
        _ => match r.request_model.or(r.response_model) {
            Some(m) => format!("{op} {m}"),
            None => op.to_owned(),
        },
    };
    let mut attrs = vec![
        string("gen_ai.operation.name", op),
        string("gen_ai.provider.name", ex.api.as_str()),
    ];
    if let Some(m) = r.request_model {
        attrs.push(string("gen_ai.request.model", m));
    }
    if let Some(m) = r.response_model {
        attrs.push(string("gen_ai.response.model", m));
    }
    if let Some(n) = r.max_tokens {
        attrs.push(int(
            "gen_ai.request.max_tokens",
            i64::try_from(n).unwrap_or(i64::MAX),
        ));
    }
    if let Some(t) = r.temperature {
        attrs.push(double("gen_ai.request.temperature", t));
    }
    // The conventions ask for the choice count only when the request sets one other than 1.
    if let Some(n) = r.choices.filter(|&n| n != 1) {
        attrs.push(int(
            "gen_ai.request.choice.count",
            i64::try_from(n).unwrap_or(i64::MAX),
        ));
    }
    usage(&mut attrs, "gen_ai.usage.input_tokens", ex.tokens.prompt);
    usage(
        &mut attrs,
        "gen_ai.usage.output_tokens",
        ex.tokens.completion,
    );
    if let Some(f) = r.finish_reason {
        attrs.push(strings("gen_ai.response.finish_reasons", &[f]));
    }
    if let Some(t) = tool {
        attrs.push(string("gen_ai.tool.name", t));
    }
    if let Some(m) = r.mcp_method {
        attrs.push(string("mcp.method.name", m));
    }
    if !r.tool_calls.is_empty() {
        attrs.push(strings("llm_observer.tool_calls", &r.tool_calls));
    }
    // The server is the accepting end: the local address in the server view, the peer's in the
    // client view.
    let (server, client) = match r.role {
        Role::Server => (r.attribution.local, r.attribution.peer),
        Role::Client => (r.attribution.peer, r.attribution.local),
    };
    if let Some(s) = server {
        attrs.push(string("server.address", s.ip().to_string()));
        attrs.push(int("server.port", i64::from(s.port())));
    }
    if let Some(c) = client {
        attrs.push(string("client.address", c.ip().to_string()));
        attrs.push(int("client.port", i64::from(c.port())));
    }
    attrs.push(string("http.request.method", r.method));
    attrs.push(string("url.path", r.path));
    if let Some(s) = r.status {
        attrs.push(int("http.response.status_code", i64::from(s)));
    }
    attrs.push(kv("gen_ai.request.stream", Value::BoolValue(r.stream)));
    if let Some(e) = error_type(r) {
        attrs.push(string("error.type", e));
    }
    if let Some(t) = r.ttft_seconds {
        attrs.push(double("gen_ai.server.time_to_first_token", t));
    }
    if let Some(t) = r.tpot_seconds {
        attrs.push(double("gen_ai.server.time_per_output_token", t));
    }
    attrs.push(string("llm_observer.exchange.id", r.id.as_str()));
    let events = r
        .unix
        .first_token
        .map(|t| Event {
            time_unix_nano: t,
            name: "gen_ai.first_token".to_owned(),
            attributes: r
                .ttft_seconds
                .map(|s| vec![double("gen_ai.server.time_to_first_token", s)])
                .unwrap_or_default(),
            dropped_attributes_count: 0,
        })
        .into_iter()
        .collect();
    let failed = matches!(r.status, Some(500..)) || ex.error.is_some_and(server_side);
    Span {
        trace_id: r.ids.trace_id.to_vec(),
        span_id: r.ids.span_id.to_vec(),
        parent_span_id: r.ids.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: match r.role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        } as i32,
        start_time_unix_nano: r.unix.start,
        end_time_unix_nano: r.unix.end,
        attributes: attrs,
        events,
        status: Some(Status {
            message: String::new(),
            code: if failed || (r.role == Role::Client && ex.error.is_some()) {
                StatusCode::Error
            } else {
                StatusCode::Unset
            } as i32,
        }),
        ..Span::default()
    }
}

/// An error a server-kind span reports as its own failure (HTTP semconv: 4xx are the client's).
fn server_side(e: ErrorKind) -> bool {
    !matches!(
        e,
        ErrorKind::ClientError
            | ErrorKind::RateLimited
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::ClientCancelled
    )
}

#[cfg(test)]
mod tests {
    use llm_observer_decode::{Api, McpInfo, Operation, TokenCount};

    use super::*;
    use crate::{
        attribution::Place,
        sinks::{correlate::SpanIds, event_log::tests as fx, wallclock::WallClock},
    };

    fn ids() -> SpanIds {
        SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_choice_count_other_than_one_is_an_attribute() {
        let p = fx::process();
        let clock = WallClock::fixed(0, 0);
        let mut ex = fx::exchange();
        for (choices, want) in [
            (Some(2), Some(Value::IntValue(2))),
            (Some(1), None),
            (None, None),
        ] {
            ex.params.choices = choices;
            let r = ExchangeRecord::new(&clock, &fx::view(&p), 0, &ex, Place::default(), ids());
            assert_eq!(
                attr(&span(&r), "gen_ai.request.choice.count"),
                want.as_ref()
            );
        }
    }

    #[test]
    fn mcp_tool_calls_are_execute_tool_spans() {
        let p = fx::process();
        let mut ex = fx::exchange();
        ex.api = Api::Mcp;
        ex.operation = Operation::ToolCall;
        ex.request_model = None;
        ex.response_model = None;
        ex.tokens = Default::default();
        ex.mcp = Some(McpInfo {
            method: "tools/call".into(),
            name: Some("get_weather".into()),
            error_code: None,
        });
        let clock = WallClock::fixed(0, 0);
        let r = ExchangeRecord::new(&clock, &fx::view(&p), 0, &ex, Place::default(), ids());
        let s = span(&r);
        assert_eq!(s.name, "execute_tool get_weather");
        assert_eq!(
            attr(&s, "gen_ai.operation.name"),
            Some(&Value::StringValue("execute_tool".into()))
        );
        assert_eq!(
            attr(&s, "gen_ai.tool.name"),
            Some(&Value::StringValue("get_weather".into()))
        );
        assert_eq!(attr(&s, "gen_ai.usage.input_tokens"), None);
        assert_eq!(s.kind, SpanKind::Server as i32);
    }

    #[test]
    fn errors_set_error_type_and_status() {
        let p = fx::process();
        let mut ex = fx::exchange();
        ex.status = Some(503);
        ex.error = Some(ErrorKind::Overloaded);
        ex.tokens.completion = TokenCount::ABSENT;
        let clock = WallClock::fixed(0, 0);
        let r = ExchangeRecord::new(&clock, &fx::view(&p), 0, &ex, Place::default(), ids());
        let s = span(&r);
        assert_eq!(s.name, "chat m1");
        assert_eq!(
            attr(&s, "error.type"),
            Some(&Value::StringValue("overloaded".into()))
        );
        assert_eq!(
            s.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        assert_eq!(attr(&s, "gen_ai.usage.output_tokens"), None);
        // A client's 4xx is not the server span's failure.
        ex.status = Some(400);
        ex.error = Some(ErrorKind::ClientError);
        let r = ExchangeRecord::new(&clock, &fx::view(&p), 0, &ex, Place::default(), ids());
        assert_eq!(
            span(&r).status.map(|s| s.code),
            Some(StatusCode::Unset as i32)
        );
    }
}
