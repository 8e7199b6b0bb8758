//! Whether a root test can run here, and what to do when it cannot: under `CI=true` a missing
//! prerequisite fails the test (CI must prove the capture, never skip it); elsewhere the test prints
//! why and skips.

use super::stack::path_from_env;

/// `CI=true` is set (as `.ci/run` does).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The effective uid is 0 (read from /proc, so the support library needs no libc binding).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// Skips (prints why and returns `None`) or, under `CI=true`, fails.
pub fn skip_or_fail<T>(reason: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true and this test cannot run: {reason}");
    println!("skipping: {reason}");
    None
}

/// Root and a built agent (`LLM_OBSERVER_BIN`, default `target/release/llm-observer`), or the
/// reason they are missing.
pub fn agent_missing() -> Option<String> {
    let bin = path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer");
    if !is_root() {
        Some("not root (the agent loads eBPF programs)".into())
    } else if !bin.exists() {
        Some(format!("no agent at {} (cargo xtask build)", bin.display()))
    } else {
        None
    }
}

/// True when a test needing root and the agent can run; otherwise skips or (CI) fails.
pub fn agent_ready() -> bool {
    match agent_missing() {
        None => true,
        Some(why) => skip_or_fail::<()>(&why).is_some(),
    }
}
