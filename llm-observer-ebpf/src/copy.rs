//! The copy to user space: a data syscall's (or TLS call's) gathered segments → ring events of at
//! most `MAX_PAYLOAD` bytes with contiguous positions, zero-payload markers (EOF, reset,
//! truncation), and the ring's notification and room policy.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_probe_read_user_buf, generated::bpf_loop},
};
use llm_observer_common::{
    Config, DATA_EVENT_HEADER_LEN, DATA_FLAG_TRUNCATED, EventKind, MAX_CAPTURE_PER_CALL,
    MAX_CHUNKS_PER_CALL, MAX_PAYLOAD, MAX_SEGMENTS, Stat, Syscall,
};

use crate::io::Segments;
use crate::{EVENTS, SCRATCH, SEGMENTS, config, header, stat_add};

/// Progress of [`copy_out`]'s loop.
#[repr(C)]
pub(crate) struct CopyState {
    pub(crate) pid_tgid: u64,
    pub(crate) generation: u64,
    pub(crate) now: u64,
    pub(crate) pos: u64,
    pub(crate) total: u64,
    pub(crate) limit: u64,
    pub(crate) done: u64,
    pub(crate) off: u64,
    pub(crate) idx: u32,
    pub(crate) fd: i32,
    pub(crate) dir: u32,
    pub(crate) sys: u32,
    /// `DATA_FLAG_*` bits every event of this copy carries (`DATA_FLAG_TLS` or 0).
    pub(crate) flags: u32,
    pub(crate) _pad: u32,
}

pub(crate) struct Meta {
    pub(crate) pid_tgid: u64,
    pub(crate) fd: i32,
    pub(crate) generation: u64,
    pub(crate) now: u64,
    pub(crate) pos: u64,
    pub(crate) total: u64,
    pub(crate) dir: u8,
    pub(crate) sys: Syscall,
    /// `DATA_FLAG_*` bits every event and marker of this call carries (`DATA_FLAG_TLS` or 0).
    pub(crate) flags: u16,
}

/// Notification flags for a data event. With `Config::wake_bytes` set the agent drains the ring
/// on a timer and is woken only when that many bytes wait: a wakeup per record (irq_work, then a
/// context switch on the agent's CPU and often an IPI) cost more than the copy itself. Records
/// keep their kernel timestamps, so delivering them milliseconds later changes no measured value.
#[inline(always)]
fn wake_flags() -> u64 {
    let wake = config().wake_bytes;
    if wake == 0 {
        return 0;
    }
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(wake) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Ring flags for a data event of `len` bytes, or `None` when it must not be written: payloads
/// may fill the ring only up to `Config::data_limit`; the rest is kept for open, close and exit
/// events and markers, so a flood of payload loses payload (counted, with exact gaps) but not the
/// records that say which connections existed and how far their streams went.
#[inline(always)]
fn data_flags(len: usize) -> Option<u64> {
    let cfg = config();
    let pending = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    // 8: the ring's record header.
    if cfg.data_limit != 0 && pending + len as u64 + 8 > u64::from(cfg.data_limit) {
        return None;
    }
    Some(if cfg.wake_bytes == 0 {
        0
    } else if pending >= u64::from(cfg.wake_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    })
}

/// A zero-payload event: EOF, or TRUNCATED with `msg_len` = bytes not captured from `pos`.
pub(crate) fn marker(m: &Meta, flags: u16, missing: u64) {
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
    ev.flags = flags | m.flags;
    // SAFETY: the header part of the scratch event is initialised above.
    let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, DATA_EVENT_HEADER_LEN) };
    if EVENTS.output::<[u8]>(bytes, wake_flags()).is_err() {
        // Counted apart from data events: a marker usually follows a lost data event, which
        // `LostEvents` already counted once.
        stat_add(Stat::LostControlEvents, 1);
    }
}

/// Payload bytes one call may copy: `--max-capture-bytes` (`Config::max_bytes_per_call`), at
/// most [`MAX_CAPTURE_PER_CALL`] (0: that).
#[inline(always)]
pub(crate) fn call_cap(cfg: &Config) -> u64 {
    if cfg.max_bytes_per_call == 0 || cfg.max_bytes_per_call > MAX_CAPTURE_PER_CALL {
        MAX_CAPTURE_PER_CALL as u64
    } else {
        cfg.max_bytes_per_call as u64
    }
}

