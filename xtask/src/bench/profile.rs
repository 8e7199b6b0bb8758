//! Where the time goes under the agent at saturation: a system-wide `perf record` (user and
//! kernel, BPF programs included: their JIT images carry symbols) while the saturation load runs,
//! summarised by process and by symbol, overall and in the agent alone.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::Opts;
use super::procs::{Agent, Bins};

/// (percent of samples, what) lines, highest first.
pub type Lines = Vec<(f64, String)>;

#[derive(Debug, Default)]
pub struct Profile {
    pub by_process: Lines,
    pub top: Lines,
    pub agent: Lines,
    pub bpf: Lines,
}

fn report(perf: &Path, data: &Path, extra: &[&str]) -> Result<Lines> {
    let out = Command::new(perf)
        .arg("report")
        .arg("-i")
        .arg(data)
        .args([
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--percent-limit",
            "0.3",
        ])
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
            Some((
                pct.trim().parse().ok()?,
                rest.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect())
}

pub fn run(
    bins: &Bins,
    opts: &Opts,
    perf: &Path,
    dir: &Path,
    target: SocketAddr,
) -> Result<Profile> {
    let agent = Agent::start(bins)?;
    agent.settle()?;
    let data = dir.join("perf.data");
    let bench = bins.bench.clone();
    let args = super::overhead::load_args(target, opts.concurrency, opts, 0.0);
    let load = std::thread::spawn(move || Command::new(bench).args(args).output());
    std::thread::sleep(std::time::Duration::from_secs_f64(opts.warmup));
    let rec = Command::new(perf)
        .args(["record", "-a", "-g", "-F", "499", "-q", "-o"])
        .arg(&data)
        .args(["--", "sleep"])
        .arg(format!("{}", (opts.seconds - 0.5).max(1.0)))
        .output()
        .context("perf record")?;
    let _ = load.join();
    if !rec.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&rec.stderr)
        );
    }
    let pid = agent.pid().to_string();
    drop(agent);
    let profile = Profile {
        by_process: report(perf, &data, &["--sort", "comm"])?,
        top: report(perf, &data, &["--sort", "comm,dso,sym"])?,
        agent: report(perf, &data, &["--pid", &pid, "--sort", "dso,sym"])?,
        bpf: report(perf, &data, &["--sort", "sym"])?
            .into_iter()
            .filter(|(_, s)| s.contains("bpf_prog_") || s.contains("bpf_"))
            .collect(),
    };
    Ok(profile)
}
