//! The connection table driven by generated kernel events (automatic positions, a fake clock) →
//! the records its sink receives. No BPF, no root: the same events the kernel would send.

use std::net::SocketAddr;

use llm_observer_common::Syscall;
use llm_observer_decode::{
    DecodeError, ErrorKind, Exchange, Incomplete, Role, TokenCount, Unsupported,
    llm::RequestSummary,
};

use super::{ConnTable, ConnTableConfig};
use crate::capture::{
    ConnId, DataEvent, DataKind, Direction, Event, KernelRole, event::ConnEventData,
};
use crate::sinks::sink::{ConnView, Sink};

/// Everything a sink is told, in order.
#[derive(Debug, Default)]
struct Recorder {
    started: Vec<(ConnId, u64, RequestSummary)>,
    first_tokens: Vec<(ConnId, u64, u64)>,
    done: Vec<(ConnId, Role, Exchange)>,
    errors: Vec<&'static str>,
    unsupported: Vec<Unsupported>,
    oom: Vec<u32>,
    incomplete: Vec<Incomplete>,
    /// `ConnView::host` at each `started` and `done`.
    hosts: Vec<Option<String>>,
}

impl Sink for Recorder {
    fn started(&mut self, conn: &ConnView<'_>, seq: u64, summary: &RequestSummary) {
        self.started.push((conn.id, seq, summary.clone()));
        self.hosts.push(conn.host.map(str::to_owned));
    }
    fn first_token(&mut self, conn: &ConnView<'_>, seq: u64, ts_ns: u64) {
        self.first_tokens.push((conn.id, seq, ts_ns));
    }
    fn done(&mut self, conn: &ConnView<'_>, _seq: u64, exchange: &Exchange) {
        self.done.push((conn.id, conn.role, exchange.clone()));
        self.hosts.push(conn.host.map(str::to_owned));
    }
    fn decode_error(&mut self, _conn: &ConnView<'_>, error: &DecodeError) {
        self.errors.push(error.reason());
    }
    fn unsupported(&mut self, _conn: &ConnView<'_>, what: Unsupported) {
        self.unsupported.push(what);
    }
    fn oom_killed(&mut self, process: &crate::attribution::process::ProcessInfo) {
        self.oom.push(process.tgid);
    }
    fn incomplete(&mut self, _conn: &ConnView<'_>, why: Incomplete) {
        self.incomplete.push(why);
    }
}

/// Builds kernel events for one process with a fake clock and per-direction positions, like the
/// kernel would: `pos` advances by the bytes of each event.
struct Generator {
    tgid: u32,
    now: u64,
    pos: std::collections::HashMap<(ConnId, bool), u64>,
    /// Plaintext positions of TLS connections (the kernel restarts them at 0).
    tls_pos: std::collections::HashMap<(ConnId, bool), u64>,
}

impl Generator {
    fn new(tgid: u32) -> Self {
        Generator {
            tgid,
            now: 1_000_000_000,
            pos: Default::default(),
            tls_pos: Default::default(),
        }
    }

    fn tick(&mut self, ms: u64) -> u64 {
        self.now += ms * 1_000_000;
        self.now
    }

    fn open(&mut self, fd: i32, role: KernelRole, peer: &str) -> (ConnId, Event<'static>) {
        let id = ConnId {
            tgid: self.tgid,
            fd,
            generation: self.tick(1),
        };
        let peer: SocketAddr = peer.parse().expect("addr");
        let ev = ConnEventData {
            conn: id,
            tid: self.tgid,
            ts_ns: self.now,
            role,
            peer: Some(peer),
            listen_fd: None,
            inherited_from: None,
            passed_fd: None,
            ended_at: [0, 0],
        };
        (id, Event::Open(ev))
    }

