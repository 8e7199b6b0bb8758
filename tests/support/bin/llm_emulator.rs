//! `llm-emulator`: a loopback LLM server (Ollama native, OpenAI, Anthropic on one port) with
//! deterministic timing and token counts, for llm-observer's end-to-end tests and demo.
//!
//! `llm-emulator --listen 127.0.0.1:0` prints `listening on ADDR` as its first stdout line, then
//! serves until SIGINT/SIGTERM. `llm-emulator demo` also drives a short mixed curl workload against
//! itself. See `llm_observer_tests::emulator` for token accounting and the model-name scenarios.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use llm_observer_tests::emulator::{self, Config, Stats, demo};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    version,
    about = "Loopback LLM server emulator (Ollama, OpenAI, Anthropic) with deterministic timing"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0", global = true)]
    listen: SocketAddr,
    /// Request → first output token.
    #[arg(long, default_value_t = 150, global = true)]
    ttft_ms: u64,
    /// Between output tokens.
    #[arg(long, default_value_t = 10, global = true)]
    token_interval_ms: u64,
    /// Output tokens when the request does not set max_tokens / num_predict.
    #[arg(long, default_value_t = 20, global = true)]
    output_tokens: u32,
    /// Reported as Ollama's load_duration.
    #[arg(long, default_value_t = 5, global = true)]
    load_ms: u64,
    /// No per-request line on stderr.
    #[arg(long, global = true)]
    quiet: bool,
    /// Set TCP_NODELAY on accepted sockets (each streamed chunk leaves at once).
    #[arg(long, global = true)]
    nodelay: bool,
    /// Runner mode, like Ollama: start a child runner process and hand each chat / completion to
    /// it over loopback HTTP (`POST /completion`) before answering.
    #[arg(long)]
    runner: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start the emulator and run a short mixed workload against it with curl, printing what was
    /// sent, so an agent watching this machine shows non-zero llm_* series.
    Demo(demo::DemoArgs),
}

impl ServerArgs {
    fn config(&self) -> Config {
        Config {
            ttft: Duration::from_millis(self.ttft_ms),
            token_interval: Duration::from_millis(self.token_interval_ms),
            default_output_tokens: self.output_tokens,
            load_duration: Duration::from_millis(self.load_ms),
            log: !self.quiet,
            nodelay: self.nodelay,
            runner: None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = cli.server.config();
    // Kept until serving ends; the child also dies with this process (see `runner::spawn`).
    let mut runner = None;
    if cli.server.runner {
        let (child, addr) = emulator::runner::spawn()?;
        config.runner = Some(addr);
        runner = Some(child);
    }
    let result = run(cli, config);
    if let Some(mut child) = runner {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Demo(args)) => demo::run(cli.server.listen, config, &args),
        None => serve(cli.server.listen, config),
    }
}

fn serve(listen: SocketAddr, config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Tests read the port from this first line, so it must leave the pipe buffer now.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}").context("writing to stdout")?;
        stdout.flush().context("flushing stdout")?;
        drop(stdout);
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let stats = Arc::new(Stats::default());
        emulator::serve(listener, config, stats.clone(), shutdown).await;
        // What tests compare an observer's connection count with: accept() calls that returned a
        // connection (one reset in the listen queue makes accept fail and is not one).
        eprintln!(
            "llm-emulator: accepted {} connections",
            stats.snapshot().connections
        );
        Ok(())
    })
}
