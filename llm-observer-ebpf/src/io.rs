//! The data path: read/write-family syscalls on tracked sockets → `DataEvent`s.
//!
//! Enter probes save the arguments (only for tracked fds); exit probes know how many bytes really
//! moved (`ret`), gather the user buffers as (pointer, length) segments — one for plain calls,
//! several for iovec calls, several messages for mmsg — and copy them in order (copy.rs) into
//! events of at most `MAX_PAYLOAD` bytes with contiguous `pos`. Bytes beyond the per-call cap are
//! counted and announced by a zero-length `DATA_FLAG_TRUNCATED` event, never silently dropped.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_loop,
    },
    programs::TracePointContext,
};
use llm_observer_common::{
    CONFIG_FLAG_ALL_PROTOCOLS, DATA_FLAG_EOF, DATA_FLAG_RESET, DATA_FLAG_TLS, DATA_FLAG_TRUNCATED,
    DIR_EGRESS, DIR_INGRESS, EventKind, IoArgs, JSONRPC_PEEK, MAX_MMSG, MAX_PAYLOAD, MAX_SEGMENTS,
    PROTO_HTTP, PROTO_JSONRPC, PROTO_OTHER, PROTO_PIPE, PROTO_SEEDED, PROTO_TLS, PROTO_UNKNOWN,
    ROLE_PIPE, Stat, Syscall, TP_ARG1, TP_ARG3, TP_RET, conn_key, starts_like_http,
    starts_like_jsonrpc,
};

pub(crate) use crate::copy::{CopyState, Meta, call_cap, copy_out, marker};
use crate::{
    ACTIVE_IO, CONNS, SEGMENTS, config, ctx_load, may_track, passed, stat_add, syscall_args, wanted,
};

/// Per-CPU working state of one data syscall's exit: its gathered segments and the copy loop's
/// progress.
#[repr(C)]
pub struct Segments {
    pub(crate) n: u32,
    _pad: u32,
    pub(crate) ptr: [u64; MAX_SEGMENTS],
    pub(crate) len: [u64; MAX_SEGMENTS],
    pub(crate) meta: CopyState,
    gather: GatherState,
}

/// Progress of the iovec-gathering loop (see [`gather`]).
#[repr(C)]
struct GatherState {
    /// iovec array of the current message.
    iov: u64,
    iovcnt: u64,
    /// Bytes of the current message not yet assigned to a segment.
    left: u64,
    /// mmsghdr array (mmsg calls only).
    msgs: u64,
    /// Messages the call moved (mmsg calls only).
    nmsg: u64,
    /// Bytes of all messages started so far.
    total: u64,
    /// Next iovec of the current message.
    j: u32,
    /// Current message; `u32::MAX` for a single iovec list.
    m: u32,
    /// Most iovecs taken per message.
    max_iov: u32,
    /// mmsg: a message could not be gathered whole; later messages are only counted, so the bytes
    /// delivered stay a contiguous prefix and the rest is one TRUNCATED gap at the end.
    stopped: u32,
}

/// `struct user_msghdr`: msg_iov @16, msg_iovlen @24. `struct mmsghdr`: msghdr + msg_len @56, 64 bytes.
pub(crate) const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_LEN: u64 = 56;
const MMSGHDR_SIZE: u64 = 64;
/// iovecs gathered per message of an mmsg call (keeps the nested loop small for the verifier).
const MMSG_IOVS: u32 = 4;

