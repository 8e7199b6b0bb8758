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

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use llm_observer_common::{
    ConnState, DATA_FLAG_TLS, DATA_FLAG_TRUNCATED, DIR_EGRESS, DIR_INGRESS, MAX_CAPTURE_PER_CALL,
    PROTO_TLS, Stat, Syscall, conn_key,
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

/// Called by every data syscall's enter probe on a tracked socket (`conn`): inside an SSL call,
/// that socket is the call's, and it carries TLS.
#[inline(always)]
pub fn nested_syscall(pid_tgid: u64, fd: i32, conn: *const ConnState) {
    let Some(call) = SSL_ACTIVE.get_ptr_mut(pid_tgid) else {
        return;
    };
    let conn = conn as *mut ConnState;
    // SAFETY: map value pointers; plain integers.
    unsafe {
        (*call).fd = fd;
        (*call).generation = (*conn).generation;
        if (*conn).proto != PROTO_TLS {
            // Plaintext positions start here; the ciphertext before (the handshake) was counted
            // under the old classification.
            (*conn).proto = PROTO_TLS;
            (*conn).wr_pos = 0;
            (*conn).rd_pos = 0;
        }
        let key = SslKey {
            tgid: (pid_tgid >> 32) as u32,
            _pad: 0,
            ssl: (*call).ssl,
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

/// The return of any of the four calls (one program attached to each).
#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let Some(call) = (unsafe { SSL_ACTIVE.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = SSL_ACTIVE.remove(pid_tgid);
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
    let tgid = (pid_tgid >> 32) as u32;
    let (fd, generation) = if call.fd >= 0 {
        (call.fd, call.generation)
    } else {
        let key = SslKey {
            tgid,
            _pad: 0,
            ssl: call.ssl,
        };
        // SAFETY: value copied out of the map.
        match unsafe { SSL_FDS.get(key) }.copied() {
            Some(s) => (s.fd, s.generation),
            None => {
                stat_add(Stat::TlsUnmatchedBytes, n);
                return 0;
            }
        }
    };
    let Some(conn) = CONNS.get_ptr_mut(conn_key(tgid, fd)) else {
        stat_add(Stat::TlsUnmatchedBytes, n);
        return 0;
    };
    // SAFETY: map value pointer; plain integers.
    let (cur_gen, proto) = unsafe { ((*conn).generation, (*conn).proto) };
    if cur_gen != generation || proto != PROTO_TLS {
        // The fd was closed and reused meanwhile.
        stat_add(Stat::TlsUnmatchedBytes, n);
        return 0;
    }
    // SAFETY: map value pointer.
    let pos = unsafe {
        if call.dir == DIR_EGRESS as u32 {
            let p = (*conn).wr_pos;
            (*conn).wr_pos += n;
            p
        } else {
            let p = (*conn).rd_pos;
            (*conn).rd_pos += n;
            p
        }
    };
    let (dir, sys) = if call.dir == DIR_EGRESS as u32 {
        (DIR_EGRESS, Syscall::SslWrite)
    } else {
        (DIR_INGRESS, Syscall::SslRead)
    };
    let Some(segs) = SEGMENTS.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    unsafe {
        (*segs).n = 0;
        io::push(&mut *segs, call.buf, n);
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
    let cfg = config();
    let cap = if cfg.max_bytes_per_call == 0 || cfg.max_bytes_per_call > MAX_CAPTURE_PER_CALL {
        MAX_CAPTURE_PER_CALL as u64
    } else {
        cfg.max_bytes_per_call as u64
    };
    let sent = io::copy_out(&ev, segs, cap);
    if sent < n {
        ev.pos = pos + sent;
        stat_add(Stat::TruncatedBytes, n - sent);
        io::marker(&ev, DATA_FLAG_TRUNCATED, n - sent);
    }
    0
}
