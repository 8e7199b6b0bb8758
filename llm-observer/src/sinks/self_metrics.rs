//! `llm_observer_*`: the agent's own health. The pipeline holds these handles and updates them
//! directly (they are lock-free atomics); bounded label values are pre-created so every series is
//! exported as 0 from the first scrape and `rate()` / `increase()` see the first increment.

use std::collections::HashMap;
use std::sync::Mutex;

use llm_observer_decode::{Api, DecodeError, Incomplete, Role, Unsupported};
use prometheus::core::{Collector, Metric};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::registry::Reg;

/// Values of `llm_observer_events_total{kind}`.
pub const EVENT_KINDS: &[&str] = &[
    "data",
    "conn_open",
    "conn_close",
    "proc_exit",
    "proc_exec",
    "oom_victim",
];
/// Values of `llm_observer_captured_bytes_total{direction}`: bytes the observed process received
/// (read from a socket) / sent (wrote).
pub const DIRECTIONS: &[&str] = &["ingress", "egress"];
/// Values of `llm_observer_connections_total{role}`.
pub const ROLES: &[&str] = &["server", "client"];
/// Values of `llm_observer_unsupported_total{kind}`.
pub const UNSUPPORTED_KINDS: &[&str] = &["http2", "http2_midstream", "grpc", "upgrade", "connect"];
/// Values of `llm_observer_dropped_total{stage}`, pre-created at start: ring records that did not
/// decode, connections not tracked because the table (user or kernel map) was full. A new stage
/// must be added here and in docs/metrics.md.
pub const DROP_STAGES: &[&str] = &[
    "event_decode",
    "conn_table_full",
    "kernel_inflight_full",
    "memory_budget",
];

/// Every [`DecodeError::reason`] value, so the series exist before the first error.
pub fn decode_error_reasons() -> [&'static str; 12] {
    [
        DecodeError::NotHttp.reason(),
        DecodeError::BadHead("").reason(),
        DecodeError::HeadTooLarge { limit: 0 }.reason(),
        DecodeError::BadChunk.reason(),
        DecodeError::Decompress.reason(),
        DecodeError::BadJson.reason(),
        DecodeError::EventTooLarge { limit: 0 }.reason(),
        DecodeError::UnmatchedResponse.reason(),
        DecodeError::TooManyPending.reason(),
        DecodeError::Gap { missing: 0 }.reason(),
        DecodeError::BadFrame("").reason(),
        DecodeError::Hpack.reason(),
    ]
}

/// Every [`Api`], for pre-created `llm_observer_exchanges_total{api}` series.
pub const APIS: &[Api] = &[
    Api::Ollama,
    Api::Openai,
    Api::Anthropic,
    Api::Tgi,
    Api::Llamacpp,
    Api::Mcp,
    Api::Gemini,
];

/// The agent's self-metrics. Fields are plain prometheus handles; helpers cover the updates that
/// need a rule (absolute totals, enum → label value).
#[derive(Debug)]
pub struct SelfMetrics {
    /// `kind`: one of [`EVENT_KINDS`].
    pub events: IntCounterVec,
    /// Events the kernel could not put into the ring buffer. Set with [`SelfMetrics::set_lost_events`].
    pub lost_events: IntCounter,
    /// Of those, the records that are not payload (open, close, exit, markers).
    pub lost_control_events: IntCounter,
    /// Payload bytes not copied because an event hit the per-event capture cap.
    pub truncated_bytes: IntCounter,
    /// Tracked sockets received over a unix socket and captured in the receiving process.
    pub passed_connections: IntCounter,
    /// Bytes of connections classified as not HTTP/1 (counted, not decoded).
    pub other_protocol_bytes: IntCounter,
    /// `direction`: one of [`DIRECTIONS`].
    pub captured_bytes: IntCounterVec,
    /// Libraries/executables with the TLS uprobes attached.
    pub tls_libraries: IntGauge,
    /// TLS uprobes attached.
    pub tls_probes: IntGauge,
    /// Files with TLS functions that could not be probed.
    pub tls_attach_failures: IntCounter,
    /// Connections whose TLS plaintext was captured.
    pub tls_connections: IntCounter,
    /// Connections whose first bytes were not HTTP/1.x.
    pub other_protocol_connections: IntCounter,
    /// TLS plaintext bytes that could not be tied to a tracked socket.
    pub tls_unmatched_bytes: IntCounter,
    /// Memory-BIO TLS connections tied to their `SSL*` by the records written after an SSL call.
    pub tls_record_binds: IntCounter,
    /// Connections currently in the connection table.
    pub connections_tracked: IntGauge,
    /// `role`: one of [`ROLES`]: MCP stdio sessions (pipes) decoded since start.
    pub stdio_sessions: IntCounterVec,
    /// Pipe ends whose first bytes looked like JSON-RPC but were not (untracked again).
    pub stdio_not_jsonrpc: IntCounter,
    /// MCP stdio sessions open now.
    pub stdio_sessions_open: IntGauge,
    /// Bytes all decoders buffer now (bounded by `--max-buffered-bytes`).
    pub buffered_bytes: IntGauge,
    /// `role`: one of [`ROLES`].
    pub connections: IntCounterVec,
    /// `reason`: [`DecodeError::reason`].
    pub decode_errors: IntCounterVec,
    /// `kind`: one of [`UNSUPPORTED_KINDS`].
    pub unsupported: IntCounterVec,
    /// `api`: exchanges decoded, both views. Incremented by [`super::Metrics::done`].
    pub exchanges: IntCounterVec,
    /// `stage`: events shed by a bounded queue.
    pub dropped: IntCounterVec,
    /// `view`, `reason` ([`Incomplete::as_str`]): exchanges the capture could not see whole.
    pub incomplete_exchanges: IntCounterVec,
    /// Capture time of the newest event applied (see the family's help).
    pub last_event_seconds: prometheus::Gauge,
    /// `version`, `attach_mode`; always 1.
    pub build_info: IntGaugeVec,
    /// Last absolute total passed to [`SelfMetrics::set_total`], per family name; the lock also
    /// serialises writers so two cannot both add the same delta.
    last_totals: Mutex<HashMap<String, u64>>,
}

