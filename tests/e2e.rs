//! Root end-to-end tests: the real agent (BPF loaded) watches the loopback emulator while real
//! clients (the official Python SDKs, curl) talk to it; `/metrics` must show exactly what the
//! clients saw.
//!
//! They need root, a BPF-capable kernel, a built agent (`LLM_OBSERVER_BIN`, default
//! `target/release/llm-observer`) and the clients' virtualenv (`LLM_OBSERVER_VENV`, default `.venv`),
//! so they are `#[ignore]`d in the default run:
//!
//! ```text
//! cargo build --release -p llm-observer
//! python3 -m venv .venv && .venv/bin/pip install -r tests/clients/requirements.txt
//! cargo test -p llm-observer-tests --test e2e -- --ignored
//! ```
//!
//! Each test starts its own emulator and agent, and the tests run one at a time. The agent watches
//! the whole node (only `port_filter_keeps_every_server_exchange` uses `--port`), so expectations
//! select series by model names no other traffic uses and by the emulator's process name. Every
//! wait has a deadline.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use llm_observer_tests::harness::expect::{Expected, wait_for_expected};
use llm_observer_tests::harness::exposition::Exposition;
use llm_observer_tests::harness::http::KeepAlive;
use llm_observer_tests::harness::stack::{
    Agent, EmulatorProc, WorkloadSummary, curl_post, run_workload,
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
/// Process name (comm) of the server side, the `process` label of the server view.
const SERVER: &str = "llm-emulator";
const TTFT: f64 = 0.1;
const INTERVAL: f64 = 0.01;
/// "Why is the sky blue?", the workload's default prompt.
const PROMPT_WORDS: f64 = 5.0;
/// The workload's default max_tokens, so the emulator's output count.
const OUTPUT: f64 = 8.0;
/// Bound on how long the agent may take to reflect finished traffic in /metrics.
const SETTLE: Duration = Duration::from_secs(20);
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// One agent at a time: agents are node-wide, and two at once would double the BPF load for nothing.
static SERIAL: Mutex<()> = Mutex::new(());

struct Stack {
    agent: Agent,
    emu: EmulatorProc,
    _serial: MutexGuard<'static, ()>,
}

fn stack() -> Stack {
    stack_with(false)
}

/// `port_filter`: start the agent with `--port <emulator port>`.
fn stack_with(port_filter: bool) -> Stack {
    let (serial, emu) = emulator_first();
    with_agent(serial, emu, port_filter)
}

/// The emulator alone (holding the one-test-at-a-time lock), for tests that act before the agent.
fn emulator_first() -> (MutexGuard<'static, ()>, EmulatorProc) {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        llm_observer_tests::harness::guard::is_root(),
        "the e2e tests load BPF programs: run them as root"
    );
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "100", "--token-interval-ms", "10"])
        .expect("emulator starts");
    (serial, emu)
}

fn with_agent(serial: MutexGuard<'static, ()>, emu: EmulatorProc, port_filter: bool) -> Stack {
    let port = emu.addr().port().to_string();
    let args: &[&str] = if port_filter { &["--port", &port] } else { &[] };
    let agent = Agent::start(args).expect("agent starts and serves /metrics");
    Stack {
        agent,
        emu,
        _serial: serial,
    }
}

impl Stack {
    /// A model name unique to this emulator: a `:port` tag, which the emulator ignores when it
    /// reads a scenario from the name, keeps series apart from any other run on the node.
    fn model(&self, base: &str) -> String {
        format!("{base}:{}", self.emu.addr().port())
    }

    fn workload(&self, args: &[&str]) -> WorkloadSummary {
        run_workload(&self.emu.base_url(), args, WORKLOAD_TIMEOUT).expect("workload runs")
    }

    fn expect(&self, expected: &Expected) -> Exposition {
        wait_for_expected(self.agent.addr(), expected, SETTLE).unwrap_or_else(|e| {
            panic!(
                "{e:#}\nemulator log (tail):\n{}\nagent log (tail):\n{}",
                tail(&self.emu.proc.output(), 40),
                tail(&self.agent.proc.output(), 40)
            )
        })
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Labels of the server view of one model.
fn server<'a>(api: &'a str, operation: &'a str, model: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("api", api),
        ("operation", operation),
        ("model", model),
        ("process", SERVER),
    ]
}

fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

