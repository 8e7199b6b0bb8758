//! Root test of the container image (`cargo xtask image`, `LLM_OBSERVER_IMAGE`, default
//! `localhost/llm-observer:latest`) under a real container runtime: Debian's podman with the runc
//! runtime, host pid namespace, host network, read-only root filesystem, and the DaemonSet's host
//! mounts and arguments (read from deploy/kubernetes/daemonset.yaml). The agent in the container
//! must serve /metrics and count exactly the requests a workload on the host, outside the
//! container, sends to the emulator. Run twice: `--privileged`, and with the DaemonSet's exact
//! capabilities (everything dropped but BPF, PERFMON, SYS_PTRACE; no seccomp filter).
//!
//! What this host needs, found out on Debian 12's podman 4.3 (see deploy/README.md):
//! - crun 1.8 refuses to start any container here ("cgroups in hybrid mode not supported": the
//!   VM mounts cgroup v1 controllers plus a v2 hierarchy holding a controller), so the runtime
//!   is runc (`--runtime runc`, Debian's package);
//! - the default ulimits cannot be applied (`setrlimit RLIMIT_NOFILE: operation not permitted`),
//!   so the test points podman at a containers.conf with `default_ulimits = []`.
//!
//! Needs root, BPF, podman, runc, curl, the image and the venv (PyYAML reads the manifest); under
//! `CI=true` a missing piece fails the test.

mod operate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use llm_observer_tests::harness::{
    expect::{Expected, wait_for_expected},
    guard,
    process::Proc,
    stack::{EmulatorProc, curl_post},
};
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const RUNTIME: &str = "runc";

fn image() -> String {
    std::env::var("LLM_OBSERVER_IMAGE").unwrap_or_else(|_| "localhost/llm-observer:latest".into())
}

fn missing_piece() -> Option<String> {
    if !guard::is_root() {
        return Some("not root (the agent loads eBPF programs)".into());
    }
    for (tool, pkg) in [("podman", "podman"), ("runc", "runc"), ("curl", "curl")] {
        if !operate::have(tool) {
            return Some(format!(
                "no {tool} (apt-get install {pkg}; cargo xtask setup --test)"
            ));
        }
    }
    let exists = Command::new("podman")
        .args(["image", "exists", &image()])
        .status()
        .is_ok_and(|s| s.success());
    (!exists).then(|| format!("no image {} (cargo xtask image)", image()))
}

/// containers.conf for this host (see the file header), in a fresh temp file.
fn containers_conf() -> PathBuf {
    let f = std::env::temp_dir().join(format!(
        "llm-observer-containers-{}.conf",
        std::process::id()
    ));
    std::fs::write(&f, "[containers]\ndefault_ulimits = []\n").expect("write containers.conf");
    f
}

/// The DaemonSet's container: (capabilities to add, host path → mount path, read-only), args.
struct PodSpec {
    caps: Vec<String>,
    mounts: Vec<(String, String)>,
    args: Vec<String>,
}

fn daemonset_pod() -> PodSpec {
    let ds =
        operate::yaml_docs(&operate::root().join("deploy/kubernetes/daemonset.yaml")).remove(0);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "the DaemonSet runs in the host pid namespace"
    );
    let c = &pod["containers"][0];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    };
    let host_path = |volume: &str| -> String {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or_else(|| panic!("volume {volume} is a hostPath"))
            .to_owned()
    };
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let ro = if m["readOnly"] == true { ":ro" } else { "" };
            (
                host_path(m["name"].as_str().expect("name")),
                format!("{}{ro}", m["mountPath"].as_str().expect("mountPath")),
            )
        })
        .collect();
    PodSpec {
        caps: strs(&c["securityContext"]["capabilities"]["add"]),
        mounts,
        args: strs(&c["args"]),
    }
}

/// The agent's container, removed (`podman rm -f`) on drop.
struct Container {
    name: String,
    proc: Proc,
    conf: PathBuf,
    addr: SocketAddr,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(["--runtime", RUNTIME, "rm", "-f", "-t", "2", &self.name])
            .output();
        let _ = std::fs::remove_file(&self.conf);
    }
}