impl SelfMetrics {
    pub(crate) fn register(reg: &mut Reg, attach_mode: &str) -> prometheus::Result<SelfMetrics> {
        let m = SelfMetrics {
            events: reg.counter_vec(
                "llm_observer_events_total",
                "Events read from the kernel ring buffer, by kind.",
                &["kind"],
            )?,
            lost_events: reg.counter(
                "llm_observer_lost_events_total",
                "Events the kernel dropped because the ring buffer was full (summed over CPUs).",
            )?,
            lost_control_events: reg.counter(
                "llm_observer_lost_control_events_total",
                "Of llm_observer_lost_events_total, the connection open/close, process and marker records (payload may fill only 15/16 of the ring, so these are lost only when that headroom fills too).",
            )?,
            truncated_bytes: reg.counter(
                "llm_observer_truncated_bytes_total",
                "Payload bytes not copied because a syscall exceeded the per-event capture cap.",
            )?,
            passed_connections: reg.counter(
                "llm_observer_passed_connections_total",
                "Tracked sockets passed to another process over a unix socket (SCM_RIGHTS) and captured in the process that received them.",
            )?,
            other_protocol_bytes: reg.counter(
                "llm_observer_other_protocol_bytes_total",
                "Bytes on connections classified as not HTTP/1.x (counted, not decoded).",
            )?,
            captured_bytes: reg.counter_vec(
                "llm_observer_captured_bytes_total",
                "Payload bytes copied from the kernel, by direction (ingress: received by the observed process, egress: sent).",
                &["direction"],
            )?,
            tls_libraries: reg.gauge(
                "llm_observer_tls_libraries",
                "Libraries and executables (by file) with the TLS plaintext uprobes attached (OpenSSL/BoringSSL SSL_read/SSL_write).",
            )?,
            tls_probes: reg.gauge(
                "llm_observer_tls_probes",
                "TLS uprobes attached (entry and return probes, all files together).",
            )?,
            tls_attach_failures: reg.counter(
                "llm_observer_tls_attach_failures_total",
                "Files with TLS functions (libssl, executables) the TLS probes could not be attached to; their HTTPS traffic is not decoded.",
            )?,
            tls_connections: reg.counter(
                "llm_observer_tls_connections_total",
                "Connections whose TLS plaintext was captured (decoded like plain HTTP).",
            )?,
            other_protocol_connections: reg.counter(
                "llm_observer_other_protocol_connections_total",
                "Connections whose first bytes were not HTTP/1.x (not decoded); a TLS connection counts only when it ends without any plaintext captured.",
            )?,
            tls_unmatched_bytes: reg.counter(
                "llm_observer_tls_unmatched_bytes_total",
                "TLS plaintext bytes an SSL call returned that could not be tied to a tracked TCP socket (not decoded).",
            )?,
            tls_record_binds: reg.counter(
                "llm_observer_tls_record_binds_total",
                "TLS connections of memory-BIO stacks (Node, asyncio) tied to their SSL object by the first TLS record their thread wrote after an SSL call that made no syscall.",
            )?,
            connections_tracked: reg.gauge(
                "llm_observer_connections_tracked",
                "TCP connections currently held in the connection table.",
            )?,
            stdio_sessions: reg.counter_vec(
                "llm_observer_stdio_sessions_total",
                "MCP over stdio sessions (JSON-RPC on pipes) started since start, by role (server: the process that reads the requests, client: the process that launched it and sends them).",
                &["role"],
            )?,
            stdio_not_jsonrpc: reg.counter(
                "llm_observer_stdio_not_jsonrpc_total",
                "Pipe ends whose first bytes looked like JSON-RPC in the kernel but were not (or were no pipe); no longer copied.",
            )?,
            stdio_sessions_open: reg.gauge(
                "llm_observer_stdio_sessions",
                "MCP over stdio sessions open now.",
            )?,
            buffered_bytes: reg.gauge(
                "llm_observer_buffered_bytes",
                "Bytes the decoders of all connections buffer now (heads, bodies, stream events), bounded by --max-buffered-bytes.",
            )?,
            connections: reg.counter_vec(
                "llm_observer_connections_total",
                "TCP connections tracked since start, by role (server: accepted, client: connected).",
                &["role"],
            )?,
            decode_errors: reg.counter_vec(
                "llm_observer_decode_errors_total",
                "Bytes or messages that could not be decoded, by reason.",
                &["reason"],
            )?,
            unsupported: reg.counter_vec(
                "llm_observer_unsupported_total",
                "Connections or HTTP/2 streams recognised but not decoded, by kind (http2: a preface inside HTTP/1, http2_midstream: HTTP/2 joined mid-way, grpc: a gRPC stream, upgrade, connect).",
                &["kind"],
            )?,
            exchanges: reg.counter_vec(
                "llm_observer_exchanges_total",
                "Request/response exchanges decoded, by API (server and client views together).",
                &["api"],
            )?,
            dropped: reg.counter_vec(
                "llm_observer_dropped_total",
                "Events shed by a bounded internal queue, by stage.",
                &["stage"],
            )?,
            incomplete_exchanges: reg.counter_vec(
                "llm_observer_incomplete_exchanges_total",
                "Exchanges the capture could not see whole (bytes lost, connection forgotten, undecodable), by view and reason; never counted as inference errors.",
                &["view", "reason"],
            )?,
            last_event_seconds: reg.float_gauge(
                "llm_observer_last_event_monotonic_seconds",
                "Capture time (CLOCK_MONOTONIC, seconds) of the newest kernel event the agent has applied; every event captured before it has been applied too.",
            )?,
            build_info: reg.gauge_vec(
                "llm_observer_build_info",
                "Always 1; labels carry the agent version and how the probes were attached.",
                &["version", "attach_mode"],
            )?,
            last_totals: Mutex::new(HashMap::new()),
        };
        let precreate = |v: &IntCounterVec, values: &[&str]| {
            for value in values {
                v.with_label_values(&[*value]);
            }
        };
        precreate(&m.events, EVENT_KINDS);
        precreate(&m.captured_bytes, DIRECTIONS);
        precreate(&m.connections, ROLES);
        precreate(&m.stdio_sessions, ROLES);
        precreate(&m.decode_errors, &decode_error_reasons());
        precreate(&m.unsupported, UNSUPPORTED_KINDS);
        precreate(&m.dropped, DROP_STAGES);
        for api in APIS {
            m.exchanges.with_label_values(&[api.as_str()]);
        }
        for view in ROLES {
            for why in Incomplete::ALL {
                m.incomplete_exchanges
                    .with_label_values(&[*view, why.as_str()]);
            }
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), attach_mode])
            .set(1);
        Ok(m)
    }

    /// Feeds `counter` from an absolute `total` that another party keeps (the kernel's per-CPU
    /// lost counts, summed): adds the increase since the previous call. A total below the previous
    /// one means the source restarted from 0 (maps recreated after a reload), so the whole new
    /// total is the increase; the exported counter never goes down either way.
    pub fn set_total(&self, counter: &IntCounter, total: u64) {
        // Children of one vec share a Desc, so the key needs the label values too.
        let mut key = counter
            .desc()
            .first()
            .map(|d| d.fq_name.clone())
            .unwrap_or_default();
        for pair in counter.metric().get_label() {
            key.push_str(&format!("\u{0}{}={}", pair.name(), pair.value()));
        }
        let mut last = self.last_totals.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.insert(key, total).unwrap_or(0);
        let delta = if total >= prev { total - prev } else { total };
        counter.inc_by(delta);
    }

    /// `llm_observer_lost_events_total` := `total`, `llm_observer_lost_control_events_total` :=
    /// `control` (see [`SelfMetrics::set_total`]).
    pub fn set_lost_events(&self, total: u64, control: u64) {
        self.set_total(&self.lost_events, total);
        self.set_total(&self.lost_control_events, control);
    }

    /// One exchange of `role`'s view ended incomplete.
    pub fn incomplete(&self, role: Role, why: Incomplete) {
        let view = match role {
            Role::Server => "server",
            Role::Client => "client",
        };
        self.incomplete_exchanges
            .with_label_values(&[view, why.as_str()])
            .inc();
    }

    pub fn decode_error(&self, e: &DecodeError) {
        self.decode_errors.with_label_values(&[e.reason()]).inc();
    }

    pub fn unsupported(&self, u: Unsupported) {
        let kind = match u {
            Unsupported::Http2 => "http2",
            Unsupported::Http2MidStream => "http2_midstream",
            Unsupported::Grpc => "grpc",
            Unsupported::Upgrade => "upgrade",
            Unsupported::Connect => "connect",
        };
        self.unsupported.with_label_values(&[kind]).inc();
    }
}
