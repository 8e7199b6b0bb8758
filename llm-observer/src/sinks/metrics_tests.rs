//! Unit tests of [`Metrics`]: exact values, fake clock, fake /proc; no sleeps.

use std::sync::atomic::{AtomicU64, Ordering};

use llm_observer_decode::{
    ErrorKind, McpInfo, Operation, TokenCount, Tokens,
    exchange::{Timings, TokenSource},
};
use prometheus::core::Metric;
use prometheus::{Histogram, HistogramVec};

use super::*;
use crate::sinks::families;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn metrics(cfg: MetricsConfig) -> Metrics {
    Metrics::new(cfg, "test").unwrap()
}

fn server() -> ExchangeCtx {
    ExchangeCtx {
        role: Role::Server,
        process: "ollama".into(),
        comm: "ollama".into(),
        place: Default::default(),
        workload_labels: Vec::new(),
        pid: u32::MAX, // no such pid: memory sampling finds nothing
        peer: Some("127.0.0.1:50000".parse().unwrap()),
        stdio: false,
        provider: "self_hosted",
        server: "ollama",
    }
}

fn client() -> ExchangeCtx {
    ExchangeCtx {
        role: Role::Client,
        process: "python3".into(),
        comm: "python3".into(),
        place: Default::default(),
        workload_labels: Vec::new(),
        pid: u32::MAX,
        peer: Some("127.0.0.1:11434".parse().unwrap()),
        stdio: false,
        provider: "self_hosted",
        server: "ollama",
    }
}

fn summary(model: &str) -> RequestSummary {
    RequestSummary {
        api: Api::Ollama,
        operation: Operation::Chat,
        model: Some(model.into()),
        stream: true,
        user_labels: Vec::new(),
    }
}

/// A successful exchange starting at t=10 s and ending `latency` later.
fn ex(model: &str, stream: bool, latency: u64) -> Exchange {
    Exchange {
        params: Default::default(),
        api: Api::Ollama,
        operation: Operation::Chat,
        method: "POST".into(),
        path: "/api/chat".into(),
        request_model: Some(model.into()),
        response_model: Some(format!("{model}:latest")),
        stream,
        status: Some(200),
        timings: Timings {
            request_start_ns: 10 * S,
            request_end_ns: Some(10 * S),
            response_start_ns: Some(10 * S + MS),
            response_end_ns: Some(10 * S + latency),
            ..Timings::default()
        },
        tokens: Tokens::default(),
        cache_write_tokens: Default::default(),
        finish_reason: Some("stop".into()),
        error: None,
        incomplete: None,
        tool_calls: Vec::new(),
        tool_ids: Default::default(),
        mcp: None,
        load_duration_ns: None,
        request_bytes: 100,
        response_bytes: 200,
        body_truncated: false,
        server: None,
    }
}

fn with_stream_tokens(mut e: Exchange, ttft: u64, last: u64, tokens: TokenCount) -> Exchange {
    e.timings.first_token_ns = Some(e.timings.request_start_ns + ttft);
    e.timings.last_token_ns = Some(e.timings.request_start_ns + last);
    e.tokens.completion = tokens;
    e
}

const L: [&str; 8] = ["ollama", "chat", "llama3", "ollama", "", "", "", "ollama"];

/// Upper bound of the bucket the only observation of `h` fell into.
fn bucket_of(h: &Histogram) -> f64 {
    let m = h.metric();
    let hist = m.get_histogram();
    assert_eq!(
        hist.get_sample_count(),
        1,
        "expected exactly one observation"
    );
    hist.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() == 1)
        .map_or(f64::INFINITY, |b| b.upper_bound())
}

fn count(h: &HistogramVec, labels: &[&str]) -> u64 {
    h.with_label_values(labels).get_sample_count()
}

fn gauges_zero(m: &Metrics) {
    for g in [&m.server.active, &m.server.queue] {
        assert_eq!(g.with_label_values(&L).get(), 0);
    }
}

