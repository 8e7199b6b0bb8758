//! Streaming load: N keep-alive connections each running chat requests one after another (closed
//! loop, `rate` 0), or the same connections sending at a fixed total rate (open loop), where each
//! latency counts from the request's scheduled time, so a slow server cannot hide its queueing.
//! Latency is send → last byte of the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server (the emulator, or a proxy in front of it).
    #[arg(long)]
    pub target: SocketAddr,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Output tokens (SSE chunks) per streamed answer.
    #[arg(long, default_value_t = 64)]
    pub tokens: u32,
    /// Requests per second over all connections; 0 runs closed loop (each connection back to back).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds run before measuring (connections, caches, the server's pools).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

struct Window {
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    bytes: u64,
}

pub fn run(args: &LoadArgs) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("building the client runtime")?;
    runtime.block_on(drive(args))
}

async fn drive(args: &LoadArgs) -> anyhow::Result<serde_json::Value> {
    let request: Arc<[u8]> = http::chat_request(&args.target.to_string(), args.tokens).into();
    let begin = Instant::now();
    let start = begin + Duration::from_secs_f64(args.warmup);
    let window = Arc::new(Window {
        start,
        end: start + Duration::from_secs_f64(args.duration),
    });
    let n = args.concurrency.max(1);
    let mut tasks = Vec::with_capacity(n);
    for worker in 0..n {
        let request = Arc::clone(&request);
        let window = Arc::clone(&window);
        let (target, rate) = (args.target, args.rate);
        tasks.push(tokio::spawn(async move {
            connection(worker, n, target, rate, begin, &window, &request).await
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let tally = t.await.context("a load task panicked")?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.bytes += tally.bytes;
    }
    all.latencies_us.sort_unstable();
    let count = all.latencies_us.len();
    let pct = |p: f64| -> f64 {
        if count == 0 {
            return 0.0;
        }
        let i = ((p * count as f64).ceil() as usize).clamp(1, count) - 1;
        f64::from(all.latencies_us[i])
    };
    let mean = if count == 0 {
        0.0
    } else {
        all.latencies_us.iter().map(|&v| f64::from(v)).sum::<f64>() / count as f64
    };
    Ok(json!({
        "requests": count,
        "errors": all.errors,
        "seconds": args.duration,
        "throughput": count as f64 / args.duration,
        "offered_rate": args.rate,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "mean_us": mean,
        "body_bytes": all.bytes,
    }))
}

/// One connection's requests until the window ends. Open loop: this worker owns every `n`-th slot
/// of the global schedule, starting at `begin`.
async fn connection(
    worker: usize,
    n: usize,
    target: SocketAddr,
    rate: f64,
    begin: Instant,
    window: &Window,
    request: &[u8],
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut stream: Option<TcpStream> = None;
    let mut slot = worker as u64;
    loop {
        let due = if rate > 0.0 {
            let due = begin + Duration::from_secs_f64(slot as f64 / rate);
            slot += n as u64;
            if due >= window.end {
                break;
            }
            tokio::time::sleep_until(due).await;
            due
        } else {
            let now = Instant::now();
            if now >= window.end {
                break;
            }
            now
        };
        let conn = match stream.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(target).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream.insert(s)
                }
                Err(_) => {
                    tally.errors += 1;
                    // The server refuses connections (overload, not yet listening): retry at a
                    // bounded pace rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match http::exchange(conn, request, &mut buf).await {
            Ok(bytes) => {
                let done = Instant::now();
                if due >= window.start && done <= window.end {
                    let us = done.duration_since(due).as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    tally.bytes += bytes;
                }
            }
            Err(_) => {
                if due >= window.start {
                    tally.errors += 1;
                }
                stream = None;
            }
        }
    }
    tally
}
