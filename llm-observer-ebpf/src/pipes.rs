//! Pipes that may carry MCP over stdio: an agent launches an MCP server as a subprocess and the
//! two talk JSON-RPC over the child's stdin and stdout.
//!
//! Hook choice: nothing new on the data path, which every syscall of the node passes. Candidates
//! are marked where pipes are *made*, which is rare: `sys_exit_pipe2` / `sys_exit_pipe` add the
//! two new fds to the connection map as `PROTO_PIPE` (and set the caller's tgid bit, as a tracked
//! socket does). The fork copy (`task_newtask`) carries them to a child; `dup2`/`dup3` copy a
//! candidate onto its new fd, which is how the child's ends become fds 0 and 1 before `exec`, and
//! `dup` / `fcntl(F_DUPFD[_CLOEXEC])` onto the fd they return (the `mcp` SDK's server moves the
//! wire off fds 0 and 1 that way, so stray prints cannot corrupt it).
//! The first write or read on a candidate peeks at its first bytes (io.rs, `classify`): JSON-RPC
//! makes it `PROTO_JSONRPC`, announced and copied like a socket from then on; anything else
//! removes it, so that fd costs one hash lookup from then on and none of its bytes are copied.
//!
//! Candidates do not outlive their use: a close removes one without telling user space; at exec
//! the candidates above fd 2 are dropped (CLOEXEC closed most of them unseen, and MCP servers
//! read fd 0 and write fd 1); at a process's exit all its pipe entries go.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use llm_observer_common::{
    ConnState, PROTO_JSONRPC, PROTO_PIPE, ROLE_PIPE, TP_RET, TRACKED_FDS, conn_key,
};

use crate::{
    CONNS, TGID_FDS, config, mark_tgid, may_track, remember_fd, syscall_arg0, syscall_args2, wanted,
};

/// `pipe`/`pipe2` calls in flight: the caller's `int[2]` pointer, by pid_tgid.
#[map]
static ACTIVE_PIPE: HashMap<u64, u64> = HashMap::with_max_entries(1024, 0);

/// dup-family calls in flight whose old fd is a pipe entry: the new fd (`RETURNED_FD`: the one
/// the call returns), by pid_tgid.
#[map]
static ACTIVE_DUP: HashMap<u64, i32> = HashMap::with_max_entries(1024, 0);

/// In `ACTIVE_DUP`: the new fd is the call's return value (`dup`, `fcntl`).
const RETURNED_FD: i32 = -1;
/// `fcntl` commands that duplicate an fd.
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// Whether a connection-map protocol value is one of a pipe's.
#[inline(always)]
pub(crate) fn is_pipe(proto: u32) -> bool {
    proto == PROTO_PIPE || proto == PROTO_JSONRPC
}

/// Makes `fd` of process `tgid` a pipe candidate (a fresh generation, positions at 0). Not
/// announced: user space hears of it only if its first bytes are JSON-RPC. A full map leaves the
/// pipe unwatched (the sockets' `ConnMapFull` is not charged: no socket was refused).
#[inline(always)]
fn candidate(tgid: u32, fd: i32) {
    if fd < 0 {
        return;
    }
    // SAFETY: helper call.
    let generation = unsafe { bpf_ktime_get_ns() };
    let mut state = ConnState::new(generation, ROLE_PIPE);
    state.proto = PROTO_PIPE;
    mark_tgid(tgid);
    // BPF_NOEXIST: never in place of a tracked socket's entry.
    if CONNS.insert(conn_key(tgid, fd), state, 1).is_ok() {
        remember_fd(tgid, fd, true);
        // Again, now that the fd is listed (see `release_tgid`).
        mark_tgid(tgid);
    }
}

fn enter_pipe(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(&config(), (pid_tgid >> 32) as u32) {
        return 0;
    }
    let fds = syscall_arg0(ctx);
    if fds != 0 {
        let _ = ACTIVE_PIPE.insert(pid_tgid, fds, 0);
    }
    0
}