    /// A close, with the positions the kernel's streams ended at (plaintext ones for TLS).
    fn close(&mut self, id: ConnId) -> Event<'static> {
        let ts_ns = self.tick(1);
        let end = |egress: bool| {
            let key = (id, egress);
            self.tls_pos
                .get(&key)
                .or_else(|| self.pos.get(&key))
                .copied()
                .unwrap_or(0)
        };
        let ended_at = [end(true), end(false)];
        Event::Close(ConnEventData {
            conn: id,
            tid: self.tgid,
            ts_ns,
            role: KernelRole::Unknown,
            peer: None,
            listen_fd: None,
            inherited_from: None,
            passed_fd: None,
            ended_at,
        })
    }

    /// `n` bytes of `dir` the kernel moved but whose event the ring dropped.
    fn lose(&mut self, id: ConnId, dir: Direction, n: u64) {
        *self.pos.entry((id, dir == Direction::Egress)).or_insert(0) += n;
    }

    fn data<'b>(
        &mut self,
        id: ConnId,
        dir: Direction,
        kind: DataKind,
        bytes: &'b [u8],
        ms: u64,
    ) -> Event<'b> {
        let ts_ns = self.tick(ms);
        let key = (id, dir == Direction::Egress);
        let pos = *self.pos.get(&key).unwrap_or(&0);
        let advance = match kind {
            DataKind::Bytes => bytes.len() as u64,
            DataKind::Truncated { missing } => missing,
            DataKind::Eof | DataKind::Reset => 0,
        };
        self.pos.insert(key, pos + advance);
        let syscall = if dir == Direction::Egress {
            Syscall::Write
        } else {
            Syscall::Read
        };
        Event::Data(DataEvent {
            conn: id,
            tid: self.tgid,
            cpu: 0,
            ts_ns,
            direction: dir,
            syscall,
            pos,
            msg_len: advance,
            kind,
            tls: false,
            payload: bytes.into(),
        })
    }

    fn bytes<'b>(&mut self, id: ConnId, dir: Direction, bytes: &'b [u8], ms: u64) -> Event<'b> {
        self.data(id, dir, DataKind::Bytes, bytes, ms)
    }

    /// TLS plaintext from the SSL probes: its own positions, from 0.
    fn tls<'b>(&mut self, id: ConnId, dir: Direction, bytes: &'b [u8], ms: u64) -> Event<'b> {
        let ts_ns = self.tick(ms);
        let key = (id, dir == Direction::Egress);
        let pos = *self.tls_pos.get(&key).unwrap_or(&0);
        self.tls_pos.insert(key, pos + bytes.len() as u64);
        let syscall = if dir == Direction::Egress {
            Syscall::SslWrite
        } else {
            Syscall::SslRead
        };
        Event::Data(DataEvent {
            conn: id,
            tid: self.tgid,
            cpu: 0,
            ts_ns,
            direction: dir,
            syscall,
            pos,
            msg_len: bytes.len() as u64,
            kind: DataKind::Bytes,
            tls: true,
            payload: bytes.into(),
        })
    }
}

fn table() -> ConnTable {
    // A proc root that does not exist: nothing is resolved from the machine running the test.
    ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        ..ConnTableConfig::default()
    })
}

const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 73\r\n\r\n{\"model\":\"m1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi!\"}]}";
const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

fn sse_chunk(json: &str) -> Vec<u8> {
    let event = format!("data: {json}\n\n");
    format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
}

fn token(text: &str) -> Vec<u8> {
    sse_chunk(&format!(
        "{{\"model\":\"m1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}"
    ))
}

#[test]
fn server_exchange_is_decoded_with_capture_times() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    let req = g.bytes(id, Direction::Ingress, REQUEST, 1);
    let req_ts = req.ts_ns();
    t.apply(&req, &mut r);
    for (ev, ms) in [
        (HEAD.to_vec(), 150),
        (token("a"), 0),
        (token("b"), 10),
        (sse_chunk("[DONE]"), 10),
    ] {
        t.apply(&g.bytes(id, Direction::Egress, &ev, ms), &mut r);
    }
    t.apply(&g.bytes(id, Direction::Egress, b"0\r\n\r\n", 1), &mut r);
    assert_eq!(r.started.len(), 1);
    assert_eq!(r.started[0].2.model.as_deref(), Some("m1"));
    assert_eq!(r.first_tokens, vec![(id, 0, req_ts + 150_000_000)]);
    let (done_id, role, ex) = &r.done[0];
    assert_eq!((*done_id, *role), (id, Role::Server));
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.tokens.completion, TokenCount::counted(2));
    assert_eq!(ex.timings.ttft_ns(), Some(150_000_000));
    assert_eq!(ex.timings.last_token_ns, Some(req_ts + 160_000_000));
    assert_eq!(ex.error, None);
    let s = t.stats();
    assert_eq!(
        (s.opened_server, s.captured_bytes_ingress),
        (1, REQUEST.len() as u64)
    );
}

/// A server connection whose streamed answer has begun (its head and one token) but not ended.
fn half_answered(g: &mut Generator, t: &mut ConnTable, r: &mut Recorder) -> ConnId {
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, r);
    t.apply(&g.bytes(id, Direction::Ingress, REQUEST, 1), r);
    t.apply(&g.bytes(id, Direction::Egress, HEAD, 10), r);
    t.apply(&g.bytes(id, Direction::Egress, &token("a"), 10), r);
    id
}

/// A stream cut mid-way: who ended it decides the error kind (server view).
fn cut_stream(peer_eof_first: bool) -> ErrorKind {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let id = half_answered(&mut g, &mut t, &mut r);
    if peer_eof_first {
        t.apply(
            &g.data(id, Direction::Ingress, DataKind::Eof, b"", 5),
            &mut r,
        );
    }
    let close = g.close(id);
    t.apply(&close, &mut r);
    assert_eq!((r.done.len(), t.len()), (1, 0));
    r.done[0].2.error.expect("an error kind")
}

