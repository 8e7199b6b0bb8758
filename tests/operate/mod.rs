//! Helpers of the "operate it" tests (dashboards, Prometheus, deploy files, the container image):
//! reading the committed dashboards, substituting their template variables as Grafana does, and a
//! real Prometheus server started for a test.

#![allow(
    dead_code,
    reason = "each test file uses a different part of this module"
)]

pub mod dashboards;
pub mod prom;

use std::path::PathBuf;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn root() -> PathBuf {
    llm_observer_tests::harness::stack::workspace_root()
}

/// True when `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
