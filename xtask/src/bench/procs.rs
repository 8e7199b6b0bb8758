//! The processes a benchmark run starts (emulator, agent, floor, proxies, drivers), each stopped
//! when its handle drops, and what is read from them (/proc, /metrics).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// The binaries `cargo xtask build` leaves in target/release.
pub struct Bins {
    pub agent: PathBuf,
    pub floor: PathBuf,
    pub emulator: PathBuf,
    pub bench: PathBuf,
}

impl Bins {
    pub fn new(root: &Path, agent: PathBuf) -> Bins {
        let rel = root.join("target/release");
        Bins {
            agent,
            floor: rel.join("llm-observer-floor"),
            emulator: rel.join("llm-emulator"),
            bench: rel.join("llm-bench"),
        }
    }
}

/// A child killed and reaped on drop.
pub struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn spawn(cmd: &mut Command, what: &'static str) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Proc { child, what })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&mut self) -> Result<ChildStdout> {
        self.child
            .stdout
            .take()
            .with_context(|| format!("{} has no stdout", self.what))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Closing stdin first lets the floor and idle drivers leave on their own. Then SIGTERM,
        // which nginx's master passes on to its workers (a SIGKILLed master leaves them running,
        // holding CPU through every later phase); SIGKILL only if that is not enough.
        drop(self.child.stdin.take());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first stdout line of `p`, or an error if it exits first.
fn first_line(p: &mut Proc) -> Result<String> {
    let mut line = String::new();
    BufReader::new(p.stdout()?).read_line(&mut line)?;
    if line.is_empty() {
        bail!("{} exited before it was ready", p.what);
    }
    Ok(line.trim().to_owned())
}

/// A free loopback port (bound, read, released: the benchmark owns the machine's loopback).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts on `addr`.
fn wait_listening(addr: SocketAddr, what: &str, p: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{what} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {addr} within 20 s")
}

/// The emulator, streaming back to back (no pacing) with TCP_NODELAY, like a fast real server.
pub fn emulator(bins: &Bins) -> Result<(Proc, SocketAddr)> {
    let mut p = Proc::spawn(
        Command::new(&bins.emulator)
            .args([
                "--quiet",
                "--nodelay",
                "--ttft-ms",
                "0",
                "--token-interval-ms",
                "0",
            ])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped()),
        "llm-emulator",
    )?;
    let line = first_line(&mut p)?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("odd emulator line {line:?}"))?;
    Ok((p, addr))
}

/// The agent with its defaults, serving /metrics on a loopback port; ready once it says so
/// (after attaching every program).
pub struct Agent {
    proc: Proc,
    metrics: SocketAddr,
}

