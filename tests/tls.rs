//! Root tests of TLS plaintext capture (uprobes on OpenSSL's `SSL_read`/`SSL_write`): real HTTPS
//! with a self-signed certificate, terminated by nginx (Debian's, linked to libssl.so.3) in front
//! of the loopback emulator, and called by clients that link libssl.so.3: curl and the official
//! OpenAI Python SDK (CPython's `ssl`).
//!
//! What each view must show, exactly, once the agent has applied everything:
//! - the client view of curl and of the SDK (their TLS connections to nginx);
//! - the server view of nginx (its TLS connections from the clients), and nginx's and the
//!   emulator's plain-HTTP hop behind it;
//! - the TLS connections are decoded, never counted as another protocol (and with `--no-tls` the
//!   same traffic is: the control that shows the probes are what makes the difference);
//! - a client already connected when the agent starts is captured from its next call.
//!
//! They need root, BPF, nginx, curl, openssl, a built agent and the clients' venv (see e2e.rs).

use std::process::Command;
use std::time::Duration;

use llm_observer_tests::harness::expect::Expected;
use llm_observer_tests::harness::faults::{settle, signal};
use llm_observer_tests::harness::process::{Proc, Stream, run_to_end};
use llm_observer_tests::harness::stack::{Agent, venv_python, workspace_root};
use llm_observer_tests::harness::tls_stack::{SETTLE, Stack, TIMEOUT, calls, expect};
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");

fn servers(tag: &str) -> Stack {
    llm_observer_tests::harness::tls_stack::servers(EMULATOR, tag)
}

#[test]
#[ignore = "needs root, BPF, nginx, curl, the release agent and the clients' venv"]
fn https_calls_are_decoded_in_client_and_server_views() {
    let s = servers("views");
    let agent = Agent::start(&[]).expect("agent starts");
    // One model per client: the views are told apart by model and peer, not by the short-lived
    // curl's process name.
    let (curl_model, sdk_model) = (s.model("tls-curl"), s.model("tls-sdk"));
    let (curl_prompt, curl_completion) = s.curl(&curl_model, 2);
    let c = s.sdk(&[
        "--api", "openai", "--mode", "stream", "--usage", "--n", "3", "--model", &sdk_model,
    ]);
    assert_eq!(c.ok(), 3, "{:?}", c.0);
    let (peer, upstream) = (s.peer(), s.upstream());
    let mut e = Expected::new();
    for (m, n, prompt, completion) in [
        (curl_model.as_str(), 2.0, curl_prompt, curl_completion),
        (
            sdk_model.as_str(),
            3.0,
            c.prompt_tokens(),
            c.completion_tokens(),
        ),
    ] {
        let (prompt, completion) = (prompt as f64, completion as f64);
        // The client's view over TLS (its calls to nginx).
        e = calls(
            e,
            true,
            &[("model", m), ("peer", &peer)],
            n,
            prompt,
            completion,
        );
        // nginx's server view over TLS.
        e = calls(
            e,
            false,
            &[("model", m), ("process", "nginx")],
            n,
            prompt,
            completion,
        );
        // The plain hop behind it: nginx as a client, the emulator as the server.
        e = calls(
            e,
            true,
            &[("model", m), ("process", "nginx"), ("peer", &upstream)],
            n,
            prompt,
            completion,
        );
        e = calls(
            e,
            false,
            &[("model", m), ("process", "llm-emulator")],
            n,
            prompt,
            completion,
        );
        e = e.exactly("llm_inference_errors_total", &[("model", m)], 0.0);
    }
    e = e
        // The SDK's three streams (curl's answers are not streamed).
        .exactly(
            "llm_client_time_to_first_token_seconds_count",
            &[("model", sdk_model.as_str()), ("peer", &peer)],
            3.0,
        )
        .exactly(
            "llm_client_time_to_first_token_seconds_count",
            &[("model", curl_model.as_str()), ("peer", &peer)],
            0.0,
        )
        .at_least("llm_observer_tls_libraries", &[], 1.0)
        .exactly("llm_observer_tls_attach_failures_total", &[], 0.0);
    expect(&agent, &s, &e);
}

