//! llm-observer agent library. Data flows one way:
//! [`capture`] (kernel events) → [`conn`] (connections, reassembly) → `llm_observer_decode`
//! (HTTP + LLM decoders) → [`sinks`] (Prometheus metrics, JSON trace lines).
pub mod capture;
pub mod sinks;