#[test]
fn gauges_follow_requests_and_return_to_zero() {
    let m = metrics(MetricsConfig::default());
    let active = m.server.active.with_label_values(&L);
    let queue = m.server.queue.with_label_values(&L);

    let mut a = m.started(&server(), &summary("llama3"));
    let b = m.started(&server(), &summary("llama3"));
    let c = m.started(&server(), &summary("llama3"));
    assert_eq!((active.get(), queue.get()), (3, 3));
    assert!(a.is_queued());

    m.first_token(&mut a);
    m.first_token(&mut a); // a second first token must not decrement again
    assert!(!a.is_queued());
    assert_eq!((active.get(), queue.get()), (3, 2));

    m.done(Some(a), &server(), &ex("llama3", true, S));
    assert_eq!((active.get(), queue.get()), (2, 2));
    // Done while still queued (error before any token): leaves both gauges.
    m.done(Some(b), &server(), &ex("llama3", true, S));
    assert_eq!((active.get(), queue.get()), (1, 1));
    // Evicted connection: the pipeline drops the InFlight.
    drop(c);
    gauges_zero(&m);

    // `done` without an InFlight touches no gauge.
    m.done(None, &server(), &ex("llama3", true, S));
    gauges_zero(&m);

    let cl = m.started(&client(), &summary("llama3"));
    let client_labels = [
        "ollama",
        "chat",
        "llama3",
        "python3",
        "",
        "",
        "",
        "127.0.0.1:11434",
        "self_hosted",
        "ollama",
    ];
    let client_active = m.client.active.with_label_values(&client_labels);
    assert_eq!(client_active.get(), 1);
    cl.abandon();
    assert_eq!(client_active.get(), 0);
}

#[test]
fn mcp_started_touches_no_gauge() {
    let m = metrics(MetricsConfig::default());
    let mut s = summary("x");
    s.api = Api::Mcp;
    let f = m.started(&server(), &s);
    assert!(!f.is_queued());
    assert!(!m.encode().contains("llm_active_requests{"));
}

#[test]
fn models_capped_to_other_consistently() {
    let cfg = MetricsConfig {
        max_models: 2,
        ..MetricsConfig::default()
    };
    let m = metrics(cfg);
    for model in ["a", "b", "c", "d", "a"] {
        let f = m.started(&server(), &summary(model));
        m.done(Some(f), &server(), &ex(model, false, S));
    }
    let req = |model: &str| {
        m.server
            .requests
            .with_label_values(&[
                "ollama", "chat", model, "ollama", "", "", "", "ollama", "2xx",
            ])
            .get()
    };
    assert_eq!((req("a"), req("b"), req("other")), (2, 1, 2));
    let text = m.encode();
    assert!(!text.contains("model=\"c\""), "{text}");
    // The gauges of capped models went back to 0 under the same `other` label.
    let other = ["ollama", "chat", "other", "ollama", "", "", "", "ollama"];
    assert_eq!(m.server.active.with_label_values(&other).get(), 0);
}

#[test]
fn peers_and_processes_capped() {
    let cfg = MetricsConfig {
        max_peers: 1,
        max_processes: 1,
        ..MetricsConfig::default()
    };
    let m = metrics(cfg);
    let mut c1 = client();
    m.done(None, &c1, &ex("m", false, S));
    c1.peer = Some("10.0.0.1:443".parse().unwrap());
    c1.process = "node".into();
    m.done(None, &c1, &ex("m", false, S));
    c1.peer = None;
    m.done(None, &c1, &ex("m", false, S));
    let get = |process: &str, peer: &str| {
        m.client
            .requests
            .with_label_values(&[
                "ollama",
                "chat",
                "m",
                process,
                "",
                "",
                "",
                peer,
                "self_hosted",
                "ollama",
                "2xx",
            ])
            .get()
    };
    assert_eq!(get("python3", "127.0.0.1:11434"), 1);
    assert_eq!(get("other", "other"), 1);
    assert_eq!(get("other", "unknown"), 1);
}

