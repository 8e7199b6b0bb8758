//! Root BPF integration tests of the capture layer: `Capture::load` with the real eBPF programs,
//! real loopback sockets made by this process, and exact assertions on the decoded ring events
//! (bytes, positions, syscalls, roles, generations, markers, kernel counters).
//!
//! They need root and a kernel with syscall tracepoints, and an agent built with the eBPF object
//! embedded (bpf-linker on PATH at build time):
//!
//! ```text
//! PATH=$HOME/.cache/llm-observer/bpf-linker-0.13.0-llvm22/bin:$PATH \
//!   cargo test -p llm-observer-tests --test capture -- --test-threads=1 --nocapture
//! ```
//!
//! Without root or without the object a test prints `skipping: <reason>` and passes, unless
//! `CI=true`, where it fails: CI must prove the capture, not skip it.
//!
//! Every test captures this process only (`target_pid`), so tests in one process would see each
//! other's traffic: they filter events to the fds and connections they made themselves (learnt from
//! `Event::Open`), and they also run one at a time under a lock, so that the kernel's counters
//! (lost events, truncated bytes) are theirs alone. Every wait polls the ring with a deadline.

#[path = "support/capture/mod.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llm_observer::capture::procfs::ExistingSocket;
use llm_observer::capture::{
    ATTACH_MODE, CaptureConfig, ConnId, DataEvent, DataKind, Direction, Event, KernelRole,
};
use llm_observer_common::{MAX_CAPTURE_PER_CALL, Syscall};
use llm_observer_tests::harness::http;
use llm_observer_tests::harness::process::{Proc, run_to_end};
use llm_observer_tests::harness::stack::path_from_env;

use support::{
    Call, Collector, Live, Pair, RECV_FLAVORS, RecvFlavor, SEND_FLAVORS, SendFlavor, calls_from,
    check_stream, concat, dump, own_process_config, recv_exact, recv_once, send_all,
};

/// Bound on how long captured events may take to show up in the ring (they are submitted when the
/// syscall returns, so this is only ever reached when something is broken).
const SETTLE: Duration = Duration::from_secs(10);

fn pid() -> u32 {
    std::process::id()
}

/// Waits for the Open events of both ends of `pair` and checks them: the connect()ed end is a
/// client whose peer is the listener, the accept()ed end a server whose peer is the client.
fn opened(c: &mut Collector, pair: &Pair) -> (ConnId, ConnId) {
    let (cfd, sfd) = (pair.cfd(), pair.sfd());
    c.wait_until(SETTLE, |c| {
        !c.opens(pid(), cfd).is_empty() && !c.opens(pid(), sfd).is_empty()
    })
    .expect("Open events of both ends");
    let client = c.open_of(pid(), cfd).expect("client Open");
    let server = c.open_of(pid(), sfd).expect("server Open");
    assert_eq!(client.role, KernelRole::Client, "connected end: {client:?}");
    assert_eq!(server.role, KernelRole::Server, "accepted end: {server:?}");
    assert_eq!(
        client.peer,
        Some(pair.listener.local_addr().expect("listener addr")),
        "client Open peer = connect()'s address"
    );
    assert_eq!(
        server.peer,
        Some(pair.client.local_addr().expect("client addr")),
        "server Open peer = accept()'s address"
    );
    assert_eq!((client.conn.tgid, client.conn.fd), (pid(), cfd));
    assert_eq!((server.conn.tgid, server.conn.fd), (pid(), sfd));
    (client.conn, server.conn)
}

/// Waits until `conn`'s `dir` stream holds `n` payload bytes.
fn wait_bytes(c: &mut Collector, streams: &[(ConnId, Direction, usize)]) {
    let r = c.wait_until(SETTLE, |c| {
        streams
            .iter()
            .all(|&(conn, dir, n)| c.bytes_len(conn, dir) >= n)
    });
    if let Err(e) = r {
        let mut msg = e;
        for &(conn, dir, n) in streams {
            msg.push_str(&format!(
                "\n{conn:?} {dir:?}: {} of {n} bytes\n{}",
                c.bytes_len(conn, dir),
                dump(&c.stream(conn, dir))
            ));
        }
        panic!("{msg}");
    }
}

fn assert_stream(
    c: &Collector,
    conn: ConnId,
    dir: Direction,
    calls: &[Call],
    cap: u64,
    sent: &[u8],
) {
    let events = c.stream(conn, dir);
    if let Err(e) = check_stream(&events, calls, cap, sent) {
        panic!("{conn:?} {dir:?}: {e}");
    }
}

// ---- 1. every syscall flavor ---------------------------------------------------------------

#[test]
fn every_syscall_flavor_is_captured_exactly() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    let (cfd, sfd) = (pair.cfd(), pair.sfd());

    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let (mut c_out, mut s_in, mut s_out, mut c_in) = (vec![], vec![], vec![], vec![]);
    for i in 0..SEND_FLAVORS.len() {
        // Request: client → server with send flavor i, received with recv flavor i.
        let (sf, rf) = (SEND_FLAVORS[i], RECV_FLAVORS[i]);
        let body = vec![b'a' + i as u8; 100 + 37 * i];
        let mut req = format!(
            "POST /c2s/{i}/{sf:?}/{rf:?} HTTP/1.1\r\nHost: capture.test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let sent = send_all(cfd, sf, &req).expect("client send");
        let (got, reads) = recv_exact(sfd, rf, req.len()).expect("server recv");
        assert_eq!(
            got, req,
            "round {i}: the socket itself delivered other bytes"
        );
        c_out.extend(sent.iter().map(|&n| (sf.syscall(), n)));
        s_in.extend(reads.iter().map(|&n| (rf.syscall(), n)));
        c2s.extend_from_slice(&req);

        // Response: server → client with other flavors, so each flavor is used by both roles.
        let (sf, rf) = (SEND_FLAVORS[(i + 3) % 6], RECV_FLAVORS[(i + 1) % 6]);
        let body = vec![b'A' + i as u8; 250 - 29 * i];
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nX-Round: {i}/{sf:?}/{rf:?}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        resp.extend_from_slice(&body);
        let sent = send_all(sfd, sf, &resp).expect("server send");
        let (got, reads) = recv_exact(cfd, rf, resp.len()).expect("client recv");
        assert_eq!(
            got, resp,
            "round {i}: the socket itself delivered other bytes"
        );
        s_out.extend(sent.iter().map(|&n| (sf.syscall(), n)));
        c_in.extend(reads.iter().map(|&n| (rf.syscall(), n)));
        s2c.extend_from_slice(&resp);
    }

    let c = &mut live.collector;
    wait_bytes(
        c,
        &[
            (client, Direction::Egress, c2s.len()),
            (server, Direction::Ingress, c2s.len()),
            (server, Direction::Egress, s2c.len()),
            (client, Direction::Ingress, s2c.len()),
        ],
    );
    let cap = u64::from(MAX_CAPTURE_PER_CALL);
    assert_stream(c, client, Direction::Egress, &calls_from(&c_out), cap, &c2s);
    assert_stream(c, server, Direction::Ingress, &calls_from(&s_in), cap, &c2s);
    assert_stream(c, server, Direction::Egress, &calls_from(&s_out), cap, &s2c);
    assert_stream(c, client, Direction::Ingress, &calls_from(&c_in), cap, &s2c);
    // Nothing on these fds under another generation, nothing undecodable.
    for fd in [cfd, sfd] {
        let stray: Vec<_> = c
            .data_on_fd(pid(), fd)
            .into_iter()
            .filter(|d| d.conn != client && d.conn != server)
            .collect();
        assert!(
            stray.is_empty(),
            "fd {fd}: events of another connection:\n{}",
            dump(&stray)
        );
    }
    assert!(c.errors.is_empty(), "undecodable records: {:?}", c.errors);
    println!(
        "flavors: {} request bytes in {} sends / {} recvs, {} response bytes in {} sends / {} recvs",
        c2s.len(),
        c_out.len(),
        s_in.len(),
        s2c.len(),
        s_out.len(),
        c_in.len()
    );
}

