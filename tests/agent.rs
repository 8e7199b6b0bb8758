//! Root end-to-end tests of the agent (client) view beyond single requests, watched by the real
//! agent with BPF loaded: an agent's tool loop with the official Python SDKs
//! (`tests/clients/agent_loop.py`) against the loopback emulator (model `tools`: it asks for a
//! tool call until the conversation ends with the tool's result), and the cost of SDK requests
//! (`tests/clients/workload.py`) priced by a `--prices` table.
//!
//! Root, BPF, the release agent (`LLM_OBSERVER_BIN`) and the clients' venv (`LLM_OBSERVER_VENV`)
//! are needed, so the tests are `#[ignore]`d in the default run; CI runs them with
//! `--include-ignored`, and under `CI=true` a machine that cannot load BPF fails them.
//!
//! ```text
//! cargo test --release -p llm-observer-tests --test agent -- --include-ignored --test-threads=1
//! ```

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use llm_observer_tests::harness::expect::{Expected, wait_for_expected};
use llm_observer_tests::harness::exposition::Exposition;
use llm_observer_tests::harness::process::run_to_end;
use llm_observer_tests::harness::quiesce::wait_quiescent;
use llm_observer_tests::harness::stack::{
    Agent, EmulatorProc, path_from_env, run_workload, venv_python, workspace_root,
};
use serde_json::Value;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// What the observed tool time may exceed the tool's own sleep by, per call: the SDK finishing
/// the response after its last byte was read, and building and writing the next request
/// (milliseconds on an idle machine; this allows for two shared, busy cores).
const SLACK_PER_CALL: f64 = 0.15;

static SERIAL: Mutex<()> = Mutex::new(());

struct Stack {
    agent: Agent,
    emu: EmulatorProc,
    _serial: MutexGuard<'static, ()>,
}

fn stack() -> Stack {
    stack_with(&[])
}

/// The emulator and an agent started with `agent_args`.
fn stack_with(agent_args: &[&str]) -> Stack {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        llm_observer_tests::harness::guard::is_root(),
        "the agent tests load BPF programs: run them as root"
    );
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "20", "--token-interval-ms", "5"])
        .expect("emulator starts");
    let agent = Agent::start(agent_args).expect("agent starts and serves /metrics");
    Stack {
        agent,
        emu,
        _serial: serial,
    }
}

impl Stack {
    /// Runs `agent_loop.py` and returns its summary line.
    fn agent_loop(&self, args: &[&str]) -> Value {
        let python = venv_python().expect("the clients' venv");
        let mut cmd = std::process::Command::new(python);
        cmd.arg(workspace_root().join("tests/clients/agent_loop.py"))
            .args(["--base-url", &self.emu.base_url()])
            .args(args);
        let (status, out, err) = run_to_end("agent_loop.py", cmd, CLIENT_TIMEOUT).expect("runs");
        assert!(
            status.success(),
            "agent_loop.py {args:?} failed ({status}):\n{}",
            err.join("\n")
        );
        let last = out.last().expect("agent_loop.py printed its summary");
        serde_json::from_str(last)
            .with_context(|| format!("summary {last:?}"))
            .unwrap()
    }

    /// A scrape taken once the agent has applied every event of the finished workload.
    fn quiescent(&self) -> Exposition {
        wait_quiescent(self.agent.addr(), SETTLE).unwrap_or_else(|e| {
            panic!("{e:#}\nagent log:\n{}", self.agent.proc.output());
        })
    }

    /// Waits (with a deadline) until `tool`'s histogram has exactly `want` observations, then
    /// returns its count and sum from a scrape taken after the agent was quiescent.
    fn tool_histogram(&self, tool: &str, want: f64) -> (f64, f64) {
        let expected = Expected::new().exactly(&format!("{FAMILY}_count"), &[("tool", tool)], want);
        let e = wait_for_expected(self.agent.addr(), &expected, SETTLE).unwrap_or_else(|e| {
            panic!("{e:#}\nagent log:\n{}", self.agent.proc.output());
        });
        let h = e.histogram(FAMILY, &[("tool", tool)]);
        h.map_or((0.0, 0.0), |h| (h.count, h.sum))
    }
}

const FAMILY: &str = "llm_client_tool_execution_seconds";

