//! TLS plaintext from Go's `crypto/tls`: `(*Conn).Write` and `(*Conn).Read` of unstripped Go
//! binaries (Go ≥ 1.17 on x86-64, the register ABI).
//!
//! Go does not use OpenSSL, and its goroutines move between threads and their stacks move in
//! memory, so the OpenSSL design does not carry over:
//! - **Arguments in registers** (ABIInternal): receiver `*Conn` in RAX, `b.ptr` in RBX, `b.len`
//!   in RCX; the result `n` in RAX at the return; the running goroutine's `g` in R14 throughout.
//! - **Keyed by goroutine, not thread**: a call in flight is saved under (tgid, g), since a
//!   goroutine that blocks inside `Read` may resume on another thread and its thread may run other
//!   goroutines meanwhile.
//! - **Return points are uprobes on each `RET` instruction** (user space decodes the function to
//!   find them): a uretprobe rewrites the return address on the stack, which Go's stack copying
//!   does not expect (golang/go#22008).
//! - **The socket is read from the `Conn`**, not from a nested syscall (the syscall may run on
//!   another thread after the goroutine parks): `Conn.conn` is a `net.Conn` interface whose data
//!   word (offset 8) points at a `*net.TCPConn`, whose first word is its `*netFD`, whose
//!   `pfd.Sysfd` follows the 16-byte `fdMutex` (offset 16). These layouts have not changed from
//!   Go 1.12 to 1.23. The fd must name a tracked socket of the process, so a `Conn` over another
//!   kind of `net.Conn` (a wrapper type) names nothing in the common case; a wrapper whose first
//!   words happen to lead to a tracked fd would be misattributed (documented in docs/capture.md).
//!
//! At entry the connection turns `PROTO_TLS` (before the handshake's own writes, so its ciphertext
//! is never taken for another protocol); at the return the bytes moved are copied like OpenSSL's.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use llm_observer_common::{DIR_EGRESS, DIR_INGRESS, PROTO_JSONRPC, PROTO_PIPE, Stat, conn_key};

use crate::{CONNS, config, may_track, stat_add, tls, wanted};

/// A goroutine of one process.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoKey {
    tgid: u32,
    _pad: u32,
    g: u64,
}

/// One `Read`/`Write` in flight (entry → a `RET`).
#[repr(C)]
#[derive(Clone, Copy)]
struct GoCall {
    buf: u64,
    generation: u64,
    fd: i32,
    dir: u32,
}

/// Calls in flight by goroutine. An LRU: a call that panics out of the function never reaches a
/// `RET`, and must not hold its slot forever.
#[map]
static GO_ACTIVE: LruHashMap<GoKey, GoCall> = LruHashMap::with_max_entries(16384, 0);

/// Offsets of the fd chain (see the module docs).
const CONN_DATA: u64 = 8;
const NETFD_SYSFD: u64 = 16;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> *const pt_regs {
    ctx.regs as *const pt_regs
}

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u8) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !wanted(&config(), tgid) || !may_track(tgid) {
        return 0;
    }
    let r = regs(ctx);
    // SAFETY: the probe's register context (read-only).
    let (c, buf, g) = unsafe { ((*r).rax, (*r).rbx, (*r).r14) };
    // SAFETY: user memory through the checked helper.
    let fd = unsafe {
        let Ok(data) = bpf_probe_read_user((c + CONN_DATA) as *const u64) else {
            return 0;
        };
        let Ok(netfd) = bpf_probe_read_user(data as *const u64) else {
            return 0;
        };
        let Ok(fd) = bpf_probe_read_user((netfd + NETFD_SYSFD) as *const i64) else {
            return 0;
        };
        fd
    };
    if !(0..=i32::MAX as i64).contains(&fd) {
        return 0;
    }
    let fd = fd as i32;
    let Some(conn) = CONNS.get_ptr_mut(conn_key(tgid, fd)) else {
        return 0;
    };
    // SAFETY: map value pointer; plain integers.
    let (proto, generation) = unsafe { ((*conn).proto, (*conn).generation) };
    if proto == PROTO_PIPE || proto == PROTO_JSONRPC {
        return 0;
    }
    tls::mark_tls(conn);
    let key = GoKey { tgid, _pad: 0, g };
    let call = GoCall {
        buf,
        generation,
        fd,
        dir: dir as u32,
    };
    if GO_ACTIVE.insert(key, call, 0).is_err() {
        stat_add(Stat::InflightMapFull, 1);
    }
    0
}

#[inline(always)]
fn ret(ctx: &ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let r = regs(ctx);
    // SAFETY: the probe's register context (read-only).
    let (n, g) = unsafe { ((*r).rax as i64, (*r).r14) };
    let key = GoKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        g,
    };
    // SAFETY: value copied out before removal.
    let Some(call) = (unsafe { GO_ACTIVE.get(key) }).copied() else {
        return 0;
    };
    let _ = GO_ACTIVE.remove(key);
    if n <= 0 {
        return 0;
    }
    tls::emit_plaintext(
        pid_tgid,
        call.fd,
        call.generation,
        call.buf,
        n as u64,
        call.dir == DIR_EGRESS as u32,
    );
    0
}

#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS)
}

#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS)
}

/// Attached to every `RET` of both functions: the saved call says which it was.
#[uprobe]
pub fn go_tls_ret(ctx: ProbeContext) -> u32 {
    ret(&ctx)
}
