//! Root end-to-end tests of MCP, watched by the real agent with BPF loaded: the official `mcp`
//! Python SDK's client (`tests/clients/mcp_stdio_client.py`) and server
//! (`tests/clients/mcp_stdio_server.py`), on both of the SDK's transports.
//!
//! - stdio: the client launches the server as a subprocess and talks JSON-RPC with it over the
//!   child's stdin and stdout. The kernel marks the pipes where they are made, recognises their
//!   first bytes as JSON-RPC, and copies them; both ends are decoded: the client view
//!   (`llm_client_mcp_*`, `peer="stdio"`) and the server view (`llm_mcp_*`).
//! - Streamable HTTP: the same session over loopback HTTP (answers as server-sent events).
//!
//! Every request of the session is checked exactly once in each view, after quiescence.
//!
//! ```text
//! cargo test --release -p llm-observer-tests --test mcp -- --include-ignored --test-threads=1
//! ```

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use llm_observer_tests::harness::exposition::Exposition;
use llm_observer_tests::harness::process::{Proc, run_to_end};
use llm_observer_tests::harness::quiesce::wait_quiescent;
use llm_observer_tests::harness::stack::{Agent, venv_python, workspace_root};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// `add` calls the client makes (one more call names a tool the server does not have).
const CALLS: usize = 3;

static SERIAL: Mutex<()> = Mutex::new(());

/// The agent, started first (pipes are marked where they are made), one test at a time.
fn agent() -> (Agent, MutexGuard<'static, ()>) {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        llm_observer_tests::harness::guard::is_root(),
        "the agent tests load BPF programs: run them as root"
    );
    let agent = Agent::start(&[]).expect("agent starts and serves /metrics");
    (agent, serial)
}

/// Runs the SDK's client (`transport`: `--url URL`, or `--` and the stdio server's command);
/// checks and returns its summary line.
fn session(agent: &Agent, transport: &[std::ffi::OsString]) -> Value {
    let python = venv_python().expect("the clients' venv");
    let clients = workspace_root().join("tests/clients");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(clients.join("mcp_stdio_client.py"))
        .args(["--calls", &CALLS.to_string(), "--bad-call"])
        .args(transport);
    let (status, out, err) =
        run_to_end("mcp_stdio_client.py", cmd, CLIENT_TIMEOUT).expect("the client runs");
    assert!(
        status.success(),
        "mcp_stdio_client.py failed ({status}):\n{}\nagent log:\n{}",
        err.join("\n"),
        agent.proc.output()
    );
    let last = out.last().expect("the client printed its summary");
    let summary: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("summary {last:?}: {e}"));
    assert_eq!(summary["calls"], CALLS, "{summary}");
    assert_eq!(summary["bad_call_is_error"], true, "{summary}");
    assert_eq!(summary["tools"], serde_json::json!(["add"]), "{summary}");
    summary
}

/// On a failure: the MCP and stdio series of `e`, then the agent's log.
fn dump(e: &Exposition, agent: &Agent) -> String {
    let series: Vec<String> = e
        .samples
        .iter()
        .filter(|s| s.name.contains("mcp") || s.name.contains("stdio"))
        .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
        .collect();
    format!("{}\nagent log:\n{}", series.join("\n"), agent.proc.output())
}

/// Every request of one SDK session, exactly once in `family` (a requests counter) among the
/// series with `view`: initialize, the initialized notification, tools/list, `CALLS` successful
/// calls of `add` and one failing call (the SDK answers an unknown tool with `isError: true`);
/// and a duration for every answered tools/call in `durations` (a histogram's `_count`).
fn check_session(e: &Exposition, family: &str, durations: &str, view: &[(&str, &str)], log: &str) {
    let count = |extra: &[(&str, &str)]| {
        let mut labels = view.to_vec();
        labels.extend_from_slice(extra);
        e.sum(family, &labels)
    };
    let calls = CALLS as f64;
    assert_eq!(count(&[]), 3.0 + calls + 1.0, "{family} {view:?}:\n{log}");
    for (method, want) in [
        ("initialize", 1.0),
        ("notifications/initialized", 1.0),
        ("tools/list", 1.0),
    ] {
        assert_eq!(
            count(&[("method", method), ("error", "none")]),
            want,
            "{family} {method}:\n{log}"
        );
    }
    assert_eq!(
        count(&[("method", "tools/call"), ("tool", "add"), ("error", "none")]),
        calls,
        "{family}:\n{log}"
    );
    assert_eq!(
        count(&[("method", "tools/call"), ("error", "tool_error")]),
        1.0,
        "{family}:\n{log}"
    );
    let mut labels = view.to_vec();
    labels.push(("method", "tools/call"));
    assert_eq!(
        e.sum(durations, &labels),
        calls + 1.0,
        "{durations}:\n{log}"
    );
}

