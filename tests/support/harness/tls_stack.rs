//! The TLS test stack of tests/tls.rs and tests/tls_clients.rs: a self-signed certificate, nginx
//! (Debian's, linked to libssl.so.3) terminating TLS in front of the loopback emulator over
//! HTTP/1.1 and HTTP/2, and drivers for the clients that call it (curl, the official OpenAI SDK
//! sync and async, Node's `fetch` and `https`, a Go net/http client), with the expectations both
//! views of a call must meet.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::expect::{Expected, wait_for_expected};
use super::faults::signal;
use super::process::{Proc, Stream, run_to_end};
use super::stack::{
    Agent, EmulatorProc, WorkloadSummary, run_summary, venv_python, workspace_root,
};

/// How long the agent may take to apply what a test caused.
pub const SETTLE: Duration = Duration::from_secs(30);
/// How long a client may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// One agent at a time (agents are node-wide).
pub static SERIAL: Mutex<()> = Mutex::new(());

/// A self-signed certificate for 127.0.0.1 in a fresh directory, made with the openssl CLI.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn new(tag: &str) -> Certs {
        let dir =
            std::env::temp_dir().join(format!("llm-observer-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&dir).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]);
        let (status, _, err) =
            run_to_end("openssl", cmd, Duration::from_secs(60)).expect("openssl");
        assert!(status.success(), "openssl req: {}", err.join("\n"));
        Certs { dir }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx terminating TLS on two loopback ports, HTTP/1.1 on `addr` and HTTP/2 (ALPN h2) on
/// `h2_addr`, and proxying to the emulator (one process: `master_process off`, so its pid is the
/// one that serves).
pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub h2_addr: SocketAddr,
}

/// A port nothing listens on now (nginx cannot report the one the kernel would pick for it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Nginx {
    pub fn start(certs: &Certs, upstream: SocketAddr) -> Nginx {
        let (port, h2_port) = (free_port(), free_port());
        let d = certs.dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log stderr;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \n  server {{\n    listen 127.0.0.1:{port} ssl;\n    listen 127.0.0.1:{h2_port} ssl http2;\n\
             \n    ssl_certificate {d}/cert.pem;\n\
             \n    ssl_certificate_key {d}/key.pem;\n    location / {{ proxy_pass http://{upstream}; \
             proxy_buffering off; proxy_http_version 1.1; }}\n  }}\n}}\n"
        );
        let path = certs.dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let mut cmd = Command::new("nginx");
        cmd.args(["-e", "stderr", "-c"]).arg(&path);
        let proc = Proc::spawn("nginx", cmd).expect("nginx starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let h2_addr: SocketAddr = format!("127.0.0.1:{h2_port}").parse().expect("addr");
        // Ready once it accepts (nginx prints nothing when it is).
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() || TcpStream::connect(h2_addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx never listened: {}",
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            proc,
            addr,
            h2_addr,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn h2_url(&self) -> String {
        format!("https://{}", self.h2_addr)
    }
}

pub struct Stack {
    pub certs: Certs,
    pub emu: EmulatorProc,
    pub nginx: Nginx,
    _serial: MutexGuard<'static, ()>,
}

pub fn servers(emulator: &str, tag: &str) -> Stack {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        super::guard::is_root(),
        "the TLS tests load BPF programs: run them as root"
    );
    let certs = Certs::new(tag);
    let emu = EmulatorProc::start(emulator, &["--ttft-ms", "20", "--token-interval-ms", "2"])
        .expect("emulator starts");
    let nginx = Nginx::start(&certs, emu.addr());
    Stack {
        certs,
        emu,
        nginx,
        _serial: serial,
    }
}

impl Stack {
    pub fn model(&self, base: &str) -> String {
        format!("{base}:{}", self.emu.addr().port())
    }

    /// `n` non-streamed chat calls with curl over HTTPS, one process (and connection) each;
    /// returns the (prompt, completion) tokens the server reported to curl.
    pub fn curl(&self, model: &str, n: usize) -> (u64, u64) {
        self.curl_with(model, n, false)
    }

