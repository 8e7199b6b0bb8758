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

/// The YAML documents of `path`, as JSON (read by the venv's PyYAML, a kubernetes-validate
/// dependency installed from deploy/requirements.txt).
pub fn yaml_docs(path: &std::path::Path) -> Vec<serde_json::Value> {
    let python = llm_observer_tests::harness::stack::path_from_env("LLM_OBSERVER_VENV", ".venv")
        .join("bin/python");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{} does not run: {e}", python.display()));
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from PyYAML")
}
