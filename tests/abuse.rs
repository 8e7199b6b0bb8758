//! Root tests of abuse and faults: hostile bytes and connection floods against an LLM port leave the
//! agent alive, its memory bounded and its decode errors counted by reason; a ring buffer too small
//! for a burst counts the loss as such (incomplete exchanges, not server errors) and measures the
//! next requests exactly; an agent stopped with SIGTERM or SIGKILL while streams run leaves no BPF
//! program, map, link or perf event behind, and a restarted one measures exactly; an observed
//! server SIGKILLed mid-stream is `server_closed` and its connection state is freed.
//!
//! Every comparison of counts happens once, after the agent is quiescent. Needs root, BPF, the
//! release agent (`LLM_OBSERVER_BIN`) and bpftool; under `CI=true` a missing piece fails the test.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use llm_observer_tests::harness::{
    bpf_objects::{BpfObjects, prog_names},
    expect::{Expected, wait_for_expected},
    faults::{capture_trouble, reset_on_close, settle, signal, start_streams, step},
    guard,
    http::KeepAlive,
    process::Stream,
    rss::RssSampler,
    stack::{Agent, EmulatorProc},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(30);
/// The documented bound on the agent's resident memory during the abuse runs. Generous on purpose
/// until the global buffered-bytes budget lands; the measured peaks are printed.
const RSS_BOUND: u64 = 150 << 20;
const OTHER_BYTES: &str = "llm_observer_other_protocol_bytes_total";

fn ready() -> bool {
    if let Some(why) = guard::agent_missing() {
        return guard::skip_or_fail::<()>(&why).is_some();
    }
    if std::process::Command::new("bpftool")
        .arg("version")
        .output()
        .is_err()
    {
        return guard::skip_or_fail::<()>("no bpftool (cargo xtask setup --test)").is_some();
    }
    true
}

fn fast_emulator() -> EmulatorProc {
    EmulatorProc::start(
        EMULATOR,
        &["--ttft-ms", "0", "--token-interval-ms", "0", "--quiet"],
    )
    .expect("emulator")
}

fn chat_body(model: &str, tokens: u32, stream: bool) -> String {
    json!({"model": model, "max_tokens": tokens, "stream": stream,
           "messages": [{"role": "user", "content": "a b c"}]})
    .to_string()
}

fn chat_request(model: &str, tokens: u32, stream: bool) -> Vec<u8> {
    let body = chat_body(model, tokens, stream);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `n` sequential non-streamed chats, each on a fresh connection.
fn fresh_requests(addr: SocketAddr, model: &str, n: usize) {
    for _ in 0..n {
        let mut c = KeepAlive::connect(addr, T).expect("connect");
        let body = json!({"model": model, "max_tokens": 2,
                          "messages": [{"role": "user", "content": "a b c"}]});
        let r = c.post_json("/v1/chat/completions", &body, T).expect("chat");
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
}

/// `n` requests of `model`, exactly, in both views (3 prompt and 2 completion tokens each).
fn counted_exactly(model: &str, n: f64) -> Expected {
    served_exactly(model, n)
        .exactly(
            "llm_client_requests_total",
            &[("model", model), ("status", "2xx")],
            n,
        )
        .exactly("llm_client_errors_total", &[("model", model)], 0.0)
}

/// Writes `bytes` on a fresh connection, then reads whatever the server answers until it closes or
/// resets (the emulator refuses bad requests and closes).
fn send_and_drain(addr: SocketAddr, bytes: &[u8]) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(T)).expect("timeout");
    // A server may close before a huge write ends: the write then fails, which is the point.
    let _ = c.write_all(bytes);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
}

fn agent_alive(agent: &mut Agent) {
    assert!(
        agent.proc.wait_exit(Duration::ZERO).is_err(),
        "the agent exited; output:\n{}",
        agent.proc.output()
    );
    agent.scrape().expect("/metrics answers after the abuse");
    assert!(
        !agent.proc.output().contains("panicked"),
        "the agent panicked:\n{}",
        agent.proc.output()
    );
}