pub fn enter(ctx: &TracePointContext, sys: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !wanted(&config(), tgid) {
        return 0;
    }
    // Any process may be handed a tracked socket (`sys` is a constant per program: the other
    // syscalls do not have this branch).
    if let Syscall::Recvmsg = sys {
        // SAFETY: offset from the format files.
        passed::on_recv_enter(pid_tgid, unsafe { ctx_load::<u64>(ctx, TP_ARG1) });
    }
    // A process with no tracked socket costs one array load.
    if !may_track(tgid) {
        return 0;
    }
    // Every data syscall has fd, buffer (or iovec / msghdr array), count first.
    let (fd, buf, count) = syscall_args(ctx);
    let fd = fd as i32;
    // One hash lookup is all an untracked fd of such a process (files, pipes, UDP) costs.
    let Some(conn) = CONNS.get_ptr(conn_key(tgid, fd)) else {
        // A tracked process's message on another socket may pass one of its tracked sockets.
        if let Syscall::Sendmsg = sys {
            passed::on_send(tgid, buf);
        }
        return 0;
    };
    // SAFETY: map value pointer, plain integers.
    let generation = unsafe { (*conn).generation };
    // Inside an SSL call: this socket carries TLS (see tls.rs).
    crate::tls::nested_syscall(pid_tgid, fd, conn, sys, buf, count);
    // recv flags: recvfrom's and recvmmsg's 4th argument, recvmsg's 3rd (in the `count` slot).
    let flags = match sys {
        // SAFETY: offset from the format files.
        Syscall::Recvfrom | Syscall::Recvmmsg => unsafe { ctx_load::<u64>(ctx, TP_ARG3) },
        Syscall::Recvmsg => count,
        _ => 0,
    } as u32;
    let args = IoArgs {
        buf,
        count,
        generation,
        fd,
        syscall: sys as u32,
        flags,
        _pad: 0,
    };
    if ACTIVE_IO.insert(pid_tgid, args, 0).is_err() {
        stat_add(Stat::InflightMapFull, 1);
    }
    0
}

/// `MSG_PEEK`: the bytes stay queued and will be read again; `MSG_TRUNC` on TCP: they are
/// discarded without being copied to the buffer.
const MSG_PEEK: u32 = 2;
const MSG_TRUNC: u32 = 0x20;
const ECONNRESET: i64 = 104;
const EPIPE: i64 = 32;