#[test]
fn client_series_carry_the_provider() {
    let m = metrics(MetricsConfig::default());
    let mut c = client();
    c.provider = "openai";
    let f = m.started(&c, &summary("gpt-4o"));
    let active = |provider: &str| {
        m.client
            .active
            .with_label_values(&[
                "ollama",
                "chat",
                "gpt-4o",
                "python3",
                "",
                "",
                "",
                "127.0.0.1:11434",
                provider,
                "ollama",
            ])
            .get()
    };
    assert_eq!(active("openai"), 1);
    m.done(Some(f), &c, &ex("gpt-4o", false, S));
    assert_eq!(active("openai"), 0);
    let text = m.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("llm_client_requests_total{"))
        .expect("a client request series");
    assert!(line.contains("provider=\"openai\""), "{line}");
    // The server view has no provider label.
    m.done(None, &server(), &ex("gpt-4o", false, S));
    let text = m.encode();
    assert!(
        text.lines()
            .filter(|l| l.starts_with("llm_requests_total{"))
            .all(|l| !l.contains("provider=")),
        "{text}"
    );
}

#[test]
fn latency_buckets_and_success_only() {
    let m = metrics(MetricsConfig::default());
    // 0.32 s is a boundary: `le` is inclusive.
    m.done(None, &server(), &ex("llama3", false, 320 * MS));
    assert_eq!(bucket_of(&m.server.latency.with_label_values(&L)), 0.32);
    assert_eq!(
        m.server.latency.with_label_values(&L).get_sample_sum(),
        0.32
    );

    let mut failed = ex("llama3", false, 5 * MS);
    failed.status = Some(400);
    failed.error = Some(ErrorKind::ContextLengthExceeded);
    m.done(None, &server(), &failed);
    assert_eq!(
        count(&m.server.latency, &L),
        1,
        "failures are not latency samples"
    );
    let mut l = L.to_vec();
    l.push("context_length_exceeded");
    assert_eq!(m.server.errors.with_label_values(&l).get(), 1);

    // Beyond the last bucket: only +Inf.
    let m = metrics(MetricsConfig::default());
    m.done(None, &server(), &ex("llama3", false, 100 * S));
    assert_eq!(
        bucket_of(&m.server.latency.with_label_values(&L)),
        f64::INFINITY
    );
}

#[test]
fn ttft_streams_only_with_otel_buckets() {
    let m = metrics(MetricsConfig::default());
    let e = with_stream_tokens(ex("llama3", true, S), 60 * MS, 500 * MS, TokenCount::ABSENT);
    m.done(None, &server(), &e);
    let h = m.server.ttft.with_label_values(&L);
    assert_eq!(bucket_of(&h), 0.06);
    assert_eq!(h.get_sample_sum(), 0.06);

    let m = metrics(MetricsConfig::default());
    let e = with_stream_tokens(
        ex("llama3", false, S),
        60 * MS,
        500 * MS,
        TokenCount::ABSENT,
    );
    m.done(None, &server(), &e);
    assert_eq!(count(&m.server.ttft, &L), 0, "non-streaming: no TTFT");

    // Client view: OTel client duration buckets (0.04, 0.08, ...).
    let m = metrics(MetricsConfig::default());
    let e = with_stream_tokens(ex("llama3", true, S), 60 * MS, 500 * MS, TokenCount::ABSENT);
    m.done(None, &client(), &e);
    let cl = [
        "ollama",
        "chat",
        "llama3",
        "python3",
        "",
        "",
        "",
        "127.0.0.1:11434",
        "self_hosted",
        "ollama",
    ];
    assert_eq!(bucket_of(&m.client.ttft.with_label_values(&cl)), 0.08);
    assert_eq!(bucket_of(&m.client.latency.with_label_values(&cl)), 1.28);
    assert_eq!(
        count(&m.server.ttft, &L),
        0,
        "client view never feeds server families"
    );
}

