//! The per-request families and how one [`Exchange`] updates them. Definitions live in
//! docs/metrics.md (tested against this file's help strings); comments here say why.

use llm_observer_decode::{Exchange, Operation, TokenCount, TokenSource};
use prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec};

use super::labels::status_class;
use super::registry::Reg;

/// OTel `gen_ai.server.request.duration` / `gen_ai.client.operation.duration` advice (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// OTel `gen_ai.server.time_to_first_token` advice (seconds).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// OTel `gen_ai.server.time_per_output_token` advice (seconds).
pub const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Tokens per second of one stream. OTel has no advice; roughly the reciprocals of the TPOT
/// buckets, extended to the 1000 tok/s that small models on big GPUs reach.
pub const DECODE_SPEED_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
];
/// Model load time (seconds): from a warm no-op load (milliseconds) to a cold multi-GiB load
/// from network storage (minutes).
pub const LOAD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// OTel `mcp.client.operation.duration` advice (seconds).
pub const MCP_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// An Ollama `load_duration` at or above this counts as a model load on a normal request. Ollama
/// reports a few milliseconds of bookkeeping on every request to an already-loaded model; a real
/// load (weights read and moved to the GPU) takes hundreds of milliseconds or more.
pub const MODEL_LOAD_THRESHOLD_NS: u64 = 100_000_000;

/// Where the observed process runs (docs/attribution.md); empty outside containers.
pub const PLACE_LABELS: &[&str] = &["container", "pod", "namespace"];
pub const SERVER_LABELS: &[&str] = &[
    "api",
    "operation",
    "model",
    "process",
    "container",
    "pod",
    "namespace",
    "server",
];
pub const CLIENT_LABELS: &[&str] = &[
    "api",
    "operation",
    "model",
    "process",
    "container",
    "pod",
    "namespace",
    "peer",
    "provider",
    "server",
];

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

/// A view's label names followed by the user-defined ones.
pub(crate) fn with_user<'a>(base: &[&'a str], user: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(user.iter().map(String::as_str))
        .collect()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The request succeeded: a 2xx response and no error detected in the body or the connection.
pub fn succeeded(ex: &Exchange) -> bool {
    ex.error.is_none() && matches!(ex.status, Some(200..=299))
}

/// Time per output token (seconds) = (last token event − first token event) / (output tokens − 1),
/// for streams with at least 2 output tokens (the first token's time is TTFT, not decode).
pub fn tpot_seconds(ex: &Exchange) -> Option<f64> {
    let (first, last, n) = decode_span(ex)?;
    // One division of exact integers: the result is the double nearest the true value, so a TPOT
    // of exactly 0.1 s lands in the `le="0.1"` bucket.
    Some((last - first) as f64 / ((n - 1) as f64 * 1e9))
}

/// Per-request decode speed (tokens/s) = (output tokens − 1) / (last − first token event):
/// 1 / TPOT, undefined when both events share a timestamp.
pub fn decode_tokens_per_second(ex: &Exchange) -> Option<f64> {
    let (first, last, n) = decode_span(ex)?;
    (last > first).then(|| (n - 1) as f64 * 1e9 / (last - first) as f64)
}

fn decode_span(ex: &Exchange) -> Option<(u64, u64, u64)> {
    if !ex.stream {
        return None;
    }
    let t = &ex.timings;
    let (first, last) = (t.first_token_ns?, t.last_token_ns?);
    let n = ex.tokens.completion.value?;
    (n >= 2 && last >= first).then_some((first, last, n))
}

/// Adds a token count to a `source`-labelled counter; absent counts add nothing.
fn add_tokens(c: &IntCounterVec, labels: &[&str], count: TokenCount) {
    if let Some(v) = count.value {
        let mut l = labels.to_vec();
        l.push(count.source.as_str());
        c.with_label_values(&l).inc_by(v);
    }
}

/// The families both views have, recorded the same way in each.
struct Shared<'a> {
    requests: &'a IntCounterVec,
    errors: &'a IntCounterVec,
    latency: &'a HistogramVec,
    ttft: &'a HistogramVec,
    prompt_tokens: &'a IntCounterVec,
    response_tokens: &'a IntCounterVec,
    prompts: &'a IntCounterVec,
    choices: &'a IntCounterVec,
}

