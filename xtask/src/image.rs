//! `cargo xtask image`: the agent's OCI image, built with buildah from scratch — no base image, no
//! registry — from the release binary and exactly the shared libraries it links.
//!
//! The root filesystem comes from `deploy/container/rootfs.sh`, the image configuration from the
//! final stage of `deploy/container/Dockerfile` (its ENTRYPOINT, CMD, ENV, EXPOSE, LABEL, USER,
//! WORKDIR lines, applied with `buildah config`), so the buildah image and a `docker build` of the
//! Dockerfile hold the same files and the same configuration. A final stage with anything else
//! (another COPY, a RUN) fails here, since buildah would not reproduce it.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::util::Cmd;

/// Image name; tagged with the agent's version and `latest`.
pub const NAME: &str = "localhost/llm-observer";
/// The one COPY the Dockerfile's final stage may hold: the root filesystem rootfs.sh laid out.
const ROOTFS_COPY: &str = "COPY --from=build /rootfs/ /";

/// One `buildah config` option from the Dockerfile's final stage.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigArg(pub &'static str, pub String);

/// The final stage's configuration instructions as `buildah config` options.
pub fn final_stage_config(dockerfile: &str) -> Result<Vec<ConfigArg>> {
    // Join continuation lines, drop comments and blank lines.
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in dockerfile.lines() {
        let l = raw.trim();
        if current.is_empty() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        if let Some(head) = l.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(l);
            lines.push(std::mem::take(&mut current));
        }
    }
    let start = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .context("the Dockerfile has no FROM")?;
    if lines[start].split_whitespace().nth(1) != Some("scratch") {
        bail!(
            "the Dockerfile's final stage must be FROM scratch: {}",
            lines[start]
        );
    }
    let mut out = Vec::new();
    let mut copied = false;
    for l in &lines[start + 1..] {
        let (instr, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let rest = rest.trim().to_owned();
        let opt = match instr.to_ascii_uppercase().as_str() {
            "COPY" if l == ROOTFS_COPY => {
                copied = true;
                continue;
            }
            "ENTRYPOINT" => "--entrypoint",
            "CMD" => "--cmd",
            "ENV" => "--env",
            "EXPOSE" => "--port",
            "LABEL" => "--label",
            "USER" => "--user",
            "WORKDIR" => "--workingdir",
            _ => bail!("`cargo xtask image` cannot reproduce this final-stage line: {l}"),
        };
        let value = if opt == "--label" {
            // LABEL k="v" → k=v (buildah takes the value as is).
            match rest.split_once('=') {
                Some((k, v)) => format!("{k}={}", v.trim_matches('"')),
                None => bail!("LABEL without '=': {l}"),
            }
        } else {
            rest
        };
        out.push(ConfigArg(opt, value));
    }
    if !copied {
        bail!("the Dockerfile's final stage must hold exactly `{ROOTFS_COPY}`");
    }
    Ok(out)
}

/// Builds the image from the release agent at `bin`; returns `NAME:version`.
pub fn build(root: &Path, bin: &Path) -> Result<String> {
    if !crate::setup::have("buildah") {
        bail!("buildah is missing: apt-get install buildah (cargo xtask setup --test installs it)");
    }
    let version = Cmd::new(bin, root)
        .arg("--version")
        .output()?
        .split_whitespace()
        .nth(1)
        .context("the agent printed no version")?
        .to_owned();
    let dockerfile = std::fs::read_to_string(root.join("deploy/container/Dockerfile"))
        .context("reading deploy/container/Dockerfile")?;
    let config = final_stage_config(&dockerfile)?;
    let rootfs = root.join("target/image/rootfs");
    Cmd::new("sh", root)
        .arg(root.join("deploy/container/rootfs.sh"))
        .arg(bin)
        .arg(&rootfs)
        .run()?;
    // The image these tags point at now: removed once they point at the new one, so rebuilds do
    // not pile up untagged copies (only ours; an image still in use stays).
    let previous = Cmd::new("buildah", root)
        .args(["images", "-q", "--no-trunc", &format!("{NAME}:latest")])
        .output()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let ctr = Cmd::new("buildah", root)
        .args(["from", "scratch"])
        .output()?
        .trim()
        .to_owned();
    let built = (|| -> Result<()> {
        Cmd::new("buildah", root)
            .args(["copy", &ctr])
            .arg(format!("{}/", rootfs.display()))
            .arg("/")
            .run()?;
        let mut c = Cmd::new("buildah", root).arg("config");
        for ConfigArg(opt, value) in &config {
            c = c.args([*opt, value.as_str()]);
        }
        c.args([
            "--label",
            &format!("org.opencontainers.image.version={version}"),
        ])
        .arg(&ctr)
        .run()?;
        let tagged = format!("{NAME}:{version}");
        Cmd::new("buildah", root)
            .args(["commit", "--rm", &ctr, &tagged])
            .run()?;
        Cmd::new("buildah", root)
            .args(["tag", &tagged, &format!("{NAME}:latest")])
            .run()
    })();
    if built.is_err() {
        let _ = Cmd::new("buildah", root).args(["rm", &ctr]).output();
    }
    built?;
    let now = Cmd::new("buildah", root)
        .args(["images", "-q", "--no-trunc", &format!("{NAME}:latest")])
        .output()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if !previous.is_empty() && previous != now {
        let _ = Cmd::new("buildah", root).args(["rmi", &previous]).output();
    }
    eprintln!("xtask: image {NAME}:{version} (and :latest)");
    Ok(format!("{NAME}:{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_dockerfile_maps_to_buildah_config() {
        let root = crate::util::workspace_root().expect("root");
        let text = std::fs::read_to_string(root.join("deploy/container/Dockerfile")).expect("read");
        let config = final_stage_config(&text).expect("final stage");
        assert!(config.contains(&ConfigArg(
            "--entrypoint",
            r#"["/usr/bin/llm-observer"]"#.into()
        )));
        assert!(config.contains(&ConfigArg("--port", "9202/tcp".into())));
        assert!(config.contains(&ConfigArg(
            "--env",
            "LLM_OBSERVER_METRICS_ADDR=0.0.0.0:9202".into()
        )));
        assert!(config.contains(&ConfigArg("--user", "0:0".into())));
    }

    #[test]
    fn a_final_stage_buildah_cannot_reproduce_fails() {
        let base = "FROM rust AS build\nRUN make\nFROM scratch\nCOPY --from=build /rootfs/ /\n";
        assert!(final_stage_config(base).is_ok());
        assert!(final_stage_config(&format!("{base}RUN echo hi\n")).is_err());
        assert!(final_stage_config(&format!("{base}COPY extra /extra\n")).is_err());
        assert!(final_stage_config("FROM scratch\nENTRYPOINT [\"/x\"]\n").is_err());
        assert!(final_stage_config("FROM debian\nCOPY --from=build /rootfs/ /\n").is_err());
    }
}
