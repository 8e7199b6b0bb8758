//! Builds the eBPF programs (crate `llm-observer-ebpf`, nightly, `bpfel-unknown-none`) and leaves
//! the object at `$OUT_DIR/llm-observer` for `include_bytes!`.
//!
//! The eBPF build needs the nightly toolchain with `rust-src` and a `bpf-linker` built against the
//! nightly's LLVM; `cargo xtask setup` installs both and puts the linker on PATH. Without a
//! `bpf-linker` on PATH (plain `cargo build`/`clippy`/`test` on a machine that never ran the
//! setup), an empty stub object is written instead, so every pure module still builds and tests;
//! the agent then refuses to start with a message saying how to build it properly (the same
//! trade-off aya's own integration tests make).
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LLM_OBSERVER_EBPF_STUB");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow::anyhow!("OUT_DIR not set"))?);
    let obj = out_dir.join("llm-observer");
    let stub_requested = env::var("LLM_OBSERVER_EBPF_STUB").is_ok_and(|v| v == "1");
    let linker = which_bpf_linker();
    if stub_requested || linker.is_none() {
        let why = if stub_requested {
            "LLM_OBSERVER_EBPF_STUB=1"
        } else {
            "no bpf-linker on PATH"
        };
        println!(
            "cargo:warning=eBPF programs not built ({why}); the agent will not start. Use `cargo xtask build`."
        );
        fs::write(&obj, [])?;
        return Ok(());
    }
    if let Some(linker) = linker {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    let package = aya_build::Package {
        name: "llm-observer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../llm-observer-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}

fn which_bpf_linker() -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