fn start(privileged: bool, emulator_port: u16) -> Container {
    let spec = daemonset_pod();
    let conf = containers_conf();
    let name = format!(
        "llm-observer-test-{}-{}",
        std::process::id(),
        u8::from(privileged)
    );
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", &conf)
        .args(["--runtime", RUNTIME, "run", "--rm", "--name", &name])
        .args(["--pid=host", "--network=host", "--read-only"]);
    if privileged {
        cmd.arg("--privileged");
    } else {
        cmd.arg("--cap-drop=ALL")
            .arg(format!("--cap-add={}", spec.caps.join(",")))
            .args(["--security-opt", "seccomp=unconfined"]);
    }
    for (host, inside) in &spec.mounts {
        cmd.args(["-v", &format!("{host}:{inside}")]);
    }
    cmd.arg(image());
    // The DaemonSet's arguments, but serving on a free loopback port of the host network, and only
    // the emulator's traffic (the node's other traffic is not this test's).
    for a in &spec.args {
        if !a.starts_with("--metrics-addr") {
            cmd.arg(a);
        }
    }
    cmd.args([
        "--metrics-addr",
        "127.0.0.1:0",
        "--port",
        &emulator_port.to_string(),
    ]);
    let mut proc = Proc::spawn("podman run", cmd).expect("podman starts");
    let addr = proc
        .wait_for_line(Duration::from_secs(120), |_, line| {
            let rest = &line[line.find("serving /metrics on http://")? + 27..];
            rest.split('/').next()?.parse::<SocketAddr>().ok()
        })
        .unwrap_or_else(|e| panic!("the agent in the container never served /metrics: {e:#}"));
    Container {
        name,
        proc,
        conf,
        addr,
    }
}

fn counts_host_requests(privileged: bool) {
    if let Some(why) = missing_piece() {
        guard::skip_or_fail::<()>(&why);
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "5", "--token-interval-ms", "1"])
        .expect("emulator");
    let port = emu.addr().port();
    let c = start(privileged, port);
    let tag = format!("container-{port}-{}", u8::from(privileged));
    let base = emu.base_url();
    let t = Duration::from_secs(30);
    for stream in [false, true, false] {
        let body = json!({"model": tag, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                          "stream": stream, "stream_options": {"include_usage": true}});
        let (status, _) =
            curl_post(&format!("{base}/v1/chat/completions"), &body, false, t).expect("curl");
        assert_eq!(status, 200);
    }
    let generate = json!({"model": tag, "prompt": "hi", "options": {"num_predict": 3}});
    for _ in 0..2 {
        let (status, _) =
            curl_post(&format!("{base}/api/generate"), &generate, false, t).expect("curl");
        assert_eq!(status, 200);
    }
    let server = |api: &'static str, op: &'static str| {
        [
            ("api", api),
            ("operation", op),
            ("model", tag.as_str()),
            ("process", "llm-emulator"),
        ]
    };
    let openai = server("openai", "chat");
    let ollama = server("ollama", "text_completion");
    let expected = Expected::new()
        .exactly("llm_requests_total", &openai, 3.0)
        .exactly(
            "llm_response_tokens_total",
            &[&openai[..], &[("source", "reported")]].concat(),
            12.0,
        )
        .exactly("llm_time_to_first_token_seconds_count", &openai, 1.0)
        .exactly("llm_requests_total", &ollama, 2.0)
        .exactly("llm_tokens_generated_total", &ollama, 6.0)
        // The client view of the same calls. Not selected by process: curl may exit before the
        // agent reads its name from /proc, and is then `unknown`.
        .exactly("llm_client_requests_total", &[("model", tag.as_str())], 5.0)
        .exactly(
            "llm_inference_errors_total",
            &[("model", tag.as_str())],
            0.0,
        );
    wait_for_expected(c.addr, &expected, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\ncontainer output:\n{}", c.proc.output()));
}

#[test]
fn the_image_privileged_with_host_pid_counts_host_requests_exactly() {
    counts_host_requests(true);
}

#[test]
fn the_image_with_the_daemonsets_exact_capabilities_counts_host_requests_exactly() {
    counts_host_requests(false);
}