#[test]
fn client_gone_before_the_server_closes_is_a_cancel() {
    assert_eq!(cut_stream(true), ErrorKind::ClientCancelled);
}

#[test]
fn server_closing_mid_stream_is_server_closed() {
    assert_eq!(cut_stream(false), ErrorKind::ServerClosed);
}

/// The same cut, but the kernel had written more than arrived (the ring dropped the answer's last
/// events): the close's positions show the lost tail, so the exchange is incomplete, the
/// capture's trouble, and not a server that closed mid-answer.
#[test]
fn a_tail_lost_before_the_close_is_a_capture_gap_not_a_server_close() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let id = half_answered(&mut g, &mut t, &mut r);
    g.lose(id, Direction::Egress, 300);
    let close = g.close(id);
    t.apply(&close, &mut r);
    assert_eq!(t.stats().gap_bytes, 300);
    assert_eq!(r.errors, ["capture_gap"]);
    assert_eq!(r.done.len(), 1);
    let ex = &r.done[0].2;
    assert_eq!(
        (ex.error, ex.incomplete),
        (None, Some(Incomplete::CaptureGap))
    );
}

#[test]
fn reused_fd_gets_a_fresh_connection() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (a, open_a) = g.open(5, KernelRole::Client, "127.0.0.1:8000");
    t.apply(&open_a, &mut r);
    t.apply(&g.bytes(a, Direction::Egress, REQUEST, 1), &mut r);
    // The close of `a` was never seen (fd passed away): the new open on fd 5 ends `a`.
    let (b, open_b) = g.open(5, KernelRole::Client, "127.0.0.1:9000");
    assert_ne!(a, b);
    t.apply(&open_b, &mut r);
    assert_eq!(t.len(), 1);
    assert_eq!(
        r.done.len(),
        1,
        "the request of the stale connection is finished"
    );
    assert_eq!(r.done[0].0, a);
    let ex = &r.done[0].2;
    assert_eq!(
        (ex.error, ex.incomplete),
        (None, Some(Incomplete::CloseUnseen))
    );
}

#[test]
fn lost_bytes_are_counted_exactly_and_resync_the_decoder() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(id, Direction::Ingress, REQUEST, 1), &mut r);
    t.apply(&g.bytes(id, Direction::Egress, HEAD, 1), &mut r);
    // 1,000 bytes announced missing, then 300 more lost silently (a dropped event: pos jumps).
    t.apply(
        &g.data(
            id,
            Direction::Egress,
            DataKind::Truncated { missing: 1000 },
            b"",
            1,
        ),
        &mut r,
    );
    let after = g.bytes(id, Direction::Egress, b"x", 1);
    let Event::Data(mut d) = after else {
        unreachable!("data")
    };
    d.pos += 300;
    t.apply(&Event::Data(d), &mut r);
    assert_eq!(t.stats().gap_bytes, 1300);
    assert!(r.errors.contains(&"capture_gap"), "{:?}", r.errors);
    assert_eq!(r.done.len(), 1);
    // Lost by the capture: incomplete, never an error of the server.
    let ex = &r.done[0].2;
    assert_eq!(
        (ex.error, ex.incomplete),
        (None, Some(Incomplete::CaptureGap))
    );
}

#[test]
fn non_http_connections_are_dropped_and_http2_is_decoded() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (tls, open) = g.open(4, KernelRole::Client, "10.0.0.1:443");
    t.apply(&open, &mut r);
    t.apply(
        &g.bytes(
            tls,
            Direction::Egress,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            1,
        ),
        &mut r,
    );
    let (h2, open) = g.open(5, KernelRole::Client, "127.0.0.1:8000");
    t.apply(&open, &mut r);
    t.apply(
        &g.bytes(
            h2,
            Direction::Egress,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            1,
        ),
        &mut r,
    );
    // HTTP/2 (selected by its preface) is kept for the HTTP/2 decoder; the TLS handshake is kept
    // in case its plaintext comes, and counted as another protocol when it ends without any.
    assert_eq!((t.stats().other_protocol, t.len()), (0, 2));
    t.apply(&g.close(tls), &mut r);
    assert_eq!((t.stats().other_protocol, t.len()), (1, 1));
    assert!(r.unsupported.is_empty());
    assert!(r.started.is_empty() && r.done.is_empty() && r.errors.is_empty());
}

