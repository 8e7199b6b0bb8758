//! Knowing the servers: which server software answers a connection (the `server` label), decided
//! from the observed process's identity ([`identity`]) and the fingerprints its answers carry
//! (`llm_observer_decode::llm::fingerprint`), kept stable per process and per address
//! ([`table`]). The decision table is documented in docs/metrics.md.
pub mod hops;
pub mod identity;
pub mod services;
pub mod table;

pub use table::ServerTable;

use llm_observer_decode::llm::fingerprint::ServerKind;

/// The `server` label value of a decision (`unknown` when nothing told).
pub fn label(kind: Option<ServerKind>) -> &'static str {
    kind.map_or(crate::sinks::labels::UNKNOWN, ServerKind::as_str)
}