fn counts(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn hostile_bytes_are_decode_errors_by_reason_and_leave_real_requests_exact() {
    if !ready() {
        return;
    }
    let emu = fast_emulator();
    let port = emu.addr().port().to_string();
    let mut agent = Agent::start(&["--port", &port]).expect("agent");
    let rss = RssSampler::start(agent.proc.id(), Duration::from_millis(20));
    let addr = emu.addr();
    let started = Instant::now();

    // Garbage that the kernel's first-bytes sniff already rejects: never copied.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let other_before = agent.scrape().expect("scrape").sum(OTHER_BYTES, &[]);
    let d = step(&agent, "raw garbage", || send_and_drain(addr, &garbage));
    assert_eq!(d, counts(&[]), "the kernel classifies it: no decode error");
    // A kernel-kept total, read by the agent once a second: waited for, not compared once.
    agent
        .wait_for(SETTLE, |e| e.sum(OTHER_BYTES, &[]) > other_before)
        .expect("the garbage connection's later bytes are counted as other protocol");
    // Garbage behind a plausible method: user space sees it and gives up on the connection.
    let d = step(&agent, "garbage after a method", || {
        send_and_drain(addr, b"GET \x00\x01\x02\x03 garbage \xff\xfe\r\n\r\n")
    });
    // Once per view (the emulator's and this client's): before any valid message, not HTTP.
    assert_eq!(d, counts(&[("decode_errors{not_http}", 2.0)]));
    // A 10 MiB header on a request line that looks right.
    let mut huge = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    huge.resize(huge.len() + (10 << 20), b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let mut d = step(&agent, "10 MiB header", || send_and_drain(addr, &huge));
    // The client's multi-MiB writes exceed the per-call capture cap: at most one gap per view is
    // reported (the parser is already resyncing past the oversized head).
    let gaps = d.remove("decode_errors{capture_gap}").unwrap_or(0.0);
    assert!(gaps <= 2.0, "capture gaps {gaps}");
    assert_eq!(d, counts(&[("decode_errors{head_too_large}", 2.0)]));
    // Non-UTF-8 in a header value of an otherwise valid request.
    let body = chat_body("abuse-utf8", 2, false);
    let mut bin = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Bin: ",
        body.len()
    )
    .into_bytes();
    bin.extend_from_slice(b"\xff\xfe\xc3\x28\x80");
    bin.extend_from_slice(b"\r\n\r\n");
    bin.extend_from_slice(body.as_bytes());
    let d = step(&agent, "non-UTF-8 header value", || exchange(addr, &bin));
    assert_eq!(d, counts(&[]), "obs-text in a header value is valid HTTP");
    let d = step(&agent, "non-UTF-8 path", || {
        exchange(
            addr,
            b"GET /api/\xff\xfe\xfd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    assert_eq!(d, counts(&[("decode_errors{not_http}", 2.0)]));
    // Garbage after a valid exchange on a keep-alive connection.
    let d = step(&agent, "garbage after a valid exchange", || {
        let mut c = KeepAlive::connect(addr, T).expect("connect");
        let body = json!({"model": "abuse-kept", "max_tokens": 2,
                          "messages": [{"role": "user", "content": "a b c"}]});
        let r = c.post_json("/v1/chat/completions", &body, T).expect("chat");
        assert_eq!(r.status, 200);
        let s = c.stream();
        s.write_all(b"\x16\x03\x01 not http \x00\r\n\r\n")
            .expect("garbage");
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    // The garbage head, and the emulator's 400 that answers no request the agent saw, per view.
    assert_eq!(
        d,
        counts(&[
            ("decode_errors{bad_head}", 2.0),
            ("decode_errors{unmatched_response}", 2.0)
        ])
    );
    // Slowloris: 32 connections send a whole request one byte per write, interleaved, 2 ms apart.
    let d = step(&agent, "slowloris", || {
        slowloris(addr, "abuse-slow", 32, Duration::from_millis(2))
    });
    assert_eq!(
        d,
        counts(&[]),
        "a head split into 1-byte writes is still one valid head"
    );
    let abuse_s = started.elapsed();

    fresh_requests(addr, "abuse-after", 3);
    let expected = counted_exactly("abuse-after", 3.0)
        .exactly("llm_requests_total", &[("model", "abuse-utf8")], 1.0)
        .exactly("llm_client_requests_total", &[("model", "abuse-utf8")], 1.0)
        .exactly("llm_requests_total", &[("model", "abuse-kept")], 1.0)
        .exactly("llm_client_requests_total", &[("model", "abuse-kept")], 1.0)
        .exactly("llm_requests_total", &[("model", "abuse-slow")], 32.0)
        .exactly(
            "llm_client_requests_total",
            &[("model", "abuse-slow")],
            32.0,
        );
    let last = wait_for_expected(agent.addr(), &expected, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
    let (peak, samples) = rss.stop();
    agent_alive(&mut agent);
    println!(
        "hostile bytes: {abuse_s:?}; agent VmRSS peak {:.1} MiB over {samples} samples; {:?}",
        peak as f64 / (1 << 20) as f64,
        capture_trouble(&last)
    );
    assert!(peak < RSS_BOUND, "agent VmRSS peaked at {peak} bytes");
}

/// Writes a request that asks the server to close, and reads the answer to the end.
fn exchange(addr: SocketAddr, bytes: &[u8]) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(T)).expect("timeout");
    c.write_all(bytes).expect("request");
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    assert!(resp.starts_with(b"HTTP/1.1 "), "{resp:?}");
}

/// `conns` connections each send a streamed-free chat request for `model` one byte per write,
/// round-robin, `pace` between rounds; then each reads its response.
fn slowloris(addr: SocketAddr, model: &str, conns: usize, pace: Duration) {
    let req = chat_request(model, 2, false);
    let mut streams: Vec<TcpStream> = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(T)).expect("timeout");
            s
        })
        .collect();
    for b in &req {
        for s in &mut streams {
            s.write_all(std::slice::from_ref(b)).expect("slow byte");
        }
        std::thread::sleep(pace);
    }
    for mut s in streams {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("slow response");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    }
}

const CHURN: usize = 50_000;

/// `n` requests of `model` served exactly (3 prompt and 2 completion tokens each): the server view.
fn served_exactly(model: &str, n: f64) -> Expected {
    Expected::new()
        .exactly(
            "llm_requests_total",
            &[("model", model), ("status", "2xx")],
            n,
        )
        .exactly("llm_prompt_tokens_total", &[("model", model)], 3.0 * n)
        .exactly("llm_response_tokens_total", &[("model", model)], 2.0 * n)
        .exactly("llm_inference_errors_total", &[("model", model)], 0.0)
}

/// The agent filtered to the emulator's pid: the kernel copies nothing of other processes, so the
/// ring holds only what the test causes, even on a busy machine (`--port` filters in user space).
fn agent_on(emu: &EmulatorProc, extra: &[&str]) -> Agent {
    let pid = emu.proc.id().to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(extra);
    Agent::start(&args).expect("agent")
}

#[test]
fn fifty_thousand_short_connections_leave_memory_bounded_and_counts_exact() {
    if !ready() {
        return;
    }
    churn();
}

/// Every connection the emulator accepted is counted once: its own count, printed as it stops, is
/// compared with `llm_observer_connections_total{role="server"}` after quiescence. (This test
/// allowed 0.1 % before: it reckoned the accepted connections as 50,000 less the emulator's
/// "accept failed" lines, which are not one per refused connection — the emulator pauses 10 ms
/// after a failed accept, and one failure can stand for several resets.)
fn churn() {
    let mut emu = fast_emulator();
    let mut agent = agent_on(&emu, &[]);
    let addr = emu.addr();
    let rss = RssSampler::start(agent.proc.id(), Duration::from_millis(20));
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < CHURN {
                    let c = TcpStream::connect(addr).expect("churn connect");
                    reset_on_close(&c);
                }
            });
        }
    });
    let churn = started.elapsed();
    fresh_requests(addr, "churn-after", 3);
    // A connection reset while still in the listen queue makes accept() fail (the emulator logs
    // it and goes on): no accepted socket, nothing for the agent to count.
    let refused = emu
        .proc
        .lines(Stream::Stderr)
        .iter()
        .filter(|l| l.starts_with("llm-emulator: accept failed"))
        .count();
    let barrier = Expected::new()
        .at_least("llm_requests_total", &[("model", "churn-after")], 3.0)
        .exactly("llm_observer_connections_tracked", &[], 0.0);
    let expected = served_exactly("churn-after", 3.0)
        .exactly("llm_observer_connections_total", &[("role", "client")], 0.0)
        .exactly("llm_observer_lost_events_total", &[], 0.0)
        .exactly("llm_observer_dropped_total", &[], 0.0);
    let last = settle(&agent, &barrier, &expected);
    let (peak, samples) = rss.stop();
    agent_alive(&mut agent);
    // Nothing connects any more: the emulator's count now is its final one.
    emu.proc.terminate(T).expect("stopping the emulator");
    let accepted: f64 = emu
        .proc
        .lines(Stream::Stderr)
        .iter()
        .find_map(|l| {
            l.strip_prefix("llm-emulator: accepted ")?
                .strip_suffix(" connections")?
                .parse()
                .ok()
        })
        .expect("the emulator's accepted count");
    let counted = last.sum("llm_observer_connections_total", &[("role", "server")]);
    println!(
        "churn: {CHURN} connections in {churn:?} ({accepted} accepted, {refused} accept failures logged, {counted} counted); agent VmRSS peak {:.1} MiB over {samples} samples; {:?}",
        peak as f64 / (1 << 20) as f64,
        capture_trouble(&last)
    );
    assert_eq!(counted, accepted, "server connections counted vs accepted");
    assert!(peak < RSS_BOUND, "agent VmRSS peaked at {peak} bytes");
}