fn floats(v: &Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// `turns` tool calls, each "run" for `wait_ms`: exactly `turns` observations, whose sum is at
/// least what the tool slept and at most that plus [`SLACK_PER_CALL`] per call.
fn tool_loop(api: &str, mode: &str) {
    let s = stack();
    let turns = 3;
    let tool = format!("weather_{}_{api}_{mode}", s.emu.addr().port());
    let summary = s.agent_loop(&[
        "--api",
        api,
        "--mode",
        mode,
        "--turns",
        &turns.to_string(),
        "--wait-ms",
        "300",
        "--tool",
        &tool,
    ]);
    assert_eq!(summary["tool_calls"], turns, "{summary}");
    let slept: f64 = floats(&summary, "slept_s").iter().sum();
    // The count is compared after quiescence (inside `wait_for_expected`): an over-count cannot
    // hide behind an early match.
    let (count, sum) = s.tool_histogram(&tool, f64::from(turns));
    let e = s.quiescent();
    println!(
        "{api} {mode}: {count} tool executions, observed sum {sum:.4} s, slept {slept:.4} s, \
         excess {:.1} ms per call",
        (sum - slept) * 1e3 / f64::from(turns)
    );
    assert_eq!(count, f64::from(turns), "one observation per tool call");
    assert!(
        sum >= slept && sum <= slept + SLACK_PER_CALL * f64::from(turns),
        "observed {sum} s for tools that slept {slept} s (allowed excess {SLACK_PER_CALL} s per call)"
    );
    // Every call was answered: nothing left the pending table unmatched.
    assert_eq!(
        e.sum("llm_observer_tool_calls_unmatched_total", &[]),
        0.0,
        "no pending call dropped"
    );
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn openai_nonstream_tool_execution_time() {
    tool_loop("openai", "nonstream");
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn openai_stream_tool_execution_time() {
    tool_loop("openai", "stream");
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn anthropic_nonstream_tool_execution_time() {
    tool_loop("anthropic", "nonstream");
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn anthropic_stream_tool_execution_time() {
    tool_loop("anthropic", "stream");
}

/// A price table whose per-request costs are exact binary fractions: 5 prompt tokens at $0.00625
/// plus 8 output tokens at $0.03125 make $0.28125 (the workload's default prompt has 5 words, and
/// the emulator's answer 8 tokens).
fn price_file(dir: &std::path::Path, model: &str) -> std::path::PathBuf {
    let path = dir.join("prices.toml");
    let text = format!(
        "as_of = \"2026-12-01\"\nsource = \"tests/agent.rs\"\n\n[[model]]\nname = \"{model}\"\ninput = 6250.0\noutput = 31250.0\n"
    );
    std::fs::write(&path, text).expect("price file written");
    path
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn cost_of_priced_requests_and_count_of_unpriced_ones() {
    let dir = std::env::temp_dir().join(format!("llm-observer-agent-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The emulator's port is only known once it runs: name the models after this test's pid.
    let priced = format!("priced-{}", std::process::id());
    let unpriced = format!("unpriced-{}", std::process::id());
    let prices = price_file(&dir, &priced);
    let s = stack_with(&["--prices", prices.to_str().expect("utf-8 temp path")]);
    let run = |args: &[&str]| {
        run_workload(&s.emu.base_url(), args, CLIENT_TIMEOUT).expect("workload runs")
    };
    let a = run(&[
        "--api",
        "openai",
        "--mode",
        "nonstream",
        "--n",
        "3",
        "--model",
        &priced,
    ]);
    let b = run(&[
        "--api",
        "anthropic",
        "--mode",
        "stream",
        "--n",
        "2",
        "--model",
        &unpriced,
    ]);
    assert_eq!((a.0["ok"].as_u64(), b.0["ok"].as_u64()), (Some(3), Some(2)));
    let expected = Expected::new()
        .exactly(
            "llm_client_cost_usd_total",
            &[("model", &priced)],
            3.0 * 0.28125,
        )
        .exactly(
            "llm_client_unpriced_requests_total",
            &[("model", &priced)],
            0.0,
        )
        .exactly(
            "llm_client_unpriced_requests_total",
            &[("model", &unpriced)],
            2.0,
        )
        // The server view of the same loopback calls is not a client's spending.
        .exactly("llm_client_requests_total", &[("model", &priced)], 3.0);
    let e = wait_for_expected(s.agent.addr(), &expected, SETTLE).unwrap_or_else(|e| {
        panic!("{e:#}\nagent log:\n{}", s.agent.proc.output());
    });
    assert_eq!(
        e.matching("llm_client_cost_usd_total", &[("model", unpriced.as_str())])
            .count(),
        0,
        "an unpriced model has no cost series (never a zero cost)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bad `--prices` file stops the agent at start, naming the file and the line (before any BPF
/// is loaded, so this needs no root).
#[test]
fn a_bad_price_file_names_its_line() {
    let dir = std::env::temp_dir().join(format!("llm-observer-bad-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[model]]\nname = \"m\"\ninput = 1.0\noutput = -2.0\n",
    )
    .unwrap();
    let bin = path_from_env(
        "LLM_OBSERVER_BIN",
        workspace_root().join("target/release/llm-observer"),
    );
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--metrics-addr", "127.0.0.1:0", "--prices"])
        .arg(&path);
    let (status, _, err) = run_to_end("llm-observer", cmd, Duration::from_secs(30)).expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !status.success(),
        "the agent must not start with a bad price file"
    );
    let err = err.join("\n");
    assert!(
        err.contains(&format!("--prices: {} line 4: output = -2", path.display())),
        "stderr should name the file and line:\n{err}"
    );
}
