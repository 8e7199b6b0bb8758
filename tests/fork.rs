//! Root tests: a connection accepted by one process and served by a forked child (pre-fork /
//! inetd-style servers), or passed over a unix socket to a worker that serves it (SCM_RIGHTS), is
//! counted once, in the server view, under the process that serves; a new thread of a process with
//! tracked sockets creates no second connection. Every comparison happens once, after the agent is
//! quiescent.
//!
//! Needs root, BPF, the release agent (`LLM_OBSERVER_BIN`) and the test venv's Python
//! (`LLM_OBSERVER_VENV`); under `CI=true` a missing piece fails the test instead of skipping it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use llm_observer_tests::harness::{
    expect::{Expected, wait_for_expected},
    guard,
    process::{Proc, Stream},
    stack::{Agent, venv_python},
    wire::{completion, post},
};

const SETTLE: Duration = Duration::from_secs(30);

/// A one-connection Python server: `fork` accepts, forks, closes its copy and lets the child
/// serve (then exits with the child's status); `thread` serves from a new thread; `pass` forks a
/// worker first, then accepts and hands the connection to it over a unix socket pair
/// (`socket.send_fds`: sendmsg with SCM_RIGHTS), closing its own copy. It prints `port N` when
/// listening and `served-by P` with the serving process's pid.
const SERVER: &str = r#"
import os, socket, sys, threading
mode, response = sys.argv[1], sys.argv[2].encode()
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
worker = None
if mode == "pass":
    parent_end, worker_end = socket.socketpair()
    worker = os.fork()
    if worker == 0:
        parent_end.close()
        _, fds, _, _ = socket.recv_fds(worker_end, 16, 1)
        serve_conn = socket.socket(fileno=fds[0])
print("port", ls.getsockname()[1], flush=True)
conn = None
if worker != 0:
    conn, _ = ls.accept()

def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < n:
        body += c.recv(65536)
    print("served-by", os.getpid(), flush=True)
    c.sendall(response)
    c.close()

if mode == "pass":
    if worker == 0:
        serve(serve_conn)
        os._exit(0)
    socket.send_fds(parent_end, [b"c"], [conn.fileno()])
    conn.close()
    _, status = os.waitpid(worker, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
if mode == "fork":
    pid = os.fork()
    if pid == 0:
        serve(conn)
        os._exit(0)
    conn.close()
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
t = threading.Thread(target=serve, args=(conn,))
t.start()
t.join()
"#;

fn ready() -> bool {
    let missing = guard::agent_missing().or_else(|| venv_python().err().map(|e| format!("{e:#}")));
    match missing {
        Some(why) => guard::skip_or_fail::<()>(&why).is_some(),
        None => true,
    }
}

/// [`completion`] as the text the Python server sends (it closes the connection after it).
fn response(model: &str) -> String {
    String::from_utf8(completion(model))
        .expect("ASCII response")
        .replacen("\r\n", "\r\nConnection: close\r\n", 1)
}

/// Runs one exchange against the Python server in `mode` while `agent` watches; returns the
/// server's comm (the `process` label) and the pid that served.
fn exchange(mode: &str, model: &str) -> (String, u32) {
    let mut cmd = Command::new(venv_python().expect("venv"));
    cmd.args(["-c", SERVER, mode, &response(model)]);
    let mut server = Proc::spawn("python server", cmd).expect("python server");
    let port: u16 = server
        .wait_for_line(SETTLE, |s, l| {
            (s == Stream::Stdout)
                .then(|| l.strip_prefix("port ")?.parse().ok())
                .flatten()
        })
        .expect("server port");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.id()))
        .expect("server comm")
        .trim()
        .to_owned();
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.write_all(&post(model)).expect("request");
    let mut resp = Vec::new();
    client.read_to_end(&mut resp).expect("response");
    assert!(resp.starts_with(b"HTTP/1.1 200 OK"), "{resp:?}");
    let served_by: u32 = server
        .wait_for_line(SETTLE, |s, l| {
            (s == Stream::Stdout)
                .then(|| l.strip_prefix("served-by ")?.parse().ok())
                .flatten()
        })
        .expect("serving pid");
    let status = server.wait_exit(SETTLE).expect("server exit");
    assert!(status.success(), "{status:?}\n{}", server.output());
    (comm, served_by)
}

fn exactly_once(model: &str, comm: &str) -> Expected {
    Expected::new()
        .exactly(
            "llm_requests_total",
            &[("model", model), ("status", "2xx"), ("process", comm)],
            1.0,
        )
        .exactly("llm_requests_total", &[("model", model)], 1.0)
        .exactly("llm_prompt_tokens_total", &[("model", model)], 3.0)
        .exactly("llm_response_tokens_total", &[("model", model)], 2.0)
        .exactly(
            "llm_client_requests_total",
            &[("model", model), ("status", "2xx")],
            1.0,
        )
}

/// One exchange served in `mode`, counted once in both views under the server's comm.
fn counted_once(mode: &str) {
    counted_once_and(mode, Expected::new());
}

fn counted_once_and(mode: &str, more: Expected) {
    if !ready() {
        return;
    }
    let agent = Agent::start(&[]).expect("agent");
    let model = format!("{mode}:{}", std::process::id());
    let (comm, served_by) = exchange(mode, &model);
    let mut want = exactly_once(&model, &comm);
    want.0.extend(more.0);
    wait_for_expected(agent.addr(), &want, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
    println!("{mode}: served by pid {served_by} ({comm}), counted once in both views");
}

#[test]
fn a_connection_served_by_a_forked_child_is_counted_once() {
    counted_once("fork");
}

#[test]
fn a_connection_served_by_a_new_thread_is_counted_once() {
    counted_once("thread");
}

#[test]
fn a_connection_passed_to_a_worker_over_a_unix_socket_is_counted_once() {
    counted_once_and(
        "pass",
        Expected::new().exactly("llm_observer_passed_connections_total", &[], 1.0),
    );
}
