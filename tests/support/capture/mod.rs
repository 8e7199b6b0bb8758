//! Helpers for the root capture tests (`tests/capture.rs`): the run guard, a [`Collector`] that
//! drains and decodes the event ring with deadlines, loopback TCP pairs, and raw-fd wrappers for
//! every read/write syscall flavor the kernel side hooks.
//!
//! This module is compiled into the `capture` test only (included with `#[path]`), not into the
//! support library, because it needs the agent crate, which is a dev-dependency.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use llm_observer::capture::event::{self, ConnEventData};
use llm_observer::capture::ring::EventRing;
use llm_observer::capture::{
    Capture, CaptureConfig, ConnId, DataEvent, DataKind, Direction, Event, EventError,
};
use llm_observer_common::{MAX_CAPTURE_PER_CALL, MAX_PAYLOAD, Syscall};

// ---- run guard -----------------------------------------------------------------------------

/// One capture test at a time, whatever `--test-threads` says: every test sees the whole process's
/// traffic, and the exact kernel counters (lost events, truncated bytes) would otherwise include
/// another test's.
static SERIAL: Mutex<()> = Mutex::new(());

/// The config every test starts from: this process only (the agent's default excludes its own
/// process, which here is the process under test), full per-call capture.
pub fn own_process_config() -> CaptureConfig {
    CaptureConfig {
        ring_bytes: 16 * 1024 * 1024,
        max_bytes_per_call: MAX_CAPTURE_PER_CALL,
        target_pid: Some(std::process::id()),
        ignore_pid: None,
        all_protocols: false,
        // The product's default: data records wake the reader only past a fill threshold; the
        // collector polls the ring at least every 20 ms anyway.
        poll_interval: llm_observer::capture::DEFAULT_POLL_INTERVAL,
        idle_poll_interval: llm_observer::capture::DEFAULT_IDLE_POLL_INTERVAL,
        // The TLS probes are tested with the agent (tests/tls.rs); these tests never call them.
        tls: false,
    }
}

pub use llm_observer_tests::harness::guard::{is_root, skip_or_fail};

/// Serialises the tests; a test that panicked while holding the lock must not take the rest down.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A loaded capture with its ring taken into a [`Collector`], held under the serial lock.
pub struct Live {
    pub capture: Capture,
    pub collector: Collector,
    _serial: MutexGuard<'static, ()>,
}

impl Live {
    /// The run guard: `None` (skip) when not root or when loading fails, a panic instead under
    /// `CI=true`.
    pub fn start(cfg: &CaptureConfig) -> Option<Live> {
        let serial = serial();
        if !is_root() {
            return skip_or_fail("not root (loading eBPF programs needs root)");
        }
        let mut capture = match Capture::load(cfg) {
            Ok(c) => c,
            Err(e) => return skip_or_fail(&format!("Capture::load failed: {e}")),
        };
        let Some(ring) = capture.take_ring() else {
            return skip_or_fail("Capture::take_ring returned no ring right after load");
        };
        Some(Live {
            capture,
            collector: Collector::new(ring),
            _serial: serial,
        })
    }
}

// ---- collector -----------------------------------------------------------------------------

/// Drains the ring and keeps every decoded event in arrival (ring) order.
pub struct Collector {
    ring: EventRing,
    pub events: Vec<Event<'static>>,
    pub errors: Vec<EventError>,
}

impl Collector {
    pub fn new(ring: EventRing) -> Collector {
        Collector {
            ring,
            events: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The ring's fd, to poll(2) on between drains.
    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Reads every record available now; returns how many were read.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            match event::decode(&item) {
                Ok(e) => self.events.push(e.into_owned()),
                Err(e) => self.errors.push(e),
            }
            n += 1;
        }
        n
    }

