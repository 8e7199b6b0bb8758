//! The running agent: one task drains the kernel ring buffer, decodes each record, applies it to
//! the connection table (which drives the decoders and the sink), and does housekeeping once a
//! second (idle expiry, kernel counters → self-metrics).
//!
//! The ring buffer is the only queue between the kernel and the agent. The kernel never waits for
//! us: when the ring is full it drops the event and counts it (`llm_observer_lost_events_total`),
//! and the position jump tells the decoder to resync. The sinks it drives live in `crate::sinks`.

mod backoff;
mod tls_worker;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::io::{Interest, unix::AsyncFd};

use self::backoff::PollBackoff;
use crate::{
    capture::{Capture, ConnId, event, ring::EventRing},
    conn::{ConnTable, StdioConfig, StdioTable},
    sinks::metrics::Metrics,
    sinks::sink::Sink,
};

/// Seeds sockets that existed before the capture started, in the kernel and in the table.
pub fn seed_existing(
    capture: &mut Capture,
    table: &mut ConnTable,
    proc_root: &std::path::Path,
    only: Option<u32>,
) {
    let now = crate::capture::system::monotonic_ns();
    let seeded = capture.seed_existing(proc_root, only);
    for s in &seeded {
        // The kernel stamped seeded sockets with the same generation the capture clock gives now;
        // read it back through the same function so both sides agree.
        table.add_existing(
            ConnId {
                tgid: s.tgid,
                fd: s.fd,
                generation: capture.seed_generation(),
            },
            s.server,
            s.local,
            s.remote,
            now,
        );
    }
    log::info!(
        "tracking {} TCP connections that existed before start",
        seeded.len()
    );
    let skip = crate::capture::procfs::own_pid(proc_root);
    let blocked = capture.seed_inflight(proc_root, only, skip);
    log::info!("captured {blocked} accept/read/write calls already blocked at start");
}

/// Housekeeping ticks (seconds) between sweeps of the kernel connection map for entries of
/// processes that are gone.
const SWEEP_TICKS: u64 = 60;

/// Per-kind event counters, resolved once.
struct EventCounters {
    data: prometheus::IntCounter,
    open: prometheus::IntCounter,
    close: prometheus::IntCounter,
    exit: prometheus::IntCounter,
    oom: prometheus::IntCounter,
    exec: prometheus::IntCounter,
    bad: prometheus::IntCounter,
}