pub fn exit(ctx: &TracePointContext, sys: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Syscall::Recvmsg = sys {
        passed::on_recv_exit(ctx, pid_tgid);
    }
    // No entry can exist for a process without the bit (see `may_track`).
    if !may_track((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: value copied out before removal.
    let Some(args) = (unsafe { ACTIVE_IO.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_IO.remove(pid_tgid);
    // Only this syscall's own entry (one left by a call that entered before its exit probe was
    // attached must not be read with another call's result).
    if args.syscall != sys as u32 {
        return 0;
    }
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx_load::<i64>(ctx, TP_RET) };
    let Some(conn) = CONNS.get_ptr_mut(conn_key((pid_tgid >> 32) as u32, args.fd)) else {
        return 0;
    };
    // SAFETY: map value pointer; fields are plain integers.
    let (generation, proto) = unsafe { ((*conn).generation, (*conn).proto) };
    // The fd was closed and reused for another tracked socket while this call ran.
    if generation != args.generation {
        return 0;
    }
    // An unclassified pipe: only its bytes can tell what it is; an end or a failure says nothing
    // (it was never announced).
    if proto == PROTO_PIPE && (ret <= 0 || sys == Syscall::Sendfile) {
        return 0;
    }
    let dir = sys.direction();
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: map value pointer.
    let pos = unsafe {
        if dir == DIR_EGRESS {
            (*conn).wr_pos
        } else {
            (*conn).rd_pos
        }
    };
    let mut ev = Meta {
        pid_tgid,
        fd: args.fd,
        generation,
        now,
        pos,
        total: 0,
        dir,
        sys,
        flags: 0,
    };
    if proto == PROTO_TLS {
        // Ciphertext: never copied, never counted as another protocol (the SSL probes deliver
        // the plaintext). Only the end of the stream is told, at the plaintext position.
        ev.flags = DATA_FLAG_TLS;
        if ret == -ECONNRESET || ret == -EPIPE {
            marker(&ev, DATA_FLAG_RESET, 0);
        } else if ret == 0 && dir == DIR_INGRESS {
            let asked = match sys {
                Syscall::Read | Syscall::Recvfrom | Syscall::Readv => args.count > 0,
                // 0 messages is not an end of stream.
                Syscall::Recvmmsg => false,
                _ => true,
            };
            if asked {
                marker(&ev, DATA_FLAG_EOF, 0);
            }
        }
        return 0;
    }
    if ret < 0 {
        // A reset or a vanished peer ends the connection from the peer's side, like EOF: user
        // space needs it to tell a client's cancel from a server's close.
        if ret == -ECONNRESET || ret == -EPIPE {
            marker(&ev, DATA_FLAG_RESET, 0);
        }
        return 0;
    }
    if args.flags & MSG_PEEK != 0 {
        return 0;
    }
    let cfg = config();
    let all = cfg.flags & CONFIG_FLAG_ALL_PROTOCOLS != 0;
    let mmsg = matches!(sys, Syscall::Sendmmsg | Syscall::Recvmmsg);
    let uncopied = sys == Syscall::Sendfile || args.flags & MSG_TRUNC != 0;
    let Some(segs) = SEGMENTS.get_ptr_mut(0) else {
        return 0;
    };
    // Gather the user buffers only when they will be read (mmsg calls always: their byte count
    // is the sum of the messages' lengths, not `ret`). `segs` stays a raw pointer: the bpf_loop
    // callbacks write the map behind the compiler's back.
    let total = if mmsg || !(uncopied || (proto == PROTO_OTHER && !all)) {
        gather(sys, &args, ret as u64, segs)
    } else {
        ret as u64
    };
    // SAFETY: map value pointer.
    unsafe {
        if dir == DIR_EGRESS {
            (*conn).wr_pos += total;
        } else {
            (*conn).rd_pos += total;
        }
    }
    ev.total = total;
    if total == 0 {
        // read() == 0 (or an mmsg message of 0 bytes): the peer closed its side. A read that
        // asked for nothing says nothing.
        let asked = match sys {
            Syscall::Read | Syscall::Recvfrom | Syscall::Readv => args.count > 0,
            _ => true,
        };
        let eof = if mmsg { ret >= 1 } else { ret == 0 };
        if dir == DIR_INGRESS && eof && asked {
            marker(&ev, DATA_FLAG_EOF, 0);
        }
        return 0;
    }
    if uncopied {
        stat_add(Stat::TruncatedBytes, total);
        marker(&ev, DATA_FLAG_TRUNCATED, total);
        return 0;
    }
    if proto == PROTO_PIPE {
        let tgid = (pid_tgid >> 32) as u32;
        // Announced before its first bytes, so user space knows the fd when they come; an
        // announcement the ring had no room for would leave its bytes unannounced for good, so
        // such a pipe is let go like one that is not JSON-RPC.
        let announced = classify_pipe(segs)
            && crate::emit_conn(
                EventKind::ConnOpen,
                pid_tgid,
                args.fd,
                generation,
                crate::ConnInfo::role(ROLE_PIPE),
            );
        if !announced {
            // Forgotten, so this fd costs one lookup from now on.
            let _ = CONNS.remove(conn_key(tgid, args.fd));
            crate::forget_fd(tgid, args.fd);
            crate::release_tgid(tgid);
            return 0;
        }
        // SAFETY: map value pointer (the entry was not removed).
        unsafe { (*conn).proto = PROTO_JSONRPC };
    }
    let mut cap = call_cap(&cfg);
    if (proto == PROTO_OTHER || proto == PROTO_SEEDED) && !all {
        if proto == PROTO_SEEDED && classify(segs) == PROTO_HTTP {
            // SAFETY: map value pointer.
            unsafe { (*conn).proto = PROTO_HTTP };
        } else {
            stat_add(Stat::OtherProtoBytes, total);
            return 0;
        }
    }
    // Only a stream's first bytes say what it is. A call that starts past them (they came in
    // calls shorter than the four bytes `classify` needs, each delivered undecided) is delivered
    // undecided too: user space has the whole start and decides. Classifying it would judge the
    // middle of a message — a request written or read a byte at a time, then a longer read
    // ("ntent-Type: ...") — and stop the capture of an HTTP connection mid-request.
    if proto == PROTO_UNKNOWN && pos == 0 {
        let p = classify(segs);
        // SAFETY: map value pointer.
        unsafe { (*conn).proto = p };
        if p == PROTO_OTHER && !all {
            // Deliver one event of the first bytes so user space can say what it was (TLS, h2,
            // ...); count the rest.
            cap = MAX_PAYLOAD as u64;
            let sent = copy_out(&ev, segs, cap);
            stat_add(Stat::OtherProtoBytes, total - sent);
            return 0;
        }
    }
    let sent = copy_out(&ev, segs, cap);
    if sent < total {
        ev.pos = pos + sent;
        stat_add(Stat::TruncatedBytes, total - sent);
        marker(&ev, DATA_FLAG_TRUNCATED, total - sent);
    }
    0
}

/// First bytes of a connection (a call at stream position 0): an HTTP/1.x request method or status
/// line, or the start of an HTTP/2 connection → HTTP; fewer than four bytes → still unknown;
/// anything else (TLS records, databases) → other.
fn classify(segs: *const Segments) -> u32 {
    // SAFETY: per-CPU scratch written by gather's loop: read fresh.
    let (n, len0, ptr0) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*segs).n),
            core::ptr::read_volatile(&raw const (*segs).len[0]),
            core::ptr::read_volatile(&raw const (*segs).ptr[0]),
        )
    };
    if n == 0 || len0 < 4 {
        return PROTO_UNKNOWN;
    }
    // SAFETY: user memory through the checked helper.
    let Ok(head) = (unsafe { bpf_probe_read_user(ptr0 as *const [u8; 4]) }) else {
        return PROTO_UNKNOWN;
    };
    if starts_like_http(&head) {
        PROTO_HTTP
    } else {
        PROTO_OTHER
    }
}

