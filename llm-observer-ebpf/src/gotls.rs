//! TLS plaintext from Go's `crypto/tls`: `(*Conn).Write` and `(*Conn).Read` of unstripped Go
//! binaries (x86-64, the register ABI; user space takes Go ≥ 1.18).
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
//!   `pfd.Sysfd` follows the 16-byte `fdMutex` (offset 16); checked on Go 1.19, and the same
//!   offsets other agents hard-code across releases. The fd must name a tracked socket of the
//!   process, so a `Conn` over another
//!   kind of `net.Conn` (a wrapper type) names nothing in the common case; a wrapper whose first
//!   words happen to lead to a tracked fd would be misattributed (documented in docs/capture.md).
//!
//! At entry the connection turns `PROTO_TLS`; `(*Conn).handshakeContext` (which net/http calls
//! before the first `Read`/`Write`) gets an entry probe that only does that, so the handshake's
//! ciphertext is not taken for another protocol. At the return the bytes moved are copied like
//! OpenSSL's.

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
/// `RET`, and a process that exits while goroutines are blocked in `Read` (every keep-alive
/// connection's reader) never comes back for its entries: neither may hold a slot forever. Each
/// idle keep-alive or HTTP/2 connection of a Go process holds one (its reader's `Read`), so the map
/// is sized for that many node-wide; past it, the oldest blocked `Read` is evicted and its answer
/// is not captured (not counted: LRU eviction is silent).
#[map]
static GO_ACTIVE: LruHashMap<GoKey, GoCall> = LruHashMap::with_max_entries(65536, 0);

/// Offsets of the fd chain (see the module docs).
const CONN_DATA: u64 = 8;
const NETFD_SYSFD: u64 = 16;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> *const pt_regs {
    ctx.regs as *const pt_regs
}

/// The tracked socket of the `*Conn` in RAX (see the module docs), turned to plaintext: its fd and
/// generation. `None` for a process with no tracked socket or a `Conn` over anything else.
#[inline(always)]
fn conn_socket(ctx: &ProbeContext, tgid: u32) -> Option<(i32, u64)> {
    // SAFETY: the probe's register context (read-only).
    let c = unsafe { (*regs(ctx)).rax };
    // SAFETY: user memory through the checked helper.
    let fd = unsafe {
        let data = bpf_probe_read_user((c + CONN_DATA) as *const u64).ok()?;
        let netfd = bpf_probe_read_user(data as *const u64).ok()?;
        bpf_probe_read_user((netfd + NETFD_SYSFD) as *const i64).ok()?
    };
    if !(0..=i32::MAX as i64).contains(&fd) {
        return None;
    }
    let fd = fd as i32;
    let conn = CONNS.get_ptr_mut(conn_key(tgid, fd))?;
    // SAFETY: map value pointer; plain integers.
    let (proto, generation) = unsafe { ((*conn).proto, (*conn).generation) };
    if proto == PROTO_PIPE || proto == PROTO_JSONRPC {
        return None;
    }
    tls::mark_tls(conn);
    Some((fd, generation))
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
    let (buf, g) = unsafe { ((*r).rbx, (*r).r14) };
    let key = GoKey { tgid, _pad: 0, g };
    let Some((fd, generation)) = conn_socket(ctx, tgid) else {
        // An entry this goroutine left (a call that never reached a `RET`) must not be taken
        // for this call's at its return.
        let _ = GO_ACTIVE.remove(key);
        return 0;
    };
    let call = GoCall {
        buf,
        generation,
        fd,
        dir: dir as u32,
    };
    // An LRU insert makes room rather than failing (see GO_ACTIVE).
    let _ = GO_ACTIVE.insert(key, call, 0);
    0
}

#[inline(always)]
fn ret(ctx: &ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // No entry can exist for a process without the bit (entries are made only with it).
    if !may_track((pid_tgid >> 32) as u32) {
        return 0;
    }
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
    let Some(conn) = tls::tls_conn(key.tgid, call.fd, call.generation) else {
        // The socket was closed (its fd perhaps reused) while the call ran.
        stat_add(Stat::TlsUnmatchedBytes, n as u64);
        return 0;
    };
    tls::emit_plaintext(
        pid_tgid,
        call.fd,
        call.generation,
        conn,
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

/// `(*Conn).handshakeContext` entry: its socket turns to plaintext before the handshake's records
/// are written or read (nothing is saved; the handshake has no plaintext).
#[uprobe]
pub fn go_tls_handshake(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if wanted(&config(), tgid) && may_track(tgid) {
        let _ = conn_socket(&ctx, tgid);
    }
    0
}

/// Attached to every `RET` of both functions: the saved call says which it was.
#[uprobe]
pub fn go_tls_ret(ctx: ProbeContext) -> u32 {
    ret(&ctx)
}
