//! Pieces of the abuse and fault tests (tests/abuse.rs): the capture-trouble counters a step of
//! abuse moves, settling on a barrier for agents filtered to one pid, streams kept running, and
//! signals and resets no well-behaved client sends.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::expect::Expected;
use super::exposition::Exposition;
use super::quiesce::wait_quiescent;
use super::stack::Agent;

/// How long a step's effects may take to be applied.
const SETTLE: Duration = Duration::from_secs(60);

/// The self-metrics a step of abuse moves, both kept by the agent's event loop (so exact once it is
/// quiescent): decode errors by reason, incomplete exchanges by view and reason.
pub fn capture_trouble(e: &Exposition) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in e.samples.iter() {
        let key = match s.name.as_str() {
            "llm_observer_decode_errors_total" => {
                format!(
                    "decode_errors{{{}}}",
                    s.labels.get("reason").map_or("", String::as_str)
                )
            }
            "llm_observer_incomplete_exchanges_total" => format!(
                "incomplete{{{},{}}}",
                s.labels.get("view").map_or("", String::as_str),
                s.labels.get("reason").map_or("", String::as_str)
            ),
            _ => continue,
        };
        *out.entry(key).or_insert(0.0) += s.value;
    }
    out
}

/// Runs one step of abuse and returns how it moved [`capture_trouble`] (non-zero changes only),
/// read once the agent has applied everything the step caused.
pub fn step(agent: &Agent, name: &str, abuse: impl FnOnce()) -> BTreeMap<String, f64> {
    let first = wait_quiescent(agent.addr(), SETTLE).expect("quiescent");
    let started = Instant::now();
    abuse();
    let last = wait_quiescent(agent.addr(), SETTLE).expect("quiescent");
    let delta = changed(&capture_trouble(&first), &capture_trouble(&last));
    // Printed, never compared: the kernel's loss counters reach /metrics once a second, so they
    // may lag the step; they say which capture path lost bytes when a step's delta is wrong.
    let kernel = changed(&capture_loss(&first), &capture_loss(&last));
    println!(
        "{name}: {:?}, {delta:?}, kernel {kernel:?}",
        started.elapsed()
    );
    delta
}

/// `after - before`, non-zero changes only.
fn changed(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// The kernel-kept loss counters: events the ring had no room for, bytes past the per-call cap
/// or unreadable, and what was dropped by stage.
fn capture_loss(e: &Exposition) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in e.samples.iter() {
        let key = match s.name.as_str() {
            "llm_observer_lost_events_total"
            | "llm_observer_lost_control_events_total"
            | "llm_observer_truncated_bytes_total" => s.name.clone(),
            "llm_observer_dropped_total" => format!(
                "dropped{{{}}}",
                s.labels.get("stage").map_or("", String::as_str)
            ),
            _ => continue,
        };
        *out.entry(key).or_insert(0.0) += s.value;
    }
    out
}

/// Waits until `barrier` holds, then checks `expected` once on that same scrape, and returns it.
///
/// For agents filtered to one server's pid (`--pid`), which never see the harness's quiescence poke:
/// the barrier is the last thing the test caused (its final requests counted, every connection
/// closed, or the server's exit). The ring is consumed in order, so once the barrier's events are
/// applied, so is everything before them, and nothing is left to come: one comparison is final.
pub fn settle(agent: &Agent, barrier: &Expected, expected: &Expected) -> Exposition {
    let last = agent
        .wait_for(SETTLE, |e| barrier.mismatches(e).is_empty())
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
    let wrong = expected.mismatches(&last);
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        expected.table(&last)
    );
    print!("{}", barrier.table(&last));
    print!("{}", expected.table(&last));
    last
}

/// Sends `request` (a streamed chat) on `n` connections, each on its own thread; returns once
/// each has read its first bytes of response, with a counter of the streams that have ended.
pub fn start_streams(
    addr: SocketAddr,
    request: &[u8],
    n: usize,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<AtomicUsize>) {
    let ended = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let threads = (0..n)
        .map(|_| {
            let (tx, ended, req) = (tx.clone(), Arc::clone(&ended), request.to_vec());
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(120)))
                    .expect("timeout");
                c.write_all(&req).expect("stream request");
                let mut buf = [0u8; 4096];
                let first = c.read(&mut buf).unwrap_or(0);
                tx.send(first).expect("started");
                // Until the server ends the stream (or dies): errors end it too.
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                ended.fetch_add(1, Ordering::AcqRel);
            })
        })
        .collect();
    for _ in 0..n {
        let first = rx.recv_timeout(SETTLE).expect("a stream started");
        assert!(first > 0, "a stream got no first bytes");
    }
    (threads, ended)
}

/// Sets `SO_LINGER` to 0, so closing sends a reset and leaves no `TIME_WAIT` behind (50,000 closes
/// in `TIME_WAIT` would exhaust the ephemeral ports).
pub fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized, live `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned and has not reaped.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}
