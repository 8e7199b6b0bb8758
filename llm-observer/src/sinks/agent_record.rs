//! The agent view's part of [`Metrics::done`] for a client exchange: its cost
//! (`llm_client_cost_usd_total` / `llm_client_unpriced_requests_total`) and the tool execution
//! time of the calls it asked for or answered (`llm_client_tool_execution_seconds`).

use llm_observer_decode::Exchange;

use super::super::admission::Admit;
use super::super::families::succeeded;
use super::super::prices::Priced;
use super::{ExchangeCtx, Metrics, lock};

impl Metrics {
    /// `llm_client_cost_usd_total` or, for a model the table lacks, `llm_client_unpriced_requests_total`.
    pub(super) fn cost(&self, provider: &str, labels: &[&str], ex: &Exchange) {
        // An entry of the request's provider (the `provider` label) first, then an unqualified one.
        match self.prices.cost(Some(provider), ex) {
            Priced::Cost(c) => self.agent.cost.with_label_values(labels).inc_by(c.usd()),
            Priced::Unpriced => self.agent.unpriced.with_label_values(labels).inc(),
            Priced::NoTokens => {}
        }
    }

    /// Pairs the tool calls a client's response asked for with the later request of the same
    /// process that carries their results (`llm_client_tool_execution_seconds`). Results are
    /// matched first: a request can answer earlier calls and its response ask for new ones.
    pub(super) fn tool_execution(&self, ctx: &ExchangeCtx, process: &str, ex: &Exchange, now: u64) {
        let ids = &ex.tool_ids;
        if ids.is_empty() {
            return;
        }
        let mut dropped = Vec::new();
        let mut executed = Vec::new();
        {
            let mut table = lock(&self.tool_exec);
            for id in &ids.results {
                if let Some(e) =
                    table.answered(ctx.pid, id, ex.timings.request_start_ns, &mut dropped)
                {
                    executed.push(e);
                }
            }
            // Only a response the client got whole asks for anything: a cut or failed one's
            // calls are never run.
            if succeeded(ex)
                && let Some(end) = ex.timings.response_end_ns
            {
                for call in &ids.calls {
                    dropped.extend(table.asked(ctx.pid, &call.id, &call.name, end));
                }
            }
        }
        let p = &ctx.place;
        for e in executed {
            // The name was admitted (or not) when the successful response asked for the call.
            let tool = self.caps.tools.label(Some(&e.tool), Admit::Yes, now);
            self.agent
                .tool_execution
                .with_label_values(&[process, &p.container, &p.pod, &p.namespace, &tool])
                .observe(e.ns as f64 / 1e9);
        }
        for d in dropped {
            self.agent
                .tool_calls_dropped
                .with_label_values(&[d.as_str()])
                .inc();
        }
    }
}