/// Whether a pipe's first call moved JSON-RPC ([`starts_like_jsonrpc`]). Too few bytes to tell
/// is a no: the bytes of an undecided call are not delivered, so a message whose start was
/// written in pieces could not be decoded anyway, and a pipe of 1-byte writes must not stay on
/// the capture path. A fixed 16-byte read (a variable-length one needs bounds the verifier can
/// follow); the comparison looks only at the bytes the call moved. A read that faults (a short
/// message at the very end of a mapping) is a no too: rare, and a candidate kept undecided would
/// announce its stream from a later position.
#[inline(always)]
fn classify_pipe(segs: *const Segments) -> bool {
    // SAFETY: per-CPU scratch written by gather's loop: read fresh.
    let (n, len0, ptr0) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*segs).n),
            core::ptr::read_volatile(&raw const (*segs).len[0]),
            core::ptr::read_volatile(&raw const (*segs).ptr[0]),
        )
    };
    // The shortest key, `{"id"`, is 5 bytes.
    if n == 0 || len0 < 5 {
        return false;
    }
    // SAFETY: user memory through the checked helper.
    match unsafe { bpf_probe_read_user(ptr0 as *const [u8; JSONRPC_PEEK]) } {
        Ok(head) => starts_like_jsonrpc(&head, len0 as usize) == Some(true),
        Err(_) => false,
    }
}

pub(crate) fn push(segs: &mut Segments, ptr: u64, len: u64) {
    let i = segs.n as usize;
    if i < MAX_SEGMENTS && len > 0 {
        segs.ptr[i] = ptr;
        segs.len[i] = len;
        segs.n += 1;
    }
}

