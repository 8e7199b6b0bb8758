//! The time the kernel spends inside a process's BPF programs, from the kernel's own accounting
//! (`BPF_ENABLE_STATS`: `run_time_ns` and `run_cnt` per program, shown in the program fd's
//! fdinfo while statistics are on).
//!
//! Wall-clock differences on this 2-core machine mix the probes' cost with everything else that
//! competes for the CPUs: the agent's user space applying the events, the receiving thread, the
//! sender itself. The kernel's counters measure only the syscall path: what a probe adds to the
//! observed program's syscall, which is what the "per captured event in the syscall path" and
//! "per untracked syscall" targets are about. Statistics cost two clock reads per program run
//! themselves, so they are on only for these samples, never for the wall-clock ones.

use std::collections::HashMap;
use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, bail};

/// Statistics are on while this lives (the kernel turns them off when the last such fd closes,
/// also when the bench is killed).
pub struct StatsOn(
    #[expect(
        dead_code,
        reason = "held, never read: closing it turns statistics off"
    )]
    OwnedFd,
);

/// `BPF_ENABLE_STATS` with `BPF_STATS_RUN_TIME` (linux/bpf.h).
pub fn enable() -> Result<StatsOn> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    let attr: [u32; 2] = [0, 0];
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of `attr`, which lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        bail!("bpf(BPF_ENABLE_STATS): {}", std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).context("bpf(BPF_ENABLE_STATS) returned an odd fd")?;
    // SAFETY: a new fd this process owns and nothing else closes.
    Ok(StatsOn(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// One program's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    pub time_ns: u64,
    pub count: u64,
}

/// The counters of every program `pid` holds, by program id.
pub fn snapshot(pid: u32) -> Result<HashMap<u32, Run>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = HashMap::new();
    for fd in std::fs::read_dir(&dir)
        .with_context(|| dir.clone())?
        .flatten()
    {
        let is_prog =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        // A program fd closed since the listing: nothing to count.
        let Ok(text) = std::fs::read_to_string(&info) else {
            continue;
        };
        let (id, run) = parse_fdinfo(&text);
        if let Some(id) = id {
            out.insert(id, run);
        }
    }
    Ok(out)
}

fn parse_fdinfo(text: &str) -> (Option<u32>, Run) {
    let mut id = None;
    let mut run = Run::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "prog_id" => id = v.parse().ok(),
            "run_time_ns" => run.time_ns = v.parse().unwrap_or(0),
            "run_cnt" => run.count = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    (id, run)
}

/// The kernel's names for the program ids (`bpftool prog show`; 15 characters at most, so a name
/// may stand for several programs).
pub fn names() -> Result<HashMap<u32, String>> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool (cargo xtask setup --test installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = u32::try_from(p.get("id")?.as_u64()?).ok()?;
            Some((id, p.get("name")?.as_str()?.to_string()))
        })
        .collect())
}

/// ns per run of the programs named in `only` (all when empty), from `a` to `b`.
pub fn per_run(
    a: &HashMap<u32, Run>,
    b: &HashMap<u32, Run>,
    names: &HashMap<u32, String>,
    only: &[&str],
) -> f64 {
    let (mut time, mut count) = (0u64, 0u64);
    for (id, r) in b {
        let named = names.get(id).map(String::as_str).unwrap_or("");
        if !only.is_empty() && !only.contains(&named) {
            continue;
        }
        let before = a.get(id).copied().unwrap_or_default();
        time += r.time_ns.saturating_sub(before.time_ns);
        count += r.count.saturating_sub(before.count);
    }
    if count == 0 {
        f64::NAN
    } else {
        time as f64 / count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_counters_and_runs_between_snapshots() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t5\n\
                    prog_jited:\t1\nprog_tag:\tabc\nmemlock:\t4096\nprog_id:\t42\n\
                    run_time_ns:\t9000\nrun_cnt:\t100\nrecursion_misses:\t0\n";
        let (id, run) = parse_fdinfo(text);
        assert_eq!(id, Some(42));
        assert_eq!(
            run,
            Run {
                time_ns: 9000,
                count: 100
            }
        );
        let a = HashMap::from([
            (42, run),
            (
                7,
                Run {
                    time_ns: 10,
                    count: 1,
                },
            ),
        ]);
        let b = HashMap::from([
            (
                42,
                Run {
                    time_ns: 12000,
                    count: 150,
                },
            ),
            (
                7,
                Run {
                    time_ns: 1010,
                    count: 2,
                },
            ),
        ]);
        let names = HashMap::from([(42, "sys_exit_write".into()), (7, "other".into())]);
        assert_eq!(per_run(&a, &b, &names, &["sys_exit_write"]), 60.0);
        assert_eq!(per_run(&a, &b, &names, &[]), 4000.0 / 51.0);
        assert!(per_run(&a, &a, &names, &[]).is_nan());
    }
}
