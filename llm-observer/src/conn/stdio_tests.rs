//! The stdio table driven by the events the kernel sends for JSON-RPC pipes, over a fake /proc
//! whose fd links name the pipes: sessions grouped by the process at the other end, roles from
//! each end's first message, not-JSON-RPC ends untracked, a missing answers' end not blamed on
//! the server.

use std::collections::HashMap;

use llm_observer_common::Syscall;
use llm_observer_decode::{DecodeError, ErrorKind, Exchange, Incomplete, Role, Unsupported};

use super::{StdioConfig, StdioTable};
use crate::attribution::fakeproc::FakeProc;
use crate::capture::{
    ConnId, DataEvent, DataKind, Direction, Event, KernelRole, event::ConnEventData,
};
use crate::sinks::sink::{ConnView, Sink};

#[derive(Default)]
struct Recorder {
    /// (session id, role, peer is stdio, exchange).
    done: Vec<(ConnId, Role, bool, Exchange)>,
    errors: Vec<&'static str>,
}

impl Sink for Recorder {
    fn started(&mut self, _: &ConnView<'_>, _: u64, _: &llm_observer_decode::llm::RequestSummary) {}
    fn first_token(&mut self, _: &ConnView<'_>, _: u64, _: u64) {}
    fn done(&mut self, conn: &ConnView<'_>, _seq: u64, exchange: &Exchange) {
        self.done
            .push((conn.id, conn.role, conn.stdio, exchange.clone()));
    }
    fn decode_error(&mut self, _: &ConnView<'_>, error: &DecodeError) {
        self.errors.push(error.reason());
    }
    fn unsupported(&mut self, _: &ConnView<'_>, _: Unsupported) {}
}

/// A fake /proc with pipes, and the events of their ends (positions kept per end).
struct World {
    proc: FakeProc,
    table: StdioTable,
    sink: Recorder,
    now: u64,
    pos: HashMap<ConnId, u64>,
    /// (pid, fd, generation) of every end announced.
    announced: Vec<(u32, i32, u64)>,
}

impl World {
    fn new(tag: &str) -> World {
        World::with(tag, StdioConfig::default())
    }

    fn with(tag: &str, cfg: StdioConfig) -> World {
        let proc = FakeProc::new(tag);
        let table = StdioTable::new(StdioConfig {
            proc_root: proc.0.clone(),
            ..cfg
        });
        World {
            proc,
            table,
            sink: Recorder::default(),
            now: 1_000_000_000,
            pos: HashMap::new(),
            announced: Vec::new(),
        }
    }

    fn process(&self, pid: u32, ppid: u32, comm: &str) {
        self.proc.put(pid, ppid, comm, comm, 1, "0::/\n");
        std::fs::create_dir_all(self.proc.0.join(pid.to_string()).join("fd")).unwrap();
    }

    /// `pid`'s `fd` is the pipe `ino` (or `target`, when it is not a pipe).
    fn fd(&self, pid: u32, fd: i32, target: &str) {
        let link = self
            .proc
            .0
            .join(pid.to_string())
            .join("fd")
            .join(fd.to_string());
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    /// The kernel announces `pid`'s `fd` (again: the same id).
    fn open(&mut self, pid: u32, fd: i32) -> ConnId {
        self.now += 1_000_000;
        let generation = match self.announced.iter().find(|a| a.0 == pid && a.1 == fd) {
            Some(a) => a.2,
            None => {
                self.announced.push((pid, fd, self.now));
                self.now
            }
        };
        let id = ConnId {
            tgid: pid,
            fd,
            generation,
        };
        let ev = Event::Open(ConnEventData {
            conn: id,
            tid: pid,
            ts_ns: self.now,
            role: KernelRole::Pipe,
            peer: None,
            listen_fd: None,
            inherited_from: None,
            passed_fd: None,
            ended_at: [0, 0],
        });
        assert!(self.table.apply(&ev, &mut self.sink));
        id
    }

    fn bytes(&mut self, id: ConnId, dir: Direction, text: &str) {
        self.now += 1_000_000;
        let pos = self.pos.entry(id).or_default();
        let ev = Event::Data(DataEvent {
            conn: id,
            tid: id.tgid,
            cpu: 0,
            ts_ns: self.now,
            direction: dir,
            syscall: match dir {
                Direction::Egress => Syscall::Write,
                Direction::Ingress => Syscall::Read,
            },
            pos: *pos,
            msg_len: text.len() as u64,
            kind: DataKind::Bytes,
            tls: false,
            payload: text.as_bytes().into(),
        });
        *pos += text.len() as u64;
        self.table.apply(&ev, &mut self.sink);
    }

    fn exit(&mut self, pid: u32) {
        self.now += 1_000_000;
        let ev = Event::ProcExit {
            tgid: pid,
            ts_ns: self.now,
        };
        // Passed on: the sockets' table sees exits too.
        assert!(!self.table.apply(&ev, &mut self.sink));
    }
}

fn request(id: u32, tool: &str) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\"}}}}\n"
    )
}

fn answer(id: u32, is_error: bool) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[],\"isError\":{is_error}}}}}\n"
    )
}

