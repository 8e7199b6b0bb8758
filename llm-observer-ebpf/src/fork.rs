//! Fork inheritance: `task:task_newtask` copies a parent's tracked sockets (and pipe
//! candidates) to a new child process, found through the per-process fd list `TGID_FDS`.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_loop},
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use llm_observer_common::{
    CONFIG_FLAG_ALL_PROTOCOLS, ConnState, EventKind, PROTO_OTHER, PROTO_PIPE, PROTO_SEEDED,
    PROTO_UNKNOWN, Stat, TRACKED_FDS, TrackedFds, conn_key,
};

use crate::{CONNS, ConnInfo, TGID_FDS, config, emit_conn, mark_tgid, pipes, stat_add, wanted};

const CLONE_THREAD: u64 = 0x0001_0000;

/// `task:task_newtask` (pid @8, clone_flags @32): a new task, in its parent's context, before it
/// first runs. A new process (no `CLONE_THREAD`) holds copies of its parent's fds: each tracked
/// one is tracked for the child too, under a fresh generation and with positions from 0, and an
/// open event names the parent so user space copies that connection's addresses and role. A
/// socket the parent already read or wrote is re-classified from the child's first bytes on
/// (`PROTO_SEEDED`: the child may start mid-message); one the parent found not to be HTTP stays
/// uncaptured. New threads share the fd table and cost one flag test; forks of processes without
/// tracked sockets one lookup.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let flags = unsafe { ctx.read_at::<u64>(32).unwrap_or(CLONE_THREAD) };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: value copied out of the map.
    let Some(list) = (unsafe { TGID_FDS.get(parent) }).copied() else {
        return 0;
    };
    if list.overflow != 0 {
        // The parent had more tracked sockets than its list holds: this child may not be
        // captured on some of them.
        stat_add(Stat::ForkListFull, 1);
    } else if list.slot.iter().all(|&v| v == 0) {
        // Nothing listed (a process whose pipes were all decided): nothing to copy.
        return 0;
    }
    // SAFETY: as above.
    let child = unsafe { ctx.read_at::<i32>(8).unwrap_or(0) };
    let cfg = config();
    if child <= 0 || !wanted(&cfg, child as u32) {
        return 0;
    }
    let Some(st) = FORK_STATE.get_ptr_mut(0) else {
        return 0;
    };
    let state = ForkState {
        parent,
        child: child as u32,
        all: u32::from(cfg.flags & CONFIG_FLAG_ALL_PROTOCOLS != 0),
        copied: 0,
        list,
        inherited: TrackedFds::EMPTY,
    };
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    unsafe { core::ptr::write_volatile(st, state) };
    // SAFETY: `inherit_slot` has the callback signature bpf_loop expects and ignores its context.
    unsafe {
        bpf_loop(
            TRACKED_FDS as u32,
            inherit_slot as *const () as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above; the callback updated it.
    let (copied, inherited) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*st).copied),
            core::ptr::read_volatile(&raw const (*st).inherited),
        )
    };
    if copied > 0 && TGID_FDS.insert(child as u32, inherited, 0).is_err() {
        stat_add(Stat::ForkListFull, 1);
    }
    0
}

/// Working state of one fork's copy loop (per-CPU: the loop runs under `bpf_loop`, whose body
/// the verifier checks once when its state lives in a map; unrolled, 16 slots of lookups,
/// inserts and ring reservations exceeded the instruction budget).
#[repr(C)]
struct ForkState {
    parent: u32,
    child: u32,
    /// `CONFIG_FLAG_ALL_PROTOCOLS` was set.
    all: u32,
    /// Sockets copied so far.
    copied: u32,
    /// The parent's list.
    list: TrackedFds,
    /// The child's list, built slot by slot.
    inherited: TrackedFds,
}

/// Per-CPU scratch of [`task_newtask`].
#[map]
static FORK_STATE: PerCpuArray<ForkState> = PerCpuArray::with_max_entries(1, 0);

/// One slot of [`task_newtask`]'s loop: copies the parent's socket in slot `index`, if any, to
/// the child. Returns 0 to go on.
#[inline(never)]
extern "C" fn inherit_slot(index: u32, _ctx: *mut c_void) -> i64 {
    let Some(st) = FORK_STATE.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    let st = unsafe { &mut *st };
    let i = (index as usize) & (TRACKED_FDS - 1);
    let v = st.list.slot[i];
    if v == 0 {
        return 0;
    }
    let fd = v.wrapping_sub(1) as i32;
    // SAFETY: value copied out of the map.
    let Some(parent) = (unsafe { CONNS.get(conn_key(st.parent, fd)) }).copied() else {
        return 0;
    };
    // A pipe is inherited as an unannounced candidate: the child's first bytes on it decide.
    let pipe = pipes::is_pipe(parent.proto);
    let proto = match parent.proto {
        _ if pipe => PROTO_PIPE,
        PROTO_UNKNOWN => PROTO_UNKNOWN,
        PROTO_OTHER if st.all == 0 => return 0,
        PROTO_OTHER => PROTO_OTHER,
        _ => PROTO_SEEDED,
    };
    // SAFETY: helper call.
    let generation = unsafe { bpf_ktime_get_ns() };
    let mut state = ConnState::new(generation, parent.role);
    state.proto = proto;
    mark_tgid(st.child);
    if CONNS.insert(conn_key(st.child, fd), state, 0).is_err() {
        stat_add(Stat::ConnMapFull, 1);
        return 0;
    }
    st.inherited.slot[i] = v;
    st.copied += 1;
    if pipe {
        return 0;
    }
    st.inherited.sockets = 1;
    let _ = emit_conn(
        EventKind::ConnOpen,
        (u64::from(st.child) << 32) | u64::from(st.child),
        fd,
        generation,
        ConnInfo {
            inherited_from: st.parent,
            ..ConnInfo::role(parent.role)
        },
    );
    0
}
