//! Root test: the agent's exposition, after real LLM traffic of every API and an error, passes
//! `promtool check metrics` (Debian's `prometheus` package) with no lint findings.
//!
//! Needs root, BPF, the release agent (`LLM_OBSERVER_BIN`), the emulator, curl and promtool; under
//! `CI=true` a missing piece fails the test instead of skipping it.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use llm_observer_tests::harness::{
    guard, http,
    stack::{Agent, EmulatorProc, curl_post},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");

fn missing_piece() -> Option<String> {
    let promtool = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    guard::agent_missing().or_else(|| {
        (!promtool)
            .then(|| "no promtool (apt-get install prometheus; cargo xtask setup --test)".into())
    })
}

#[test]
fn exposition_after_real_traffic_passes_promtool() {
    if let Some(why) = missing_piece() {
        guard::skip_or_fail::<()>(&why);
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "5", "--token-interval-ms", "1"])
        .expect("emulator");
    let port = emu.addr().port().to_string();
    let agent = Agent::start(&["--port", &port]).expect("agent");
    let base = emu.base_url();
    let tag = format!("promtool-{port}");
    let t = Duration::from_secs(30);
    let chat = |stream: bool| {
        json!({"model": tag, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3,
               "stream": stream, "stream_options": {"include_usage": true}})
    };
    assert_eq!(
        curl_post(
            &format!("{base}/v1/chat/completions"),
            &chat(true),
            false,
            t
        )
        .expect("openai")
        .0,
        200
    );
    assert_eq!(
        curl_post(
            &format!("{base}/v1/chat/completions"),
            &chat(false),
            false,
            t
        )
        .expect("openai")
        .0,
        200
    );
    let msg = json!({"model": tag, "max_tokens": 3, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        curl_post(&format!("{base}/v1/messages"), &msg, true, t)
            .expect("anthropic")
            .0,
        200
    );
    let generate = json!({"model": tag, "prompt": "hi", "options": {"num_predict": 3}});
    assert_eq!(
        curl_post(&format!("{base}/api/generate"), &generate, false, t)
            .expect("ollama")
            .0,
        200
    );
    let err = json!({"model": "err-429", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        curl_post(&format!("{base}/v1/chat/completions"), &err, false, t)
            .expect("429")
            .0,
        429
    );
    // Four successful requests of the tagged model and one error, in the server view.
    let e = agent
        .wait_for(Duration::from_secs(20), |e| {
            e.sum(
                "llm_requests_total",
                &[("model", tag.as_str()), ("process", "llm-emulator")],
            ) == 4.0
                && e.sum(
                    "llm_inference_errors_total",
                    &[("model", "other"), ("process", "llm-emulator")],
                ) >= 1.0
        })
        .expect("the traffic shows in /metrics");
    // A model name is admitted as a label value only from a successful exchange
    // (docs/metrics.md): the 429's model, never answered successfully, is `other`.
    assert_eq!(
        e.sum(
            "llm_inference_errors_total",
            &[
                ("model", "other"),
                ("type", "rate_limited"),
                ("process", "llm-emulator")
            ]
        ),
        1.0
    );
    assert_eq!(
        e.sum("llm_inference_errors_total", &[("model", "err-429")]),
        0.0
    );
    let text = http::request(agent.addr(), "GET", "/metrics", b"", t)
        .expect("scrape")
        .body_text();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{said}"
    );
    assert_eq!(said.trim(), "", "promtool lint findings");
}