#[test]
fn process_exit_and_idle_expiry_end_connections() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (a, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(a, Direction::Ingress, REQUEST, 1), &mut r);
    // A second, idle connection of the same process ends silently (nothing was in flight).
    let (idle_conn, open) = g.open(6, KernelRole::Server, "127.0.0.1:40001");
    t.apply(&open, &mut r);
    let exit_ts = g.tick(1);
    t.apply(
        &Event::ProcExit {
            tgid: 7,
            ts_ns: exit_ts,
        },
        &mut r,
    );
    assert_eq!(t.len(), 0);
    // The kernel saw no close() for either: both are untracked there, by generation.
    let mut gone = t.take_untrack();
    gone.sort();
    assert_eq!(gone, vec![a, idle_conn]);
    // The server process died with a request in flight: the server ended it.
    assert_eq!(
        r.done
            .iter()
            .map(|(id, _, ex)| (*id, ex.error))
            .collect::<Vec<_>>(),
        vec![(a, Some(ErrorKind::ServerClosed))]
    );

    let mut g = Generator::new(8);
    let (c, open) = g.open(4, KernelRole::Server, "127.0.0.1:40002");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(c, Direction::Ingress, REQUEST, 1), &mut r);
    let idle = ConnTableConfig::default().idle_timeout_ns;
    t.expire(g.now + idle, &mut r);
    assert_eq!(t.len(), 1, "not idle for longer than the timeout yet");
    t.expire(g.now + idle + 1, &mut r);
    assert_eq!((t.len(), t.stats().expired), (0, 1));
    assert_eq!(t.take_untrack(), vec![c]);
    assert_eq!(
        r.done
            .last()
            .map(|(id, _, ex)| (*id, ex.error, ex.incomplete)),
        Some((c, None, Some(Incomplete::Expired)))
    );
}

#[test]
fn a_full_table_refuses_and_untracks() {
    let mut t = ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        max_connections: 1,
        ..ConnTableConfig::default()
    });
    let (mut g, mut r) = (Generator::new(7), Recorder::default());
    let (_, first) = g.open(4, KernelRole::Server, "127.0.0.1:1");
    let (refused, second) = g.open(5, KernelRole::Server, "127.0.0.1:2");
    t.apply(&first, &mut r);
    t.apply(&second, &mut r);
    assert_eq!((t.len(), t.stats().dropped_full), (1, 1));
    assert_eq!(t.take_untrack(), vec![refused]);
}

#[test]
fn a_marker_after_a_silent_loss_reports_both_gaps() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(id, Direction::Ingress, REQUEST, 1), &mut r);
    t.apply(&g.bytes(id, Direction::Egress, HEAD, 1), &mut r);
    // A slice and its marker were both dropped (200 bytes gone without a word), then the next
    // call's slice was lost but its marker (100 bytes missing) arrived.
    let Event::Data(mut d) = g.data(
        id,
        Direction::Egress,
        DataKind::Truncated { missing: 100 },
        b"",
        1,
    ) else {
        unreachable!("data")
    };
    d.pos += 200;
    t.apply(&Event::Data(d), &mut r);
    assert_eq!(t.stats().gap_bytes, 300);
    assert_eq!(
        r.errors.iter().filter(|e| **e == "capture_gap").count(),
        2,
        "{:?}",
        r.errors
    );
}

#[test]
fn a_reset_from_the_client_is_a_cancel() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let id = half_answered(&mut g, &mut t, &mut r);
    t.apply(
        &g.data(id, Direction::Egress, DataKind::Reset, b"", 5),
        &mut r,
    );
    let close = g.close(id);
    t.apply(&close, &mut r);
    assert_eq!(r.done[0].2.error, Some(ErrorKind::ClientCancelled));
}

#[test]
fn unix_sockets_accepted_without_an_address_are_dropped() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let id = ConnId {
        tgid: 7,
        fd: 9,
        generation: g.tick(1),
    };
    // accept4(fd, NULL, NULL) on listener fd 3, which /proc does not list as TCP.
    let open = ConnEventData {
        conn: id,
        tid: 7,
        ts_ns: g.now,
        role: KernelRole::Server,
        peer: None,
        listen_fd: Some(3),
        inherited_from: None,
        passed_fd: None,
        ended_at: [0, 0],
    };
    t.apply(&Event::Open(open), &mut r);
    assert_eq!(t.len(), 0);
    assert_eq!(t.take_untrack(), vec![id]);
}

#[test]
fn the_port_filter_untracks_other_ports_by_generation() {
    let mut t = ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        ports: vec![11434],
        ..ConnTableConfig::default()
    });
    let (mut g, mut r) = (Generator::new(7), Recorder::default());
    // A server connection whose listener (and so local port) is known from the open event...
    let (other, open) = g.open(4, KernelRole::Client, "127.0.0.1:8080");
    t.apply(&open, &mut r);
    // ...a client to another port: its local port is unknown here (no /proc), so it is kept.
    t.apply(&g.bytes(other, Direction::Egress, REQUEST, 1), &mut r);
    assert_eq!((t.len(), t.take_untrack()), (1, vec![]));
    let (wanted, open) = g.open(5, KernelRole::Client, "127.0.0.1:11434");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(wanted, Direction::Egress, REQUEST, 1), &mut r);
    assert_eq!(t.len(), 2);
    assert_eq!(
        r.started.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        vec![other, wanted]
    );
}

