//! Syscall-level measurements, each in this one process so the numbers read against each other:
//! untracked syscalls (pipe and /dev/zero → /dev/null), small sends on a tracked loopback HTTP
//! connection, a paced sender for the loss ramp, and idle tracked connections for the RSS check.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

/// A request head that makes the connection HTTP for the kernel's classification, with a body
/// long enough that every later small send is body data of the same request.
const HEAD: &[u8] = b"POST /bench HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000000000\r\n\r\n";

/// The fastest repetition: other work on the machine only ever adds time to a loop like these.
fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::NAN, f64::min)
}

/// ns per syscall of a 1-byte write + 1-byte read loop, on a pipe and on /dev/null + /dev/zero.
/// Best of `reps` repetitions of `iters` pairs each.
pub fn syscalls(iters: u64, reps: usize) -> anyhow::Result<serde_json::Value> {
    let (mut r, mut w) = std::io::pipe().context("pipe")?;
    let mut null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("/dev/null")?;
    let mut zero = std::fs::File::open("/dev/zero").context("/dev/zero")?;
    let mut b = [0u8; 1];
    let mut pipe = Vec::new();
    let mut dev = Vec::new();
    let mut unix = Vec::new();
    let (ua, ub) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
    let (ua, ub) = (
        std::os::fd::AsRawFd::as_raw_fd(&ua),
        std::os::fd::AsRawFd::as_raw_fd(&ub),
    );
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..iters {
            w.write_all(&[1])?;
            r.read_exact(&mut b)?;
        }
        pipe.push(t.elapsed().as_nanos() as f64 / (2 * iters) as f64);
        let t = Instant::now();
        for _ in 0..iters {
            null.write_all(&b)?;
            zero.read_exact(&mut b)?;
        }
        dev.push(t.elapsed().as_nanos() as f64 / (2 * iters) as f64);
        let t = Instant::now();
        for _ in 0..iters {
            msg(ua, &mut b, false)?;
            msg(ub, &mut b, true)?;
        }
        unix.push(t.elapsed().as_nanos() as f64 / (2 * iters) as f64);
    }
    Ok(json!({"pipe_ns": best(pipe), "dev_ns": best(dev), "unix_msg_ns": best(unix)}))
}

/// One 1-byte `sendmsg` (`recv` false) or `recvmsg` with room for a passed fd (the call every
/// process's `recvmsg` exit pays a lookup for, and whose enter saves its header: fd passing,
/// llm-observer-ebpf/src/passed.rs) on a unix socket the agent does not track.
fn msg(fd: i32, b: &mut [u8; 1], recv: bool) -> anyhow::Result<()> {
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    if recv {
        m.msg_control = control.as_mut_ptr().cast();
        m.msg_controllen = std::mem::size_of_val(&control);
    }
    // SAFETY: `m` points at live buffers of the lengths given.
    let n = unsafe {
        if recv {
            libc::recvmsg(fd, &mut m, 0)
        } else {
            libc::sendmsg(fd, &m, 0)
        }
    };
    anyhow::ensure!(
        n == 1,
        "unix socket {}: {n}",
        if recv { "recvmsg" } else { "sendmsg" }
    );
    Ok(())
}

/// A connected loopback pair: the client has sent [`HEAD`]; a thread drains the server side.
fn tracked_pair() -> anyhow::Result<(TcpStream, std::thread::JoinHandle<u64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding")?;
    let mut client = TcpStream::connect(listener.local_addr()?).context("connecting")?;
    let (mut server, _) = listener.accept().context("accepting")?;
    client.set_nodelay(true)?;
    client.write_all(HEAD)?;
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        while let Ok(n) = server.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    Ok((client, drain))
}

/// ns per `write` of `size` bytes on a tracked loopback connection (best of `reps`).
pub fn sends(iters: u64, size: usize, reps: usize) -> anyhow::Result<serde_json::Value> {
    let (mut client, drain) = tracked_pair()?;
    let payload = vec![b'x'; size.max(1)];
    let mut per = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..iters {
            client.write_all(&payload)?;
        }
        per.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    drop(client);
    let _ = drain.join();
    Ok(json!({"send_ns": best(per), "size": size}))
}

/// Small sends at `rate` per second for `seconds` on `conns` tracked connections (one sender
/// thread each); reports the rate reached.
pub fn paced(
    rate: f64,
    seconds: f64,
    conns: usize,
    size: usize,
) -> anyhow::Result<serde_json::Value> {
    let conns = conns.max(1);
    let per_conn = rate / conns as f64;
    let mut senders = Vec::new();
    for _ in 0..conns {
        let (mut client, drain) = tracked_pair()?;
        let payload = vec![b'x'; size.max(1)];
        senders.push(std::thread::spawn(move || -> std::io::Result<u64> {
            let start = Instant::now();
            let end = Duration::from_secs_f64(seconds);
            let mut sent = 0u64;
            loop {
                let now = start.elapsed();
                if now >= end {
                    break;
                }
                let due = (now.as_secs_f64() * per_conn) as u64;
                if sent >= due {
                    // Ahead of schedule: wait a little (sleeping less than the send interval
                    // keeps the pace smooth enough at these rates).
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                // Catch up in bounded bursts.
                for _ in 0..(due - sent).min(64) {
                    client.write_all(&payload)?;
                    sent += 1;
                }
            }
            drop(client);
            let _ = drain.join();
            Ok(sent)
        }));
    }
    let mut sent = 0;
    for s in senders {
        sent += s
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))?
            .context("sending")?;
    }
    Ok(json!({"sent": sent, "seconds": seconds, "rate": sent as f64 / seconds, "offered": rate}))
}

/// Opens `pairs` loopback connections whose clients each sent one request head that their server
/// side read, prints `{"ready": pairs}` and holds them all until stdin closes.
pub fn idle(pairs: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding")?;
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(pairs * 2);
    let mut buf = [0u8; 256];
    for i in 0..pairs {
        let mut client = TcpStream::connect(addr).with_context(|| format!("connection {i}"))?;
        client.write_all(b"GET /idle HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let (mut server, _) = listener.accept().context("accepting")?;
        let _ = server.read(&mut buf)?;
        held.push(client);
        held.push(server);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"ready": pairs}))?;
    out.flush()?;
    drop(out);
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(held);
    Ok(())
}
