//! Test support for llm-observer's root integration and end-to-end tests:
//! - [`emulator`]: loopback LLM servers (Ollama, OpenAI, Anthropic) with deterministic timing,
//!   token counts and error scenarios, also shipped as the `llm-emulator` binary;
//! - [`harness`]: spawning the agent, the emulator and the Python clients with kill-on-drop, a tiny
//!   HTTP client, and a Prometheus text-exposition parser to read `/metrics`.

pub mod emulator;
pub mod harness;