#[test]
fn tpot_definition() {
    // 11 tokens, first at +100 ms, last at +600 ms: 500 ms / 10 = 50 ms per token, 20 tokens/s.
    let e = with_stream_tokens(
        ex("llama3", true, S),
        100 * MS,
        600 * MS,
        TokenCount::reported(11),
    );
    assert_eq!(families::tpot_seconds(&e), Some(0.05));
    assert_eq!(families::decode_tokens_per_second(&e), Some(20.0));
    let m = metrics(MetricsConfig::default());
    m.done(None, &server(), &e);
    assert_eq!(bucket_of(&m.server.tpot.with_label_values(&L)), 0.05);
    assert_eq!(
        bucket_of(&m.server.decode_speed.with_label_values(&L)),
        20.0
    );

    // Counted tokens are used too (a lower bound on tokens, so TPOT is an upper bound).
    let counted = with_stream_tokens(ex("m", true, S), 0, 300 * MS, TokenCount::counted(4));
    assert_eq!(families::tpot_seconds(&counted), Some(0.1));

    // Fewer than 2 output tokens, unknown count, or not a stream: undefined.
    for e in [
        with_stream_tokens(ex("m", true, S), 0, 0, TokenCount::reported(1)),
        with_stream_tokens(ex("m", true, S), 0, 0, TokenCount::reported(0)),
        with_stream_tokens(ex("m", true, S), 0, 9 * MS, TokenCount::ABSENT),
        with_stream_tokens(ex("m", false, S), 0, 9 * MS, TokenCount::reported(50)),
    ] {
        assert_eq!(families::tpot_seconds(&e), None, "{:?}", e.tokens);
    }
    // All tokens in one event: TPOT 0, decode speed undefined (not infinite).
    let burst = with_stream_tokens(ex("m", true, S), 5 * MS, 5 * MS, TokenCount::reported(8));
    assert_eq!(families::tpot_seconds(&burst), Some(0.0));
    assert_eq!(families::decode_tokens_per_second(&burst), None);
}

#[test]
fn token_counters_by_source() {
    let m = metrics(MetricsConfig::default());
    let mut e = ex("llama3", true, S);
    e.tokens.prompt = TokenCount::reported(30);
    e.tokens.completion = TokenCount::reported(12);
    m.done(None, &server(), &e);
    e.tokens.prompt = TokenCount::ABSENT;
    e.tokens.completion = TokenCount::counted(5);
    m.done(None, &server(), &e);

    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        L.iter().chain(extra).copied().collect()
    }
    let resp = |s: &str| {
        m.server
            .response_tokens
            .with_label_values(&with(&[s]))
            .get()
    };
    assert_eq!((resp("reported"), resp("counted")), (12, 5));
    assert_eq!(m.server.tokens_generated.with_label_values(&L).get(), 12);
    let prompt = m
        .server
        .prompt_tokens
        .with_label_values(&with(&["reported"]));
    assert_eq!(prompt.get(), 30);
    let src = |t: &str, s: &str| {
        m.server
            .token_source
            .with_label_values(&with(&[t, s]))
            .get()
    };
    assert_eq!(src("prompt", "reported"), 1);
    assert_eq!(src("prompt", "absent"), 1);
    assert_eq!(src("completion", "reported"), 1);
    assert_eq!(src("completion", "counted"), 1);
    assert_eq!(TokenSource::default().as_str(), "absent");
}

