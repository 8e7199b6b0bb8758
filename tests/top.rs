//! Root end-to-end test of `llm-observer top`: the real agent watches the emulator while curl makes
//! exactly N calls for a model of its own; once the agent is quiescent, `top` runs in a tmux pane
//! (a real terminal) against the agent's /metrics and must show that model's row with N requests
//! (and curl's client row with N calls); `q` must end it with status 0, the terminal settings as
//! they were and the alternate screen left (the text printed before `top` is visible again); and
//! a second `top` ended by SIGTERM must leave the terminal the same way.
//!
//! Needs root, BPF, the release agent (`LLM_OBSERVER_BIN`), the emulator, curl and tmux; under
//! `CI=true` a missing piece fails the test instead of skipping it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use llm_observer_tests::harness::{
    guard,
    quiesce::wait_quiescent,
    stack::{Agent, EmulatorProc, curl_post, path_from_env},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const N: usize = 3;
const SETTLE: Duration = Duration::from_secs(30);
/// Start-up plus a few scrapes; `top` scrapes at once and then every second.
const SCREEN_WAIT: Duration = Duration::from_secs(20);
const BEFORE: &str = "before-top-marker";
const SECOND: &str = "before-second-top-marker";

/// A tmux server on a socket of its own (`-S`, a path), so the test never touches anyone else's
/// sessions; killed, with everything in it, and its socket removed on drop — also when an
/// assertion fails.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The visible pane (the alternate screen while `top` runs).
    /// A 200x50 session `top` running `script` in `sh`, its pane kept after the script ends.
    fn session(&self, script: &str) -> anyhow::Result<String> {
        self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "200",
            "-y",
            "50",
            "sh",
            "-c",
            script,
            ";",
            "set-option",
            "-t",
            "top",
            "remain-on-exit",
            "on",
        ])
    }

    fn screen(&self) -> String {
        self.capture(&[])
    }

    /// The main screen with its scrollback: tmux 3.3 moves a line of the main screen into the
    /// history when an alternate screen is left, so the marker may sit just above the visible part.
    fn main_screen(&self) -> String {
        self.capture(&["-S", "-"])
    }

    fn capture(&self, extra: &[&str]) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "top"];
        args.extend_from_slice(extra);
        self.cmd(&args)
            .unwrap_or_else(|e| format!("<capture-pane failed: {e:#}>"))
    }

    /// Polls the pane every 100 ms until `done` holds for its text, or fails after `timeout`.
    fn wait_screen(&self, timeout: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not on screen after {timeout:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The whitespace-separated field after `key` on the first line whose field `at` is `key`.
fn field_after(screen: &str, at: usize, key: &str) -> Option<String> {
    screen.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(at) == Some(&key)).then(|| f.get(at + 1).map(|s| (*s).to_owned()))?
    })
}

#[test]
#[ignore = "needs root, BPF, the release agent and tmux"]
fn top_shows_the_exact_requests_and_restores_the_terminal() {
    if !guard::agent_ready() {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        guard::skip_or_fail::<()>("no tmux");
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &[]).expect("emulator starts");
    let port = emu.addr().port().to_string();
    let agent = Agent::start(&["--port", &port]).expect("agent starts");
    let model = format!("top-{}", std::process::id());
    let url = format!("{}/v1/chat/completions", emu.base_url());
    for _ in 0..N {
        let body = json!({"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "a b"}]});
        let (status, text) = curl_post(&url, &body, false, Duration::from_secs(30)).expect("curl");
        assert_eq!(status, 200, "{text}");
    }
    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent");
    // What top must show, as the exposition has it (so a failure below is top's, not capture's).
    assert_eq!(e.sum("llm_requests_total", &[("model", &model)]), N as f64);
    assert_eq!(
        e.sum("llm_client_requests_total", &[("process", "curl")]),
        N as f64
    );

    let bin = path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer");
    let metrics = format!("http://{}/metrics", agent.addr());
    // A shell prints a marker, runs top and then reports its exit status and whether the tty
    // settings (raw mode) are back to what they were.
    let script = format!(
        "echo {BEFORE}; s=$(stty -g); {} top --url {metrics}; rc=$?; \
         if [ \"$(stty -g)\" = \"$s\" ]; then t=restored; else t=changed; fi; \
         echo \"top-exit=$rc tty=$t\"",
        bin.display()
    );
    let tmux = Tmux {
        socket: std::env::temp_dir().join(format!("llm-observer-top-{}.tmux", std::process::id())),
    };
    tmux.session(&script).expect("tmux session starts");

    let screen = tmux.wait_screen(SCREEN_WAIT, "the model's row", |s| {
        field_after(s, 1, &model).is_some() && field_after(s, 0, "curl").is_some()
    });
    // SERVER MODEL REQS …: the field after the model is its request count.
    assert_eq!(
        field_after(&screen, 1, &model),
        Some(N.to_string()),
        "{screen}"
    );
    // PROCESS CALLS …
    assert_eq!(
        field_after(&screen, 0, "curl"),
        Some(N.to_string()),
        "{screen}"
    );
    // top draws on the alternate screen: the shell's marker is hidden while it runs.
    assert!(!screen.contains(BEFORE), "{screen}");

    tmux.cmd(&["send-keys", "-t", "top", "q"]).expect("send q");
    wait_dead(&tmux, "q");
    assert_restored(&tmux, BEFORE, &model);

    // SIGTERM (`kill`, as a service manager or a closing multiplexer sends) ends top the same
    // clean way: the tables leave, the tty settings come back.
    // A tmux server of its own: the first one's socket may still be going away.
    drop(tmux);
    let tmux = Tmux {
        socket: std::env::temp_dir()
            .join(format!("llm-observer-top-term-{}.tmux", std::process::id())),
    };
    let script = script.replace(BEFORE, SECOND);
    tmux.session(&script).expect("second tmux session starts");
    let screen = tmux.wait_screen(SCREEN_WAIT, "the model's row", |s| {
        field_after(s, 1, &model).is_some()
    });
    assert!(!screen.contains(SECOND), "{screen}");
    let shell = tmux
        .cmd(&["list-panes", "-t", "top", "-F", "#{pane_pid}"])
        .expect("pane pid");
    let out = Command::new("pkill")
        .args(["-TERM", "-P", shell.trim()])
        .output()
        .expect("run pkill");
    assert!(out.status.success(), "pkill found no top under {shell}");
    wait_dead(&tmux, "SIGTERM");
    assert_restored(&tmux, SECOND, &model);
}

/// Back on the main screen: the shell's `marker`, then its report of top's exit status 0 and the
/// tty settings as they were, and nothing of top's tables (no `model` row).
fn assert_restored(tmux: &Tmux, marker: &str, model: &str) {
    let after = tmux.main_screen();
    let lines: Vec<&str> = after.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.first().map(|l| l.trim_end()), Some(marker), "{after}");
    assert!(
        lines
            .iter()
            .any(|l| l.trim_end() == "top-exit=0 tty=restored"),
        "{after}"
    );
    assert!(!after.contains(model), "{after}");
}

/// Waits until the pane's command has ended.
fn wait_dead(tmux: &Tmux, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dead = tmux
            .cmd(&["list-panes", "-t", "top", "-F", "#{pane_dead}"])
            .expect("list-panes");
        if dead.trim() == "1" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "top did not exit on {after}:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
