//! TLS plaintext from OpenSSL/BoringSSL's `SSL_write`, `SSL_write_ex`, `SSL_read` and
//! `SSL_read_ex` (the nested-syscall design: no OpenSSL struct offsets are read).
//!
//! - The entry uprobes save (SSL*, buffer, `_ex` byte-count pointer, direction) per thread.
//! - A read/write-family syscall on a tracked socket made while that thread is inside an SSL call
//!   (io.rs `enter` → [`nested_syscall`]) names the socket: the call's fd is recorded, the `SSL*`
//!   remembers it (reads served from OpenSSL's buffer make no syscall), and the connection turns
//!   `PROTO_TLS`: from then on its ciphertext is neither copied nor counted, and both directions'
//!   positions restart at 0 so they count plaintext.
//! - The return probe reads the result (a C `int`; the `_ex` variants return 1 and store the
//!   count through their 4th argument) and copies that many plaintext bytes from the caller's
//!   buffer as `DATA_FLAG_TLS` events of the connection, through the same copy loop as syscalls.
//!   Return probes are uretprobes (see docs/capture.md for the trade-off against RET-offset
//!   uprobes).
//! - Memory-BIO stacks (Node's `TLSWrap`, asyncio's `SSLProtocol`) make no syscall inside the
//!   call: OpenSSL only fills a buffer, and the program writes it to the socket afterwards. A call
//!   whose `SSL*` has no socket leaves it in [`SSL_UNBOUND`] for its thread, and the thread's next
//!   write on a tracked socket that is not TLS yet, if its bytes start with a TLS record header,
//!   names the socket ([`bind_by_record`]): the handshake's first flight, so the first plaintext
//!   already finds it.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use llm_observer_common::{
    ConnState, DATA_FLAG_TLS, DATA_FLAG_TRUNCATED, DIR_EGRESS, DIR_INGRESS, PROTO_OTHER,
    PROTO_SEEDED, PROTO_TLS, PROTO_UNKNOWN, Stat, Syscall, conn_key,
};

use crate::{CONNS, SEGMENTS, config, io, may_track, stat_add, wanted};

/// One thread's SSL call in flight (entry → return).
#[repr(C)]
#[derive(Clone, Copy)]
struct SslCall {
    ssl: u64,
    buf: u64,
    /// `_ex` variants: where the byte count is stored (0: the plain variants return it).
    count_ptr: u64,
    /// Generation of the connection of `fd` when a nested syscall named it.
    generation: u64,
    /// The socket a nested syscall touched, or -1.
    fd: i32,
    /// `DIR_EGRESS` (write), `DIR_INGRESS` (read) or `DIR_HANDSHAKE`.
    dir: u32,
}

/// Key of [`SSL_FDS`]: the `SSL*` of one process.
#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

/// The socket an `SSL*` last used.
#[repr(C)]
#[derive(Clone, Copy)]
struct SslFd {
    generation: u64,
    fd: i32,
    _pad: u32,
}

/// SSL calls in flight, by pid_tgid.
#[map]
static SSL_ACTIVE: HashMap<u64, SslCall> = HashMap::with_max_entries(16384, 0);

/// The last socket of each `SSL*`, for reads OpenSSL serves from its own buffer (no syscall inside
/// the call). An LRU: an `SSL*` freed without our knowledge must not hold a slot forever, and an
/// evicted one only costs the fallback for its next buffered read (counted as unmatched).
#[map]
static SSL_FDS: LruHashMap<SslKey, SslFd> = LruHashMap::with_max_entries(65536, 0);

/// Per thread (pid_tgid), the `SSL*` of its last SSL call that touched no socket and whose `SSL*`
/// had none remembered: a memory-BIO stack's, waiting for the write that carries its records (see
/// [`bind_by_record`]). An LRU: threads exit without telling this map.
#[map]
static SSL_UNBOUND: LruHashMap<u64, Unbound> = LruHashMap::with_max_entries(16384, 0);

/// A value of [`SSL_UNBOUND`].
#[repr(C)]
#[derive(Clone, Copy)]
struct Unbound {
    ssl: u64,
    /// When the call returned: only a write soon after it is taken for its records.
    ts: u64,
}

