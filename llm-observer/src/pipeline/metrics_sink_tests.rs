//! The `server` label through the sink: decided per process and address, shared with the client
//! view of the same address, forgotten at process exit. Exact series values, no clock.

use std::net::SocketAddr;

use llm_observer_decode::llm::fingerprint::{ServerKind, Strength};
use llm_observer_decode::{Api, Operation, Timings, Tokens};

use super::*;
use crate::attribution::process::ProcessInfo;
use crate::sinks::metrics::MetricsConfig;

fn proc(tgid: u32, exe: &str, name: &str) -> ProcessInfo {
    ProcessInfo {
        tgid,
        comm: exe.into(),
        name: name.into(),
        exe: exe.into(),
        ppid: 1,
        start_time: 7,
        cgroup: Default::default(),
    }
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn view<'a>(p: &'a ProcessInfo, role: Role, local: &str, peer: &str) -> ConnView<'a> {
    ConnView {
        id: ConnId {
            tgid: p.tgid,
            fd: 5,
            generation: 1,
        },
        role,
        process: p,
        local: addr(local),
        peer: addr(peer),
    }
}

fn exchange(server: Option<Evidence>) -> Exchange {
    Exchange {
        api: Api::Openai,
        operation: Operation::Chat,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        request_model: Some("m".into()),
        response_model: None,
        stream: false,
        status: Some(200),
        timings: Timings {
            request_start_ns: 1,
            response_end_ns: Some(2),
            ..Timings::default()
        },
        tokens: Tokens::default(),
        finish_reason: None,
        error: None,
        incomplete: None,
        tool_calls: Vec::new(),
        mcp: None,
        load_duration_ns: None,
        request_bytes: 0,
        response_bytes: 0,
        body_truncated: false,
        server,
    }
}

fn summary() -> RequestSummary {
    RequestSummary {
        api: Api::Openai,
        operation: Operation::Chat,
        model: Some("m".into()),
        stream: false,
    }
}

/// `family` samples whose line has `server="<server>"` and `needle`, summed.
fn sum(text: &str, family: &str, needle: &str, server: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| l.contains(needle) && l.contains(&format!("server=\"{server}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn server_label_by_process_wire_and_address() {
    let metrics = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    let mut sink = MetricsSink::new(metrics.clone());
    let vllm = proc(100, "python3.12", "vllm");
    let app = proc(200, "python3.12", "app");
    let gateway = proc(300, "python3.12", "gateway");

    // vLLM: no mark on the wire; its process names it. Its client on this node gets the same.
    let srv = view(&vllm, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
    sink.started(&srv, 0, &summary());
    sink.done(&srv, 0, &exchange(None));
    let cli = view(&app, Role::Client, "127.0.0.1:50000", "127.0.0.1:8000");
    sink.started(&cli, 0, &summary());
    sink.done(&cli, 0, &exchange(None));

    // An unnamed process with LiteLLM's headers: `unknown` in flight before its first answer,
    // `litellm` from the answer on (and in flight for its next request).
    let gw = view(&gateway, Role::Server, "127.0.0.1:4000", "127.0.0.1:50001");
    let litellm = Some(Evidence {
        kind: ServerKind::Litellm,
        strength: Strength::Header,
    });
    sink.started(&gw, 0, &summary());
    let text = metrics.encode();
    assert_eq!(
        sum(
            &text,
            "llm_active_requests",
            "process=\"gateway\"",
            "unknown"
        ),
        1.0
    );
    sink.done(&gw, 0, &exchange(litellm));
    sink.started(&gw, 1, &summary());
    let text = metrics.encode();
    assert_eq!(
        sum(
            &text,
            "llm_active_requests",
            "process=\"gateway\"",
            "litellm"
        ),
        1.0
    );
    // Its next answer carries no header (an error page): still litellm.
    sink.done(&gw, 1, &exchange(None));

    let text = metrics.encode();
    assert_eq!(
        sum(&text, "llm_requests_total", "process=\"vllm\"", "vllm"),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "llm_client_requests_total",
            "peer=\"127.0.0.1:8000\"",
            "vllm"
        ),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "llm_requests_total",
            "process=\"gateway\"",
            "litellm"
        ),
        2.0
    );
    assert_eq!(
        sum(
            &text,
            "llm_requests_total",
            "process=\"gateway\"",
            "unknown"
        ),
        0.0
    );

    // vLLM exits: its address is forgotten, so a new answer there is judged afresh.
    sink.raw(
        &Event::ProcExit {
            tgid: 100,
            ts_ns: 3,
        },
        None,
    );
    sink.done(&cli, 1, &exchange(None));
    let text = metrics.encode();
    assert_eq!(
        sum(
            &text,
            "llm_client_requests_total",
            "peer=\"127.0.0.1:8000\"",
            "unknown"
        ),
        1.0
    );
}
