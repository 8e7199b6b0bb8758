//! `llm-emulator demo`: start an emulator and drive a short mixed workload against it with curl (a
//! separate client process, as a real user's would be), printing every request and the token counts
//! the emulator answered, so a user watching the agent's `/metrics` knows what to expect.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::plan::prompt_words;
use super::{Config, Emulator};
use crate::harness::http;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// After the workload, poll this `/metrics` URL (e.g. http://127.0.0.1:9202/metrics) until
    /// `llm_requests_total` shows up, and print the `llm_*` lines.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// How long to wait for the agent's `llm_*` series.
    #[arg(long, default_value_t = 10)]
    pub metrics_wait_secs: u64,
    /// Keep serving this long after the workload (for manual curl experiments).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
}

/// One request of the demo.
struct Step {
    title: &'static str,
    path: &'static str,
    body: Value,
    anthropic: bool,
}

fn steps() -> Vec<Step> {
    let step = |title, path, body, anthropic| Step {
        title,
        path,
        body,
        anthropic,
    };
    vec![
        step(
            "ollama /api/generate, streamed NDJSON",
            "/api/generate",
            json!({"model": "demo-llama", "prompt": "Why is the sky blue?", "options": {"num_predict": 8}}),
            false,
        ),
        step(
            "ollama /api/chat, stream:false",
            "/api/chat",
            json!({"model": "demo-llama", "stream": false, "options": {"num_predict": 5},
                   "messages": [{"role": "user", "content": "Say hello"}]}),
            false,
        ),
        step(
            "openai /v1/chat/completions, SSE with include_usage",
            "/v1/chat/completions",
            json!({"model": "demo-gpt", "stream": true, "stream_options": {"include_usage": true},
                   "max_tokens": 12, "messages": [{"role": "user", "content": "Write a haiku about eBPF"}]}),
            false,
        ),
        step(
            "openai /v1/completions, JSON",
            "/v1/completions",
            json!({"model": "demo-gpt", "prompt": "Once upon a time", "max_tokens": 6}),
            false,
        ),
        step(
            "anthropic /v1/messages, SSE",
            "/v1/messages",
            json!({"model": "demo-claude", "stream": true, "max_tokens": 10,
                   "messages": [{"role": "user", "content": "Explain TCP in one line"}]}),
            true,
        ),
        step(
            "openai /v1/chat/completions, HTTP 429 (model err-429)",
            "/v1/chat/completions",
            json!({"model": "err-429", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
            false,
        ),
        step(
            "anthropic /v1/messages, overloaded_error after 3 tokens (model err-after-200)",
            "/v1/messages",
            json!({"model": "err-after-200", "stream": true, "max_tokens": 10,
                   "messages": [{"role": "user", "content": "hi"}]}),
            true,
        ),
    ]
}

pub fn run(listen: SocketAddr, config: Config, args: &DemoArgs) -> anyhow::Result<()> {
    let default_output = config.default_output_tokens;
    let emulator = Emulator::start(listen, config)?;
    let addr = emulator.addr();
    println!("listening on {addr}");
    let (mut prompt_total, mut output_total, mut requests) = (0u64, 0u64, 0u64);
    for step in steps() {
        let body = step.body.to_string();
        let url = format!("http://{addr}{}", step.path);
        let mut cmd = Command::new("curl");
        // -N: no buffering, so streamed events print as they arrive; --max-time bounds each step.
        cmd.args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            "-H",
            "content-type: application/json",
        ]);
        if step.anthropic {
            cmd.args([
                "-H",
                "x-api-key: demo",
                "-H",
                "anthropic-version: 2023-06-01",
            ]);
        }
        cmd.args(["-w", "\n[HTTP %{http_code}]\n", "-d", &body, &url]);
        let prompt = prompt_words(&step.body);
        let output = ["/options/num_predict", "/max_tokens"]
            .iter()
            .find_map(|p| step.body.pointer(p).and_then(Value::as_u64))
            .unwrap_or(u64::from(default_output));
        println!(
            "\n==> {}: prompt_tokens={prompt} output_tokens={output}",
            step.title
        );
        println!("$ curl -sS -N -H 'content-type: application/json' -d '{body}' {url}");
        let out = cmd.output().context("running curl (is it installed?)")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "curl failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        requests += 1;
        prompt_total += u64::from(prompt);
        output_total += output;
    }
    let stats = emulator.stats();
    println!(
        "\n==> sent {requests} requests (their prompts: {prompt_total} tokens; asked for {output_total} output tokens); \
         the emulator saw {} requests, {} complete, {} HTTP errors, {} in-stream errors, {} output tokens written",
        stats.requests, stats.complete, stats.http_errors, stats.error_events, stats.output_tokens
    );
    if let Some(url) = &args.metrics_url {
        print_llm_series(url, Duration::from_secs(args.metrics_wait_secs))?;
    }
    if args.hold_secs > 0 {
        println!("serving on {addr} for {} s more", args.hold_secs);
        std::thread::sleep(Duration::from_secs(args.hold_secs));
    }
    Ok(())
}

/// Polls the agent's `/metrics` until it shows `llm_requests_total` (the agent processes captured
/// bytes asynchronously) or `wait` passes, then prints the `llm_*` samples.
fn print_llm_series(url: &str, wait: Duration) -> anyhow::Result<()> {
    let (addr, path) = split_url(url)?;
    let deadline = Instant::now() + wait;
    loop {
        let text = http::request(addr, "GET", &path, b"", Duration::from_secs(5))
            .map(|r| r.body_text())
            .unwrap_or_default();
        let seen = text.lines().any(|l| l.starts_with("llm_requests_total"));
        if seen || Instant::now() >= deadline {
            if !seen {
                println!(
                    "\n==> no llm_requests_total at {url} after {} s",
                    wait.as_secs()
                );
            }
            // Histogram buckets would drown the rest; their _sum and _count stay.
            println!("\n==> llm_* series at {url} (histogram buckets left out):");
            for line in text
                .lines()
                .filter(|l| l.starts_with("llm_") && !l.starts_with("llm_observer_"))
                .filter(|l| {
                    !l.split(['{', ' '])
                        .next()
                        .is_some_and(|name| name.ends_with("_bucket"))
                })
            {
                println!("{line}");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `http://host:port/path` → (address, path).
fn split_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// metrics URLs are supported")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to nothing"))?;
    Ok((addr, path))
}
