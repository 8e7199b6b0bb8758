//! Settings of the connection table and the counters it keeps.

use std::path::PathBuf;

use llm_observer_decode::Limits;

/// Settings of the connection table (flags `--max-connections`, `--idle-timeout`, `--port`...).
#[derive(Debug, Clone)]
pub struct ConnTableConfig {
    pub limits: Limits,
    /// Most connections tracked at once; new ones beyond it are dropped (and counted).
    pub max_connections: usize,
    /// Connections silent this long are forgotten (in-flight exchanges end incomplete, `expired`).
    pub idle_timeout_ns: u64,
    /// Only connections with one of these local or peer ports (empty = all).
    pub ports: Vec<u16>,
    /// Most bytes all decoders may buffer together ([`Budget`]).
    pub max_buffered_bytes: usize,
    pub proc_root: PathBuf,
}

impl Default for ConnTableConfig {
    fn default() -> Self {
        ConnTableConfig {
            limits: Limits::default(),
            max_connections: 16_384,
            idle_timeout_ns: 600 * 1_000_000_000,
            ports: Vec::new(),
            max_buffered_bytes: 128 * 1024 * 1024,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// Counters the table keeps for the self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub opened_server: u64,
    pub opened_client: u64,
    pub closed: u64,
    pub expired: u64,
    /// Sockets received from another process over a unix socket (SCM_RIGHTS).
    pub passed: u64,
    /// Connections refused because the table was full.
    pub dropped_full: u64,
    /// Data events for connections the table does not know (opened before a restart, evicted).
    pub orphan_events: u64,
    /// Bytes announced missing by the kernel or found missing by position.
    pub gap_bytes: u64,
    /// Connections whose first bytes were not HTTP/1.x (a TLS connection counts only when it
    /// ends without any plaintext captured: its process's TLS library was not probed).
    pub other_protocol: u64,
    /// Connections whose TLS plaintext was captured (they are decoded like plain HTTP).
    pub tls_connections: u64,
    pub captured_bytes_ingress: u64,
    pub captured_bytes_egress: u64,
}