    /// Drains until `done` holds or `timeout` passes. Between drains it blocks in poll(2) on the
    /// ring's fd (woken by the kernel on new records), so nothing here stands in for
    /// synchronisation with a sleep.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Collector) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if done(self) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "condition not met within {timeout:?}; {} events collected, {} undecodable",
                    self.events.len(),
                    self.errors.len()
                ));
            }
            wait_readable(self.ring.as_raw_fd(), left.min(Duration::from_millis(20)));
        }
    }

    /// Events of this process's connection `fd` (any generation).
    pub fn opens(&self, tgid: u32, fd: RawFd) -> Vec<&ConnEventData> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Open(c) if c.conn.tgid == tgid && c.conn.fd == fd => Some(c),
                _ => None,
            })
            .collect()
    }

    pub fn closes(&self, tgid: u32, fd: RawFd) -> Vec<&ConnEventData> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Close(c) if c.conn.tgid == tgid && c.conn.fd == fd => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The single Open event of (tgid, fd), or why there is not exactly one.
    pub fn open_of(&self, tgid: u32, fd: RawFd) -> Result<ConnEventData, String> {
        match self.opens(tgid, fd).as_slice() {
            [one] => Ok((*one).clone()),
            many => Err(format!(
                "expected one Open event for tgid {tgid} fd {fd}, got {}: {many:?}",
                many.len()
            )),
        }
    }

    /// Every data event (bytes and markers) of `conn` in `dir`, in ring order.
    pub fn stream(&self, conn: ConnId, dir: Direction) -> Vec<&DataEvent<'static>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Data(d) if d.conn == conn && d.direction == dir => Some(d),
                _ => None,
            })
            .collect()
    }

    /// Every data event on (tgid, fd), any generation or direction.
    pub fn data_on_fd(&self, tgid: u32, fd: RawFd) -> Vec<&DataEvent<'static>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Data(d) if d.conn.tgid == tgid && d.conn.fd == fd => Some(d),
                _ => None,
            })
            .collect()
    }

    /// Payload bytes captured so far for `conn` in `dir` (markers carry none).
    pub fn bytes_len(&self, conn: ConnId, dir: Direction) -> usize {
        self.stream(conn, dir).iter().map(|d| d.payload.len()).sum()
    }
}

/// Blocks until `fd` is readable or `timeout` passes (errors just end the wait early: the caller
/// loops on its own deadline).
pub fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Payload concatenated in event order.
pub fn concat(events: &[&DataEvent]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|d| d.payload.iter().copied())
        .collect()
}

/// One line per event, for failure messages.
pub fn dump(events: &[&DataEvent]) -> String {
    let mut out = String::new();
    for d in events {
        let head: String = d
            .payload
            .iter()
            .take(48)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        out.push_str(&format!(
            "  fd {} gen {} {:?} {} pos {} len {} msg_len {} {:?} ts {} tid {} \"{head}\"\n",
            d.conn.fd,
            d.conn.generation,
            d.direction,
            d.syscall.as_str(),
            d.pos,
            d.payload.len(),
            d.msg_len,
            d.kind,
            d.ts_ns,
            d.tid,
        ));
    }
    out
}

// ---- expected streams ----------------------------------------------------------------------

/// One syscall as the test made it: `len` bytes at direction offset `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub off: u64,
    pub len: u64,
    pub sys: Syscall,
}

/// Calls made back to back from offset 0, from (syscall, bytes moved) pairs.
pub fn calls_from(moves: &[(Syscall, usize)]) -> Vec<Call> {
    let mut off = 0;
    moves
        .iter()
        .map(|&(sys, n)| {
            let c = Call {
                off,
                len: n as u64,
                sys,
            };
            off += n as u64;
            c
        })
        .collect()
}

