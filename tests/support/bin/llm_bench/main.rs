//! `llm-bench`: the load and syscall drivers of `cargo xtask bench`. Each subcommand prints one
//! JSON object on stdout (`idle` prints it when its connections are ready and then waits for its
//! stdin to close).

mod http;
mod load;
mod micro;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Load and syscall drivers for cargo xtask bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Streamed chat requests against a server, closed loop or at a fixed rate.
    Load(load::LoadArgs),
    /// ns per untracked write/read syscall (pipe, /dev/null + /dev/zero).
    Syscalls {
        #[arg(long, default_value_t = 500_000)]
        iters: u64,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// ns per small write on a tracked loopback HTTP connection.
    Sends {
        #[arg(long, default_value_t = 100_000)]
        iters: u64,
        #[arg(long, default_value_t = 31)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Small writes at a fixed rate on tracked connections.
    Paced {
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2)]
        conns: usize,
        #[arg(long, default_value_t = 31)]
        size: usize,
    },
    /// Hold idle loopback connections (each sent one request head) until stdin closes.
    Idle {
        #[arg(long, default_value_t = 5_000)]
        pairs: usize,
    },
}

fn main() -> anyhow::Result<()> {
    raise_nofile();
    let value = match Cli::parse().command {
        Command::Load(args) => load::run(&args)?,
        Command::Syscalls { iters, reps } => micro::syscalls(iters, reps)?,
        Command::Sends { iters, size, reps } => micro::sends(iters, size, reps)?,
        Command::Paced {
            rate,
            seconds,
            conns,
            size,
        } => micro::paced(rate, seconds, conns, size)?,
        Command::Idle { pairs } => return micro::idle(pairs),
    };
    println!("{value}");
    Ok(())
}

/// Thousands of connections need more than the usual 1024 descriptors: take the hard limit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
