//! Sockets passed between processes over unix sockets (`SCM_RIGHTS`): the receiver's copy is
//! tracked from its first byte, so a server that accepts in one process and serves in another
//! (a master handing connections to workers) is measured in the process that serves.
//!
//! Hook choice: the data path's own `sendmsg`/`recvmsg` tracepoints. A pass is rare, so the cost
//! sits where it is cheap: the sender is already a tracked process (it holds the socket) and its
//! `sendmsg` on an untracked fd (the unix socket) is checked for an `SCM_RIGHTS` message naming a
//! tracked fd — that leaves a ticket. A receiver is usually already blocked in `recvmsg` when the
//! ticket is issued, so it is the `recvmsg` exit that looks: every exit of any process pays one
//! array load to see whether a ticket is out, and only while one is (for at most `TICKET_NS`) does
//! it find its `msghdr` and read the fds it was given. On x86_64 the exit reads the `msghdr`
//! pointer from the task's saved user registers (`bpf_task_pt_regs`: the syscall's arguments are
//! still there), so an untracked `recvmsg` costs nothing more. Elsewhere every `recvmsg` with room
//! for an `SCM_RIGHTS` message (a control buffer of at least `CMSG_LEN(sizeof(int))` bytes: one
//! 8-byte user read to tell) saves its `msghdr` per thread at enter, which cost ~150 ns per
//! untracked unix message pair in `cargo xtask bench` (an LRU insert, a lookup and a delete).
//! The i-th fd received is the i-th fd sent,
//! so each one the sender tracked is tracked in the receiver, named after the sender's fd for
//! user space to carry its addresses over. Passes are told apart by their time only: two
//! processes passing tracked sockets within the same instant may swap tickets (user space then
//! resolves the addresses from /proc instead).

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, LruHashMap},
    programs::TracePointContext,
};
use llm_observer_common::{CONFIG_FLAG_EXIT_REGS_X86_64, TP_RET, conn_key};

use crate::{CONNS, ConnInfo, config, ctx_load, track_with};

/// Fds of one `SCM_RIGHTS` message looked at (servers pass one connection at a time).
const MAX_PASSED: usize = 4;
/// How long a ticket waits for its receiver.
const TICKET_NS: u64 = 1_000_000_000;

/// `struct user_msghdr`: msg_control @32, msg_controllen @40. `struct cmsghdr`: len (8), level
/// (4), type (4), then the data.
const MSGHDR_CONTROL: u64 = 32;
const MSGHDR_CONTROLLEN: u64 = 40;
const CMSG_DATA: u64 = 16;
const SOL_SOCKET: i32 = 1;
const SCM_RIGHTS: i32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct Ticket {
    /// When the pass was sent (0: no ticket out).
    ts: u64,
    sender: u32,
    /// Fds in the message.
    n: u32,
    /// The sender's fds, -1 where not tracked; the role of each tracked one.
    fds: [i32; MAX_PASSED],
    roles: [u32; MAX_PASSED],
}

#[map]
static PASS_TICKET: Array<Ticket> = Array::with_max_entries(1, 0);

/// `recvmsg` calls in flight that could receive fds: the thread's msghdr pointer. Removed at the
/// call's exit; LRU so that calls whose exit was never seen (the agent attached mid-call) go by
/// themselves.
#[map]
static RECEIVING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

/// `CMSG_LEN(sizeof(int))`: the least control buffer that can carry one fd (CPython's
/// `socket.recv_fds` asks for exactly that).
const MIN_RIGHTS_CONTROL: u64 = CMSG_DATA + 4;

/// The `SCM_RIGHTS` fds of a message header (`control`, `controllen` read from it): how many,
/// and the first `MAX_PASSED`.
#[inline(always)]
fn rights(msghdr: u64) -> Option<(u32, [i32; MAX_PASSED])> {
    // SAFETY: user memory through the checked helper; a fault is None.
    let (control, controllen) = unsafe {
        (
            bpf_probe_read_user((msghdr + MSGHDR_CONTROL) as *const u64).ok()?,
            bpf_probe_read_user((msghdr + MSGHDR_CONTROLLEN) as *const u64).ok()?,
        )
    };
    if control == 0 || controllen < CMSG_DATA + 4 {
        return None;
    }
    // SAFETY: as above.
    let (len, level, kind) = unsafe {
        (
            bpf_probe_read_user(control as *const u64).ok()?,
            bpf_probe_read_user((control + 8) as *const i32).ok()?,
            bpf_probe_read_user((control + 12) as *const i32).ok()?,
        )
    };
    if level != SOL_SOCKET || kind != SCM_RIGHTS || len < CMSG_DATA + 4 {
        return None;
    }
    let n = ((len - CMSG_DATA) / 4) as u32;
    let mut fds = [-1i32; MAX_PASSED];
    for (i, fd) in fds.iter_mut().enumerate() {
        if (i as u32) < n {
            // SAFETY: as above.
            *fd =
                unsafe { bpf_probe_read_user((control + CMSG_DATA + 4 * i as u64) as *const i32) }
                    .unwrap_or(-1);
        }
    }
    Some((n, fds))
}