/// Checks one direction of one connection against the calls that produced it, exactly: for each
/// call, in order, events of ≤ MAX_PAYLOAD bytes with contiguous `pos` from the call's offset, its
/// syscall and `msg_len`, payload equal to `sent` at those offsets, covering `min(len, cap)` bytes;
/// then, when the call moved more than `cap`, one TRUNCATED marker at `off + cap` with
/// `missing = len - cap`. Timestamps never go backwards; nothing else is in the stream.
pub fn check_stream(
    events: &[&DataEvent],
    calls: &[Call],
    cap: u64,
    sent: &[u8],
) -> Result<(), String> {
    let fail = |why: String| {
        Err(format!(
            "{why}\nstream ({} events):\n{}",
            events.len(),
            dump(events)
        ))
    };
    let mut it = events.iter().enumerate().peekable();
    let mut last_ts = 0u64;
    let mut ts_ok = |d: &DataEvent| {
        let ok = d.ts_ns >= last_ts;
        last_ts = d.ts_ns;
        ok
    };
    for (ci, call) in calls.iter().enumerate() {
        let copied = call.len.min(cap);
        let mut pos = call.off;
        while pos < call.off + copied {
            let Some((i, d)) = it.next() else {
                return fail(format!(
                    "call #{ci} {call:?}: stream ended at pos {pos}, expected bytes up to {}",
                    call.off + copied
                ));
            };
            if d.kind != DataKind::Bytes
                || d.pos != pos
                || d.syscall != call.sys
                || d.msg_len != call.len
                || d.payload.is_empty()
                || d.payload.len() > MAX_PAYLOAD
                || pos + d.payload.len() as u64 > call.off + copied
            {
                return fail(format!(
                    "event #{i} does not continue call #{ci} {call:?} at pos {pos}"
                ));
            }
            let (a, b) = (pos as usize, pos as usize + d.payload.len());
            if sent.get(a..b) != Some(&d.payload[..]) {
                return fail(format!(
                    "event #{i}: payload differs from the bytes sent at {a}..{b}"
                ));
            }
            if !ts_ok(d) {
                return fail(format!("event #{i}: timestamp went backwards"));
            }
            pos += d.payload.len() as u64;
        }
        if call.len > cap {
            let Some((i, d)) = it.next() else {
                return fail(format!(
                    "call #{ci} {call:?}: no TRUNCATED marker after {cap} bytes"
                ));
            };
            let want = DataKind::Truncated {
                missing: call.len - cap,
            };
            if d.kind != want
                || d.pos != call.off + cap
                || !d.payload.is_empty()
                || d.syscall != call.sys
            {
                return fail(format!(
                    "event #{i}: expected {want:?} at pos {} for call #{ci} {call:?}",
                    call.off + cap
                ));
            }
            if !ts_ok(d) {
                return fail(format!("event #{i}: timestamp went backwards"));
            }
        }
    }
    if let Some((i, _)) = it.next() {
        return fail(format!(
            "event #{i} and later: more events than the calls made"
        ));
    }
    Ok(())
}

// ---- sockets -------------------------------------------------------------------------------

/// Both ends of a loopback TCP connection made by this process, and the listener (kept open: it is
/// what makes the accepted side a server socket to /proc-based role resolution).
pub struct Pair {
    pub listener: TcpListener,
    /// The connect()ed end.
    pub client: TcpStream,
    /// The accept()ed end.
    pub server: TcpStream,
}

impl Pair {
    pub fn new() -> io::Result<Pair> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        Pair::on(listener)
    }

    pub fn on(listener: TcpListener) -> io::Result<Pair> {
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok(Pair {
            listener,
            client,
            server,
        })
    }

    pub fn cfd(&self) -> RawFd {
        self.client.as_raw_fd()
    }

    pub fn sfd(&self) -> RawFd {
        self.server.as_raw_fd()
    }
}

// ---- raw syscall flavors -------------------------------------------------------------------

/// How bytes are written: each maps to the syscall the kernel side reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFlavor {
    Write,
    /// libc `send`: there is no send syscall on x86_64/aarch64, glibc issues sendto.
    Send,
    Sendto,
    Sendmsg,
    Writev,
    Sendmmsg,
}

/// How bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvFlavor {
    Read,
    /// libc `recv`: issued as recvfrom.
    Recv,
    Recvfrom,
    Recvmsg,
    Readv,
    Recvmmsg,
}

pub const SEND_FLAVORS: [SendFlavor; 6] = [
    SendFlavor::Write,
    SendFlavor::Send,
    SendFlavor::Sendto,
    SendFlavor::Sendmsg,
    SendFlavor::Writev,
    SendFlavor::Sendmmsg,
];

