//! Root tests of the numbers users trust under stress: junk cannot crowd out real model names, a
//! server already blocked in `accept4()` or `read()` when the agent starts has its next exchange
//! counted exactly, and a server the OOM killer takes mid-request is `out_of_memory`, not
//! `server_closed`. Every comparison happens once, after the agent is quiescent.
//!
//! Needs root, BPF and the release agent (`LLM_OBSERVER_BIN`); under `CI=true` a missing piece
//! fails the test instead of skipping it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llm_observer_tests::harness::{
    expect::{Expected, wait_for_expected},
    guard,
    http::KeepAlive,
    quiesce::wait_quiescent,
    stack::{Agent, EmulatorProc},
    wire::{completion, post},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(30);

fn ready() -> bool {
    match guard::agent_missing() {
        Some(why) => guard::skip_or_fail::<()>(&why).is_some(),
        None => true,
    }
}

/// Reads one request (head + Content-Length body) with `read`, whatever syscall the caller parks
/// in first.
fn read_request(mut first: Vec<u8>, fd: i32) -> Vec<u8> {
    loop {
        if let Some(end) = first.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&first[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if first.len() >= end + 4 + len {
                return first;
            }
        }
        first.extend(raw_read(fd));
    }
}

/// One `read(2)` on `fd` (not `recvfrom`, which std's TcpStream uses): the issue's case.
fn raw_read(fd: i32) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `buf` is a live, writable buffer of the length passed.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0, "read on the server socket: {n}");
    buf.truncate(n as usize);
    buf
}

fn gettid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Waits until thread `tid` of this process is blocked in syscall `nr` (from /proc, no sleeps
/// standing in for it).
fn wait_blocked_in(tid: u32, nr: i64) {
    let path = format!("/proc/self/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            == Some(nr)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "thread {tid} never blocked in syscall {nr}: {text}"
        );
        std::thread::yield_now();
    }
}

fn exactly_one_each_view(model: &str) -> Expected {
    Expected::new()
        .exactly(
            "llm_requests_total",
            &[("model", model), ("status", "2xx")],
            1.0,
        )
        .exactly("llm_prompt_tokens_total", &[("model", model)], 3.0)
        .exactly("llm_response_tokens_total", &[("model", model)], 2.0)
        .exactly(
            "llm_client_requests_total",
            &[("model", model), ("status", "2xx")],
            1.0,
        )
}

