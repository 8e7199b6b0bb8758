//! `sched:sched_process_exec`: a process replaced its program. User space re-reads its identity
//! (comm, command line, cgroup), so requests after the exec are not labelled with the old program.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use llm_observer_common::{EventKind, ExecEvent, Stat};

use crate::{EVENTS, config, header, stat_add, wanted};

/// `old_pid` in the tracepoint's format (`events/sched/sched_process_exec/format`).
const OLD_PID_OFFSET: usize = 16;

const _: () = assert!(core::mem::size_of::<ExecEvent>() == 48);

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(&config(), (pid_tgid >> 32) as u32) {
        return 0;
    }
    // The fds CLOEXEC just closed were not seen closing: their pipe candidates go (fds 0-2, an
    // MCP server's stdio, stay).
    if crate::may_track((pid_tgid >> 32) as u32) {
        crate::pipes::drop_pipes((pid_tgid >> 32) as u32, false);
        crate::release_tgid((pid_tgid >> 32) as u32);
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        stat_add(Stat::LostControlEvents, 1);
        return 0;
    };
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: offset from the format file; a failed read leaves 0.
    let old_tid = unsafe { ctx.read_at::<i32>(OLD_PID_OFFSET).unwrap_or(0) } as u32;
    entry.write(ExecEvent {
        hdr: header(EventKind::ProcExec, pid_tgid, -1, 0, now),
        old_tid,
        _pad0: 0,
    });
    entry.submit(0);
    0
}