pub const RECV_FLAVORS: [RecvFlavor; 6] = [
    RecvFlavor::Read,
    RecvFlavor::Recv,
    RecvFlavor::Recvfrom,
    RecvFlavor::Recvmsg,
    RecvFlavor::Readv,
    RecvFlavor::Recvmmsg,
];

impl SendFlavor {
    pub fn syscall(self) -> Syscall {
        match self {
            SendFlavor::Write => Syscall::Write,
            SendFlavor::Send | SendFlavor::Sendto => Syscall::Sendto,
            SendFlavor::Sendmsg => Syscall::Sendmsg,
            SendFlavor::Writev => Syscall::Writev,
            SendFlavor::Sendmmsg => Syscall::Sendmmsg,
        }
    }
}

impl RecvFlavor {
    pub fn syscall(self) -> Syscall {
        match self {
            RecvFlavor::Read => Syscall::Read,
            RecvFlavor::Recv | RecvFlavor::Recvfrom => Syscall::Recvfrom,
            RecvFlavor::Recvmsg => Syscall::Recvmsg,
            RecvFlavor::Readv => Syscall::Readv,
            RecvFlavor::Recvmmsg => Syscall::Recvmmsg,
        }
    }
}

fn iov(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }
}

/// A zeroed msghdr pointing at `iovs`.
fn msghdr(iovs: &mut [libc::iovec]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid "no name, no control" header.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iovs.as_mut_ptr();
    m.msg_iovlen = iovs.len() as _;
    m
}

/// `ret` of a byte-count syscall as a result, retrying on EINTR (`None`).
fn check(ret: isize) -> io::Result<Option<usize>> {
    if ret >= 0 {
        return Ok(Some(ret as usize));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(None)
    } else {
        Err(e)
    }
}

/// One send-family call on `fd` with (a prefix of) `data`; returns the bytes the kernel took.
/// Vectored flavors split `data` into several segments so that gathering is exercised.
pub fn send_once(fd: RawFd, flavor: SendFlavor, data: &[u8]) -> io::Result<usize> {
    loop {
        let (a, rest) = data.split_at(data.len() / 2);
        let (b, c) = rest.split_at(rest.len() / 2);
        // SAFETY (all arms): pointers and lengths describe live buffers owned by this frame.
        let ret = match flavor {
            SendFlavor::Write => unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
            SendFlavor::Send => unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), 0) },
            SendFlavor::Sendto => unsafe {
                libc::sendto(fd, data.as_ptr().cast(), data.len(), 0, std::ptr::null(), 0)
            },
            SendFlavor::Sendmsg => {
                let mut v = [iov(a), iov(rest)];
                let m = msghdr(&mut v);
                unsafe { libc::sendmsg(fd, &m, 0) }
            }
            SendFlavor::Writev => {
                let v = [iov(a), iov(b), iov(c)];
                unsafe { libc::writev(fd, v.as_ptr(), v.len() as i32) }
            }
            SendFlavor::Sendmmsg => {
                // Two messages, the first with two segments (one message when `data` is too
                // small to split without empty segments).
                let mut v1 = [iov(a), iov(b)];
                let mut v2 = [iov(c)];
                let (first, second): (&mut [libc::iovec], &mut [libc::iovec]) = if a.is_empty() {
                    (&mut v2, &mut [])
                } else {
                    (&mut v1, &mut v2)
                };
                let mut msgs = [
                    libc::mmsghdr {
                        msg_hdr: msghdr(first),
                        msg_len: 0,
                    },
                    libc::mmsghdr {
                        msg_hdr: msghdr(second),
                        msg_len: 0,
                    },
                ];
                let vlen = if a.is_empty() { 1 } else { 2 };
                let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), vlen, 0) };
                if n < 0 {
                    -1
                } else {
                    msgs.iter()
                        .take(n as usize)
                        .map(|m| m.msg_len as isize)
                        .sum()
                }
            }
        };
        if let Some(n) = check(ret)? {
            return Ok(n);
        }
    }
}

