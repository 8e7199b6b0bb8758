//! What the deploy, dashboard and container tests need besides `setup::test_deps`, installed
//! idempotently: Debian's `prometheus` server (the test starts it; the package also holds
//! promtool), `buildah` (`cargo xtask image`), `podman` with the `runc` runtime (the container
//! test: Debian's crun 1.8 refuses this kind of host's hybrid cgroup layout), and the validators
//! of `deploy/requirements.txt` in the venv.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::setup::{apt_install, have};
use crate::util::Cmd;

pub fn install(root: &Path, venv: &Path) -> Result<()> {
    let missing: Vec<&str> = [
        ("prometheus", "prometheus"),
        ("buildah", "buildah"),
        ("podman", "podman"),
        ("runc", "runc"),
    ]
    .into_iter()
    .filter(|(bin, _)| !have(bin))
    .map(|(_, pkg)| pkg)
    .collect();
    if !missing.is_empty() {
        apt_install(root, &missing)?;
    }
    let requirements = root.join("deploy/requirements.txt");
    let wanted =
        std::fs::read_to_string(&requirements).context("reading deploy/requirements.txt")?;
    let stamp = venv.join(".deploy-requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        Cmd::new(venv.join("bin/pip"), root)
            .args(["install", "-q", "-r"])
            .arg(&requirements)
            .run()?;
        std::fs::write(&stamp, &wanted)?;
    }
    Ok(())
}
