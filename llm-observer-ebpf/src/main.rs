//! llm-observer's kernel side: copy the bytes that processes move on TCP sockets, with metadata.
//!
//! Hook choice: syscall tracepoints (`syscalls:sys_{enter,exit}_*`) are the one capture point every
//! supported kernel has (kprobes may be compiled out, fentry may be refused), they see the user
//! buffers before/after the kernel touches them, and their argument layout is a stable ABI
//! (`/sys/kernel/tracing/events/syscalls/*/format`). The kernel side stays dumb on purpose: it
//! tracks which fds are TCP sockets, copies payloads with a per-direction byte position, and leaves
//! every protocol decision beyond "does this start like HTTP/1.x" to user space.
//!
//! - connect: `sys_enter_connect` saves the fd; `sock:inet_sock_set_state` CLOSE→SYN_SENT fires
//!   inside the same syscall only for TCP (UDP connect never changes TCP state), which is how a TCP
//!   client socket is told from UDP without reading kernel structs; `sys_exit_connect` (0 or
//!   -EINPROGRESS) starts tracking it as a client.
//! - accept/accept4: `sys_exit_*` starts tracking the returned fd as a server socket, unless the
//!   peer address it filled in says AF_UNIX. (With no address buffer user space checks /proc.)
//! - read/readv/recvfrom/recvmsg/recvmmsg and write/writev/sendto/sendmsg/sendmmsg: the enter
//!   probe saves the arguments only for tracked fds (one hash lookup for every other fd); the exit
//!   probe copies `ret` bytes from the user buffers, split into events of at most MAX_PAYLOAD bytes.
//! - close: stops tracking. `sched_process_exit` (whole group) tells user space a process is gone;
//!   `sched_process_exec` (exec.rs) that it runs another program.
//! - fork: `task:task_newtask` (in the parent, before the child first runs; its `clone_flags` tell
//!   a new process from a new thread, which shares the fd table and needs nothing) copies the
//!   parent's tracked sockets to the child, found through the per-process fd list `TGID_FDS`
//!   (fork.rs).
//! - fd passing: a tracked socket sent over a unix socket (`SCM_RIGHTS`) is tracked in the process
//!   that receives it (passed.rs).
//! - pipes: candidates for MCP over stdio, marked where they are made and copied only once their
//!   first bytes are JSON-RPC (pipes.rs).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod copy;
mod exec;
mod floor;
mod fork;
mod gotls;
mod io;
mod passed;
mod pipes;
mod sockets;
mod tls;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use llm_observer_common::{
    CONFIG_FLAG_EXIT_BY_LEADER, Config, ConnEvent, ConnState, DataEvent, EventHeader, EventKind,
    IoArgs, MAX_SEGMENTS, PROTO_PIPE, SOCKADDR_MAX, STAT_COUNT, Stat, Syscall, TGID_BITMAP_WORDS,
    TP_ARG0, TP_ARG1, TP_ARG2, TRACKED_FDS, TrackedFds, conn_key, tgid_bit,
};

/// Every event for user space. The size here is a default; the agent sets it at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Agent settings (index 0).
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Tracked TCP sockets by `conn_key(tgid, fd)`. A plain hash, not an LRU: an LRU would evict live
/// connections silently under pressure; here a full map refuses the new socket and counts it
/// (`Stat::ConnMapFull`). Entries whose close was never seen (a process that died while its exit
/// event was lost) are swept by user space.
#[map]
static CONNS: HashMap<u64, ConnState> = HashMap::with_max_entries(65536, 0);

/// The fds of each process's tracked sockets, by tgid (see `TrackedFds`): what a fork copies to
/// the child. A process with no tracked socket has no entry, so its forks cost one lookup.
#[map]
static TGID_FDS: HashMap<u32, TrackedFds> = HashMap::with_max_entries(16384, 0);

/// One bit per tgid that holds (or held) a socket the kernel tracks: set before the socket enters
/// `CONNS`, cleared when the process exits. Every syscall on the node passes the data and close
/// tracepoints; a process without the bit (files, pipes, the node's other programs) is turned
/// away with one inlined array load instead of hash lookups in both the enter and the exit probe.
/// Set with an atomic OR: 64 processes share a word and their CPUs may set bits at once.
#[map]
static TRACKED_TGIDS: Array<u64> = Array::with_max_entries(TGID_BITMAP_WORDS, 0);

