//! Stage 2: connections. Kernel events → per-connection state → the decoder of each connection.
//!
//! A connection is identified by `(tgid, fd, generation)`, so a reused fd number never merges two
//! connections. Each keeps the next expected byte position of both directions: a jump forward is
//! a capture gap (ring overflow, truncation), announced to the decoder so it resyncs instead of
//! misparsing. Directions map to request/response streams by role: on an accepted socket (server)
//! ingress carries requests, on a connected socket (client) egress does.

pub mod budget;
mod config;
mod state;
pub mod stdio;
mod table;
#[cfg(test)]
mod tests;

pub use config::{ConnTableConfig, TableStats};
pub use stdio::{StdioConfig, StdioStats, StdioTable};
pub use table::ConnTable;
