//! The data path: read/write-family syscalls on tracked sockets → `DataEvent`s.
//!
//! Enter probes save the arguments (only for tracked fds); exit probes know how many bytes really
//! moved (`ret`), gather the user buffers as (pointer, length) segments — one for plain calls,
//! several for iovec calls, several messages for mmsg — and copy them in order into events of at
//! most `MAX_PAYLOAD` bytes with contiguous `pos`. Bytes beyond the per-call cap are counted and
//! announced by a zero-length `DATA_FLAG_TRUNCATED` event, never silently dropped.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
    },
    programs::TracePointContext,
};
use llm_observer_common::{
    CONFIG_FLAG_ALL_PROTOCOLS, DATA_EVENT_HEADER_LEN, DATA_FLAG_EOF, DATA_FLAG_TRUNCATED,
    DIR_EGRESS, DIR_INGRESS, EventKind, MAX_CAPTURE_PER_CALL, MAX_CHUNKS_PER_CALL, MAX_MMSG,
    MAX_PAYLOAD, MAX_SEGMENTS, PROTO_HTTP, PROTO_OTHER, PROTO_UNKNOWN, Stat, Syscall, TP_ARG0,
    TP_ARG1, TP_ARG2, TP_RET, conn_key,
};

use crate::{ACTIVE_IO, CONNS, EVENTS, SCRATCH, SEGMENTS, config, header, stat_add, wanted};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoArgs {
    /// buf / iovec array / msghdr / mmsghdr array, by syscall.
    buf: u64,
    /// count / iovcnt / - / vlen.
    count: u64,
    fd: i32,
    syscall: u32,
}

#[repr(C)]
pub struct Segments {
    n: u32,
    _pad: u32,
    ptr: [u64; MAX_SEGMENTS],
    len: [u64; MAX_SEGMENTS],
}

/// `struct user_msghdr`: msg_iov @16, msg_iovlen @24. `struct mmsghdr`: msghdr + msg_len @56, 64 bytes.
const MSGHDR_IOV: u64 = 16;
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
    // SAFETY: offsets from the format files; every data syscall has fd, buffer, count first.
    let fd = unsafe { ctx.read_at::<u64>(TP_ARG0).unwrap_or(u64::MAX) } as i32;
    // One hash lookup is all an untracked fd (files, pipes, UDP) ever costs.
    if CONNS.get_ptr(conn_key(tgid, fd)).is_none() {
        return 0;
    }
    // SAFETY: as above.
    let (buf, count) = unsafe {
        (
            ctx.read_at::<u64>(TP_ARG1).unwrap_or(0),
            ctx.read_at::<u64>(TP_ARG2).unwrap_or(0),
        )
    };
    let _ = ACTIVE_IO.insert(
        pid_tgid,
        IoArgs {
            buf,
            count,
            fd,
            syscall: sys as u32,
        },
        0,
    );
    0
}

