//! [`RecordSink`]: one [`ExchangeRecord`] per decoded exchange — the exchange's facts with wall-clock
//! times and the attribution of its connection — handed to each [`RecordOutput`] (the event log,
//! OTLP spans). Built once per exchange, so every output says the same thing about it.
//!
//! A record carries no prompt or response text (the [`Exchange`] holds none) and no header values.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc};

use llm_observer_decode::{DecodeError, Exchange, Role, Tokens, Unsupported, llm::RequestSummary};
use serde::Serialize;

use super::correlate::{Correlator, SpanIds, hex};
use crate::{
    attribution::{Place, names::Names},
    capture::{ConnId, Event, procfs},
    sinks::sink::{ConnView, Sink},
    sinks::{families, wallclock::WallClock},
};

/// Longest string taken from the wire into a record (model names, finish reasons, tool names).
const MAX_STR: usize = 256;

/// Where a record goes.
pub trait RecordOutput {
    fn record(&mut self, record: &ExchangeRecord<'_>);
}

/// Wall-clock (RFC 3339) times of an exchange's events; absent events are `null`.
#[derive(Debug, Clone, Serialize)]
pub struct WallTimings {
    pub request_start: String,
    pub request_end: Option<String>,
    pub response_start: Option<String>,
    pub first_token: Option<String>,
    pub last_token: Option<String>,
    pub response_end: Option<String>,
}

/// Who saw the exchange: the observed process and its place, the connection's addresses.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    /// The `process` label value (docs/attribution.md).
    pub process: String,
    pub comm: String,
    pub pid: u32,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// The record of one exchange. Serialized as is, it is one event-log line.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeRecord<'a> {
    /// When the exchange ended (its last response byte, else its request start), RFC 3339.
    pub time: String,
    /// `tgid-fd-generation-seq`: unique per exchange for the life of the host's processes.
    pub id: String,
    /// W3C trace id and span id (hex) of the exchange's span, as exported over OTLP; the two
    /// views of one loopback call share the trace, the server's span the child of the client's.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub role: Role,
    pub api: &'static str,
    pub operation: &'static str,
    pub method: &'a str,
    pub path: &'a str,
    pub request_model: Option<&'a str>,
    pub response_model: Option<&'a str>,
    pub stream: bool,
    /// The request's `max_tokens` and `temperature` when it set them (OpenAI, Anthropic).
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    /// Prompts and choices of a batch (OpenAI `prompt` / `input` arrays, `n`), where the API
    /// has them.
    pub prompts: Option<u64>,
    pub choices: Option<u64>,
    pub status: Option<u16>,
    /// The bounded error kind (`llm_inference_errors_total{error_type}`), `null` on success.
    pub error_type: Option<&'static str>,
    /// Why the capture could not see it whole (`llm_observer_incomplete_exchanges_total{reason}`).
    pub incomplete: Option<&'static str>,
    pub finish_reason: Option<&'a str>,
    /// Each count with its source (`reported`, `counted`, `absent`).
    pub tokens: Tokens,
    pub timings: WallTimings,
    pub ttft_seconds: Option<f64>,
    pub latency_seconds: Option<f64>,
    pub tpot_seconds: Option<f64>,
    pub content_events: u64,
    pub tool_calls: Vec<&'a str>,
    pub mcp_method: Option<&'a str>,
    pub mcp_tool: Option<&'a str>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    #[serde(flatten)]
    pub attribution: Attribution,
    /// Raw facts for outputs that need them (the OTLP exporter's kernel times); not serialized.
    #[serde(skip)]
    pub exchange: &'a Exchange,
    #[serde(skip)]
    pub unix: UnixTimes,
    #[serde(skip)]
    pub ids: SpanIds,
}

/// Unix ns of the span-shaped times (for OTLP).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixTimes {
    pub start: u64,
    pub end: u64,
    pub first_token: Option<u64>,
}

/// `s` cut to at most [`MAX_STR`] bytes, at a character boundary.
pub fn bounded(s: &str) -> &str {
    crate::sinks::labels::cut(s, MAX_STR)
}

fn secs(ns: Option<u64>) -> Option<f64> {
    ns.map(|n| n as f64 / 1e9)
}

