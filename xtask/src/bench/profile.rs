//! Where the time goes under the agent: a system-wide `perf record` (user and kernel, BPF
//! programs included: their JIT images carry symbols) while (1) the saturation load runs and (2)
//! the untracked write/read loop runs, summarised by process, in the agent, and in the BPF
//! programs the traced processes execute.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use super::Opts;
use super::procs::{Agent, Bins};

/// (percent of all samples, what) lines, highest first.
pub type Lines = Vec<(f64, String)>;

#[derive(Debug, Default)]
pub struct Profile {
    /// Saturation: share of samples per process.
    pub by_process: Lines,
    /// Saturation: the agent's samples in user space and in the kernel on its behalf.
    pub agent_split: Lines,
    pub agent: Lines,
    /// Saturation: BPF programs and helpers, in whichever process ran them.
    pub bpf: Lines,
    /// Untracked write/read loop with the agent loaded: that loop's process by symbol.
    pub syscalls: Lines,
}

struct Perf<'a> {
    perf: &'a Path,
    data: PathBuf,
}

impl Perf<'_> {
    /// Records every CPU while `driver` runs; returns the driver's pid.
    fn record(&self, bins: &Bins, driver: &[String], skip_s: f64, seconds: f64) -> Result<u32> {
        let child = Command::new(&bins.bench)
            .args(driver)
            .stdout(Stdio::null())
            .spawn()
            .context("starting llm-bench")?;
        let pid = child.id();
        let waiter = std::thread::spawn(move || child.wait_with_output());
        std::thread::sleep(std::time::Duration::from_secs_f64(skip_s));
        let rec = Command::new(self.perf)
            .args(["record", "-a", "-g", "-F", "499", "-q", "-o"])
            .arg(&self.data)
            .args(["--", "sleep"])
            .arg(format!("{:.1}", seconds.max(0.5)))
            .output()
            .context("perf record")?;
        let _ = waiter.join();
        if !rec.status.success() {
            bail!(
                "perf record failed: {}",
                String::from_utf8_lossy(&rec.stderr)
            );
        }
        Ok(pid)
    }

    /// `perf report` lines; `relative`: percentages of the filtered samples (else of all).
    fn report(&self, limit: &str, relative: bool, extra: &[&str]) -> Result<Lines> {
        let pct = if relative { "relative" } else { "absolute" };
        let out = Command::new(self.perf)
            .arg("report")
            .arg("-i")
            .arg(&self.data)
            .args([
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percentage",
                pct,
            ])
            .args(["--percent-limit", limit])
            .args(extra)
            .output()
            .context("perf report")?;
        if !out.status.success() {
            bail!(
                "perf report failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let (pct, rest) = l.trim().split_once('%')?;
                let what = rest.split_whitespace().collect::<Vec<_>>().join(" ");
                Some((pct.trim().parse().ok()?, what))
            })
            .collect())
    }

    /// Samples per process id (`perf report --pid` selects threads, not processes).
    fn samples_by_pid(&self) -> Result<(std::collections::HashMap<u32, u64>, u64)> {
        let out = Command::new(self.perf)
            .arg("script")
            .arg("-i")
            .arg(&self.data)
            .args(["-F", "pid"])
            .output()
            .context("perf script")?;
        let mut by = std::collections::HashMap::new();
        let mut total = 0;
        for pid in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
        {
            *by.entry(pid).or_insert(0u64) += 1;
            total += 1;
        }
        Ok((by, total))
    }
}

/// The thread ids of a live process, comma-separated, for `perf report --tid`.
fn tids(pid: u32) -> String {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|_| pid.to_string())
}

pub fn run(
    bins: &Bins,
    opts: &Opts,
    perf: &Path,
    dir: &Path,
    target: SocketAddr,
    emulator_pid: u32,
) -> Result<Profile> {
    let agent = Agent::start(bins)?;
    agent.settle()?;
    let p = Perf {
        perf,
        data: dir.join("perf-saturation.data"),
    };
    let load = super::overhead::load_args(target, opts.concurrency, opts, 0.0);
    let load_pid = p.record(bins, &load, opts.warmup, opts.seconds - 0.5)?;
    let agent_pid = agent.pid();
    let mut out = Profile::default();
    let (by, total) = p.samples_by_pid()?;
    let share = |pid: u32| 100.0 * by.get(&pid).copied().unwrap_or(0) as f64 / total.max(1) as f64;
    let mut ours = 0.0;
    for (what, pid) in [
        ("agent (llm-observer)", agent_pid),
        ("server (llm-emulator)", emulator_pid),
        ("client (llm-bench load)", load_pid),
    ] {
        ours += share(pid);
        out.by_process.push((share(pid), what.to_owned()));
    }
    out.by_process.push((
        100.0 - ours,
        "everything else (other users, idle, kernel threads)".into(),
    ));
    let agent_tids = tids(agent_pid);
    let all = p.report("0", true, &["--tid", &agent_tids, "--sort", "dso,sym"])?;
    let kernel: f64 = all
        .iter()
        .filter(|(_, s)| s.contains("[k]"))
        .map(|(x, _)| x)
        .sum();
    let total: f64 = all.iter().map(|(x, _)| x).sum();
    out.agent_split = vec![
        (total - kernel, "user space (agent code, libc)".into()),
        (
            kernel,
            "kernel (epoll, wakeups, ring reads, /metrics)".into(),
        ),
    ];
    out.agent = all.into_iter().filter(|(x, _)| *x >= 0.5).collect();
    out.bpf = p
        .report("0.05", false, &["--sort", "sym"])?
        .into_iter()
        .filter(|(_, s)| s.contains("bpf"))
        .collect();
    let s = Perf {
        perf,
        data: dir.join("perf-syscalls.data"),
    };
    let iters = (opts.syscall_iters * 4).to_string();
    let driver = [
        "syscalls".into(),
        "--iters".into(),
        iters,
        "--reps".into(),
        "3".into(),
    ];
    let bench_pid = s.record(bins, &driver, 0.2, 2.0)?;
    // Single-threaded: its pid is its only tid.
    out.syscalls = s.report(
        "0.5",
        true,
        &["--tid", &bench_pid.to_string(), "--sort", "sym"],
    )?;
    drop(agent);
    Ok(out)
}