impl Shared<'_> {
    fn record(&self, l: &[&str], ex: &Exchange) {
        self.requests
            .with_label_values(&with(l, &[status_class(ex.status)]))
            .inc();
        if let Some(err) = ex.error {
            self.errors
                .with_label_values(&with(l, &[err.as_str()]))
                .inc();
        }
        // Failed requests (instant 4xx, cancelled streams) would drag the latency distribution
        // toward whatever the failure took; they are counted in the error families.
        if succeeded(ex)
            && let Some(ns) = ex.timings.latency_ns()
        {
            self.latency.with_label_values(l).observe(secs(ns));
        }
        // Non-streaming responses carry all tokens at once: their "first token" is the response
        // itself, so TTFT is defined for streams only (as in the OTel conventions).
        if ex.stream
            && let Some(ns) = ex.timings.ttft_ns()
        {
            self.ttft.with_label_values(l).observe(secs(ns));
        }
        add_tokens(self.prompt_tokens, l, ex.tokens.prompt);
        add_tokens(self.response_tokens, l, ex.tokens.completion);
        // Batches: every finished request of an API that has the parameters, failed ones too,
        // so a ratio to llm_requests_total is prompts (choices) per request.
        for (c, v) in [
            (self.prompts, ex.params.prompts),
            (self.choices, ex.params.choices),
        ] {
            if let Some(v) = v {
                c.with_label_values(l).inc_by(v);
            }
        }
    }
}

/// Server view (`llm_*`): the observed process accepted the connection.
pub struct ServerFamilies {
    pub requests: IntCounterVec,
    pub prompts: IntCounterVec,
    pub choices: IntCounterVec,
    pub latency: HistogramVec,
    pub ttft: HistogramVec,
    pub tpot: HistogramVec,
    pub decode_speed: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub response_tokens: IntCounterVec,
    pub tokens_generated: IntCounterVec,
    pub token_source: IntCounterVec,
    pub errors: IntCounterVec,
    pub model_load: HistogramVec,
    /// The latest load per model beside the histogram, so a "model load times" table works.
    pub model_last_load: GaugeVec,
    pub tool_calls: IntCounterVec,
    pub active: IntGaugeVec,
    pub queue: IntGaugeVec,
    pub tokens_per_second: GaugeVec,
    pub memory: IntGaugeVec,
    pub oom_kills: IntCounterVec,
}