impl Agent {
    pub fn start(bins: &Bins) -> Result<Agent> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut proc = Proc::spawn(
            Command::new(&bins.agent)
                .args(["--metrics-addr", &metrics.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
            "llm-observer",
        )?;
        let stderr = proc.child.stderr.take().context("agent stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("serving /metrics") => break,
                Some(Ok(l)) => seen.push(l),
                _ => bail!(
                    "the agent exited before serving /metrics:\n{}",
                    seen.join("\n")
                ),
            }
        }
        // Keep draining so the agent never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Ok(Agent { proc, metrics })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The exposition, fetched with a plain HTTP/1.0 GET.
    pub fn scrape(&self) -> Result<Metrics> {
        let mut s = TcpStream::connect(self.metrics).context("connecting to /metrics")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(Metrics(text))
    }

    /// user and system CPU time, in ns, from /proc/<pid>/stat.
    pub fn cpu_ns(&self) -> Result<(u64, u64)> {
        proc_cpu_ns(self.pid())
    }

    pub fn rss_mb(&self) -> Result<f64> {
        proc_rss_mb(self.pid())
    }

    pub fn mem_split(&self) -> Result<MemSplit> {
        proc_mem_split(self.pid())
    }

    /// Waits until the agent has read everything the kernel queued: its event count stops moving
    /// beyond the few events each scrape itself causes (this process's connection is captured).
    pub fn settle(&self) -> Result<Metrics> {
        const SCRAPE_EVENTS: f64 = 16.0;
        let mut last = self.scrape()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.scrape()?;
            let moved =
                now.sum("llm_observer_events_total") - last.sum("llm_observer_events_total");
            if moved <= SCRAPE_EVENTS {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }
}

/// One exposition text.
pub struct Metrics(String);

impl Metrics {
    /// Sum over every series of `family` (all label sets).
    pub fn sum(&self, family: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sum over the series of `family` whose label `label` is `value`.
    pub fn sum_where(&self, family: &str, label: &str, value: &str) -> f64 {
        let want = format!("{label}=\"{value}\"");
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{') && rest.contains(&want))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

pub fn proc_cpu_ns(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .context("odd /proc stat field")
    };
    let ns = 1_000_000_000 / clock_ticks();
    Ok((field(14)? * ns, field(15)? * ns))
}

pub fn proc_rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// What of a process's resident memory is BPF maps mapped into it, and its proportional set size.
///
/// The event ring's pages are the kernel's, mapped into the agent (once: `capture/ring.rs`), and
/// VmRSS counts them; PSS splits each page among its mappings, as the memory cgroup charges
/// them. The split shows how much of the RSS is the ring rather than the agent's own heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemSplit {
    pub pss_mb: f64,
    pub bpf_maps_mb: f64,
}

pub fn proc_mem_split(pid: u32) -> Result<MemSplit> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let kb = |l: &str, key: &str| -> Option<f64> {
        l.strip_prefix(key)?.split_whitespace().next()?.parse().ok()
    };
    let pss = rollup
        .lines()
        .find_map(|l| kb(l, "Pss:"))
        .context("no Pss in smaps_rollup")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let (mut in_map, mut maps) = (false, 0.0);
    for l in smaps.lines() {
        // A mapping's first line: "start-end perms offset dev inode [path]".
        if l.split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            in_map = l.ends_with("anon_inode:bpf-map");
        } else if in_map && let Some(v) = kb(l, "Rss:") {
            maps += v;
        }
    }
    Ok(MemSplit {
        pss_mb: pss / 1024.0,
        bpf_maps_mb: maps / 1024.0,
    })
}

/// The empty programs on the agent's tracepoints, held while the handle lives.
pub fn floor(bins: &Bins) -> Result<Proc> {
    let mut p = Proc::spawn(
        Command::new(&bins.floor)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        "llm-observer-floor",
    )?;
    let line = first_line(&mut p)?;
    if !line.starts_with("attached") {
        bail!("odd floor line {line:?}");
    }
    Ok(p)
}

/// The aiohttp proxy in front of `upstream`.
pub fn aiohttp(python: &Path, dir: &Path, upstream: SocketAddr) -> Result<(Proc, SocketAddr)> {
    let script = dir.join("aiohttp_proxy.py");
    std::fs::write(&script, include_str!("aiohttp_proxy.py"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut p = Proc::spawn(
        Command::new(python)
            .arg(&script)
            .arg(addr.port().to_string())
            .arg(format!("http://{upstream}"))
            .stdout(Stdio::null()),
        "aiohttp proxy",
    )?;
    wait_listening(addr, "the aiohttp proxy", &mut p)?;
    Ok((p, addr))
}

/// nginx as a streaming reverse proxy (buffering off, keep-alive upstream pool) to `upstream`.
pub fn nginx(nginx: &Path, dir: &Path, upstream: SocketAddr) -> Result<(Proc, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let d = dir.display();
    let conf = format!(
        "worker_processes auto;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp;\n  proxy_temp_path {d}/nginx-tmp;\n\
         \x20 upstream emu {{ server {upstream}; keepalive 256; }}\n\
         \x20 server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://emu;\n\
         \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         \x20     proxy_buffering off;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut p = Proc::spawn(
        Command::new(nginx)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]),
        "nginx",
    )?;
    wait_listening(addr, "nginx", &mut p)?;
    Ok((p, addr))
}

/// nginx terminating TLS (`cert`, `key`) on a loopback port in front of `upstream`, one process
/// (`master_process off`: the pid that serves is the one started).
pub fn nginx_tls(
    nginx: &Path,
    dir: &Path,
    upstream: SocketAddr,
    cert: &Path,
    key: &Path,
) -> Result<(Proc, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let d = dir.display();
    let conf = format!(
        "master_process off;\nworker_processes 1;\nuser root;\npid {d}/nginx-tls.pid;\n\
         error_log {d}/nginx-tls-error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp;\n  proxy_temp_path {d}/nginx-tmp;\n\
         \x20 upstream emu {{ server {upstream}; keepalive 16; }}\n\
         \x20 server {{\n    listen {addr} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
         \x20   location / {{\n      proxy_pass http://emu;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
        cert.display(),
        key.display()
    );
    let path = dir.join("nginx-tls.conf");
    std::fs::write(&path, conf)?;
    let mut p = Proc::spawn(
        Command::new(nginx)
            .arg("-e")
            .arg(dir.join("nginx-tls-error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]),
        "nginx (TLS)",
    )?;
    wait_listening(addr, "nginx (TLS)", &mut p)?;
    Ok((p, addr))
}

/// Runs `llm-bench ARGS` to completion and parses its JSON line.
///
/// Its output goes to files, not pipes: a pipe made while the agent runs is a candidate for MCP
/// over stdio until its first bytes are written, and a process holding one pays the tracked
/// processes' map lookups on every syscall meanwhile — the driver would not measure an untracked
/// process.
pub fn drive(bins: &Bins, args: &[String]) -> Result<serde_json::Value> {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("llm-bench-{}-{run}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let status = Command::new(&bins.bench)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .status()
        .context("running llm-bench")?;
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    if !status.success() {
        bail!("llm-bench {} failed: {err}", args.join(" "));
    }
    serde_json::from_str(text.trim()).with_context(|| format!("llm-bench printed {text:?}"))
}

/// `llm-bench idle`: holds `pairs` idle connections until the handle drops.
pub fn idle(bins: &Bins, pairs: usize) -> Result<Proc> {
    let mut p = Proc::spawn(
        Command::new(&bins.bench)
            .args(["idle", "--pairs", &pairs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        "llm-bench idle",
    )?;
    let line = first_line(&mut p)?;
    if !line.contains("ready") {
        bail!("odd idle line {line:?}");
    }
    Ok(p)
}

/// Processes holding loaded BPF programs (another agent, a test elsewhere on the machine). Called
/// while none of this benchmark's own are loaded: programs on the same tracepoints shift every
/// condition, the bare one included, so the figures of such a run are contaminated.
pub fn foreign_bpf() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-prog")
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn sums_every_series_of_exactly_that_family() {
        let m = Metrics(
            "# HELP llm_observer_events_total x\n\
             llm_observer_events_total{kind=\"data\"} 10\n\
             llm_observer_events_total{kind=\"conn_open\"} 2.5\n\
             llm_observer_events_total_extra 100\n\
             llm_observer_lost_events_total 3\n"
                .into(),
        );
        assert_eq!(m.sum("llm_observer_events_total"), 12.5);
        assert_eq!(m.sum("llm_observer_lost_events_total"), 3.0);
        assert_eq!(m.sum("llm_observer_missing"), 0.0);
    }
}
