//! Root end-to-end test of the model inventory: the real agent watches two emulators, one
//! answering as Ollama (its native `/api/chat`) and one as llama-server (its native
//! `/completion`). The agent polls each server's own endpoints (`--inventory-interval 1`): the
//! Ollama one's documented `/api/ps` shape, the llama-server one's real `/props`, `/slots` and
//! `/metrics` captures. After the workload, and once two poll rounds have ended since, the
//! inventory series are exact, and the polls are in no request family. A second test runs the
//! Ollama-shaped emulator and its client inside a network namespace of their own, bound to that
//! namespace's loopback: the agent reaches it only by entering the namespace.
//!
//! Needs root, BPF and the release agent (`LLM_OBSERVER_BIN`); under `CI=true` a missing piece
//! fails the test instead of skipping it.

use std::time::Duration;

use llm_observer_tests::emulator::{PS_CONTEXT_LENGTH, PS_EXPIRES_UNIX, PS_SIZE, PS_SIZE_VRAM};
use llm_observer_tests::harness::{
    guard,
    quiesce::wait_quiescent,
    stack::{Agent, EmulatorProc, curl_post},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(30);
const N: u64 = 2;

fn ready() -> bool {
    match guard::agent_missing() {
        Some(why) => guard::skip_or_fail::<()>(&why).is_some(),
        None => true,
    }
}

fn polls(e: &llm_observer_tests::harness::exposition::Exposition, server: &str, ep: &str) -> f64 {
    e.sum(
        "llm_observer_inventory_polls_total",
        &[("server", server), ("endpoint", ep), ("result", "ok")],
    )
}

#[test]
#[ignore = "needs root, BPF and the release agent"]
fn inventory_series_are_exact_and_polls_are_not_requests() {
    if !ready() {
        return;
    }
    let fast = ["--ttft-ms", "5", "--token-interval-ms", "1"];
    let ollama = EmulatorProc::start(EMULATOR, &fast).expect("ollama emulator");
    let llama = EmulatorProc::start(EMULATOR, &fast).expect("llama-server emulator");
    let agent = Agent::start(&[
        "--port",
        &ollama.addr().port().to_string(),
        "--port",
        &llama.addr().port().to_string(),
        "--inventory-interval",
        "1",
    ])
    .expect("agent starts");
    let model = format!("inv-ollama:{}", ollama.addr().port());
    for _ in 0..N {
        let body = json!({"model": model, "stream": false,
            "messages": [{"role": "user", "content": "a b c"}], "options": {"num_predict": 3}});
        let (status, text) = curl_post(
            &format!("{}/api/chat", ollama.base_url()),
            &body,
            false,
            Duration::from_secs(30),
        )
        .expect("curl");
        assert_eq!(status, 200, "{text}");
        let body = json!({"prompt": "a b c", "n_predict": 3, "stream": false});
        let (status, text) = curl_post(
            &format!("{}/completion", llama.base_url()),
            &body,
            false,
            Duration::from_secs(30),
        )
        .expect("curl");
        assert_eq!(status, 200, "{text}");
    }
    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent");
    // Two more rounds of both servers: the later one began after the workload had ended.
    let (ps0, props0) = (
        polls(&e, "ollama", "ollama_ps"),
        polls(&e, "llamacpp", "props"),
    );
    agent
        .wait_for(SETTLE, |e| {
            polls(e, "ollama", "ollama_ps") >= ps0 + 2.0
                && polls(e, "llamacpp", "props") >= props0 + 2.0
        })
        .expect("two inventory rounds");
    // Quiescent again (the polls' own server views are decoded too), then compared once.
    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent after the polls");

    // The polls are nobody's requests: the server views count the workload alone.
    assert_eq!(e.sum("llm_requests_total", &[]), (2 * N) as f64);
    assert_eq!(
        e.sum(
            "llm_requests_total",
            &[("server", "ollama"), ("model", &model)]
        ),
        N as f64
    );
    assert_eq!(
        e.sum("llm_requests_total", &[("server", "llamacpp")]),
        N as f64
    );
    assert_eq!(
        e.sum("llm_client_requests_total", &[]),
        (2 * N) as f64,
        "curl's only"
    );

    let place = [
        ("process", "llm-emulator"),
        ("container", ""),
        ("pod", ""),
        ("namespace", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        place.iter().copied().chain(extra.iter().copied()).collect()
    };
    let model_s: &'static str = Box::leak(model.clone().into_boxed_str());
    let om = with(&[("server", "ollama"), ("model", model_s)]);
    let mut info = om.clone();
    info.extend([
        ("family", "emulator"),
        ("parameter_size", "1M"),
        ("quantization", "Q4_0"),
    ]);
    assert_eq!(e.get("llm_model_loaded_info", &info), Some(1.0), "{info:?}");
    assert_eq!(e.get("llm_model_size_bytes", &om), Some(PS_SIZE as f64));
    assert_eq!(
        e.get("llm_model_vram_bytes", &om),
        Some(PS_SIZE_VRAM as f64)
    );
    assert_eq!(
        e.get("llm_model_context_length", &om),
        Some(PS_CONTEXT_LENGTH as f64)
    );
    assert_eq!(
        e.get("llm_model_expires_timestamp_seconds", &om),
        Some(PS_EXPIRES_UNIX as f64)
    );

    // llama-server: the real captures' figures.
    let lm = with(&[("server", "llamacpp"), ("model", "tiny")]);
    let mut info = lm.clone();
    info.extend([
        ("family", ""),
        ("parameter_size", ""),
        ("quantization", "all F32"),
    ]);
    assert_eq!(e.get("llm_model_loaded_info", &info), Some(1.0));
    assert_eq!(e.get("llm_model_context_length", &lm), Some(512.0));
    assert_eq!(e.get("llm_server_reported_queue_size", &lm), Some(0.0));
    assert_eq!(
        e.get("llm_server_reported_running_requests", &lm),
        Some(0.0)
    );
    for (state, n) in [("busy", 0.0), ("idle", 2.0)] {
        let l = with(&[("server", "llamacpp"), ("state", state)]);
        assert_eq!(e.get("llm_server_slots", &l), Some(n), "{state}");
    }
    // Exactly these models: one per server.
    assert_eq!(e.matching("llm_model_loaded_info", &[]).count(), 2);
    // Every poll answered.
    for s in e.matching("llm_observer_inventory_polls_total", &[]) {
        if s.has_labels(&[("result", "ok")]) {
            continue;
        }
        assert_eq!(s.value, 0.0, "{:?}", s.labels);
    }
}

/// A network namespace with its loopback up, deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> anyhow::Result<Netns> {
        let name = format!("llmobs-inv-{}", std::process::id());
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let out = std::process::Command::new("ip").args(args).output()?;
            anyhow::ensure!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let _ = ip(&["netns", "delete", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        ip(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs root, BPF, the release agent and ip netns"]
fn a_server_on_another_namespaces_loopback_is_polled_inside_it() {
    if !ready() {
        return;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            guard::skip_or_fail::<()>(&format!("no network namespace: {e:#}"));
            return;
        }
    };
    let emu = EmulatorProc::start_via(
        &["ip", "netns", "exec", &ns.0],
        EMULATOR,
        &["--ttft-ms", "5", "--token-interval-ms", "1"],
    )
    .expect("emulator starts in the namespace");
    let port = emu.addr().port().to_string();
    let agent = Agent::start(&["--port", &port, "--inventory-interval", "1"]).expect("agent");
    let model = format!("inv-netns:{port}");
    let body = json!({"model": model, "stream": false,
        "messages": [{"role": "user", "content": "a b c"}], "options": {"num_predict": 3}});
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "curl", "-sS", "--max-time", "30"])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
        ])
        .arg(format!("{}/api/chat", emu.base_url()))
        .output()
        .expect("curl in the namespace");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent");
    assert_eq!(e.sum("llm_requests_total", &[("model", &model)]), 1.0);
    let ps0 = polls(&e, "ollama", "ollama_ps");
    let e = agent
        .wait_for(SETTLE, |e| polls(e, "ollama", "ollama_ps") >= ps0 + 2.0)
        .expect("two inventory rounds");
    // The host's 127.0.0.1 has nothing on that port: only a poll from inside found the model.
    let of_model = [("model", model.as_str())];
    let got: Vec<_> = e.matching("llm_model_loaded_info", &of_model).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        e.get(
            "llm_model_context_length",
            &[
                ("server", "ollama"),
                ("model", &model),
                ("process", "llm-emulator"),
                ("container", ""),
                ("pod", ""),
                ("namespace", ""),
            ]
        ),
        Some(PS_CONTEXT_LENGTH as f64)
    );
    assert_eq!(
        e.sum(
            "llm_observer_inventory_polls_total",
            &[("server", "ollama"), ("result", "unreachable")]
        ),
        0.0
    );
}
