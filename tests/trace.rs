//! Root tests of `llm-observer trace`: one JSON line per decoded exchange (no prompt text, no
//! credentials), and `--raw` lines with credential headers redacted.
//!
//! Like the other root tests they need root, BPF, the release agent (`LLM_OBSERVER_BIN`) and the
//! emulator; under `CI=true` a missing piece fails the test instead of skipping it.

use std::{process::Command, time::Duration};

use llm_observer_tests::harness::{
    guard,
    process::{Proc, Stream},
    stack::{EmulatorProc, path_from_env},
};
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SECRET: &str = "sk-local-test";
const PROMPT: &str = "Why is the sky blue?";

/// Waits until `p` has printed `n` stdout lines (the pump threads deliver them after the fact).
fn wait_stdout_lines(p: &mut Proc, n: usize) {
    let mut seen = 0;
    p.wait_for_line(Duration::from_secs(30), |s, _| {
        seen += usize::from(s == Stream::Stdout);
        (seen == n).then_some(())
    })
    .expect("trace lines");
}

/// Starts `llm-observer trace <args>` and waits until its capture is attached.
fn trace(args: &[&str]) -> Proc {
    let bin = path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer");
    let mut cmd = Command::new(bin);
    cmd.arg("trace").args(args);
    let mut p = Proc::spawn("llm-observer trace", cmd).expect("start the trace");
    p.wait_for_line(Duration::from_secs(60), |s, l| {
        (s == Stream::Stderr && l.contains("tracking")).then_some(())
    })
    .expect("trace attaches");
    p
}

fn request(stream: bool) -> Value {
    json!({
        "model": "trace-model",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 4,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

fn curl_with_secret(url: &str, body: &Value) {
    let status = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/json",
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {SECRET}"),
            "-d",
            &body.to_string(),
            url,
        ])
        .status()
        .expect("run curl");
    assert!(status.success(), "curl failed: {status}");
}

#[test]
fn trace_prints_one_exchange_line_per_view_without_text() {
    if !guard::agent_ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "20", "--token-interval-ms", "5"])
        .expect("emulator");
    let port = emu.addr().port().to_string();
    // Two exchanges: the emulator's server view and curl's client view of the same request.
    let mut t = trace(&["--port", &port, "--count", "2"]);
    curl_with_secret(
        &format!("{}/v1/chat/completions", emu.base_url()),
        &request(true),
    );
    wait_stdout_lines(&mut t, 2);
    t.wait_exit(Duration::from_secs(30))
        .expect("trace exits after two lines");
    let lines = t.lines(Stream::Stdout);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mut roles = Vec::new();
    for line in &lines {
        assert!(
            !line.contains("sky") && !line.contains(SECRET),
            "text or secret leaked: {line}"
        );
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["type"], "exchange", "{line}");
        let ex = &v["exchange"];
        assert_eq!(ex["api"], "openai");
        assert_eq!(ex["operation"], "chat");
        assert_eq!(ex["method"], "POST");
        assert_eq!(ex["path"], "/v1/chat/completions");
        assert_eq!(ex["request_model"], "trace-model");
        assert_eq!(ex["stream"], true);
        assert_eq!(ex["status"], 200);
        assert_eq!(ex["error"], Value::Null);
        assert_eq!(
            ex["tokens"]["completion"],
            json!({"value": 4, "source": "reported"})
        );
        // The emulator counts prompt tokens as whitespace-separated words of the messages.
        assert_eq!(
            ex["tokens"]["prompt"],
            json!({"value": 5, "source": "reported"})
        );
        assert_eq!(ex["timings"]["content_events"], 4);
        let ttft = ex["timings"]["first_token_ns"]
            .as_u64()
            .expect("first token")
            - ex["timings"]["request_start_ns"].as_u64().expect("start");
        assert!(
            ttft >= 20_000_000,
            "TTFT {ttft} ns below the emulator's 20 ms"
        );
        let role = v["conn"]["role"].as_str().expect("role").to_owned();
        let comm = v["conn"]["comm"].as_str().expect("comm").to_owned();
        roles.push((role, comm));
    }
    roles.sort();
    assert_eq!(
        roles,
        vec![
            ("client".to_owned(), "curl".to_owned()),
            ("server".to_owned(), "llm-emulator".to_owned())
        ]
    );
}

#[test]
fn raw_trace_redacts_credentials() {
    if !guard::agent_ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "1", "--token-interval-ms", "1"])
        .expect("emulator");
    let port = emu.addr().port().to_string();
    // conn opens (2), the request as sent and as received (2), response bytes, closes: the request
    // carrying the Authorization header is within the first six events of the connection.
    let mut t = trace(&["--raw", "--port", &port, "--count", "6"]);
    curl_with_secret(
        &format!("{}/v1/chat/completions", emu.base_url()),
        &request(false),
    );
    wait_stdout_lines(&mut t, 6);
    t.wait_exit(Duration::from_secs(30))
        .expect("trace exits after six lines");
    let lines = t.lines(Stream::Stdout);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains(SECRET)),
        "secret leaked: {lines:?}"
    );
    let redacted = lines
        .iter()
        .filter(|l| l.contains("Authorization: [redacted]"))
        .count();
    assert!(redacted >= 1, "no redacted request line among {lines:?}");
}