/// How long after an unbound SSL call its thread's write may carry its records. Memory-BIO
/// stacks write them within microseconds (in the same callback); a stale entry must not bind an
/// unrelated write much later.
const UNBOUND_WINDOW_NS: u64 = 1_000_000_000;

/// Largest TLS record body (2^14 plaintext plus the most any cipher adds, RFC 8446 §5.2).
const MAX_RECORD_LEN: u16 = (1 << 14) + 256;

/// [`SslCall::dir`] of a handshake call.
const DIR_HANDSHAKE: u32 = 2;

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // A process without tracked sockets has none to tie plaintext to.
    if !wanted(&config(), tgid) || !may_track(tgid) {
        return 0;
    }
    let Some(ssl) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let buf = ctx.arg::<u64>(1).unwrap_or(0);
    let count_ptr = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let call = SslCall {
        ssl,
        buf,
        count_ptr,
        generation: 0,
        fd: -1,
        dir,
    };
    if SSL_ACTIVE.insert(pid_tgid, call, 0).is_err() {
        stat_add(Stat::InflightMapFull, 1);
    }
    0
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS as u32, false)
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS as u32, true)
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS as u32, false)
}

/// `SSL_do_handshake`, `SSL_connect`, `SSL_accept`: no plaintext, but their syscalls mark the
/// socket as TLS before its first byte, so the handshake is never taken for another protocol.
#[uprobe]
pub fn ssl_handshake(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_HANDSHAKE, false)
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS as u32, true)
}

/// Called by every data syscall's enter probe on a tracked socket (`conn`; `buf` and `count` are
/// the call's second and third arguments): inside an SSL call, that socket is the call's, and it
/// carries TLS; outside one, a write may carry the records of a memory-BIO `SSL*`
/// ([`bind_by_record`]).
#[inline(always)]
pub fn nested_syscall(
    pid_tgid: u64,
    fd: i32,
    conn: *const ConnState,
    sys: Syscall,
    buf: u64,
    count: u64,
) {
    let conn = conn as *mut ConnState;
    let Some(call) = SSL_ACTIVE.get_ptr_mut(pid_tgid) else {
        if sys.direction() == DIR_EGRESS {
            bind_by_record(pid_tgid, fd, conn, sys, buf, count);
        }
        return;
    };
    // SAFETY: map value pointers; plain integers.
    unsafe {
        (*call).fd = fd;
        (*call).generation = (*conn).generation;
        bind(pid_tgid, (*call).ssl, fd, conn);
    }
}

/// Turns a connection to plaintext: from now on its ciphertext is neither copied nor counted.
#[inline(always)]
pub(crate) fn mark_tls(conn: *mut ConnState) {
    // SAFETY: map value pointer; plain integers.
    unsafe {
        if (*conn).proto != PROTO_TLS {
            // Plaintext positions start here; the ciphertext before (the handshake) was counted
            // under the old classification.
            (*conn).proto = PROTO_TLS;
            (*conn).wr_pos = 0;
            (*conn).rd_pos = 0;
        }
    }
}

/// Ties `ssl` to the socket `fd` of this process and turns the connection to plaintext.
#[inline(always)]
fn bind(pid_tgid: u64, ssl: u64, fd: i32, conn: *mut ConnState) {
    mark_tls(conn);
    // SAFETY: map value pointer; plain integers.
    unsafe {
        let key = SslKey {
            tgid: (pid_tgid >> 32) as u32,
            _pad: 0,
            ssl,
        };
        let _ = SSL_FDS.insert(
            key,
            SslFd {
                generation: (*conn).generation,
                fd,
                _pad: 0,
            },
            0,
        );
    }
}

