//! Waiting until the agent has provably applied everything a workload caused.
//!
//! The agent exports `llm_observer_last_event_monotonic_seconds`: the capture time of the newest
//! kernel event it has applied. The kernel ring buffer is consumed in the order records were
//! reserved, and every record of a syscall is reserved before that syscall returns. So: read the
//! capture clock (`CLOCK_MONOTONIC`) once the workload's syscalls have returned, cause one more
//! event (a loopback TCP connection: its open and close are captured for every process), and wait
//! until the gauge passes the time read. Then every event of the workload has been applied, and a
//! scrape shows its final counts: comparing once proves "counted exactly once", which the first
//! scrape where everything matches cannot (a later over-count would go unseen).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::exposition::Exposition;
use super::stack::scrape;

const GAUGE: &str = "llm_observer_last_event_monotonic_seconds";

/// The capture clock now, in seconds (the gauge's unit and rounding: ns / 1e9 as a double).
pub fn monotonic_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    let ns = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
    ns as f64 / 1e9
}

/// One captured event after now: a loopback connection opened, accepted and closed.
fn poke() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    drop(client);
    drop(server);
    Ok(())
}

/// Waits until the agent at `addr` has applied every event captured before this call, and
/// returns a scrape taken after that. Fails after `timeout` (an agent that stopped reading its
/// ring, or one filtered to a single pid that never sees the poke).
pub fn wait_quiescent(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Exposition> {
    let since = monotonic_seconds();
    let deadline = Instant::now() + timeout;
    loop {
        poke()?;
        let e = scrape(addr)?;
        let applied = e.sum(GAUGE, &[]);
        if applied >= since {
            // Scraped after the gauge passed `since`: this exposition already has everything.
            return Ok(e);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the agent did not become quiescent within {timeout:?}: {GAUGE} = {applied}, \
                 waiting for {since}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
