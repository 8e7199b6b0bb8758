//! `cargo xtask`: set up the toolchain, build, run and test llm-observer, with one command each.
//!
//! Every step is idempotent: the second run finds everything in place and takes seconds.

mod bench;
mod deploy_deps;
mod image;
mod setup;
mod util;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::util::{Cmd, is_root, workspace_root};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Build, run and test llm-observer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the build needs (nightly rust-src, bpf-linker built against the nightly's LLVM).
    Setup {
        /// Also install the test dependencies (Python clients and validators in .venv, prometheus,
        /// curl, buildah, podman, runc).
        #[arg(long)]
        test: bool,
    },
    /// Set up, then build the agent (release) at target/release/llm-observer.
    Build,
    /// Set up, build (release) and run the agent in the foreground; arguments after `--` go to it.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test, including the root BPF and end-to-end tests.
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy -D warnings`.
        #[arg(long)]
        no_lint: bool,
        /// Seconds per fuzz target in the fuzz smoke run (0 skips it).
        #[arg(long, default_value_t = 5)]
        fuzz_seconds: u64,
    },
    /// Run every cargo-fuzz target (or the named ones) for N seconds each.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        targets: Vec<String>,
    },
    /// Start an LLM server emulator, the agent and a short client workload; print the llm_* series.
    Demo,
    /// Build (release) and make the agent's OCI image with buildah, from scratch (no registry).
    Image,
    /// Measure what the agent costs (throughput, latency, syscalls, CPU, loss, memory) against
    /// no agent, an empty-program floor and reverse proxies; print a table and a JSON line.
    Bench(bench::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Command::Setup { test } => {
            setup::toolchain()?;
            if test {
                let venv = setup::test_deps(&root)?;
                deploy_deps::install(&root, &venv)?;
            }
            Ok(())
        }
        Command::Build => build(&root).map(|_| ()),
        Command::Run { args } => {
            let bin = build(&root)?;
            if !is_root() {
                bail!(
                    "the agent loads eBPF programs and must run as root: sudo -E cargo xtask run"
                );
            }
            let status = std::process::Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Test {
            no_lint,
            fuzz_seconds,
        } => test(&root, no_lint, fuzz_seconds),
        Command::Fuzz { seconds, targets } => fuzz(&root, seconds, &targets),
        Command::Demo => demo(&root),
        Command::Image => image::build(&root, &build(&root)?).map(|_| ()),
        Command::Bench(args) => bench::run(&root, &args),
    }
}

/// Builds the release agent and the emulator; returns the agent's path.
fn build(root: &std::path::Path) -> Result<PathBuf> {
    let linker_dir = setup::toolchain()?;
    Cmd::cargo(root, &linker_dir)
        .args([
            "build",
            "--release",
            "-p",
            "llm-observer",
            "-p",
            "llm-observer-tests",
            "--bins",
        ])
        .run()?;
    let bin = root.join("target/release/llm-observer");
    // build.rs writes an empty object when it could not build the eBPF programs; catch it here
    // rather than at the agent's start.
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        bail!("{} was not built", bin.display());
    }
    eprintln!("xtask: agent at {}", bin.display());
    Ok(bin)
}

fn test(root: &std::path::Path, no_lint: bool, fuzz_seconds: u64) -> Result<()> {
    let started = std::time::Instant::now();
    let bin = build(root)?;
    let linker_dir = setup::toolchain()?;
    let venv = setup::test_deps(root)?;
    deploy_deps::install(root, &venv)?;
    let image = image::build(root, &bin)?;
    if !no_lint {
        Cmd::cargo(root, &linker_dir)
            .args(["fmt", "--all", "--", "--check"])
            .run()?;
        // The eBPF crate only builds for the BPF target (host feature unification would pull
        // std into it), so it is linted there, with the nightly, on its own.
        Cmd::cargo(root, &linker_dir)
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "llm-observer-ebpf",
                "--all-targets",
            ])
            .args(["--", "-D", "warnings"])
            .run()?;
        Cmd::cargo(&root.join("llm-observer-ebpf"), &linker_dir)
            .args([
                "+nightly",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core", "--", "-D", "warnings"])
            .run()?;
    }
    let env = |c: Cmd| {
        c.env("LLM_OBSERVER_BIN", &bin)
            .env("LLM_EMULATOR_BIN", root.join("target/release/llm-emulator"))
            .env("LLM_OBSERVER_VENV", &venv)
            .env("LLM_OBSERVER_IMAGE", &image)
    };
    // Pure tests in parallel; the BPF and end-to-end tests one at a time, since they share the
    // kernel's tracepoints and count exact events for this process.
    env(Cmd::cargo(root, &linker_dir))
        .args([
            "test",
            "--workspace",
            "--exclude",
            "llm-observer-tests",
            "--exclude",
            "llm-observer-ebpf",
        ])
        .run()?;
    env(Cmd::cargo(root, &linker_dir))
        .args([
            "test",
            "-p",
            "llm-observer-tests",
            "--",
            "--include-ignored",
            "--test-threads=1",
        ])
        .run()?;
    if fuzz_seconds > 0 {
        fuzz(root, fuzz_seconds, &[])?;
    }
    eprintln!(
        "xtask: all tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fuzz(root: &std::path::Path, seconds: u64, only: &[String]) -> Result<()> {
    setup::toolchain()?;
    setup::cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    let targets = if only.is_empty() {
        util::fuzz_targets(&fuzz_dir)?
    } else {
        only.to_vec()
    };
    if targets.is_empty() {
        bail!("no fuzz targets in {}", fuzz_dir.display());
    }
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        // Runs write new inputs into a scratch copy, so the committed seed corpus stays as is.
        let scratch = root.join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let mut cmd = Cmd::new("cargo", &fuzz_dir).args(["+nightly", "fuzz", "run", t]);
        cmd = cmd.arg(scratch.display().to_string());
        if corpus.is_dir() {
            cmd = cmd.arg(corpus.display().to_string());
        }
        cmd.args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
        ])
        .run()?;
    }
    Ok(())
}

fn demo(root: &std::path::Path) -> Result<()> {
    let bin = build(root)?;
    if !is_root() {
        bail!("the demo starts the agent, which must run as root: sudo -E cargo xtask demo");
    }
    util::demo(root, &bin)
}