#[test]
fn a_server_killed_by_the_oom_killer_fails_its_requests_as_out_of_memory() {
    // A pid no process on this machine has, so /proc cannot rename it.
    let tgid = 4_000_007;
    let (mut g, mut t, mut r) = (Generator::new(tgid), table(), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(id, Direction::Ingress, REQUEST, 1), &mut r);
    t.apply(&g.bytes(id, Direction::Egress, HEAD, 10), &mut r);
    t.apply(&g.bytes(id, Direction::Egress, &token("a"), 10), &mut r);
    // The victim of another process's allocation, then its exit.
    let oom = Event::OomVictim {
        pid: tgid,
        ts_ns: g.tick(1),
    };
    t.apply(&oom, &mut r);
    t.apply(&oom, &mut r); // named twice (two threads): one kill
    assert_eq!(r.oom, vec![tgid]);
    t.apply(
        &Event::ProcExit {
            tgid,
            ts_ns: g.tick(1),
        },
        &mut r,
    );
    assert_eq!(r.done.len(), 1);
    assert_eq!(r.done[0].2.error, Some(ErrorKind::OutOfMemory));

    // A process that serves nothing the agent tracks is not counted.
    let (mut g2, mut r2) = (Generator::new(tgid + 1), Recorder::default());
    let (c, open) = g2.open(5, KernelRole::Client, "127.0.0.1:11434");
    t.apply(&open, &mut r2);
    t.apply(
        &Event::OomVictim {
            pid: c.tgid,
            ts_ns: g2.tick(1),
        },
        &mut r2,
    );
    assert!(r2.oom.is_empty());
}

#[test]
fn one_memory_budget_for_all_connections_sheds_the_one_that_passes_it() {
    let mib = 1024 * 1024;
    let mut t = ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        max_buffered_bytes: mib,
        ..ConnTableConfig::default()
    });
    let (mut g, mut r) = (Generator::new(7), Recorder::default());
    // Two clients each start a 700 KiB chat request body (a candidate: it is buffered).
    let body_len = 700 * 1024;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
    );
    let piece = vec![b' '; 100 * 1024];
    let (a, open_a) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    let (b, open_b) = g.open(5, KernelRole::Server, "127.0.0.1:40001");
    t.apply(&open_a, &mut r);
    t.apply(&open_b, &mut r);
    for id in [a, b] {
        t.apply(&g.bytes(id, Direction::Ingress, head.as_bytes(), 1), &mut r);
    }
    for _ in 0..6 {
        t.apply(&g.bytes(a, Direction::Ingress, &piece, 1), &mut r);
    }
    assert_eq!(t.budget().total(), 600 * 1024);
    // `b` grows past the 1 MiB budget at its 5th piece: shed, its capture stopped.
    for _ in 0..5 {
        t.apply(&g.bytes(b, Direction::Ingress, &piece, 1), &mut r);
    }
    let budget = t.budget();
    assert_eq!(
        (budget.shed_connections, budget.shed_bytes),
        (1, 500 * 1024)
    );
    assert_eq!(budget.total(), 600 * 1024);
    assert_eq!(t.len(), 1);
    assert!(t.take_untrack().contains(&b));
    // `a` is untouched: its request completes and is recognised; its bytes are released.
    let rest = vec![b' '; body_len - 6 * piece.len() - 2];
    t.apply(&g.bytes(a, Direction::Ingress, &rest, 1), &mut r);
    t.apply(&g.bytes(a, Direction::Ingress, b"{}", 1), &mut r);
    assert_eq!(t.budget().total(), 0);
    let close = g.close(a);
    t.apply(&close, &mut r);
    assert_eq!(t.budget().total(), 0);
}

#[test]
fn a_shed_exchange_in_flight_is_incomplete() {
    let mut t = ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        max_buffered_bytes: 64 * 1024,
        ..ConnTableConfig::default()
    });
    let (mut g, mut r) = (Generator::new(7), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(id, Direction::Ingress, REQUEST, 1), &mut r);
    // A non-streamed JSON response of 1 MiB is buffered for decoding: past the 64 KiB budget.
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"x\":\"";
    t.apply(&g.bytes(id, Direction::Egress, head.as_bytes(), 1), &mut r);
    t.apply(
        &g.bytes(id, Direction::Egress, &vec![b'a'; 128 * 1024], 1),
        &mut r,
    );
    assert_eq!(r.done.len(), 1);
    let ex = &r.done[0].2;
    assert_eq!((ex.error, ex.incomplete), (None, Some(Incomplete::Shed)));
    assert_eq!(
        (t.len(), t.budget().total(), t.budget().shed_connections),
        (0, 0, 1)
    );
}

