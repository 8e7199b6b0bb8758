//! Root end-to-end tests of attribution: real cgroups shaped like a kubelet pod and a compose
//! container, the emulator (server view) and curl (client view) moved into them, names served by
//! a test Docker Engine API (unix socket) and a test Kubernetes API server (HTTPS with a CA made
//! by `openssl`, bearer token), both answering with the APIs' documented JSON shapes; and a
//! process that execs another program mid-session.
//!
//! Needs root, a BPF-capable kernel, a writable cgroup v2 hierarchy (`/sys/fs/cgroup` or, on a
//! hybrid host, `/sys/fs/cgroup/unified`) and the release agent (`LLM_OBSERVER_BIN`). Requests
//! use a model name unique to the test; every comparison happens once, after the per-model
//! request totals of both views show the agent has decoded every exchange of the workload.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use llm_observer_tests::harness::expect::{Expected, wait_for_expected};
use llm_observer_tests::harness::guard;
use llm_observer_tests::harness::stack::{Agent, EmulatorProc};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(20);
const READY: Duration = Duration::from_secs(30);

const POD_UID: &str = "8712f785-1a3e-41ec-a00b-e2dcc77431cb";
const POD_CONTAINER: &str = "3f6c0e1d2b4a59687a8b9c0d1e2f30415263748596a7b8c9d0e1f2a3b4c5d6e7";
const COMPOSE_CONTAINER: &str = "b1c2d3e4f5a60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const NODE: &str = "test-node";
const TOKEN: &str = "test-service-account-token";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cgroup v2 mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
}

/// A cgroup created for the test (with its parents) and removed, innermost first, on drop.
struct Cgroup {
    made: Vec<PathBuf>,
    leaf: PathBuf,
}

impl Cgroup {
    fn create(root: &Path, rel: &str) -> Cgroup {
        let mut made = Vec::new();
        let mut p = root.to_owned();
        for seg in rel.split('/') {
            p.push(seg);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                made.push(p.clone());
            }
        }
        Cgroup { made, leaf: p }
    }

    fn procs(&self) -> PathBuf {
        self.leaf.join("cgroup.procs")
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.procs(), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.leaf.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes still inside (a killed emulator) go back to the root first.
        if let (Ok(text), Some(root)) = (std::fs::read_to_string(self.procs()), cgroup2_root()) {
            for pid in text.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        for p in self.made.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// A watch response that stays open and quiet, as the API server's does between events.
struct Quiet;

impl Body for Quiet {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

type Handler =
    Arc<dyn Fn(&Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> + Send + Sync>;

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .expect("response")
}

async fn serve_io<IO>(io: IO, handler: Handler)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let h = handler.clone();
        async move { Ok::<_, Infallible>(h(&req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Docker Engine API (v1.43 schema: ContainerSummary, ContainerInspectResponse) with one compose
/// container.
fn docker_handler() -> Handler {
    let labels = json!({
        "com.docker.compose.project": "chat",
        "com.docker.compose.service": "agent",
        "com.docker.compose.container-number": "1",
        "com.docker.compose.version": "2.29.1"
    });
    Arc::new(move |req| {
        let path = req.uri().path();
        if path == "/containers/json" {
            json_response(
                StatusCode::OK,
                json!([{
                    "Id": COMPOSE_CONTAINER, "Names": ["/chat-agent-1"], "Image": "chat-agent:latest",
                    "ImageID": "sha256:4b2c", "Command": "curl", "Created": 1733000000,
                    "Ports": [], "Labels": labels, "State": "running", "Status": "Up 2 minutes",
                    "HostConfig": {"NetworkMode": "chat_default"}, "NetworkSettings": {"Networks": {}},
                    "Mounts": []
                }]),
            )
        } else if path == format!("/containers/{COMPOSE_CONTAINER}/json") {
            json_response(
                StatusCode::OK,
                json!({
                    "Id": COMPOSE_CONTAINER, "Name": "/chat-agent-1", "Image": "sha256:4b2c",
                    "State": {"Status": "running", "Running": true, "Pid": 1},
                    "Config": {"Image": "chat-agent:latest", "Labels": labels}
                }),
            )
        } else {
            json_response(
                StatusCode::NOT_FOUND,
                json!({"message": format!("No such container: {path}")}),
            )
        }
    })
}

/// Kubernetes API (core/v1 PodList, watch) with one pod on this node; bearer token required.
fn kube_handler() -> Handler {
    Arc::new(move |req| {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {TOKEN}")) {
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}),
            );
        }
        let q = req.uri().query().unwrap_or("");
        if req.uri().path() != "/api/v1/pods" || !q.contains(&format!("spec.nodeName%3D{NODE}")) {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "code": 404}),
            );
        }
        if q.contains("watch=1") {
            return Response::builder()
                .header("content-type", "application/json")
                .header("transfer-encoding", "chunked")
                .body(Quiet.boxed())
                .expect("response");
        }
        json_response(
            StatusCode::OK,
            json!({
                "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "4711"},
                "items": [{
                    "metadata": {
                        "name": "llm-0", "namespace": "inference", "uid": POD_UID,
                        "resourceVersion": "4700", "labels": {"app": "llm"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "llm", "uid": "0d0c0b0a-0000-4000-8000-000000000001"}]
                    },
                    "spec": {"nodeName": NODE, "containers": [{"name": "server", "image": "llm-emulator:test"}]},
                    "status": {
                        "phase": "Running", "qosClass": "Burstable", "podIP": "10.244.0.7",
                        "containerStatuses": [{
                            "name": "server", "ready": true, "restartCount": 0, "started": true,
                            "image": "llm-emulator:test", "imageID": "sha256:77aa",
                            "containerID": format!("containerd://{POD_CONTAINER}"),
                            "state": {"running": {"startedAt": "2026-12-01T09:00:00Z"}}
                        }]
                    }
                }]
            }),
        )
    })
}

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI), as the test API
/// server's TLS config; the CA's path is what the agent is told to trust.
fn tls_for_localhost(dir: &Path) -> (Arc<tokio_rustls::rustls::ServerConfig>, PathBuf) {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext file");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "1"],
        ]
        .concat()
        .into_iter()
        .chain([
            "-subj",
            "/CN=llm-observer test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .collect(),
        [
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat()
        .into_iter()
        .chain(["-subj", "/CN=kube-apiserver"])
        .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (xtask setup installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .expect("server.crt")
        .collect::<Result<_, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    (Arc::new(config), dir.join("ca.crt"))
}

/// Both test API servers on a runtime of their own; they live as long as the returned runtime.
fn start_apis(
    docker_sock: &Path,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
) -> (tokio::runtime::Runtime, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _ = std::fs::remove_file(docker_sock);
    let unix = rt
        .block_on(async { tokio::net::UnixListener::bind(docker_sock) })
        .expect("docker socket");
    let tcp = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("kube listener");
    let port = tcp.local_addr().expect("addr").port();
    rt.spawn(async move {
        let h = docker_handler();
        while let Ok((io, _)) = unix.accept().await {
            tokio::spawn(serve_io(io, h.clone()));
        }
    });
    rt.spawn(async move {
        let h = kube_handler();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        while let Ok((io, _)) = tcp.accept().await {
            let (h, acceptor) = (h.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(io).await {
                    serve_io(tls, h).await;
                }
            });
        }
    });
    (rt, port)
}

fn chat_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 8})
        .to_string()
}