/// A chat request whose prompt is `words` words (about 2 bytes each).
fn big_chat(model: &str, words: usize) -> serde_json::Value {
    json!({"model": model, "max_tokens": 2,
           "messages": [{"role": "user", "content": vec!["w"; words].join(" ")}]})
}

#[test]
fn ring_overflow_is_counted_as_loss_and_the_next_requests_are_exact() {
    ring_overflow(false);
}

/// The same burst, held to docs/metrics.md: an exchange the ring lost bytes of is incomplete.
#[test]
fn ring_overflow_exchanges_are_each_counted_or_incomplete() {
    ring_overflow(true);
}

fn ring_overflow(each_accounted: bool) {
    if !ready() {
        return;
    }
    let emu = fast_emulator();
    let addr = emu.addr();
    // 8 KiB holds one full data event (4 KiB payload) and a few small ones; its 512 B of headroom
    // for non-payload records is soon full too. 256 KiB still loses much of the burst's 4 MiB of
    // payload, while its 16 KiB of headroom holds the burst's opens, closes and markers.
    let ring = if each_accounted { "262144" } else { "8192" };
    let mut agent = agent_on(&emu, &["--ring-bytes", ring]);
    // 16 clients at once, each sending a 256 KiB request: far more than the ring holds.
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let mut c = KeepAlive::connect(addr, T).expect("connect");
                let r = c
                    .post_json(
                        "/v1/chat/completions",
                        &big_chat("ring-burst", 128 << 10),
                        T,
                    )
                    .expect("burst");
                assert_eq!(r.status, 200);
            });
        }
    });
    let burst = agent
        .wait_for(SETTLE, |e| {
            e.sum("llm_observer_lost_events_total", &[]) > 0.0
        })
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
    let lost = burst.sum("llm_observer_lost_events_total", &[]);
    const N: usize = 20;
    fresh_requests(addr, "ring-after", N);
    let barrier =
        Expected::new().at_least("llm_requests_total", &[("model", "ring-after")], N as f64);
    // Whatever of the burst the ring lost is the capture's trouble: never an error of the server.
    let expected = served_exactly("ring-after", N as f64)
        .exactly("llm_inference_errors_total", &[], 0.0)
        .at_most("llm_requests_total", &[("model", "ring-burst")], 16.0);
    let last = settle(&agent, &barrier, &expected);
    let incomplete = last.sum("llm_observer_incomplete_exchanges_total", &[]);
    let burst_counted = last.sum("llm_requests_total", &[("model", "ring-burst")]);
    let lost_control = last.sum("llm_observer_lost_control_events_total", &[]);
    println!(
        "ring {ring} B: lost events {lost} after the burst, {} in all ({lost_control} not payload); burst requests counted {burst_counted} of 16, incomplete exchanges {incomplete}; {:?}",
        last.sum("llm_observer_lost_events_total", &[]),
        capture_trouble(&last)
    );
    assert!(
        burst_counted < 16.0,
        "the ring lost events, yet every burst request was counted whole"
    );
    assert!(
        last.sum(
            "llm_observer_decode_errors_total",
            &[("reason", "capture_gap")]
        ) > 0.0,
        "the lost bytes are reported as capture gaps"
    );
    let accounted = burst_counted
        + last.sum(
            "llm_observer_incomplete_exchanges_total",
            &[("view", "server")],
        );
    // Never counted twice, however much was lost.
    assert!(accounted <= 16.0, "{accounted} exchanges accounted of 16");
    if each_accounted {
        // While every open, close and marker record arrived, each exchange is accounted once.
        assert_eq!(
            lost_control, 0.0,
            "the headroom for non-payload records overflowed"
        );
        assert_eq!(
            accounted, 16.0,
            "each burst request is counted whole or as incomplete"
        );
    }
    agent_alive(&mut agent);
}

