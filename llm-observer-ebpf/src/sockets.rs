//! Which sockets are TCP connections to track: `connect` (client) and `accept`/`accept4`
//! (server). See the crate docs for why these hooks.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use llm_observer_common::{AcceptArgs, ROLE_CLIENT, ROLE_SERVER, Stat, TP_RET};

use crate::{config, stat_add, syscall_args, track, wanted};

/// Arguments of an in-flight accept/accept4, by pid_tgid.
#[map]
static ACTIVE_ACCEPT: HashMap<u64, AcceptArgs> = HashMap::with_max_entries(4096, 0);

/// Arguments of an in-flight connect, by pid_tgid.
#[map]
static ACTIVE_CONNECT: HashMap<u64, ConnectArgs> = HashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct ConnectArgs {
    addr: u64,
    addrlen: u64,
    fd: i32,
    /// Set by `inet_sock_set_state` when this connect moved a TCP socket to SYN_SENT.
    tcp: u32,
}

const AF_UNIX: u16 = 1;
const EINPROGRESS: i64 = 115;
const IPPROTO_TCP: u16 = 6;
const TCP_SYN_SENT: i32 = 2;

// ---- connect ---------------------------------------------------------------------------------

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(&config(), (pid_tgid >> 32) as u32) {
        return 0;
    }
    let (fd, addr, addrlen) = syscall_args(&ctx);
    let fd = fd as i32;
    let inserted = ACTIVE_CONNECT.insert(
        pid_tgid,
        ConnectArgs {
            addr,
            addrlen,
            fd,
            tcp: 0,
        },
        0,
    );
    if inserted.is_err() {
        stat_add(Stat::InflightMapFull, 1);
    }
    0
}

/// `sock:inet_sock_set_state`: a TCP socket moving CLOSE → SYN_SENT inside a connect() marks that
/// connect as TCP. (Fields: skaddr@8 oldstate@16 newstate@20 ... protocol@30.)
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let (newstate, protocol) = unsafe {
        (
            ctx.read_at::<i32>(20).unwrap_or(0),
            ctx.read_at::<u16>(30).unwrap_or(0),
        )
    };
    if newstate != TCP_SYN_SENT || protocol != IPPROTO_TCP {
        return 0;
    }
    if let Some(args) = ACTIVE_CONNECT.get_ptr_mut(bpf_get_current_pid_tgid()) {
        // SAFETY: map value pointer, owned by this thread's in-flight syscall.
        unsafe { (*args).tcp = 1 };
    }
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: map value copied out before removal.
    let Some(args) = (unsafe { ACTIVE_CONNECT.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_CONNECT.remove(pid_tgid);
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx.read_at::<i64>(TP_RET).unwrap_or(-1) };
    if args.tcp == 1 && (ret == 0 || ret == -EINPROGRESS) {
        track(pid_tgid, args.fd, ROLE_CLIENT, args.addr, args.addrlen, -1);
    }
    0
}

// ---- accept ----------------------------------------------------------------------------------

fn enter_accept(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(&config(), (pid_tgid >> 32) as u32) {
        return 0;
    }
    // accept and accept4 share their first three arguments.
    let (listen_fd, addr, addrlen_ptr) = syscall_args(ctx);
    let listen_fd = listen_fd as i32;
    // The caller's buffer size: the kernel writes back the address's full length, which can be
    // larger than the buffer (then only the buffer's bytes are valid).
    let buf_len = if addr != 0 && addrlen_ptr != 0 {
        // SAFETY: user memory through the checked helper.
        unsafe { bpf_probe_read_user(addrlen_ptr as *const u32) }.unwrap_or(0)
    } else {
        0
    };
    let args = AcceptArgs {
        addr,
        addrlen_ptr,
        listen_fd,
        buf_len,
    };
    if ACTIVE_ACCEPT.insert(pid_tgid, args, 0).is_err() {
        stat_add(Stat::InflightMapFull, 1);
    }
    0
}

fn exit_accept(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: map value copied out before removal.
    let Some(args) = (unsafe { ACTIVE_ACCEPT.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_ACCEPT.remove(pid_tgid);
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx.read_at::<i64>(TP_RET).unwrap_or(-1) };
    if ret < 0 {
        return 0;
    }
    let mut addrlen: u64 = 0;
    if args.addr != 0 {
        // SAFETY: user memory through the checked helpers.
        let family = unsafe { bpf_probe_read_user(args.addr as *const u16) }.unwrap_or(0);
        if family == AF_UNIX {
            return 0;
        }
        if args.addrlen_ptr != 0 {
            // SAFETY: as above.
            let written =
                unsafe { bpf_probe_read_user(args.addrlen_ptr as *const u32) }.unwrap_or(0);
            addrlen = u64::from(if written < args.buf_len {
                written
            } else {
                args.buf_len
            });
        }
    }
    track(
        pid_tgid,
        ret as i32,
        ROLE_SERVER,
        args.addr,
        addrlen,
        args.listen_fd,
    );
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    enter_accept(&ctx)
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    exit_accept(&ctx)
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter_accept(&ctx)
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    exit_accept(&ctx)
}
