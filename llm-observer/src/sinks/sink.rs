//! [`Sink`]: where decoded results go (metrics, trace lines, event log, OTLP), and [`ConnView`],
//! what a sink sees of the connection (or MCP stdio session) an exchange came from. The
//! connection stage calls a sink synchronously, in event order; the implementations live beside
//! this file.

use std::net::SocketAddr;

use llm_observer_decode::{DecodeError, Exchange, Incomplete, Role, Unsupported};

use crate::{
    attribution::process::ProcessInfo,
    capture::{ConnId, Event},
};

/// Where decoded results go (metrics, trace lines). Called synchronously, in event order.
pub trait Sink {
    /// A recognised LLM/MCP request was fully received.
    fn started(
        &mut self,
        conn: &ConnView<'_>,
        seq: u64,
        summary: &llm_observer_decode::llm::RequestSummary,
    );
    /// Its first content-bearing response event arrived.
    fn first_token(&mut self, conn: &ConnView<'_>, seq: u64, ts_ns: u64);
    /// It finished (or failed).
    fn done(&mut self, conn: &ConnView<'_>, seq: u64, exchange: &Exchange);
    /// Bytes that could not be decoded (counted by reason).
    fn decode_error(&mut self, conn: &ConnView<'_>, error: &DecodeError);
    /// Recognised but unsupported traffic (HTTP/2, upgrades, tunnels).
    fn unsupported(&mut self, conn: &ConnView<'_>, what: Unsupported);
    /// A request that could be an API call was lost by the capture before it was recognised.
    fn incomplete(&mut self, _conn: &ConnView<'_>, _why: Incomplete) {}
    /// The kernel's OOM killer chose an observed server process as its victim.
    fn oom_killed(&mut self, _process: &ProcessInfo) {}
    /// Every event, before it is applied (for `trace --raw`). Default: nothing.
    fn raw(&mut self, _event: &Event, _conn: Option<&ConnView<'_>>) {}
}

/// A read-only view of a connection for sinks.
#[derive(Debug, Clone, Copy)]
pub struct ConnView<'a> {
    pub id: ConnId,
    pub role: Role,
    pub process: &'a ProcessInfo,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `Host` / `:authority` of the connection's latest request (bounded; `None` before one or
    /// without one): the client view's `provider` label comes from it.
    pub host: Option<&'a str>,
    /// MCP over stdio (pipes, `super::stdio`): no addresses; the client view's `peer` is
    /// `stdio`.
    pub stdio: bool,
}