/// The same for the sockets user space seeded at start (opened before the agent). A map of its
/// own because user space updates words by read-modify-write; it is their only writer.
#[map]
static SEEDED_TGIDS: Array<u64> = Array::with_max_entries(TGID_BITMAP_WORDS, 0);

/// Arguments of an in-flight read/write-family syscall, by pid_tgid (enter → exit).
#[map]
static ACTIVE_IO: HashMap<u64, IoArgs> = HashMap::with_max_entries(16384, 0);

/// Counters user space exports (`Stat` indices).
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Per-CPU scratch for building a data event: the 512-byte BPF stack cannot hold one.
#[map]
static SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the gathered (pointer, length) segments of one syscall.
#[map]
static SEGMENTS: PerCpuArray<io::Segments> = PerCpuArray::with_max_entries(1, 0);

/// The first three arguments of a `sys_enter_*` tracepoint of a syscall that has at least three
/// (fd, pointer, count/length for every data syscall, connect and accept).
#[inline(always)]
pub(crate) fn syscall_args(ctx: &TracePointContext) -> (u64, u64, u64) {
    // SAFETY: offsets from the format files: args are 8-byte slots from offset 16.
    unsafe {
        (
            ctx_load::<u64>(ctx, TP_ARG0),
            ctx_load::<u64>(ctx, TP_ARG1),
            ctx_load::<u64>(ctx, TP_ARG2),
        )
    }
}

/// The first argument of a `sys_enter_*` tracepoint (close has only one: a load past the end of
/// a tracepoint's record makes the attach fail with EACCES).
#[inline(always)]
pub(crate) fn syscall_arg0(ctx: &TracePointContext) -> u64 {
    // SAFETY: as above.
    unsafe { ctx_load::<u64>(ctx, TP_ARG0) }
}

/// The first two arguments (dup2, dup3).
#[inline(always)]
pub(crate) fn syscall_args2(ctx: &TracePointContext) -> (u64, u64) {
    // SAFETY: as above.
    unsafe { (ctx_load::<u64>(ctx, TP_ARG0), ctx_load::<u64>(ctx, TP_ARG1)) }
}

/// A field of the tracepoint record, loaded directly: the verifier checks a constant-offset,
/// aligned read of a tracepoint's context, so the `bpf_probe_read` helper call that
/// `TracePointContext::read_at` makes is not needed on the paths every syscall takes.
///
/// # Safety
/// `off` must be the aligned offset of a field of type `T` in the tracepoint's format.
#[inline(always)]
pub(crate) unsafe fn ctx_load<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: see above; the verifier rejects the program otherwise.
    unsafe {
        core::ptr::read_volatile((EbpfContext::as_ptr(ctx) as *const u8).add(off) as *const T)
    }
}

/// Whether `tgid` may hold a tracked socket (see `TRACKED_TGIDS`). Never false for a process
/// with an entry in `CONNS`: both bits are set before its sockets are inserted, and cleared only
/// when it is gone.
#[inline(always)]
pub(crate) fn may_track(tgid: u32) -> bool {
    let (word, bit) = tgid_bit(tgid);
    match (TRACKED_TGIDS.get(word), SEEDED_TGIDS.get(word)) {
        (Some(k), Some(u)) => (*k | *u) & bit != 0,
        // Outside the bitmap (no such pid on Linux): the lookups decide.
        _ => true,
    }
}

#[inline(always)]
pub(crate) fn mark_tgid(tgid: u32) {
    let (word, bit) = tgid_bit(tgid);
    if let Some(p) = TRACKED_TGIDS.get_ptr_mut(word) {
        // SAFETY: a map value, 8-byte aligned; other CPUs update it only atomically. Rust's core
        // has no read-modify-write atomics for BPF, hence the instruction itself (BPF_ATOMIC |
        // BPF_OR, Linux ≥ 5.12).
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) |= {b}", p = in(reg) p, b = in(reg) bit,
                options(nostack));
        }
    }
}

#[inline(always)]
fn unmark_tgid(tgid: u32) {
    let (word, bit) = tgid_bit(tgid);
    if let Some(p) = TRACKED_TGIDS.get_ptr_mut(word) {
        // SAFETY: as in `mark_tgid` (BPF_ATOMIC | BPF_AND).
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) &= {b}", p = in(reg) p, b = in(reg) !bit,
                options(nostack));
        }
    }
}