/// Request count, reported token totals, no errors, gauges back at 0: what every successful batch
/// of `n` requests must leave behind in the server view.
fn served_ok(labels: &[(&str, &str)], n: f64, prompt: f64, completion: f64) -> Expected {
    Expected::new()
        .exactly("llm_requests_total", &with(labels, &[("status", "2xx")]), n)
        .exactly("llm_requests_total", labels, n)
        .exactly(
            "llm_prompt_tokens_total",
            &with(labels, &[("source", "reported")]),
            prompt,
        )
        .exactly(
            "llm_response_tokens_total",
            &with(labels, &[("source", "reported")]),
            completion,
        )
        .exactly("llm_tokens_generated_total", labels, completion)
        .exactly("llm_inference_errors_total", labels, 0.0)
        .exactly("llm_inference_latency_seconds_count", labels, n)
        .exactly("llm_active_requests", labels, 0.0)
        .exactly("llm_queue_size", labels, 0.0)
}

fn mean(e: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let h = e
        .histogram(family, labels)
        .unwrap_or_else(|| panic!("{family} {labels:?} present"));
    h.sum / h.count
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn openai_chat_stream_with_usage_matches_the_client() {
    let s = stack();
    let model_name = s.model("e2e-openai-stream");
    let model = model_name.as_str();
    let c = s.workload(&[
        "--api", "openai", "--mode", "stream", "--usage", "--n", "5", "--model", model,
    ]);
    assert_eq!(
        (c.ok(), c.prompt_tokens(), c.completion_tokens()),
        (5, 25, 40),
        "{:?}",
        c.0
    );
    let labels = server("openai", "chat", model);
    let e = s.expect(
        &served_ok(
            &labels,
            5.0,
            c.prompt_tokens() as f64,
            c.completion_tokens() as f64,
        )
        .exactly("llm_time_to_first_token_seconds_count", &labels, 5.0)
        .exactly("llm_time_per_output_token_seconds_count", &labels, 5.0)
        .exactly(
            "llm_token_usage_source_total",
            &with(
                &labels,
                &[("token_type", "completion"), ("source", "reported")],
            ),
            5.0,
        )
        // The client's own view of the same calls.
        .exactly(
            "llm_client_requests_total",
            &[("api", "openai"), ("model", model), ("status", "2xx")],
            5.0,
        )
        .exactly(
            "llm_client_response_tokens_total",
            &[("model", model), ("source", "reported")],
            40.0,
        ),
    );
    // Timing comes from kernel capture times of the emulator's writes: TTFT is at least the
    // emulator's delay (never early), TPOT is near its interval, latency covers all tokens.
    let ttft = mean(&e, "llm_time_to_first_token_seconds", &labels);
    assert!((TTFT..TTFT + 1.0).contains(&ttft), "mean TTFT {ttft}");
    let tpot = mean(&e, "llm_time_per_output_token_seconds", &labels);
    assert!(
        (INTERVAL * 0.5..INTERVAL * 5.0).contains(&tpot),
        "mean TPOT {tpot}"
    );
    let latency = mean(&e, "llm_inference_latency_seconds", &labels);
    assert!(
        latency >= TTFT + (OUTPUT - 1.0) * INTERVAL,
        "mean latency {latency}"
    );
    // Bucket placement, ±1 bucket for timing noise. Expected: TTFT ≈ 0.10 s → (0.1, 0.25];
    // TPOT ≈ 0.01 s → (0.01, 0.025]; latency ≈ 0.17 s → (0.16, 0.32].
    for (family, expected, below, within) in [
        ("llm_time_to_first_token_seconds", "(0.1, 0.25]", 0.08, 0.5),
        (
            "llm_time_per_output_token_seconds",
            "(0.01, 0.025]",
            0.0,
            0.05,
        ),
        ("llm_inference_latency_seconds", "(0.16, 0.32]", 0.08, 0.64),
    ] {
        let h = e.histogram(family, &labels).expect("histogram present");
        let early = if below > 0.0 {
            h.count_le(below).expect("bucket bound")
        } else {
            0.0
        };
        let inside = h.count_le(within).expect("bucket bound");
        println!(
            "| {family}: 5 observations in {expected} ±1 bucket | 5 | {} |",
            inside - early
        );
        assert_eq!(
            (early, inside),
            (0.0, 5.0),
            "{family} buckets {:?}",
            h.buckets
        );
    }
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn curl_stream_without_usage_is_counted_from_events() {
    let s = stack();
    let model_name = s.model("e2e-curl");
    let model = model_name.as_str();
    let body = json!({"model": model, "stream": true, "max_tokens": 6, "messages": [{"role": "user", "content": "count to six"}]});
    let (status, text) = curl_post(
        &format!("{}/v1/chat/completions", s.emu.base_url()),
        &body,
        false,
        Duration::from_secs(30),
    )
    .expect("curl runs");
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let labels = server("openai", "chat", model);
    s.expect(
        &Expected::new()
            .exactly(
                "llm_requests_total",
                &with(&labels, &[("status", "2xx")]),
                1.0,
            )
            .exactly(
                "llm_response_tokens_total",
                &with(&labels, &[("source", "counted")]),
                6.0,
            )
            .exactly(
                "llm_response_tokens_total",
                &with(&labels, &[("source", "reported")]),
                0.0,
            )
            .exactly("llm_tokens_generated_total", &labels, 0.0)
            .exactly(
                "llm_token_usage_source_total",
                &with(&labels, &[("token_type", "prompt"), ("source", "absent")]),
                1.0,
            )
            .exactly("llm_time_to_first_token_seconds_count", &labels, 1.0),
    );
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn openai_completions_and_nonstream_have_no_ttft() {
    let s = stack();
    let model_name = s.model("e2e-completions");
    let model = model_name.as_str();
    let c = s.workload(&[
        "--api",
        "openai",
        "--endpoint",
        "completions",
        "--mode",
        "nonstream",
        "--n",
        "3",
        "--model",
        model,
    ]);
    assert_eq!(c.ok(), 3);
    let labels = server("openai", "text_completion", model);
    s.expect(
        &served_ok(&labels, 3.0, 3.0 * PROMPT_WORDS, 3.0 * OUTPUT).exactly(
            "llm_time_to_first_token_seconds_count",
            &labels,
            0.0,
        ),
    );
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn anthropic_messages_count_cached_prompt_tokens() {
    let s = stack();
    let cached = s.model("cached-2");
    let cached = cached.as_str();
    let plain_model = s.model("e2e-anthropic");
    let plain_model = plain_model.as_str();
    let c = s.workload(&[
        "--api",
        "anthropic",
        "--mode",
        "stream",
        "--n",
        "3",
        "--model",
        cached,
    ]);
    assert_eq!(
        (c.ok(), c.prompt_tokens(), c.completion_tokens()),
        (3, 15, 24),
        "{:?}",
        c.0
    );
    let n = s.workload(&[
        "--api",
        "anthropic",
        "--mode",
        "nonstream",
        "--n",
        "2",
        "--model",
        plain_model,
    ]);
    assert_eq!(n.ok(), 2);
    let streamed = server("anthropic", "chat", cached);
    let plain = server("anthropic", "chat", plain_model);
    // Prompt tokens include cache reads (input_tokens excludes them on the wire).
    let mut expected = served_ok(&streamed, 3.0, 15.0, 24.0)
        .exactly("llm_time_to_first_token_seconds_count", &streamed, 3.0)
        .exactly("llm_time_per_output_token_seconds_count", &streamed, 3.0);
    expected
        .0
        .extend(served_ok(&plain, 2.0, 2.0 * PROMPT_WORDS, 2.0 * OUTPUT).0);
    s.expect(&expected);
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn ollama_native_chat_generate_and_load() {
    let s = stack();
    let llama = s.model("e2e-llama");
    let llama = llama.as_str();
    let c = s.workload(&[
        "--api",
        "ollama",
        "--endpoint",
        "chat",
        "--mode",
        "stream",
        "--n",
        "3",
        "--model",
        llama,
    ]);
    assert_eq!(c.ok(), 3);
    let g = s.workload(&[
        "--api",
        "ollama",
        "--endpoint",
        "generate",
        "--mode",
        "nonstream",
        "--n",
        "2",
        "--model",
        llama,
    ]);
    assert_eq!(g.ok(), 2);
    let (status, _) = curl_post(
        &format!("{}/api/generate", s.emu.base_url()),
        &json!({"model": llama}),
        false,
        Duration::from_secs(30),
    )
    .expect("curl runs");
    assert_eq!(status, 200);
    let chat = server("ollama", "chat", llama);
    let generate = server("ollama", "text_completion", llama);
    let mut expected = served_ok(&chat, 3.0, 3.0 * PROMPT_WORDS, 3.0 * OUTPUT).exactly(
        "llm_time_to_first_token_seconds_count",
        &chat,
        3.0,
    );
    expected
        .0
        .extend(served_ok(&generate, 2.0, 2.0 * PROMPT_WORDS, 2.0 * OUTPUT).0);
    let expected = expected.exactly(
        "llm_requests_total",
        &server("ollama", "model_load", llama),
        1.0,
    );
    s.expect(&expected);
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn every_error_kind_is_counted_once() {
    let s = stack();
    // (api, workload args, model, expected error type, expected status class)
    let cases: [(&str, &str, &str, &str, &str); 10] = [
        ("openai", "nonstream", "err-429", "rate_limited", "4xx"),
        (
            "openai",
            "nonstream",
            "err-400",
            "context_length_exceeded",
            "4xx",
        ),
        ("openai", "nonstream", "err-500", "server_error", "5xx"),
        ("anthropic", "nonstream", "err-529", "overloaded", "5xx"),
        ("openai", "stream", "err-after-200", "stream_error", "2xx"),
        // Anthropic's in-stream error names its kind (overloaded_error), which the agent keeps.
        ("anthropic", "stream", "err-after-200", "overloaded", "2xx"),
        ("ollama", "stream", "err-after-200", "stream_error", "2xx"),
        ("openai", "stream", "die-mid-stream", "server_closed", "2xx"),
        (
            "anthropic",
            "stream",
            "reset-mid-stream",
            "server_closed",
            "2xx",
        ),
        ("openai", "stream", "slow-50", "client_cancelled", "2xx"),
    ];
    // No scenario model ever succeeds, so none is admitted as a label value (junk-proof
    // admission, docs/metrics.md): every one of them is counted under `model="other"`, exactly
    // once per request, and no scenario name appears in any series.
    let mut errors: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    let mut requests: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    let mut names = Vec::new();
    for (api, mode, scenario, kind, class) in cases {
        let model_name = s.model(scenario);
        let model = model_name.as_str();
        let mut args = vec![
            "--api",
            api,
            "--mode",
            mode,
            "--model",
            model,
            "--max-tokens",
            "20",
        ];
        if scenario.starts_with("slow") {
            args.extend(["--cancel-after-tokens", "3"]);
        }
        let c = s.workload(&args);
        assert_eq!(c.requests(), 1);
        assert_eq!(c.ok(), 0, "{api} {model}: {:?}", c.0);
        *errors.entry((api, kind)).or_default() += 1.0;
        *requests.entry((api, class)).or_default() += 1.0;
        names.push(model_name);
    }
    let mut expected = Expected::new();
    for ((api, kind), n) in &errors {
        let labels = [("api", *api), ("model", "other"), ("process", SERVER)];
        expected = expected.exactly(
            "llm_inference_errors_total",
            &with(&labels, &[("type", kind)]),
            *n,
        );
    }
    for ((api, class), n) in &requests {
        let labels = [("api", *api), ("model", "other"), ("process", SERVER)];
        expected = expected.exactly(
            "llm_requests_total",
            &with(&labels, &[("status", class)]),
            *n,
        );
    }
    expected = expected
        .exactly(
            "llm_inference_errors_total",
            &[("model", "other"), ("process", SERVER)],
            10.0,
        )
        .exactly(
            "llm_requests_total",
            &[("model", "other"), ("process", SERVER)],
            10.0,
        )
        .exactly("llm_active_requests", &[("process", SERVER)], 0.0)
        .exactly("llm_queue_size", &[("process", SERVER)], 0.0);
    let last = s.expect(&expected);
    // What the server itself reports loaded (the inventory poller's /api/ps families) is the
    // server's word, not a wire value waiting for admission: the emulator lists every model it
    // was asked for, and a poll round may or may not fall within this test.
    const INVENTORY: [&str; 5] = [
        "llm_model_loaded_info",
        "llm_model_size_bytes",
        "llm_model_vram_bytes",
        "llm_model_context_length",
        "llm_model_expires_timestamp_seconds",
    ];
    for name in &names {
        let left: Vec<String> = last
            .samples
            .iter()
            .filter(|x| !INVENTORY.contains(&x.name.as_str()))
            .filter(|x| x.labels.values().any(|v| v == name))
            .map(|x| format!("{} {:?} {}", x.name, x.labels, x.value))
            .collect();
        assert!(
            left.is_empty(),
            "a model that never succeeded left a series: {name}:\n{}",
            left.join("\n")
        );
    }
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn keepalive_requests_on_one_connection_are_each_counted() {
    let s = stack();
    let keepalive = s.model("e2e-keepalive");
    let keepalive = keepalive.as_str();
    let c = s.workload(&[
        "--api",
        "ollama",
        "--mode",
        "nonstream",
        "--keepalive",
        "--n",
        "200",
        "--max-tokens",
        "2",
        "--model",
        keepalive,
    ]);
    assert_eq!(c.ok(), 200);
    // One accepted connection carried all of them (the emulator numbers its connections).
    let log = s.emu.request_log();
    assert_eq!(log.len(), 200);
    assert!(log.iter().all(|l| l.contains(" conn=1 ")), "{log:#?}");
    let labels = server("ollama", "chat", keepalive);
    s.expect(&served_ok(&labels, 200.0, 200.0 * PROMPT_WORDS, 400.0));
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn port_filter_keeps_every_server_exchange() {
    // Short exchanges on fresh connections (one curl each), with the agent filtered to the
    // emulator's port: both ends of every exchange must still be seen.
    let s = stack_with(true);
    let rate_limited = s.model("err-429");
    let rate_limited = rate_limited.as_str();
    let port_model = s.model("e2e-port");
    let port_model = port_model.as_str();
    let url = format!("{}/v1/chat/completions", s.emu.base_url());
    for model in [
        port_model,
        port_model,
        port_model,
        rate_limited,
        rate_limited,
    ] {
        let body = json!({"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "a b"}]});
        curl_post(&url, &body, false, Duration::from_secs(30)).expect("curl runs");
    }
    let ok = server("openai", "chat", port_model);
    // A model that never succeeded is not admitted as a label value: `other`.
    let failed = server("openai", "chat", "other");
    let peer = s.emu.addr().to_string();
    s.expect(
        &served_ok(&ok, 3.0, 6.0, 9.0)
            .exactly(
                "llm_requests_total",
                &with(&failed, &[("status", "4xx")]),
                2.0,
            )
            .exactly(
                "llm_inference_errors_total",
                &with(&failed, &[("type", "rate_limited")]),
                2.0,
            )
            .exactly("llm_client_requests_total", &[("model", port_model)], 3.0)
            .exactly(
                "llm_client_requests_total",
                &[("model", "other"), ("peer", &peer), ("status", "4xx")],
                2.0,
            )
            .exactly("llm_client_requests_total", &[("model", rate_limited)], 0.0),
    );
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn sixty_four_concurrent_streams() {
    let s = stack();
    let concurrent = s.model("e2e-concurrent");
    let concurrent = concurrent.as_str();
    let args: Vec<String> = [
        "--api",
        "openai",
        "--mode",
        "stream",
        "--usage",
        "--concurrency",
        "64",
        "--n",
        "64",
        "--model",
        concurrent,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let base = s.emu.base_url();
    let run = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_workload(&base, &args, WORKLOAD_TIMEOUT).expect("workload runs")
    });
    // Sample the in-flight gauges while the 64 streams run (each waits 100 ms for its first
    // token, so both gauges are up for a while): the peaks must be above zero.
    let labels = server("openai", "chat", concurrent);
    let (mut peak_active, mut peak_queue) = (0.0f64, 0.0f64);
    while !run.is_finished() {
        if let Ok(e) = s.agent.scrape() {
            peak_active = peak_active.max(e.sum("llm_active_requests", &labels));
            peak_queue = peak_queue.max(e.sum("llm_queue_size", &labels));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = run.join().expect("workload thread");
    assert_eq!((c.ok(), c.completion_tokens()), (64, 64 * 8), "{:?}", c.0);
    println!("| peak llm_active_requests during the run | > 0 | {peak_active} |");
    println!("| peak llm_queue_size during the run | > 0 | {peak_queue} |");
    assert!(
        peak_active > 0.0 && peak_queue > 0.0,
        "gauges never rose: active {peak_active}, queue {peak_queue}"
    );
    // ...and back to exactly 0 afterwards (served_ok checks both gauges).
    s.expect(
        &served_ok(&labels, 64.0, 64.0 * PROMPT_WORDS, 64.0 * OUTPUT)
            .exactly("llm_time_to_first_token_seconds_count", &labels, 64.0)
            .exactly("llm_client_requests_total", &[("model", concurrent)], 64.0),
    );
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn a_connection_opened_before_the_agent_is_seen_from_its_next_request() {
    let (serial, emu) = emulator_first();
    let model = format!("e2e-preexisting:{}", emu.addr().port());
    let body = json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]});
    let timeout = Duration::from_secs(30);
    let mut conn = KeepAlive::connect(emu.addr(), timeout).expect("connect");
    let r = conn
        .post_json("/v1/chat/completions", &body, timeout)
        .expect("request before the agent");
    assert_eq!(r.status, 200);
    let s = with_agent(serial, emu, false);
    for _ in 0..3 {
        let r = conn
            .post_json("/v1/chat/completions", &body, timeout)
            .expect("request after the agent started");
        assert_eq!(r.status, 200);
    }
    assert!(
        s.emu.request_log().iter().all(|l| l.contains(" conn=1 ")),
        "one connection throughout"
    );
    // Only the requests after the agent started, from both ends of the connection it found in /proc.
    let labels = server("openai", "chat", &model);
    s.expect(&served_ok(&labels, 3.0, 9.0, 12.0).exactly(
        "llm_client_requests_total",
        &[("model", model.as_str()), ("status", "2xx")],
        3.0,
    ));
}
