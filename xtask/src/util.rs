//! Small process helpers.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A command that echoes itself and fails with its exit status.
pub struct Cmd(Command);

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>, dir: &Path) -> Cmd {
        let mut c = Command::new(program);
        c.current_dir(dir);
        Cmd(c)
    }

    /// `cargo` in the workspace with the bpf-linker directory first on PATH.
    pub fn cargo(root: &Path, linker_dir: &Path) -> Cmd {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![linker_dir.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        let joined = std::env::join_paths(paths).unwrap_or(path);
        Cmd::new("cargo", root).env("PATH", joined)
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.0.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Cmd {
        self.0.args(a);
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.0.env(k, v);
        self
    }

    /// Runs the command with its stderr passed through line by line. On failure the compiler's
    /// `error` blocks are printed again at the end: in a long CI log the build scripts' and the
    /// other jobs' output comes after them, and only the log's tail is kept.
    pub fn run(mut self) -> Result<()> {
        eprintln!("xtask: {}", self.describe());
        let mut child = self
            .0
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.describe()))?;
        let errors = match child.stderr.take() {
            Some(stderr) => tee_errors(stderr),
            None => Vec::new(),
        };
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", self.describe()))?;
        if !status.success() {
            if !errors.is_empty() {
                eprintln!("xtask: the errors that command printed, again:");
                for line in &errors {
                    eprintln!("{line}");
                }
            }
            bail!("{} failed: {status}", self.describe());
        }
        Ok(())
    }

    pub fn output(mut self) -> Result<String> {
        let out = self
            .0
            .output()
            .with_context(|| format!("starting {}", self.describe()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}\n{}",
                self.describe(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn describe(&self) -> String {
        let args: Vec<_> = self
            .0
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!(
            "{} {}",
            self.0.get_program().to_string_lossy(),
            args.join(" ")
        )
    }
}

/// The most lines of `error` blocks kept for the summary at the end of a failed command.
const ERROR_LINES_KEPT: usize = 120;

/// Copies `from` to this process's stderr line by line, and returns the blocks that begin with a
/// line starting `error` (up to the next blank line), at most [`ERROR_LINES_KEPT`] lines.
fn tee_errors(from: impl Read) -> Vec<String> {
    let mut kept = Vec::new();
    let mut in_block = false;
    for line in BufReader::new(from).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        eprintln!("{line}");
        if line.starts_with("error") {
            in_block = true;
        } else if line.trim().is_empty() {
            in_block = false;
        }
        if in_block && kept.len() < ERROR_LINES_KEPT {
            kept.push(line);
        }
    }
    kept
}

/// `[[bin]]` names in fuzz/Cargo.toml.
pub fn fuzz_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(fuzz_dir.join("Cargo.toml")).context("reading fuzz/Cargo.toml")?;
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_bin = l == "[[bin]]";
        } else if in_bin && let Some(v) = l.strip_prefix("name") {
            let name = v
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Agent + emulator + a short workload; prints the llm_* series the agent then serves.
pub fn demo(root: &Path, agent: &Path) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let port = "19202";
    let mut agent_child = Command::new(agent)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let stderr = agent_child.stderr.take().context("agent stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    // Wait for the agent to say it serves, which it does only after attaching its programs.
    let mut ready = false;
    for line in lines.by_ref() {
        let line = line?;
        eprintln!("agent: {line}");
        if line.contains("serving /metrics") {
            ready = true;
            break;
        }
    }
    if !ready {
        let _ = agent_child.kill();
        bail!("the agent exited before serving /metrics");
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("agent: {line}");
        }
    });
    let emulator = root.join("target/release/llm-emulator");
    let status = Command::new(&emulator)
        .args(["demo"])
        .status()
        .context("running llm-emulator demo")?;
    // The agent decodes asynchronously; give its pipeline a bounded moment to apply the last events
    // by polling /metrics until the request counter stops changing.
    let mut last = String::new();
    let mut text = String::new();
    for _ in 0..50 {
        text = Cmd::new("curl", root)
            .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
            .output()?;
        let now: String = text
            .lines()
            .filter(|l| l.starts_with("llm_requests_total"))
            .collect();
        if !now.is_empty() && now == last {
            break;
        }
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = agent_child.kill();
    let _ = agent_child.wait();
    for l in text
        .lines()
        .filter(|l| l.starts_with("llm_") && !l.starts_with("llm_observer"))
    {
        println!("{l}");
    }
    if !status.success() {
        bail!("the emulator demo failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tee_tests {
    use super::tee_errors;

    #[test]
    fn keeps_error_blocks_only() {
        let log = b"   Compiling a v1\nerror[E0425]: cannot find value `x`\n --> src/lib.rs:1:1\n\nwarning: build failed\nerror: could not compile `a` (lib)\n";
        assert_eq!(
            tee_errors(&log[..]),
            [
                "error[E0425]: cannot find value `x`",
                " --> src/lib.rs:1:1",
                "error: could not compile `a` (lib)",
            ]
        );
    }
}