#[test]
fn a_server_blocked_in_accept_at_start_counts_its_next_connection() {
    if !ready() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let model = format!("blocked-accept:{}", addr.port());
    let (tid_tx, tid_rx) = mpsc::channel();
    let served = model.clone();
    let server = std::thread::spawn(move || {
        tid_tx.send(gettid()).expect("tid");
        // Parked in accept4() before the agent exists.
        let (mut conn, _) = listener.accept().expect("accept");
        let req = read_request(Vec::new(), conn.as_raw_fd());
        assert!(req.starts_with(b"POST /v1/chat/completions"));
        conn.write_all(&completion(&served)).expect("respond");
    });
    let tid = tid_rx.recv().expect("tid");
    wait_blocked_in(tid, libc::SYS_accept4);
    let agent = Agent::start(&[]).expect("agent");
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(&post(&model)).expect("request");
    let mut resp = Vec::new();
    server.join().expect("server thread");
    client.read_to_end(&mut resp).expect("response");
    assert!(resp.starts_with(b"HTTP/1.1 200 OK"));
    drop(client);
    wait_for_expected(agent.addr(), &exactly_one_each_view(&model), SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
}

#[test]
fn a_server_blocked_in_read_at_start_counts_its_next_request() {
    if !ready() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let model = format!("blocked-read:{}", addr.port());
    let mut client = TcpStream::connect(addr).expect("connect");
    let (mut conn, _) = listener.accept().expect("accept");
    let (tid_tx, tid_rx) = mpsc::channel();
    let served = model.clone();
    let fd = conn.as_raw_fd();
    let server = std::thread::spawn(move || {
        tid_tx.send(gettid()).expect("tid");
        // Parked in read() on an idle keep-alive connection before the agent exists.
        let first = raw_read(fd);
        let req = read_request(first, fd);
        assert!(req.starts_with(b"POST /v1/chat/completions"));
        conn.write_all(&completion(&served)).expect("respond");
        conn
    });
    let tid = tid_rx.recv().expect("tid");
    wait_blocked_in(tid, libc::SYS_read);
    let agent = Agent::start(&[]).expect("agent");
    client.write_all(&post(&model)).expect("request");
    let conn = server.join().expect("server thread");
    drop(conn);
    let mut resp = Vec::new();
    client.read_to_end(&mut resp).expect("response");
    assert!(resp.starts_with(b"HTTP/1.1 200 OK"));
    drop(client);
    wait_for_expected(agent.addr(), &exactly_one_each_view(&model), SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
}

#[test]
fn ten_thousand_junk_models_leave_real_models_named() {
    if !ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "0", "--token-interval-ms", "0"])
        .expect("emulator");
    let port = emu.addr().port().to_string();
    let agent = Agent::start(&["--port", &port]).expect("agent");
    let real = format!("e2e-real:{port}");
    let t = Duration::from_secs(30);
    // The emulator answers `err-404:<anything>` with HTTP 404, as servers answer unknown models;
    // 100 keep-alive connections of 100 requests each.
    for c in 0..100 {
        let mut conn = KeepAlive::connect(emu.addr(), t).expect("connect");
        for i in 0..100 {
            let body = json!({"model": format!("err-404:junk-{c}-{i}"), "max_tokens": 1,
                              "messages": [{"role": "user", "content": "x"}]});
            let r = conn
                .post_json("/v1/chat/completions", &body, t)
                .expect("junk");
            assert_eq!(r.status, 404);
        }
    }
    let mut conn = KeepAlive::connect(emu.addr(), t).expect("connect");
    for _ in 0..3 {
        let body = json!({"model": real, "max_tokens": 2, "messages": [{"role": "user", "content": "a b"}]});
        let r = conn
            .post_json("/v1/chat/completions", &body, t)
            .expect("real");
        assert_eq!(r.status, 200);
    }
    drop(conn);
    let expected = Expected::new()
        .exactly("llm_requests_total", &[("model", real.as_str())], 3.0)
        .exactly(
            "llm_requests_total",
            &[("model", "other"), ("status", "4xx")],
            10_000.0,
        )
        .exactly(
            "llm_client_requests_total",
            &[("model", real.as_str())],
            3.0,
        )
        .exactly(
            "llm_client_requests_total",
            &[("model", "other"), ("status", "4xx")],
            10_000.0,
        );
    let last = wait_for_expected(agent.addr(), &expected, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
    let junk = last
        .samples
        .iter()
        .filter(|s| s.labels.values().any(|v| v.contains("junk-")))
        .count();
    assert_eq!(junk, 0, "junk model names left series behind");
}

/// A python3 server that answers one streamed chat request's head and first token, then allocates
/// memory until its cgroup's limit makes the OOM killer take it.
const HOG: &str = r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
data = b""
while b"\r\n\r\n" not in data:
    data += c.recv(65536)
head, _, body = data.partition(b"\r\n\r\n")
n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
while len(body) < n:
    body += c.recv(65536)
chunk = b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
          + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
hog = []
while True:
    hog.append(bytearray(16 << 20))
"#;

/// A cgroup v1 memory group (this VM mounts v1 controllers), removed on drop.
struct MemCgroup(std::path::PathBuf);

impl MemCgroup {
    fn new(limit: u64) -> Option<MemCgroup> {
        let root = std::path::Path::new("/sys/fs/cgroup/memory");
        if !root.join("cgroup.procs").exists() {
            return None;
        }
        let dir = root.join(format!("llm-observer-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
        // No swap to escape into, where the kernel offers the knob.
        let _ = std::fs::write(dir.join("memory.swappiness"), "0");
        Some(MemCgroup(dir))
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_server_killed_by_the_oom_killer_is_out_of_memory() {
    if !ready() {
        return;
    }
    let Some(cg) = MemCgroup::new(96 << 20) else {
        println!("skipped: this kernel has no cgroup v1 memory controller to run an OOM kill in");
        return;
    };
    let agent = Agent::start(&[]).expect("agent");
    let mut hog = Command::new("python3")
        .args(["-c", HOG])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    cg.add(hog.id());
    let mut port = String::new();
    let mut out = hog.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    while out.read(&mut byte).expect("port line") == 1 && byte[0] != b'\n' {
        port.push(byte[0] as char);
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().expect("port");
    let model = format!("oom:{}", addr.port());
    let mut client = TcpStream::connect(addr).expect("connect");
    let body = json!({"model": model, "stream": true, "max_tokens": 100,
                      "messages": [{"role": "user", "content": "a b c"}]})
    .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(req.as_bytes()).expect("request");
    // The server streams a token, then dies: the response ends with the connection.
    let mut resp = Vec::new();
    let _ = client.read_to_end(&mut resp);
    assert!(resp.starts_with(b"HTTP/1.1 200 OK"), "{resp:?}");
    let status = hog.wait().expect("hog exits");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the OOM killer ends the server with SIGKILL"
    );
    let expected = Expected::new()
        .exactly(
            "llm_inference_errors_total",
            &[
                ("model", "other"),
                ("process", "python3"),
                ("type", "out_of_memory"),
            ],
            1.0,
        )
        .exactly(
            "llm_inference_errors_total",
            &[("process", "python3"), ("type", "server_closed")],
            0.0,
        )
        .exactly("llm_oom_kills_total", &[("process", "python3")], 1.0);
    wait_for_expected(agent.addr(), &expected, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
}

/// VmRSS of `pid`, bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// `n` connections that each send a 4 MiB-announced JSON POST to `path`, all but its last byte,
/// and stay open; a server thread per connection reads and discards. Returns once every byte
/// sent has been read by the servers, with the connections still open.
fn held_bodies(path: &str, n: usize) -> (Vec<TcpStream>, Vec<std::thread::JoinHandle<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let len = 4 * 1024 * 1024;
    let (read_tx, read_rx) = mpsc::channel();
    let servers = std::thread::spawn(move || {
        let mut readers = Vec::new();
        for _ in 0..n {
            let (mut conn, _) = listener.accept().expect("accept");
            let tx = read_tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            total += k;
                            let _ = tx.send(k);
                        }
                    }
                }
                let _ = total;
            }));
        }
        readers
    });
    let body = vec![b' '; len - 1];
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.write_all(head.as_bytes()).expect("head");
        c.write_all(b"{").expect("body start");
        c.write_all(&body[1..]).expect("body");
        clients.push(c);
    }
    let want = n * (head.len() + len - 1);
    let mut got = 0;
    while got < want {
        got += read_rx.recv().expect("server reads");
    }
    (clients, servers.join().expect("servers"))
}

