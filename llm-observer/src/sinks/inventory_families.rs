//! Families read from the servers themselves (`--inventory-interval`): what each server says it
//! has loaded, and the load it reports in its own metrics, under the agent's labels so they sit
//! beside the wire-derived families. Definitions in docs/metrics.md.

use prometheus::{GaugeVec, IntCounterVec};

use super::registry::Reg;

/// Where a server runs: the same place labels as the server-view families.
pub const PLACE_LABELS: &[&str] = &["server", "process", "container", "pod", "namespace"];
/// A loaded model of one server.
pub const MODEL_LABELS: &[&str] = &[
    "server",
    "model",
    "process",
    "container",
    "pod",
    "namespace",
];
/// The model's descriptive facts, on an info series (value 1).
pub const INFO_LABELS: &[&str] = &[
    "server",
    "model",
    "process",
    "container",
    "pod",
    "namespace",
    "family",
    "parameter_size",
    "quantization",
];

pub struct InventoryFamilies {
    pub info: GaugeVec,
    pub size: GaugeVec,
    pub vram: GaugeVec,
    pub context: GaugeVec,
    pub expires: GaugeVec,
    pub slots: GaugeVec,
    pub queue: GaugeVec,
    pub running: GaugeVec,
    pub kv_cache: GaugeVec,
    /// `server`, `endpoint`, `result`.
    pub polls: IntCounterVec,
}

impl InventoryFamilies {
    pub(crate) fn register(reg: &mut Reg) -> prometheus::Result<Self> {
        let with_state: Vec<&str> = PLACE_LABELS.iter().copied().chain(["state"]).collect();
        Ok(InventoryFamilies {
            info: reg.float_gauge_vec(
                "llm_model_loaded_info",
                "A model the server reports loaded (Ollama /api/ps, llama-server /props, vLLM /v1/models, TGI /info, SGLang /get_model_info); always 1, labels carry its family, parameter size and quantization where the server gives them.",
                INFO_LABELS,
            )?,
            size: reg.float_gauge_vec(
                "llm_model_size_bytes",
                "Size of a loaded model as its server reports it (Ollama size, llama-server model size), bytes.",
                MODEL_LABELS,
            )?,
            vram: reg.float_gauge_vec(
                "llm_model_vram_bytes",
                "Part of a loaded model held in GPU memory as its server reports it (Ollama size_vram), bytes.",
                MODEL_LABELS,
            )?,
            context: reg.float_gauge_vec(
                "llm_model_context_length",
                "Context length a loaded model runs with as its server reports it (Ollama context_length, llama-server n_ctx, vLLM max_model_len, TGI max_total_tokens), tokens.",
                MODEL_LABELS,
            )?,
            expires: reg.float_gauge_vec(
                "llm_model_expires_timestamp_seconds",
                "When the server will unload an idle loaded model (Ollama expires_at), Unix seconds.",
                MODEL_LABELS,
            )?,
            slots: reg.float_gauge_vec(
                "llm_server_slots",
                "Decoding slots of a llama-server by state (busy: processing a request, idle), from /props and /slots.",
                &with_state,
            )?,
            queue: reg.float_gauge_vec(
                "llm_server_reported_queue_size",
                "Requests waiting as the server's own metrics report it (vllm:num_requests_waiting, tgi_queue_size, sglang:num_queue_reqs, llamacpp:requests_deferred), beside the wire-derived llm_queue_size.",
                MODEL_LABELS,
            )?,
            running: reg.float_gauge_vec(
                "llm_server_reported_running_requests",
                "Requests being processed as the server's own metrics report it (vllm:num_requests_running, tgi_batch_current_size, sglang:num_running_reqs, llamacpp:requests_processing), beside the wire-derived llm_active_requests.",
                MODEL_LABELS,
            )?,
            kv_cache: reg.float_gauge_vec(
                "llm_server_reported_kv_cache_usage_ratio",
                "KV cache in use as the server's own metrics report it (vllm:kv_cache_usage_perc, sglang:token_usage), 0 to 1.",
                MODEL_LABELS,
            )?,
            polls: reg.counter_vec(
                "llm_observer_inventory_polls_total",
                "The agent's requests to servers' own inventory and metrics endpoints, by server, endpoint (ollama_ps, props, slots, models, info, model_info, metrics) and result (ok, unavailable: 404 or 501, http_error, unreachable, bad_body); never counted as the server's requests.",
                &["server", "endpoint", "result"],
            )?,
        })
    }
}