/// One client running two MCP servers at once: both sessions use id 1, and each answer goes to
/// its own request (grouped by the child holding the pipe's other end). The servers' own views
/// are decoded too, their wire on fds 3 and 4 (where the `mcp` SDK moves it).
#[test]
fn two_servers_of_one_client_keep_their_ids_apart() {
    let mut w = World::new("stdio-two");
    w.process(100, 1, "agent");
    w.process(200, 100, "weather");
    w.process(300, 100, "files");
    for (fd, ino) in [(7, 11), (8, 12), (9, 21), (10, 22)] {
        w.fd(100, fd, &format!("pipe:[{ino}]"));
    }
    for (pid, a, b) in [(200, 11, 12), (300, 21, 22)] {
        w.fd(pid, 3, &format!("pipe:[{a}]"));
        w.fd(pid, 4, &format!("pipe:[{b}]"));
    }
    let (to_weather, from_weather) = (w.open(100, 7), w.open(100, 8));
    let (to_files, from_files) = (w.open(100, 9), w.open(100, 10));
    let (weather_in, weather_out) = (w.open(200, 3), w.open(200, 4));

    w.bytes(to_weather, Direction::Egress, &request(1, "forecast"));
    w.bytes(weather_in, Direction::Ingress, &request(1, "forecast"));
    w.bytes(to_files, Direction::Egress, &request(1, "read"));
    // The files server fails its call; the weather server succeeds.
    w.bytes(from_files, Direction::Ingress, &answer(1, true));
    w.bytes(weather_out, Direction::Egress, &answer(1, false));
    w.bytes(from_weather, Direction::Ingress, &answer(1, false));

    assert!(w.sink.errors.is_empty(), "{:?}", w.sink.errors);
    let seen: Vec<(u32, Role, bool, String, Option<ErrorKind>)> = w
        .sink
        .done
        .iter()
        .map(|(id, role, stdio, ex)| {
            let tool = ex
                .mcp
                .as_ref()
                .and_then(|m| m.name.clone())
                .unwrap_or_default();
            (id.tgid, *role, *stdio, tool, ex.error)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                100,
                Role::Client,
                true,
                "read".into(),
                Some(ErrorKind::ToolError)
            ),
            (200, Role::Server, true, "forecast".into(), None),
            (100, Role::Client, true, "forecast".into(), None),
        ]
    );
    // Three sessions: the client's two, the weather server's one.
    let st = w.table.stats();
    assert_eq!((st.sessions_client, st.sessions_server), (2, 1));
    assert_eq!(w.table.len(), 3);
    w.exit(100);
    w.exit(200);
    assert!(w.table.is_empty());
    assert!(w.table.take_untrack().is_empty());
}

/// Ends whose first line only looked like JSON-RPC, and an fd that is no pipe, are untracked and
/// counted; nothing reaches the sink.
#[test]
fn ends_that_are_not_jsonrpc_are_untracked() {
    let mut w = World::new("stdio-not");
    w.process(100, 1, "logger");
    w.fd(100, 5, "pipe:[31]");
    w.fd(100, 6, "/var/log/app.json");
    let log = w.open(100, 5);
    w.bytes(
        log,
        Direction::Egress,
        "{\"id\":\"abc\",\"level\":\"info\"}\n",
    );
    let file = w.open(100, 6);
    assert_eq!(w.table.take_untrack(), vec![log, file]);
    assert_eq!(w.table.stats().not_jsonrpc, 2);
    assert!(w.sink.done.is_empty() && w.sink.errors.is_empty());
    assert!(w.table.is_empty());
}