/// Copies up to `cap` bytes of the gathered segments into events. Returns the bytes delivered as a
/// contiguous prefix (a lost event ends the prefix: later bytes are reported as truncated).
///
/// The loop runs under `bpf_loop` (Linux ≥ 5.17) so the verifier checks its body instead of
/// unrolling up to MAX_CHUNKS_PER_CALL iterations. Its state lives in the per-CPU `SEGMENTS` map,
/// not on the stack: map contents are opaque to the verifier, so every iteration looks the same to
/// it and the callback's verification converges at once (stack state would be tracked precisely,
/// iteration by iteration, and blow the instruction budget).
pub(crate) fn copy_out(m: &Meta, segs: *mut Segments, cap: u64) -> u64 {
    let state = CopyState {
        pid_tgid: m.pid_tgid,
        generation: m.generation,
        now: m.now,
        pos: m.pos,
        total: m.total,
        limit: if cap < m.total { cap } else { m.total },
        done: 0,
        off: 0,
        idx: 0,
        fd: m.fd,
        dir: m.dir as u32,
        sys: m.sys as u32,
        flags: m.flags as u32,
        _pad: 0,
    };
    // SAFETY: per-CPU scratch, owned by this program until it returns.
    unsafe { core::ptr::write_volatile(&raw mut (*segs).meta, state) };
    // SAFETY: `copy_chunk` has the callback signature bpf_loop expects and ignores its context.
    unsafe {
        bpf_loop(
            MAX_CHUNKS_PER_CALL + MAX_SEGMENTS as u32,
            copy_chunk as *const () as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above; the callback updated it.
    unsafe { core::ptr::read_volatile(&raw const (*segs).meta.done) }
}

/// One iteration of [`copy_out`]: emits the next chunk (≤ MAX_PAYLOAD bytes) or steps to the next
/// segment. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn copy_chunk(_index: u32, _ctx: *mut c_void) -> i64 {
    let (Some(segs), Some(p)) = (SEGMENTS.get_ptr_mut(0), SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: per-CPU scratch maps, owned by this program until it returns.
    let (segs, ev) = unsafe { (&mut *segs, &mut *p) };
    let c = &mut segs.meta;
    if c.done >= c.limit || c.idx >= segs.n {
        return 1;
    }
    let i = (c.idx as usize) & (MAX_SEGMENTS - 1);
    let (sp, sl) = (segs.ptr[i], segs.len[i]);
    if c.off >= sl {
        c.idx += 1;
        c.off = 0;
        return 0;
    }
    let mut len = sl - c.off;
    if len > c.limit - c.done {
        len = c.limit - c.done;
    }
    if len > MAX_PAYLOAD as u64 {
        len = MAX_PAYLOAD as u64;
    }
    let n = len as usize;
    if n == 0 || n > MAX_PAYLOAD {
        return 1;
    }
    ev.hdr = header(EventKind::Data, c.pid_tgid, c.fd, c.generation, c.now);
    ev.pos = c.pos + c.done;
    ev.msg_len = c.total;
    ev.len = n as u32;
    ev.direction = c.dir as u8;
    ev.syscall = c.sys as u8;
    ev.flags = c.flags as u16;
    let payload: &mut [u8; MAX_PAYLOAD] = &mut ev.payload;
    // SAFETY: user memory through the checked helper.
    if unsafe { bpf_probe_read_user_buf((sp + c.off) as *const u8, &mut payload[..n]) }.is_err() {
        return 1;
    }
    // SAFETY: header and the first `n` payload bytes are initialised.
    let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, DATA_EVENT_HEADER_LEN + n) };
    let Some(flags) = data_flags(bytes.len()) else {
        stat_add(Stat::LostEvents, 1);
        return 1;
    };
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        stat_add(Stat::LostEvents, 1);
        return 1;
    }
    c.off += len;
    c.done += len;
    0
}