    /// [`Stack::curl`], over HTTP/1.1 or (`h2`) HTTP/2 to nginx's h2 port.
    pub fn curl_with(&self, model: &str, n: usize, h2: bool) -> (u64, u64) {
        let (url, version) = if h2 {
            (self.nginx.h2_url(), "--http2")
        } else {
            (self.nginx.url(), "--http1.1")
        };
        let body = json!({"model": model, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
        let (mut prompt, mut completion) = (0, 0);
        for _ in 0..n {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "60", "--cacert"])
                .arg(self.certs.cert())
                .args(["-H", "content-type: application/json", "-d"])
                .arg(body.to_string())
                .arg(version)
                .arg(format!("{url}/v1/chat/completions"));
            let (status, out, err) = run_to_end("curl", cmd, TIMEOUT).expect("curl runs");
            assert!(status.success(), "curl: {}", err.join("\n"));
            let v: Value = serde_json::from_str(&out.join("\n")).expect("curl printed JSON");
            prompt += v["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens");
            completion += v["usage"]["completion_tokens"]
                .as_u64()
                .expect("completion_tokens");
        }
        (prompt, completion)
    }

    /// tests/clients/workload.py (the official SDK) against nginx over HTTPS.
    pub fn sdk(&self, args: &[&str]) -> WorkloadSummary {
        let python = venv_python().expect("venv");
        let mut cmd = Command::new(python);
        cmd.arg(workspace_root().join("tests/clients/workload.py"))
            .args(["--base-url", &self.nginx.url(), "--cacert"])
            .arg(self.certs.cert())
            .args(args);
        run_summary("workload.py", cmd, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// tests/clients/node_https.mjs: `n` chat calls from one Node process over one keep-alive
    /// connection, with `fetch` (undici) or the `https` module; `https-fresh`: `https` with a
    /// connection per call.
    pub fn node(&self, via: &str, stream: bool, model: &str, n: usize) -> WorkloadSummary {
        let (via, fresh) = match via.strip_suffix("-fresh") {
            Some(v) => (v, true),
            None => (via, false),
        };
        let mut cmd = Command::new("node");
        cmd.arg(workspace_root().join("tests/clients/node_https.mjs"))
            .env("NODE_EXTRA_CA_CERTS", self.certs.cert())
            .args([
                "--base-url",
                &self.nginx.url(),
                "--model",
                model,
                "--via",
                via,
            ])
            .args(["--n", &n.to_string()]);
        if stream {
            cmd.arg("--stream");
        }
        if fresh {
            cmd.arg("--fresh");
        }
        run_summary("node_https.mjs", cmd, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// tests/clients/async_https.py: `n` calls of the SDK's async client (asyncio, memory BIOs)
    /// over one keep-alive connection, or (`fresh`) each on a client and connection of its own.
    pub fn sdk_async(&self, stream: bool, fresh: bool, model: &str, n: usize) -> WorkloadSummary {
        let python = venv_python().expect("venv");
        let mut cmd = Command::new(python);
        cmd.arg(workspace_root().join("tests/clients/async_https.py"))
            .args(["--base-url", &self.nginx.url(), "--cacert"])
            .arg(self.certs.cert())
            .args(["--model", model, "--n", &n.to_string()]);
        if stream {
            cmd.arg("--stream");
        }
        if fresh {
            cmd.arg("--fresh");
        }
        run_summary("async_https.py", cmd, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// tests/clients/go_https (net/http, crypto/tls), built once with the Go toolchain: `n` calls
    /// over one keep-alive connection, HTTP/1.1 or (`h2`) HTTP/2 to nginx's h2 port.
    ///
    /// With `probed` (the client's first run), it waits before calling until the agent reports one
    /// more probed file than `probed` holds: the agent finds a new executable after its exec, and
    /// what a program does before its file is probed is not captured. Later processes of the same
    /// file run the probes from their first instruction (they belong to the file).
    pub fn go(
        &self,
        stream: bool,
        h2: bool,
        model: &str,
        n: usize,
        probed: Option<(&Agent, f64)>,
    ) -> WorkloadSummary {
        let url = if h2 {
            self.nginx.h2_url()
        } else {
            self.nginx.url()
        };
        let mut cmd = Command::new(go_client());
        cmd.args(["-base-url", &url, "-model", model, "-n", &n.to_string()])
            .arg("-cacert")
            .arg(self.certs.cert());
        if stream {
            cmd.arg("-stream");
        }
        if h2 {
            cmd.arg("-h2");
        }
        let s = if let Some((agent, before)) = probed {
            cmd.arg("-wait");
            let mut client = Proc::spawn("go_https", cmd).expect("go_https starts");
            client
                .wait_for_line(TIMEOUT, |stream, line| {
                    (stream == Stream::Stdout && line == "ready").then_some(())
                })
                .expect("go_https ready");
            agent
                .wait_for(SETTLE, |e| {
                    e.get("llm_observer_tls_libraries", &[])
                        .is_some_and(|v| v > before)
                })
                .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.proc.output()));
            signal(client.id(), libc::SIGUSR1);
            let line = client
                .wait_for_line(TIMEOUT, |stream, line| {
                    (stream == Stream::Stdout && line.starts_with('{')).then(|| line.to_owned())
                })
                .expect("go_https summary");
            client.wait_exit(TIMEOUT).expect("go_https exits");
            WorkloadSummary(serde_json::from_str(&line).expect("summary JSON"))
        } else {
            run_summary("go_https", cmd, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
        };
        let proto = if h2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(s.0["proto"], proto, "{:?}", s.0);
        s
    }

    pub fn peer(&self) -> String {
        self.nginx.addr.to_string()
    }

    pub fn h2_peer(&self) -> String {
        self.nginx.h2_addr.to_string()
    }

    pub fn upstream(&self) -> String {
        self.emu.addr().to_string()
    }
}

/// The Go client, built once per test run (`go build`, Debian's golang-go) into the target dir.
pub fn go_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = workspace_root().join("target/go");
            let out = target.join("go_https");
            let mut cmd = Command::new("go");
            cmd.current_dir(workspace_root().join("tests/clients/go_https"))
                .env("GOCACHE", target.join("cache"))
                .env("GOPATH", target.join("path"))
                .env("GOFLAGS", "-mod=mod")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".");
            let (status, _, err) =
                run_to_end("go build", cmd, Duration::from_secs(300)).expect("go runs");
            assert!(status.success(), "go build: {}", err.join("\n"));
            out
        })
        .clone()
}

pub fn expect(agent: &Agent, s: &Stack, e: &Expected) {
    wait_for_expected(agent.addr(), e, SETTLE).unwrap_or_else(|err| {
        panic!(
            "{err:#}\nagent log:\n{}\nnginx log:\n{}",
            agent.proc.output(),
            s.nginx.proc.output()
        )
    });
}

/// `n` successful calls of `model` with these token totals in one family set (server or client
/// view), selected by `labels`.
pub fn calls(
    e: Expected,
    client: bool,
    labels: &[(&str, &str)],
    n: f64,
    prompt: f64,
    completion: f64,
) -> Expected {
    let p = if client { "llm_client_" } else { "llm_" };
    let with = |extra: (&'static str, &'static str)| {
        let mut l = labels.to_vec();
        l.push(extra);
        l
    };
    e.exactly(&format!("{p}requests_total"), labels, n)
        .exactly(&format!("{p}requests_total"), &with(("status", "2xx")), n)
        .exactly(
            &format!("{p}prompt_tokens_total"),
            &with(("source", "reported")),
            prompt,
        )
        .exactly(
            &format!("{p}response_tokens_total"),
            &with(("source", "reported")),
            completion,
        )
}

/// A client process's `n` successful calls of `model` (summary `c`) to nginx at `peer`: exact in
/// its client view and in nginx's server view, one TTFT per call when `stream`, no inference error.
pub fn calls_both_views(
    e: Expected,
    c: &WorkloadSummary,
    n: u64,
    model: &str,
    peer: &str,
    process: &str,
    stream: bool,
) -> Expected {
    assert_eq!(c.ok(), n, "{:?}", c.0);
    let count = n as f64;
    let (prompt, completion) = (c.prompt_tokens() as f64, c.completion_tokens() as f64);
    let e = calls(
        e,
        true,
        &[("model", model), ("peer", peer), ("process", process)],
        count,
        prompt,
        completion,
    );
    calls(
        e,
        false,
        &[("model", model), ("process", "nginx")],
        count,
        prompt,
        completion,
    )
    .exactly(
        "llm_client_time_to_first_token_seconds_count",
        &[("model", model), ("peer", peer)],
        if stream { count } else { 0.0 },
    )
    .exactly("llm_inference_errors_total", &[("model", model)], 0.0)
}