fn exit_pipe(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let Some(fds) = (unsafe { ACTIVE_PIPE.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_PIPE.remove(pid_tgid);
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx.read_at::<i64>(TP_RET).unwrap_or(-1) };
    if ret != 0 {
        return 0;
    }
    // SAFETY: user memory through the checked helper; the kernel just wrote both fds there.
    let Ok(pair) = (unsafe { bpf_probe_read_user(fds as *const [i32; 2]) }) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    candidate(tgid, pair[0]);
    candidate(tgid, pair[1]);
    0
}

#[tracepoint]
pub fn sys_enter_pipe2(ctx: TracePointContext) -> u32 {
    enter_pipe(&ctx)
}

#[tracepoint]
pub fn sys_exit_pipe2(ctx: TracePointContext) -> u32 {
    exit_pipe(&ctx)
}

#[tracepoint]
pub fn sys_enter_pipe(ctx: TracePointContext) -> u32 {
    enter_pipe(&ctx)
}

#[tracepoint]
pub fn sys_exit_pipe(ctx: TracePointContext) -> u32 {
    exit_pipe(&ctx)
}

/// At a dup-family call's enter (for `dup2`/`dup3` after the replaced fd's own close): remembers
/// the call when its old fd is a pipe entry of this process. `newfd`: [`RETURNED_FD`] for the
/// calls that pick it.
#[inline(always)]
fn dup_enter(pid_tgid: u64, oldfd: i32, newfd: i32) {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: map value copied out.
    let Some(state) = (unsafe { CONNS.get(conn_key(tgid, oldfd)) }).copied() else {
        return;
    };
    if is_pipe(state.proto) {
        let _ = ACTIVE_DUP.insert(pid_tgid, newfd, 0);
    }
}

/// At a dup-family enter of a process with its bit: the call's own entry, or none (an entry
/// left by an earlier call whose exit was skipped must not be read with this call's result).
#[inline(always)]
pub(crate) fn dup_enter_tracked(pid_tgid: u64, oldfd: i32, newfd: i32) {
    let _ = ACTIVE_DUP.remove(pid_tgid);
    dup_enter(pid_tgid, oldfd, newfd);
}

/// A dup of a pipe entry returned: its new fd is a candidate of its own (the child's stdin and
/// stdout are made this way before `exec`).
fn exit_dup(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only a process with its bit can have an entry: every other one costs the bit test.
    if !may_track((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: value copied out before removal.
    let Some(newfd) = (unsafe { ACTIVE_DUP.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_DUP.remove(pid_tgid);
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx.read_at::<i64>(TP_RET).unwrap_or(-1) };
    if newfd == RETURNED_FD && ret >= 0 {
        candidate((pid_tgid >> 32) as u32, ret as i32);
    } else if newfd >= 0 && ret == i64::from(newfd) {
        candidate((pid_tgid >> 32) as u32, newfd);
    }
    0
}

#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if may_track((pid_tgid >> 32) as u32) {
        dup_enter_tracked(pid_tgid, syscall_arg0(&ctx) as i32, RETURNED_FD);
    }
    0
}

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

/// `fcntl(fd, F_DUPFD | F_DUPFD_CLOEXEC, min)`: Python's `os.dup` and the `mcp` SDK's server
/// duplicate this way. Every other command costs the bit test.
#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !may_track((pid_tgid >> 32) as u32) {
        return 0;
    }
    let (fd, cmd) = syscall_args2(&ctx);
    if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
        dup_enter_tracked(pid_tgid, fd as i32, RETURNED_FD);
    }
    0
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

/// Removes the pipe entries of `tgid` listed in its fd list: every one (`all`, at exit), or
/// the unclassified candidates above fd 2 (at exec).
#[inline(always)]
pub(crate) fn drop_pipes(tgid: u32, all: bool) {
    let Some(list) = TGID_FDS.get_ptr_mut(tgid) else {
        return;
    };
    for i in 0..TRACKED_FDS {
        // SAFETY: map value pointer, index in bounds.
        let v = unsafe { (*list).slot[i] };
        if v == 0 {
            continue;
        }
        let fd = v.wrapping_sub(1) as i32;
        if !all && fd <= 2 {
            continue;
        }
        let key = conn_key(tgid, fd);
        // SAFETY: map value copied out.
        let Some(state) = (unsafe { CONNS.get(key) }).copied() else {
            continue;
        };
        let gone = if all {
            is_pipe(state.proto)
        } else {
            state.proto == PROTO_PIPE
        };
        if gone {
            let _ = CONNS.remove(key);
            // SAFETY: as above.
            unsafe { (*list).slot[i] = 0 };
        }
    }
}