#[test]
fn model_load_definition() {
    let m = metrics(MetricsConfig::default());
    let mut load = ex("llama3", false, S);
    load.operation = Operation::ModelLoad;
    load.load_duration_ns = Some(5 * MS); // explicit load: observed whatever its size
    m.done(None, &server(), &load);
    let ll = [
        "ollama",
        "model_load",
        "llama3",
        "ollama",
        "",
        "",
        "",
        "ollama",
    ];
    assert_eq!(bucket_of(&m.server.model_load.with_label_values(&ll)), 0.01);

    let mut warm = ex("llama3", false, S);
    warm.load_duration_ns = Some(families::MODEL_LOAD_THRESHOLD_NS - 1);
    m.done(None, &server(), &warm);
    assert_eq!(count(&m.server.model_load, &L), 0, "warm request: no load");
    let mut cold = warm.clone();
    cold.load_duration_ns = Some(2_500 * MS);
    m.done(None, &server(), &cold);
    assert_eq!(bucket_of(&m.server.model_load.with_label_values(&L)), 2.5);
    // The latest load beside the histogram: a later, shorter load replaces it.
    assert_eq!(m.server.model_last_load.with_label_values(&L).get(), 2.5);
    cold.load_duration_ns = Some(200 * MS);
    m.done(None, &server(), &cold);
    assert_eq!(m.server.model_last_load.with_label_values(&L).get(), 0.2);
    assert_eq!(m.server.model_last_load.with_label_values(&ll).get(), 0.005);
}

#[test]
fn tokens_per_second_window_with_fake_clock() {
    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let env = ScrapeEnv {
        now_ns: Arc::new(move || clock.load(Ordering::Relaxed)),
        proc_root: std::env::temp_dir().join("llm-observer-no-such-proc"),
    };
    let cfg = MetricsConfig {
        tokens_per_second_window: Duration::from_secs(10),
        ..MetricsConfig::default()
    };
    let m = Metrics::with_env(cfg, "test", env).unwrap();
    // Stream: 41 tokens between t=10.0 s and t=14.0 s (first/last token events).
    let e = with_stream_tokens(
        ex("llama3", true, 5 * S),
        0,
        4 * S,
        TokenCount::reported(41),
    );
    m.done(None, &server(), &e);
    let tps = || {
        m.encode();
        m.server
            .tokens_per_second
            .with_label_values(&["llama3", "ollama", "", "", ""])
            .get()
    };
    now.store(15 * S, Ordering::Relaxed);
    assert_eq!(tps(), 4.1);
    now.store(30 * S, Ordering::Relaxed);
    assert_eq!(tps(), 0.0);
}

#[test]
fn mcp_routed_to_mcp_families_only() {
    let m = metrics(MetricsConfig::default());
    let mut e = ex("unused", false, 20 * MS);
    e.api = Api::Mcp;
    e.operation = Operation::ToolCall;
    e.request_model = None;
    e.mcp = Some(McpInfo {
        method: "tools/call".into(),
        name: Some("search".into()),
        error_code: None,
    });
    m.done(None, &server(), &e);
    e.mcp = Some(McpInfo {
        method: "resources/read".into(),
        name: Some("file:///etc/passwd".into()),
        error_code: Some(-32002),
    });
    e.error = Some(ErrorKind::JsonRpcError);
    m.done(None, &client(), &e);
    let text = m.encode();
    assert!(!text.contains("llm_requests_total{"), "{text}");
    assert!(!text.contains("passwd"), "resource URIs are never labels");
    let server_calls = m.mcp.server_requests.with_label_values(&[
        "ollama",
        "",
        "",
        "",
        "tools/call",
        "search",
        "none",
    ]);
    assert_eq!(server_calls.get(), 1);
    let client_calls = m.mcp.client_requests.with_label_values(&[
        "python3",
        "",
        "",
        "",
        "127.0.0.1:11434",
        "resources/read",
        "none",
        "jsonrpc_error",
    ]);
    assert_eq!(client_calls.get(), 1);
    let d = m
        .mcp
        .server_duration
        .with_label_values(&["ollama", "", "", "", "tools/call"]);
    assert_eq!(bucket_of(&d), 0.02);
    let api = m.self_metrics.exchanges.with_label_values(&["mcp"]);
    assert_eq!(api.get(), 2);
}