/// A memory-BIO stack's write: the thread's last SSL call, within [`UNBOUND_WINDOW_NS`], named
/// no socket, and this write on a tracked socket that is not TLS yet starts with a whole TLS
/// record header. Such stacks write the records an SSL call produced right after it, from the same
/// thread (Node's `TLSWrap::EncOut` after `SSL_write`/`SSL_read`, asyncio's transport write after
/// `SSLObject.write`), so this socket is that `SSL*`'s. The first such write of a connection is the
/// handshake's first flight (the ClientHello, or the server's reply to one): the plaintext after
/// it finds its socket.
///
/// What a header must be depends on what the socket carried so far: on a fresh socket only a
/// handshake record (type 22) binds; a socket classified as another protocol, or one that existed
/// before the agent (its bytes unknown), may also be bound by an application-data record (a
/// connection made before the agent started is bound by its next record). A socket classified as
/// HTTP, or already TLS (bound to its own `SSL*`), is never rebound.
#[inline(always)]
fn bind_by_record(
    pid_tgid: u64,
    fd: i32,
    conn: *mut ConnState,
    sys: Syscall,
    buf: u64,
    count: u64,
) {
    // SAFETY: map value pointer; a plain integer.
    let proto = unsafe { (*conn).proto };
    let any_record = match proto {
        PROTO_UNKNOWN => false,
        PROTO_OTHER | PROTO_SEEDED => true,
        _ => return,
    };
    // SAFETY: value copied out of the map.
    let Some(unbound) = (unsafe { SSL_UNBOUND.get(pid_tgid) }).copied() else {
        return;
    };
    // SAFETY: helper call.
    if unsafe { bpf_ktime_get_ns() }.saturating_sub(unbound.ts) > UNBOUND_WINDOW_NS {
        let _ = SSL_UNBOUND.remove(pid_tgid);
        return;
    }
    let Some(h) = first_bytes(sys, buf, count) else {
        return;
    };
    let version = u16::from_be_bytes([h[1], h[2]]);
    let len = u16::from_be_bytes([h[3], h[4]]);
    let kind_ok = h[0] == 22 || (any_record && (20..=23).contains(&h[0]));
    if !kind_ok || !(0x0301..=0x0304).contains(&version) || len == 0 || len > MAX_RECORD_LEN {
        return;
    }
    let _ = SSL_UNBOUND.remove(pid_tgid);
    bind(pid_tgid, unbound.ssl, fd, conn);
    stat_add(Stat::TlsRecordBinds, 1);
}

/// The first 5 bytes (a TLS record header) a write-family call sends: from its buffer (`write`,
/// `sendto`, whose `count` is the third argument), its first iovec (`writev`) or its (first)
/// message's first iovec (`sendmsg`, `sendmmsg`: an mmsghdr starts with a msghdr). `None` when the
/// memory cannot be read or the first piece is shorter.
#[inline(always)]
fn first_bytes(sys: Syscall, buf: u64, count: u64) -> Option<[u8; 5]> {
    // struct iovec: base at 0, len at 8.
    let iov = match sys {
        Syscall::Write | Syscall::Sendto => {
            if count < 5 {
                return None;
            }
            // SAFETY: user memory through the checked helper.
            return unsafe { bpf_probe_read_user(buf as *const [u8; 5]) }.ok();
        }
        Syscall::Writev => buf,
        // SAFETY: as above.
        Syscall::Sendmsg | Syscall::Sendmmsg => unsafe {
            bpf_probe_read_user((buf + io::MSGHDR_IOV) as *const u64).ok()?
        },
        _ => return None,
    };
    // SAFETY: as above.
    let (base, len) = unsafe {
        (
            bpf_probe_read_user(iov as *const u64).ok()?,
            bpf_probe_read_user((iov + 8) as *const u64).ok()?,
        )
    };
    if len < 5 {
        return None;
    }
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(base as *const [u8; 5]) }.ok()
}

/// `SSL_free`: the `SSL*` is gone, and its address will be handed to a later `SSL_new` (the
/// allocator reuses it at once): what it was tied to must not carry over to that new connection.
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !may_track(tgid) {
        return 0;
    }
    let Some(ssl) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let _ = SSL_FDS.remove(SslKey { tgid, _pad: 0, ssl });
    // SAFETY: value copied out of the map.
    if unsafe { SSL_UNBOUND.get(pid_tgid) }.is_some_and(|u| u.ssl == ssl) {
        let _ = SSL_UNBOUND.remove(pid_tgid);
    }
    0
}