/// The open event of a socket that process `child` inherited from `parent` across fork().
fn inherited_open(child: u32, fd: i32, generation: u64, parent: u32) -> (ConnId, Event<'static>) {
    let id = ConnId {
        tgid: child,
        fd,
        generation,
    };
    let ev = ConnEventData {
        conn: id,
        tid: child,
        ts_ns: generation,
        role: KernelRole::Server,
        peer: None,
        listen_fd: None,
        inherited_from: Some(parent),
        passed_fd: None,
        ended_at: [0, 0],
    };
    (id, Event::Open(ev))
}

#[test]
fn a_forked_child_serves_the_parents_socket_with_its_addresses() {
    // Only port 11434: a connection is kept or dropped by the addresses it inherited, since no
    // /proc can tell them here.
    let mut t = ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        ports: vec![11434],
        ..ConnTableConfig::default()
    });
    let mut r = Recorder::default();
    let (mut parent, mut child) = (Generator::new(7), Generator::new(8));
    let ours = ConnId {
        tgid: 7,
        fd: 4,
        generation: parent.tick(1),
    };
    let theirs = ConnId {
        tgid: 7,
        fd: 5,
        generation: parent.tick(1),
    };
    let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
    t.add_existing(
        ours,
        true,
        addr("127.0.0.1:11434"),
        addr("127.0.0.1:40000"),
        1,
    );
    t.add_existing(
        theirs,
        true,
        addr("127.0.0.1:8080"),
        addr("127.0.0.1:40001"),
        1,
    );
    // The fork: both sockets are copied to the child; the parent then closes its copies.
    let (kid_ours, open) = inherited_open(8, 4, child.tick(1), 7);
    t.apply(&open, &mut r);
    let (kid_theirs, open) = inherited_open(8, 5, child.tick(1), 7);
    t.apply(&open, &mut r);
    t.apply(&parent.close(ours), &mut r);
    t.apply(&parent.close(theirs), &mut r);
    assert_eq!(t.len(), 2);
    // The child reads a request on each: the one on another port is dropped by generation.
    t.apply(
        &child.bytes(kid_theirs, Direction::Ingress, REQUEST, 1),
        &mut r,
    );
    assert_eq!(t.take_untrack(), vec![kid_theirs]);
    t.apply(
        &child.bytes(kid_ours, Direction::Ingress, REQUEST, 1),
        &mut r,
    );
    for ev in [
        HEAD.to_vec(),
        token("a"),
        sse_chunk("[DONE]"),
        b"0\r\n\r\n".to_vec(),
    ] {
        t.apply(&child.bytes(kid_ours, Direction::Egress, &ev, 1), &mut r);
    }
    assert_eq!(r.started.len(), 1);
    assert_eq!(r.started[0].0, kid_ours);
    assert_eq!(r.started[0].2.model.as_deref(), Some("m1"));
    let (done_id, role, ex) = &r.done[0];
    assert_eq!(
        (*done_id, *role, ex.status),
        (kid_ours, Role::Server, Some(200))
    );
    assert_eq!(r.done.len(), 1);
    assert_eq!((t.len(), t.stats().opened_server), (1, 4));
}

#[test]
fn an_inherited_socket_whose_parent_is_unknown_is_still_decoded() {
    let (mut g, mut t, mut r) = (Generator::new(8), table(), Recorder::default());
    // The parent's connection is not in the table (opened before the agent, never seeded).
    let (id, open) = inherited_open(8, 4, g.tick(1), 7);
    t.apply(&open, &mut r);
    // The kernel delivers the child's bytes from the first message start it saw.
    g.pos.insert((id, false), 512);
    t.apply(&g.bytes(id, Direction::Ingress, REQUEST, 1), &mut r);
    assert_eq!(r.started.len(), 1);
    assert_eq!(r.started[0].0, id);
    assert_eq!(t.stats().gap_bytes, 0);
}