#[test]
fn buffered_bytes_stay_within_one_budget_and_uploads_cost_nothing() {
    if !ready() {
        return;
    }
    let budget = 32u64 * 1024 * 1024;
    let agent = Agent::start(&["--max-buffered-bytes", &budget.to_string()]).expect("agent");
    let before = rss_bytes(agent.proc.id());
    // 150 uploads of 4 MiB JSON to a path no API uses: framed, never buffered.
    let (uploads, readers) = held_bodies("/upload", 150);
    let e = wait_quiescent(agent.addr(), SETTLE).expect("quiescent");
    let after_uploads = rss_bytes(agent.proc.id());
    let buffered = e.sum("llm_observer_buffered_bytes", &[]);
    let shed = e.sum("llm_observer_dropped_total", &[("stage", "memory_budget")]);
    println!(
        "| 150 × 4 MiB JSON POST /upload held open | agent RSS {} → {} MiB | buffered {buffered} B | shed {shed} |",
        before >> 20,
        after_uploads >> 20
    );
    assert!(
        buffered < 1024.0 * 1024.0,
        "uploads were buffered: {buffered} bytes"
    );
    assert_eq!(shed, 0.0);
    drop(uploads);
    for r in readers {
        r.join().expect("reader");
    }
    // 150 chat requests of 4 MiB each (API candidates, both views buffer them): one budget.
    let (chats, readers) = held_bodies("/v1/chat/completions", 150);
    let e = wait_quiescent(agent.addr(), SETTLE).expect("quiescent");
    let after_chats = rss_bytes(agent.proc.id());
    let buffered = e.sum("llm_observer_buffered_bytes", &[]);
    let shed = e.sum("llm_observer_dropped_total", &[("stage", "memory_budget")]);
    println!(
        "| 150 × 4 MiB chat bodies held open, budget 32 MiB | agent RSS {} MiB | buffered {buffered} B | shed {shed} connections |",
        after_chats >> 20
    );
    assert!(buffered <= budget as f64, "{buffered} > {budget}");
    // 300 connection ends (both views) hold 1.2 GiB of bodies; at most 32 MiB fit.
    assert!(shed >= 250.0, "only {shed} connections shed");
    // The documented bound: the budget plus the agent's own working set.
    let bound = budget + 96 * 1024 * 1024;
    assert!(after_chats < bound, "agent RSS {after_chats} above {bound}");
    assert!(
        after_uploads < bound,
        "agent RSS {after_uploads} above {bound}"
    );
    drop(chats);
    for r in readers {
        r.join().expect("reader");
    }
}