/// A client (Python's urllib): one request, then it waits on stdin until the test releases it,
/// then optionally execs `python3 <next script> <url> <body>` in the same process. The agent
/// reads a process's identity when it processes the connection's first event, so a client must
/// not exit (or exec) before the agent has decoded its exchange: the test releases it only then.
const CLIENT_PY: &str = r#"import os, sys, urllib.request
url, body = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url, data=body.encode(), headers={"content-type": "application/json"})
assert urllib.request.urlopen(req).status == 200
sys.stdin.readline()
if len(sys.argv) > 3:
    os.execv(sys.executable, [sys.executable, sys.argv[3], url, body])
"#;

struct Client(std::process::Child);

impl Client {
    /// Runs `<dir>/<name>.py` (written from [`CLIENT_PY`]), inside `cgroup` when given: the shell
    /// moves itself there and execs python, so the pid that connects is already inside.
    fn start(dir: &Path, name: &str, args: &[&str], cgroup: Option<&Cgroup>) -> Client {
        let script = dir.join(format!("{name}.py"));
        std::fs::write(&script, CLIENT_PY).expect("client script");
        let enter = cgroup.map_or(String::new(), |c| {
            format!("echo $$ > '{}' && ", c.procs().display())
        });
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{enter}exec python3 \"$0\" \"$@\""))
            .arg(&script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh and python3 run");
        Client(child)
    }

    /// Lets the client go on (exec, or exit).
    fn release(&mut self) {
        use std::io::Write as _;
        if let Some(stdin) = self.0.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }

    fn finish(mut self) {
        self.release();
        drop(self.0.stdin.take());
        let status = self.0.wait().expect("client ends");
        assert!(status.success(), "client exited with {status}");
    }
}

/// Waits until the agent has decoded `n` requests for `model` in each view. The model name is
/// unique to the test (other traffic on the node, even on the same port number elsewhere, never
/// uses it); the labels under test are compared afterwards, once.
fn wait_requests(agent: &Agent, model: &str, n: f64) {
    let want = Expected::new()
        .exactly("llm_requests_total", &[("model", model)], n)
        .exactly("llm_client_requests_total", &[("model", model)], n);
    wait_for_expected(agent.addr(), &want, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&agent.proc.output(), 40)));
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn agent_bin_present() -> bool {
    if let Some(why) = guard::agent_missing() {
        guard::skip_or_fail::<()>(&why);
        return false;
    }
    true
}

