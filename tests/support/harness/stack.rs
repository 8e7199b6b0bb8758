//! The processes of an end-to-end test: the agent, the emulator binary, the Python workload and
//! curl, each found through an environment variable with a workspace default:
//!
//! | variable            | default                              |
//! |---------------------|--------------------------------------|
//! | `LLM_OBSERVER_BIN`  | `target/release/llm-observer`        |
//! | `LLM_EMULATOR_BIN`  | the caller's choice (an integration test passes `env!("CARGO_BIN_EXE_llm-emulator")`) |
//! | `LLM_OBSERVER_VENV` | `.venv` (with `tests/clients/requirements.txt` installed) |
//!
//! Relative paths are relative to the workspace root. Every wait has a deadline; readiness is read
//! from the process's own output and `/metrics`, never assumed after a sleep.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::exposition::Exposition;
use super::http;
use super::process::{Proc, Stream, run_to_end};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `$var` if set, else `default`; relative paths are taken from the workspace root.
pub fn path_from_env(var: &str, default: impl AsRef<Path>) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| default.as_ref().to_path_buf(), PathBuf::from);
    if path.is_absolute() {
        path
    } else {
        workspace_root().join(path)
    }
}

/// The agent under test, serving `/metrics` on a loopback port; killed on drop.
pub struct Agent {
    pub proc: Proc,
    addr: SocketAddr,
}

/// How long the agent may take to load and attach its BPF programs and start serving.
const AGENT_READY: Duration = Duration::from_secs(60);

impl Agent {
    /// Starts `$LLM_OBSERVER_BIN --metrics-addr 127.0.0.1:0 <extra>` and waits until it logs
    /// `serving /metrics` and answers a scrape.
    pub fn start(extra: &[&str]) -> anyhow::Result<Agent> {
        Agent::start_via(&[], extra)
    }