/// Drains the ring until `shutdown` resolves.
pub async fn run(
    mut capture: Capture,
    mut table: ConnTable,
    sink: &mut dyn Sink,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let ring: EventRing = capture
        .take_ring()
        .ok_or_else(|| anyhow::anyhow!("the event ring was already taken"))?;
    // SAFETY: the EventRing owns its map fd and keeps it open, unchanged, until it is dropped, which
    // happens only when this AsyncFd is dropped.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
            anyhow::anyhow!(
                "registering the event ring with tokio: {}",
                e.into_parts().1
            )
        })?;
    let counters = metrics.as_ref().map(|m| {
        let s = m.self_metrics();
        EventCounters {
            data: s.events.with_label_values(&["data"]),
            open: s.events.with_label_values(&["conn_open"]),
            close: s.events.with_label_values(&["conn_close"]),
            exit: s.events.with_label_values(&["proc_exit"]),
            oom: s.events.with_label_values(&["oom_victim"]),
            exec: s.events.with_label_values(&["proc_exec"]),
            bad: s.dropped.with_label_values(&["event_decode"]),
        }
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let polling = !capture.poll_interval().is_zero();
    let mut backoff = PollBackoff::new(capture.poll_interval(), capture.idle_poll_interval());
    let poll = tokio::time::sleep(backoff.current());
    tokio::pin!(poll);
    // The ring is read without the capture from here on; the TLS discovery (ELF symbol tables,
    // attaching) runs on its own thread so it never delays applying events, and housekeeping
    // shares the capture with it.
    let capture = Arc::new(std::sync::Mutex::new(capture));
    let execs = tls_worker::spawn(capture.clone());
    let mut stdio = StdioTable::new(StdioConfig {
        proc_root: table.proc_root().to_path_buf(),
        ..StdioConfig::default()
    });
    let mut state = Drain {
        table: &mut table,
        stdio: &mut stdio,
        sink,
        counters,
        metrics: metrics.as_deref(),
        last_ts: 0,
        applied: false,
        execs,
    };
    let mut ticks = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                if drain(guard.get_inner_mut(), &mut state) {
                    guard.clear_ready();
                }
                if state.publish() && backoff.busy() {
                    poll.as_mut().reset(tokio::time::Instant::now() + backoff.current());
                }
            }
            // Data records wake the reader only past a fill threshold (`CaptureConfig::poll_interval`):
            // below it, this timer drains them.
            () = &mut poll, if polling => {
                drain(ring.get_mut(), &mut state);
                let next = backoff.after_drain(state.publish());
                poll.as_mut().reset(tokio::time::Instant::now() + next);
            }
            _ = tick.tick() => {
                ticks += 1;
                // Busy attaching TLS probes: this tick's housekeeping waits for the next one.
                let Ok(mut capture) = capture.try_lock() else {
                    continue;
                };
                housekeeping(&mut capture, &mut state, metrics.as_deref());
                if ticks.is_multiple_of(SWEEP_TICKS) {
                    let (removed, left) = capture.sweep_dead(state.table.proc_root());
                    log::debug!("kernel connection map: {left} entries, {removed} of gone processes removed");
                }
            }
        }
    }
    let mut capture = capture
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    housekeeping(&mut capture, &mut state, metrics.as_deref());
    Ok(())
}

/// What the ring's reader keeps between batches.
struct Drain<'a> {
    table: &'a mut ConnTable,
    /// Pipes (MCP over stdio): sees every event first, keeps its own.
    stdio: &'a mut StdioTable,
    sink: &'a mut dyn Sink,
    counters: Option<EventCounters>,
    metrics: Option<&'a Metrics>,
    /// Newest kernel timestamp applied.
    last_ts: u64,
    /// Events were applied since the last [`Drain::publish`].
    applied: bool,
    /// Processes that exec'd, for the TLS discovery thread.
    execs: tls_worker::Execs,
}

impl Drain<'_> {
    /// After a batch is applied: a reader that sees a time here knows every event captured
    /// before it has been applied (the ring is consumed in order).
    ///
    /// Nothing to do after an empty batch: the ring is polled every few milliseconds, and setting
    /// the table's gauges each time was most of what an idle agent spent.
    ///
    /// True when the batch applied anything.
    fn publish(&mut self) -> bool {
        if !std::mem::take(&mut self.applied) {
            return false;
        }
        if let Some(m) = self.metrics {
            m.self_metrics()
                .last_event_seconds
                .set(self.last_ts as f64 / 1e9);
            // With the batch, so a reader that waited for quiescence sees them too.
            table_metrics(self.table, self.stdio, m);
        }
        true
    }
}

/// Applies up to one batch of records; true when the ring was found empty. Bounded batches keep
/// housekeeping and shutdown responsive under load.
fn drain(r: &mut EventRing, s: &mut Drain<'_>) -> bool {
    for _ in 0..8192 {
        let Some(item) = r.next() else {
            return true;
        };
        // The event borrows the record's bytes in the ring: it is applied before `item` drops and
        // releases them to the kernel (one record's room, for the time one event takes).
        match event::decode(&item) {
            Ok(ev) => {
                s.applied = true;
                s.last_ts = s.last_ts.max(ev.ts_ns());
                if let Some(c) = &s.counters {
                    match &ev {
                        event::Event::Data(_) => c.data.inc(),
                        event::Event::Open(_) => c.open.inc(),
                        event::Event::Close(_) => c.close.inc(),
                        event::Event::ProcExit { .. } => c.exit.inc(),
                        event::Event::OomVictim { .. } => c.oom.inc(),
                        event::Event::ProcExec { .. } => c.exec.inc(),
                    }
                }
                if let event::Event::ProcExec { tgid, .. } = &ev {
                    s.execs.exec(*tgid);
                }
                if !s.stdio.apply(&ev, s.sink) {
                    s.table.apply(&ev, s.sink);
                }
            }
            Err(e) => {
                log::warn!("undecodable ring record: {e}");
                if let Some(c) = &s.counters {
                    c.bad.inc();
                }
            }
        }
    }
    false
}

