//! Root end-to-end tests of HTTP/2 (h2c with prior knowledge): the real agent (BPF loaded) watches
//! a Node `http2` server (tests/support/h2c.js: a deterministic OpenAI-compatible SSE server) and a
//! Node `http2` client making N concurrent streamed chat completions on ONE connection. After the
//! agent is provably quiescent, both views must show exactly what the client saw: N requests, the
//! reported prompt and completion tokens, one TTFT per stream, gauges back at 0. A second test
//! does the same with Gemini `streamGenerateContent` (SSE and streamed JSON array) over h2c.
//!
//! Needs root, a BPF-capable kernel, the release agent (`LLM_OBSERVER_BIN`) and `node`; under
//! `CI=true` a missing piece fails the test instead of skipping it.
//!
//! ```text
//! cargo build --release
//! cargo test --release -p llm-observer-tests --test http2 -- --include-ignored --test-threads=1
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use llm_observer_tests::harness::expect::{Expected, wait_for_expected};
use llm_observer_tests::harness::guard;
use llm_observer_tests::harness::process::{Proc, Stream, run_to_end};
use llm_observer_tests::harness::stack::Agent;
use serde_json::Value;

/// Concurrent streams on the one connection.
const N: usize = 8;
/// max_tokens of request i is TOKENS + i % 3 (the server streams exactly that many chunks).
const TOKENS: u64 = 6;
const SETTLE: Duration = Duration::from_secs(30);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/h2c.js")
}