impl ServerFamilies {
    /// `user`: the operator's label names, after the built-in ones on every per-request family.
    pub(crate) fn register(reg: &mut Reg, user: &[String]) -> prometheus::Result<Self> {
        let l = with_user(SERVER_LABELS, user);
        let l = l.as_slice();
        Ok(ServerFamilies {
            requests: reg.counter_vec(
                "llm_requests_total",
                "LLM API requests served by an observed process that completed or failed, by HTTP status class (none: no response).",
                &with(l, &["status"]),
            )?,
            latency: reg.histogram_vec(
                "llm_inference_latency_seconds",
                "Successful requests: last response byte minus first request byte, seconds (kernel capture times).",
                l,
                DURATION_BUCKETS,
            )?,
            ttft: reg.histogram_vec(
                "llm_time_to_first_token_seconds",
                "Streaming requests: first content-bearing response event minus first request byte, seconds.",
                l,
                TTFT_BUCKETS,
            )?,
            tpot: reg.histogram_vec(
                "llm_time_per_output_token_seconds",
                "Streaming requests with at least 2 output tokens: (last token event - first token event) / (output tokens - 1), seconds.",
                l,
                TPOT_BUCKETS,
            )?,
            decode_speed: reg.histogram_vec(
                "llm_decode_tokens_per_second",
                "Streaming requests with at least 2 output tokens: (output tokens - 1) / (last token event - first token event), tokens per second.",
                l,
                DECODE_SPEED_BUCKETS,
            )?,
            prompt_tokens: reg.counter_vec(
                "llm_prompt_tokens_total",
                "Prompt (input) tokens of served requests, by source (reported by the server, or counted).",
                &with(l, &["source"]),
            )?,
            response_tokens: reg.counter_vec(
                "llm_response_tokens_total",
                "Completion (output) tokens of served requests, by source (reported by the server, or counted from stream events).",
                &with(l, &["source"]),
            )?,
            tokens_generated: reg.counter_vec(
                "llm_tokens_generated_total",
                "Output tokens the server reported generating (reported counts only; equals llm_response_tokens_total{source=\"reported\"}).",
                l,
            )?,
            token_source: reg.counter_vec(
                "llm_token_usage_source_total",
                "Served requests by where their token count came from (reported, counted, absent), per token type (prompt, completion).",
                &with(l, &["token_type", "source"]),
            )?,
            errors: reg.counter_vec(
                "llm_inference_errors_total",
                "Served requests that failed, by error type.",
                &with(l, &["type"]),
            )?,
            model_load: reg.histogram_vec(
                "llm_model_load_time_seconds",
                "Server-reported model load time (Ollama load_duration) of explicit load requests and of requests whose load took at least 0.1 s, seconds.",
                l,
                LOAD_BUCKETS,
            )?,
            model_last_load: reg.float_gauge_vec(
                "llm_model_last_load_time_seconds",
                "The latest load time llm_model_load_time_seconds observed, per model and server process, seconds.",
                l,
            )?,
            prompts: reg.counter_vec(
                "llm_request_prompts_total",
                "Prompts in served requests (OpenAI completions prompt and embeddings input: an array is a batch of prompts); divided by llm_requests_total, prompts per request.",
                l,
            )?,
            choices: reg.counter_vec(
                "llm_request_choices_total",
                "Choices served requests asked for (OpenAI n, default 1, times the prompts of a completions batch); divided by llm_requests_total, choices per request.",
                l,
            )?,
            tool_calls: reg.counter_vec(
                "llm_tool_calls_total",
                "Tool calls the model asked for in served responses, by tool name.",
                &with(l, &["tool"]),
            )?,
            active: reg.gauge_vec(
                "llm_active_requests",
                "LLM requests currently in flight in an observed server (request received, response not finished).",
                l,
            )?,
            queue: reg.gauge_vec(
                "llm_queue_size",
                "LLM requests currently in flight in an observed server that have no first token yet.",
                l,
            )?,
            tokens_per_second: reg.float_gauge_vec(
                "llm_tokens_per_second",
                "Output tokens per second over the last W complete seconds (W: tokens_per_second_window, default 30), each request's tokens spread over its generation interval.",
                &["model", "process", "container", "pod", "namespace"],
            )?,
            memory: reg.gauge_vec(
                "llm_memory_usage_bytes",
                "Memory of observed LLM serving units by type: rss (VmRSS of the server processes) and gpu (GPU memory of the unit's processes, all GPUs), bytes.",
                &["process", "container", "pod", "namespace", "type"],
            )?,
            oom_kills: reg.counter_vec(
                "llm_oom_kills_total",
                "Observed server processes killed by the kernel's OOM killer (their in-flight requests count as out_of_memory errors).",
                &["process"],
            )?,
        })
    }

    /// Every per-request family, from one finished exchange (not MCP).
    pub fn record(&self, labels: &[&str], ex: &Exchange) {
        let l = labels;
        Shared {
            requests: &self.requests,
            errors: &self.errors,
            latency: &self.latency,
            ttft: &self.ttft,
            prompt_tokens: &self.prompt_tokens,
            response_tokens: &self.response_tokens,
            prompts: &self.prompts,
            choices: &self.choices,
        }
        .record(l, ex);
        if let Some(s) = tpot_seconds(ex) {
            self.tpot.with_label_values(l).observe(s);
        }
        if let Some(r) = decode_tokens_per_second(ex) {
            self.decode_speed.with_label_values(l).observe(r);
        }
        if ex.tokens.completion.source == TokenSource::Reported
            && let Some(v) = ex.tokens.completion.value
        {
            self.tokens_generated.with_label_values(l).inc_by(v);
        }
        for (kind, count) in [
            ("prompt", ex.tokens.prompt),
            ("completion", ex.tokens.completion),
        ] {
            self.token_source
                .with_label_values(&with(l, &[kind, count.source.as_str()]))
                .inc();
        }
        if let Some(ns) = ex.load_duration_ns
            && (ex.operation == Operation::ModelLoad || ns >= MODEL_LOAD_THRESHOLD_NS)
        {
            self.model_load.with_label_values(l).observe(secs(ns));
            self.model_last_load.with_label_values(l).set(secs(ns));
        }
    }

    pub fn tool_call(&self, labels: &[&str], tool: &str) {
        self.tool_calls
            .with_label_values(&with(labels, &[tool]))
            .inc();
    }
}

/// Client view (`llm_client_*`): the observed process connected to an LLM API.
pub struct ClientFamilies {
    pub requests: IntCounterVec,
    pub prompts: IntCounterVec,
    pub choices: IntCounterVec,
    pub latency: HistogramVec,
    pub ttft: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub response_tokens: IntCounterVec,
    pub errors: IntCounterVec,
    pub tool_calls: IntCounterVec,
    pub active: IntGaugeVec,
}

