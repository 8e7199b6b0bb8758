//! What the running kernel and process allow: privileges, tracefs, BTF, tracepoints. Used by
//! `Capture::load` to fail fast with a clear reason, and by `llm-observer check` to report.

use std::{fs, path::Path};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Capability bits (`include/uapi/linux/capability.h`).
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask of this process, from /proc/self/status.
pub fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

fn has_cap(caps: u64, bit: u32) -> bool {
    caps & (1u64 << bit) != 0
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The capabilities the agent needs (docs/security.md), as one line for messages.
pub const NEEDED_CAPS: &str = "CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE, plus CAP_DAC_READ_SEARCH when not uid 0 (CAP_SYS_ADMIN may stand in for CAP_BPF + CAP_PERFMON)";

/// Missing privileges, as a message naming them; `None` when the agent has what it needs.
pub fn missing_privileges() -> Option<String> {
    let Some(caps) = effective_caps() else {
        return Some("cannot read /proc/self/status to check capabilities".into());
    };
    missing_privileges_in(caps, euid())
}

fn missing_privileges_in(caps: u64, euid: u32) -> Option<String> {
    let bpf_ok =
        has_cap(caps, CAP_SYS_ADMIN) || (has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON));
    let mut missing: Vec<&str> = Vec::new();
    if !bpf_ok {
        missing.extend(
            [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
                .into_iter()
                .filter(|(bit, _)| !has_cap(caps, *bit))
                .map(|(_, name)| name),
        );
    }
    if !has_cap(caps, CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if missing.is_empty() {
        return None;
    }
    let missing = missing.join(", ");
    Some(if bpf_ok {
        // Without it /proc/<pid>/fd of other processes is unreadable: sockets would go unnamed,
        // unfiltered by port and, when open before start, uncaptured. Exact or nothing.
        format!(
            "missing {missing} (euid {euid}): needed to read /proc/<pid>/fd and /proc/<pid>/ns of other processes (socket identity, local port, connections open before start); the agent needs {NEEDED_CAPS}"
        )
    } else {
        format!(
            "not privileged enough to load eBPF programs (euid {euid}; missing {missing}; the agent needs {NEEDED_CAPS}): run as root, e.g. `sudo llm-observer`, as a privileged container, or with those capabilities"
        )
    })
}

/// Why `dir` exists but cannot be read (tracefs is mode 0700 root: another uid needs
/// CAP_DAC_READ_SEARCH), if that is the case.
fn unreadable(dir: &str) -> Option<String> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
            "cannot read {dir} ({e}, euid {}): reading tracepoint ids needs CAP_DAC_READ_SEARCH when the agent is not uid 0",
            euid()
        )),
        _ => None,
    }
}

/// The tracing directory in use, mounting tracefs if it is not mounted yet (idempotent).
pub fn tracing_dir() -> Result<&'static str, String> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(TRACEFS);
    }
    if Path::new(DEBUGFS_TRACING).join("events").is_dir() {
        return Ok(DEBUGFS_TRACING);
    }
    if let Some(why) = unreadable(TRACEFS).or_else(|| unreadable(DEBUGFS_TRACING)) {
        return Err(why);
    }
    if Path::new(TRACEFS).is_dir() {
        let src = c"tracefs";
        let dst = c"/sys/kernel/tracing";
        // SAFETY: valid NUL-terminated strings; mount(2) has no memory preconditions.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc == 0 && Path::new(TRACEFS).join("events").is_dir() {
            log::info!("mounted tracefs at {TRACEFS}");
            return Ok(TRACEFS);
        }
        return Err(format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed ({}); mount it with `mount -t tracefs nodev {TRACEFS}`",
            std::io::Error::last_os_error()
        ));
    }
    Err(format!(
        "no tracefs: neither {TRACEFS} nor {DEBUGFS_TRACING} exists (kernel built without CONFIG_TRACING?)"
    ))
}

/// Whether `category:name` exists on this kernel.
pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    tracing_dir().is_ok_and(|d| {
        Path::new(d)
            .join("events")
            .join(category)
            .join(name)
            .join("id")
            .exists()
    })
}