/// Clears `tgid`'s bit once its fd list is empty, for a process that only ever held pipe
/// candidates: it holds nothing the kernel tracks any more (they were closed or found not to be
/// JSON-RPC), so its other I/O is turned away by the bitmap again instead of paying the map
/// lookups. A process that tracked a socket keeps its bit (`TrackedFds::sockets`), as before
/// pipes were watched; a missing list (it could not be made) proves nothing either.
///
/// Races with another thread of the process making a candidate: that thread sets the bit,
/// inserts the entry, lists the fd, and sets the bit again; this one clears the bit and then
/// reads the list again, setting the bit back if it is no longer empty. The atomic operations are
/// full barriers, so either the other thread's second set comes after this clear, or its listing
/// came before this re-read. Plain slot stores can still race (two threads claiming one slot):
/// the worst case is a pipe candidate left without its bit, never a socket.
#[inline(always)]
pub(crate) fn release_tgid(tgid: u32) {
    let empty =
        |l: &TrackedFds| l.sockets == 0 && l.overflow == 0 && l.slot.iter().all(|&v| v == 0);
    // SAFETY: value copied out of the map.
    let Some(list) = (unsafe { TGID_FDS.get(tgid) }).copied() else {
        return;
    };
    if !empty(&list) {
        return;
    }
    unmark_tgid(tgid);
    // SAFETY: as above.
    match (unsafe { TGID_FDS.get(tgid) }).copied() {
        Some(l) if empty(&l) => {}
        _ => mark_tgid(tgid),
    }
}

#[inline(always)]
fn stat_add(stat: Stat, v: u64) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += v };
    }
}

#[inline(always)]
fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// Whether this process is captured at all (the `--pid` filter and the agent's own exclusion).
#[inline(always)]
fn wanted(cfg: &Config, tgid: u32) -> bool {
    (cfg.target_tgid == 0 || cfg.target_tgid == tgid) && cfg.ignore_tgid != tgid
}

#[inline(always)]
fn header(kind: EventKind, pid_tgid: u64, fd: i32, generation: u64, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        // SAFETY: plain helper call.
        cpu: unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() },
        ts_ns,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
        _pad0: 0,
        conn_gen: generation,
    }
}

/// What a connection event says besides its header.
pub(crate) struct ConnInfo {
    pub(crate) role: u32,
    /// User pointer to the peer's sockaddr (0: none) and its length.
    pub(crate) addr: u64,
    pub(crate) addrlen: u64,
    /// Listening fd of an accepted socket, else -1.
    pub(crate) listen_fd: i32,
    /// Parent tgid of a socket inherited across fork, or the sender of a passed one, else 0.
    pub(crate) inherited_from: u32,
    /// The sender's fd of a socket passed over a unix socket, else -1.
    pub(crate) passed_fd: i32,
    /// A close's final stream positions (read, written); 0 for an open.
    pub(crate) rd_pos: u64,
    pub(crate) wr_pos: u64,
}

impl ConnInfo {
    pub(crate) fn role(role: u32) -> ConnInfo {
        ConnInfo {
            role,
            addr: 0,
            addrlen: 0,
            listen_fd: -1,
            inherited_from: 0,
            passed_fd: -1,
            rd_pos: 0,
            wr_pos: 0,
        }
    }
}

// Inlined: BPF calls take at most five arguments.
#[inline(always)]
pub(crate) fn emit_conn(
    kind: EventKind,
    pid_tgid: u64,
    fd: i32,
    generation: u64,
    c: ConnInfo,
) -> bool {
    let ConnInfo {
        role,
        addr,
        addrlen,
        listen_fd,
        inherited_from,
        passed_fd,
        rd_pos,
        wr_pos,
    } = c;
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        stat_add(Stat::LostControlEvents, 1);
        return false;
    };
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut ev = ConnEvent {
        hdr: header(kind, pid_tgid, fd, generation, now),
        role,
        peer_len: 0,
        peer: [0u8; SOCKADDR_MAX],
        listen_fd,
        inherited_from,
        passed_fd,
        rd_pos,
        wr_pos,
    };
    if addr != 0 && addrlen > 0 {
        let n = if addrlen as usize > SOCKADDR_MAX {
            SOCKADDR_MAX
        } else {
            addrlen as usize
        };
        // SAFETY: reads user memory through the checked helper; a fault leaves zeros.
        if unsafe {
            aya_ebpf::helpers::bpf_probe_read_user_buf(addr as *const u8, &mut ev.peer[..n])
        }
        .is_ok()
        {
            ev.peer_len = n as u32;
        }
    }
    entry.write(ev);
    entry.submit(0);
    true
}