/// The return of any of the four calls (one program attached to each).
#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let Some(call) = (unsafe { SSL_ACTIVE.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = SSL_ACTIVE.remove(pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    // The socket: the nested syscall's, else the one the `SSL*` last used (reads OpenSSL serves
    // from its buffer make no syscall). With neither, a memory-BIO stack's next write names it.
    let remembered = if call.fd >= 0 {
        None
    } else {
        let key = SslKey {
            tgid,
            _pad: 0,
            ssl: call.ssl,
        };
        // SAFETY: value copied out of the map.
        let known = unsafe { SSL_FDS.get(key) }.copied().and_then(|s| {
            tls_conn(tgid, s.fd, s.generation).map(|conn| (s.fd, s.generation, conn))
        });
        if known.is_none() {
            // A remembered socket that is gone (closed, its fd reused) is forgotten too: an
            // `SSL_free` not seen (the probe attached late) must not leave the address tied.
            let _ = SSL_FDS.remove(key);
            let unbound = Unbound {
                ssl: call.ssl,
                // SAFETY: helper call.
                ts: unsafe { bpf_ktime_get_ns() },
            };
            let _ = SSL_UNBOUND.insert(pid_tgid, unbound, 0);
        }
        known
    };
    if call.dir == DIR_HANDSHAKE {
        return 0;
    }
    // A C int: negative is an error or "want read/write"; 0 a closed or failed call.
    let ret: i64 = ctx.ret::<i32>() as i64;
    let n: u64 = if call.count_ptr != 0 {
        if ret != 1 {
            return 0;
        }
        // SAFETY: user memory through the checked helper.
        match unsafe { bpf_probe_read_user(call.count_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => return 0,
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return 0;
    };
    if n == 0 {
        return 0;
    }
    let target = if call.fd >= 0 {
        tls_conn(tgid, call.fd, call.generation).map(|conn| (call.fd, call.generation, conn))
    } else {
        remembered
    };
    let Some((fd, generation, conn)) = target else {
        stat_add(Stat::TlsUnmatchedBytes, n);
        return 0;
    };
    emit_plaintext(
        pid_tgid,
        fd,
        generation,
        conn,
        call.buf,
        n,
        call.dir == DIR_EGRESS as u32,
    );
    0
}

/// Socket `fd` of `tgid`'s connection, if it is still the TLS connection of `generation` (not
/// closed, its fd not reused for another socket).
#[inline(always)]
pub(crate) fn tls_conn(tgid: u32, fd: i32, generation: u64) -> Option<*mut ConnState> {
    let conn = CONNS.get_ptr_mut(conn_key(tgid, fd))?;
    // SAFETY: map value pointer; plain integers.
    let live = unsafe { (*conn).generation == generation && (*conn).proto == PROTO_TLS };
    live.then_some(conn)
}

/// Copies `n` plaintext bytes at `buf`, which a TLS call of `pid_tgid` moved on its socket `fd`
/// (of `generation`; `conn` from [`tls_conn`]), as `DATA_FLAG_TLS` events at the connection's
/// plaintext position, through the same copy loop, cap and truncation markers as syscalls. Shared
/// by the OpenSSL and Go probes.
#[inline(always)]
pub(crate) fn emit_plaintext(
    pid_tgid: u64,
    fd: i32,
    generation: u64,
    conn: *mut ConnState,
    buf: u64,
    n: u64,
    egress: bool,
) {
    // SAFETY: map value pointer.
    let pos = unsafe {
        if egress {
            let p = (*conn).wr_pos;
            (*conn).wr_pos += n;
            p
        } else {
            let p = (*conn).rd_pos;
            (*conn).rd_pos += n;
            p
        }
    };
    let (dir, sys) = if egress {
        (DIR_EGRESS, Syscall::SslWrite)
    } else {
        (DIR_INGRESS, Syscall::SslRead)
    };
    let Some(segs) = SEGMENTS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    unsafe {
        (*segs).n = 0;
        io::push(&mut *segs, buf, n);
    }
    let mut ev = io::Meta {
        pid_tgid,
        fd,
        generation,
        // SAFETY: helper call.
        now: unsafe { bpf_ktime_get_ns() },
        pos,
        total: n,
        dir,
        sys,
        flags: DATA_FLAG_TLS,
    };
    let sent = io::copy_out(&ev, segs, io::call_cap(&config()));
    if sent < n {
        ev.pos = pos + sent;
        stat_add(Stat::TruncatedBytes, n - sent);
        io::marker(&ev, DATA_FLAG_TRUNCATED, n - sent);
    }
}
