//! Root tests of knowing the servers: a server that hands each request to a child runner over
//! loopback HTTP (the emulator's runner mode, shaped like Ollama's serve → runner) is counted once
//! per user request, with the runner's exact token counts, and its hops only in
//! `llm_observer_internal_exchanges_total`. Compared once, after the agent is quiescent.
//!
//! Needs root, BPF and the release agent (`LLM_OBSERVER_BIN`); under `CI=true` a missing piece
//! fails the test instead of skipping it.

use std::time::Duration;

use llm_observer_tests::harness::{
    expect::{Expected, wait_for_expected},
    guard,
    stack::{Agent, EmulatorProc, curl_post, curl_status},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(30);

fn ready() -> bool {
    match guard::agent_missing() {
        Some(why) => guard::skip_or_fail::<()>(&why).is_some(),
        None => true,
    }
}

#[test]
#[ignore = "needs root, BPF and the release agent"]
fn runner_hops_are_counted_once_with_the_runners_exact_tokens() {
    if !ready() {
        return;
    }
    let emu = EmulatorProc::start(
        EMULATOR,
        &["--runner", "--ttft-ms", "20", "--token-interval-ms", "5"],
    )
    .expect("emulator starts in runner mode");
    let agent = Agent::start(&[]).expect("agent starts and serves /metrics");
    let model = format!("servers-runner:{}", emu.addr().port());
    const N: u64 = 3;
    // "why is the sky blue": 5 prompt words, the emulator's prompt tokens.
    let (prompt, output) = (5u64, 6u64);
    for _ in 0..N {
        // Streamed without include_usage: the outer answer carries no counts of its own.
        let body = json!({
            "model": model,
            "stream": true,
            "max_tokens": output,
            "messages": [{"role": "user", "content": "why is the sky blue"}],
        });
        let (status, text) = curl_post(
            &format!("{}/v1/chat/completions", emu.base_url()),
            &body,
            false,
            Duration::from_secs(30),
        )
        .expect("curl runs");
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains("\"usage\""), "no usage in the outer stream");
    }
    let m = model.as_str();
    let (n, p, o) = (N as f64, (N * prompt) as f64, (N * output) as f64);
    let expected = Expected::new()
        // One server view per user request: the serve process's, none of the runner's.
        .exactly("llm_requests_total", &[("model", m)], n)
        .exactly(
            "llm_requests_total",
            &[
                ("model", m),
                ("api", "openai"),
                ("status", "2xx"),
                ("server", "unknown"),
            ],
            n,
        )
        .exactly(
            "llm_requests_total",
            &[("api", "llamacpp"), ("process", "llm-emulator")],
            0.0,
        )
        // The runner's exact counts completed the outer exchange.
        .exactly(
            "llm_prompt_tokens_total",
            &[("model", m), ("source", "reported")],
            p,
        )
        .exactly(
            "llm_response_tokens_total",
            &[("model", m), ("source", "reported")],
            o,
        )
        .exactly(
            "llm_response_tokens_total",
            &[("model", m), ("source", "counted")],
            0.0,
        )
        // curl's own view: what it received (counted stream events), once per request.
        .exactly("llm_client_requests_total", &[("model", m)], n)
        .exactly(
            "llm_client_response_tokens_total",
            &[("model", m), ("source", "counted")],
            o,
        )
        .exactly(
            "llm_client_requests_total",
            &[("api", "llamacpp"), ("process", "llm-emulator")],
            0.0,
        )
        // Each hop seen from both ends, in its own family.
        .exactly(
            "llm_observer_internal_exchanges_total",
            &[("view", "server"), ("kind", "child")],
            n,
        )
        .exactly(
            "llm_observer_internal_exchanges_total",
            &[("view", "client"), ("kind", "child")],
            n,
        )
        .exactly("llm_active_requests", &[("model", m)], 0.0)
        .exactly(
            "llm_client_active_requests",
            &[("process", "llm-emulator")],
            0.0,
        );
    let e = wait_for_expected(agent.addr(), &expected, SETTLE).unwrap_or_else(|e| {
        panic!(
            "{e:#}\nemulator log:\n{}\nagent log:\n{}",
            emu.proc.output(),
            agent.proc.output()
        )
    });
    println!("{}", expected.table(&e));
}