/// The ring lost a connection's first bytes (its whole request): the first event the agent sees
/// is further on. Its response is then one incomplete exchange, not dropped as "not HTTP" nor an
/// unmatched response; a seeded socket starting mid-stream stays silent as before.
#[test]
fn a_connection_whose_start_the_ring_lost_is_an_incomplete_exchange() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Server, "127.0.0.1:40000");
    t.apply(&open, &mut r);
    // The request (and its slice events) never reached user space.
    g.pos.insert((id, false), REQUEST.len() as u64);
    t.apply(&g.bytes(id, Direction::Egress, HEAD, 1), &mut r);
    for ev in [token("a"), sse_chunk("[DONE]"), b"0\r\n\r\n".to_vec()] {
        t.apply(&g.bytes(id, Direction::Egress, &ev, 1), &mut r);
    }
    // The client's close: the EOF marker's position shows the request bytes that never came.
    t.apply(
        &g.data(id, Direction::Ingress, DataKind::Eof, b"", 1),
        &mut r,
    );
    let close = g.close(id);
    t.apply(&close, &mut r);
    assert!(r.done.is_empty());
    assert_eq!(r.incomplete, vec![Incomplete::CaptureGap]);
    assert_eq!(t.stats().other_protocol, 0);

    // The first record is the kernel's TRUNCATED marker at position 0 (the head's slices lost).
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(6, KernelRole::Server, "127.0.0.1:40002");
    t.apply(&open, &mut r);
    t.apply(
        &g.data(
            id,
            Direction::Ingress,
            DataKind::Truncated {
                missing: REQUEST.len() as u64,
            },
            b"",
            1,
        ),
        &mut r,
    );
    for ev in [HEAD.to_vec(), token("a"), b"0\r\n\r\n".to_vec()] {
        t.apply(&g.bytes(id, Direction::Egress, &ev, 1), &mut r);
    }
    let close = g.close(id);
    t.apply(&close, &mut r);
    assert_eq!(r.incomplete, vec![Incomplete::CaptureGap]);

    // Both directions' starts lost, and only the response's middle seen.
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(5, KernelRole::Server, "127.0.0.1:40001");
    t.apply(&open, &mut r);
    g.pos.insert((id, false), REQUEST.len() as u64);
    g.pos.insert((id, true), HEAD.len() as u64);
    t.apply(&g.bytes(id, Direction::Egress, &token("a"), 1), &mut r);
    let close = g.close(id);
    t.apply(&close, &mut r);
    assert_eq!(r.incomplete, vec![Incomplete::CaptureGap]);
}

#[test]
fn a_socket_passed_to_another_process_is_decoded_there_with_the_senders_addresses() {
    // Only port 11434, and no /proc: the receiver's connection is kept by the sender's addresses.
    let mut t = ConnTable::new(ConnTableConfig {
        proc_root: "/nonexistent-proc".into(),
        ports: vec![11434],
        ..ConnTableConfig::default()
    });
    let mut r = Recorder::default();
    let (mut master, mut worker) = (Generator::new(7), Generator::new(9));
    let accepted = ConnId {
        tgid: 7,
        fd: 6,
        generation: master.tick(1),
    };
    let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
    t.add_existing(
        accepted,
        true,
        addr("127.0.0.1:11434"),
        addr("127.0.0.1:40000"),
        1,
    );
    // The master passes fd 6; the worker receives it as fd 3, then the master closes its copy.
    let (id, open) = inherited_open(9, 3, worker.tick(1), 7);
    let Event::Open(mut passed) = open else {
        unreachable!()
    };
    passed.passed_fd = Some(6);
    t.apply(&Event::Open(passed), &mut r);
    t.apply(&master.close(accepted), &mut r);
    t.apply(&worker.bytes(id, Direction::Ingress, REQUEST, 1), &mut r);
    for ev in [
        HEAD.to_vec(),
        token("a"),
        sse_chunk("[DONE]"),
        b"0\r\n\r\n".to_vec(),
    ] {
        t.apply(&worker.bytes(id, Direction::Egress, &ev, 1), &mut r);
    }
    assert!(t.take_untrack().is_empty());
    assert_eq!(r.done.len(), 1);
    let (done_id, role, ex) = &r.done[0];
    assert_eq!((*done_id, *role, ex.status), (id, Role::Server, Some(200)));
    assert_eq!((t.stats().passed, t.stats().opened_server), (1, 2));
}

#[test]
fn tls_plaintext_is_decoded_and_its_ciphertext_ignored() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (id, open) = g.open(4, KernelRole::Client, "10.0.0.1:443");
    t.apply(&open, &mut r);
    // The handshake's first bytes (a probe-less start, or the kernel's first chunk).
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    t.apply(&g.bytes(id, Direction::Egress, hello, 1), &mut r);
    // The plaintext, from position 0 of each direction.
    t.apply(&g.tls(id, Direction::Egress, REQUEST, 1), &mut r);
    t.apply(&g.tls(id, Direction::Ingress, HEAD, 100), &mut r);
    // Ciphertext of the same connection (as --all-protocols delivers it): never decoded.
    t.apply(
        &g.bytes(id, Direction::Ingress, b"\x17\x03\x03\x00\x20garbage", 0),
        &mut r,
    );
    for ev in [
        token("a"),
        token("b"),
        sse_chunk("[DONE]"),
        b"0\r\n\r\n".to_vec(),
    ] {
        t.apply(&g.tls(id, Direction::Ingress, &ev, 5), &mut r);
    }
    assert_eq!(r.started.len(), 1);
    let (done_id, role, ex) = &r.done[0];
    assert_eq!((*done_id, *role), (id, Role::Client));
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.tokens.completion, TokenCount::counted(2));
    assert_eq!(ex.error, None);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    t.apply(&g.close(id), &mut r);
    let s = t.stats();
    assert_eq!(
        (s.other_protocol, s.tls_connections, s.gap_bytes),
        (0, 1, 0)
    );
}