/// A client whose answers' end was never announced (not captured): its waiting request ends
/// incomplete at exit, not as the server's `server_closed`. With the answers' end seen, the
/// same unanswered request is the server's failure.
#[test]
fn a_missing_answers_end_is_not_the_servers_failure() {
    // Agent 100 runs server 200 on its stdin and stdout.
    let launched = |tag: &str| {
        let w = World::new(tag);
        w.process(100, 1, "agent");
        w.process(200, 100, "server");
        for (pid, fd, ino) in [(100, 7, 41), (100, 8, 42), (200, 0, 41), (200, 1, 42)] {
            w.fd(pid, fd, &format!("pipe:[{ino}]"));
        }
        w
    };
    let mut w = launched("stdio-half");
    let to = w.open(100, 7);
    w.bytes(to, Direction::Egress, &request(1, "slow"));
    w.exit(100);
    let (_, _, _, ex) = &w.sink.done[0];
    assert_eq!(
        (ex.incomplete, ex.error),
        (Some(Incomplete::CaptureGap), None)
    );

    let mut w = launched("stdio-whole");
    let (to, from) = (w.open(100, 7), w.open(100, 8));
    w.bytes(to, Direction::Egress, &request(1, "fast"));
    w.bytes(from, Direction::Ingress, &answer(1, false));
    w.bytes(to, Direction::Egress, &request(2, "slow"));
    w.exit(100);
    let errors: Vec<_> = w
        .sink
        .done
        .iter()
        .map(|d| (d.3.incomplete, d.3.error))
        .collect();
    assert_eq!(
        errors,
        vec![(None, None), (None, Some(ErrorKind::ServerClosed))]
    );
}

/// Unfinished lines of all sessions together are bounded: the session whose bytes pass the
/// bound is shed (untracked, its waiting request incomplete, counted), and another session goes
/// on. A second announcement of the same end (two threads' first calls) changes nothing.
#[test]
fn unfinished_lines_are_bounded_and_a_repeated_announcement_is_ignored() {
    let mut w = World::with(
        "stdio-budget",
        StdioConfig {
            max_buffered_bytes: 1000,
            ..StdioConfig::default()
        },
    );
    w.process(100, 1, "agent");
    w.process(200, 100, "big");
    w.process(300, 100, "small");
    for (fd, ino) in [(7, 51), (8, 52), (9, 61), (10, 62)] {
        w.fd(100, fd, &format!("pipe:[{ino}]"));
    }
    for (pid, a, b) in [(200, 51, 52), (300, 61, 62)] {
        w.fd(pid, 0, &format!("pipe:[{a}]"));
        w.fd(pid, 1, &format!("pipe:[{b}]"));
    }
    let (to_big, from_big) = (w.open(100, 7), w.open(100, 8));
    assert_eq!(w.open(100, 7), to_big);
    let (to_small, from_small) = (w.open(100, 9), w.open(100, 10));
    w.bytes(to_big, Direction::Egress, &request(1, "dump"));
    w.bytes(to_small, Direction::Egress, &request(1, "ping"));
    // An answer that never ends its line, past the bound.
    let head = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":\"";
    w.bytes(
        from_big,
        Direction::Ingress,
        &format!("{head}{}", "x".repeat(2000)),
    );
    assert_eq!(w.table.stats().shed, 1);
    let mut untracked = w.table.take_untrack();
    untracked.sort();
    assert_eq!(untracked, vec![to_big, from_big]);
    let (_, _, _, ex) = &w.sink.done[0];
    assert_eq!(
        (ex.incomplete, ex.error),
        (Some(Incomplete::CaptureGap), None)
    );
    // The other session is untouched.
    w.bytes(from_small, Direction::Ingress, &answer(1, false));
    let (_, _, _, ex) = &w.sink.done[1];
    assert_eq!((ex.incomplete, ex.error), (None, None));
    assert_eq!(w.table.len(), 1);
}