pub fn exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let Some(args) = (unsafe { ACTIVE_IO.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_IO.remove(pid_tgid);
    // SAFETY: `ret` offset from the format file.
    let ret = unsafe { ctx.read_at::<i64>(TP_RET).unwrap_or(-1) };
    if ret < 0 {
        return 0;
    }
    let Some(sys) = Syscall::from_u8(args.syscall as u8) else {
        return 0;
    };
    let Some(conn) = CONNS.get_ptr_mut(conn_key((pid_tgid >> 32) as u32, args.fd)) else {
        return 0;
    };
    let Some(segs) = SEGMENTS.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, used by this program only until it returns.
    let segs = unsafe { &mut *segs };
    let total = gather(sys, &args, ret as u64, segs);
    let dir = sys.direction();
    // SAFETY: map value pointer; fields are plain integers.
    let (pos, generation, proto) = unsafe {
        let c = &mut *conn;
        let pos = if dir == DIR_EGRESS {
            c.wr_pos
        } else {
            c.rd_pos
        };
        if dir == DIR_EGRESS {
            c.wr_pos += total;
        } else {
            c.rd_pos += total;
        }
        (pos, c.generation, c.proto)
    };
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut ev = Meta {
        pid_tgid,
        fd: args.fd,
        generation,
        now,
        pos,
        total,
        dir,
        sys,
    };
    if total == 0 {
        if dir == DIR_INGRESS && ret == 0 {
            // read() == 0: the peer closed its side. User space needs it to tell who ended a
            // stream (client cancel vs server close).
            marker(&ev, DATA_FLAG_EOF, 0);
        }
        return 0;
    }
    let cfg = config();
    let all = cfg.flags & CONFIG_FLAG_ALL_PROTOCOLS != 0;
    let mut cap = if cfg.max_bytes_per_call == 0 || cfg.max_bytes_per_call > MAX_CAPTURE_PER_CALL {
        MAX_CAPTURE_PER_CALL as u64
    } else {
        cfg.max_bytes_per_call as u64
    };
    if proto == PROTO_OTHER && !all {
        stat_add(Stat::OtherProtoBytes, total);
        return 0;
    }
    if proto == PROTO_UNKNOWN {
        let p = classify(segs);
        // SAFETY: map value pointer.
        unsafe { (*conn).proto = p };
        if p == PROTO_OTHER && !all {
            // Deliver one event of the first bytes so user space can say what it was (TLS, h2,
            // ...); count the rest.
            cap = MAX_PAYLOAD as u64;
            let sent = copy_out(&mut ev, segs, cap);
            stat_add(Stat::OtherProtoBytes, total - sent);
            return 0;
        }
    }
    let sent = copy_out(&mut ev, segs, cap);
    if sent < total {
        ev.pos = pos + sent;
        stat_add(Stat::TruncatedBytes, total - sent);
        marker(&ev, DATA_FLAG_TRUNCATED, total - sent);
    }
    0
}

struct Meta {
    pid_tgid: u64,
    fd: i32,
    generation: u64,
    now: u64,
    pos: u64,
    total: u64,
    dir: u8,
    sys: Syscall,
}

/// A zero-payload event: EOF, or TRUNCATED with `msg_len` = bytes not captured from `pos`.
fn marker(m: &Meta, flags: u16, missing: u64) {
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let ev = unsafe { &mut *p };
    ev.hdr = header(EventKind::Data, m.pid_tgid, m.fd, m.generation, m.now);
    ev.pos = m.pos;
    ev.msg_len = if flags == DATA_FLAG_TRUNCATED {
        missing
    } else {
        m.total
    };
    ev.len = 0;
    ev.direction = m.dir;
    ev.syscall = m.sys as u8;
    ev.flags = flags;
    // SAFETY: the header part of the scratch event is initialised above.
    let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, DATA_EVENT_HEADER_LEN) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        stat_add(Stat::LostEvents, 1);
    }
}

/// Copies up to `cap` bytes of the gathered segments into events. Returns the bytes delivered as a
/// contiguous prefix (a lost event ends the prefix: later bytes are reported as truncated).
fn copy_out(m: &mut Meta, segs: &Segments, cap: u64) -> u64 {
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let limit = if cap < m.total { cap } else { m.total };
    let mut idx: u32 = 0;
    let mut off: u64 = 0;
    let mut done: u64 = 0;
    for _ in 0..MAX_CHUNKS_PER_CALL + MAX_SEGMENTS as u32 {
        if done >= limit || idx >= segs.n {
            break;
        }
        let i = (idx as usize) & (MAX_SEGMENTS - 1);
        let (sp, sl) = (segs.ptr[i], segs.len[i]);
        if off >= sl {
            idx += 1;
            off = 0;
            continue;
        }
        let mut len = sl - off;
        if len > limit - done {
            len = limit - done;
        }
        if len > MAX_PAYLOAD as u64 {
            len = MAX_PAYLOAD as u64;
        }
        let n = len as usize;
        if n == 0 || n > MAX_PAYLOAD {
            break;
        }
        // SAFETY: per-CPU scratch, owned by this program until it returns.
        let ev = unsafe { &mut *p };
        ev.hdr = header(EventKind::Data, m.pid_tgid, m.fd, m.generation, m.now);
        ev.pos = m.pos + done;
        ev.msg_len = m.total;
        ev.len = n as u32;
        ev.direction = m.dir;
        ev.syscall = m.sys as u8;
        ev.flags = 0;
        let payload: &mut [u8; MAX_PAYLOAD] = &mut ev.payload;
        // SAFETY: user memory through the checked helper.
        if unsafe { bpf_probe_read_user_buf((sp + off) as *const u8, &mut payload[..n]) }.is_err() {
            break;
        }
        // SAFETY: header and the first `n` payload bytes are initialised.
        let bytes =
            unsafe { core::slice::from_raw_parts(p as *const u8, DATA_EVENT_HEADER_LEN + n) };
        if EVENTS.output::<[u8]>(bytes, 0).is_err() {
            stat_add(Stat::LostEvents, 1);
            break;
        }
        off += len;
        done += len;
    }
    done
}