/// Builds the segment list for one syscall; returns the bytes the syscall moved (for mmsg, the sum
/// of the captured messages' `msg_len`).
///
/// iovec lists are walked under `bpf_loop` with the walk's state in the map, for the same reason
/// as [`copy_out`]: a plain loop makes the verifier re-check the rest of the program once per
/// (iovecs seen, segments pushed) combination.
fn gather(sys: Syscall, args: &IoArgs, ret: u64, segs: *mut Segments) -> u64 {
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    let s = unsafe { &mut *segs };
    s.n = 0;
    let (iov, iovcnt, msgs, nmsg, max_iov, loops) = match sys {
        Syscall::Write
        | Syscall::Read
        | Syscall::Sendto
        | Syscall::Recvfrom
        | Syscall::SslWrite
        | Syscall::SslRead => {
            push(s, args.buf, ret);
            return ret;
        }
        // Never copied (from a file): only its length counts.
        Syscall::Sendfile => return ret,
        Syscall::Writev | Syscall::Readv => (
            args.buf,
            args.count,
            0,
            0,
            MAX_SEGMENTS as u32,
            MAX_SEGMENTS as u32,
        ),
        Syscall::Sendmsg | Syscall::Recvmsg => {
            // SAFETY: user memory through the checked helpers.
            let (iov, iovcnt) = unsafe {
                (
                    bpf_probe_read_user((args.buf + MSGHDR_IOV) as *const u64).unwrap_or(0),
                    bpf_probe_read_user((args.buf + MSGHDR_IOVLEN) as *const u64).unwrap_or(0),
                )
            };
            (iov, iovcnt, 0, 0, MAX_SEGMENTS as u32, MAX_SEGMENTS as u32)
        }
        // ret = number of messages; each message's byte count is its msg_len.
        // Each message costs a start step and a skip or up to MMSG_IOVS gather steps; gather
        // steps are bounded by the segments there are.
        Syscall::Sendmmsg | Syscall::Recvmmsg => (
            0,
            0,
            args.buf,
            ret,
            MMSG_IOVS,
            MAX_MMSG as u32 * 2 + MAX_SEGMENTS as u32,
        ),
    };
    let single = nmsg == 0;
    s.gather = GatherState {
        iov,
        iovcnt,
        left: if single { ret } else { 0 },
        msgs,
        nmsg,
        total: if single { ret } else { 0 },
        j: 0,
        m: if single { u32::MAX } else { 0 },
        max_iov,
        stopped: 0,
    };
    if !single {
        start_message(&mut s.gather, 0);
    }
    // SAFETY: `gather_step` has the callback signature bpf_loop expects and ignores its context.
    unsafe {
        bpf_loop(
            loops,
            gather_step as *const () as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: the callback updated the map behind the compiler's back: read it fresh.
    unsafe { core::ptr::read_volatile(&raw const (*segs).gather.total) }
}

/// Makes message `m` of an mmsg call the current one.
fn start_message(g: &mut GatherState, m: u32) {
    let base = g.msgs + m as u64 * MMSGHDR_SIZE;
    // SAFETY: user memory through the checked helpers.
    let (iov, iovcnt, len) = unsafe {
        (
            bpf_probe_read_user((base + MSGHDR_IOV) as *const u64).unwrap_or(0),
            bpf_probe_read_user((base + MSGHDR_IOVLEN) as *const u64).unwrap_or(0),
            bpf_probe_read_user((base + MMSGHDR_LEN) as *const u32).unwrap_or(0) as u64,
        )
    };
    g.m = m;
    g.iov = iov;
    g.iovcnt = iovcnt;
    g.left = len;
    g.total += len;
    g.j = 0;
}

/// One step of [`gather`]: pushes the next iovec as a segment, or (mmsg) moves to the next message.
/// Returns 1 to stop.
#[inline(never)]
extern "C" fn gather_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(segs) = SEGMENTS.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    let s = unsafe { &mut *segs };
    let g = &mut s.gather;
    let single = g.m == u32::MAX;
    let msg_done = g.left == 0 || g.j as u64 >= g.iovcnt || g.j >= g.max_iov;
    if msg_done {
        if single {
            return 1;
        }
        if g.left > 0 {
            // Part of this message had no iovec slot: stop gathering, keep counting.
            g.stopped = 1;
        }
        let next = g.m + 1;
        if next as u64 >= g.nmsg || next as usize >= MAX_MMSG {
            return 1;
        }
        start_message(g, next);
        return 0;
    }
    if g.stopped != 0 {
        g.left = 0;
        return 0;
    }
    // SAFETY: user memory through the checked helper; `struct iovec` is {base, len}.
    let read = unsafe { bpf_probe_read_user((g.iov + g.j as u64 * 16) as *const [u64; 2]) };
    let (Ok(v), true) = (read, (s.n as usize) < MAX_SEGMENTS) else {
        // Out of segments or an unreadable iovec: what was gathered is the prefix delivered.
        if single {
            return 1;
        }
        g.stopped = 1;
        g.left = 0;
        return 0;
    };
    let take = if v[1] < g.left { v[1] } else { g.left };
    g.left -= take;
    g.j += 1;
    push(s, v[0], take);
    0
}
