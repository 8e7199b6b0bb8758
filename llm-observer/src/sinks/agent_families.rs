//! Families of the agent view beyond the per-request ones: how long the observed agent took to run
//! the tools its model asked for, and what its requests cost. Definitions in docs/metrics.md.

use prometheus::{CounterVec, HistogramVec, IntCounterVec};

use super::families::{CLIENT_LABELS, MCP_BUCKETS, with_user};
use super::registry::Reg;
use super::tool_exec::Dropped;

/// Where the agent runs; the tool is the call's name (admitted as tool-call names are).
pub const TOOL_EXEC_LABELS: &[&str] = &["process", "container", "pod", "namespace", "tool"];

pub struct AgentFamilies {
    pub tool_execution: HistogramVec,
    /// Pending tool calls that left the table unanswered, by reason (the agent's own limit).
    pub tool_calls_dropped: IntCounterVec,
    pub cost: CounterVec,
    pub unpriced: IntCounterVec,
}

impl AgentFamilies {
    pub(crate) fn register(reg: &mut Reg, user: &[String]) -> prometheus::Result<Self> {
        let client = with_user(CLIENT_LABELS, user);
        let f = AgentFamilies {
            tool_execution: reg.histogram_vec(
                "llm_client_tool_execution_seconds",
                "Tool calls an observed client ran: first byte of the request carrying the tool's result minus last byte of the response that asked for the call (same process, matched by tool call id), seconds.",
                TOOL_EXEC_LABELS,
                // A tool runs from milliseconds (a lookup) to minutes (a build, a human approval),
                // like an MCP operation: the OTel MCP duration advice fits.
                MCP_BUCKETS,
            )?,
            tool_calls_dropped: reg.counter_vec(
                "llm_observer_tool_calls_unmatched_total",
                "Tool calls the agent stopped waiting for a result of, by reason (full: the per-process table was full, expired: no result within --tool-call-timeout).",
                &["reason"],
            )?,
            cost: reg.float_counter_vec(
                "llm_client_cost_usd_total",
                "Cost of client requests from their reported or counted tokens and the price table (--prices, default the shipped prices.toml), US dollars.",
                &client,
            )?,
            unpriced: reg.counter_vec(
                "llm_client_unpriced_requests_total",
                "Client requests with token counts whose model is not in the price table (their cost is unknown, not zero).",
                &client,
            )?,
        };
        // Bounded self-metric label values are exported as 0 from the first scrape.
        for reason in [Dropped::Full, Dropped::Expired] {
            f.tool_calls_dropped.with_label_values(&[reason.as_str()]);
        }
        Ok(f)
    }
}
