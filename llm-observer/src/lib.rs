//! llm-observer agent library: capture → conn → (llm-observer-decode) → sinks.
pub mod sinks;