/// The running kernel's (major, minor) version, from /proc/sys/kernel/osrelease.
pub fn kernel_version() -> Option<(u32, u32)> {
    parse_kernel_version(&fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The oldest kernel the programs load on: they copy payloads under `bpf_loop` (Linux 5.17).
pub const MIN_KERNEL: (u32, u32) = (5, 17);

/// Why this kernel is too old, if it is.
pub fn kernel_too_old() -> Option<String> {
    let v = kernel_version()?;
    (v < MIN_KERNEL).then(|| {
        format!(
            "kernel {}.{} is too old: llm-observer's eBPF programs need Linux ≥ {}.{} (bpf_loop)",
            v.0, v.1, MIN_KERNEL.0, MIN_KERNEL.1
        )
    })
}

/// Whether `sched_process_exit` reports `group_dead` (Linux ≥ 6.16); without it the kernel side
/// takes the thread-group leader's exit as the process's.
pub fn exit_has_group_dead() -> bool {
    tracing_dir().is_ok_and(|d| {
        fs::read_to_string(Path::new(d).join("events/sched/sched_process_exit/format"))
            .is_ok_and(|f| f.contains("group_dead"))
    })
}

/// Everything the tracepoint capture needs, or the first thing missing.
pub fn ensure_capture_possible() -> Result<(), String> {
    if let Some(why) = missing_privileges() {
        return Err(why);
    }
    if let Some(why) = kernel_too_old() {
        return Err(why);
    }
    tracing_dir()?;
    for (cat, name) in [
        ("syscalls", "sys_enter_write"),
        ("sock", "inet_sock_set_state"),
    ] {
        if !tracepoint_exists(cat, name) {
            return Err(format!(
                "tracepoint {cat}:{name} is missing (kernel without CONFIG_FTRACE_SYSCALLS?); llm-observer needs syscall tracepoints"
            ));
        }
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to the memory cgroup.
/// Raising the limit can fail without CAP_SYS_RESOURCE, which is fine on those newer kernels.
pub fn raise_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels ≥ 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One line of `llm-observer check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    pub name: &'static str,
    pub ok: bool,
    /// Whether the capture needs it (a failing required item makes `check` exit non-zero).
    pub required: bool,
    pub detail: String,
}

/// What this kernel and process support, for `llm-observer check`.
pub fn check_items() -> Vec<CheckItem> {
    let mut items = Vec::new();
    let uname = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let too_old = kernel_too_old();
    items.push(CheckItem {
        name: "kernel",
        ok: too_old.is_none(),
        required: true,
        detail: too_old.unwrap_or_else(|| {
            format!(
                "{} (≥ {}.{} needed)",
                uname.trim(),
                MIN_KERNEL.0,
                MIN_KERNEL.1
            )
        }),
    });
    let privs = missing_privileges();
    items.push(CheckItem {
        name: "privileges",
        ok: privs.is_none(),
        required: true,
        detail: privs.unwrap_or_else(|| {
            "can load eBPF and read other processes' sockets (CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN, CAP_SYS_PTRACE)".into()
        }),
    });
    match tracing_dir() {
        Ok(d) => items.push(CheckItem {
            name: "tracefs",
            ok: true,
            required: true,
            detail: d.to_owned(),
        }),
        Err(e) => items.push(CheckItem {
            name: "tracefs",
            ok: false,
            required: true,
            detail: e,
        }),
    }
    for (cat, name) in [
        ("syscalls", "sys_enter_write"),
        ("syscalls", "sys_enter_accept4"),
        ("sock", "inet_sock_set_state"),
    ] {
        let ok = tracepoint_exists(cat, name);
        items.push(CheckItem {
            name: "tracepoint",
            ok,
            required: true,
            detail: format!("{cat}:{name} {}", if ok { "present" } else { "missing" }),
        });
    }
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    items.push(CheckItem {
        name: "btf",
        ok: btf,
        required: false,
        detail: if btf {
            "/sys/kernel/btf/vmlinux present".into()
        } else {
            "no kernel BTF (not needed)".into()
        },
    });
    let kprobes = tracing_dir().is_ok_and(|d| Path::new(d).join("kprobe_events").exists());
    items.push(CheckItem {
        name: "kprobes",
        ok: kprobes,
        required: false,
        detail: if kprobes {
            "available (not used: tracepoints suffice)".into()
        } else {
            "absent (CONFIG_KPROBES off); not needed".into()
        },
    });
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exactly_the_missing_capabilities() {
        let bit = |b: u32| 1u64 << b;
        let all = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_SYS_PTRACE);
        assert_eq!(missing_privileges_in(all, 1000), None);
        assert_eq!(missing_privileges_in(u64::MAX, 0), None);
        assert_eq!(
            missing_privileges_in(bit(CAP_SYS_ADMIN) | bit(CAP_SYS_PTRACE), 0),
            None
        );
        let no_ptrace = missing_privileges_in(all & !bit(CAP_SYS_PTRACE), 65534).expect("missing");
        assert!(
            no_ptrace
                .starts_with("missing CAP_SYS_PTRACE (euid 65534): needed to read /proc/<pid>/fd"),
            "{no_ptrace}"
        );
        let no_perfmon = missing_privileges_in(all & !bit(CAP_PERFMON), 65534).expect("missing");
        assert!(
            no_perfmon.starts_with(
                "not privileged enough to load eBPF programs (euid 65534; missing CAP_PERFMON;"
            ),
            "{no_perfmon}"
        );
        let none = missing_privileges_in(0, 65534).expect("missing");
        assert!(
            none.contains("missing CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE;"),
            "{none}"
        );
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_version("4.19"), Some((4, 19)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert!((5, 15) < MIN_KERNEL && (5, 17) >= MIN_KERNEL && (6, 1) > MIN_KERNEL);
    }
}