impl<'a> ExchangeRecord<'a> {
    pub fn new(
        clock: &WallClock,
        conn: &ConnView<'_>,
        seq: u64,
        ex: &'a Exchange,
        place: Place,
        ids: SpanIds,
    ) -> ExchangeRecord<'a> {
        let t = &ex.timings;
        let wall = |ns: Option<u64>| ns.map(|n| clock.rfc3339(n));
        let end_ns = t.response_end_ns.unwrap_or(t.request_start_ns);
        let mcp = ex.mcp.as_ref();
        ExchangeRecord {
            time: clock.rfc3339(end_ns),
            id: format!(
                "{}-{}-{}-{seq}",
                conn.id.tgid, conn.id.fd, conn.id.generation
            ),
            trace_id: hex(&ids.trace_id),
            span_id: hex(&ids.span_id),
            parent_span_id: ids.parent_span_id.map(|p| hex(&p)),
            role: conn.role,
            api: ex.api.as_str(),
            operation: ex.operation.as_str(),
            method: bounded(&ex.method),
            path: bounded(&ex.path),
            request_model: ex.request_model.as_deref().map(bounded),
            response_model: ex.response_model.as_deref().map(bounded),
            stream: ex.stream,
            max_tokens: ex.params.max_tokens,
            temperature: ex.params.temperature,
            prompts: ex.params.prompts,
            choices: ex.params.choices,
            status: ex.status,
            error_type: ex.error.map(|e| e.as_str()),
            incomplete: ex.incomplete.map(|i| i.as_str()),
            finish_reason: ex.finish_reason.as_deref().map(bounded),
            tokens: ex.tokens,
            timings: WallTimings {
                request_start: clock.rfc3339(t.request_start_ns),
                request_end: wall(t.request_end_ns),
                response_start: wall(t.response_start_ns),
                first_token: wall(t.first_token_ns),
                last_token: wall(t.last_token_ns),
                response_end: wall(t.response_end_ns),
            },
            ttft_seconds: secs(t.ttft_ns()),
            latency_seconds: secs(t.latency_ns()),
            tpot_seconds: families::tpot_seconds(ex),
            content_events: t.content_events,
            tool_calls: ex.tool_calls.iter().map(|s| bounded(s)).collect(),
            mcp_method: mcp.map(|m| bounded(&m.method)),
            mcp_tool: mcp
                .filter(|m| m.method == "tools/call")
                .and_then(|m| m.name.as_deref())
                .map(bounded),
            request_bytes: ex.request_bytes,
            response_bytes: ex.response_bytes,
            attribution: Attribution {
                process: conn.process.name.to_string(),
                comm: conn.process.comm.to_string(),
                pid: conn.id.tgid,
                container: place.container,
                pod: place.pod,
                namespace: place.namespace,
                local: conn.local,
                peer: conn.peer,
            },
            exchange: ex,
            unix: UnixTimes {
                start: clock.unix_ns(t.request_start_ns),
                end: clock.unix_ns(end_ns),
                first_token: t.first_token_ns.map(|n| clock.unix_ns(n)),
            },
            ids,
        }
    }
}

/// Builds a record per finished exchange and hands it to every output.
pub struct RecordSink {
    clock: WallClock,
    names: Arc<Names>,
    outputs: Vec<Box<dyn RecordOutput + Send>>,
    ids: Correlator,
    proc_root: PathBuf,
    /// Local addresses of client connections (the capture learns only the peer at `connect`),
    /// read from /proc once per connection that carries an API call; forgotten when its process
    /// exits.
    locals: HashMap<ConnId, Option<SocketAddr>>,
}

/// Client connections whose local address is remembered at most (then the cache starts over).
const MAX_LOCALS: usize = 65_536;

impl RecordSink {
    pub fn new(
        clock: WallClock,
        names: Arc<Names>,
        outputs: Vec<Box<dyn RecordOutput + Send>>,
        proc_root: PathBuf,
    ) -> Self {
        RecordSink {
            clock,
            names,
            outputs,
            ids: Correlator::default(),
            proc_root,
            locals: HashMap::new(),
        }
    }

    /// `conn` with its local address filled in where the capture did not know it.
    fn complete<'a>(&mut self, conn: &ConnView<'a>) -> ConnView<'a> {
        let mut c = *conn;
        if c.local.is_none() {
            if self.locals.len() >= MAX_LOCALS {
                self.locals.clear();
            }
            let root = &self.proc_root;
            c.local = *self.locals.entry(conn.id).or_insert_with(|| {
                procfs::resolve(root, conn.id.tgid, conn.id.fd).map(|(local, _)| local)
            });
        }
        c
    }
}

impl Sink for RecordSink {
    fn started(&mut self, conn: &ConnView<'_>, seq: u64, _summary: &RequestSummary) {
        // Early, while the client's socket surely still exists.
        let conn = self.complete(conn);
        self.ids.started(&conn, seq);
    }

    fn first_token(&mut self, _conn: &ConnView<'_>, _seq: u64, _ts_ns: u64) {}

    fn done(&mut self, conn: &ConnView<'_>, seq: u64, exchange: &Exchange) {
        let conn = &self.complete(conn);
        let place = self.names.place(&conn.process.cgroup);
        let ids = self.ids.done(conn, seq, exchange.params.trace_parent);
        let record = ExchangeRecord::new(&self.clock, conn, seq, exchange, place, ids);
        for o in &mut self.outputs {
            o.record(&record);
        }
    }

    fn decode_error(&mut self, _conn: &ConnView<'_>, _error: &DecodeError) {}

    fn unsupported(&mut self, _conn: &ConnView<'_>, _what: Unsupported) {}

    fn raw(&mut self, event: &Event, _conn: Option<&ConnView<'_>>) {
        // Not at a connection's close: this runs before the close is applied, and the close may
        // end the exchange whose record still needs the address. The cap bounds the rest.
        if let Event::ProcExit { tgid, .. } = event {
            self.locals.retain(|id, _| id.tgid != *tgid);
        }
    }
}