// ---- 2. large writes and the per-call cap --------------------------------------------------

/// An HTTP-looking head, then bytes that differ from their neighbours and from the same offset in
/// any other 4 KiB chunk, so a misplaced or repeated chunk cannot compare equal.
fn pattern(n: usize) -> Vec<u8> {
    let head = format!("POST /big HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    (0..n)
        .map(|i| head.get(i).copied().unwrap_or((i * 31 + i / 4096) as u8))
        .collect()
}

/// Writes each of `sizes` as one blocking write() from the client while a thread reads the server
/// end in ≤ 16 KiB read()s (so no read exceeds a 64 KiB cap). Returns (bytes, write calls, read
/// calls).
fn big_exchange(pair: &Pair, sizes: &[usize]) -> (Vec<u8>, Vec<usize>, Vec<usize>) {
    let total: usize = sizes.iter().sum();
    let data = pattern(total);
    let sfd = pair.sfd();
    std::thread::scope(|s| {
        // The peer must read concurrently: a 1 MiB write on loopback blocks until it is drained.
        let reader = s.spawn(move || {
            let mut got = Vec::with_capacity(total);
            let mut calls = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while got.len() < total {
                let want = buf.len().min(total - got.len());
                let n = recv_once(sfd, RecvFlavor::Read, &mut buf[..want]).expect("server read");
                assert!(n > 0, "EOF after {} of {total} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                calls.push(n);
            }
            (got, calls)
        });
        let mut writes = Vec::new();
        let mut off = 0;
        for &n in sizes {
            writes.extend(
                send_all(pair.cfd(), SendFlavor::Write, &data[off..off + n]).expect("write"),
            );
            off += n;
        }
        let (got, reads) = reader.join().expect("reader thread");
        assert!(got == data, "the socket itself delivered other bytes");
        (data, writes, reads)
    })
}

#[test]
fn one_mib_write_is_delivered_completely() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    let (data, writes, reads) = big_exchange(&pair, &[1 << 20]);
    let c = &mut live.collector;
    wait_bytes(
        c,
        &[
            (client, Direction::Egress, data.len()),
            (server, Direction::Ingress, data.len()),
        ],
    );
    let cap = u64::from(MAX_CAPTURE_PER_CALL);
    let wcalls = calls_from(
        &writes
            .iter()
            .map(|&n| (Syscall::Write, n))
            .collect::<Vec<_>>(),
    );
    let rcalls = calls_from(
        &reads
            .iter()
            .map(|&n| (Syscall::Read, n))
            .collect::<Vec<_>>(),
    );
    assert_stream(c, client, Direction::Egress, &wcalls, cap, &data);
    assert_stream(c, server, Direction::Ingress, &rcalls, cap, &data);
    let egress = c.stream(client, Direction::Egress);
    assert_eq!(
        concat(&egress),
        data,
        "egress payload concatenated = the 1 MiB written"
    );
    println!(
        "1 MiB: {} write call(s) {:?} → {} egress events; {} reads → {} ingress events; truncated {}",
        writes.len(),
        writes,
        egress.len(),
        reads.len(),
        c.stream(server, Direction::Ingress).len(),
        live.capture.kernel_stats().truncated_bytes
    );
    assert_eq!(live.capture.kernel_stats().truncated_bytes, 0);
}

#[test]
fn per_call_cap_truncates_with_exact_markers() {
    const CAP: u32 = 64 * 1024;
    let cfg = CaptureConfig {
        max_bytes_per_call: CAP,
        ..own_process_config()
    };
    let Some(mut live) = Live::start(&cfg) else {
        return;
    };
    let before = live.capture.kernel_stats().truncated_bytes;
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    // Over, far over, exactly at, one past, and under the cap.
    let sizes = [1 << 20, 200_000, 65_536, 65_537, 1_000];
    let (data, writes, reads) = big_exchange(&pair, &sizes);
    let cap = u64::from(CAP);
    let expected_trunc: u64 = writes.iter().map(|&n| (n as u64).saturating_sub(cap)).sum();
    let captured_out: usize = writes.iter().map(|&n| n.min(CAP as usize)).sum();
    let c = &mut live.collector;
    wait_bytes(
        c,
        &[
            (client, Direction::Egress, captured_out),
            (server, Direction::Ingress, data.len()),
        ],
    );
    // The markers come right after their call's bytes; wait for the last one too.
    let markers_expected = writes.iter().filter(|&&n| n as u64 > cap).count();
    c.wait_until(SETTLE, |c| {
        c.stream(client, Direction::Egress)
            .iter()
            .filter(|d| matches!(d.kind, DataKind::Truncated { .. }))
            .count()
            >= markers_expected
    })
    .expect("TRUNCATED markers");
    let wcalls = calls_from(
        &writes
            .iter()
            .map(|&n| (Syscall::Write, n))
            .collect::<Vec<_>>(),
    );
    let rcalls = calls_from(
        &reads
            .iter()
            .map(|&n| (Syscall::Read, n))
            .collect::<Vec<_>>(),
    );
    assert_stream(c, client, Direction::Egress, &wcalls, cap, &data);
    assert_stream(c, server, Direction::Ingress, &rcalls, cap, &data);
    let grown = live.capture.kernel_stats().truncated_bytes - before;
    println!(
        "64 KiB cap: writes {writes:?} → {markers_expected} TRUNCATED markers, truncated_bytes +{grown} (expected {expected_trunc})"
    );
    assert_eq!(
        grown, expected_trunc,
        "kernel_stats().truncated_bytes growth"
    );
}

// ---- 3. files, pipes, UDP are not captured --------------------------------------------------

#[test]
fn files_pipes_and_udp_are_not_captured() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    // HTTP-looking bytes everywhere, so only the "is it a tracked TCP socket" test can keep them out.
    let msg = b"POST /not-tcp HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    let mut watched: Vec<(&str, RawFd)> = Vec::new();

    let path = std::env::temp_dir().join(format!("llm-observer-capture-{}.txt", pid()));
    let mut file = std::fs::File::create(&path).expect("create temp file");
    file.write_all(msg).expect("file write");
    file.sync_all().expect("file sync");
    let mut back = Vec::new();
    std::fs::File::open(&path)
        .expect("reopen temp file")
        .read_to_end(&mut back)
        .expect("file read");
    assert_eq!(back, msg);
    watched.push(("file", file.as_raw_fd()));

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: valid 2-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: fresh fds from pipe(2), owned from here on (closed on drop).
    let (pr, pw) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    assert_eq!(
        send_all(pw.as_raw_fd(), SendFlavor::Write, msg).expect("pipe write"),
        [msg.len()]
    );
    let (got, _) = recv_exact(pr.as_raw_fd(), RecvFlavor::Read, msg.len()).expect("pipe read");
    assert_eq!(got, msg);
    watched.push(("pipe read end", pr.as_raw_fd()));
    watched.push(("pipe write end", pw.as_raw_fd()));

    let a = UdpSocket::bind("127.0.0.1:0").expect("udp a");
    let b = UdpSocket::bind("127.0.0.1:0").expect("udp b");
    let mut buf = [0u8; 256];
    a.send_to(msg, b.local_addr().expect("b addr"))
        .expect("udp send_to");
    let (n, from) = b.recv_from(&mut buf).expect("udp recv_from");
    assert_eq!(
        (&buf[..n], from),
        (&msg[..], a.local_addr().expect("a addr"))
    );
    // Connected UDP: connect() runs the connect probes, but no TCP state change marks it as TCP.
    let cu = UdpSocket::bind("127.0.0.1:0").expect("udp c");
    let du = UdpSocket::bind("127.0.0.1:0").expect("udp d");
    cu.connect(du.local_addr().expect("d addr"))
        .expect("udp connect");
    du.connect(cu.local_addr().expect("c addr"))
        .expect("udp connect");
    cu.send(msg).expect("udp send");
    let n = du.recv(&mut buf).expect("udp recv");
    assert_eq!(&buf[..n], msg);
    du.send(msg).expect("udp send back");
    let n = cu.recv(&mut buf).expect("udp recv back");
    assert_eq!(&buf[..n], msg);
    for (name, s) in [("udp a", &a), ("udp b", &b), ("udp c", &cu), ("udp d", &du)] {
        watched.push((name, s.as_raw_fd()));
    }

    // The control: TCP traffic after all of the above is seen, so the capture was live throughout
    // (events come out in syscall order on this thread).
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    let req = b"GET /control HTTP/1.1\r\n\r\n";
    send_all(pair.cfd(), SendFlavor::Write, req).expect("control write");
    recv_exact(pair.sfd(), RecvFlavor::Read, req.len()).expect("control read");
    let c = &mut live.collector;
    wait_bytes(
        c,
        &[
            (client, Direction::Egress, req.len()),
            (server, Direction::Ingress, req.len()),
        ],
    );
    // Every watched fd is still open here, so no TCP socket of this test could have reused its
    // number: any event on it would be a real leak.
    for (name, fd) in &watched {
        let data = c.data_on_fd(pid(), *fd);
        assert!(
            data.is_empty(),
            "{name} (fd {fd}) produced data events:\n{}",
            dump(&data)
        );
        let opens = c.opens(pid(), *fd);
        assert!(opens.is_empty(), "{name} (fd {fd}) was tracked: {opens:?}");
    }
    println!("not captured: {watched:?}; control exchange seen");
    drop(file);
    let _ = std::fs::remove_file(&path);
}