/// First bytes of a connection: an HTTP/1.x request method or status line → HTTP; fewer than four
/// bytes → still unknown; anything else (TLS records, the HTTP/2 preface, databases) → other.
fn classify(segs: &Segments) -> u32 {
    if segs.n == 0 || segs.len[0] < 4 {
        return PROTO_UNKNOWN;
    }
    // SAFETY: user memory through the checked helper.
    let Ok(head) = (unsafe { bpf_probe_read_user(segs.ptr[0] as *const [u8; 4]) }) else {
        return PROTO_UNKNOWN;
    };
    match &head {
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" | b"TRAC" | b"HTTP" => {
            PROTO_HTTP
        }
        // CONNECT is HTTP/1.1 too; user space reports the tunnel as unsupported.
        b"CONN" => PROTO_HTTP,
        _ => PROTO_OTHER,
    }
}

fn push(segs: &mut Segments, ptr: u64, len: u64) {
    let i = segs.n as usize;
    if i < MAX_SEGMENTS && len > 0 {
        segs.ptr[i] = ptr;
        segs.len[i] = len;
        segs.n += 1;
    }
}

/// Gathers up to `bytes` bytes from an iovec array, at most `max_iov` entries. Returns the bytes
/// covered (less than `bytes` only when segments ran out).
fn gather_iov(segs: &mut Segments, iov: u64, iovcnt: u64, bytes: u64, max_iov: u32) -> u64 {
    let mut left = bytes;
    for j in 0..max_iov {
        if left == 0 || j as u64 >= iovcnt || segs.n as usize >= MAX_SEGMENTS {
            break;
        }
        // SAFETY: user memory through the checked helper; `struct iovec` is {base, len}.
        let Ok(v) = (unsafe { bpf_probe_read_user((iov + j as u64 * 16) as *const [u64; 2]) })
        else {
            break;
        };
        let take = if v[1] < left { v[1] } else { left };
        push(segs, v[0], take);
        left -= take;
    }
    bytes - left
}

/// Builds the segment list for one syscall; returns the bytes the syscall moved (for mmsg, the sum
/// of the captured messages' `msg_len`).
fn gather(sys: Syscall, args: &IoArgs, ret: u64, segs: &mut Segments) -> u64 {
    segs.n = 0;
    match sys {
        Syscall::Write | Syscall::Read | Syscall::Sendto | Syscall::Recvfrom => {
            push(segs, args.buf, ret);
            ret
        }
        Syscall::Writev | Syscall::Readv => {
            gather_iov(segs, args.buf, args.count, ret, MAX_SEGMENTS as u32);
            ret
        }
        Syscall::Sendmsg | Syscall::Recvmsg => {
            // SAFETY: user memory through the checked helpers.
            let (iov, iovlen) = unsafe {
                (
                    bpf_probe_read_user((args.buf + MSGHDR_IOV) as *const u64).unwrap_or(0),
                    bpf_probe_read_user((args.buf + MSGHDR_IOVLEN) as *const u64).unwrap_or(0),
                )
            };
            gather_iov(segs, iov, iovlen, ret, MAX_SEGMENTS as u32);
            ret
        }
        Syscall::Sendmmsg | Syscall::Recvmmsg => {
            // ret = number of messages; each message's byte count is its msg_len.
            let mut total = 0u64;
            for m in 0..MAX_MMSG as u64 {
                if m >= ret {
                    break;
                }
                let base = args.buf + m * MMSGHDR_SIZE;
                // SAFETY: user memory through the checked helpers.
                let (iov, iovlen, len) = unsafe {
                    (
                        bpf_probe_read_user((base + MSGHDR_IOV) as *const u64).unwrap_or(0),
                        bpf_probe_read_user((base + MSGHDR_IOVLEN) as *const u64).unwrap_or(0),
                        bpf_probe_read_user((base + MMSGHDR_LEN) as *const u32).unwrap_or(0) as u64,
                    )
                };
                gather_iov(segs, iov, iovlen, len, MMSG_IOVS);
                total += len;
            }
            total
        }
    }
}
