//! Part c: how much the agent takes in — the highest event rate it reads without losing any (a
//! ramp of paced small sends on tracked connections) — and its memory with many idle tracked
//! connections and with many concurrent streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::Opts;
use super::procs::{self, Agent, Bins};

#[derive(Clone, Copy, Debug, Default)]
pub struct Step {
    /// Sends per second asked for and reached.
    pub offered: f64,
    pub sent_per_s: f64,
    /// Events the agent read per second, and those lost (kernel ring full + shed in the agent).
    pub events_per_s: f64,
    pub lost: f64,
}

#[derive(Debug, Default)]
pub struct Capacity {
    pub steps: Vec<Step>,
    pub rss_idle_mb: f64,
    pub rss_idle_conns_mb: f64,
    /// The same as PSS, and how much of the RSS is BPF maps mapped into the agent (the event ring).
    pub pss_idle_conns_mb: f64,
    pub bpf_maps_idle_conns_mb: f64,
    pub tracked_idle: f64,
    pub rss_streams_mb: f64,
    pub tracked_streams: f64,
    pub memory_measured: bool,
}

impl Capacity {
    /// The highest event rate read with nothing lost.
    pub fn max_events_per_s(&self) -> f64 {
        self.steps
            .iter()
            .filter(|s| s.lost == 0.0)
            .map(|s| s.events_per_s)
            .fold(0.0, f64::max)
    }

    /// Events lost at the first step offering at least `rate` sends/s (or the last step).
    pub fn lost_at(&self, rate: f64) -> Option<Step> {
        self.steps
            .iter()
            .find(|s| s.offered >= rate)
            .or(self.steps.last())
            .copied()
    }
}

pub fn ramp(bins: &Bins, opts: &Opts, out: &mut Capacity) -> Result<()> {
    let agent = Agent::start(bins)?;
    let mut rate = opts.ramp_start;
    while rate <= opts.ramp_max {
        let m0 = agent.settle()?;
        let v = procs::drive(
            bins,
            &[
                "paced".into(),
                "--rate".into(),
                rate.to_string(),
                "--seconds".into(),
                opts.ramp_seconds.to_string(),
            ],
        )?;
        let m1 = agent.settle()?;
        let d = |name: &str| m1.sum(name) - m0.sum(name);
        let sent_per_s = v
            .get("rate")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        let step = Step {
            offered: rate,
            sent_per_s,
            events_per_s: d("llm_observer_events_total") / opts.ramp_seconds,
            lost: d("llm_observer_lost_events_total") + d("llm_observer_dropped_total"),
        };
        eprintln!(
            "bench: ramp {:>7.0} sends/s offered, {:>7.0} reached, agent read {:>7.0} events/s, lost {}",
            step.offered, step.sent_per_s, step.events_per_s, step.lost
        );
        out.steps.push(step);
        // Past loss, or where the sender itself cannot go faster, a higher rate says nothing more.
        if step.lost > 0.0 || sent_per_s < 0.9 * rate {
            break;
        }
        rate *= 2.0;
    }
    Ok(())
}

pub fn memory(bins: &Bins, opts: &Opts, emulator: SocketAddr, out: &mut Capacity) -> Result<()> {
    let agent = Agent::start(bins)?;
    agent.settle()?;
    out.rss_idle_mb = agent.rss_mb()?;
    let base = agent.scrape()?.sum("llm_observer_connections_tracked");
    {
        // Both ends of a loopback connection are tracked sockets.
        let _idle = procs::idle(bins, opts.idle_conns / 2)?;
        let want = base + opts.idle_conns as f64;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            out.tracked_idle = agent.scrape()?.sum("llm_observer_connections_tracked");
            if out.tracked_idle >= want || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        out.rss_idle_conns_mb = agent.rss_mb()?;
        let split = agent.mem_split()?;
        out.pss_idle_conns_mb = split.pss_mb;
        out.bpf_maps_idle_conns_mb = split.bpf_maps_mb;
    }
    // Many concurrent streams: sample the RSS while the load runs.
    let bench = bins.bench.clone();
    let args = super::overhead::load_args(emulator, opts.streams, opts, 0.0);
    let load = std::thread::spawn(move || std::process::Command::new(bench).args(args).output());
    let mut peak: f64 = 0.0;
    while !load.is_finished() {
        peak = peak.max(agent.rss_mb()?);
        let tracked = agent.scrape()?.sum("llm_observer_connections_tracked");
        out.tracked_streams = out.tracked_streams.max(tracked);
        std::thread::sleep(Duration::from_millis(250));
    }
    let done = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?
        .context("running llm-bench load")?;
    anyhow::ensure!(
        done.status.success(),
        "the {}-stream load failed",
        opts.streams
    );
    out.rss_streams_mb = peak;
    Ok(())
}
