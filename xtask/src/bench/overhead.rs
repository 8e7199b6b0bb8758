//! Part a: streamed-request throughput and latency with nothing in the path, with the agent
//! loaded, and through a reverse-proxy hop (aiohttp, nginx), alternated in rounds; plus the
//! agent's CPU per event and per exchange, read while it watches the saturation load.

use std::net::SocketAddr;

use anyhow::Result;

use super::procs::{Agent, Bins};
use super::{Opts, median};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Direct,
    Agent,
    Aiohttp,
    Nginx,
}

pub const HOPS: [Hop; 4] = [Hop::Direct, Hop::Agent, Hop::Aiohttp, Hop::Nginx];

impl Hop {
    pub fn name(self) -> &'static str {
        match self {
            Hop::Direct => "direct",
            Hop::Agent => "agent",
            Hop::Aiohttp => "aiohttp proxy",
            Hop::Nginx => "nginx proxy",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: f64,
}

/// The agent's view of one saturation run.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentCpu {
    pub user_ns: f64,
    pub sys_ns: f64,
    pub events: f64,
    pub exchanges: f64,
    /// Dropped by the kernel (ring full) and shed inside the agent.
    pub lost: f64,
    pub dropped: f64,
}

#[derive(Debug, Default)]
pub struct Overhead {
    /// Per hop (in [`HOPS`] order), one entry per round.
    pub saturation: [Vec<Load>; 4],
    pub moderate: [Vec<Load>; 4],
    pub cpu: Vec<AgentCpu>,
    pub moderate_rate: f64,
    /// Other processes' BPF programs seen during direct runs (see [`super::procs::foreign_bpf`]).
    pub foreign_bpf: Vec<String>,
}

pub fn idx(h: Hop) -> usize {
    HOPS.iter().position(|&x| x == h).unwrap_or(0)
}

/// `llm-bench load` arguments: `conns` streams at `target`, closed loop when `rate` is 0.
pub fn load_args(target: SocketAddr, conns: usize, opts: &Opts, rate: f64) -> Vec<String> {
    let mut args: Vec<String> = vec!["load".into(), "--target".into(), target.to_string()];
    for (flag, value) in [
        ("--concurrency", conns.to_string()),
        ("--tokens", opts.tokens.to_string()),
        ("--duration", opts.seconds.to_string()),
        ("--warmup", opts.warmup.to_string()),
    ] {
        args.extend([flag.to_owned(), value]);
    }
    if rate > 0.0 {
        args.extend(["--rate".into(), format!("{rate:.1}")]);
    }
    args
}

fn load(bins: &Bins, target: SocketAddr, opts: &Opts, rate: f64, conns: usize) -> Result<Load> {
    let args = load_args(target, conns, opts, rate);
    let v = super::procs::drive(bins, &args)?;
    let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    Ok(Load {
        throughput: f("throughput"),
        p50_us: f("p50_us"),
        p99_us: f("p99_us"),
        errors: f("errors"),
    })
}

/// `targets`: where each hop's load goes (the emulator for direct and agent).
pub fn run(bins: &Bins, opts: &Opts, targets: [SocketAddr; 4]) -> Result<Overhead> {
    let mut out = Overhead::default();
    // The moderate rate is a fixed fraction of what the bare emulator sustains here, now.
    let calib = load(bins, targets[0], opts, 0.0, opts.concurrency)?;
    out.moderate_rate = (calib.throughput * opts.moderate_fraction).max(1.0);
    eprintln!(
        "bench: saturation {:.0} req/s direct; moderate load {:.0} req/s",
        calib.throughput, out.moderate_rate
    );
    for round in 0..opts.rounds {
        for k in 0..HOPS.len() {
            let hop = HOPS[(k + round) % HOPS.len()];
            let i = idx(hop);
            if hop == Hop::Direct {
                out.foreign_bpf.extend(super::procs::foreign_bpf());
            }
            let agent = if hop == Hop::Agent {
                Some(Agent::start(bins)?)
            } else {
                None
            };
            let before = match &agent {
                Some(a) => Some((a.cpu_ns()?, a.settle()?)),
                None => None,
            };
            let sat = load(bins, targets[i], opts, 0.0, opts.concurrency)?;
            if let (Some(a), Some(((u0, s0), m0))) = (&agent, before) {
                let m1 = a.settle()?;
                let (u1, s1) = a.cpu_ns()?;
                let d = |name: &str| m1.sum(name) - m0.sum(name);
                out.cpu.push(AgentCpu {
                    user_ns: (u1 - u0) as f64,
                    sys_ns: (s1 - s0) as f64,
                    events: d("llm_observer_events_total"),
                    exchanges: d("llm_observer_exchanges_total"),
                    lost: d("llm_observer_lost_events_total"),
                    dropped: d("llm_observer_dropped_total"),
                });
            }
            let moderate = load(
                bins,
                targets[i],
                opts,
                out.moderate_rate,
                opts.moderate_conns,
            )?;
            eprintln!(
                "bench: round {} {:<13} saturation {:>6.0} req/s p50 {:>7.0} µs p99 {:>7.0} µs | moderate p50 {:>6.0} µs p99 {:>7.0} µs",
                round + 1,
                hop.name(),
                sat.throughput,
                sat.p50_us,
                sat.p99_us,
                moderate.p50_us,
                moderate.p99_us
            );
            out.saturation[i].push(sat);
            out.moderate[i].push(moderate);
        }
    }
    Ok(out)
}

/// Median over rounds of `f(hop's run, direct run)` — ratios and differences are taken within a
/// round, so drift between rounds cancels.
pub fn paired(runs: &[Vec<Load>; 4], hop: Hop, f: impl Fn(&Load, &Load) -> f64) -> f64 {
    let v: Vec<f64> = runs[idx(hop)]
        .iter()
        .zip(&runs[idx(Hop::Direct)])
        .map(|(h, d)| f(h, d))
        .collect();
    median(v)
}
