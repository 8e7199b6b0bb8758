//! The floor of syscall-tracepoint capture, for `cargo xtask bench` only: one program per
//! tracepoint the agent attaches, each returning at once. The agent never attaches these;
//! `llm-observer-floor` attaches them alone, which measures what merely enabling those
//! tracepoints costs every syscall on the node, so the agent's own cost reads against it.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

macro_rules! floor_probes {
    ($($name:ident),* $(,)?) => {$(
        #[tracepoint]
        pub fn $name(_ctx: TracePointContext) -> u32 {
            0
        }
    )*};
}

// `floor_` + the tracepoint's name, one for each entry of the agent's attach list.
floor_probes! {
    floor_sys_enter_connect, floor_sys_exit_connect, floor_inet_sock_set_state,
    floor_sys_enter_accept4, floor_sys_exit_accept4, floor_sys_enter_accept, floor_sys_exit_accept,
    floor_sys_enter_close, floor_sched_process_exit,
    floor_sys_enter_write, floor_sys_exit_write, floor_sys_enter_writev, floor_sys_exit_writev,
    floor_sys_enter_sendto, floor_sys_exit_sendto, floor_sys_enter_sendmsg, floor_sys_exit_sendmsg,
    floor_sys_enter_sendmmsg, floor_sys_exit_sendmmsg,
    floor_sys_enter_read, floor_sys_exit_read, floor_sys_enter_readv, floor_sys_exit_readv,
    floor_sys_enter_recvfrom, floor_sys_exit_recvfrom, floor_sys_enter_recvmsg,
    floor_sys_exit_recvmsg, floor_sys_enter_recvmmsg, floor_sys_exit_recvmmsg,
    floor_sys_enter_sendfile64, floor_sys_exit_sendfile64,
    floor_sys_enter_dup2, floor_sys_exit_dup2, floor_sys_enter_dup3, floor_sys_exit_dup3,
    floor_sys_enter_dup, floor_sys_exit_dup, floor_sys_enter_fcntl, floor_sys_exit_fcntl,
    floor_sys_enter_pipe2, floor_sys_exit_pipe2, floor_sys_enter_pipe, floor_sys_exit_pipe,
    floor_task_newtask, floor_mark_victim, floor_sched_process_exec,
}