/// Pipes made while the capture runs are candidates for MCP over stdio: one whose first bytes are
/// JSON-RPC is announced (role pipe) and delivered byte-exact on both ends; one whose first bytes
/// are anything else delivers nothing and, once every candidate of the process is decided, leaves
/// its process untaxed again (the per-process bit cleared).
#[test]
fn jsonrpc_pipes_are_captured_and_other_pipes_release_their_process() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let pipe = || {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: valid 2-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: fresh fds from pipe(2), owned from here on (closed on drop).
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    };
    let me = pid();
    // Not JSON-RPC: both ends decided on their first call, nothing delivered, bit released.
    let (r, w) = pipe();
    assert_eq!(
        live.capture.tgid_marked(me),
        Some(true),
        "a new pipe marks its process"
    );
    send_all(w.as_raw_fd(), SendFlavor::Write, b"x").expect("pipe write");
    recv_exact(r.as_raw_fd(), RecvFlavor::Read, 1).expect("pipe read");
    assert_eq!(
        live.capture.tgid_marked(me),
        Some(false),
        "decided candidates release their process"
    );
    // A pipe made and closed unused releases it too.
    drop(pipe());
    assert_eq!(live.capture.tgid_marked(me), Some(false));

    // JSON-RPC: both ends announced, every byte delivered in order.
    let (jr, jw) = pipe();
    let line = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n";
    let more = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";
    for m in [&line[..], &more[..]] {
        send_all(jw.as_raw_fd(), SendFlavor::Write, m).expect("pipe write");
        recv_exact(jr.as_raw_fd(), RecvFlavor::Read, m.len()).expect("pipe read");
    }
    let want = [&line[..], &more[..]].concat();
    let (wfd, rfd) = (jw.as_raw_fd(), jr.as_raw_fd());
    live.collector
        .wait_until(Duration::from_secs(10), |c| {
            concat(&c.data_on_fd(me, wfd)).len() == want.len()
                && concat(&c.data_on_fd(me, rfd)).len() == want.len()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let c = &live.collector;
    for (fd, dir) in [(wfd, Direction::Egress), (rfd, Direction::Ingress)] {
        let open = c.open_of(me, fd).expect("announced once");
        assert_eq!(open.role, KernelRole::Pipe);
        let data = c.stream(open.conn, dir);
        assert_eq!(concat(&data), want, "fd {fd}:\n{}", dump(&data));
        assert_eq!(data[0].pos, 0);
    }
    // The pipe that was not JSON-RPC (still open: its fd numbers were not reused) was never
    // announced and delivered nothing.
    for fd in [r.as_raw_fd(), w.as_raw_fd()] {
        assert!(c.opens(me, fd).is_empty() && c.data_on_fd(me, fd).is_empty());
    }
    drop((jr, jw));
    live.collector
        .wait_until(Duration::from_secs(10), |c| {
            c.closes(me, wfd).len() == 1 && c.closes(me, rfd).len() == 1
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---- 4. sockets that existed before load -----------------------------------------------------

/// Reads exactly `buf.len()` bytes with raw read(2). Async-signal-safe: used in a forked child.
fn raw_read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length stay within `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(done).cast(), buf.len() - done) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// Writes all of `buf` with raw write(2). Async-signal-safe: used in a forked child.
fn raw_write_all(fd: RawFd, buf: &[u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length stay within `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().add(done).cast(), buf.len() - done) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// A forked child, killed and reaped on drop unless it was reaped already.
struct Child {
    pid: libc::pid_t,
    reaped: Option<libc::c_int>,
}

impl Child {
    /// Waits up to `timeout` for the child to exit; returns its wait status.
    fn wait(&mut self, timeout: Duration) -> Option<libc::c_int> {
        let deadline = Instant::now() + timeout;
        while self.reaped.is_none() {
            let mut status = 0;
            // SAFETY: our own child; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = Some(status);
            } else if r < 0 || Instant::now() >= deadline {
                return None;
            } else {
                // Polling a child's exit: there is nothing to block on without a SIGCHLD handler.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.reaped
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // SAFETY: our own child, not yet reaped, so the pid cannot have been reused.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

#[test]
fn connection_opened_before_load_is_seeded() {
    // Capture::seed_existing never seeds the calling process (the agent skips itself), so the
    // connection is held by a forked child: made here before the fork, before Capture::load, and
    // used by the child only after seeding, on a signal through a pipe.
    let pair = Pair::new().expect("loopback pair");
    let (cfd, sfd) = (pair.cfd(), pair.sfd());
    let req = b"POST /seeded HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let mut scratch = vec![0u8; req.len().max(resp.len())];
    let mut go = [0 as libc::c_int; 2];
    // SAFETY: valid 2-int array.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: fork in a multi-threaded process: the child below only calls async-signal-safe
    // functions (read, write, _exit) on memory allocated before the fork.
    let child_pid = unsafe { libc::fork() };
    assert!(child_pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if child_pid == 0 {
        let mut b = [0u8; 1];
        let ok = raw_read_exact(go[0], &mut b)
            && raw_write_all(cfd, &req)
            && raw_read_exact(sfd, &mut scratch[..req.len()])
            && raw_write_all(sfd, &resp)
            && raw_read_exact(cfd, &mut scratch[..resp.len()]);
        // SAFETY: leaves the child at once, without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut child = Child {
        pid: child_pid,
        reaped: None,
    };
    let child_tgid = child_pid as u32;
    // SAFETY: our read end of the pipe; the child holds its own copy.
    unsafe { libc::close(go[0]) };

    let cfg = CaptureConfig {
        target_pid: Some(child_tgid),
        ..own_process_config()
    };
    let Some(mut live) = Live::start(&cfg) else {
        return;
    };
    let seeded = live
        .capture
        .seed_existing(Path::new("/proc"), Some(child_tgid));
    let generation = live.capture.seed_generation();
    let want_server = ExistingSocket {
        tgid: child_tgid,
        fd: sfd,
        local: pair.server.local_addr().expect("server local"),
        remote: pair.server.peer_addr().expect("server peer"),
        server: true,
    };
    let want_client = ExistingSocket {
        tgid: child_tgid,
        fd: cfd,
        local: pair.client.local_addr().expect("client local"),
        remote: pair.client.peer_addr().expect("client peer"),
        server: false,
    };
    assert!(
        seeded.contains(&want_server),
        "accepted end not seeded as server: {seeded:#?}"
    );
    assert!(
        seeded.contains(&want_client),
        "connected end not seeded as client: {seeded:#?}"
    );
    assert!(generation > 0, "seed_generation after seeding");

    // SAFETY: our write end; one byte releases the child.
    assert!(raw_write_all(go[1], b"g"), "signalling the child");
    // SAFETY: our write end, not used again.
    unsafe { libc::close(go[1]) };
    let status = child.wait(SETTLE);
    assert!(
        status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
        "child exchange failed: wait status {status:?}"
    );

    let client = ConnId {
        tgid: child_tgid,
        fd: cfd,
        generation,
    };
    let server = ConnId { fd: sfd, ..client };
    let c = &mut live.collector;
    wait_bytes(
        c,
        &[
            (client, Direction::Egress, req.len()),
            (server, Direction::Ingress, req.len()),
            (server, Direction::Egress, resp.len()),
            (client, Direction::Ingress, resp.len()),
        ],
    );
    for (conn, dir, sys, bytes) in [
        (client, Direction::Egress, Syscall::Write, &req),
        (server, Direction::Ingress, Syscall::Read, &req),
        (server, Direction::Egress, Syscall::Write, &resp),
        (client, Direction::Ingress, Syscall::Read, &resp),
    ] {
        assert_bytes_from_zero(c, conn, dir, sys, bytes);
    }
    // Every data event of the child carries the seed generation (none came under another).
    let others: Vec<_> = c
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.conn.tgid == child_tgid && d.conn.generation != generation => {
                Some(d)
            }
            _ => None,
        })
        .collect();
    assert!(
        others.is_empty(),
        "child data under another generation:\n{}",
        dump(&others)
    );
    println!(
        "seeded {} socket(s) of child {child_tgid} with generation {generation}; exchange captured from pos 0",
        seeded.len()
    );
}

/// `conn`'s `dir` stream is exactly `bytes`, moved by `sys` calls, with positions from 0.
fn assert_bytes_from_zero(c: &Collector, conn: ConnId, dir: Direction, sys: Syscall, bytes: &[u8]) {
    let events = c.stream(conn, dir);
    let mut pos = 0;
    for d in &events {
        assert!(
            d.pos == pos && d.kind == DataKind::Bytes && d.syscall == sys,
            "{conn:?} {dir:?}: expected {sys:?} bytes at pos {pos}:\n{}",
            dump(&events)
        );
        pos += d.payload.len() as u64;
    }
    assert_eq!(concat(&events), bytes, "{conn:?} {dir:?} bytes");
}

// ---- 5. fd reuse ----------------------------------------------------------------------------

/// connect(2) on an existing socket fd (std has no way to connect a given fd).
fn connect_fd(fd: RawFd, addr: SocketAddr) -> std::io::Result<()> {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: valid sockaddr_in and its size.
    let r = unsafe {
        libc::connect(
            fd,
            (&raw const sin).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn reused_fd_gets_a_new_connection_identity() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let la = TcpListener::bind("127.0.0.1:0").expect("listener a");
    let lb = TcpListener::bind("127.0.0.1:0").expect("listener b");
    let (addr_a, addr_b) = (la.local_addr().expect("a"), lb.local_addr().expect("b"));

    let first = TcpStream::connect(addr_a).expect("connect a");
    let fd = first.as_raw_fd();
    let (sa, _) = la.accept().expect("accept a");
    let req1 = b"POST /first HTTP/1.1\r\nContent-Length: 3\r\n\r\none".to_vec();
    let resp1 = b"HTTP/1.1 200 OK\r\nX-Conn: first\r\n\r\n".to_vec();
    send_all(fd, SendFlavor::Write, &req1).expect("write 1");
    recv_exact(sa.as_raw_fd(), RecvFlavor::Read, req1.len()).expect("read 1");
    send_all(sa.as_raw_fd(), SendFlavor::Write, &resp1).expect("resp 1");
    recv_exact(fd, RecvFlavor::Read, resp1.len()).expect("read resp 1");
    drop(first);

    // A new socket put on the same fd number *before* it connects, so that the kernel side sees the
    // connect() on that fd: dup2 after connect would only alias an fd it tracks under another number.
    // SAFETY: plain socket(2).
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
    if s != fd {
        // SAFETY: `fd` is closed (dropped above) and `s` is ours; dup2 then close moves it.
        unsafe {
            assert_eq!(libc::dup2(s, fd), fd, "dup2");
            libc::close(s);
        }
    }
    connect_fd(fd, addr_b).expect("connect b on the reused fd");
    // SAFETY: `fd` now holds our connected socket; the stream owns and closes it.
    let second = unsafe { TcpStream::from_raw_fd(fd) };
    let (sb, _) = lb.accept().expect("accept b");
    let req2 = b"GET /second HTTP/1.1\r\nHost: b\r\n\r\n".to_vec();
    let resp2 = b"HTTP/1.1 204 No Content\r\nX-Conn: second\r\n\r\n".to_vec();
    send_all(fd, SendFlavor::Write, &req2).expect("write 2");
    recv_exact(sb.as_raw_fd(), RecvFlavor::Read, req2.len()).expect("read 2");
    send_all(sb.as_raw_fd(), SendFlavor::Write, &resp2).expect("resp 2");
    recv_exact(fd, RecvFlavor::Read, resp2.len()).expect("read resp 2");

    let c = &mut live.collector;
    c.wait_until(SETTLE, |c| c.opens(pid(), fd).len() >= 2)
        .expect("two Open events on the reused fd");
    let opens: Vec<_> = c.opens(pid(), fd).into_iter().cloned().collect();
    assert_eq!(opens.len(), 2, "Open events on fd {fd}: {opens:?}");
    let (g1, g2) = (opens[0].conn, opens[1].conn);
    assert_eq!((g1.tgid, g1.fd), (pid(), fd));
    assert_eq!((g2.tgid, g2.fd), (pid(), fd));
    assert_ne!(
        g1.generation, g2.generation,
        "a reused fd must get a new generation"
    );
    assert_ne!(g1, g2);
    assert_eq!(
        (opens[0].role, opens[0].peer),
        (KernelRole::Client, Some(addr_a))
    );
    assert_eq!(
        (opens[1].role, opens[1].peer),
        (KernelRole::Client, Some(addr_b))
    );
    let closes: Vec<_> = c.closes(pid(), fd).into_iter().cloned().collect();
    assert_eq!(
        closes.iter().map(|e| e.conn).collect::<Vec<_>>(),
        [g1],
        "the first connection's close, under its own identity"
    );
    wait_bytes(
        c,
        &[
            (g1, Direction::Egress, req1.len()),
            (g1, Direction::Ingress, resp1.len()),
            (g2, Direction::Egress, req2.len()),
            (g2, Direction::Ingress, resp2.len()),
        ],
    );
    let cap = u64::from(MAX_CAPTURE_PER_CALL);
    assert_stream(
        c,
        g1,
        Direction::Egress,
        &calls_from(&[(Syscall::Write, req1.len())]),
        cap,
        &req1,
    );
    assert_stream(
        c,
        g2,
        Direction::Egress,
        &calls_from(&[(Syscall::Write, req2.len())]),
        cap,
        &req2,
    );
    assert_eq!(concat(&c.stream(g1, Direction::Ingress)), resp1);
    assert_eq!(concat(&c.stream(g2, Direction::Ingress)), resp2);
    assert_eq!(
        c.stream(g2, Direction::Ingress)[0].pos,
        0,
        "the new connection starts at 0"
    );
    println!(
        "fd {fd} reused: generations {} (peer {addr_a}) and {} (peer {addr_b})",
        g1.generation, g2.generation
    );
    drop((second, sa, sb));
}

// ---- 6. the agent binary -------------------------------------------------------------------

#[test]
fn agent_check_and_build_info() {
    let _serial = support::serial();
    if !support::is_root() {
        support::skip_or_fail::<()>("not root (the agent loads eBPF programs)");
        return;
    }
    let bin = path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer");
    if !bin.exists() {
        support::skip_or_fail::<()>(&format!(
            "no agent binary at {} (build it with `cargo build --release -p llm-observer` or set LLM_OBSERVER_BIN)",
            bin.display()
        ));
        return;
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("check");
    let (status, out, err) = run_to_end("llm-observer check", cmd, Duration::from_secs(120))
        .expect("running llm-observer check");
    assert!(
        status.success(),
        "check failed ({status}):\n{}\n{}",
        out.join("\n"),
        err.join("\n")
    );
    let want = format!("attach mode: {ATTACH_MODE}");
    assert_eq!(ATTACH_MODE, "tracepoints");
    assert!(
        out.iter().any(|l| l.trim() == want),
        "no '{want}' line in:\n{}",
        out.join("\n")
    );

    // A free port: bind :0, read it, release it for the agent.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(&bin);
    cmd.args(["--metrics-addr", &addr.to_string()]);
    let agent = Proc::spawn("llm-observer", cmd).expect("spawn agent");
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        let body = http::request(addr, "GET", "/metrics", b"", Duration::from_secs(5))
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body_text());
        if let Some(line) = body.as_deref().and_then(|b| {
            b.lines()
                .find(|l| l.starts_with("llm_observer_build_info{"))
                .map(str::to_owned)
        }) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no llm_observer_build_info on http://{addr}/metrics within 60 s; agent output:\n{}",
            agent.output()
        );
        // Polling a child's HTTP endpoint: no readiness signal to block on.
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        line.contains(&format!("attach_mode=\"{ATTACH_MODE}\"")),
        "build info line: {line}"
    );
    println!("check: ok; /metrics: {line}");
}

// ---- 7. ring overflow and throughput -------------------------------------------------------

/// Small fixed-size HTTP-looking writes, so write `i` is at offset `i * len`.
fn burst_msg(i: usize) -> Vec<u8> {
    format!("GET /burst/{i:07} HTTP/1.1\r\n\r\n").into_bytes()
}

/// `writes` small write()s (messages prepared beforehand, so the loop times syscalls, not
/// formatting) on the client of `pair`, while a thread reads the server end. Returns how long the
/// writes took.
fn write_burst(pair: &Pair, writes: usize) -> Duration {
    let len = burst_msg(0).len();
    let data: Vec<u8> = (0..writes).flat_map(burst_msg).collect();
    assert_eq!(data.len(), writes * len, "fixed-size messages");
    let (cfd, sfd, total) = (pair.cfd(), pair.sfd(), data.len());
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < total {
                let n = recv_once(sfd, RecvFlavor::Read, &mut buf).expect("server read");
                assert!(n > 0, "EOF after {got} of {total}");
                got += n;
            }
        });
        let start = Instant::now();
        for (i, msg) in data.chunks(len).enumerate() {
            // SAFETY: `msg` is a live slice.
            let n = unsafe { libc::write(cfd, msg.as_ptr().cast(), msg.len()) };
            assert_eq!(
                n,
                len as isize,
                "write {i}: {}",
                std::io::Error::last_os_error()
            );
        }
        let elapsed = start.elapsed();
        reader.join().expect("reader thread");
        elapsed
    })
}

/// [`write_burst`] on a fresh pair whose server end is untracked (its reads cost no ring space),
/// with `during` running on another thread from before the first write; `during` is told when the
/// last write has returned.
fn burst<T: Send>(
    live: &mut Live,
    writes: usize,
    during: impl FnOnce(&mut Collector, &AtomicBool, ConnId) -> T + Send,
) -> (Pair, ConnId, Duration, T) {
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    live.capture.untrack(server);
    let collector = &mut live.collector;
    let done = AtomicBool::new(false);
    let done = &done;
    let (elapsed, out) = std::thread::scope(|s| {
        let during = s.spawn(move || during(collector, done, client));
        let elapsed = write_burst(&pair, writes);
        done.store(true, Ordering::Release);
        (elapsed, during.join().expect("collector thread"))
    });
    (pair, client, elapsed, out)
}

#[test]
fn ring_overflow_is_counted_exactly() {
    const WRITES: usize = 2_000;
    let cfg = CaptureConfig {
        ring_bytes: 16 * 1024,
        ..own_process_config()
    };
    let Some(mut live) = Live::start(&cfg) else {
        return;
    };
    // Nobody reads the ring during the burst.
    let (_pair, client, _, ()) = burst(&mut live, WRITES, |_, _, _| ());
    let len = burst_msg(0).len() as u64;
    let c = &mut live.collector;
    // Every event was submitted (or counted lost) before its write returned, so draining until the
    // ring is empty collects all of them; no deadline is needed for a bounded, finished producer.
    while c.drain() > 0 {}
    let stats = live.capture.kernel_stats();
    let events = c.stream(client, Direction::Egress);
    let bytes: Vec<_> = events
        .iter()
        .filter(|d| d.kind == DataKind::Bytes)
        .collect();
    let markers: Vec<_> = events
        .iter()
        .filter(|d| matches!(d.kind, DataKind::Truncated { .. }))
        .collect();
    println!(
        "overflow (ring 16 KiB, {WRITES} writes of {len} B): received {} data events, {} TRUNCATED markers, lost_events {}, truncated_bytes {}, lost_control_events {}",
        bytes.len(),
        markers.len(),
        stats.lost_events,
        stats.truncated_bytes,
        stats.lost_control_events
    );
    // Each received event is its write, at that write's offset: gaps show in `pos`.
    for d in &bytes {
        let i = (d.pos / len) as usize;
        assert!(
            d.pos % len == 0 && d.msg_len == len && d.payload[..] == burst_msg(i)[..],
            "event not at its write's offset:\n{}",
            dump(&[**d])
        );
    }
    let mut seen: Vec<u64> = bytes.iter().map(|d| d.pos).collect();
    seen.dedup();
    assert_eq!(seen.len(), bytes.len(), "a write delivered twice");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "positions out of order"
    );
    // A marker stands for a write whose data event was lost: the whole write is missing.
    for m in &markers {
        assert!(
            m.pos % len == 0 && m.kind == (DataKind::Truncated { missing: len }),
            "marker:\n{}",
            dump(&[**m])
        );
    }
    assert!(
        stats.lost_events > 0,
        "a 16 KiB ring cannot hold {WRITES} events"
    );
    assert_eq!(
        stats.truncated_bytes,
        (WRITES - bytes.len()) as u64 * len,
        "every byte of every lost write is counted as truncated"
    );
    assert_eq!(
        bytes.len() as u64 + stats.lost_events,
        WRITES as u64,
        "received data events + lost_events = writes (each write is one event)\n\
         writes whose data event was lost: {} (= truncated_bytes / {len}); TRUNCATED markers \
         received: {}; lost_events counts {:.2} per lost write\nfirst events:\n{}",
        WRITES - bytes.len(),
        markers.len(),
        stats.lost_events as f64 / (WRITES - bytes.len()).max(1) as f64,
        dump(&events.iter().take(4).copied().collect::<Vec<_>>())
    );
}