/// Start tracking `fd` of the current process.
#[inline(always)]
fn track(pid_tgid: u64, fd: i32, role: u32, addr: u64, addrlen: u64, listen_fd: i32) {
    track_with(
        pid_tgid,
        fd,
        ConnInfo {
            addr,
            addrlen,
            listen_fd,
            ..ConnInfo::role(role)
        },
    );
}

/// Start tracking `fd` of the current process; `c` is what its open event tells user space.
#[inline(always)]
fn track_with(pid_tgid: u64, fd: i32, c: ConnInfo) {
    // SAFETY: helper call.
    let generation = unsafe { bpf_ktime_get_ns() };
    let state = ConnState::new(generation, c.role);
    mark_tgid((pid_tgid >> 32) as u32);
    if CONNS
        .insert(conn_key((pid_tgid >> 32) as u32, fd), state, 0)
        .is_err()
    {
        stat_add(Stat::ConnMapFull, 1);
        return;
    }
    remember_fd((pid_tgid >> 32) as u32, fd, false);
    // Again, now that the fd is listed: see `release_tgid`.
    mark_tgid((pid_tgid >> 32) as u32);
    let _ = emit_conn(EventKind::ConnOpen, pid_tgid, fd, generation, c);
}

/// `fd + 1` as stored in a `TrackedFds` slot (0 is a free slot).
#[inline(always)]
fn fd_slot(fd: i32) -> u32 {
    (fd as u32).wrapping_add(1)
}

/// Adds `fd` to its process's fd list, so a fork can find it. Open addressing from
/// `fd % TRACKED_FDS`; a slot whose socket is no longer tracked (untracked by user space, or a
/// close we never saw) is reused. Two threads of one process tracking sockets at the same instant
/// may race for one slot (plain stores: one of the two fds is then not inherited by a later fork).
#[inline(always)]
pub(crate) fn remember_fd(tgid: u32, fd: i32, pipe: bool) {
    let want = fd_slot(fd);
    let list = match TGID_FDS.get_ptr_mut(tgid) {
        Some(p) => p,
        None => {
            let empty = TrackedFds::EMPTY;
            // BPF_NOEXIST: another thread of this process may have created it meanwhile.
            let _ = TGID_FDS.insert(tgid, empty, 1);
            match TGID_FDS.get_ptr_mut(tgid) {
                Some(p) => p,
                None => {
                    stat_add(Stat::ForkListFull, 1);
                    return;
                }
            }
        }
    };
    if !pipe {
        // SAFETY: map value pointer.
        unsafe { (*list).sockets = 1 };
    }
    for i in 0..TRACKED_FDS {
        // SAFETY: map value pointer; index masked into bounds.
        if unsafe { (*list).slot[i] } == want {
            return;
        }
    }
    let home = fd as u32 as usize;
    for i in 0..TRACKED_FDS {
        let s = (home + i) & (TRACKED_FDS - 1);
        // SAFETY: as above.
        let v = unsafe { (*list).slot[s] };
        // A socket may take a slot from an undecided pipe candidate (that one is then only not
        // inherited, and left to user space's sweep at exit).
        let free = v == 0
            || match CONNS.get_ptr(conn_key(tgid, v.wrapping_sub(1) as i32)) {
                None => true,
                // SAFETY: map value pointer, plain integer.
                Some(c) => !pipe && unsafe { (*c).proto } == PROTO_PIPE,
            };
        if free {
            // SAFETY: as above.
            unsafe { (*list).slot[s] = want };
            return;
        }
    }
    // Not a loss yet: only a fork while this socket is open misses it (counted there).
    if !pipe {
        // SAFETY: as above.
        unsafe { (*list).overflow = 1 };
    }
}

/// Removes `fd` from its process's fd list.
#[inline(always)]
pub(crate) fn forget_fd(tgid: u32, fd: i32) {
    let Some(list) = TGID_FDS.get_ptr_mut(tgid) else {
        return;
    };
    let want = fd_slot(fd);
    for i in 0..TRACKED_FDS {
        // SAFETY: map value pointer, index in bounds.
        unsafe {
            if (*list).slot[i] == want {
                (*list).slot[i] = 0;
            }
        }
    }
}

// ---- close / exit ----------------------------------------------------------------------------

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = syscall_arg0(&ctx);
    close_tracked(pid_tgid, fd as i32);
    0
}

