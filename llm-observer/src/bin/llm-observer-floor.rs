//! `llm-observer-floor`: benchmark helper for `cargo xtask bench`. Attaches an empty eBPF program
//! to each of the agent's tracepoints (or to those named), prints `attached N floor tracepoints`,
//! and holds them until its stdin closes or it is killed. Not part of the agent.

use std::io::{Read as _, Write as _};

use clap::Parser;
use llm_observer::capture::floor::Floor;

#[derive(Debug, Parser)]
#[command(name = "llm-observer-floor", version, about)]
struct Args {
    /// Attach only these tracepoints (names like sys_enter_write; repeat or comma-separate).
    #[arg(long, env = "LLM_OBSERVER_FLOOR_ONLY", value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let floor = Floor::attach(&args.only)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "attached {} floor tracepoints", floor.attached().len())?;
    out.flush()?;
    drop(out);
    // Held until the benchmark closes our stdin; the kernel detaches the programs when we exit.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(floor);
    Ok(())
}
