//! llm-observer agent library. Data flows one way:
//! [`capture`] (kernel events) → [`conn`] (connections, reassembly) → `llm_observer_decode`
//! (HTTP + LLM decoders) → [`sinks`] (Prometheus metrics, JSON trace lines). [`pipeline`] runs
//! it; [`attribution`] names the processes behind connections; [`servers`] tells which server
//! software answers them; [`top`] is a terminal view of a running agent's `/metrics`.
pub mod attribution;
pub mod capture;
pub mod cli;
pub mod conn;
pub mod inventory;
pub mod pipeline;
pub mod servers;
pub mod sinks;
pub mod top;
