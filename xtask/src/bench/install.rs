//! What the benchmark needs besides the build, installed idempotently: the project's venv with
//! aiohttp (the Python proxy hop), Debian's nginx-light (the best-case proxy hop; a test dependency
//! too), and perf
//! (optional: the profile is skipped without it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::setup;
use crate::util::Cmd;

/// aiohttp release the proxy hop runs on (the newest at the time of writing).
const AIOHTTP: &str = "aiohttp==3.14.5";

pub struct Tools {
    pub python: PathBuf,
    pub nginx: PathBuf,
    pub perf: Option<PathBuf>,
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub fn ensure(root: &Path) -> Result<Tools> {
    let venv = setup::test_deps(root)?;
    let python = venv.join("bin/python");
    let has_aiohttp = Command::new(&python)
        .args(["-c", "import aiohttp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_aiohttp {
        Cmd::new(venv.join("bin/pip"), root)
            .args(["install", "-q", AIOHTTP])
            .run()?;
    }
    // The test dependencies include nginx-light (proxy module and little else).
    let nginx = find("nginx").context("nginx is not installed")?;
    let works = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut perf = find("perf").filter(|p| works(p));
    if perf.is_none() {
        // Optional: a failed install only skips the profile.
        let _ = setup::apt_install(root, &["linux-perf"]);
        perf = find("perf").filter(|p| works(p));
    }
    Ok(Tools {
        python,
        nginx,
        perf,
    })
}