/// The self-metrics the connection table keeps, set with each applied batch: a reader that waited
/// for quiescence sees them current (the kernel's counters are read once a second).
fn table_metrics(table: &ConnTable, stdio: &StdioTable, m: &Metrics) {
    let s = m.self_metrics();
    let p = stdio.stats();
    s.set_total(
        &s.stdio_sessions.with_label_values(&["server"]),
        p.sessions_server,
    );
    s.set_total(
        &s.stdio_sessions.with_label_values(&["client"]),
        p.sessions_client,
    );
    s.set_total(&s.stdio_not_jsonrpc, p.not_jsonrpc);
    s.stdio_sessions_open
        .set(i64::try_from(stdio.len()).unwrap_or(i64::MAX));
    let t = table.stats();
    s.set_total(
        &s.captured_bytes.with_label_values(&["ingress"]),
        t.captured_bytes_ingress,
    );
    s.set_total(
        &s.captured_bytes.with_label_values(&["egress"]),
        t.captured_bytes_egress,
    );
    s.set_total(
        &s.connections.with_label_values(&["server"]),
        t.opened_server,
    );
    s.set_total(
        &s.connections.with_label_values(&["client"]),
        t.opened_client,
    );
    s.set_total(&s.passed_connections, t.passed);
    s.connections_tracked.set(table.len() as i64);
    s.set_total(&s.tls_connections, t.tls_connections);
    s.set_total(&s.other_protocol_connections, t.other_protocol);
    let budget = table.budget();
    s.buffered_bytes
        .set(i64::try_from(budget.total()).unwrap_or(i64::MAX));
    s.set_total(
        &s.dropped.with_label_values(&["memory_budget"]),
        budget.shed_connections + p.shed,
    );
}

fn housekeeping(capture: &mut Capture, state: &mut Drain<'_>, metrics: Option<&Metrics>) {
    let table = &mut *state.table;
    table.expire(crate::capture::system::monotonic_ns(), state.sink);
    for id in table
        .take_untrack()
        .into_iter()
        .chain(state.stdio.take_untrack())
    {
        capture.untrack(id);
    }
    let Some(m) = metrics else {
        return;
    };
    m.expire_labels();
    let s = m.self_metrics();
    let k = capture.kernel_stats();
    let t = table.stats();
    s.set_lost_events(k.lost_events + k.lost_control_events, k.lost_control_events);
    s.set_total(&s.truncated_bytes, k.truncated_bytes);
    s.set_total(&s.other_protocol_bytes, k.other_protocol_bytes);
    s.set_total(&s.tls_unmatched_bytes, k.tls_unmatched_bytes);
    s.set_total(&s.tls_record_binds, k.tls_record_binds);
    let tls = capture.tls_stats();
    s.tls_libraries
        .set(i64::try_from(tls.libraries).unwrap_or(i64::MAX));
    s.tls_probes
        .set(i64::try_from(tls.probes).unwrap_or(i64::MAX));
    s.set_total(&s.tls_attach_failures, tls.attach_failures);
    s.set_total(
        &s.dropped.with_label_values(&["kernel_inflight_full"]),
        k.inflight_map_full,
    );
    s.set_total(
        &s.dropped.with_label_values(&["kernel_fork_list_full"]),
        k.fork_list_full,
    );
    s.set_total(
        &s.dropped.with_label_values(&["conn_table_full"]),
        t.dropped_full + k.conn_map_full,
    );
    table_metrics(table, state.stdio, m);
}
