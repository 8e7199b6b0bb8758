//! [`MetricsSink`]: decoder outputs → the Prometheus [`Metrics`].

use std::{collections::HashMap, sync::Arc};

use llm_observer_decode::{DecodeError, Exchange, Unsupported, llm::RequestSummary};

use crate::{
    capture::{ConnId, Event},
    conn::{ConnView, Sink},
    sinks::metrics::{ExchangeCtx, InFlight, Metrics},
};

/// Keeps the in-flight gauge handle of every started request until it is done.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    inflight: HashMap<(ConnId, u64), InFlight>,
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsSink {
            metrics,
            inflight: HashMap::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}

fn ctx(conn: &ConnView<'_>) -> ExchangeCtx {
    ExchangeCtx {
        role: conn.role,
        process: conn.process.comm.to_string(),
        pid: conn.id.tgid,
        peer: conn.peer,
    }
}

impl Sink for MetricsSink {
    fn started(&mut self, conn: &ConnView<'_>, seq: u64, summary: &RequestSummary) {
        let f = self.metrics.started(&ctx(conn), summary);
        self.inflight.insert((conn.id, seq), f);
    }

    fn first_token(&mut self, conn: &ConnView<'_>, seq: u64, _ts_ns: u64) {
        if let Some(f) = self.inflight.get_mut(&(conn.id, seq)) {
            self.metrics.first_token(f);
        }
    }

    fn done(&mut self, conn: &ConnView<'_>, seq: u64, exchange: &Exchange) {
        let f = self.inflight.remove(&(conn.id, seq));
        self.metrics.done(f, &ctx(conn), exchange);
    }

    fn decode_error(&mut self, conn: &ConnView<'_>, error: &DecodeError) {
        // Debug level: a misbehaving peer must not flood the log; the counter is always kept.
        log::debug!(
            "decode error ({}) on {}[{}] fd {}: {error}",
            error.reason(),
            conn.process.comm,
            conn.id.tgid,
            conn.id.fd
        );
        self.metrics.self_metrics().decode_error(error);
    }

    fn unsupported(&mut self, _conn: &ConnView<'_>, what: Unsupported) {
        self.metrics.self_metrics().unsupported(what);
    }

    fn oom_killed(&mut self, process: &crate::attribution::process::ProcessInfo) {
        self.metrics.oom_killed(&process.comm);
    }

    fn raw(&mut self, event: &Event, _conn: Option<&ConnView<'_>>) {
        // A gone process must not keep its memory series (and a reused pid must not inherit them).
        if let Event::ProcExit { tgid, .. } = event {
            self.metrics.forget_pid(*tgid);
        }
    }
}