#[test]
fn lost_events_absolute_total() {
    let m = metrics(MetricsConfig::default());
    let sm = m.self_metrics();
    sm.set_lost_events(5, 0);
    sm.set_lost_events(5, 0);
    sm.set_lost_events(9, 0);
    assert_eq!(sm.lost_events.get(), 9);
    sm.set_lost_events(2, 0); // the kernel counters restarted from 0
    assert_eq!(sm.lost_events.get(), 11);

    // Children of one vec keep separate totals.
    let ingress = sm.captured_bytes.with_label_values(&["ingress"]);
    let egress = sm.captured_bytes.with_label_values(&["egress"]);
    for round in 1..=3 {
        sm.set_total(&ingress, 100 * round);
        sm.set_total(&egress, 7 * round);
    }
    assert_eq!((ingress.get(), egress.get()), (300, 21));
}

fn failed(model: &str, status: u16, kind: ErrorKind) -> Exchange {
    Exchange {
        status: Some(status),
        error: Some(kind),
        ..ex(model, false, S)
    }
}

#[test]
fn junk_models_cannot_crowd_out_a_real_model() {
    let cfg = MetricsConfig {
        max_models: 32,
        ..MetricsConfig::default()
    };
    let m = metrics(cfg);
    // 10,000 requests naming made-up models, each answered 404 by the server, several in flight at
    // once.
    for i in 0..10_000 {
        let name = format!("junk-{i}");
        let f = m.started(&server(), &summary(&name));
        m.done(
            Some(f),
            &server(),
            &failed(&name, 404, ErrorKind::ClientError),
        );
    }
    let f = m.started(&server(), &summary("llama3"));
    m.done(Some(f), &server(), &ex("llama3", false, S));
    let req = |model: &str, status: &str| {
        m.server
            .requests
            .with_label_values(&[
                "ollama", "chat", model, "ollama", "", "", "", "ollama", status,
            ])
            .get()
    };
    assert_eq!(req("llama3", "2xx"), 1);
    assert_eq!(req("other", "4xx"), 10_000);
    let text = m.encode();
    assert!(!text.contains("junk-"), "junk left series behind:\n{text}");
    gauges_zero(&m);
}

#[test]
fn in_flight_gauges_name_an_unadmitted_model_then_drop_it() {
    let m = metrics(MetricsConfig::default());
    let a = m.started(&server(), &summary("llama3"));
    let b = m.started(&server(), &summary("llama3"));
    let active = || {
        m.server
            .active
            .with_label_values(&["ollama", "chat", "llama3", "ollama", "", "", "", "ollama"])
            .get()
    };
    assert_eq!(active(), 2, "named from the first request on");
    m.done(
        Some(a),
        &server(),
        &failed("llama3", 500, ErrorKind::ServerError),
    );
    assert_eq!(active(), 1);
    m.done(
        Some(b),
        &server(),
        &failed("llama3", 500, ErrorKind::ServerError),
    );
    // Never admitted and nothing in flight: its in-flight series are gone.
    let text = m.encode();
    assert!(!text.contains("llama3"), "{text}");
}

#[test]
fn idle_label_values_expire_with_their_series() {
    let now = Arc::new(AtomicU64::new(100 * S));
    let clock = now.clone();
    let env = ScrapeEnv {
        now_ns: Arc::new(move || clock.load(Ordering::Relaxed)),
        proc_root: std::env::temp_dir().join("llm-observer-no-such-proc"),
    };
    let cfg = MetricsConfig {
        max_models: 1,
        label_idle_timeout: Duration::from_secs(60),
        ..MetricsConfig::default()
    };
    let m = Metrics::with_env(cfg, "test", env).unwrap();
    m.done(None, &server(), &ex("a", false, S));
    m.done(None, &server(), &ex("b", false, S));
    let req = |model: &str| {
        m.server
            .requests
            .with_label_values(&[
                "ollama", "chat", model, "ollama", "", "", "", "ollama", "2xx",
            ])
            .get()
    };
    assert_eq!((req("a"), req("other")), (1, 1));
    now.store(160 * S, Ordering::Relaxed);
    m.expire_labels();
    assert!(m.encode().contains("model=\"a\""), "not idle past 60 s yet");
    now.store(161 * S, Ordering::Relaxed);
    m.expire_labels();
    let text = m.encode();
    assert!(!text.contains("model=\"a\""), "{text}");
    // The slot is free: `b` is named now.
    m.done(None, &server(), &ex("b", false, S));
    assert_eq!(req("b"), 1);
}