    /// Like [`Agent::start`], with the agent run through `wrapper` (e.g. `setpriv … --`), which
    /// must exec it (so the process is the agent's).
    pub fn start_via(wrapper: &[&str], extra: &[&str]) -> anyhow::Result<Agent> {
        let bin = path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["--metrics-addr", "127.0.0.1:0"]).args(extra);
        let mut proc = Proc::spawn("llm-observer", cmd)?;
        let addr = proc.wait_for_line(AGENT_READY, |_, line| {
            let rest = &line[line.find("serving /metrics")?..];
            Some(parse_addr_in(rest))
        })?;
        let Some(addr) = addr else {
            bail!(
                "the agent's 'serving /metrics' line has no address; output:\n{}",
                proc.output()
            );
        };
        let agent = Agent { proc, addr };
        let deadline = Instant::now() + AGENT_READY;
        while let Err(e) = agent.scrape() {
            if Instant::now() >= deadline {
                bail!(
                    "/metrics at {addr} never answered: {e:#}; output:\n{}",
                    agent.proc.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn scrape(&self) -> anyhow::Result<Exposition> {
        scrape(self.addr)
    }

    /// Scrapes until `ready` holds (the agent decodes captured bytes asynchronously) and returns that
    /// exposition; after `timeout`, fails showing the last exposition's `llm_*` lines.
    pub fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&Exposition) -> bool,
    ) -> anyhow::Result<Exposition> {
        wait_for_metrics(self.addr, timeout, ready)
    }
}

/// GET `/metrics` on `addr` and parse it.
pub fn scrape(addr: SocketAddr) -> anyhow::Result<Exposition> {
    let response = http::request(addr, "GET", "/metrics", b"", Duration::from_secs(10))
        .with_context(|| format!("scraping http://{addr}/metrics"))?;
    if response.status != 200 {
        bail!("http://{addr}/metrics answered {}", response.status);
    }
    Ok(Exposition::parse(&response.body_text())?)
}

/// Polls `/metrics` every 50 ms until `ready` holds or `timeout` passes.
pub fn wait_for_metrics(
    addr: SocketAddr,
    timeout: Duration,
    ready: impl Fn(&Exposition) -> bool,
) -> anyhow::Result<Exposition> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = scrape(addr);
        if let Ok(e) = &last
            && ready(e)
        {
            return last;
        }
        if Instant::now() >= deadline {
            let shown = match &last {
                Ok(e) => e
                    .samples
                    .iter()
                    .filter(|s| s.name.starts_with("llm_"))
                    .map(|s| format!("{} {:?} {}\n", s.name, s.labels, s.value))
                    .collect::<String>(),
                Err(err) => format!("{err:#}"),
            };
            bail!(
                "metrics never reached the expected state within {timeout:?}; last scrape:\n{shown}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first `IP:port` in `text` (after an optional `http://`).
fn parse_addr_in(text: &str) -> Option<SocketAddr> {
    text.split(|c: char| c.is_whitespace() || c == '/' || c == ',')
        .find_map(|word| {
            word.trim_matches(|c: char| c == '"' || c == '\'')
                .parse()
                .ok()
        })
}

/// The emulator binary, listening on a loopback port; killed on drop.
pub struct EmulatorProc {
    pub proc: Proc,
    addr: SocketAddr,
}

impl EmulatorProc {
    /// Starts `$LLM_EMULATOR_BIN` (else `default_bin`) with `--listen 127.0.0.1:0 <args>` and reads
    /// the port from its first stdout line.
    pub fn start(default_bin: impl AsRef<Path>, args: &[&str]) -> anyhow::Result<EmulatorProc> {
        Self::start_via(&[], default_bin, args)
    }

    /// [`EmulatorProc::start`] under a wrapper that execs its arguments (`ip netns exec NS`).
    pub fn start_via(
        wrapper: &[&str],
        default_bin: impl AsRef<Path>,
        args: &[&str],
    ) -> anyhow::Result<EmulatorProc> {
        let bin = path_from_env("LLM_EMULATOR_BIN", default_bin);
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        let mut proc = Proc::spawn("llm-emulator", cmd)?;
        let addr = proc.wait_for_line(Duration::from_secs(30), |stream, line| {
            (stream == Stream::Stdout)
                .then(|| line.strip_prefix("listening on ")?.trim().parse().ok())
                .flatten()
        })?;
        Ok(EmulatorProc { proc, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The emulator's per-request stderr lines so far (`llm-emulator: request … outcome=…`).
    pub fn request_log(&self) -> Vec<String> {
        self.proc
            .lines(Stream::Stderr)
            .into_iter()
            .filter(|l| l.starts_with("llm-emulator: request"))
            .collect()
    }
}

/// The Python interpreter of the clients' virtualenv, or an error saying how to make one.
pub fn venv_python() -> anyhow::Result<PathBuf> {
    let venv = path_from_env("LLM_OBSERVER_VENV", ".venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        bail!(
            "no {} — create it: python3 -m venv {} && {}/bin/pip install -r tests/clients/requirements.txt",
            python.display(),
            venv.display(),
            venv.display()
        );
    }
    Ok(python)
}

/// What `tests/clients/workload.py` printed: its JSON summary.
#[derive(Clone, Debug)]
pub struct WorkloadSummary(pub Value);

impl WorkloadSummary {
    fn count(&self, key: &str) -> u64 {
        self.0.get(key).and_then(Value::as_u64).unwrap_or(0)
    }
    pub fn requests(&self) -> u64 {
        self.count("requests")
    }
    pub fn ok(&self) -> u64 {
        self.count("ok")
    }
    pub fn cancelled(&self) -> u64 {
        self.count("cancelled")
    }
    pub fn prompt_tokens(&self) -> u64 {
        self.count("prompt_tokens")
    }
    pub fn completion_tokens(&self) -> u64 {
        self.count("completion_tokens")
    }
    pub fn content_events(&self) -> u64 {
        self.count("content_events")
    }
    /// Errors by `ClassName[:status]`.
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.0
            .get("errors")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn error_count(&self) -> u64 {
        self.errors().iter().map(|(_, n)| n).sum()
    }
}

/// Runs the workload (`args` as on its command line, `--base-url` added) to completion within
/// `timeout` and returns its summary.
pub fn run_workload(
    base_url: &str,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<WorkloadSummary> {
    let python = venv_python()?;
    let script = workspace_root().join("tests/clients/workload.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).args(["--base-url", base_url]).args(args);
    run_summary("workload.py", cmd, timeout)
}

/// Runs a client that ends by printing a workload.py-shaped summary line (`name` for messages)
/// to completion within `timeout` and returns that summary.
pub fn run_summary(name: &str, cmd: Command, timeout: Duration) -> anyhow::Result<WorkloadSummary> {
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (status, out, err) = run_to_end(name, cmd, timeout)?;
    if !status.success() {
        bail!("{name} {args:?} failed ({status}):\n{}", err.join("\n"));
    }
    let last = out
        .last()
        .with_context(|| format!("{name} printed nothing; stderr:\n{}", err.join("\n")))?;
    Ok(WorkloadSummary(
        serde_json::from_str(last).with_context(|| format!("{name} summary {last:?}"))?,
    ))
}

/// `curl -sS -N` POSTing `body` to `url` (with Anthropic's headers when `anthropic`); returns the
/// HTTP status and the body curl printed.
/// Runs curl with `args` (the URL among them) and returns the HTTP status it printed; the body is
/// discarded.
pub fn curl_status(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .context("running curl")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn curl_post(
    url: &str,
    body: &Value,
    anthropic: bool,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-N",
        "--max-time",
        &timeout.as_secs().max(1).to_string(),
    ]);
    cmd.args(["-H", "content-type: application/json"]);
    if anthropic {
        cmd.args([
            "-H",
            "x-api-key: sk-ant-emulator",
            "-H",
            "anthropic-version: 2023-06-01",
        ]);
    }
    cmd.args(["-w", "\n%{http_code}", "-d", &body.to_string(), url]);
    let (_, out, err) = run_to_end("curl", cmd, timeout + Duration::from_secs(5))?;
    let Some((status, body)) = out.split_last() else {
        bail!("curl printed nothing: {}", err.join("\n"));
    };
    let status = status
        .trim()
        .parse()
        .with_context(|| format!("curl status {status:?}: {}", err.join("\n")))?;
    Ok((status, body.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_readiness_lines() {
        let addr: SocketAddr = "127.0.0.1:41234".parse().expect("literal");
        assert_eq!(
            parse_addr_in("serving /metrics on http://127.0.0.1:41234/metrics"),
            Some(addr)
        );
        assert_eq!(
            parse_addr_in("serving /metrics on 127.0.0.1:41234"),
            Some(addr)
        );
        assert_eq!(parse_addr_in("serving /metrics"), None);
    }

    #[test]
    fn env_paths_default_to_the_workspace() {
        let p = path_from_env("LLM_OBSERVER_TESTS_UNSET_VARIABLE", "target/x");
        assert_eq!(p, workspace_root().join("target/x"));
        assert!(workspace_root().join("Cargo.toml").exists());
    }
}