/// The agent filtered to nginx: everything it captures is this test's, so node-wide counters are
/// exact. With the probes the TLS connections are decoded and none is another protocol; with
/// `--no-tls` each one is.
#[test]
#[ignore = "needs root, BPF, nginx, curl, the release agent"]
fn tls_connections_are_decoded_not_other_protocol() {
    let s = servers("other");
    let pid = s.nginx.proc.id().to_string();
    let model = s.model("tls-other");
    {
        let agent = Agent::start(&["--pid", &pid]).expect("agent starts");
        let (prompt, completion) = s.curl(&model, 2);
        let m = model.as_str();
        let barrier = Expected::new()
            .exactly("llm_requests_total", &[("model", m)], 2.0)
            .exactly("llm_client_requests_total", &[("model", m)], 2.0)
            .exactly("llm_observer_connections_tracked", &[], 0.0);
        let expected = calls(
            Expected::new(),
            false,
            &[("model", m), ("process", "nginx")],
            2.0,
            prompt as f64,
            completion as f64,
        )
        .exactly("llm_observer_tls_connections_total", &[], 2.0)
        .exactly("llm_observer_other_protocol_connections_total", &[], 0.0)
        .exactly("llm_observer_connections_total", &[("role", "server")], 2.0)
        .exactly("llm_observer_decode_errors_total", &[], 0.0)
        .exactly("llm_observer_incomplete_exchanges_total", &[], 0.0);
        settle(&agent, &barrier, &expected);
    }
    // The control: the same call without the probes is opaque.
    let agent = Agent::start(&["--pid", &pid, "--no-tls"]).expect("agent starts");
    let control = s.model("tls-control");
    s.curl(&control, 1);
    let m = control.as_str();
    let barrier = Expected::new()
        .exactly("llm_client_requests_total", &[("model", m)], 1.0)
        .exactly("llm_observer_connections_tracked", &[], 0.0);
    let expected = Expected::new()
        .exactly("llm_requests_total", &[("model", m)], 0.0)
        .exactly("llm_observer_tls_connections_total", &[], 0.0)
        .exactly("llm_observer_tls_probes", &[], 0.0)
        .exactly("llm_observer_other_protocol_connections_total", &[], 1.0);
    settle(&agent, &barrier, &expected);
}

#[test]
#[ignore = "needs root, BPF, nginx, the release agent and the clients' venv"]
fn a_client_connected_before_the_agent_is_captured_from_its_next_call() {
    let s = servers("before");
    let model = s.model("tls-before");
    let python = venv_python().expect("venv");
    let mut cmd = Command::new(python);
    cmd.arg(workspace_root().join("tests/clients/tls_waiting_client.py"))
        .arg(s.nginx.url())
        .arg(s.certs.cert())
        .args([model.as_str(), "2"]);
    let mut client = Proc::spawn("tls_waiting_client", cmd).expect("client starts");
    client
        .wait_for_line(TIMEOUT, |stream, line| {
            (stream == Stream::Stdout && line == "ready").then_some(())
        })
        .expect("first call made before the agent");
    let agent = Agent::start(&[]).expect("agent starts");
    signal(client.id(), libc::SIGUSR1);
    let summary: Value = client
        .wait_for_line(TIMEOUT, |stream, line| {
            (stream == Stream::Stdout && line.starts_with('{'))
                .then(|| serde_json::from_str(line).ok())
                .flatten()
        })
        .expect("calls after the agent started");
    client.wait_exit(TIMEOUT).expect("client exits");
    let ok = summary["ok"].as_f64().expect("ok");
    let prompt = summary["prompt_tokens"].as_f64().expect("prompt");
    let completion = summary["completion_tokens"].as_f64().expect("completion");
    assert_eq!(ok, 2.0, "{summary}");
    let peer = s.peer();
    let m = model.as_str();
    // Only the calls after the agent started, from both ends of the TLS connection it found in
    // /proc (the client's and nginx's), plus the plain hop behind nginx.
    let mut e = Expected::new();
    e = calls(
        e,
        true,
        &[("model", m), ("peer", &peer)],
        2.0,
        prompt,
        completion,
    );
    e = calls(
        e,
        false,
        &[("model", m), ("process", "nginx")],
        2.0,
        prompt,
        completion,
    );
    e = calls(
        e,
        false,
        &[("model", m), ("process", "llm-emulator")],
        2.0,
        prompt,
        completion,
    );
    expect(&agent, &s, &e);
}

/// A credential no log line or trace field could contain by chance.
const TLS_BEARER: &str = "planted-tls-bearer-5e1d9a77";

/// `llm-observer trace <args>`, once its capture is attached.
fn start_trace(args: &[&str]) -> Proc {
    let bin = llm_observer_tests::harness::stack::path_from_env(
        "LLM_OBSERVER_BIN",
        "target/release/llm-observer",
    );
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let mut p = Proc::spawn("llm-observer trace", cmd).expect("start the trace");
    p.wait_for_line(TIMEOUT, |s, l| {
        // Logged once the TLS probes are attached, after the tracepoints.
        (s == Stream::Stderr && l.contains("TLS capture: probes on")).then_some(())
    })
    .expect("trace attaches");
    p
}

