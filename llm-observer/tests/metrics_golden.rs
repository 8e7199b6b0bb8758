//! A scripted session of exchanges (server and client views, streams, errors, MCP) → the exact
//! `/metrics` text. The golden file is `tests/data/metrics_golden.prom`; regenerate it with
//! `BLESS=1 cargo test -p llm-observer --test metrics_golden` and review the diff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llm_observer::attribution::Place;
use llm_observer::attribution::gpu::{GpuDevice, GpuSnapshot};
use llm_observer::attribution::serving::Joined;
use llm_observer::sinks::{ExchangeCtx, Metrics, MetricsConfig, ScrapeEnv};
use llm_observer_decode::exchange::Timings;
use llm_observer_decode::llm::RequestSummary;
use llm_observer_decode::{
    Api, DecodeError, ErrorKind, Exchange, McpInfo, Operation, Role, TokenCount, Tokens,
    Unsupported,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// The fake scrape time: t = 100 s of kernel monotonic time.
const NOW: u64 = 100 * S;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn ctx(role: Role, process: &str, pid: u32, peer: &str) -> ExchangeCtx {
    ExchangeCtx {
        role,
        process: process.into(),
        comm: process.into(),
        place: Default::default(),
        workload_labels: Vec::new(),
        pid,
        peer: Some(peer.parse().unwrap()),
        stdio: false,
        provider: "self_hosted",
        server: "unknown",
    }
}

struct Ex(Exchange);

impl Ex {
    /// A successful exchange that starts at `start` and ends `latency` later.
    fn new(api: Api, op: Operation, model: Option<&str>, start: u64, latency: u64) -> Ex {
        Ex(Exchange {
            params: Default::default(),
            api,
            operation: op,
            method: "POST".into(),
            path: "/".into(),
            request_model: model.map(Into::into),
            response_model: None,
            stream: false,
            status: Some(200),
            timings: Timings {
                request_start_ns: start,
                request_end_ns: Some(start),
                response_start_ns: Some(start + latency / 2),
                response_end_ns: Some(start + latency),
                ..Timings::default()
            },
            tokens: Tokens::default(),
            cache_write_tokens: Default::default(),
            finish_reason: None,
            error: None,
            incomplete: None,
            tool_calls: Vec::new(),
            tool_ids: Default::default(),
            mcp: None,
            load_duration_ns: None,
            request_bytes: 0,
            response_bytes: 0,
            body_truncated: false,
            server: None,
        })
    }

    /// Streamed: first token `ttft` after the start, last token at `last`.
    fn stream(mut self, ttft: u64, last: u64) -> Ex {
        let start = self.0.timings.request_start_ns;
        self.0.stream = true;
        self.0.timings.first_token_ns = Some(start + ttft);
        self.0.timings.last_token_ns = Some(start + last);
        self
    }

    fn tokens(mut self, prompt: TokenCount, completion: TokenCount) -> Ex {
        self.0.tokens.prompt = prompt;
        self.0.tokens.completion = completion;
        self
    }

    fn failed(mut self, status: Option<u16>, kind: ErrorKind) -> Ex {
        self.0.status = status;
        self.0.error = Some(kind);
        self
    }

    fn summary(&self) -> RequestSummary {
        RequestSummary {
            api: self.0.api,
            operation: self.0.operation,
            model: self.0.request_model.clone(),
            stream: self.0.stream,
            user_labels: self.0.params.user_labels.clone(),
        }
    }
}

fn run(m: &Metrics, ctx: &ExchangeCtx, ex: Ex) {
    let mut inflight = m.started(ctx, &ex.summary());
    if ex.0.timings.first_token_ns.is_some() {
        m.first_token(&mut inflight);
    }
    m.done(Some(inflight), ctx, &ex.0);
}

/// The scripted session. Every family gets at least one series.
fn session() -> Metrics {
    let env = ScrapeEnv {
        now_ns: Arc::new(|| NOW),
        proc_root: data_dir().join("proc"),
    };
    let cfg = MetricsConfig {
        max_models: 2,
        tokens_per_second_window: Duration::from_secs(10),
        ..MetricsConfig::default()
    };
    let m = Metrics::with_env(cfg, "tracepoint", env).unwrap();
    let ollama = ExchangeCtx {
        server: "ollama",
        ..ctx(Role::Server, "ollama", 4242, "127.0.0.1:50001")
    };
    // vLLM in a pod: `process` is the name the attribution rule gives `python3 -m vllm...`
    // (its comm stays python3, which the memory sampler checks against /proc).
    let vllm = ExchangeCtx {
        process: "vllm".into(),
        place: Place {
            container: "server".into(),
            pod: "vllm-0".into(),
            namespace: "llm".into(),
        },
        server: "vllm",
        ..ctx(Role::Server, "python3", 4343, "10.0.0.7:41000")
    };
    // The client's peer is the local Ollama: the same `server` as its server view.
    let agent = ExchangeCtx {
        server: "ollama",
        ..ctx(Role::Client, "node", 5000, "127.0.0.1:11434")
    };
    let (r, c) = (TokenCount::reported, TokenCount::counted);
    use {Api::*, Operation::*};

    // Ollama, streamed chat: TTFT 80 ms, 21 tokens over 1 s (TPOT 50 ms), ending at t=95.1 s.
    let chat = Ex::new(Ollama, Chat, Some("llama3.2"), 94 * S, 1_100 * MS)
        .stream(80 * MS, 1_080 * MS)
        .tokens(r(12), r(21));
    run(&m, &ollama, chat);
    // Cold start: the request loaded the model (2 s), then answered without streaming.
    let mut cold = Ex::new(
        Ollama,
        TextCompletion,
        Some("qwen2.5:7b"),
        90 * S,
        2_600 * MS,
    )
    .tokens(r(5), r(40));
    cold.0.load_duration_ns = Some(2_000 * MS);
    run(&m, &ollama, cold);
    // Explicit load (`done_reason: load`) of an already loaded model.
    let mut load = Ex::new(Ollama, ModelLoad, Some("llama3.2"), 80 * S, 30 * MS);
    load.0.load_duration_ns = Some(8 * MS);
    run(&m, &ollama, load);
    // Context too long: 400 with an error body.
    let too_long = Ex::new(Ollama, Chat, Some("llama3.2"), 85 * S, 3 * MS)
        .failed(Some(400), ErrorKind::ContextLengthExceeded);
    run(&m, &ollama, too_long);
    // The client hung up mid-stream: 6 content events counted, no usage.
    let cancelled = Ex::new(Ollama, Chat, Some("llama3.2"), 96 * S, 700 * MS)
        .stream(300 * MS, 600 * MS)
        .tokens(TokenCount::ABSENT, c(6))
        .failed(Some(200), ErrorKind::ClientCancelled);
    run(&m, &ollama, cancelled);
    // Model cap (2): the third distinct model is `other`.
    run(
        &m,
        &ollama,
        Ex::new(
            Ollama,
            Embeddings,
            Some("nomic-embed-text"),
            97 * S,
            40 * MS,
        )
        .tokens(r(8), TokenCount::ABSENT),
    );

    // vLLM (OpenAI API) in python3, streamed with usage, and asking for tool calls.
    let mut tools = Ex::new(
        Openai,
        Chat,
        Some("meta-llama/Llama-3.1-8B"),
        98 * S,
        500 * MS,
    )
    .stream(20 * MS, 420 * MS)
    .tokens(r(200), r(101));
    tools.0.tool_calls = vec!["get_weather".into(), "get_weather".into()];
    tools.0.params.choices = Some(1);
    run(&m, &vllm, tools);
    // A batch: 4 prompts in one legacy completions request, n = 2 each.
    let mut batch = Ex::new(
        Openai,
        TextCompletion,
        Some("meta-llama/Llama-3.1-8B"),
        97 * S,
        300 * MS,
    )
    .tokens(r(16), r(64));
    batch.0.params.prompts = Some(4);
    batch.0.params.choices = Some(8);
    run(&m, &vllm, batch);
    // The server died before answering: no response at all.
    run(
        &m,
        &vllm,
        Ex::new(
            Openai,
            Chat,
            Some("meta-llama/Llama-3.1-8B"),
            99 * S,
            5 * MS,
        )
        .failed(None, ErrorKind::ServerClosed),
    );
    // Still in flight at scrape time: one active, one queued (no first token yet).
    let pending = Ex::new(Openai, Chat, Some("meta-llama/Llama-3.1-8B"), 99 * S, 0);
    std::mem::forget(m.started(&vllm, &pending.summary()));

    // One GPU sample: an H100 whose memory the vLLM pod's engine process holds (joined to the
    // vLLM unit by attribution::serving, tested there), and one whose NVML query was refused.
    let unit = [
        "vllm".to_string(),
        "server".into(),
        "vllm-0".into(),
        "llm".into(),
    ];
    let snap = GpuSnapshot {
        devices: vec![GpuDevice {
            gpu: "0".into(),
            uuid: "GPU-5f2e6a1c-0d6b-4bb5-9c1e-7d0e4a8f3b21".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_used_bytes: Some(20 << 30),
            memory_total_bytes: Some(80 << 30),
            utilization_ratio: Some(0.5),
            power_watts: Some(350.5),
            energy_joules: Some(123456.75),
        }],
        processes: Vec::new(),
        errors: vec!["no_permission"],
    };
    let mut joined = Joined::default();
    joined
        .per_gpu
        .insert(("0".into(), unit.clone()), (19 << 30, Some(0.5)));
    joined.memory.insert(unit, 19 << 30);
    m.gpu().update(&snap, &joined);
    m.gpu().nvml_available.set(1);
    m.set_gpu_memory(joined.memory);

    // The agent (node) calls Ollama: the client view of a streamed chat, and a rate-limited one.
    let client_chat = Ex::new(Ollama, Chat, Some("llama3.2"), 94 * S, 1_100 * MS)
        .stream(85 * MS, 1_080 * MS)
        .tokens(r(12), r(21));
    let mut client_chat = client_chat;
    client_chat.0.tool_calls = vec!["read_file".into()];
    run(&m, &agent, client_chat);
    // The agent embeds 3 chunks in one request (Ollama's OpenAI-compatible /v1/embeddings).
    let mut embed = Ex::new(Openai, Embeddings, Some("llama3.2"), 93 * S, 30 * MS)
        .tokens(r(24), TokenCount::ABSENT);
    embed.0.params.prompts = Some(3);
    run(&m, &agent, embed);
    // The agent's tool loop on OpenAI: gpt-4.1 asks for read_file (call_9) in a response ending at
    // t=91.2 s; the tool runs 2.5 s; the next request carries its result. Both priced by the
    // shipped table: 1000 + 1200 prompt (200 cached), 50 + 30 output tokens.
    let mut ask = Ex::new(Openai, Chat, Some("gpt-4.1"), 91 * S, 200 * MS).tokens(r(1000), r(50));
    ask.0.tool_calls = vec!["read_file".into()];
    ask.0.params.choices = Some(1);
    ask.0.tool_ids.calls = vec![llm_observer_decode::ToolUse {
        id: "call_9".into(),
        name: "read_file".into(),
    }];
    let openai = ctx(Role::Client, "node", 5000, "[2001:db8::1]:443");
    run(&m, &openai, ask);
    let mut answer =
        Ex::new(Openai, Chat, Some("gpt-4.1"), 93_700 * MS, 300 * MS).tokens(r(1200), r(30));
    answer.0.tokens.cached = r(200);
    answer.0.tool_ids.results = vec!["call_9".into()];
    run(&m, &openai, answer);
    let limited = Ex::new(Openai, Chat, Some("gpt-4o"), 95 * S, 90 * MS)
        .failed(Some(429), ErrorKind::RateLimited);
    run(
        &m,
        &ctx(Role::Client, "node", 5000, "[2001:db8::1]:443"),
        limited,
    );

    // MCP: the agent calls a tool on a local MCP server; the server's view of the same call.
    let mut call = Ex::new(Mcp, ToolCall, None, 97 * S, 150 * MS);
    call.0.mcp = Some(McpInfo {
        method: "tools/call".into(),
        name: Some("search_docs".into()),
        error_code: None,
    });
    run(
        &m,
        &ctx(Role::Client, "node", 5000, "127.0.0.1:3000"),
        Ex(call.0.clone()),
    );
    run(
        &m,
        &ctx(Role::Server, "mcp-server", 6000, "127.0.0.1:50002"),
        Ex(call.0),
    );
    let mut init =
        Ex::new(Mcp, McpOther, None, 96 * S, 4 * MS).failed(Some(200), ErrorKind::JsonRpcError);
    init.0.mcp = Some(McpInfo {
        method: "initialize".into(),
        name: None,
        error_code: Some(-32600),
    });
    run(
        &m,
        &ctx(Role::Server, "mcp-server", 6000, "127.0.0.1:50002"),
        init,
    );

    // Self-metrics, as the pipeline would set them.
    let sm = m.self_metrics();
    sm.events.with_label_values(&["data"]).inc_by(120);
    sm.events.with_label_values(&["conn_open"]).inc_by(6);
    sm.events.with_label_values(&["conn_close"]).inc_by(5);
    sm.set_lost_events(3, 1);
    sm.truncated_bytes.inc_by(4096);
    sm.other_protocol_bytes.inc_by(777);
    let ingress = sm.captured_bytes.with_label_values(&["ingress"]);
    ingress.inc_by(10_000);
    // Totals kept elsewhere (kernel maps, the connection table) are fed as absolute values.
    let egress = sm.captured_bytes.with_label_values(&["egress"]);
    sm.set_total(&egress, 20_000);
    sm.set_total(&egress, 50_000);
    sm.connections_tracked.set(1);
    sm.connections.with_label_values(&["server"]).inc_by(4);
    sm.connections.with_label_values(&["client"]).inc_by(2);
    sm.decode_error(&DecodeError::BadJson);
    sm.unsupported(Unsupported::Http2);
    sm.dropped.with_label_values(&["conn_table_full"]).inc();
    // The OOM killer took the vLLM server once.
    m.oom_killed("python3");
    // One inventory round: what Ollama's /api/ps and vLLM's /v1/models and /metrics said.
    let inv = m.inventory();
    let o = ["ollama", "llama3.2", "ollama", "", "", ""];
    let v = [
        "vllm",
        "meta-llama/Llama-3.1-8B",
        "vllm",
        "server",
        "vllm-0",
        "llm",
    ];
    inv.info
        .with_label_values(&[
            "ollama", "llama3.2", "ollama", "", "", "", "llama", "3.2B", "Q4_K_M",
        ])
        .set(1.0);
    inv.size.with_label_values(&o).set(3_338_801_804.0);
    inv.vram.with_label_values(&o).set(3_338_801_804.0);
    inv.context.with_label_values(&o).set(4096.0);
    inv.expires.with_label_values(&o).set(1_796_148_000.0);
    inv.context.with_label_values(&v).set(8192.0);
    inv.queue.with_label_values(&v).set(3.0);
    inv.running.with_label_values(&v).set(7.0);
    inv.kv_cache.with_label_values(&v).set(0.25);
    for (state, n) in [("busy", 1.0), ("idle", 3.0)] {
        inv.slots
            .with_label_values(&["llamacpp", "llama-server", "", "", "", state])
            .set(n);
    }
    inv.polls
        .with_label_values(&["ollama", "ollama_ps", "ok"])
        .inc_by(4);
    inv.polls
        .with_label_values(&["vllm", "metrics", "unreachable"])
        .inc();
    m
}

/// The build version changes with every release; the golden file says `VERSION`.
fn normalized(text: &str) -> String {
    text.replace(
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        "version=\"VERSION\"",
    )
}

#[test]
fn golden_exposition() {
    let m = session();
    let text = normalized(&m.encode());
    let path = data_dir().join("metrics_golden.prom");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    if text != want {
        for (i, (a, b)) in text.lines().zip(want.lines()).enumerate() {
            if a != b {
                panic!(
                    "line {}: got\n  {a}\nwant\n  {b}\n(BLESS=1 to accept)",
                    i + 1
                );
            }
        }
        panic!(
            "got {} lines, want {} (BLESS=1 to accept)",
            text.lines().count(),
            want.lines().count()
        );
    }
}

/// Encoding is idempotent: a second scrape with nothing new is byte-identical.
#[test]
fn scrape_is_stable() {
    let m = session();
    assert_eq!(m.encode(), m.encode());
}

/// The session reaches every registered family, and what `gather()` exports matches what
/// `families()` (the docs test's source) says: names, types, help, label names.
#[test]
fn every_family_exported_as_registered() {
    let m = session();
    m.encode();
    let mut infos = m.families().to_vec();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let gathered = m.registry().gather();
    let names: Vec<&str> = gathered.iter().map(|f| f.name()).collect();
    let want: Vec<&str> = infos.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, want);
    for (mf, info) in gathered.iter().zip(&infos) {
        assert_eq!(mf.help(), info.help);
        let kind = format!("{:?}", mf.get_field_type()).to_lowercase();
        assert_eq!(kind, info.kind.as_str(), "{}", info.name);
        let mut label_names: Vec<&str> = info.labels.iter().map(String::as_str).collect();
        label_names.sort_unstable();
        for metric in mf.get_metric() {
            let got: Vec<&str> = metric.get_label().iter().map(|l| l.name()).collect();
            assert_eq!(got, label_names, "{}", info.name);
        }
    }
}

/// No pid, path, peer of a server-view request, or raw oversized value appears in any label.
#[test]
fn no_unbounded_values_in_labels() {
    let text = session().encode();
    for forbidden in [
        "4242",
        "4343",
        "50001",
        "41000",
        "/api/",
        "nomic-embed-text",
    ] {
        assert!(
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(forbidden)),
            "{forbidden} leaked into a label:\n{text}"
        );
    }
}
