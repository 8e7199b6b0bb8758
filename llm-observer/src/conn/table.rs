//! [`ConnTable`]: the connection state machine between capture events and decoder outputs.

use foldhash::HashMap;
use std::{collections::BTreeMap, net::SocketAddr};

use llm_observer_decode::{ConnDecoder, EndedBy, Incomplete, Output, Role};

use super::budget::Budget;
use super::config::{ConnTableConfig, TableStats};
use super::state::{Conn, Proto, Tls};
use super::state::{looks_like_http, looks_like_tls};
use crate::sinks::sink::Sink;
use crate::{
    attribution::process::ProcessCache,
    capture::{
        ConnId, DataEvent, DataKind, Direction, Event, KernelRole, event::ConnEventData, procfs,
    },
};

/// All tracked connections.
pub struct ConnTable {
    cfg: ConnTableConfig,
    conns: HashMap<ConnId, Conn>,
    /// Open connections per process, for process exit.
    by_tgid: HashMap<u32, BTreeMap<ConnId, ()>>,
    processes: ProcessCache,
    /// Local addresses of listening sockets by (tgid, fd).
    /// `None`: not a TCP listener (a unix socket), or gone.
    listeners: HashMap<(u32, i32), Option<SocketAddr>>,
    /// Server processes the OOM killer chose, until their exit (their requests fail as OOM).
    oom_victims: std::collections::HashSet<u32>,
    stats: TableStats,
    budget: Budget,
    /// Kernel-side tracking to stop (not TCP, filtered out, table full): drained by the pipeline.
    untrack: Vec<ConnId>,
    out: Vec<Output>,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl ConnTable {
    pub fn new(cfg: ConnTableConfig) -> Self {
        let processes = ProcessCache::new(&cfg.proc_root);
        let budget = Budget::new(cfg.max_buffered_bytes);
        ConnTable {
            cfg,
            conns: HashMap::default(),
            by_tgid: HashMap::default(),
            processes,
            listeners: HashMap::default(),
            oom_victims: std::collections::HashSet::new(),
            stats: TableStats::default(),
            budget,
            untrack: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Root of the proc filesystem the table reads.
    pub fn proc_root(&self) -> &std::path::Path {
        &self.cfg.proc_root
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Bytes held by all decoders, and what the memory budget has shed.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Local address of a listening socket, cached per (tgid, fd) — failures too, so a unix
    /// listener costs one /proc look-up, not one per accepted connection.
    fn listener_addr(&mut self, tgid: u32, fd: i32) -> Option<SocketAddr> {
        if let Some(a) = self.listeners.get(&(tgid, fd)) {
            return *a;
        }
        let local = procfs::resolve(&self.cfg.proc_root, tgid, fd).map(|(local, _)| local);
        if self.listeners.len() >= self.cfg.max_connections {
            self.listeners.clear();
        }
        self.listeners.insert((tgid, fd), local);
        local
    }

    /// Addresses of `parent`'s connection on `fd` (its newest generation), for a child that
    /// inherited it across fork: (local, peer, resolved). Unknown parent: nothing known yet.
    fn inherited_addrs(
        &self,
        parent: u32,
        fd: i32,
    ) -> (Option<SocketAddr>, Option<SocketAddr>, bool) {
        let from = self
            .by_tgid
            .get(&parent)
            .and_then(|m| m.keys().rev().find(|k| k.fd == fd))
            .and_then(|id| self.conns.get(id));
        match from {
            Some(p) => (p.local, p.peer, p.resolved),
            None => (None, None, false),
        }
    }

    /// Kernel-side tracking the table asks to stop, since the last call. Each names its
    /// generation, so a reused fd's new connection is not untracked by mistake.
    pub fn take_untrack(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.untrack)
    }

    /// Registers a socket that existed before the agent started (seeded into the kernel map).
    pub fn add_existing(
        &mut self,
        id: ConnId,
        server: bool,
        local: SocketAddr,
        peer: SocketAddr,
        ts_ns: u64,
    ) {
        let role = if server { Role::Server } else { Role::Client };
        self.insert(id, role, (Some(local), Some(peer)), true, false, ts_ns);
    }

    fn insert(
        &mut self,
        id: ConnId,
        role: Role,
        (local, peer): (Option<SocketAddr>, Option<SocketAddr>),
        resolved: bool,
        from_start: bool,
        ts_ns: u64,
    ) -> bool {
        if self.conns.len() >= self.cfg.max_connections {
            self.stats.dropped_full += 1;
            self.untrack.push(id);
            return false;
        }
        match role {
            Role::Server => self.stats.opened_server += 1,
            Role::Client => self.stats.opened_client += 1,
        }
        let process = self.processes.get(id.tgid);
        self.conns.insert(
            id,
            Conn {
                id,
                role,
                process,
                local,
                peer,
                resolved,
                proto: Proto::Unknown,
                next_pos: [0, 0],
                peer_eof: false,
                last_ts: ts_ns,
                charged: 0,
                from_start,
                tls: Tls::No,
                host: None,
            },
        );
        self.by_tgid.entry(id.tgid).or_default().insert(id, ());
        true
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, event: &Event, sink: &mut dyn Sink) {
        match event {
            Event::Open(c) => {
                sink.raw(event, None);
                let role = match c.role {
                    KernelRole::Server => Role::Server,
                    KernelRole::Client => Role::Client,
                    // The kernel only opens with a known role; seeded sockets come via add_existing.
                    // Pipes are the stdio table's (`super::stdio`).
                    KernelRole::Unknown | KernelRole::Pipe => return,
                };
                // A close we never saw (fd passed away) leaves a stale entry for the same fd.
                let stale: Vec<ConnId> = self
                    .by_tgid
                    .get(&c.conn.tgid)
                    .map(|m| m.keys().filter(|k| k.fd == c.conn.fd).copied().collect())
                    .unwrap_or_default();
                for id in stale {
                    self.finish(id, EndedBy::Capture(Incomplete::CloseUnseen), c.ts_ns, sink);
                }
                if let (Some(sender), Some(sender_fd)) = (c.inherited_from, c.passed_fd) {
                    // A socket passed over a unix socket: decoded from the receiver's first bytes,
                    // under the receiver's own identity. The kernel matched sender and receiver
                    // by time; /proc confirms it is the sender's connection (a mismatch — two
                    // passes at once — or no TCP socket at all is untracked). When the receiver
                    // has closed it already, the sender's addresses stand.
                    let (s_local, s_peer, s_resolved) = self.inherited_addrs(sender, sender_fd);
                    let (local, peer, resolved) =
                        match procfs::resolve(&self.cfg.proc_root, c.conn.tgid, c.conn.fd) {
                            Some((l, p)) => {
                                let differs = |mine: SocketAddr, theirs: Option<SocketAddr>| {
                                    theirs.is_some_and(|t| t != mine)
                                };
                                if differs(l, s_local) || differs(p, s_peer) {
                                    self.untrack.push(c.conn);
                                    return;
                                }
                                (Some(l), Some(p), true)
                            }
                            None => (s_local, s_peer, s_resolved),
                        };
                    self.stats.passed += 1;
                    // A receiver gone before this is applied is named like its sender: they are
                    // nearly always one program (a master and its pre-forked worker).
                    self.processes.inherit(c.conn.tgid, sender);
                    self.insert(c.conn, role, (local, peer), resolved, false, c.ts_ns);
                    return;
                }
                if let Some(parent) = c.inherited_from {
                    // A fork's copy of the parent's socket: same addresses, its own decoding from
                    // the child's first bytes.
                    let (local, peer, resolved) = self.inherited_addrs(parent, c.conn.fd);
                    self.processes.inherit(c.conn.tgid, parent);
                    self.insert(c.conn, role, (local, peer), resolved, false, c.ts_ns);
                    return;
                }
                // An accepted socket's local address is its listener's: resolve that (long-lived,
                // so /proc still has it) once per listener, instead of racing the connection.
                let local = c
                    .listen_fd
                    .and_then(|lfd| self.listener_addr(c.conn.tgid, lfd));
                // Accepted without an address buffer (libuv does that) from a listener /proc does
                // not list as TCP: a unix socket. Not ours.
                if role == Role::Server
                    && c.peer.is_none()
                    && c.listen_fd.is_some()
                    && local.is_none()
                {
                    self.untrack.push(c.conn);
                    return;
                }
                self.insert(
                    c.conn,
                    role,
                    (local, c.peer),
                    local.is_some() && c.peer.is_some(),
                    true,
                    c.ts_ns,
                );
            }
            Event::Close(c) => {
                self.lost_tail(c, sink);
                if let Some(conn) = self.conns.get(&c.conn) {
                    sink.raw(event, Some(&conn.view()));
                    let by = conn.ended_by_local_close();
                    self.finish(c.conn, by, c.ts_ns, sink);
                    self.stats.closed += 1;
                } else {
                    sink.raw(event, None);
                }
            }
            Event::OomVictim { pid, .. } => {
                sink.raw(event, None);
                // The victim is named by a thread id; its process is what holds the sockets.
                let tgid = procfs::tgid_of(&self.cfg.proc_root, *pid).unwrap_or(*pid);
                let serves = self.listeners.keys().any(|(t, _)| *t == tgid)
                    || self.by_tgid.get(&tgid).is_some_and(|m| {
                        m.keys()
                            .any(|id| self.conns.get(id).is_some_and(|c| c.role == Role::Server))
                    });
                if serves && self.oom_victims.insert(tgid) {
                    let process = self.processes.get(tgid);
                    sink.oom_killed(&process);
                }
            }
            Event::ProcExit { tgid, ts_ns } => {
                sink.raw(event, None);
                let oom = self.oom_victims.remove(tgid);
                let ids: Vec<ConnId> = self
                    .by_tgid
                    .get(tgid)
                    .map(|m| m.keys().copied().collect())
                    .unwrap_or_default();
                for id in ids {
                    let by = match self.conns.get(&id) {
                        None => EndedBy::Capture(Incomplete::CloseUnseen),
                        // Killed for memory while serving: not a plain close.
                        Some(c) if oom && c.role == Role::Server && !c.peer_eof => {
                            EndedBy::ServerOom
                        }
                        Some(c) => c.ended_by_local_close(),
                    };
                    self.finish(id, by, *ts_ns, sink);
                    self.stats.closed += 1;
                    // The kernel saw no close() for these: drop its entries too, or a reused pid
                    // would inherit them.
                    self.untrack.push(id);
                }
                self.by_tgid.remove(tgid);
                self.processes.forget(*tgid);
                self.listeners.retain(|(t, _), _| t != tgid);
            }
            Event::ProcExec { tgid, .. } => {
                sink.raw(event, None);
                // Open connections survive exec (without CLOEXEC): they now belong to the new
                // program, and so do their next exchanges.
                if self.processes.contains(*tgid) {
                    let process = self.processes.refresh(*tgid);
                    for id in self.by_tgid.get(tgid).into_iter().flat_map(|m| m.keys()) {
                        if let Some(c) = self.conns.get_mut(id) {
                            c.process = process.clone();
                        }
                    }
                }
            }
            Event::Data(d) => self.data(event, d, sink),
        }
    }

    fn data(&mut self, event: &Event, d: &DataEvent, sink: &mut dyn Sink) {
        let Some(conn) = self.conns.get_mut(&d.conn) else {
            self.stats.orphan_events += 1;
            sink.raw(event, None);
            return;
        };
        conn.last_ts = d.ts_ns;
        if d.tls && conn.tls != Tls::Plaintext {
            // The kernel found this connection to be TLS: what came before was ciphertext (the
            // handshake, classified as not HTTP), and the plaintext streams start at 0.
            conn.tls = Tls::Plaintext;
            conn.proto = Proto::Unknown;
            conn.next_pos = [0, 0];
            conn.peer_eof = false;
            self.stats.tls_connections += 1;
            let charged = std::mem::take(&mut conn.charged);
            self.budget.release(charged);
        } else if !d.tls && conn.tls != Tls::No {
            // Ciphertext of a TLS connection (the first bytes of its handshake, or every byte
            // under --all-protocols): never decoded.
            sink.raw(event, Some(&conn.view()));
            return;
        }
        let di = dir_index(d.direction);
        let stream = conn.stream(d.direction);
        // The ring lost this connection's first bytes (its request head, say): decode it from
        // here as HTTP (the kernel delivers payloads only of connections that may be) with a gap
        // in front, so what was lost is accounted for.
        let lost_start = conn.from_start
            && matches!(conn.proto, Proto::Unknown)
            && (d.pos > 0 || matches!(d.kind, DataKind::Truncated { .. }));
        if matches!(conn.proto, Proto::Unknown) && d.kind == DataKind::Bytes && !lost_start {
            // The first bytes seen of this direction start wherever the kernel began delivering:
            // a socket seeded from /proc is skipped until a message starts.
            conn.next_pos[di] = d.pos;
        }
        // The port filter, once per connection, at its first bytes and only when they look like
        // HTTP/1.x (every other TCP connection on the node costs nothing here). /proc is read only
        // when the ports the kernel's events gave cannot decide; a connection whose port stays
        // unknown (it ended before /proc was read) is kept rather than silently dropped.
        let first_http = lost_start
            || matches!(conn.proto, Proto::Unknown)
                && d.kind == DataKind::Bytes
                && !d.payload.is_empty()
                && (d.payload.len() < 4 || looks_like_http(&d.payload));
        if first_http && !self.cfg.ports.is_empty() {
            let wanted = |c: &Conn| {
                [c.local, c.peer]
                    .iter()
                    .flatten()
                    .any(|a| self.cfg.ports.contains(&a.port()))
            };
            if !wanted(conn) && !conn.resolved && (conn.local.is_none() || conn.peer.is_none()) {
                conn.resolved = true;
                if let Some((local, peer)) =
                    procfs::resolve(&self.cfg.proc_root, d.conn.tgid, d.conn.fd)
                {
                    conn.local = Some(local);
                    conn.peer = Some(peer);
                }
            }
            if !wanted(conn) && conn.local.is_some() && conn.peer.is_some() {
                self.untrack.push(d.conn);
                self.forget(d.conn);
                return;
            }
        }
        if lost_start {
            conn.proto = Proto::Http(Box::new(ConnDecoder::new(self.cfg.limits)));
        }
        sink.raw(event, Some(&conn.view()));
        match d.kind {
            DataKind::Eof | DataKind::Reset => {
                // The marker's position is where the stream ended: bytes before it that never
                // arrived were lost (a whole request, say).
                let expected = conn.next_pos[di];
                if d.pos > expected {
                    self.stats.gap_bytes += d.pos - expected;
                    if let Proto::Http(dec) = &mut conn.proto {
                        dec.gap(stream, d.pos - expected, d.ts_ns, &mut self.out);
                    }
                    conn.next_pos[di] = d.pos;
                }
                conn.peer_eof = true;
            }
            DataKind::Truncated { missing } => {
                // Bytes lost before the marker itself (an earlier slice and its marker both
                // dropped) are a gap of their own, announced first so framing stays exact.
                let expected = conn.next_pos[di];
                let before = d.pos.saturating_sub(expected);
                for lost in [before, missing] {
                    if lost == 0 {
                        continue;
                    }
                    self.stats.gap_bytes += lost;
                    if let Proto::Http(dec) = &mut conn.proto {
                        dec.gap(stream, lost, d.ts_ns, &mut self.out);
                    }
                }
                conn.next_pos[di] = expected.max(d.pos + missing);
            }
            DataKind::Bytes => {
                match d.direction {
                    Direction::Ingress => {
                        self.stats.captured_bytes_ingress += d.payload.len() as u64
                    }
                    Direction::Egress => self.stats.captured_bytes_egress += d.payload.len() as u64,
                }
                let mut payload = &d.payload[..];
                let expected = conn.next_pos[di];
                if d.pos > expected {
                    // Bytes between were lost (an event dropped by a full ring).
                    let missing = d.pos - expected;
                    self.stats.gap_bytes += missing;
                    if let Proto::Http(dec) = &mut conn.proto {
                        dec.gap(stream, missing, d.ts_ns, &mut self.out);
                    }
                } else if d.pos < expected {
                    // Overlap: only the part past what we already have is new.
                    let skip = (expected - d.pos).min(payload.len() as u64) as usize;
                    payload = &payload[skip..];
                }
                conn.next_pos[di] = conn.next_pos[di].max(d.pos + d.payload.len() as u64);
                if matches!(conn.proto, Proto::Unknown) && !payload.is_empty() {
                    if payload.len() < 4 || looks_like_http(payload) {
                        conn.proto = Proto::Http(Box::new(ConnDecoder::new(self.cfg.limits)));
                    } else if conn.tls == Tls::No && looks_like_tls(payload) {
                        // A TLS handshake: the SSL probes may deliver its plaintext later.
                        conn.tls = Tls::Handshake;
                        return;
                    } else if conn.tls == Tls::Plaintext
                        && !conn.from_start
                        && !payload.starts_with(b"PRI * HTTP/2.0")
                    {
                        // Plaintext of a TLS connection seeded from /proc: it may start mid-message;
                        // skipped until a message starts (the kernel does the same for a seeded
                        // plain socket, but does not classify plaintext).
                        return;
                    } else {
                        // Not HTTP/1.x: the kernel sends nothing more of it (it only counts its
                        // bytes), so the table keeps no state for it either. TLS plaintext is not
                        // classified in the kernel: stop its copying.
                        self.stats.other_protocol += 1;
                        if conn.tls == Tls::Plaintext {
                            self.untrack.push(d.conn);
                        }
                        self.forget(d.conn);
                        return;
                    }
                }
                if let Proto::Http(dec) = &mut conn.proto
                    && !payload.is_empty()
                {
                    dec.feed(stream, payload, d.ts_ns, &mut self.out);
                }
            }
        }
        // The connection found at the top serves to the end (three lookups per event were 5 % of
        // the agent's CPU at saturation): every path that forgets it has returned.
        Self::dispatch(&mut self.out, conn, sink);
        let fits = match &conn.proto {
            Proto::Http(dec) => self.budget.charge(&mut conn.charged, dec.buffered_bytes()),
            _ => true,
        };
        if !fits {
            self.shed(d.conn, d.ts_ns, sink);
        }
    }

    /// A close tells where the socket's streams ended: bytes between what arrived and there were
    /// lost (the ring was full for the last events before the close), and are a gap, so the
    /// exchange they cut ends incomplete instead of looking like a server that closed mid-answer.
    /// Only directions whose positions user space knows from their start: a connection decoded
    /// from its first bytes, or a direction that has delivered bytes (a seeded socket's skipped
    /// bytes before its first message are counted in the kernel's positions, not delivered).
    /// Ciphertext of a TLS connection whose plaintext was never bound moves no position here.
    fn lost_tail(&mut self, c: &ConnEventData, sink: &mut dyn Sink) {
        let Some(conn) = self.conns.get_mut(&c.conn) else {
            return;
        };
        if conn.tls == Tls::Handshake {
            return;
        }
        let streams = [Direction::Egress, Direction::Ingress].map(|d| (d, conn.stream(d)));
        let Proto::Http(dec) = &mut conn.proto else {
            return;
        };
        for (dir, stream) in streams {
            let di = dir_index(dir);
            let expected = conn.next_pos[di];
            if c.ended_at[di] > expected && (conn.from_start || expected > 0) {
                let missing = c.ended_at[di] - expected;
                self.stats.gap_bytes += missing;
                dec.gap(stream, missing, c.ts_ns, &mut self.out);
                conn.next_pos[di] = c.ended_at[di];
            }
        }
        Self::dispatch(&mut self.out, conn, sink);
    }

    /// Sheds a connection whose buffered bytes did not fit the budget.
    fn shed(&mut self, id: ConnId, ts_ns: u64, sink: &mut dyn Sink) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        log::debug!(
            "memory budget ({} bytes) exceeded: shedding {}[{}] fd {} ({} bytes buffered)",
            self.cfg.max_buffered_bytes,
            conn.process.comm,
            id.tgid,
            id.fd,
            conn.charged
        );
        let charged = std::mem::take(&mut conn.charged);
        self.budget.shed(charged);
        self.finish(id, EndedBy::Capture(Incomplete::Shed), ts_ns, sink);
        self.untrack.push(id);
    }

    fn dispatch(out: &mut Vec<Output>, conn: &mut Conn, sink: &mut dyn Sink) {
        for o in out.drain(..) {
            if let Output::Started { host, .. } = &o
                && host.is_some()
            {
                conn.host.clone_from(host);
            }
            let view = conn.view();
            match o {
                Output::Started {
                    seq,
                    api,
                    operation,
                    model,
                    stream,
                    user_labels,
                    ..
                } => {
                    let summary = llm_observer_decode::llm::RequestSummary {
                        api,
                        operation,
                        model,
                        stream,
                        user_labels,
                    };
                    sink.started(&view, seq, &summary);
                }
                Output::FirstToken { seq, ts_ns } => sink.first_token(&view, seq, ts_ns),
                Output::Done { seq, exchange } => sink.done(&view, seq, &exchange),
                Output::Unsupported(u) => sink.unsupported(&view, u),
                Output::Error(e) => sink.decode_error(&view, &e),
                Output::Incomplete { why, .. } => sink.incomplete(&view, why),
            }
        }
    }

    /// Drops a connection that has nothing to decode (not HTTP, filtered out).
    fn forget(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            self.budget.release(c.charged);
        }
        if let Some(m) = self.by_tgid.get_mut(&id.tgid) {
            m.remove(&id);
        }
    }

    /// Ends a connection: flushes its decoder and forgets it.
    fn finish(&mut self, id: ConnId, by: EndedBy, ts_ns: u64, sink: &mut dyn Sink) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        self.budget.release(std::mem::take(&mut conn.charged));
        if let Some(m) = self.by_tgid.get_mut(&id.tgid) {
            m.remove(&id);
        }
        if conn.tls == Tls::Handshake {
            // TLS whose plaintext was never captured (a TLS library without probes): as opaque
            // as any other protocol.
            self.stats.other_protocol += 1;
        }
        if let Proto::Http(dec) = &mut conn.proto {
            dec.end(by, ts_ns, &mut self.out);
        }
        Self::dispatch(&mut self.out, &mut conn, sink);
    }

    /// Forgets connections silent for longer than the idle timeout (`now_ns` on the capture clock).
    pub fn expire(&mut self, now_ns: u64, sink: &mut dyn Sink) {
        let timeout = self.cfg.idle_timeout_ns;
        let old: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| now_ns.saturating_sub(c.last_ts) > timeout)
            .map(|c| c.id)
            .collect();
        for id in old {
            self.finish(id, EndedBy::Capture(Incomplete::Expired), now_ns, sink);
            self.stats.expired += 1;
            // Forgotten here, so stop the kernel copying it (it would come back as orphans).
            self.untrack.push(id);
        }
    }
}