/// `trace --raw` shows TLS plaintext (as `ssl_read`/`ssl_write` events) with credentials
/// redacted; `--show-secrets` proves the header really was in the captured plaintext.
#[test]
#[ignore = "needs root, BPF, nginx, curl, the release agent"]
fn raw_traces_redact_credentials_in_tls_plaintext() {
    let s = servers("raw");
    let pid = s.nginx.proc.id().to_string();
    let mut redacted = start_trace(&["trace", "--raw", "--pid", &pid]);
    let mut shown = start_trace(&["trace", "--raw", "--show-secrets", "--pid", &pid]);
    let model = s.model("tls-raw");
    let body = json!({"model": model, "max_tokens": 2,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-o", "/dev/null", "--cacert"])
        .arg(s.certs.cert())
        .args(["-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {TLS_BEARER}")])
        .arg("-d")
        .arg(body.to_string())
        .arg(format!("{}/v1/chat/completions", s.nginx.url()));
    let (status, _, err) = run_to_end("curl", cmd, TIMEOUT).expect("curl runs");
    assert!(status.success(), "curl: {}", err.join("\n"));
    // nginx read the request head through SSL_read: both traces show that event.
    let head = |l: &str| l.contains("\"syscall\":\"ssl_read\"") && l.contains("Authorization");
    shown
        .wait_for_line(SETTLE, |st, l| {
            (st == Stream::Stdout && head(l) && l.contains(TLS_BEARER)).then_some(())
        })
        .expect("the --show-secrets trace shows the plaintext with the credential");
    redacted
        .wait_for_line(SETTLE, |st, l| {
            (st == Stream::Stdout && head(l)).then_some(())
        })
        .expect("the redacted trace shows the plaintext request head");
    redacted
        .terminate(Duration::from_secs(10))
        .expect("trace stops");
    let out = redacted.output();
    assert!(
        !out.contains(TLS_BEARER),
        "the credential leaked into the redacted raw trace:\n{out}"
    );
}

/// A libssl the agent has never seen — a copy (another inode) in a directory of its own, loaded by
/// a client started after the agent — is found from the client's exec and probed before the
/// client's first call; that call is counted exactly.
#[test]
#[ignore = "needs root, BPF, nginx, the release agent and the clients' venv"]
fn a_libssl_from_any_path_loaded_after_start_is_probed() {
    let s = servers("path");
    let lib = s.certs.dir.join("lib");
    std::fs::create_dir_all(&lib).expect("lib dir");
    let system = [
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib64/libssl.so.3",
        "/usr/lib64/libssl.so.3",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a system libssl.so.3");
    std::fs::copy(system, lib.join("libssl.so.3")).expect("copy libssl");
    let lib_str = lib.display().to_string();
    let mut agent = Agent::start(&[]).expect("agent starts");
    let model = s.model("tls-path");
    let python = venv_python().expect("venv");
    let mut cmd = Command::new(python);
    cmd.env("LD_LIBRARY_PATH", &lib)
        .arg(workspace_root().join("tests/clients/tls_waiting_client.py"))
        .arg(s.nginx.url())
        .arg(s.certs.cert())
        .args([model.as_str(), "2", "fresh"]);
    let mut client = Proc::spawn("tls_waiting_client", cmd).expect("client starts");
    client
        .wait_for_line(TIMEOUT, |stream, line| {
            (stream == Stream::Stdout && line == "ready").then_some(())
        })
        .expect("client loaded its TLS library");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", client.id())).expect("maps");
    assert!(
        maps.contains(&format!("{lib_str}/libssl.so.3")),
        "the client does not use the copied libssl:\n{maps}"
    );
    // The agent says when it has probed the copy (found in the client's maps after its exec).
    agent
        .proc
        .wait_for_line(TIMEOUT, |_, l| {
            (l.contains("TLS capture:") && l.contains("uprobes on") && l.contains(&lib_str))
                .then_some(())
        })
        .expect("the agent probes the copied libssl");
    signal(client.id(), libc::SIGUSR1);
    let summary: Value = client
        .wait_for_line(TIMEOUT, |stream, line| {
            (stream == Stream::Stdout && line.starts_with('{'))
                .then(|| serde_json::from_str(line).ok())
                .flatten()
        })
        .expect("calls after the probes");
    client.wait_exit(TIMEOUT).expect("client exits");
    let prompt = summary["prompt_tokens"].as_f64().expect("prompt");
    let completion = summary["completion_tokens"].as_f64().expect("completion");
    assert_eq!(summary["ok"].as_f64(), Some(2.0), "{summary}");
    let (peer, m) = (s.peer(), model.as_str());
    let mut e = Expected::new();
    e = calls(
        e,
        true,
        &[("model", m), ("peer", &peer)],
        2.0,
        prompt,
        completion,
    );
    e = calls(
        e,
        false,
        &[("model", m), ("process", "nginx")],
        2.0,
        prompt,
        completion,
    );
    expect(&agent, &s, &e);
}