#[test]
fn sustained_event_rate() {
    const WRITES: usize = 200_000;
    // The same burst with no capture loaded, for the cost of the probes (informational only).
    let baseline = {
        let _serial = support::serial();
        write_burst(&Pair::new().expect("loopback pair"), WRITES)
    };
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    // The collector drains concurrently, counting the client's data events without keeping them.
    let (_pair, _client, write_time, (received, markers, drain_time)) = burst(
        &mut live,
        WRITES,
        |c: &mut Collector, done: &AtomicBool, client: ConnId| {
            let start = Instant::now();
            let deadline = start + Duration::from_secs(120);
            let (mut received, mut markers) = (0u64, 0u64);
            // Events are submitted before their write returns: once the writer is done, a drain
            // that finds the ring empty has seen everything.
            loop {
                let finished = done.load(Ordering::Acquire);
                let n = c.drain();
                for e in c.events.drain(..) {
                    if let Event::Data(d) = e
                        && d.conn == client
                        && d.direction == Direction::Egress
                    {
                        match d.kind {
                            DataKind::Bytes => received += 1,
                            _ => markers += 1,
                        }
                    }
                }
                if (finished && n == 0) || Instant::now() >= deadline {
                    break;
                }
                if n == 0 {
                    support::wait_readable(c.ring_fd(), Duration::from_millis(5));
                }
            }
            (received, markers, start.elapsed())
        },
    );
    let stats = live.capture.kernel_stats();
    let rate = received as f64 / drain_time.as_secs_f64();
    println!(
        "events/s sustained: {rate:.0} ({received} data events in {:.3} s; writes took {:.3} s = {:.0} writes/s, {:.0} writes/s without capture; lost_events {}, markers {markers}, truncated_bytes {})",
        drain_time.as_secs_f64(),
        write_time.as_secs_f64(),
        WRITES as f64 / write_time.as_secs_f64(),
        WRITES as f64 / baseline.as_secs_f64(),
        stats.lost_events,
        stats.truncated_bytes
    );
    assert_eq!(
        received + stats.lost_events,
        WRITES as u64,
        "received data events + lost_events = writes"
    );
}