#[test]
fn containers_and_pods_label_both_views() {
    let _serial = serial();
    if !agent_bin_present() {
        return;
    }
    let Some(root) = cgroup2_root() else {
        guard::skip_or_fail::<()>("no writable cgroup v2 hierarchy");
        return;
    };
    let uid_ = POD_UID.replace('-', "_");
    let pod_cg = Cgroup::create(
        &root,
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{POD_CONTAINER}.scope"
        ),
    );
    let compose_cg = Cgroup::create(
        &root,
        &format!("system.slice/docker-{COMPOSE_CONTAINER}.scope"),
    );
    let dir = std::env::temp_dir().join(format!("llmobs-attrib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let sock = dir.join("docker.sock");
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let (tls, ca) = tls_for_localhost(&dir);
    let (_apis, kube_port) = start_apis(&sock, tls);

    let emu = EmulatorProc::start(EMULATOR, &[]).expect("emulator starts");
    // Into the pod before the agent (or any connection) sees it.
    pod_cg.enter(emu.proc.id());
    let port = emu.addr().port().to_string();
    let kube_url = format!("https://127.0.0.1:{kube_port}");
    let mut agent = Agent::start(&[
        "--port",
        &port,
        // Other traffic on the node must not push this test's model into `other`.
        "--max-models",
        "100000",
        "--docker-socket",
        sock.to_str().expect("utf-8 path"),
        "--kube-api-url",
        &kube_url,
        "--kube-token-file",
        token.to_str().expect("utf-8 path"),
        "--kube-ca-file",
        ca.to_str().expect("utf-8 path"),
        "--node-name",
        NODE,
        // The pod's `app` label, and (outside Kubernetes) the compose container's project.
        "--label-pod-label",
        "app=app,project=com.docker.compose.project",
    ])
    .expect("agent starts");
    // Both sources log once they have stored their first listing.
    for line in [
        "container names: Docker API at",
        "pod names: Kubernetes API at",
    ] {
        agent
            .proc
            .wait_for_line(READY, |_, l| l.contains(line).then_some(()))
            .unwrap_or_else(|e| panic!("{line}: {e:#}\n{}", tail(&agent.proc.output(), 30)));
    }

    let model = format!("attrib:{port}");
    let url = format!("{}/v1/chat/completions", emu.base_url());
    const N: f64 = 3.0;
    let body = chat_body(&model);
    for i in 1..=N as usize {
        let client = Client::start(&dir, "compose_agent", &[&url, &body], Some(&compose_cg));
        // Each exchange is seen from both ends.
        wait_requests(&agent, &model, i as f64);
        client.finish();
    }
    let server = [
        ("model", model.as_str()),
        ("process", "llm-emulator"),
        ("container", "server"),
        ("pod", "llm-0"),
        ("namespace", "inference"),
        ("app", "llm"),
        ("project", ""),
        ("status", "2xx"),
    ];
    let client = [
        ("model", model.as_str()),
        ("process", "compose_agent"),
        ("container", "agent"),
        ("pod", ""),
        ("namespace", ""),
        ("app", ""),
        ("project", "chat"),
        ("status", "2xx"),
    ];
    // Every client waited until its exchange was decoded in both views: compare once.
    let expected = Expected::new()
        .exactly("llm_requests_total", &server, N)
        .exactly("llm_requests_total", &[("model", model.as_str())], N)
        .exactly("llm_client_requests_total", &client, N)
        .exactly("llm_client_requests_total", &[("model", model.as_str())], N);
    let e = agent.scrape().expect("scrape");
    println!("{}", expected.table(&e));
    let failures = expected.mismatches(&e);
    assert!(
        failures.is_empty(),
        "{}\nagent log:\n{}",
        failures.join("\n"),
        tail(&agent.proc.output(), 40)
    );
    drop(agent);
    drop(emu);
}

/// A client makes a request, execs another program in the same process (same pid, same start
/// time: only the exec event tells), and makes another: the second request is labelled with the
/// new program, not the old one.
#[test]
fn exec_refreshes_the_process_label() {
    let _serial = serial();
    if !agent_bin_present() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &[]).expect("emulator starts");
    let port = emu.addr().port().to_string();
    let agent = Agent::start(&["--port", &port, "--max-models", "100000"]).expect("agent starts");
    let dir = std::env::temp_dir().join(format!("llmobs-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let model = format!("exec:{port}");
    let url = format!("{}/v1/chat/completions", emu.base_url());
    let body = chat_body(&model);
    // The second program's script, then the first, which execs into it after its request.
    let after = dir.join("after_exec_agent.py");
    std::fs::write(&after, CLIENT_PY).expect("script");
    let after = after.to_str().expect("utf-8 path");
    let mut client = Client::start(&dir, "before_exec_agent", &[&url, &body, after], None);
    wait_requests(&agent, &model, 1.0);
    // exec: the same pid now runs after_exec_agent.py and makes its own request.
    client.release();
    wait_requests(&agent, &model, 2.0);
    client.finish();
    let m = model.as_str();
    let expected = Expected::new()
        .exactly(
            "llm_client_requests_total",
            &[("model", m), ("process", "before_exec_agent")],
            1.0,
        )
        .exactly(
            "llm_client_requests_total",
            &[("model", m), ("process", "after_exec_agent")],
            1.0,
        )
        .exactly("llm_client_requests_total", &[("model", m)], 2.0);
    let e = agent.scrape().expect("scrape");
    println!("{}", expected.table(&e));
    let failures = expected.mismatches(&e);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(dir);
}
