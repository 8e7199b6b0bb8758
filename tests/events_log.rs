//! Root end-to-end test of `--events-log`: the real agent watches the emulator while the official
//! Python SDKs call it; once the agent is quiescent the log has exactly one JSON line per exchange
//! of each view, each line's numbers are the exchange's, their totals equal `/metrics`, and neither
//! a secret planted in the prompt nor the clients' API keys appear in it.
//!
//! Needs root, BPF, the release agent (`LLM_OBSERVER_BIN`), the emulator and the clients' venv
//! (`LLM_OBSERVER_VENV`); under `CI=true` a missing piece fails the test instead of skipping it.

use std::time::Duration;

use llm_observer_tests::harness::{
    guard,
    quiesce::wait_quiescent,
    stack::{Agent, EmulatorProc, run_workload},
};
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SECRET: &str = "sk-planted-9f8e7d6c5b4a";
const SETTLE: Duration = Duration::from_secs(30);
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(120);

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sum of `tokens.<kind>.value` over `lines`.
fn token_sum(lines: &[&Value], kind: &str) -> u64 {
    lines
        .iter()
        .map(|l| l["tokens"][kind]["value"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn events_log_has_one_line_per_exchange_matching_the_metrics() {
    if !guard::agent_ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "20", "--token-interval-ms", "5"])
        .expect("emulator starts");
    let port = emu.addr().port().to_string();
    let dir = std::env::temp_dir().join(format!("llm-observer-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("events.jsonl");
    let path_arg = path.to_str().expect("utf-8 path");
    let agent = Agent::start(&["--port", &port, "--events-log", path_arg]).expect("agent starts");

    let (m_openai, m_anthropic) = (format!("ev-openai:{port}"), format!("ev-anthropic:{port}"));
    let prompt = format!("Why is the sky blue? {SECRET}");
    let base = emu.base_url();
    let a = run_workload(
        &base,
        &[
            "--api", "openai", "--mode", "stream", "--usage", "--n", "4", "--model", &m_openai,
            "--prompt", &prompt,
        ],
        WORKLOAD_TIMEOUT,
    )
    .expect("openai workload");
    let b = run_workload(
        &base,
        &[
            "--api",
            "anthropic",
            "--mode",
            "nonstream",
            "--n",
            "3",
            "--model",
            &m_anthropic,
            "--prompt",
            &prompt,
            "--max-tokens",
            "6",
        ],
        WORKLOAD_TIMEOUT,
    )
    .expect("anthropic workload");
    assert_eq!((a.ok(), b.ok()), (4, 3), "{:?} {:?}", a.0, b.0);

    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent");
    let text = std::fs::read_to_string(&path).expect("events log written");
    let _ = std::fs::remove_dir_all(&dir);
    let ctx = || {
        format!(
            "events log:\n{text}\nagent log:\n{}",
            tail(&agent.proc.output(), 30)
        )
    };

    for needle in [SECRET, "sky blue", "sk-emulator", "sk-ant-emulator"] {
        assert!(
            !text.contains(needle),
            "{needle:?} leaked into the events log:\n{text}"
        );
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Both views of every request: the emulator's (server) and the SDK's (client).
    assert_eq!(lines.len(), 14, "{}", ctx());
    let requests = e.sum("llm_requests_total", &[]) + e.sum("llm_client_requests_total", &[]);
    assert_eq!(lines.len() as f64, requests, "{}", ctx());

    let mut ids = std::collections::BTreeSet::new();
    for (model, api, op, n, prompt_tokens, completion) in [
        (
            &m_openai,
            "openai",
            "chat",
            4,
            a.prompt_tokens(),
            a.completion_tokens(),
        ),
        (
            &m_anthropic,
            "anthropic",
            "chat",
            3,
            b.prompt_tokens(),
            b.completion_tokens(),
        ),
    ] {
        for (role, process, prefix) in [
            ("server", "llm-emulator", "llm_"),
            ("client", "", "llm_client_"),
        ] {
            let sel: Vec<&Value> = lines
                .iter()
                .filter(|l| l["request_model"] == json!(model) && l["role"] == role)
                .collect();
            assert_eq!(sel.len(), n, "{role} {model}: {}", ctx());
            for l in &sel {
                assert_eq!(l["api"], api, "{l}");
                assert_eq!(l["operation"], op, "{l}");
                assert_eq!(l["status"], 200, "{l}");
                assert_eq!(l["error_type"], Value::Null, "{l}");
                assert_eq!(l["incomplete"], Value::Null, "{l}");
                assert_eq!(l["tokens"]["prompt"]["source"], "reported", "{l}");
                assert_eq!(l["tokens"]["completion"]["source"], "reported", "{l}");
                if !process.is_empty() {
                    assert_eq!(l["process"], process, "{l}");
                }
                // Wall-clock times, in order, and the exchange's durations.
                let t = &l["timings"];
                let start = t["request_start"].as_str().expect("start");
                let end = t["response_end"].as_str().expect("end");
                assert!(
                    start.ends_with('Z') && start <= end && l["time"] == end,
                    "{l}"
                );
                let ttft = l["ttft_seconds"].as_f64().expect("ttft");
                assert!(ttft >= 0.02, "TTFT below the emulator's 20 ms: {l}");
                assert!(
                    ids.insert(l["id"].as_str().expect("id").to_owned()),
                    "duplicate id {l}"
                );
            }
            assert_eq!(token_sum(&sel, "prompt"), prompt_tokens, "{role} {model}");
            assert_eq!(token_sum(&sel, "completion"), completion, "{role} {model}");
            // The metrics say the same.
            let by_model = [("model", model.as_str())];
            assert_eq!(
                e.sum(&format!("{prefix}requests_total"), &by_model),
                n as f64,
                "{prefix} {model}"
            );
            assert_eq!(
                e.sum(&format!("{prefix}prompt_tokens_total"), &by_model),
                prompt_tokens as f64,
                "{prefix} {model}"
            );
            assert_eq!(
                e.sum(&format!("{prefix}response_tokens_total"), &by_model),
                completion as f64,
                "{prefix} {model}"
            );
        }
    }
    assert_eq!(
        e.sum("llm_observer_dropped_total", &[("stage", "events_log")]),
        0.0
    );
}