#[test]
#[ignore = "needs root, BPF and the release agent"]
fn batched_prompts_and_choices_are_counted_per_request() {
    if !ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "5", "--token-interval-ms", "1"])
        .expect("emulator starts");
    let agent = Agent::start(&["--port", &emu.addr().port().to_string()]).expect("agent starts");
    let model = format!("servers-batch:{}", emu.addr().port());
    // 3 prompts with n = 2, then one tokenized prompt (token ids) with the default n.
    for body in [
        json!({"model": model, "prompt": ["a b", "c", "d e f"], "n": 2, "max_tokens": 2}),
        json!({"model": model, "prompt": [101, 102, 103], "max_tokens": 2}),
    ] {
        let (status, text) = curl_post(
            &format!("{}/v1/completions", emu.base_url()),
            &body,
            false,
            Duration::from_secs(30),
        )
        .expect("curl runs");
        assert_eq!(status, 200, "{text}");
    }
    let e = llm_observer_tests::harness::quiesce::wait_quiescent(agent.addr(), SETTLE)
        .expect("agent quiescent");
    let m = [("model", model.as_str())];
    assert_eq!(e.sum("llm_requests_total", &m), 2.0);
    assert_eq!(e.sum("llm_request_prompts_total", &m), 4.0);
    assert_eq!(e.sum("llm_request_choices_total", &m), 7.0);
    // curl's client view counts the same.
    assert_eq!(e.sum("llm_client_request_prompts_total", &m), 4.0);
    assert_eq!(e.sum("llm_client_request_choices_total", &m), 7.0);
}

#[test]
#[ignore = "needs root, BPF and the release agent"]
fn batch_api_calls_are_counted_by_operation() {
    if !ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &[]).expect("emulator starts");
    let agent = Agent::start(&["--port", &emu.addr().port().to_string()]).expect("agent starts");
    let base = emu.base_url();
    let create = json!({"input_file_id": "file-emu1", "endpoint": "/v1/chat/completions",
        "completion_window": "24h"});
    let (status, text) = curl_post(
        &format!("{base}/v1/batches"),
        &create,
        false,
        Duration::from_secs(30),
    )
    .expect("curl runs");
    assert_eq!(status, 200, "{text}");
    let (status, text) = curl_post(
        &format!("{base}/v1/batches/batch_emu1/cancel"),
        &json!({}),
        false,
        Duration::from_secs(30),
    )
    .expect("curl runs");
    assert_eq!(status, 200, "{text}");
    // Two reads of one batch and one listing, with GET.
    for path in [
        "/v1/batches/batch_emu1",
        "/v1/batches/batch_emu1",
        "/v1/batches?limit=5",
    ] {
        let url = format!("{base}{path}");
        assert_eq!(curl_status(&[&url]).expect("curl runs"), "200", "{url}");
    }
    let e = llm_observer_tests::harness::quiesce::wait_quiescent(agent.addr(), SETTLE)
        .expect("agent quiescent");
    for (op, n) in [
        ("batch_create", 1.0),
        ("batch_cancel", 1.0),
        ("batch_retrieve", 2.0),
        ("batch_list", 1.0),
    ] {
        let l = [("api", "openai"), ("operation", op), ("status", "2xx")];
        assert_eq!(e.sum("llm_requests_total", &l), n, "{op}");
        assert_eq!(
            e.sum("llm_client_requests_total", &l),
            n,
            "{op}: curl's view"
        );
    }
    assert_eq!(e.sum("llm_requests_total", &[]), 5.0);
    assert_eq!(e.sum("llm_inference_errors_total", &[]), 0.0);
}
