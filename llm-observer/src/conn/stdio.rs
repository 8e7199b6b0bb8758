//! [`StdioTable`]: MCP over stdio. The kernel announces a pipe end once its first bytes were
//! JSON-RPC (`llm-observer-ebpf/src/pipes.rs`); this table groups a process's pipe ends into
//! sessions, feeds each session's two directions to one [`McpStdio`] decoder, and hands the
//! finished exchanges to the same [`Sink`] as the sockets' table.
//!
//! - **Roles.** A pipe end carries one side's messages for its whole life, so its first message
//!   tells its stream ([`writer_side`]: a request first is the client's stream, an answer first
//!   the server's) and, with the direction, the process's role: writing the client's stream or
//!   reading the server's makes it the client. No fd number is assumed (the `mcp` SDK's server
//!   moves its wire off fds 0 and 1). Both ends are decoded, each in its own view.
//! - **Sessions.** A client may run several servers at once, each with JSON-RPC ids of its own,
//!   so a process's pipe ends are grouped by the process holding their other ends (its children
//!   and its parent, looked up in /proc once per pipe end). An end whose peer cannot be found
//!   (gone already) joins the process's session of unknown peers.
//! - **One side missing.** A session that never saw its answers' stream (that end was not
//!   captured) ends its waiting requests incomplete, not `server_closed`.
//! - **Not JSON-RPC after all** (a pipe whose first bytes only looked like it, or an fd that was
//!   no pipe): untracked in the kernel and forgotten.
//! - **End.** A session ends when its last pipe end closes or its process exits; requests still
//!   waiting then fail `server_closed` (or end incomplete after a capture gap).
//! - **Bounds.** At most `max_sessions` sessions (further pipes are untracked and counted);
//!   lines up to `max_line_bytes` (the decoder's bound); at most `max_buffered_bytes` of
//!   unfinished lines in all sessions together: the session whose bytes pass it is shed
//!   (untracked, its waiting requests incomplete, counted in `llm_observer_dropped_total`).

use foldhash::HashMap;
use std::{borrow::Cow, path::PathBuf, sync::Arc};

use llm_observer_decode::{
    DecodeError, Exchange, Role, Stream,
    llm::mcp_stdio::{McpStdio, Recognition, SIDE_PEEK, Side, writer_side},
};

use crate::sinks::sink::{ConnView, Sink};
use crate::{
    attribution::process::{ProcessCache, ProcessInfo},
    capture::{
        ConnId, DataEvent, DataKind, Direction, Event, KernelRole, event::ConnEventData, procfs,
    },
};

/// Settings of the stdio table.
#[derive(Debug, Clone)]
pub struct StdioConfig {
    /// Longest JSON-RPC line decoded (longer ones are skipped and counted).
    pub max_line_bytes: usize,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most bytes of unfinished lines all sessions hold together.
    pub max_buffered_bytes: usize,
    pub proc_root: PathBuf,
}

impl Default for StdioConfig {
    fn default() -> Self {
        StdioConfig {
            max_line_bytes: 4 * 1024 * 1024,
            max_sessions: 256,
            max_buffered_bytes: 32 * 1024 * 1024,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// Counters of the stdio table, for the self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioStats {
    /// Sessions started, by role.
    pub sessions_server: u64,
    pub sessions_client: u64,
    /// Pipe ends the kernel announced that turned out not to be JSON-RPC (or no pipe).
    pub not_jsonrpc: u64,
    /// Pipe ends refused because `max_sessions` sessions were open.
    pub dropped_full: u64,
    /// Sessions shed because their unfinished lines passed `max_buffered_bytes`.
    pub shed: u64,
    pub captured_bytes: u64,
}

/// One session's key: its process, the process at the other end (0: not known), its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    tgid: u32,
    peer: u32,
    server: bool,
}

/// One announced pipe end.
#[derive(Debug)]
struct PipeEnd {
    /// The process holding the other end (0: not known).
    peer: u32,
    /// Its session and stream, once its first message told them.
    attached: Option<(SessionKey, Stream)>,
    /// Its first bytes while its side is undecided (at most [`SIDE_PEEK`]).
    head: Vec<u8>,
    /// Next expected `pos` (a pipe end moves bytes one way).
    next_pos: u64,
}

struct Session {
    /// The first pipe end's id: what sinks key their per-exchange state by.
    id: ConnId,
    role: Role,
    process: Arc<ProcessInfo>,
    decoder: McpStdio,
    /// Pipe ends open.
    ends: usize,
    /// Exchanges finished so far (their `seq`).
    seq: u64,
    /// An end of the server's stream was attached (its answers can be seen).
    answers_seen: bool,
}

/// What sinks see of a session: no addresses, no host, `stdio` set.
fn view_of(id: ConnId, role: Role, process: &ProcessInfo) -> ConnView<'_> {
    ConnView {
        id,
        role,
        process,
        local: None,
        peer: None,
        host: None,
        stdio: true,
    }
}

