//! [`Tee`]: one [`Sink`] that hands every call to several (metrics plus the event log / OTLP
//! records), in order, so each output sees the same exchanges.

use llm_observer_decode::{DecodeError, Exchange, Incomplete, Unsupported, llm::RequestSummary};

use crate::{
    attribution::process::ProcessInfo,
    capture::Event,
    sinks::sink::{ConnView, Sink},
};

pub struct Tee<'a> {
    sinks: Vec<&'a mut dyn Sink>,
}

impl<'a> Tee<'a> {
    pub fn new(sinks: Vec<&'a mut dyn Sink>) -> Self {
        Tee { sinks }
    }
}

impl Sink for Tee<'_> {
    fn started(&mut self, conn: &ConnView<'_>, seq: u64, summary: &RequestSummary) {
        for s in &mut self.sinks {
            s.started(conn, seq, summary);
        }
    }

    fn first_token(&mut self, conn: &ConnView<'_>, seq: u64, ts_ns: u64) {
        for s in &mut self.sinks {
            s.first_token(conn, seq, ts_ns);
        }
    }

    fn done(&mut self, conn: &ConnView<'_>, seq: u64, exchange: &Exchange) {
        for s in &mut self.sinks {
            s.done(conn, seq, exchange);
        }
    }

    fn decode_error(&mut self, conn: &ConnView<'_>, error: &DecodeError) {
        for s in &mut self.sinks {
            s.decode_error(conn, error);
        }
    }

    fn unsupported(&mut self, conn: &ConnView<'_>, what: Unsupported) {
        for s in &mut self.sinks {
            s.unsupported(conn, what);
        }
    }

    fn incomplete(&mut self, conn: &ConnView<'_>, why: Incomplete) {
        for s in &mut self.sinks {
            s.incomplete(conn, why);
        }
    }

    fn oom_killed(&mut self, process: &ProcessInfo) {
        for s in &mut self.sinks {
            s.oom_killed(process);
        }
    }

    fn raw(&mut self, event: &Event, conn: Option<&ConnView<'_>>) {
        for s in &mut self.sinks {
            s.raw(event, conn);
        }
    }
}
