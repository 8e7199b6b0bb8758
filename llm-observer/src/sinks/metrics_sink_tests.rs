//! The `server` label through the sink: decided per process and address, shared with the client
//! view of the same address, forgotten at process exit. Exact series values, no clock.

use std::net::SocketAddr;

use llm_observer_decode::llm::fingerprint::{ServerKind, Strength};
use llm_observer_decode::{Api, Operation, Timings, TokenCount, Tokens};

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
        host: None,
        stdio: false,
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
        params: Default::default(),
        cache_write_tokens: TokenCount::ABSENT,
        tool_ids: Default::default(),
    }
}

fn summary() -> RequestSummary {
    RequestSummary {
        api: Api::Openai,
        operation: Operation::Chat,
        model: Some("m".into()),
        stream: false,
        user_labels: Vec::new(),
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

fn child(tgid: u32, ppid: u32, exe: &str, name: &str) -> ProcessInfo {
    ProcessInfo {
        ppid,
        ..proc(tgid, exe, name)
    }
}

fn with_tokens(mut e: Exchange, prompt: TokenCount, completion: TokenCount) -> Exchange {
    e.tokens.prompt = prompt;
    e.tokens.completion = completion;
    e
}

#[test]
fn ollama_runner_hop_is_counted_once_and_completes_the_outer_figures() {
    let metrics = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    let mut sink = MetricsSink::new(metrics.clone());
    let app = proc(600, "python3.12", "app");
    let serve = proc(500, "ollama", "ollama");
    let runner = child(501, 500, "ollama", "ollama");

    // In capture order: the app's request, serve reading it, serve's call to its runner, the
    // runner answering (final line with exact counts), serve answering without usage, the app
    // reading it.
    let user_c = view(&app, Role::Client, "127.0.0.1:40000", "127.0.0.1:11434");
    let user_s = view(&serve, Role::Server, "127.0.0.1:11434", "127.0.0.1:40000");
    let hop_c = view(&serve, Role::Client, "127.0.0.1:40001", "127.0.0.1:45000");
    let hop_s = view(&runner, Role::Server, "127.0.0.1:45000", "127.0.0.1:40001");
    sink.started(&user_c, 0, &summary());
    sink.started(&user_s, 0, &summary());
    sink.started(&hop_c, 0, &summary());
    sink.started(&hop_s, 0, &summary());
    let inner = with_tokens(
        exchange(None),
        TokenCount::reported(7),
        TokenCount::reported(5),
    );
    sink.done(&hop_s, 0, &inner);
    sink.done(&hop_c, 0, &inner);
    // The OpenAI-compatible stream without include_usage: 5 counted events, no prompt count.
    let outer = with_tokens(exchange(None), TokenCount::ABSENT, TokenCount::counted(5));
    sink.done(&user_s, 0, &outer);
    sink.done(&user_c, 0, &outer);

    let text = metrics.encode();
    let all = |family: &str| sum_all(&text, family, "");
    assert_eq!(all("llm_requests_total"), 1.0, "{text}");
    assert_eq!(
        sum(&text, "llm_requests_total", "process=\"ollama\"", "ollama"),
        1.0
    );
    assert_eq!(all("llm_client_requests_total"), 1.0, "{text}");
    assert_eq!(
        sum(
            &text,
            "llm_client_requests_total",
            "process=\"app\"",
            "ollama"
        ),
        1.0
    );
    // Exact counts from the runner's final line, labelled as the server's report.
    assert_eq!(
        sum_all(&text, "llm_prompt_tokens_total", "source=\"reported\""),
        7.0
    );
    assert_eq!(
        sum_all(&text, "llm_response_tokens_total", "source=\"reported\""),
        5.0
    );
    assert_eq!(
        sum_all(&text, "llm_response_tokens_total", "source=\"counted\""),
        0.0
    );
    for view in ["server", "client"] {
        assert_eq!(
            sum_all(
                &text,
                "llm_observer_internal_exchanges_total",
                &format!("kind=\"ollama_runner\",view=\"{view}\"")
            ),
            1.0,
            "{text}"
        );
    }
    assert_eq!(all("llm_active_requests"), 0.0);
    assert_eq!(all("llm_client_active_requests"), 0.0);
    assert_eq!(sink.in_flight(), 0);
}

#[test]
fn a_program_calling_the_server_it_started_is_a_user() {
    let metrics = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    let mut sink = MetricsSink::new(metrics.clone());
    let app = proc(700, "python3.12", "app");
    let server = child(701, 700, "llama-server", "llama-server");
    let c = view(&app, Role::Client, "127.0.0.1:40002", "127.0.0.1:8080");
    let s = view(&server, Role::Server, "127.0.0.1:8080", "127.0.0.1:40002");
    sink.started(&c, 0, &summary());
    sink.started(&s, 0, &summary());
    sink.done(&s, 0, &exchange(None));
    sink.done(&c, 0, &exchange(None));
    let text = metrics.encode();
    assert_eq!(sum(&text, "llm_requests_total", "", "llamacpp"), 1.0);
    assert_eq!(sum(&text, "llm_client_requests_total", "", "llamacpp"), 1.0);
    assert_eq!(
        sum_all(&text, "llm_observer_internal_exchanges_total", ""),
        0.0
    );
}

#[test]
fn a_server_calling_itself_is_a_hop() {
    // SGLang's warm-up: the server process sends itself /generate.
    let metrics = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    let mut sink = MetricsSink::new(metrics.clone());
    let sglang = proc(800, "python3.12", "sglang.launch_server");
    let c = view(&sglang, Role::Client, "127.0.0.1:40003", "127.0.0.1:30000");
    let s = view(&sglang, Role::Server, "127.0.0.1:30000", "127.0.0.1:40003");
    sink.started(&c, 0, &summary());
    sink.started(&s, 0, &summary());
    sink.done(&s, 0, &exchange(None));
    sink.done(&c, 0, &exchange(None));
    let text = metrics.encode();
    assert_eq!(sum_all(&text, "llm_requests_total", ""), 0.0);
    assert_eq!(sum_all(&text, "llm_client_requests_total", ""), 0.0);
    assert_eq!(
        sum_all(
            &text,
            "llm_observer_internal_exchanges_total",
            "kind=\"self\""
        ),
        2.0
    );
}

/// `family` samples whose line contains `needle`, summed.
fn sum_all(text: &str, family: &str, needle: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter(|l| l.contains(needle))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}