/// `sendmsg` of a tracked process on an fd it does not track: leaves a ticket when the message
/// passes a tracked socket.
#[inline(always)]
pub fn on_send(tgid: u32, msghdr: u64) {
    let Some((n, fds)) = rights(msghdr) else {
        return;
    };
    let mut t = Ticket {
        ts: 0,
        sender: tgid,
        n,
        fds: [-1; MAX_PASSED],
        roles: [0; MAX_PASSED],
    };
    let mut any = false;
    for (i, &fd) in fds.iter().enumerate() {
        if fd < 0 {
            continue;
        }
        if let Some(c) = CONNS.get_ptr(conn_key(tgid, fd)) {
            // Pipes are not passed sockets (a receiver would classify their bytes as HTTP).
            // SAFETY: map value pointer, plain integer.
            if crate::pipes::is_pipe(unsafe { (*c).proto }) {
                continue;
            }
            t.fds[i] = fd;
            // SAFETY: map value pointer, plain integer.
            t.roles[i] = unsafe { (*c).role };
            any = true;
        }
    }
    if !any {
        return;
    }
    // SAFETY: helper call.
    t.ts = unsafe { bpf_ktime_get_ns() };
    if let Some(p) = PASS_TICKET.get_ptr_mut(0) {
        // SAFETY: the map's one value; a concurrent pass may overwrite it (see the module doc).
        unsafe { *p = t };
    }
}

/// The ticket's time when one is out and fresh, else 0.
#[inline(always)]
fn ticket_out() -> u64 {
    let ts = match PASS_TICKET.get(0) {
        Some(t) => t.ts,
        None => 0,
    };
    if ts == 0 {
        return 0;
    }
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(ts) > TICKET_NS {
        return 0;
    }
    ts
}

/// Whether `recvmsg`'s exit reads its `msghdr` from the saved registers (else the enter saves it).
#[inline(always)]
fn exit_reads_regs() -> bool {
    config().flags & CONFIG_FLAG_EXIT_REGS_X86_64 != 0
}

/// x86_64 `struct pt_regs`: `si`, a syscall's second argument (r15 … dx come first).
const PT_REGS_SI: u64 = 13 * 8;

/// The current syscall's second argument, from the user registers the kernel saved at entry
/// (x86_64; the syscall reads them and writes only `ax`).
#[inline(always)]
fn saved_arg1() -> Option<u64> {
    // SAFETY: helper calls; the task pointer is the current task's (BTF-typed, never null), and
    // the register read goes through the checked kernel-read helper.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf());
        if regs == 0 {
            return None;
        }
        bpf_probe_read_kernel((regs as u64 + PT_REGS_SI) as *const u64).ok()
    }
}

/// `recvmsg` enter of any process: saves the msghdr of a call that could receive fds (only where
/// the exit cannot read it from the saved registers).
#[inline(always)]
pub fn on_recv_enter(pid_tgid: u64, msghdr: u64) {
    if exit_reads_regs() {
        return;
    }
    // SAFETY: user memory through the checked helper; a fault is 0.
    let controllen =
        unsafe { bpf_probe_read_user((msghdr + MSGHDR_CONTROLLEN) as *const u64) }.unwrap_or(0);
    if controllen < MIN_RIGHTS_CONTROL {
        return;
    }
    let _ = RECEIVING.insert(pid_tgid, msghdr, 0);
}

/// `recvmsg` exit of any process: tracks the passed sockets it was given.
#[inline(always)]
pub fn on_recv_exit(ctx: &TracePointContext, pid_tgid: u64) {
    let msghdr = if exit_reads_regs() {
        if ticket_out() == 0 {
            return;
        }
        let Some(m) = saved_arg1() else {
            return;
        };
        m
    } else {
        // SAFETY: value copied out before removal.
        let Some(m) = (unsafe { RECEIVING.get(pid_tgid) }).copied() else {
            return;
        };
        let _ = RECEIVING.remove(pid_tgid);
        m
    };
    let ticket_ts = ticket_out();
    if ticket_ts == 0 {
        return;
    }
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx_load::<i64>(ctx, TP_RET) };
    if ret < 0 {
        return;
    }
    let Some((n, fds)) = rights(msghdr) else {
        return;
    };
    let Some(t) = PASS_TICKET.get(0).copied() else {
        return;
    };
    // A message with another count of fds is not the one the ticket is for.
    if t.ts != ticket_ts || t.n != n {
        return;
    }
    if let Some(p) = PASS_TICKET.get_ptr_mut(0) {
        // SAFETY: the map's one value: the ticket is used.
        unsafe { (*p).ts = 0 };
    }
    for ((&sent, &got), &role) in t.fds.iter().zip(fds.iter()).zip(t.roles.iter()) {
        if sent < 0 || got < 0 {
            continue;
        }
        track_with(
            pid_tgid,
            got,
            ConnInfo {
                passed_fd: sent,
                inherited_from: t.sender,
                ..ConnInfo::role(role)
            },
        );
    }
}