/// The `process` label values of `family`'s series.
fn processes(e: &Exposition, family: &str) -> std::collections::BTreeSet<String> {
    e.matching(family, &[])
        .filter_map(|s| s.labels.get("process").cloned())
        .collect()
}

fn names(v: &[&str]) -> std::collections::BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn sdk_client_and_server_over_stdio_counted_on_both_ends() {
    let (agent, _serial) = agent();
    let python = venv_python().expect("the clients' venv");
    let server = workspace_root().join("tests/clients/mcp_stdio_server.py");
    session(&agent, &["--".into(), python.into(), server.into()]);
    let e = wait_quiescent(agent.addr(), SETTLE)
        .unwrap_or_else(|err| panic!("{err:#}\nagent log:\n{}", agent.proc.output()));
    let log = dump(&e, &agent);

    // One session at each end, nothing mistaken for JSON-RPC (the client's own stdout, a JSON
    // summary, is a pipe too).
    let sessions = |role| e.sum("llm_observer_stdio_sessions_total", &[("role", role)]);
    assert_eq!(
        (sessions("client"), sessions("server")),
        (1.0, 1.0),
        "{log}"
    );
    assert_eq!(
        e.sum("llm_observer_stdio_not_jsonrpc_total", &[]),
        0.0,
        "{log}"
    );
    assert_eq!(e.sum("llm_observer_stdio_sessions", &[]), 0.0, "{log}");
    check_session(
        &e,
        "llm_client_mcp_requests_total",
        "llm_client_mcp_duration_seconds_count",
        &[("peer", "stdio")],
        &log,
    );
    check_session(
        &e,
        "llm_mcp_requests_total",
        "llm_mcp_request_duration_seconds_count",
        &[],
        &log,
    );
    // The client and the server are told apart by process.
    assert_eq!(
        processes(&e, "llm_client_mcp_requests_total"),
        names(&["mcp_stdio_client"])
    );
    assert_eq!(
        processes(&e, "llm_mcp_requests_total"),
        names(&["mcp_stdio_server"])
    );
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn sdk_client_and_server_over_streamable_http_counted_on_both_ends() {
    let (agent, _serial) = agent();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let python = venv_python().expect("the clients' venv");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(workspace_root().join("tests/clients/mcp_stdio_server.py"))
        .args(["--http", &port.to_string()]);
    let mut server = Proc::spawn("mcp_stdio_server.py", cmd).expect("the server starts");
    server
        .wait_for_line(Duration::from_secs(60), |_, line| {
            line.contains("Uvicorn running on").then_some(())
        })
        .expect("the server listens");
    session(
        &agent,
        &[
            "--url".into(),
            format!("http://127.0.0.1:{port}/mcp").into(),
        ],
    );
    let e = wait_quiescent(agent.addr(), SETTLE)
        .unwrap_or_else(|err| panic!("{err:#}\nagent log:\n{}", agent.proc.output()));
    let log = dump(&e, &agent);
    let peer = format!("127.0.0.1:{port}");
    check_session(
        &e,
        "llm_client_mcp_requests_total",
        "llm_client_mcp_duration_seconds_count",
        &[("peer", &peer)],
        &log,
    );
    check_session(
        &e,
        "llm_mcp_requests_total",
        "llm_mcp_request_duration_seconds_count",
        &[("process", "mcp_stdio_server")],
        &log,
    );
    // No pipe was involved.
    let sessions = e.sum("llm_observer_stdio_sessions_total", &[]);
    assert_eq!(sessions, 0.0, "{log}");
}