/// Sends all of `data` with `flavor`; returns each call's byte count.
pub fn send_all(fd: RawFd, flavor: SendFlavor, data: &[u8]) -> io::Result<Vec<usize>> {
    let mut done = 0;
    let mut calls = Vec::new();
    while done < data.len() {
        let n = send_once(fd, flavor, &data[done..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "send took 0 bytes",
            ));
        }
        // sendmmsg may send the first message only partially and still start the second, which
        // would reorder bytes; with these small payloads on a fresh loopback socket it does not,
        // and check_stream would catch it.
        calls.push(n);
        done += n;
    }
    Ok(calls)
}

/// One recv-family call into `buf`; returns the bytes received (0 = EOF), stored from `buf[0]`.
/// Vectored flavors scatter into two halves of `buf`.
pub fn recv_once(fd: RawFd, flavor: RecvFlavor, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len();
    let half = len / 2;
    let base = buf.as_mut_ptr();
    let seg = |off: usize, n: usize| libc::iovec {
        // SAFETY: off ≤ len, so the pointer stays within (or one past) `buf`.
        iov_base: unsafe { base.add(off) }.cast(),
        iov_len: n,
    };
    loop {
        // SAFETY (all arms): pointers and lengths describe `buf`, live and exclusively ours.
        let ret = match flavor {
            RecvFlavor::Read => unsafe { libc::read(fd, base.cast(), len) },
            RecvFlavor::Recv => unsafe { libc::recv(fd, base.cast(), len, 0) },
            RecvFlavor::Recvfrom => {
                // SAFETY: sockaddr_storage is plain data.
                let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let mut flen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                unsafe {
                    libc::recvfrom(fd, base.cast(), len, 0, (&raw mut from).cast(), &mut flen)
                }
            }
            RecvFlavor::Recvmsg => {
                let mut v = [seg(0, half), seg(half, len - half)];
                let mut m = msghdr(&mut v);
                unsafe { libc::recvmsg(fd, &mut m, 0) }
            }
            RecvFlavor::Readv => {
                let v = [seg(0, half), seg(half, len - half)];
                unsafe { libc::readv(fd, v.as_ptr(), v.len() as i32) }
            }
            RecvFlavor::Recvmmsg => {
                // Two one-segment messages (one when `buf` is too small to split: an empty first
                // message would read as EOF). MSG_WAITFORONE: block for the first, then take what
                // is already there for the second.
                let (l1, l2) = if len >= 2 {
                    (half, len - half)
                } else {
                    (len, 0)
                };
                let mut v1 = [seg(0, l1)];
                let mut v2 = [seg(l1, l2)];
                let mut msgs = [
                    libc::mmsghdr {
                        msg_hdr: msghdr(&mut v1),
                        msg_len: 0,
                    },
                    libc::mmsghdr {
                        msg_hdr: msghdr(&mut v2),
                        msg_len: 0,
                    },
                ];
                let vlen = if l2 > 0 { 2 } else { 1 };
                let n = unsafe {
                    libc::recvmmsg(
                        fd,
                        msgs.as_mut_ptr(),
                        vlen,
                        libc::MSG_WAITFORONE,
                        std::ptr::null_mut(),
                    )
                };
                if n < 0 {
                    -1
                } else {
                    let got1 = if n >= 1 { msgs[0].msg_len as usize } else { 0 };
                    let got2 = if n >= 2 { msgs[1].msg_len as usize } else { 0 };
                    // Message 2 landed at l1; move it right after message 1's bytes.
                    buf.copy_within(l1..l1 + got2, got1);
                    (got1 + got2) as isize
                }
            }
        };
        if let Some(n) = check(ret)? {
            return Ok(n);
        }
    }
}

/// Reads exactly `n` bytes with `flavor`; returns them and each call's byte count.
pub fn recv_exact(fd: RawFd, flavor: RecvFlavor, n: usize) -> io::Result<(Vec<u8>, Vec<usize>)> {
    let mut out = vec![0u8; n];
    let mut done = 0;
    let mut calls = Vec::new();
    while done < n {
        let got = recv_once(fd, flavor, &mut out[done..])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {done} of {n} bytes"),
            ));
        }
        calls.push(got);
        done += got;
    }
    Ok((out, calls))
}
