//! The e2e harness on its own, without the agent or BPF: the emulator binary driven by curl and by
//! the official Python clients, each client's summary checked against what the emulator logged.
//! The Python part needs the clients' virtualenv (`LLM_OBSERVER_VENV`, default `.venv`) and says so
//! when it is missing rather than failing a machine that has none.

use std::process::Command;
use std::time::Duration;

use llm_observer_tests::harness::process::{Stream, run_to_end};
use llm_observer_tests::harness::stack::{
    EmulatorProc, WorkloadSummary, curl_post, run_workload, venv_python,
};
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const TIMEOUT: Duration = Duration::from_secs(60);

fn emulator() -> EmulatorProc {
    EmulatorProc::start(EMULATOR, &["--ttft-ms", "20", "--token-interval-ms", "2"])
        .expect("emulator starts")
}

#[test]
fn curl_against_the_emulator_binary() {
    let mut emu = emulator();
    let url = |path: &str| format!("{}{path}", emu.base_url());
    let (status, body) = curl_post(
        &url("/api/generate"),
        &json!({"model": "m1", "prompt": "one two three", "options": {"num_predict": 4}}),
        false,
        TIMEOUT,
    )
    .expect("curl runs");
    assert_eq!(status, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        (
            lines[4]["prompt_eval_count"].clone(),
            lines[4]["eval_count"].clone()
        ),
        (json!(3), json!(4))
    );

    let (status, body) = curl_post(
        &url("/v1/messages"),
        &json!({"model": "err-429", "max_tokens": 3, "messages": []}),
        true,
        TIMEOUT,
    )
    .expect("curl runs");
    assert_eq!(status, 429);
    assert!(body.contains("rate_limit_error"));

    // SIGTERM is a clean shutdown.
    let exit = emu
        .proc
        .terminate(Duration::from_secs(10))
        .expect("emulator stops");
    assert!(exit.success(), "{exit}");
    assert_eq!(emu.request_log().len(), 2, "{}", emu.proc.output());
}

#[test]
fn demo_mode_runs_its_curl_workload() {
    let mut cmd = Command::new(EMULATOR);
    cmd.args([
        "demo",
        "--ttft-ms",
        "5",
        "--token-interval-ms",
        "1",
        "--quiet",
    ]);
    let (status, out, err) = run_to_end("llm-emulator demo", cmd, TIMEOUT).expect("demo runs");
    assert!(status.success(), "{}", err.join("\n"));
    let summary = out
        .iter()
        .find(|l| l.starts_with("==> sent"))
        .expect("a summary line");
    assert!(summary.contains("sent 7 requests"), "{summary}");
    assert!(
        summary.contains("saw 7 requests, 5 complete, 1 HTTP errors, 1 in-stream errors"),
        "{summary}"
    );
}

/// The clients' virtualenv, or `None` (with a note) where there is none.
fn have_venv() -> bool {
    match venv_python() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping the Python clients: {e:#}");
            false
        }
    }
}

fn workload(emu: &EmulatorProc, args: &[&str]) -> WorkloadSummary {
    run_workload(&emu.base_url(), args, TIMEOUT).expect("workload runs")
}

#[test]
fn python_clients_see_exact_usage() {
    if !have_venv() {
        return;
    }
    let emu = emulator();
    let s = workload(
        &emu,
        &[
            "--api",
            "openai",
            "--mode",
            "stream",
            "--usage",
            "--n",
            "3",
            "--max-tokens",
            "6",
        ],
    );
    // "Why is the sky blue?" is 5 words.
    assert_eq!(
        (
            s.requests(),
            s.ok(),
            s.prompt_tokens(),
            s.completion_tokens()
        ),
        (3, 3, 15, 18)
    );
    assert_eq!(s.content_events(), 18);
    let s = workload(
        &emu,
        &[
            "--api",
            "anthropic",
            "--mode",
            "stream",
            "--model",
            "cached-2",
        ],
    );
    assert_eq!(
        (s.ok(), s.prompt_tokens(), s.completion_tokens()),
        (1, 5, 8)
    );
    assert_eq!(s.0["cached_tokens"], 2);
    let s = workload(
        &emu,
        &[
            "--api",
            "ollama",
            "--endpoint",
            "generate",
            "--mode",
            "nonstream",
            "--n",
            "2",
        ],
    );
    assert_eq!(
        (s.ok(), s.prompt_tokens(), s.completion_tokens()),
        (2, 10, 16)
    );
    let s = workload(
        &emu,
        &[
            "--api", "openai", "--client", "curl", "--mode", "stream", "--usage",
        ],
    );
    assert_eq!(
        (s.ok(), s.prompt_tokens(), s.completion_tokens()),
        (1, 5, 8)
    );
}

#[test]
fn python_clients_see_each_error_kind() {
    if !have_venv() {
        return;
    }
    let emu = emulator();
    let cases: [(&str, &str, &str); 6] = [
        ("openai", "err-429", "RateLimitError:429"),
        ("anthropic", "err-529", "OverloadedError:529"),
        ("ollama", "err-500", "ResponseError:500"),
        ("openai", "err-after-200", "APIError"),
        ("ollama", "err-after-200", "ResponseError"),
        ("anthropic", "die-mid-stream", "RemoteProtocolError"),
    ];
    for (api, model, want) in cases {
        let s = workload(&emu, &["--api", api, "--mode", "stream", "--model", model]);
        assert_eq!(
            s.errors(),
            vec![(want.to_owned(), 1)],
            "{api} {model}: {:?}",
            s.0
        );
        assert_eq!(s.ok(), 0);
    }
}

#[test]
fn keepalive_uses_one_connection_and_cancel_is_seen_by_the_server() {
    if !have_venv() {
        return;
    }
    let mut emu = emulator();
    let s = workload(
        &emu,
        &[
            "--api",
            "openai",
            "--mode",
            "nonstream",
            "--keepalive",
            "--n",
            "20",
        ],
    );
    assert_eq!(s.ok(), 20);
    let log = emu.request_log();
    assert_eq!(log.len(), 20);
    assert!(log.iter().all(|l| l.contains(" conn=1 ")), "{log:#?}");

    let s = workload(
        &emu,
        &[
            "--api",
            "anthropic",
            "--model",
            "slow-50",
            "--max-tokens",
            "100",
            "--cancel-after-tokens",
            "3",
        ],
    );
    assert_eq!(
        (s.cancelled(), s.content_events(), s.error_count()),
        (1, 3, 0)
    );
    emu.proc
        .wait_for_line(Duration::from_secs(30), |stream, l| {
            (stream == Stream::Stderr && l.contains("slow-50") && l.contains("outcome=client_gone"))
                .then_some(())
        })
        .expect("the emulator notices the cancel");

    let s = workload(
        &emu,
        &[
            "--api",
            "ollama",
            "--mode",
            "stream",
            "--concurrency",
            "16",
            "--n",
            "32",
        ],
    );
    assert_eq!((s.ok(), s.completion_tokens()), (32, 32 * 8));
}