fn node_missing() -> bool {
    !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The agent and the Node h2c server, or `None` when the test cannot run here (skipped; under
/// `CI=true` that fails instead). Tests run one at a time (`--test-threads=1`), as the agents are
/// node-wide.
fn stack() -> Option<(Agent, Proc, u16)> {
    if !guard::agent_ready() {
        return None;
    }
    if node_missing() {
        return guard::skip_or_fail("no node on PATH (cargo xtask setup installs nodejs)");
    }
    let agent = Agent::start(&[]).expect("agent starts and serves /metrics");
    let mut cmd = Command::new("node");
    cmd.arg(script()).arg("server");
    let mut server = Proc::spawn("h2c server", cmd).expect("node h2c server");
    let port: u16 = server
        .wait_for_line(Duration::from_secs(30), |stream, line| {
            (stream == Stream::Stdout)
                .then(|| {
                    line.strip_prefix("listening on 127.0.0.1:")?
                        .trim()
                        .parse()
                        .ok()
                })
                .flatten()
        })
        .expect("server listening");
    Some((agent, server, port))
}

/// Runs the Node client in `mode` and returns the JSON line it printed (what it saw).
fn client(mode: &str, port: u16, model: &str) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(script()).args([
        mode,
        &port.to_string(),
        &N.to_string(),
        &TOKENS.to_string(),
        model,
    ]);
    let (status, out, err) =
        run_to_end("h2c client", cmd, Duration::from_secs(60)).expect("client runs");
    assert!(status.success(), "client failed: {err:?}");
    serde_json::from_str(out.last().expect("one JSON line")).expect("JSON")
}

#[test]
fn h2c_concurrent_streams_on_one_connection_are_counted_exactly() {
    let Some((agent, mut server, port)) = stack() else {
        return;
    };
    // A model name no other traffic on the node uses.
    let model = format!("h2-e2e:{port}");
    let seen = client("client", port, &model);
    // What the client saw, from the server's deterministic rules: 14 characters per prompt
    // ("hello number i"), TOKENS + i % 3 content chunks per stream.
    let completion: u64 = (0..N as u64).map(|i| TOKENS + i % 3).sum();
    let prompt = 14 * N as u64;
    assert_eq!(seen["requests"], N as u64, "{seen}");
    assert_eq!(seen["ok"], N as u64, "{seen}");
    assert_eq!(seen["prompt_tokens"], prompt, "{seen}");
    assert_eq!(seen["completion_tokens"], completion, "{seen}");
    assert_eq!(seen["content_chunks"], completion, "{seen}");

    let (n, p, c) = (N as f64, prompt as f64, completion as f64);
    let view = [
        ("api", "openai"),
        ("operation", "chat"),
        ("model", model.as_str()),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = view.to_vec();
        v.push(extra);
        v
    };
    let (ok, reported) = (with(("status", "2xx")), with(("source", "reported")));
    let expected = Expected::new()
        // Server view (the node server accepted the connection).
        .exactly("llm_requests_total", &ok, n)
        .exactly("llm_requests_total", &view, n)
        .exactly("llm_prompt_tokens_total", &reported, p)
        .exactly("llm_response_tokens_total", &reported, c)
        .exactly("llm_inference_errors_total", &view, 0.0)
        .exactly("llm_time_to_first_token_seconds_count", &view, n)
        .exactly("llm_time_per_output_token_seconds_count", &view, n)
        .exactly("llm_active_requests", &view, 0.0)
        .exactly("llm_queue_size", &view, 0.0)
        // Client view (the node client connected).
        .exactly("llm_client_requests_total", &ok, n)
        .exactly("llm_client_requests_total", &view, n)
        .exactly("llm_client_prompt_tokens_total", &reported, p)
        .exactly("llm_client_response_tokens_total", &reported, c)
        .exactly("llm_client_errors_total", &view, 0.0)
        .exactly("llm_client_time_to_first_token_seconds_count", &view, n)
        .exactly("llm_client_active_requests", &view, 0.0)
        // A loopback server is no cloud provider's.
        .exactly(
            "llm_client_requests_total",
            &with(("provider", "self_hosted")),
            n,
        );
    let e = wait_for_expected(agent.addr(), &expected, SETTLE).unwrap_or_else(|e| {
        panic!(
            "{e:#}\nagent log (tail):\n{}",
            agent
                .proc
                .output()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    // Nothing about this connection was left undecoded.
    for kind in ["http2_midstream", "grpc"] {
        assert_eq!(
            e.sum("llm_observer_unsupported_total", &[("kind", kind)]),
            0.0,
            "{kind}"
        );
    }
    let _ = server.terminate(Duration::from_secs(5));
}

/// Gemini over h2c: N concurrent `streamGenerateContent` calls on one connection, half as SSE
/// (`?alt=sse`), half as a streamed JSON array; the server reports usageMetadata on the last chunk.
#[test]
fn gemini_streams_over_h2c_sse_and_json_array() {
    let Some((agent, mut server, port)) = stack() else {
        return;
    };
    let model = format!("gemini-e2e-{port}");
    let seen = client("gemini", port, &model);
    let completion: u64 = (0..N as u64).map(|i| TOKENS + i % 3).sum();
    let prompt = 14 * N as u64;
    assert_eq!(seen["ok"], N as u64, "{seen}");
    assert_eq!(seen["prompt_tokens"], prompt, "{seen}");
    assert_eq!(seen["completion_tokens"], completion, "{seen}");
    assert_eq!(seen["content_chunks"], completion, "{seen}");
    let (n, p, c) = (N as f64, prompt as f64, completion as f64);
    let view = [
        ("api", "gemini"),
        ("operation", "chat"),
        ("model", model.as_str()),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = view.to_vec();
        v.push(extra);
        v
    };
    let (ok, reported) = (with(("status", "2xx")), with(("source", "reported")));
    let expected = Expected::new()
        .exactly("llm_requests_total", &ok, n)
        .exactly("llm_prompt_tokens_total", &reported, p)
        .exactly("llm_response_tokens_total", &reported, c)
        .exactly("llm_inference_errors_total", &view, 0.0)
        // One content event per chunk, in both framings: TTFT and TPOT for every stream.
        .exactly("llm_time_to_first_token_seconds_count", &view, n)
        .exactly("llm_time_per_output_token_seconds_count", &view, n)
        .exactly("llm_active_requests", &view, 0.0)
        .exactly("llm_client_requests_total", &ok, n)
        .exactly("llm_client_prompt_tokens_total", &reported, p)
        .exactly("llm_client_response_tokens_total", &reported, c)
        .exactly("llm_client_errors_total", &view, 0.0);
    wait_for_expected(agent.addr(), &expected, SETTLE).unwrap_or_else(|e| {
        panic!(
            "{e:#}\nagent log (tail):\n{}",
            agent
                .proc
                .output()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let _ = server.terminate(Duration::from_secs(5));
}
