//! Child processes for tests: output captured line by line (so a test can wait for a readiness line
//! with a deadline instead of sleeping), and killed when dropped so a failing test leaves nothing
//! running.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Which stream a captured line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A spawned child with captured output, killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Stream, String)>>>,
    rx: Receiver<(Stream, String)>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr piped; `name` labels it in error messages.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        // Reader threads drain both pipes for the child's whole life, so it never blocks on a full
        // pipe, and end when the child closes them.
        if let Some(out) = child.stdout.take() {
            pump(out, Stream::Stdout, Arc::clone(&lines), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, Stream::Stderr, Arc::clone(&lines), tx);
        }
        Ok(Proc {
            name: name.to_owned(),
            child,
            lines,
            rx,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until an output line — any line since the child started, so none is missed because
    /// it arrived during an earlier wait — makes `matcher` return `Some`, up to `timeout`. Fails,
    /// with everything the child printed, when the deadline passes or the child closes its output
    /// first.
    pub fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        mut matcher: impl FnMut(Stream, &str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            // Lines are stored before they are announced on the channel, so after any wake-up
            // everything announced so far is in `lines`.
            let fresh: Vec<(Stream, String)> = self
                .lines
                .lock()
                .map(|l| l[checked..].to_vec())
                .unwrap_or_default();
            checked += fresh.len();
            if let Some(found) = fresh
                .iter()
                .find_map(|(stream, line)| matcher(*stream, line))
            {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{}: no expected line within {timeout:?}; output so far:\n{}",
                        self.name,
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Both pipes are closed: one last look at the lines not yet checked.
                    let rest: Vec<(Stream, String)> = self
                        .lines
                        .lock()
                        .map(|l| l[checked..].to_vec())
                        .unwrap_or_default();
                    if let Some(found) = rest
                        .iter()
                        .find_map(|(stream, line)| matcher(*stream, line))
                    {
                        return Ok(found);
                    }
                    let status = self.wait_exit(Duration::from_secs(5)).ok();
                    bail!(
                        "{}: exited ({status:?}) before the expected line; output:\n{}",
                        self.name,
                        self.output()
                    )
                }
            }
        }
    }

    /// Everything captured so far, stderr lines prefixed, for failure messages.
    pub fn output(&self) -> String {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .iter()
            .map(|(s, l)| {
                if *s == Stream::Stderr {
                    format!("[stderr] {l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    }

    /// The captured lines of one stream.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .into_iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l)
            .collect()
    }

    /// Waits for the child to exit by itself, up to `timeout` (polling: std has no timed wait).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} still running after {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (the agent detaches and flushes on it), then SIGKILL if it is still running after
    /// `grace`.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // std can only send SIGKILL; kill(1) sends SIGTERM to this one pid without a libc binding.
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if sent.is_ok_and(|s| s.success())
            && let Ok(status) = self.wait_exit(grace)
        {
            return Ok(status);
        }
        self.child.kill().ok();
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn pump(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    lines: Arc<Mutex<Vec<(Stream, String)>>>,
    tx: mpsc::Sender<(Stream, String)>,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut all) = lines.lock() {
                all.push((stream, line.clone()));
            }
            // Nobody waiting any more is fine: the line is kept in `lines`.
            let _ = tx.send((stream, line));
        }
    });
}

/// Runs `cmd` to completion with a deadline, killing it if it overruns; returns its exit status,
/// stdout lines and stderr lines.
pub fn run_to_end(
    name: &str,
    cmd: Command,
    timeout: Duration,
) -> anyhow::Result<(ExitStatus, Vec<String>, Vec<String>)> {
    let mut proc = Proc::spawn(name, cmd)?;
    let status = proc.wait_exit(timeout)?;
    // The pipes close when the child exits and the readers then hang up; wait for that (bounded, in
    // case a grandchild still holds a pipe) so the tail of the output is in.
    let drained = Instant::now() + Duration::from_secs(5);
    while let Ok(_) | Err(RecvTimeoutError::Timeout) = proc
        .rx
        .recv_timeout(drained.saturating_duration_since(Instant::now()))
    {
        if Instant::now() >= drained {
            break;
        }
    }
    Ok((
        status,
        proc.lines(Stream::Stdout),
        proc.lines(Stream::Stderr),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn waits_for_a_line_and_kills_on_drop() {
        let mut p = Proc::spawn(
            "sleeper",
            sh("echo starting >&2; echo 'listening on 127.0.0.1:5'; exec sleep 60"),
        )
        .expect("spawn sh");
        let addr = p
            .wait_for_line(Duration::from_secs(10), |s, l| {
                (s == Stream::Stdout)
                    .then(|| l.strip_prefix("listening on "))
                    .flatten()
                    .map(str::to_owned)
            })
            .expect("the line arrives");
        assert_eq!(addr, "127.0.0.1:5");
        // The stderr line may have arrived before or after; either way a later wait finds it.
        p.wait_for_line(Duration::from_secs(10), |s, l| {
            (s == Stream::Stderr && l == "starting").then_some(())
        })
        .expect("earlier lines are still matched");
        assert!(p.output().contains("[stderr] starting"));
        let pid = p.id();
        drop(p);
        // Reaped by drop: the pid is gone from /proc (or reused by something that is not our sleep).
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("sleep"));
    }

    #[test]
    fn early_exit_and_timeouts_are_errors_with_output() {
        let mut p = Proc::spawn("quitter", sh("echo bye; exit 3")).expect("spawn sh");
        let err = p
            .wait_for_line(Duration::from_secs(10), |_, l| {
                l.contains("never").then_some(())
            })
            .expect_err("exits first");
        assert!(err.to_string().contains("bye"), "{err}");
        let mut p = Proc::spawn("silent", sh("exec sleep 60")).expect("spawn sh");
        let err = p
            .wait_for_line(Duration::from_millis(100), |_, _| Some(()))
            .expect_err("times out");
        assert!(err.to_string().contains("no expected line"), "{err}");
        let status = p.terminate(Duration::from_secs(5)).expect("terminates");
        assert!(!status.success());
    }

    #[test]
    fn run_to_end_collects_both_streams() {
        let (status, out, err) = run_to_end(
            "echo",
            sh("echo a; echo b >&2; echo c"),
            Duration::from_secs(10),
        )
        .expect("runs");
        assert!(status.success());
        assert_eq!(
            (out, err),
            (vec!["a".to_owned(), "c".to_owned()], vec!["b".to_owned()])
        );
        let err = run_to_end("slow", sh("exec sleep 60"), Duration::from_millis(100))
            .expect_err("overruns");
        assert!(err.to_string().contains("still running"));
    }
}
