//! Unit tests of the agent families fed through [`Metrics::done`]: exact values, no sleeps.

use llm_observer_decode::exchange::Timings;
use llm_observer_decode::{ErrorKind, Operation, TokenCount, ToolIds, ToolUse};

use super::*;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn agent(pid: u32) -> ExchangeCtx {
    ExchangeCtx {
        role: Role::Client,
        process: "agent".into(),
        comm: "python3".into(),
        place: Default::default(),
        workload_labels: Vec::new(),
        pid,
        peer: Some("127.0.0.1:8000".parse().unwrap()),
        stdio: false,
        provider: "self_hosted",
        server: "unknown",
    }
}

/// A successful OpenAI chat exchange from `start` to `end` (ns).
fn chat(start: u64, end: u64, calls: &[(&str, &str)], results: &[&str]) -> Exchange {
    Exchange {
        api: Api::Openai,
        operation: Operation::Chat,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        request_model: Some("m1".into()),
        response_model: Some("m1".into()),
        stream: false,
        status: Some(200),
        timings: Timings {
            request_start_ns: start,
            request_end_ns: Some(start),
            response_start_ns: Some(start + MS),
            response_end_ns: Some(end),
            ..Timings::default()
        },
        tokens: Default::default(),
        cache_write_tokens: Default::default(),
        finish_reason: Some("tool_calls".into()),
        error: None,
        incomplete: None,
        tool_calls: calls.iter().map(|(_, n)| (*n).to_string()).collect(),
        tool_ids: ToolIds {
            calls: calls
                .iter()
                .map(|(id, name)| ToolUse {
                    id: (*id).into(),
                    name: (*name).into(),
                })
                .collect(),
            results: results.iter().map(|r| (*r).to_string()).collect(),
        },
        mcp: None,
        load_duration_ns: None,
        request_bytes: 100,
        response_bytes: 200,
        body_truncated: false,
        params: Default::default(),
        server: None,
    }
}

fn exec(m: &Metrics, tool: &str) -> (u64, f64) {
    let h = m
        .agent
        .tool_execution
        .with_label_values(&["agent", "", "", "", tool]);
    (h.get_sample_count(), h.get_sample_sum())
}

fn dropped(m: &Metrics, reason: &str) -> u64 {
    m.agent
        .tool_calls_dropped
        .with_label_values(&[reason])
        .get()
}

#[test]
fn tool_execution_is_response_end_to_result_request_start() {
    let m = Metrics::new(MetricsConfig::default(), "test").unwrap();
    // Turn 1 asks for two tools; turn 2 answers both, 1.25 s after turn 1 ended.
    m.done(
        None,
        &agent(7),
        &chat(
            10 * S,
            11 * S,
            &[("c1", "get_weather"), ("c2", "get_time")],
            &[],
        ),
    );
    m.done(
        None,
        &agent(7),
        &chat(
            12 * S + 250 * MS,
            13 * S,
            &[("c3", "get_weather")],
            &["c1", "c2"],
        ),
    );
    // Turn 3 repeats the history (c1, c2 again) and answers c3.
    m.done(
        None,
        &agent(7),
        &chat(13 * S + 500 * MS, 14 * S, &[], &["c1", "c2", "c3"]),
    );
    assert_eq!(exec(&m, "get_weather"), (2, 1.25 + 0.5));
    assert_eq!(exec(&m, "get_time"), (1, 1.25));
    // Another process quoting the same ids measures nothing.
    m.done(None, &agent(8), &chat(15 * S, 16 * S, &[], &["c1"]));
    assert_eq!(exec(&m, "get_weather").0, 2);
    assert_eq!(dropped(&m, "full") + dropped(&m, "expired"), 0);
}

#[test]
fn failed_responses_ask_for_nothing_and_limits_are_counted() {
    let cfg = MetricsConfig {
        max_pending_tool_calls: 1,
        tool_call_timeout: std::time::Duration::from_secs(60),
        ..MetricsConfig::default()
    };
    let m = Metrics::new(cfg, "test").unwrap();
    let mut cut = chat(S, 2 * S, &[("x", "f")], &[]);
    cut.error = Some(ErrorKind::ServerClosed);
    m.done(None, &agent(1), &cut);
    m.done(None, &agent(1), &chat(3 * S, 4 * S, &[], &["x"]));
    assert_eq!(exec(&m, "f").0, 0);
    // A full table evicts the older call.
    m.done(
        None,
        &agent(1),
        &chat(5 * S, 6 * S, &[("a", "f"), ("b", "f")], &[]),
    );
    assert_eq!(dropped(&m, "full"), 1);
    // b expires: its result comes 61 s after the call.
    m.done(None, &agent(1), &chat(67 * S, 68 * S, &[], &["a", "b"]));
    assert_eq!(dropped(&m, "expired"), 1);
    assert_eq!(exec(&m, "f").0, 0);
    // A process that exits takes its calls along (no count: nobody's fault).
    m.done(None, &agent(2), &chat(S, 2 * S, &[("z", "f")], &[]));
    m.forget_pid(2);
    m.done(None, &agent(2), &chat(3 * S, 4 * S, &[], &["z"]));
    assert_eq!(exec(&m, "f").0, 0);
}

#[test]
fn cost_of_priced_models_and_a_count_of_unpriced_ones() {
    let prices = super::super::prices::PriceTable::parse(
        "[[model]]\nname = \"m1\"\ninput = 6250.0\noutput = 31250.0\n",
        "test.toml",
    )
    .unwrap();
    let m = Metrics::new(
        MetricsConfig {
            prices,
            ..MetricsConfig::default()
        },
        "test",
    )
    .unwrap();
    fn labels(model: &str) -> [&str; 10] {
        [
            "openai",
            "chat",
            model,
            "agent",
            "",
            "",
            "",
            "127.0.0.1:8000",
            "self_hosted",
            "unknown",
        ]
    }
    let mut ex = chat(S, 2 * S, &[], &[]);
    ex.tokens.prompt = TokenCount::reported(5);
    ex.tokens.completion = TokenCount::reported(8);
    for _ in 0..3 {
        m.done(None, &agent(1), &ex);
    }
    // 5 × $0.00625 + 8 × $0.03125 = $0.28125 per request, exactly representable.
    let cost = m.agent.cost.with_label_values(&labels("m1")).get();
    assert_eq!(cost, 3.0 * 0.28125);
    assert_eq!(m.agent.unpriced.with_label_values(&labels("m1")).get(), 0);
    // An unpriced model is counted, never priced at zero.
    let mut other = ex.clone();
    other.request_model = Some("llama3".into());
    other.response_model = None;
    m.done(None, &agent(1), &other);
    assert_eq!(
        m.agent.unpriced.with_label_values(&labels("llama3")).get(),
        1
    );
    assert!(
        !m.encode().contains(
            "llm_client_cost_usd_total{api=\"openai\",operation=\"chat\",model=\"llama3\""
        )
    );
    // No tokens: neither.
    let mut bare = other.clone();
    bare.tokens = Default::default();
    m.done(None, &agent(1), &bare);
    assert_eq!(
        m.agent.unpriced.with_label_values(&labels("llama3")).get(),
        1
    );
}