/// Stops tracking `fd` of the current process, if it is tracked, and tells user space.
#[inline(always)]
fn close_tracked(pid_tgid: u64, fd: i32) {
    if !may_track((pid_tgid >> 32) as u32) {
        return;
    }
    let key = conn_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: value copied out before removal.
    let Some(state) = (unsafe { CONNS.get(key) }).copied() else {
        return;
    };
    let _ = CONNS.remove(key);
    forget_fd((pid_tgid >> 32) as u32, fd);
    // An unclassified pipe was never announced.
    if state.proto == PROTO_PIPE {
        release_tgid((pid_tgid >> 32) as u32);
        return;
    }
    let _ = emit_conn(
        EventKind::ConnClose,
        pid_tgid,
        fd,
        state.generation,
        ConnInfo {
            rd_pos: state.rd_pos,
            wr_pos: state.wr_pos,
            ..ConnInfo::role(state.role)
        },
    );
}

/// `sched:sched_process_exit`: the whole process is gone (`group_dead` @32, or the leader's exit
/// where that field does not exist), and with it every socket it held, closed without a close()
/// we could see.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config();
    if !wanted(&cfg, (pid_tgid >> 32) as u32) {
        return 0;
    }
    let whole_group = if cfg.flags & CONFIG_FLAG_EXIT_BY_LEADER != 0 {
        // Kernels before 6.16 have no `group_dead`: the leader's exit stands for the process.
        pid_tgid as u32 == (pid_tgid >> 32) as u32
    } else {
        // SAFETY: offset from the format file.
        unsafe { ctx.read_at::<u8>(32).unwrap_or(0) != 0 }
    };
    if whole_group {
        // Pipe entries go with their process (user space sweeps sockets; pipes are made far more
        // often, and a busy node's short-lived processes would fill the map meanwhile).
        pipes::drop_pipes((pid_tgid >> 32) as u32, true);
        let _ = TGID_FDS.remove((pid_tgid >> 32) as u32);
        unmark_tgid((pid_tgid >> 32) as u32);
        let _ = emit_conn(EventKind::ProcExit, pid_tgid, -1, 0, ConnInfo::role(0));
    }
    0
}

/// `oom:mark_victim`: the OOM killer chose `pid` (@8). Runs in the killer's context, so the
/// victim is named from the tracepoint's field, not from the current task; user space fails the
/// victim's in-flight requests as `out_of_memory` when its exit follows.
#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let pid = unsafe { ctx.read_at::<i32>(8).unwrap_or(-1) };
    if pid <= 0 {
        return 0;
    }
    let victim = pid as u32;
    if !wanted(&config(), victim) {
        return 0;
    }
    let id = (u64::from(victim) << 32) | u64::from(victim);
    let _ = emit_conn(EventKind::OomVictim, id, -1, 0, ConnInfo::role(0));
    0
}

/// `dup2`/`dup3` onto a tracked fd closes that socket without a close() call; a dup of a pipe
/// entry makes its new fd a candidate at the call's exit (pipes.rs).
fn replaced_fd(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (oldfd, newfd) = syscall_args2(ctx);
    if oldfd == newfd || !may_track((pid_tgid >> 32) as u32) {
        return 0;
    }
    close_tracked(pid_tgid, newfd as i32);
    pipes::dup_enter_tracked(pid_tgid, oldfd as i32, newfd as i32);
    0
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    replaced_fd(&ctx)
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    replaced_fd(&ctx)
}

// ---- data ------------------------------------------------------------------------------------

macro_rules! io_probes {
    ($($enter:ident, $exit:ident, $sys:expr;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            io::enter(&ctx, $sys)
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            io::exit(&ctx, $sys)
        }
    )*};
}

io_probes! {
    sys_enter_write, sys_exit_write, Syscall::Write;
    sys_enter_writev, sys_exit_writev, Syscall::Writev;
    sys_enter_sendto, sys_exit_sendto, Syscall::Sendto;
    sys_enter_sendmsg, sys_exit_sendmsg, Syscall::Sendmsg;
    sys_enter_sendmmsg, sys_exit_sendmmsg, Syscall::Sendmmsg;
    sys_enter_read, sys_exit_read, Syscall::Read;
    sys_enter_readv, sys_exit_readv, Syscall::Readv;
    sys_enter_recvfrom, sys_exit_recvfrom, Syscall::Recvfrom;
    sys_enter_recvmsg, sys_exit_recvmsg, Syscall::Recvmsg;
    sys_enter_recvmmsg, sys_exit_recvmmsg, Syscall::Recvmmsg;
    sys_enter_sendfile64, sys_exit_sendfile64, Syscall::Sendfile;
}

const _: () = assert!(MAX_SEGMENTS == 32);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program in which this is reachable.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