/// `recv(MSG_PEEK)` bytes are read again and must not be counted twice; `sendfile` from a file is
/// counted with an exact TRUNCATED marker (its bytes never pass through user memory); `dup2` onto a
/// tracked socket's fd closes that socket without a close() call and must end its tracking.
#[test]
fn peek_sendfile_and_dup2_are_accounted_exactly() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    let (cfd, sfd) = (pair.cfd(), pair.sfd());
    let request = b"POST /peek HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody".to_vec();
    send_all(cfd, SendFlavor::Write, &request).expect("send the request");
    // Peek at the head first, as inspecting proxies do, then read everything for real.
    let mut peeked = [0u8; 8];
    // SAFETY: recv(2) into a live buffer of the stated length.
    let n = unsafe {
        libc::recv(
            sfd,
            peeked.as_mut_ptr().cast(),
            peeked.len(),
            libc::MSG_PEEK,
        )
    };
    assert_eq!(n, 8, "peek: {}", std::io::Error::last_os_error());
    recv_exact(sfd, RecvFlavor::Read, request.len()).expect("read the request");

    let body_len = 5000usize;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
    send_all(sfd, SendFlavor::Write, &head).expect("send the head");
    let mut file = tempfile_with(&vec![b'f'; body_len]);
    let mut sent = 0usize;
    while sent < body_len {
        // SAFETY: sendfile(2) between two fds we own; NULL offset uses the file position.
        let n =
            unsafe { libc::sendfile(sfd, file.as_raw_fd(), std::ptr::null_mut(), body_len - sent) };
        assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
        sent += n as usize;
    }
    let (got, _) =
        recv_exact(cfd, RecvFlavor::Read, head.len() + body_len).expect("client reads all");
    assert_eq!(&got[..head.len()], &head[..]);
    let _ = file.flush();

    // Put /dev/null on the server socket's fd number: the socket is closed by dup2.
    let devnull = std::fs::File::open("/dev/null").expect("/dev/null");
    // SAFETY: both fds are ours; dup2 atomically replaces sfd.
    assert_eq!(unsafe { libc::dup2(devnull.as_raw_fd(), sfd) }, sfd);

    let c = &mut live.collector;
    c.wait_until(SETTLE, |c| {
        c.bytes_len(server, Direction::Ingress) >= request.len()
            && c.bytes_len(client, Direction::Ingress) >= head.len() + body_len
            && !c.closes(pid(), sfd).is_empty()
            && c.stream(server, Direction::Egress)
                .iter()
                .any(|e| matches!(e.kind, DataKind::Truncated { .. }))
    })
    .expect("request, response, sendfile marker and the dup2 close");
    // The peeked bytes are not in the stream twice.
    let ingress = c.stream(server, Direction::Ingress);
    assert_eq!(concat(&ingress), request, "{}", dump(&ingress));
    assert_eq!(ingress.first().map(|e| e.pos), Some(0));
    // The server's egress: the head's bytes, then markers covering exactly the file's bytes.
    let egress = c.stream(server, Direction::Egress);
    assert_eq!(concat(&egress), head, "{}", dump(&egress));
    let mut pos = head.len() as u64;
    let mut missing_total = 0u64;
    for e in egress
        .iter()
        .filter(|e| matches!(e.kind, DataKind::Truncated { .. }))
    {
        let DataKind::Truncated { missing } = e.kind else {
            unreachable!("filtered")
        };
        assert_eq!(
            (e.pos, e.syscall),
            (pos, Syscall::Sendfile),
            "{}",
            dump(&egress)
        );
        pos += missing;
        missing_total += missing;
    }
    assert_eq!(missing_total, body_len as u64);
    // The client read the file's bytes like any others: captured in full.
    assert_eq!(
        c.bytes_len(client, Direction::Ingress),
        head.len() + body_len
    );
    // dup2 ended the server socket's tracking under its own identity, at the positions its
    // streams reached: written = the head and the file's bytes, read = the request (the peek
    // moved nothing).
    assert_eq!(
        c.closes(pid(), sfd)
            .iter()
            .map(|e| (e.conn, e.ended_at))
            .collect::<Vec<_>>(),
        [(
            server,
            [(head.len() + body_len) as u64, request.len() as u64]
        )]
    );
    drop(devnull);
}

