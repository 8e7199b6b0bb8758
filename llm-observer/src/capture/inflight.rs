//! Syscalls already in flight when the probes attach.
//!
//! The exit probe of a syscall needs what its enter probe saved (the buffer, the listening fd). A
//! thread that entered `accept4()` or `read()` before the probes were attached — a server parked in
//! its accept loop, a keep-alive connection waiting for the next request — would return with no
//! saved arguments, and its first connection or request would be lost from the server view after
//! every agent start. The kernel shows what a blocked thread is doing in
//! `/proc/<pid>/task/<tid>/syscall` (number and arguments), so user space writes the saved
//! arguments for it, as the enter probe would have, right after attaching.
//!
//! Races, and why they are harmless: a thread whose call returns between the read of its syscall
//! file and the map write leaves an entry that its next call's enter overwrites (enter probes save
//! arguments for every accept and for every read/write on a tracked fd) — and the file is read
//! again after the write, removing the entry when the thread has moved on.

use std::path::Path;

use llm_observer_common::{AcceptArgs, IoArgs, Syscall};

/// A blocked syscall as `/proc/<pid>/task/<tid>/syscall` shows it: number and first four
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub nr: i64,
    pub args: [u64; 4],
}

/// Parses `"NR arg1 arg2 … sp pc"` (hex arguments); `None` for `running`, `-1 …` (not in a
/// syscall) and anything malformed.
pub fn parse_syscall_line(text: &str) -> Option<Blocked> {
    let mut it = text.split_ascii_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 4];
    for a in &mut args {
        let s = it.next()?;
        *a = u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()?;
    }
    Some(Blocked { nr, args })
}

/// What a blocked call is, for the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Accept,
    Io(Syscall),
}

/// The capture's view of syscall number `nr` (this architecture's numbers).
pub fn kind_of(nr: i64) -> Option<Kind> {
    let io = |s| Some(Kind::Io(s));
    match nr {
        libc::SYS_accept | libc::SYS_accept4 => Some(Kind::Accept),
        libc::SYS_read => io(Syscall::Read),
        libc::SYS_readv => io(Syscall::Readv),
        libc::SYS_recvfrom => io(Syscall::Recvfrom),
        libc::SYS_recvmsg => io(Syscall::Recvmsg),
        libc::SYS_recvmmsg => io(Syscall::Recvmmsg),
        libc::SYS_write => io(Syscall::Write),
        libc::SYS_writev => io(Syscall::Writev),
        libc::SYS_sendto => io(Syscall::Sendto),
        libc::SYS_sendmsg => io(Syscall::Sendmsg),
        libc::SYS_sendmmsg => io(Syscall::Sendmmsg),
        _ => None,
    }
}

/// The arguments the enter probe of a blocked read/write-family call would have saved.
pub fn io_args(b: &Blocked, sys: Syscall, generation: u64) -> IoArgs {
    let [fd, buf, count, arg3] = b.args;
    // recv flags: recvfrom's and recvmmsg's 4th argument, recvmsg's 3rd (as in the enter probe).
    let flags = match sys {
        Syscall::Recvfrom | Syscall::Recvmmsg => arg3,
        Syscall::Recvmsg => count,
        _ => 0,
    } as u32;
    IoArgs {
        buf,
        count,
        generation,
        fd: fd as i32,
        syscall: sys as u32,
        flags,
        _pad: 0,
    }
}

/// The arguments the enter probe of a blocked accept would have saved; `buf_len` is read from the
/// caller's memory (the size of its address buffer).
pub fn accept_args(b: &Blocked, buf_len: u32) -> AcceptArgs {
    let [listen_fd, addr, addrlen_ptr, _] = b.args;
    AcceptArgs {
        addr,
        addrlen_ptr,
        listen_fd: listen_fd as i32,
        buf_len: if addr != 0 && addrlen_ptr != 0 {
            buf_len
        } else {
            0
        },
    }
}

/// Every thread of every process under `proc_root` (tgid, tid), except `skip`, restricted to
/// `only` when set.
pub fn threads(proc_root: &Path, only: Option<u32>, skip: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for p in procs.flatten() {
        let Some(tgid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if tgid == skip || only.is_some_and(|o| o != tgid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                out.push((tgid, tid));
            }
        }
    }
    out
}

/// The blocked syscall of thread `tid` of `tgid`, if any.
pub fn blocked(proc_root: &Path, tgid: u32, tid: u32) -> Option<Blocked> {
    let path = proc_root
        .join(tgid.to_string())
        .join("task")
        .join(tid.to_string())
        .join("syscall");
    parse_syscall_line(&std::fs::read_to_string(path).ok()?)
}

/// Reads a `u32` at `addr` in process `pid` (the accept's address-length argument).
pub fn read_u32(pid: u32, addr: u64) -> Option<u32> {
    let mut v: u32 = 0;
    let local = libc::iovec {
        iov_base: (&mut v as *mut u32).cast(),
        iov_len: 4,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 4,
    };
    // SAFETY: `local` points at a live, writable u32 of the right size; the kernel checks the
    // remote range and fails cleanly for a bad address or a gone process.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == 4).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocked_calls_and_skips_others() {
        let b = parse_syscall_line(
            "288 0x3 0x7ffd5d2c1a30 0x7ffd5d2c1a2c 0x80800 0x0 0x0 0x7ffd5d2c1a18 0x7f1c2e8f1b7d\n",
        )
        .expect("blocked accept4");
        assert_eq!(b.nr, 288);
        assert_eq!(b.args, [3, 0x7ffd5d2c1a30, 0x7ffd5d2c1a2c, 0x80800]);
        assert_eq!(parse_syscall_line("running\n"), None);
        assert_eq!(
            parse_syscall_line("-1 0x7ffd5d2c1a18 0x7f1c2e8f1b7d\n"),
            None
        );
        assert_eq!(parse_syscall_line("0 0x5 zz 0x1"), None);
        assert_eq!(parse_syscall_line(""), None);
    }

    #[test]
    fn arguments_match_what_the_enter_probes_save() {
        let b = Blocked {
            nr: libc::SYS_recvfrom,
            args: [7, 0x1000, 4096, 0x2],
        };
        let a = io_args(&b, Syscall::Recvfrom, 99);
        assert_eq!(
            (a.fd, a.buf, a.count, a.flags, a.generation, a.syscall),
            (7, 0x1000, 4096, 2, 99, Syscall::Recvfrom as u32)
        );
        let r = io_args(&Blocked { nr: 0, ..b }, Syscall::Read, 1);
        assert_eq!(r.flags, 0);
        let acc = accept_args(
            &Blocked {
                nr: libc::SYS_accept4,
                args: [3, 0x10, 0x20, 0],
            },
            16,
        );
        assert_eq!(
            (acc.listen_fd, acc.addr, acc.addrlen_ptr, acc.buf_len),
            (3, 0x10, 0x20, 16)
        );
        let no_addr = accept_args(
            &Blocked {
                nr: libc::SYS_accept4,
                args: [3, 0, 0, 0],
            },
            16,
        );
        assert_eq!(no_addr.buf_len, 0);
        assert_eq!(kind_of(libc::SYS_accept4), Some(Kind::Accept));
        assert_eq!(kind_of(libc::SYS_read), Some(Kind::Io(Syscall::Read)));
        assert_eq!(kind_of(libc::SYS_futex), None);
    }
}
