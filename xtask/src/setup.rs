//! Idempotent installation of what the build and the tests need.
//!
//! - The eBPF crate builds with the nightly toolchain (`-Z build-std=core` needs its `rust-src`).
//! - `bpf-linker` must use the same LLVM major as that nightly, and no prebuilt binary can be
//!   downloaded here, so it is built from crates.io against the nightly's own `libLLVM` (found in
//!   the nightly sysroot), into a per-user cache keyed by version and LLVM major. Its binary keeps
//!   an rpath to the `lib/` folder next to it, where the libLLVM links live.
//! - Tests need the official Python clients (in `.venv`), `promtool`, `curl` and `openssl`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::Cmd;

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("llm-observer")
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Cmd::new("rustc", Path::new("."))
        .args([format!("+{NIGHTLY}"), "--print".into(), "sysroot".into()])
        .output()
        .context("the nightly toolchain is required for the eBPF programs (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(out.trim()))
}

/// LLVM major version of the nightly (`LLVM version: 22.1.4` → 22).
fn nightly_llvm_major() -> Result<u32> {
    let out = Cmd::new("rustc", Path::new("."))
        .args([format!("+{NIGHTLY}"), "-vV".into()])
        .output()?;
    let line = out
        .lines()
        .find(|l| l.starts_with("LLVM version:"))
        .context("rustc -vV printed no LLVM version")?;
    let v = line.trim_start_matches("LLVM version:").trim();
    v.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("odd LLVM version {v:?}"))
}

/// Makes sure the eBPF toolchain is there; returns the directory holding `bpf-linker`.
pub fn toolchain() -> Result<PathBuf> {
    let sysroot = nightly_sysroot()?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        Cmd::new("rustup", Path::new("."))
            .args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
            .run()?;
    }
    let major = nightly_llvm_major()?;
    let prefix = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm{major}"));
    let bin = prefix.join("bin/bpf-linker");
    let lib = prefix.join("lib");
    // The nightly's libLLVM (e.g. libLLVM.so.22.1-rust-1.97.0-nightly).
    let so = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the nightly sysroot")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .context("the nightly toolchain ships no libLLVM shared library")?;
    std::fs::create_dir_all(&lib)?;
    for link in ["libLLVM.so".to_owned(), so.clone()] {
        let dst = lib.join(&link);
        let target = sysroot.join("lib").join(&so);
        if std::fs::read_link(&dst).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(&target, &dst)
                .with_context(|| format!("linking {}", dst.display()))?;
        }
    }
    let works = bin.is_file()
        && Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (once, ~2 min)"
        );
        Cmd::new("cargo", Path::new("."))
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "--root"])
            .arg(&prefix)
            .args([
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .run()?;
    }
    Ok(prefix.join("bin"))
}

/// cargo-fuzz for `cargo xtask fuzz`.
pub fn cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        Cmd::new("cargo", Path::new("."))
            .args(["install", "cargo-fuzz", "--locked"])
            .run()?;
    }
    Ok(())
}

/// `apt-get install` of `packages` (after an update), non-interactive and without recommends.
pub fn apt_install(root: &Path, packages: &[&str]) -> Result<()> {
    if !have("apt-get") {
        bail!("missing {packages:?} and no apt-get to install them");
    }
    Cmd::new("apt-get", root).arg("update").arg("-qq").run()?;
    Cmd::new("apt-get", root)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .run()
}

/// True when `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Test dependencies: Debian's promtool and prometheus (a real scraper of the TLS endpoint),
/// curl, bpftool (tests/abuse.rs checks that no BPF object outlives the agent), and a venv with the official Python clients. Returns the venv's path.
pub fn test_deps(root: &Path) -> Result<PathBuf> {
    // openssl: tests/attribution.rs makes the test Kubernetes API server's certificate.
    let mut missing: Vec<&str> = [
        ("promtool", "prometheus"),
        ("prometheus", "prometheus"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("bpftool", "bpftool"),
        // tests/http2.rs: Node's http2 module is the h2c server and client.
        ("node", "nodejs"),
        // tests/inventory.rs: a server in a network namespace of its own.
        ("ip", "iproute2"),
        // tests/top.rs: top runs in a real terminal.
        ("tmux", "tmux"),
        // tests/tls.rs: a Go HTTPS client (crypto/tls, net/http's HTTP/2) built from source.
        ("go", "golang-go"),
        // tests/tls.rs, tests/tls_clients.rs: nginx terminates TLS (HTTP/1.1 and h2) in front of
        // the emulator; the bench's best-case proxy hop too. nginx-light has ssl, http2 and proxy.
        ("nginx", "nginx-light"),
    ]
    .into_iter()
    .filter(|(bin, _)| !have(bin))
    .map(|(_, pkg)| pkg)
    .collect();
    missing.dedup();
    if !missing.is_empty() {
        apt_install(root, &missing)?;
    }
    let venv = root.join(".venv");
    let requirements = root.join("tests/clients/requirements.txt");
    let wanted =
        std::fs::read_to_string(&requirements).context("reading tests/clients/requirements.txt")?;
    let stamp = venv.join(".requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if !venv.join("bin/python").exists() {
            Cmd::new("python3", root)
                .args(["-m", "venv"])
                .arg(&venv)
                .run()?;
        }
        Cmd::new(venv.join("bin/pip"), root)
            .args(["install", "-q", "-r"])
            .arg(&requirements)
            .run()?;
        std::fs::write(&stamp, &wanted)?;
    }
    Ok(venv)
}
