//! Part d, the agents' case: quick non-streamed chat calls of the official OpenAI Python client
//! over HTTPS (nginx terminating TLS with a self-signed certificate, Debian's libssl, in front of
//! the emulator), without and with the agent, alternated in rounds. Reported: the median over
//! rounds of (median call wall time with the agent / without), the agent's CPU per call, and how
//! many of the calls the agent counted in the client view (the TLS probes really decoded them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::median;
use super::procs::{self, Agent, Bins, Proc};

#[derive(Debug, Clone, Copy, Default)]
pub struct TlsCost {
    /// Calls per run.
    pub calls: usize,
    /// Median call wall time without / with the agent (medians over rounds), ms.
    pub direct_ms: f64,
    pub agent_ms: f64,
    /// Median over rounds of the per-round ratio of median call times (with / without).
    pub ratio: f64,
    /// The agent's CPU (user + system) per call, µs (median over rounds): everything it did
    /// while the client process started, made its calls and exited, and until it had applied
    /// them.
    pub cpu_us_per_call: f64,
    /// The same less what the agent spends idle over as long (its ring polling and periodic
    /// work, measured just before), µs (median over rounds): the cost the calls add.
    pub net_cpu_us_per_call: f64,
    /// The idle agent's CPU, µs per second of wall time (median over rounds).
    pub idle_cpu_us_per_s: f64,
    /// Calls the agent counted in the client view of the SDK's process, fewest of any round.
    pub counted: f64,
}

/// A self-signed certificate for 127.0.0.1: (cert, key).
fn certs(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .context("running openssl")?
        .status
        .success();
    if !ok {
        bail!("openssl req failed");
    }
    Ok((cert, key))
}

/// `n` calls of tests/clients/workload.py (the official SDK, one keep-alive connection) against
/// `url`: each call's wall time in ms.
fn calls(root: &Path, python: &Path, url: &str, cert: &Path, n: usize) -> Result<Vec<f64>> {
    let out = Command::new(python)
        .arg(root.join("tests/clients/workload.py"))
        .args(["--base-url", url, "--api", "openai", "--mode", "nonstream"])
        .args([
            "--model",
            "bench-tls",
            "--max-tokens",
            "1",
            "--n",
            &n.to_string(),
        ])
        .arg("--cacert")
        .arg(cert)
        .output()
        .context("running workload.py")?;
    if !out.status.success() {
        bail!("workload.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("workload.py printed nothing")?;
    let v: serde_json::Value = serde_json::from_str(last).context("workload.py summary")?;
    let times: Vec<f64> = v["per_request"]
        .as_array()
        .context("per_request")?
        .iter()
        .filter_map(|r| r["latency_s"].as_f64())
        .map(|s| s * 1000.0)
        .collect();
    if times.len() != n || v["ok"].as_u64() != Some(n as u64) {
        bail!(
            "workload.py: {} of {n} calls timed, {} ok",
            times.len(),
            v["ok"]
        );
    }
    Ok(times)
}

/// The agent's CPU time (user + system) once its start-up work (finding and probing the TLS
/// libraries of running processes) is over: two readings 200 ms apart differ by under 1 ms.
fn quiet(agent: &Agent) -> Result<(u64, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = agent.cpu_ns()?;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = agent.cpu_ns()?;
        let spent = (now.0 + now.1).saturating_sub(last.0 + last.1);
        if spent < 1_000_000 || std::time::Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// The agent's CPU while nothing is asked of it: ns per second of wall time, over one second.
fn idle_rate(agent: &Agent) -> Result<f64> {
    let (t0, c0) = (std::time::Instant::now(), agent.cpu_ns()?);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let c1 = agent.cpu_ns()?;
    let spent = (c1.0 + c1.1).saturating_sub(c0.0 + c0.1);
    Ok(spent as f64 / t0.elapsed().as_secs_f64())
}

pub fn run(
    bins: &Bins,
    rounds: usize,
    n: usize,
    (root, python, nginx, dir): (&Path, &Path, &Path, &Path),
    emu: SocketAddr,
) -> Result<TlsCost> {
    let (cert, key) = certs(dir)?;
    let (_front, addr): (Proc, SocketAddr) = procs::nginx_tls(nginx, dir, emu, &cert, &key)?;
    let url = format!("https://{addr}");
    // One unmeasured run: the venv's imports and the server's first handshake are warm after it.
    calls(root, python, &url, &cert, n.min(20))?;
    let (mut direct, mut with, mut ratios, mut cpu) = (vec![], vec![], vec![], vec![]);
    let (mut net, mut idle) = (vec![], vec![]);
    let mut counted = f64::INFINITY;
    for round in 0..rounds {
        let mut d = f64::NAN;
        let mut a = f64::NAN;
        // Alternate which condition goes first, so drift on the machine falls on both.
        for k in 0..2 {
            if (k + round) % 2 == 0 {
                d = median(calls(root, python, &url, &cert, n)?);
            } else {
                let agent = Agent::start(bins)?;
                quiet(&agent)?;
                let rate = idle_rate(&agent)?;
                let (t0, before) = (std::time::Instant::now(), agent.cpu_ns()?);
                a = median(calls(root, python, &url, &cert, n)?);
                let m = agent.settle()?;
                let after = agent.cpu_ns()?;
                let spent = (after.0 + after.1).saturating_sub(before.0 + before.1) as f64;
                let background = rate * t0.elapsed().as_secs_f64();
                cpu.push(spent / 1000.0 / n as f64);
                net.push((spent - background).max(0.0) / 1000.0 / n as f64);
                idle.push(rate / 1000.0);
                counted = counted.min(m.sum_where(
                    "llm_client_requests_total",
                    "peer",
                    &addr.to_string(),
                ));
            }
        }
        direct.push(d);
        with.push(a);
        ratios.push(a / d);
    }
    Ok(TlsCost {
        calls: n,
        direct_ms: median(direct),
        agent_ms: median(with),
        ratio: median(ratios),
        cpu_us_per_call: median(cpu),
        net_cpu_us_per_call: median(net),
        idle_cpu_us_per_s: median(idle),
        counted,
    })
}
