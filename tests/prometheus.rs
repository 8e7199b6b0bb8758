//! Root end-to-end test of the dashboards on a real Prometheus: Debian's `prometheus` server
//! scrapes the real agent (BPF loaded) every second while the official Python clients, curl and a
//! small tools/MCP server (tests/clients/tools_server.py) talk to the LLM emulator; then every
//! template variable and every panel query of every dashboard (variables substituted with the real
//! values Prometheus lists) is run through Prometheus's HTTP API and must return data, and the
//! latency p90 from `histogram_quantile` must agree with the latencies the clients measured within
//! one bucket.
//!
//! Synchronisation, never sleeps: the workload runs twice. The first round creates every series
//! (a counter's first sample carries no rate); once Prometheus shows that round's exact totals,
//! the timestamp of the scrape that showed them is the baseline. The second round is the measured
//! one; once Prometheus shows twice the totals, every `rate(...[R])` with R reaching back to the
//! baseline covers exactly the second round.
//!
//! Needs root, BPF, the release agent, the emulator, curl, the clients' venv and `prometheus`;
//! under `CI=true` a missing piece fails the test.

mod operate;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use llm_observer_tests::harness::{
    guard,
    process::{Proc, Stream},
    stack::{Agent, EmulatorProc, WorkloadSummary, curl_post, run_workload, venv_python},
};
use operate::dashboards::{self, regex_value, substitute};
use operate::prom::Prometheus;
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the agent decoding and Prometheus ingesting a finished round.
const SETTLE: Duration = Duration::from_secs(60);
/// Streamed requests of one round: FAST of the fast model (30 ms to the first of 8 tokens, 10 ms
/// apart: about 0.1 s) and SLOW of the `slow-60` model (60 ms apart: about 0.45 s). The p90 of the
/// 20 falls among the slow ones.
const FAST: u64 = 16;
const SLOW: u64 = 4;
/// The latency histogram's bounds (docs/metrics.md).
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Panels whose data cannot exist in this test, with why; their queries still run (so their
/// syntax and variables are checked by Prometheus) but may return nothing.
const NO_DATA_HERE: [(&str, &str, &str); 6] = [
    (
        "LLM Inference",
        "OOM kills in range",
        "needs a server process killed by the kernel's OOM killer",
    ),
    ("LLM Inference", "GPU memory by serving unit", NEEDS_GPU),
    (
        "LLM Inference",
        "GPU utilization by serving unit",
        NEEDS_GPU,
    ),
    (
        "LLM Inference",
        "GPU devices: memory used / total",
        NEEDS_GPU,
    ),
    (
        "LLM Inference",
        "GPU devices: utilization and power",
        NEEDS_GPU,
    ),
    ("LLM Inference", "Energy per output token", NEEDS_GPU),
];

const NEEDS_GPU: &str = "needs an NVIDIA GPU and NVML (none on this machine); syntax checked";

fn missing_piece() -> Option<String> {
    if let Some(why) = guard::agent_missing() {
        return Some(why);
    }
    if !operate::have("prometheus") {
        return Some(
            "no prometheus server (apt-get install prometheus; cargo xtask setup --test)".into(),
        );
    }
    if !operate::have("curl") {
        return Some("no curl".into());
    }
    venv_python().err().map(|e| format!("{e:#}"))
}

/// The tools/MCP server, listening on a loopback port; killed on drop.
struct ToolsServer {
    _proc: Proc,
    port: u16,
}

impl ToolsServer {
    fn start() -> ToolsServer {
        let script = operate::root().join("tests/clients/tools_server.py");
        let mut cmd = Command::new(venv_python().expect("venv"));
        cmd.arg(script);
        let mut proc = Proc::spawn("tools_server.py", cmd).expect("tools server starts");
        let port = proc
            .wait_for_line(Duration::from_secs(30), |s, l| {
                (s == Stream::Stdout)
                    .then(|| {
                        l.strip_prefix("listening on 127.0.0.1:")?
                            .trim()
                            .parse()
                            .ok()
                    })
                    .flatten()
            })
            .expect("tools server prints its port");
        ToolsServer { _proc: proc, port }
    }
}

/// Names and ports of one test run.
struct Run {
    emu: EmulatorProc,
    tools: ToolsServer,
    fast: String,
    slow: String,
    ollama: String,
    anthropic: String,
    load: String,
    error: String,
    agentic: String,
    /// The MCP tool of this run: called once successfully (which admits its name as a label
    /// value), then once with `"fail": true` (a tool error named by the admitted value).
    weather: String,
}

impl Run {
    fn workload(&self, args: &[&str]) -> WorkloadSummary {
        run_workload(&self.emu.base_url(), args, WORKLOAD_TIMEOUT).expect("workload runs")
    }

    fn curl(&self, port: u16, path: &str, body: &Value) -> u16 {
        curl_post(
            &format!("http://127.0.0.1:{port}{path}"),
            body,
            false,
            Duration::from_secs(30),
        )
        .expect("curl runs")
        .0
    }

    /// One round of traffic; returns the client-measured latencies of the FAST + SLOW streams.
    fn round(&self) -> Vec<f64> {
        let mut latencies = Vec::new();
        for (model, n) in [(&self.fast, FAST), (&self.slow, SLOW)] {
            let n = n.to_string();
            let w = self.workload(&[
                "--api", "openai", "--mode", "stream", "--usage", "--n", &n, "--model", model,
            ]);
            assert_eq!(w.ok().to_string(), n, "{:?}", w.0);
            latencies.extend(
                w.0["per_request"]
                    .as_array()
                    .expect("per_request")
                    .iter()
                    .map(|r| r["latency_s"].as_f64().expect("latency_s")),
            );
        }
        let w = self.workload(&[
            "--api",
            "ollama",
            "--endpoint",
            "generate",
            "--mode",
            "nonstream",
            "--n",
            "2",
            "--model",
            &self.ollama,
        ]);
        assert_eq!(w.ok(), 2, "{:?}", w.0);
        let w = self.workload(&[
            "--api",
            "anthropic",
            "--mode",
            "stream",
            "--n",
            "2",
            "--model",
            &self.anthropic,
        ]);
        assert_eq!(w.ok(), 2, "{:?}", w.0);
        let emu = self.emu.addr().port();
        // An explicit Ollama model load, and a rate-limited request.
        assert_eq!(
            self.curl(emu, "/api/generate", &json!({"model": self.load})),
            200
        );
        let err = json!({"model": self.error, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(self.curl(emu, "/v1/chat/completions", &err), 429);
        // A model answer asking for a tool call, then the agent's MCP session.
        let chat = json!({"model": self.agentic, "messages": [{"role": "user", "content": "weather?"}],
                          "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
        assert_eq!(
            self.curl(self.tools.port, "/v1/chat/completions", &chat),
            200
        );
        let rpc = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        for msg in [
            rpc(
                1,
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                                        "clientInfo": {"name": "curl", "version": "1"}}),
            ),
            rpc(2, "tools/list", json!({})),
            rpc(
                3,
                "tools/call",
                json!({"name": self.weather, "arguments": {"city": "Paris"}}),
            ),
            rpc(
                4,
                "tools/call",
                json!({"name": self.weather, "arguments": {"fail": true}}),
            ),
            rpc(5, "resources/read", json!({"uri": "file:///nothing"})),
        ] {
            assert_eq!(self.curl(self.tools.port, "/mcp", &msg), 200);
        }
        latencies
    }

    /// Exact totals one round adds, as PromQL selectors summed by the caller.
    fn totals(&self, rounds: f64) -> Vec<(String, f64)> {
        let m =
            |model: &str| format!("llm_requests_total{{job=\"llm-metrics\", model=\"{model}\"}}");
        // Other processes on the node may send LLM and MCP traffic too: every total is selected
        // by this run's model names, tool names or the tools server's address.
        let agentic = format!("model=\"{}\"", self.agentic);
        let peer = format!("peer=\"127.0.0.1:{}\"", self.tools.port);
        let mut out = vec![
            (m(&self.fast), FAST as f64),
            (m(&self.slow), SLOW as f64),
            (m(&self.ollama), 2.0),
            (m(&self.anthropic), 2.0),
            (m(&self.load), 1.0),
            // A model that never succeeds is not admitted as a label value (it is `other`): the
            // rate-limited request is selected by the emulator's address in the client view.
            (
                format!(
                    "llm_client_errors_total{{peer=\"127.0.0.1:{}\", type=\"rate_limited\"}}",
                    self.emu.addr().port()
                ),
                1.0,
            ),
            (m(&self.agentic), 1.0),
            (
                format!(
                    "llm_inference_latency_seconds_count{{model=~\"{}|{}\"}}",
                    self.fast, self.slow
                ),
                (FAST + SLOW) as f64,
            ),
            (
                format!(
                    "llm_client_requests_total{{model=~\"{}|{}\"}}",
                    self.fast, self.slow
                ),
                (FAST + SLOW) as f64,
            ),
            (
                format!(
                    "llm_model_load_time_seconds_count{{model=\"{}\"}}",
                    self.ollama
                ),
                2.0,
            ),
            (
                format!("llm_tool_calls_total{{tool=\"get_weather\", {agentic}}}"),
                1.0,
            ),
            (
                format!("llm_client_tool_calls_total{{tool=\"get_weather\", {agentic}}}"),
                1.0,
            ),
            // MCP: the client view by the tools server's address; the server view (no peer
            // label) by this run's tool names.
            (format!("llm_client_mcp_requests_total{{{peer}}}"), 5.0),
            (
                format!(
                    "llm_client_mcp_requests_total{{{peer}, method=\"tools/call\", error=\"tool_error\"}}"
                ),
                1.0,
            ),
            (
                format!(
                    "llm_client_mcp_requests_total{{{peer}, method=\"resources/read\", error=\"jsonrpc_error\"}}"
                ),
                1.0,
            ),
            (
                format!(
                    "llm_mcp_requests_total{{method=\"tools/call\", tool=\"{}\", error=\"none\"}}",
                    self.weather
                ),
                1.0,
            ),
            (
                format!(
                    "llm_mcp_requests_total{{method=\"tools/call\", tool=\"{}\", error=\"tool_error\"}}",
                    self.weather
                ),
                1.0,
            ),
        ];
        for t in &mut out {
            t.1 *= rounds;
        }
        out
    }
}

fn bucket_index(v: f64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|&b| v <= b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// Nearest-rank quantile of `xs`.
fn nearest_rank(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[test]
fn every_dashboard_query_returns_data_on_a_real_prometheus() {
    if let Some(why) = missing_piece() {
        guard::skip_or_fail::<()>(&why);
        return;
    }
    // Ollama answers report a 150 ms load_duration: at least 0.1 s, so each is a model load.
    let emu = EmulatorProc::start(
        EMULATOR,
        &[
            "--ttft-ms",
            "30",
            "--token-interval-ms",
            "10",
            "--load-ms",
            "150",
        ],
    )
    .expect("emulator starts");
    let tools = ToolsServer::start();
    let port = emu.addr().port();
    let agent = Agent::start(&["--port", &format!("{port},{}", tools.port)]).expect("agent starts");
    let tag = |base: &str| format!("{base}:{port}");
    let run = Run {
        fast: tag("dash-fast"),
        slow: tag("slow-60"),
        ollama: tag("dash-ollama"),
        anthropic: tag("dash-anthropic"),
        load: tag("dash-load"),
        error: tag("err-429"),
        agentic: tag("dash-agent"),
        weather: format!("weather_{port}"),
        emu,
        tools,
    };
    let rules = operate::root().join("deploy/prometheus/rules");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}/*.yml\n\
         scrape_configs:\n  - job_name: llm-metrics\n    static_configs:\n      - targets: ['{}']\n",
        rules.display(),
        agent.addr()
    );
    let prom = Prometheus::start(&config).expect("prometheus starts");
    let fail = |what: &str, e: anyhow::Error| -> ! {
        // The agent's own account of what it could not see: losses explain missing requests.
        let health = prom
            .query(
                "{__name__=~\"llm_observer_(lost_events|dropped|truncated_bytes|decode_errors|events)_total\"} > 0",
            )
            .map(|v| {
                v.iter()
                    .map(|(l, x)| format!("  {l:?} {x}\n"))
                    .collect::<String>()
            })
            .unwrap_or_else(|e| format!("{e:#}"));
        let lost = prom
            .query("sum(llm_observer_lost_events_total)")
            .ok()
            .and_then(|v| v.first().map(|s| s.1))
            .unwrap_or(0.0);
        let why = if lost > 0.0 {
            format!(
                "\nthe agent lost {lost} kernel events (ring buffer full: heavy traffic of other \
                 processes on this node), so exact totals cannot appear"
            )
        } else {
            String::new()
        };
        panic!(
            "{what}: {e:#}{why}\nagent self-metrics (non-zero):\n{health}agent log (tail):\n{}\nprometheus log:\n{}",
            tail(&agent.proc.output(), 30),
            tail(&prom.proc.output(), 30)
        )
    };

    // Round 1 creates every series; the scrape that shows all of it is the baseline.
    run.round();
    let t1 = prom
        .wait_for_totals(&run.totals(1.0), SETTLE)
        .unwrap_or_else(|e| fail("round 1", e));
    let baseline = prom
        .query_at("timestamp(up{job=\"llm-metrics\"})", t1)
        .expect("timestamp query")
        .first()
        .map(|s| s.1)
        .expect("up has a sample");
    // Round 2, the measured one.
    let latencies = run.round();
    let t_end = prom
        .wait_for_totals(&run.totals(2.0), SETTLE)
        .unwrap_or_else(|e| fail("round 2", e));
    // Back to just after the sample before the baseline: every rate covers round 2 exactly.
    let range = format!("{}ms", ((t_end - baseline + 0.5) * 1000.0).round() as u64);

    let all = dashboards::load_all();
    assert_eq!(all.len(), 3, "three dashboards");
    let mut report = String::new();
    let mut empty = Vec::new();
    for d in &all {
        // Variables in order (later ones use earlier ones), each set to every value it lists.
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in d.variables.iter().filter(|v| v.kind == "query") {
            let q = v.query.as_deref().expect("query variable has a query");
            let (selector, label) = dashboards::label_values(q).expect("label_values query");
            let selector = substitute(
                &selector.unwrap_or_else(|| format!("{{{label}!=\"\"}}")),
                &vars,
                &range,
            );
            let mut vals: Vec<String> = prom
                .series(&selector)
                .unwrap_or_else(|e| panic!("{}: variable {} ({selector}): {e:#}", d.title, v.name))
                .into_iter()
                .filter_map(|mut s| s.remove(&label))
                .collect();
            vals.sort();
            vals.dedup();
            if vals.is_empty() && ["namespace", "pod", "container"].contains(&v.name.as_str()) {
                // No process of this workload runs in a container: the empty value (the cAdvisor
                // convention), which the panels' matchers must then still match.
                writeln!(
                    report,
                    "{} | variable {} | no value here (no container): the empty value",
                    d.title, v.name
                )
                .ok();
                vals.push(String::new());
            }
            assert!(
                !vals.is_empty(),
                "{}: variable {} lists no value ({selector})",
                d.title,
                v.name
            );
            writeln!(
                report,
                "{} | variable {} | {} values: {}",
                d.title,
                v.name,
                vals.len(),
                vals.join(", ")
            )
            .ok();
            vars.insert(v.name.clone(), regex_value(&vals));
            values.insert(v.name.clone(), vals);
        }
        assert_eq!(
            values["node"],
            vec![agent.addr().to_string()],
            "{}: node",
            d.title
        );
        for q in &d.queries {
            let expr = substitute(&q.expr, &vars, &range);
            let samples = prom.query_at(&expr, t_end).unwrap_or_else(|e| {
                panic!("{} / {} ({}): {e:#}\n{expr}", d.title, q.panel, q.ref_id)
            });
            let finite = samples.iter().filter(|s| s.1.is_finite()).count();
            writeln!(
                report,
                "{} | {} | {} | {} series ({} finite) | {}",
                d.title,
                q.panel,
                q.ref_id,
                samples.len(),
                finite,
                q.expr
            )
            .ok();
            if finite == 0
                && !NO_DATA_HERE
                    .iter()
                    .any(|(d, p, _)| *d == q.dashboard && *p == q.panel)
            {
                empty.push(format!(
                    "{} / {} ({}): {expr} → {samples:?}",
                    d.title, q.panel, q.ref_id
                ));
            }
        }
    }
    // The shipped alerting rules loaded and evaluate cleanly on the agent's real series.
    let rules = prom.rules().expect("rules API");
    assert_eq!(rules.len(), 9, "{rules:?}");
    assert!(rules.iter().all(|(_, health)| health == "ok"), "{rules:?}");

    // What the agent used for this workload, for the DaemonSet's requests and limits.
    writeln!(report, "agent: {}", agent_usage(agent.proc.id())).ok();
    for (d, p, why) in NO_DATA_HERE {
        writeln!(report, "{d} | {p} | not expected to have data here: {why}").ok();
    }
    println!("{report}");
    let out = operate::root().join("target/operate");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("dashboard-queries.txt"), &report);
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    // The p90 panel of the selection {fast, slow} against the 20 latencies the clients measured.
    let inference = all
        .iter()
        .find(|d| d.title == "LLM Inference")
        .expect("LLM Inference");
    let p90 = inference
        .queries
        .iter()
        .find(|q| q.panel == "Latency p50 / p90 / p99" && q.ref_id == "B")
        .expect("the p90 target");
    let mut vars = BTreeMap::new();
    vars.insert("node".into(), regex_value(&[agent.addr().to_string()]));
    vars.insert("api".into(), regex_value(&["openai".into()]));
    vars.insert(
        "model".into(),
        regex_value(&[run.fast.clone(), run.slow.clone()]),
    );
    vars.insert("process".into(), regex_value(&["llm-emulator".into()]));
    // Grafana's "All" for the place variables.
    for place in ["namespace", "pod", "container"] {
        vars.insert(place.into(), ".*".into());
    }
    let expr = substitute(&p90.expr, &vars, &range);
    let got = prom.query_at(&expr, t_end).expect("p90 query");
    assert_eq!(got.len(), 1, "{expr} → {got:?}");
    let prom_p90 = got[0].1;
    assert_eq!(latencies.len() as u64, FAST + SLOW);
    let true_p90 = nearest_rank(&latencies, 0.9);
    let (a, b) = (bucket_index(prom_p90), bucket_index(true_p90));
    println!(
        "p90: histogram_quantile {prom_p90:.4} s (bucket {a}), clients' nearest rank {true_p90:.4} s (bucket {b})"
    );
    assert!(
        a.abs_diff(b) <= 1,
        "histogram_quantile p90 {prom_p90} s and the clients' p90 {true_p90} s are more than one bucket apart\n\
         latencies: {latencies:?}"
    );
    // The design: the fast stream ends well inside (0.08, 0.16], the slow one inside (0.32, 0.64],
    // so the p90 is interpolated in the slow bucket.
    assert_eq!(
        a,
        bucket_index(0.45),
        "p90 {prom_p90} s is not in the slow bucket"
    );
}

/// VmRSS, VmHWM and CPU seconds (user + system) of `pid`, from /proc.
fn agent_usage(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name's closing parenthesis: utime and stime are the 12th and 13th.
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(f64::NAN);
    // USER_HZ is 100 on Linux.
    format!(
        "VmRSS {}, VmHWM {}, CPU {:.2} s",
        field("VmRSS:"),
        field("VmHWM:"),
        ticks / 100.0
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