#[test]
fn a_seeded_tls_connection_is_decoded_from_its_first_plaintext() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let id = ConnId {
        tgid: 7,
        fd: 9,
        generation: 5,
    };
    t.add_existing(
        id,
        false,
        "127.0.0.1:50000".parse().expect("addr"),
        "10.0.0.1:443".parse().expect("addr"),
        g.tick(0),
    );
    // No handshake seen; the first plaintext is the end of a stream in flight at start (skipped),
    // then a whole exchange.
    t.apply(&g.tls(id, Direction::Ingress, &token("z"), 1), &mut r);
    t.apply(&g.tls(id, Direction::Egress, REQUEST, 1), &mut r);
    t.apply(&g.tls(id, Direction::Ingress, HEAD, 10), &mut r);
    for ev in [token("a"), sse_chunk("[DONE]"), b"0\r\n\r\n".to_vec()] {
        t.apply(&g.tls(id, Direction::Ingress, &ev, 5), &mut r);
    }
    assert_eq!(r.done.len(), 1);
    assert_eq!(r.done[0].2.tokens.completion, TokenCount::counted(1));
    assert_eq!(
        (t.stats().other_protocol, t.stats().tls_connections),
        (0, 1)
    );
}

#[test]
fn the_request_host_reaches_the_sink() {
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (c, open) = g.open(4, KernelRole::Client, "127.0.0.1:8000");
    t.apply(&open, &mut r);
    t.apply(&g.bytes(c, Direction::Egress, REQUEST, 1), &mut r);
    t.apply(&g.bytes(c, Direction::Ingress, HEAD, 1), &mut r);
    t.apply(
        &g.bytes(c, Direction::Ingress, &sse_chunk("[DONE]"), 1),
        &mut r,
    );
    t.apply(&g.bytes(c, Direction::Ingress, b"0\r\n\r\n", 1), &mut r);
    assert_eq!(r.done.len(), 1);
    assert_eq!(r.hosts, vec![Some("x".to_owned()), Some("x".to_owned())]);
}

/// The real Node h2c capture of llm-observer-decode's tests (4 requests on one connection), fed
/// as kernel events of the client: the table takes it as HTTP/2 by its preface and every stream
/// is one exchange, with `:authority` as the host.
#[test]
fn http2_connections_are_decoded_through_the_table() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../llm-observer-decode/tests/data/h2");
    let read = |ext: &str| std::fs::read(dir.join(format!("sequential.{ext}"))).expect(ext);
    let (req, resp) = (read("request.bin"), read("response.bin"));
    let timeline = String::from_utf8(read("timeline.tsv")).expect("utf-8");
    let (mut g, mut t, mut r) = (Generator::new(7), table(), Recorder::default());
    let (c, open) = g.open(4, KernelRole::Client, "127.0.0.1:8000");
    t.apply(&open, &mut r);
    let mut pos = [0usize; 2];
    for line in timeline.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let len: usize = cols[2].parse().expect("len");
        let (dir, i, src) = match cols[1] {
            "c2s" => (Direction::Egress, 0, &req),
            _ => (Direction::Ingress, 1, &resp),
        };
        for piece in src[pos[i]..pos[i] + len].chunks(4096) {
            t.apply(&g.bytes(c, dir, piece, 1), &mut r);
        }
        pos[i] += len;
    }
    let close = g.close(c);
    t.apply(&close, &mut r);
    assert!(
        r.errors.is_empty() && r.unsupported.is_empty(),
        "{:?} {:?}",
        r.errors,
        r.unsupported
    );
    assert_eq!(r.started.len(), 4);
    assert_eq!(r.done.len(), 4);
    for (_, role, ex) in &r.done {
        assert_eq!(*role, Role::Client);
        assert_eq!(ex.status, Some(200));
        assert_eq!(ex.tokens.prompt, TokenCount::reported(14));
        assert_eq!(ex.error, None);
    }
    let host = r.hosts[0].clone().expect("a host");
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert!(r.hosts.iter().all(|h| h.as_deref() == Some(host.as_str())));
}