/// A request written and read in pieces shorter than the kernel's four-byte sniff, then a longer
/// piece from the middle of its head, as a slowloris client and a server that falls behind it
/// make: the connection is classified from its first bytes only, never from the middle of a
/// message (which does not look like HTTP), so every byte of both directions is delivered.
#[test]
fn a_head_begun_in_pieces_shorter_than_the_sniff_is_captured_whole() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let (client, server) = opened(&mut live.collector, &pair);
    let (cfd, sfd) = (pair.cfd(), pair.sfd());
    let other_before = live.capture.kernel_stats().other_protocol_bytes;
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
    // 1, 2, then the rest ("T /v1/...") in one call on each side.
    for piece in [&request[..1], &request[1..3], &request[3..]] {
        send_all(cfd, SendFlavor::Write, piece).expect("client writes a piece");
        let (got, calls) = recv_exact(sfd, RecvFlavor::Read, piece.len()).expect("server reads it");
        assert_eq!((&got[..], calls.len()), (piece, 1), "one read per piece");
    }
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    send_all(sfd, SendFlavor::Write, &response).expect("server answers");
    recv_exact(cfd, RecvFlavor::Read, response.len()).expect("client reads the answer");

    let c = &mut live.collector;
    let want = [
        (client, Direction::Egress, request.len()),
        (server, Direction::Ingress, request.len()),
        (server, Direction::Egress, response.len()),
        (client, Direction::Ingress, response.len()),
    ];
    wait_bytes(c, &want);
    for (conn, dir, _) in want {
        let events = c.stream(conn, dir);
        let sent = if matches!(
            (conn == client, dir),
            (true, Direction::Egress) | (false, Direction::Ingress)
        ) {
            &request
        } else {
            &response
        };
        assert_eq!(
            &concat(&events),
            sent,
            "{conn:?} {dir:?}: {}",
            dump(&events)
        );
        assert!(
            events.iter().all(|e| e.kind == DataKind::Bytes),
            "{conn:?} {dir:?}: no markers: {}",
            dump(&events)
        );
    }
    // Nothing of it was taken for another protocol (before the fix: the "T /v1/..." calls were,
    // and the response was never copied).
    assert_eq!(
        live.capture.kernel_stats().other_protocol_bytes,
        other_before
    );
}