impl Session {
    fn view(&self) -> ConnView<'_> {
        view_of(self.id, self.role, &self.process)
    }
}

/// All MCP stdio sessions.
pub struct StdioTable {
    cfg: StdioConfig,
    ends: HashMap<ConnId, PipeEnd>,
    sessions: HashMap<SessionKey, Session>,
    processes: ProcessCache,
    stats: StdioStats,
    /// Bytes of unfinished lines all decoders hold (their `buffered_bytes`, summed).
    buffered: usize,
    /// Kernel-side tracking to stop: drained by the pipeline with the sockets' list.
    untrack: Vec<ConnId>,
    out: Vec<Exchange>,
    errors: Vec<DecodeError>,
}

impl StdioTable {
    pub fn new(cfg: StdioConfig) -> Self {
        let processes = ProcessCache::new(&cfg.proc_root);
        StdioTable {
            cfg,
            ends: HashMap::default(),
            sessions: HashMap::default(),
            processes,
            stats: StdioStats::default(),
            buffered: 0,
            untrack: Vec::new(),
            out: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn stats(&self) -> StdioStats {
        self.stats
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Pipe ends to stop tracking in the kernel, since the last call.
    pub fn take_untrack(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.untrack)
    }

    /// Applies `event` if it is a pipe's; true when it was (the sockets' table must not see it).
    /// Process exits and execs are seen here and passed on too.
    pub fn apply(&mut self, event: &Event, sink: &mut dyn Sink) -> bool {
        match event {
            Event::Open(c) if c.role == KernelRole::Pipe => {
                sink.raw(event, None);
                self.open(c, sink);
                true
            }
            Event::Data(d) if self.ends.contains_key(&d.conn) => {
                self.data(event, d, sink);
                true
            }
            Event::Close(c) if self.ends.contains_key(&c.conn) => {
                sink.raw(event, None);
                self.close_end(c.conn, c.ts_ns, sink);
                true
            }
            Event::ProcExit { tgid, ts_ns } => {
                let ids: Vec<ConnId> = self
                    .ends
                    .keys()
                    .filter(|id| id.tgid == *tgid)
                    .copied()
                    .collect();
                for id in ids {
                    self.close_end(id, *ts_ns, sink);
                }
                self.processes.forget(*tgid);
                false
            }
            Event::ProcExec { tgid, .. } => {
                if self.processes.contains(*tgid) {
                    let process = self.processes.refresh(*tgid);
                    for s in self.sessions.values_mut().filter(|s| s.id.tgid == *tgid) {
                        s.process = process.clone();
                    }
                }
                false
            }
            _ => false,
        }
    }

    fn open(&mut self, c: &ConnEventData, sink: &mut dyn Sink) {
        let id = c.conn;
        // Two threads' first calls on one candidate can both announce it.
        if self.ends.contains_key(&id) {
            return;
        }
        let root = self.cfg.proc_root.clone();
        // The kernel's candidate may be a stale entry of an fd that is now a file or a socket.
        let target = procfs::fd_target(&root, id.tgid, id.fd);
        if target
            .as_deref()
            .is_some_and(|t| procfs::inode_of(t, "pipe").is_none())
        {
            self.stats.not_jsonrpc += 1;
            self.untrack.push(id);
            return;
        }
        // A close we never saw leaves an older end on the same fd.
        let stale: Vec<ConnId> = self
            .ends
            .keys()
            .filter(|k| k.tgid == id.tgid && k.fd == id.fd)
            .copied()
            .collect();
        for old in stale {
            self.close_end(old, c.ts_ns, sink);
        }
        // Ends wait unattached only until their first line: a few per session.
        if self.ends.len() >= self.cfg.max_sessions * 4 {
            self.stats.dropped_full += 1;
            self.untrack.push(id);
            return;
        }
        let peer = target
            .as_deref()
            .and_then(|t| procfs::inode_of(t, "pipe"))
            .and_then(|ino| peer_holding(&root, id.tgid, ino))
            .unwrap_or(0);
        self.ends.insert(
            id,
            PipeEnd {
                peer,
                attached: None,
                head: Vec::new(),
                next_pos: 0,
            },
        );
    }

    /// Attaches end `id` to its session once its first message names its side: the session of
    /// (process, peer, role), made when it is the first. Returns the session and stream, `None`
    /// while undecided; an end that is not JSON-RPC is untracked.
    fn attach(&mut self, id: ConnId, dir: Direction) -> Option<(SessionKey, Stream)> {
        let end = self.ends.get_mut(&id)?;
        if let Some(a) = end.attached {
            return Some(a);
        }
        let stream = match writer_side(&end.head) {
            Side::Undecided => return None,
            Side::NotJsonRpc => {
                self.ends.remove(&id);
                self.stats.not_jsonrpc += 1;
                self.untrack.push(id);
                return None;
            }
            Side::Client => Stream::Request,
            Side::Server => Stream::Response,
        };
        // Writing the client's messages or reading the server's: this process is the client.
        let client = matches!(
            (stream, dir),
            (Stream::Request, Direction::Egress) | (Stream::Response, Direction::Ingress)
        );
        let key = SessionKey {
            tgid: id.tgid,
            peer: end.peer,
            server: !client,
        };
        if !self.sessions.contains_key(&key) {
            if self.sessions.len() >= self.cfg.max_sessions {
                self.ends.remove(&id);
                self.stats.dropped_full += 1;
                self.untrack.push(id);
                return None;
            }
            let role = if client { Role::Client } else { Role::Server };
            match role {
                Role::Server => self.stats.sessions_server += 1,
                Role::Client => self.stats.sessions_client += 1,
            }
            let process = self.processes.get(id.tgid);
            self.sessions.insert(
                key,
                Session {
                    id,
                    role,
                    process,
                    decoder: McpStdio::new(self.cfg.max_line_bytes),
                    ends: 0,
                    seq: 0,
                    answers_seen: false,
                },
            );
        }
        let s = self.sessions.get_mut(&key)?;
        s.ends += 1;
        s.answers_seen |= stream == Stream::Response;
        let end = self.ends.get_mut(&id)?;
        end.attached = Some((key, stream));
        Some((key, stream))
    }

    fn data(&mut self, event: &Event, d: &DataEvent, sink: &mut dyn Sink) {
        let Some(end) = self.ends.get_mut(&d.conn) else {
            return;
        };
        // Bytes already seen (a replayed slice) are cut; a jump forward is a gap.
        let mut payload = &d.payload[..];
        let mut missing = 0;
        match d.kind {
            DataKind::Bytes => {
                if d.pos > end.next_pos {
                    missing = d.pos - end.next_pos;
                } else if d.pos < end.next_pos {
                    let seen = usize::try_from(end.next_pos - d.pos).unwrap_or(usize::MAX);
                    payload = payload.get(seen..).unwrap_or_default();
                }
                end.next_pos = end.next_pos.max(d.pos + d.payload.len() as u64);
            }
            DataKind::Truncated { missing: m } => {
                missing = m;
                end.next_pos = end.next_pos.max(d.pos + m);
            }
            // The other end closed: this session ends with its pipes' close or its exit.
            DataKind::Eof | DataKind::Reset => {}
        }
        let fed = if end.attached.is_none() {
            if missing > 0 {
                // The first message's start is lost: its side cannot be told.
                end.head.clear();
            }
            let room = SIDE_PEEK.saturating_sub(end.head.len());
            end.head
                .extend_from_slice(&payload[..payload.len().min(room)]);
            // The decoder gets every byte from the first: the held head, then the rest.
            let rest = &payload[payload.len().min(room)..];
            match self.attach(d.conn, d.direction) {
                Some(a) => {
                    let head = self
                        .ends
                        .get_mut(&d.conn)
                        .map(|e| std::mem::take(&mut e.head))
                        .unwrap_or_default();
                    Some((a, Cow::Owned([head, rest.to_vec()].concat()), 0))
                }
                None => None,
            }
        } else {
            end.attached.map(|a| (a, Cow::Borrowed(payload), missing))
        };
        let Some(((key, stream), bytes, missing)) = fed else {
            sink.raw(event, None);
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        sink.raw(event, Some(&s.view()));
        if missing > 0 {
            s.decoder.gap(stream, missing, &mut self.errors);
        }
        self.stats.captured_bytes += bytes.len() as u64;
        let before = s.decoder.buffered_bytes();
        if !bytes.is_empty() {
            s.decoder
                .feed(stream, &bytes, d.ts_ns, &mut self.out, &mut self.errors);
        }
        self.buffered = (self.buffered + s.decoder.buffered_bytes()).saturating_sub(before);
        let over = self.buffered > self.cfg.max_buffered_bytes;
        self.emit(key, sink);
        if over {
            self.shed(key, d.ts_ns, sink);
            return;
        }
        let not_jsonrpc = self
            .sessions
            .get(&key)
            .is_some_and(|s| s.decoder.recognition() == Recognition::NotJsonRpc);
        if not_jsonrpc {
            self.drop_session(key);
        }
    }

    /// Sends the finished exchanges and decode errors of session `key` to the sink.
    fn emit(&mut self, key: SessionKey, sink: &mut dyn Sink) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut seq = s.seq;
        let view = s.view();
        for e in self.errors.drain(..) {
            sink.decode_error(&view, &e);
        }
        for ex in self.out.drain(..) {
            seq += 1;
            sink.done(&view, seq, &ex);
        }
        s.seq = seq;
    }

    /// The session `key` passed the memory bound: untracked, its waiting requests end
    /// incomplete (the capture let them go; not the server's failure).
    fn shed(&mut self, key: SessionKey, ts_ns: u64, sink: &mut dyn Sink) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        self.stats.shed += 1;
        self.buffered = self.buffered.saturating_sub(s.decoder.buffered_bytes());
        for id in self.ends_of(key) {
            self.ends.remove(&id);
            self.untrack.push(id);
        }
        s.answers_seen = false;
        self.end_session(s, ts_ns, sink);
    }

    /// Ends a session taken out of the table: its waiting requests go to the sink, failed
    /// `server_closed`, or incomplete when its answers could not be seen (that end was never
    /// captured, or the session was shed).
    fn end_session(&mut self, s: Session, ts_ns: u64, sink: &mut dyn Sink) {
        let Session {
            id,
            role,
            process,
            mut decoder,
            mut seq,
            answers_seen,
            ..
        } = s;
        if !answers_seen {
            // What waits is the capture's loss, not the server's failure.
            decoder.gap(Stream::Response, 0, &mut Vec::new());
        }
        decoder.finish(ts_ns, &mut self.out);
        let view = view_of(id, role, &process);
        for ex in self.out.drain(..) {
            seq += 1;
            sink.done(&view, seq, &ex);
        }
    }

    /// The ends attached to session `key`.
    fn ends_of(&self, key: SessionKey) -> Vec<ConnId> {
        self.ends
            .iter()
            .filter(|(_, e)| e.attached.is_some_and(|(k, _)| k == key))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A session whose bytes were not JSON-RPC: every end is untracked and forgotten.
    fn drop_session(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.remove(&key) {
            self.buffered = self.buffered.saturating_sub(s.decoder.buffered_bytes());
        }
        for id in self.ends_of(key) {
            self.ends.remove(&id);
            self.stats.not_jsonrpc += 1;
            self.untrack.push(id);
        }
    }

    /// Pipe end `id` closed (or its process exited): its session ends with its last end.
    fn close_end(&mut self, id: ConnId, ts_ns: u64, sink: &mut dyn Sink) {
        let Some(end) = self.ends.remove(&id) else {
            return;
        };
        let Some((key, _)) = end.attached else {
            return;
        };
        let last = match self.sessions.get_mut(&key) {
            Some(s) => {
                s.ends = s.ends.saturating_sub(1);
                s.ends == 0
            }
            None => false,
        };
        if !last {
            return;
        }
        if let Some(s) = self.sessions.remove(&key) {
            self.buffered = self.buffered.saturating_sub(s.decoder.buffered_bytes());
            self.end_session(s, ts_ns, sink);
        }
    }
}

/// The process at the other end of `tgid`'s pipe `ino`: a child (the MCP server it launched) or
/// its parent (the client that launched it) holding the same pipe.
fn peer_holding(root: &std::path::Path, tgid: u32, ino: u64) -> Option<u32> {
    procfs::children(root, tgid)
        .into_iter()
        .chain(procfs::ppid(root, tgid))
        .find(|&p| procfs::holds_pipe(root, p, ino))
}

#[cfg(test)]
#[path = "stdio_tests.rs"]
mod tests;
