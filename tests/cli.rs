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
    for sub in [&[][..], &["trace"][..]] {
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