/// A temporary file holding `data`, positioned at its start.
fn tempfile_with(data: &[u8]) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("llm-observer-sendfile-{}", pid()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("temp file");
    f.write_all(data).expect("fill the temp file");
    let _ = std::fs::remove_file(&path);
    use std::io::Seek as _;
    f.seek(std::io::SeekFrom::Start(0)).expect("rewind");
    f
}

/// A sendmmsg whose first message has more iovecs than the kernel side gathers per message: the
/// bytes delivered stay a contiguous prefix, one TRUNCATED marker covers exactly the rest, and the
/// next write lands at the right position.
#[test]
fn mmsg_beyond_the_iovec_limit_keeps_positions_exact() {
    let Some(mut live) = Live::start(&own_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let (client, _server) = opened(&mut live.collector, &pair);
    let cfd = pair.cfd();
    // Message 0: "POST /m HTTP/1.1\r\n" then 4 more 10-byte pieces = 5 iovecs; message 1: 7 bytes.
    let pieces: [&[u8]; 5] = [
        b"POST /m HTTP/1.1\r\n",
        b"aaaaaaaaaa",
        b"bbbbbbbbbb",
        b"cccccccccc",
        b"dddddddddd",
    ];
    let tail: &[u8] = b"eeeeeee";
    let mut iov0: Vec<libc::iovec> = pieces
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let mut iov1 = [libc::iovec {
        iov_base: tail.as_ptr() as *mut _,
        iov_len: tail.len(),
    }];
    // SAFETY: zeroed mmsghdr is a valid empty header; pointers below outlive the call.
    let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
    msgs[0].msg_hdr.msg_iov = iov0.as_mut_ptr();
    msgs[0].msg_hdr.msg_iovlen = iov0.len();
    msgs[1].msg_hdr.msg_iov = iov1.as_mut_ptr();
    msgs[1].msg_hdr.msg_iovlen = 1;
    // SAFETY: sendmmsg(2) on our socket with two valid headers.
    let sent = unsafe { libc::sendmmsg(cfd, msgs.as_mut_ptr(), 2, 0) };
    assert_eq!(sent, 2, "sendmmsg: {}", std::io::Error::last_os_error());
    let first_len: usize = pieces.iter().map(|p| p.len()).sum();
    let total = first_len + tail.len();
    let after = b"zz".to_vec();
    send_all(cfd, SendFlavor::Write, &after).expect("write after");

    let c = &mut live.collector;
    c.wait_until(SETTLE, |c| {
        c.stream(client, Direction::Egress)
            .iter()
            .any(|e| e.syscall == Syscall::Write)
    })
    .expect("the write after the sendmmsg");
    let egress = c.stream(client, Direction::Egress);
    let gathered: Vec<u8> = pieces[..4].concat();
    let bytes: Vec<&DataEvent> = egress
        .iter()
        .copied()
        .filter(|e| e.syscall == Syscall::Sendmmsg && e.kind == DataKind::Bytes)
        .collect();
    assert_eq!(concat(&bytes), gathered, "{}", dump(&egress));
    let markers: Vec<_> = egress
        .iter()
        .filter(|e| matches!(e.kind, DataKind::Truncated { .. }))
        .collect();
    assert_eq!(markers.len(), 1, "{}", dump(&egress));
    assert_eq!(
        (markers[0].pos, markers[0].kind),
        (
            gathered.len() as u64,
            DataKind::Truncated {
                missing: (total - gathered.len()) as u64
            }
        )
    );
    let last = egress.last().expect("events");
    assert_eq!(
        (last.syscall, last.pos, &last.payload[..]),
        (Syscall::Write, total as u64, &after[..])
    );
}

// ---- fork inheritance -----------------------------------------------------------------------

/// Every process: a forked child is another process, which `target_pid` would filter out. Tests
/// below filter the events to this process and its children by tgid.
fn every_process_config() -> CaptureConfig {
    CaptureConfig {
        target_pid: None,
        ignore_pid: None,
        ..own_process_config()
    }
}

#[test]
fn a_forked_child_is_captured_on_the_sockets_it_inherits() {
    let Some(mut live) = Live::start(&every_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let (cfd, sfd) = (pair.cfd(), pair.sfd());
    let (_, parent_server) = opened(&mut live.collector, &pair);
    let req = b"POST /forked HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let mut scratch = vec![0u8; req.len()];
    // SAFETY: fork in a multi-threaded process: the child below only calls async-signal-safe
    // functions (read, write, _exit) on memory allocated before the fork.
    let child_pid = unsafe { libc::fork() };
    assert!(child_pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if child_pid == 0 {
        let ok = raw_read_exact(sfd, &mut scratch) && raw_write_all(sfd, &resp);
        // SAFETY: leaves the child at once, without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut child = Child {
        pid: child_pid,
        reaped: None,
    };
    let kid = child_pid as u32;
    // Pre-fork server style: the parent closes its copy at once; the child serves.
    let Pair {
        listener: _listener,
        mut client,
        server,
    } = pair;
    drop(server);
    client.write_all(&req).expect("request");
    let mut got = vec![0u8; resp.len()];
    client.read_exact(&mut got).expect("response");
    assert_eq!(got, resp);
    let status = child.wait(SETTLE);
    assert!(
        status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
        "child exchange failed: wait status {status:?}"
    );
    let c = &mut live.collector;
    c.wait_until(SETTLE, |c| {
        !c.opens(kid, sfd).is_empty()
            && c.events
                .iter()
                .any(|e| matches!(e, Event::ProcExit { tgid, .. } if *tgid == kid))
    })
    .expect("the child's open and exit events");
    // Both ends were inherited (the child holds copies of every fd), each once, with its role.
    for (fd, role) in [(sfd, KernelRole::Server), (cfd, KernelRole::Client)] {
        let opens = c.opens(kid, fd);
        assert_eq!(opens.len(), 1, "child fd {fd}: {opens:#?}");
        assert_eq!(
            (opens[0].role, opens[0].inherited_from, opens[0].peer),
            (role, Some(pid()), None),
            "child fd {fd}"
        );
    }
    assert_eq!(
        c.closes(pid(), sfd).len(),
        1,
        "the parent's close of its copy"
    );
    let served = c.open_of(kid, sfd).expect("child server open").conn;
    assert_ne!(served.generation, parent_server.generation);
    wait_bytes(
        c,
        &[
            (served, Direction::Ingress, req.len()),
            (served, Direction::Egress, resp.len()),
        ],
    );
    assert_bytes_from_zero(c, served, Direction::Ingress, Syscall::Read, &req);
    assert_bytes_from_zero(c, served, Direction::Egress, Syscall::Write, &resp);
    // The parent's connection saw none of the child's bytes.
    assert!(
        c.stream(parent_server, Direction::Ingress).is_empty(),
        "parent server stream:\n{}",
        dump(&c.stream(parent_server, Direction::Ingress))
    );
}

#[test]
fn a_new_thread_shares_its_process_sockets_without_copies() {
    let Some(mut live) = Live::start(&every_process_config()) else {
        return;
    };
    let pair = Pair::new().expect("loopback pair");
    let sfd = pair.sfd();
    let (_, server) = opened(&mut live.collector, &pair);
    let msg = b"HTTP/1.1 204 No Content\r\n\r\n";
    let writer = std::thread::spawn(move || {
        // SAFETY: no arguments, cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(raw_write_all(sfd, msg), "write from the new thread");
        tid
    });
    let tid = writer.join().expect("writer thread");
    let c = &mut live.collector;
    wait_bytes(c, &[(server, Direction::Egress, msg.len())]);
    let events = c.stream(server, Direction::Egress);
    assert_eq!(&concat(&events), msg);
    assert!(events.iter().all(|d| d.tid == tid), "{}", dump(&events));
    // The thread shares the fd table: no connection was copied, under its tid or otherwise.
    let copies: Vec<_> = c
        .events
        .iter()
        .filter(|e| match e {
            Event::Open(o) => o.conn.tgid == tid || o.inherited_from == Some(pid()),
            _ => false,
        })
        .collect();
    assert!(copies.is_empty(), "copies for a thread: {copies:#?}");
    assert_eq!(c.opens(pid(), sfd).len(), 1);
}

/// The ring's data area is mapped once: the kernel maps every page of a ring mapping when it is
/// made, so a second copy (aya's `RingBuf` maps the data twice for records that wrap) was as
/// many bytes of the agent's RSS again as `--ring-bytes`.
#[test]
fn the_event_ring_is_mapped_once() {
    const RING: u64 = 1024 * 1024;
    let cfg = CaptureConfig {
        ring_bytes: RING as u32,
        ..own_process_config()
    };
    let Some(_live) = Live::start(&cfg) else {
        return;
    };
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
    // Each mapping is a header line (address range … path), then `Key: N kB` lines.
    let (mut size_kb, mut rss_kb, mut mappings, mut in_map) = (0u64, 0u64, 0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_map = line.ends_with("bpf-map");
            mappings += u32::from(in_map);
        } else if in_map {
            let kb = |k: &str| {
                line.strip_prefix(k)
                    .and_then(|v| v.trim().strip_suffix("kB"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            size_kb += kb("Size:").unwrap_or(0);
            rss_kb += kb("Rss:").unwrap_or(0);
        }
    }
    // SAFETY: plain libc call.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    println!("bpf map mappings: {mappings}, {size_kb} kB mapped, {rss_kb} kB resident");
    // The consumer page, then the producer page with the data area once.
    assert_eq!(mappings, 2, "mappings of BPF maps:\n{smaps}");
    assert_eq!(size_kb * 1024, 2 * page + RING);
    assert!(rss_kb * 1024 <= 2 * page + RING, "{rss_kb} kB resident");
}