#[test]
fn incomplete_exchanges_are_the_agents_not_the_servers() {
    let m = metrics(MetricsConfig::default());
    let f = m.started(&server(), &summary("llama3"));
    let e = Exchange {
        incomplete: Some(llm_observer_decode::Incomplete::CaptureGap),
        status: Some(200),
        ..ex("llama3", true, S)
    };
    m.done(Some(f), &server(), &e);
    let text = m.encode();
    assert!(!text.contains("llm_requests_total{"), "{text}");
    assert!(!text.contains("llm_inference_errors_total{"), "{text}");
    let n = m
        .self_metrics
        .incomplete_exchanges
        .with_label_values(&["server", "capture_gap"])
        .get();
    assert_eq!(n, 1);
    gauges_zero(&m);
}

/// `llm_inference_errors_total{type="server_error"}` of `L` with one user label of `value`.
fn server_errors(m: &Metrics, value: &str) -> u64 {
    let labels: Vec<&str> = L.iter().copied().chain([value, "server_error"]).collect();
    m.server.errors.with_label_values(&labels).get()
}

#[test]
fn user_labels_on_the_request_families_admitted_by_success() {
    let m = metrics(MetricsConfig {
        user_labels: vec![super::UserLabel {
            name: "tenant".into(),
            max_values: 1,
            from_wire: true,
        }],
        ..MetricsConfig::default()
    });
    let with_tenant = |mut e: Exchange, t: &str| {
        e.params.user_labels = vec![t.to_owned()];
        e
    };
    let mut s = summary("llama3");
    s.user_labels = vec!["acme".into()];
    // In flight before any success: the value is held, so the gauge names it.
    let f = m.started(&server(), &s);
    fn tenant(t: &str) -> Vec<&str> {
        L.iter().copied().chain([t]).collect()
    }
    assert_eq!(m.server.active.with_label_values(&tenant("acme")).get(), 1);
    m.done(
        Some(f),
        &server(),
        &with_tenant(ex("llama3", false, S), "acme"),
    );
    let reqs = |t: &str| {
        let mut l = tenant(t);
        l.push("2xx");
        m.server.requests.with_label_values(&l).get()
    };
    assert_eq!(reqs("acme"), 1);
    // The cap (1) is taken by acme: a second tenant's success is `other`; a request without the
    // header is "" (no value), which takes no slot.
    m.done(
        None,
        &server(),
        &with_tenant(ex("llama3", false, S), "globex"),
    );
    m.done(None, &server(), &with_tenant(ex("llama3", false, S), ""));
    assert_eq!((reqs("other"), reqs("")), (1, 1));
    // Junk never admits: a failed request's new value is `other` too.
    let junk = with_tenant(failed("llama3", 500, ErrorKind::ServerError), "junk");
    m.done(None, &server(), &junk);
    assert_eq!(server_errors(&m, "other"), 1);
    let text = m.encode();
    assert!(!text.contains("globex") && !text.contains("junk"), "{text}");
}

#[test]
fn node_side_user_labels_are_admitted_whatever_the_outcome() {
    let m = metrics(MetricsConfig {
        user_labels: vec![super::UserLabel {
            name: "app".into(),
            max_values: 2,
            from_wire: false,
        }],
        ..MetricsConfig::default()
    });
    let mut ctx = server();
    ctx.workload_labels = vec!["web".into()];
    // The model is admitted by a success without the label (a server outside any pod)...
    m.done(None, &server(), &ex("llama3", false, S));
    // ...and a pod label comes from this node, not the request: a failure names it too.
    m.done(None, &ctx, &failed("llama3", 500, ErrorKind::ServerError));
    assert_eq!(server_errors(&m, "web"), 1);
}