/// The agent's BPF objects, checked to be its programs (by their names) before it is stopped.
fn objects_of(agent: &Agent) -> BpfObjects {
    let objects = BpfObjects::of(agent.proc.id()).expect("agent fds");
    let names = prog_names(&objects.progs).expect("bpftool prog show");
    for want in ["sys_enter_write", "sys_exit_read", "inet_sock_set_state"] {
        assert!(names.contains(want), "no {want} among {names:?}");
    }
    assert!(!objects.maps.is_empty(), "{objects:?}");
    assert!(
        !objects.links.is_empty() || objects.perf_fds > 0,
        "no attachment held: {objects:?}"
    );
    objects
}

#[test]
fn an_agent_stopped_mid_stream_leaves_no_bpf_objects_and_a_restart_measures_exactly() {
    if !ready() {
        return;
    }
    let emu = EmulatorProc::start(
        EMULATOR,
        &["--ttft-ms", "0", "--token-interval-ms", "10", "--quiet"],
    )
    .expect("emulator");
    let port = emu.addr().port().to_string();
    let mut first = Agent::start(&["--port", &port]).expect("agent");
    // 4 streams of 2,000 tokens (20 s): running through both stops.
    let (streams, ended) = start_streams(emu.addr(), &chat_request("stop-streams", 2000, true), 4);
    let held = objects_of(&first);
    let status = first.proc.terminate(T).expect("SIGTERM");
    assert!(
        status.success(),
        "SIGTERM: {status}\n{}",
        first.proc.output()
    );
    let gone = held.wait_gone(T).expect("SIGTERM leaves nothing");
    println!(
        "SIGTERM: {} progs, {} maps, {} links, {} perf fds freed {gone:?} after exit",
        held.progs.len(),
        held.maps.len(),
        held.links.len(),
        held.perf_fds
    );
    let mut second = Agent::start(&["--port", &port]).expect("agent");
    let held = objects_of(&second);
    signal(second.proc.id(), libc::SIGKILL);
    let status = second.proc.wait_exit(T).expect("killed");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let gone = held.wait_gone(T).expect("SIGKILL leaves nothing");
    println!("SIGKILL: objects freed {gone:?} after exit");
    assert_eq!(
        ended.load(Ordering::Acquire),
        0,
        "the streams ran throughout"
    );
    let third = Agent::start(&["--port", &port]).expect("agent");
    fresh_requests(emu.addr(), "stop-after", 3);
    wait_for_expected(third.addr(), &counted_exactly("stop-after", 3.0), SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", third.proc.output()));
    drop(emu);
    for s in streams {
        s.join().expect("stream thread");
    }
}

/// A stop sent the moment the agent says it serves /metrics is a clean shutdown: the handler is
/// registered before that line. (It was registered only when the ring reader first ran, so a
/// SIGTERM in between took SIGTERM's default action: the agent died without its shutdown, and a
/// CI run of the test above caught it once.)
#[test]
fn a_sigterm_right_after_the_ready_line_is_a_clean_shutdown() {
    if !ready() {
        return;
    }
    for round in 0..5 {
        // `--port 1`: nothing of this machine's traffic is decoded; only the stop matters.
        let mut agent = Agent::start(&["--port", "1"]).expect("agent");
        signal(agent.proc.id(), libc::SIGTERM);
        let status = agent.proc.wait_exit(T).expect("stopped");
        assert!(
            status.success(),
            "round {round}: {status}\n{}",
            agent.proc.output()
        );
        assert!(
            agent.proc.output().contains("shutting down"),
            "round {round}: no shutdown\n{}",
            agent.proc.output()
        );
    }
}

#[test]
fn a_server_killed_mid_stream_is_server_closed_and_its_state_freed() {
    if !ready() {
        return;
    }
    let mut emu = EmulatorProc::start(
        EMULATOR,
        &["--ttft-ms", "0", "--token-interval-ms", "20", "--quiet"],
    )
    .expect("emulator");
    let agent = agent_on(&emu, &[]);
    // Model names enter the capped label set on a success (so junk that only fails never takes a
    // slot): one served request names the model first.
    fresh_requests(emu.addr(), "killed-mid-stream", 1);
    let admitted = served_exactly("killed-mid-stream", 1.0).exactly(
        "llm_observer_connections_tracked",
        &[],
        0.0,
    );
    let before = settle(&agent, &admitted, &admitted);
    let tracked = before.sum("llm_observer_connections_tracked", &[]);
    let mut c = TcpStream::connect(emu.addr()).expect("connect");
    c.set_read_timeout(Some(T)).expect("timeout");
    c.write_all(&chat_request("killed-mid-stream", 1000, true))
        .expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Mid-stream: the head and at least one token event are out.
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"w0") {
        let n = c.read(&mut buf).expect("stream");
        assert!(n > 0, "the stream ended early: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    let barrier = Expected::new()
        .at_least("llm_observer_connections_tracked", &[], tracked + 1.0)
        .exactly(
            "llm_active_requests",
            &[("model", "killed-mid-stream")],
            1.0,
        );
    agent
        .wait_for(SETTLE, |e| barrier.mismatches(e).is_empty())
        .expect("the stream is tracked");
    signal(emu.proc.id(), libc::SIGKILL);
    emu.proc.wait_exit(T).expect("emulator killed");
    let _ = c.read_to_end(&mut seen);
    drop(c);
    let model = [("model", "killed-mid-stream")];
    let barrier = Expected::new()
        .at_least("llm_inference_errors_total", &model, 1.0)
        .exactly("llm_observer_connections_tracked", &[], tracked);
    let expected = Expected::new()
        .exactly(
            "llm_inference_errors_total",
            &[("model", "killed-mid-stream"), ("type", "server_closed")],
            1.0,
        )
        .exactly("llm_inference_errors_total", &model, 1.0)
        .exactly("llm_requests_total", &model, 2.0)
        .exactly("llm_active_requests", &model, 0.0)
        .exactly("llm_observer_incomplete_exchanges_total", &[], 0.0);
    settle(&agent, &barrier, &expected);
}
