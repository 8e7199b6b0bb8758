//! `cargo xtask bench`: what the agent costs, measured in one invocation on this machine, each
//! figure against a peer or a floor taken in the same run, with the conditions alternated in
//! rounds and medians of per-round ratios reported.
//!
//! a. [`overhead`]: streamed chat requests (SSE, `tokens` chunks each) at saturation (closed loop)
//!    and at a moderate fixed rate (open loop), direct / agent loaded / through aiohttp / nginx.
//! b. [`syscalls`]: ns per untracked write/read and per captured small send, bare / floor / agent.
//! c. [`capacity`]: agent CPU per event (from part a), the loss ramp, RSS with idle connections and
//!    with many streams; [`profile`]: `perf record` of the saturation run.
//! d. [`tls`]: quick HTTPS calls of the official OpenAI client, without and with the agent.
//!
//! Prints a markdown table and, as its last line, one JSON object (see [`report`]).

mod capacity;
mod install;
mod overhead;
mod probes;
mod procs;
mod profile;
mod report;
mod syscalls;
mod tls;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Smoke run for CI (~1–2 min): one round, short runs, no profile.
    #[arg(long)]
    quick: bool,
    /// Rounds of alternated conditions (default 5; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds measured per load run (default 4; 2 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Concurrent streams at saturation.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// SSE chunks (output tokens) per streamed answer.
    #[arg(long, default_value_t = 64)]
    tokens: u32,
    /// Moderate load: this fraction of the direct saturation throughput, sent at a fixed rate.
    #[arg(long, default_value_t = 0.15)]
    moderate_fraction: f64,
    /// Idle tracked connections (sockets the agent tracks) for the memory check.
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// Concurrent streams for the memory check.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Skip the perf profile.
    #[arg(long)]
    no_profile: bool,
    /// Run only these phases (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// HTTPS calls per run of the TLS phase (default 200; 50 with --quick).
    #[arg(long)]
    tls_calls: Option<usize>,
    /// Phases not started within this many seconds of the start are skipped.
    #[arg(long, default_value_t = 600)]
    budget_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Overhead,
    Syscalls,
    Ramp,
    Memory,
    Profile,
    Tls,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Opts {
    rounds: usize,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    moderate_fraction: f64,
    moderate_conns: usize,
    tokens: u32,
    syscall_iters: u64,
    send_iters: u64,
    ramp_start: f64,
    ramp_max: f64,
    ramp_seconds: f64,
    idle_conns: usize,
    streams: usize,
}

impl Opts {
    fn new(a: &Args) -> Opts {
        let q = a.quick;
        Opts {
            rounds: a.rounds.unwrap_or(if q { 1 } else { 5 }).max(1),
            seconds: a.seconds.unwrap_or(if q { 2.0 } else { 4.0 }),
            warmup: if q { 0.5 } else { 1.0 },
            concurrency: a.concurrency.max(1),
            moderate_fraction: a.moderate_fraction,
            moderate_conns: 32,
            tokens: a.tokens,
            syscall_iters: if q { 100_000 } else { 300_000 },
            send_iters: if q { 20_000 } else { 50_000 },
            ramp_start: 25_000.0,
            ramp_max: 800_000.0,
            ramp_seconds: if q { 1.0 } else { 2.0 },
            idle_conns: a.idle_conns,
            streams: a.streams,
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(root: &Path, args: &Args) -> Result<()> {
    let started = Instant::now();
    let opts = Opts::new(args);
    let tools = install::ensure(root)?;
    let agent = crate::build(root)?;
    if !crate::util::is_root() {
        anyhow::bail!("the benchmark loads eBPF programs and must run as root");
    }
    let bins = procs::Bins::new(root, agent);
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let t0 = Instant::now();
    let within = |phase: Phase| {
        if !args.only.is_empty() && !args.only.contains(&phase) {
            return false;
        }
        let ok = t0.elapsed().as_secs() < args.budget_s;
        if ok {
            eprintln!("bench: {phase:?} (at {:.0} s)", t0.elapsed().as_secs_f64());
        } else {
            eprintln!(
                "bench: {phase:?} skipped: past --budget-s {}",
                args.budget_s
            );
        }
        ok
    };
    let (emulator, emu) = procs::emulator(&bins)?;
    let mut r = report::Results::default();
    if within(Phase::Overhead) {
        let (_aio, aio) = procs::aiohttp(&tools.python, &dir, emu)?;
        let (_nginx, ngx) = procs::nginx(&tools.nginx, &dir, emu)?;
        r.overhead = Some(overhead::run(&bins, &opts, [emu, emu, aio, ngx])?);
    }
    if within(Phase::Syscalls) {
        r.syscalls = Some(syscalls::run(&bins, &opts)?);
    }
    let mut cap = capacity::Capacity::default();
    if within(Phase::Ramp) {
        capacity::ramp(&bins, &opts, &mut cap)?;
    }
    if within(Phase::Memory) {
        capacity::memory(&bins, &opts, emu, &mut cap)?;
        cap.memory_measured = true;
    }
    r.capacity = Some(cap);
    if within(Phase::Tls) {
        let n = args
            .tls_calls
            .unwrap_or(if args.quick { 50 } else { 200 })
            .max(1);
        let paths = (
            root,
            tools.python.as_path(),
            tools.nginx.as_path(),
            dir.as_path(),
        );
        match tls::run(&bins, opts.rounds, n, paths, emu) {
            Ok(t) => r.tls = Some(t),
            Err(e) => eprintln!("bench: tls skipped: {e:#}"),
        }
    }
    match (&tools.perf, args.quick || args.no_profile) {
        (Some(perf), false) if within(Phase::Profile) => {
            match profile::run(&bins, &opts, perf, &dir, emu, emulator.pid()) {
                Ok(p) => r.profile = Some(p),
                Err(e) => eprintln!("bench: profile skipped: {e:#}"),
            }
        }
        (None, false) => eprintln!("bench: profile skipped: perf is not available"),
        _ => {}
    }
    r.seconds = started.elapsed().as_secs_f64();
    report::print(&opts, &r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_unmeasured() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(Vec::new()).is_nan());
    }
}
