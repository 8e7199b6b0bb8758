//! The agent's command line: `--help` documents an environment twin for every flag, and without
//! privileges `check` and the agent fail fast, naming what is missing.
//!
//! The privilege tests drop to `nobody` with util-linux's `setpriv`, so they need root to start
//! from and the release agent (`LLM_OBSERVER_BIN`); under `CI=true` a missing piece fails them.

use std::{
    process::{Command, Output},
    time::Duration,
};

use llm_observer_tests::harness::{
    guard,
    process::{Proc, Stream},
    stack::path_from_env,
};

fn agent_bin() -> std::path::PathBuf {
    path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer")
}

/// Runs the agent with `args` as `nobody` (uid/gid 65534, no groups, hence no capabilities).
fn as_nobody(args: &[&str]) -> Proc {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(agent_bin())
    .args(args);
    Proc::spawn("llm-observer as nobody", cmd).expect("setpriv runs")
}

#[test]
fn help_gives_every_flag_an_environment_twin() {
    let bin = agent_bin();
    if !bin.exists() {
        guard::skip_or_fail::<()>(&format!("no agent at {}", bin.display()));
        return;
    }
    for sub in [&[][..], &["trace"][..], &["top"][..]] {
        let Output { status, stdout, .. } = Command::new(&bin)
            .args(sub)
            .arg("--help")
            .output()
            .expect("--help runs");
        assert!(status.success());
        let text = String::from_utf8_lossy(&stdout);
        // Each option's block starts at a line whose first non-blank character is '-'.
        let mut blocks: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.trim_start().starts_with('-') {
                blocks.push(line.to_owned());
            } else if let Some(b) = blocks.last_mut() {
                b.push_str(line);
            }
        }
        let flags: Vec<&String> = blocks
            .iter()
            .filter(|b| !b.contains("--help") && !b.contains("--version"))
            // trace's own presentation switches are per-invocation, not deployment settings.
            .filter(|b| {
                !["--raw", "--show-secrets", "--count"]
                    .iter()
                    .any(|f| b.trim_start().starts_with(f))
            })
            .collect();
        assert!(flags.len() >= 10, "too few flags parsed from:\n{text}");
        for b in flags {
            assert!(
                b.contains("[env: LLM_OBSERVER_"),
                "flag without an env twin: {b}"
            );
        }
    }
}

#[test]
fn check_without_privileges_fails_naming_them() {
    if !guard::agent_ready() {
        return;
    }
    let mut p = as_nobody(&["check"]);
    let status = p.wait_exit(Duration::from_secs(30)).expect("check exits");
    p.wait_for_line(Duration::from_secs(10), |s, l| {
        (s == Stream::Stdout && l.contains("capture cannot work")).then_some(())
    })
    .expect("the verdict line");
    let out = p.lines(Stream::Stdout).join("\n");
    assert!(
        !status.success(),
        "check succeeded without privileges:\n{out}"
    );
    assert!(
        out.contains("FAIL privileges") && out.contains("CAP_BPF"),
        "{out}"
    );
}

#[test]
fn agent_without_privileges_fails_fast_naming_them() {
    if !guard::agent_ready() {
        return;
    }
    let mut p = as_nobody(&["--metrics-addr", "127.0.0.1:0"]);
    let status = p
        .wait_exit(Duration::from_secs(30))
        .expect("the agent exits at once");
    let msg = p
        .wait_for_line(Duration::from_secs(10), |s, l| {
            (s == Stream::Stderr && l.contains("llm-observer:")).then(|| l.to_owned())
        })
        .expect("an error line");
    assert!(!status.success());
    assert!(
        msg.contains("not privileged enough to load eBPF programs"),
        "{msg}"
    );
}

/// Writes `text` to a fresh config file named after the test.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("llmo-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

#[test]
fn config_file_sits_between_the_environment_and_the_defaults() {
    let bin = agent_bin();
    if !bin.exists() {
        guard::skip_or_fail::<()>(&format!("no agent at {}", bin.display()));
        return;
    }
    let path = config_file(
        "precedence",
        "metrics-addr = \"127.0.0.1:9300\"\nmax-models = 7\nport = [11434, 8000]\nall_protocols = true\n",
    );
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&path)
        .args(["config", "--port", "5"])
        .env("LLM_OBSERVER_MAX_MODELS", "9")
        .env_remove("LLM_OBSERVER_PORT")
        .env_remove("LLM_OBSERVER_METRICS_ADDR")
        .env_remove("LLM_OBSERVER_ALL_PROTOCOLS")
        .env_remove("LLM_OBSERVER_MAX_PEERS")
        .output()
        .expect("config runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let p = path.display();
    for want in [
        format!("metrics-addr = \"127.0.0.1:9300\"  # {p}:1"),
        "max-models = 9  # env LLM_OBSERVER_MAX_MODELS".to_owned(),
        "port = [5]  # flag".to_owned(),
        format!("all-protocols = true  # {p}:4"),
        "max-peers = 32  # default".to_owned(),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "no line {want:?} in:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// Runs the agent with a config file of `text` that it must refuse before capturing anything:
/// exit status 2. Returns the file's path and the first stderr line (the file is removed).
fn refused_config(name: &str, text: &str) -> Option<(String, String)> {
    let bin = agent_bin();
    if !bin.exists() {
        guard::skip_or_fail::<()>(&format!("no agent at {}", bin.display()));
        return None;
    }
    let path = config_file(name, text);
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&path)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .expect("the agent runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("attached"), "it started capturing: {err}");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    let first = err.lines().next().unwrap_or("").to_owned();
    Some((path.display().to_string(), first))
}

#[test]
fn a_bad_config_file_stops_the_agent_naming_its_line() {
    let Some((path, first)) = refused_config("bad", "max-models = 7\n\nmax-modles = 4\n") else {
        return;
    };
    let want = format!(
        "error: --config {path}:3: unknown key `max-modles`: not a flag of llm-observer (keys are the long flag names, see --help)"
    );
    assert_eq!(first, want);
}

#[test]
fn a_bad_label_rule_in_the_config_file_is_refused_with_its_line() {
    let text = "label-header = [\"tenant=x-tenant\"]\n# the body's user field\nlabel-body-field = [\"model=/user\"]\n";
    let Some((path, first)) = refused_config("bad-label", text) else {
        return;
    };
    assert!(
        first.starts_with(&format!("error: --config {path}:3:"))
            && first.contains("\"model\" is a label the agent already sets"),
        "{first}"
    );
}