impl ClientFamilies {
    pub(crate) fn register(reg: &mut Reg, user: &[String]) -> prometheus::Result<Self> {
        let l = with_user(CLIENT_LABELS, user);
        let l = l.as_slice();
        Ok(ClientFamilies {
            requests: reg.counter_vec(
                "llm_client_requests_total",
                "LLM API requests sent by an observed process that completed or failed, by HTTP status class (none: no response).",
                &with(l, &["status"]),
            )?,
            latency: reg.histogram_vec(
                "llm_client_latency_seconds",
                "Successful client requests: last response byte minus first request byte, seconds (kernel capture times).",
                l,
                DURATION_BUCKETS,
            )?,
            ttft: reg.histogram_vec(
                "llm_client_time_to_first_token_seconds",
                "Streaming client requests: first content-bearing response event minus first request byte, seconds.",
                l,
                DURATION_BUCKETS,
            )?,
            prompt_tokens: reg.counter_vec(
                "llm_client_prompt_tokens_total",
                "Prompt (input) tokens of client requests, by source (reported by the server, or counted).",
                &with(l, &["source"]),
            )?,
            response_tokens: reg.counter_vec(
                "llm_client_response_tokens_total",
                "Completion (output) tokens of client requests, by source (reported by the server, or counted from stream events).",
                &with(l, &["source"]),
            )?,
            errors: reg.counter_vec(
                "llm_client_errors_total",
                "Client requests that failed, by error type.",
                &with(l, &["type"]),
            )?,
            prompts: reg.counter_vec(
                "llm_client_request_prompts_total",
                "Prompts in client requests (OpenAI completions prompt and embeddings input: an array is a batch of prompts).",
                l,
            )?,
            choices: reg.counter_vec(
                "llm_client_request_choices_total",
                "Choices client requests asked for (OpenAI n, default 1, times the prompts of a completions batch).",
                l,
            )?,
            tool_calls: reg.counter_vec(
                "llm_client_tool_calls_total",
                "Tool calls the model asked the observed client to make, by tool name.",
                &with(l, &["tool"]),
            )?,
            active: reg.gauge_vec(
                "llm_client_active_requests",
                "LLM requests an observed client has in flight (request sent, response not finished).",
                l,
            )?,
        })
    }

    pub fn record(&self, labels: &[&str], ex: &Exchange) {
        Shared {
            requests: &self.requests,
            errors: &self.errors,
            latency: &self.latency,
            ttft: &self.ttft,
            prompt_tokens: &self.prompt_tokens,
            response_tokens: &self.response_tokens,
            prompts: &self.prompts,
            choices: &self.choices,
        }
        .record(labels, ex);
    }

    pub fn tool_call(&self, labels: &[&str], tool: &str) {
        self.tool_calls
            .with_label_values(&with(labels, &[tool]))
            .inc();
    }
}

/// MCP (JSON-RPC over HTTP), both views in separate families.
pub struct McpFamilies {
    pub server_requests: IntCounterVec,
    pub server_duration: HistogramVec,
    pub client_requests: IntCounterVec,
    pub client_duration: HistogramVec,
}

impl McpFamilies {
    pub(crate) fn register(reg: &mut Reg) -> prometheus::Result<Self> {
        Ok(McpFamilies {
            server_requests: reg.counter_vec(
                "llm_mcp_requests_total",
                "MCP requests served by an observed process, by method, tool (tools/call only) and error type (none: success).",
                &["process", "container", "pod", "namespace", "method", "tool", "error"],
            )?,
            server_duration: reg.histogram_vec(
                "llm_mcp_request_duration_seconds",
                "MCP requests served: last response byte minus first request byte, seconds.",
                &["process", "container", "pod", "namespace", "method"],
                MCP_BUCKETS,
            )?,
            client_requests: reg.counter_vec(
                "llm_client_mcp_requests_total",
                "MCP requests sent by an observed process, by peer, method, tool (tools/call only) and error type (none: success).",
                &[
                    "process",
                    "container",
                    "pod",
                    "namespace",
                    "peer",
                    "method",
                    "tool",
                    "error",
                ],
            )?,
            client_duration: reg.histogram_vec(
                "llm_client_mcp_duration_seconds",
                "MCP requests sent: last response byte minus first request byte, seconds.",
                &["process", "container", "pod", "namespace", "peer", "method"],
                MCP_BUCKETS,
            )?,
        })
    }
}
