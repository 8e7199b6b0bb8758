//! The GPU join with a fake NVML: three GPUs (one in MIG mode, two instances), servers whose
//! GPU memory is held by child processes (vLLM), by a process of the same container (Ollama's
//! runner, reparented), by a scheduler in the same pod (SGLang), and an unrelated job.

use super::*;
use crate::attribution::Place;
use crate::attribution::fakeproc::FakeProc;
use crate::attribution::gpu::{GpuDevice, GpuProcess, GpuSnapshot};
use crate::attribution::names::ContainerMeta;
use crate::attribution::process;
use crate::sinks::MetricsConfig;

const GIB: u64 = 1 << 30;
const OLLAMA_C: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const SGL_C: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const SGL_POD: &str = "8712f785-1a3e-41ec-a00b-e2dcc77431cb";

struct Fake(GpuSnapshot);

impl GpuSource for Fake {
    fn sample(&mut self) -> GpuSnapshot {
        self.0.clone()
    }
}

fn device(gpu: &str, used: u64, total: u64, util: Option<f64>, energy: Option<f64>) -> GpuDevice {
    GpuDevice {
        gpu: gpu.into(),
        uuid: format!("GPU-{gpu}"),
        name: "NVIDIA H100 80GB HBM3".into(),
        memory_used_bytes: Some(used),
        memory_total_bytes: Some(total),
        utilization_ratio: util,
        power_watts: util.map(|u| 100.0 + 500.0 * u),
        energy_joules: energy,
    }
}

fn proc_on(gpu: &str, pid: u32, bytes: u64, sm: Option<f64>) -> GpuProcess {
    GpuProcess {
        gpu: gpu.into(),
        pid,
        memory_bytes: Some(bytes),
        sm_utilization_ratio: sm,
    }
}

fn snapshot(energy0: f64) -> GpuSnapshot {
    GpuSnapshot {
        devices: vec![
            device("0", 4 * GIB, 80 * GIB, Some(0.75), Some(energy0)),
            device("1", 9 * GIB, 80 * GIB, Some(0.5), Some(2000.0)),
            device("2", 5 * GIB, 80 * GIB, Some(0.25), Some(3000.0)),
            device("2/0", 4 * GIB, 40 * GIB, None, None),
            device("2/1", 0, 40 * GIB, None, None),
        ],
        processes: vec![
            proc_on("0", 101, 2 * GIB, Some(0.0)),
            proc_on("1", 102, 3 * GIB, Some(0.5)),
            proc_on("2/0", 201, 4 * GIB, None),
            proc_on("1", 301, 5 * GIB, Some(0.25)),
            proc_on("0", 400, GIB, Some(0.1)),
            proc_on("0", 999, GIB, Some(0.1)), // gone before the join
        ],
        errors: vec!["no_permission"],
    }
}

fn proc_tree() -> FakeProc {
    let p = FakeProc::new("gpu-join");
    let host = "0::/user.slice/user-0.slice/session-1.scope\n";
    let ollama = format!("0::/system.slice/docker-{OLLAMA_C}.scope\n");
    let sgl = format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{SGL_C}.scope\n",
        SGL_POD.replace('-', "_")
    );
    // vLLM: API server → EngineCore → worker, the children hold the GPUs.
    p.put(
        100,
        1,
        "vllm",
        "/usr/bin/python3|/usr/local/bin/vllm|serve|m|",
        10,
        host,
    );
    p.put(101, 100, "VLLM::EngineCor", "VLLM::EngineCore|", 11, host);
    p.put(102, 101, "VLLM::Worker_TP", "VLLM::Worker_TP1|", 12, host);
    // Ollama in a compose container; the runner was reparented to the container's init.
    p.put(200, 1, "ollama", "/bin/ollama|serve|", 20, &ollama);
    p.put(
        201,
        1,
        "ollama",
        "/bin/ollama|runner|--model|/root/.ollama/models/blobs/sha256-1|",
        21,
        &ollama,
    );
    // SGLang in a pod: the scheduler shares the server's container.
    p.put(
        300,
        1,
        "python3",
        "python3|-m|sglang.launch_server|",
        30,
        &sgl,
    );
    p.put(
        301,
        300,
        "sglang::schedul",
        "sglang::scheduler_TP0 ",
        31,
        &sgl,
    );
    // A training job nobody serves requests from.
    p.put(400, 1, "python3", "python3|train.py|", 40, host);
    p
}

#[test]
fn joins_gpu_processes_to_serving_units() {
    let p = proc_tree();
    let names = Names::new();
    names.set_container(
        OLLAMA_C,
        ContainerMeta {
            name: "chat-ollama-1".into(),
            compose_service: Some("ollama".into()),
            ..ContainerMeta::default()
        },
    );
    let serving = Arc::new(Mutex::new(ServingRegistry::default()));
    {
        // What the metrics sink registers when these servers answer requests.
        let mut reg = serving.lock().unwrap();
        for (pid, place) in [
            (100, Place::default()),
            (
                200,
                Place {
                    container: "ollama".into(),
                    ..Place::default()
                },
            ),
            (
                300,
                Place {
                    container: "server".into(),
                    pod: "sgl-0".into(),
                    namespace: "llm".into(),
                },
            ),
        ] {
            let info = process::read(&p.0, pid).unwrap();
            reg.serve(&info, &info.name, &place);
        }
    }
    let metrics = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    let mut s = GpuSampler::new(
        Box::new(Fake(snapshot(1000.0))),
        serving,
        names,
        &p.0,
        metrics.clone(),
    );
    s.tick();
    let text = metrics.encode();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("llm_gpu_") || l.starts_with("llm_memory_usage_bytes"))
        .filter(|l| !l.starts_with("llm_gpu_info"))
        .collect();
    let want = [
        r#"llm_gpu_device_memory_total_bytes{gpu="0"} 85899345920"#,
        r#"llm_gpu_device_memory_total_bytes{gpu="1"} 85899345920"#,
        r#"llm_gpu_device_memory_total_bytes{gpu="2"} 85899345920"#,
        r#"llm_gpu_device_memory_total_bytes{gpu="2/0"} 42949672960"#,
        r#"llm_gpu_device_memory_total_bytes{gpu="2/1"} 42949672960"#,
        r#"llm_gpu_device_memory_used_bytes{gpu="0"} 4294967296"#,
        r#"llm_gpu_device_memory_used_bytes{gpu="1"} 9663676416"#,
        r#"llm_gpu_device_memory_used_bytes{gpu="2"} 5368709120"#,
        r#"llm_gpu_device_memory_used_bytes{gpu="2/0"} 4294967296"#,
        r#"llm_gpu_device_memory_used_bytes{gpu="2/1"} 0"#,
        r#"llm_gpu_device_utilization_ratio{gpu="0"} 0.75"#,
        r#"llm_gpu_device_utilization_ratio{gpu="1"} 0.5"#,
        r#"llm_gpu_device_utilization_ratio{gpu="2"} 0.25"#,
        r#"llm_gpu_energy_joules_total{gpu="0"} 1000"#,
        r#"llm_gpu_energy_joules_total{gpu="1"} 2000"#,
        r#"llm_gpu_energy_joules_total{gpu="2"} 3000"#,
        r#"llm_gpu_memory_used_bytes{container="",gpu="0",namespace="",pod="",process="train"} 1073741824"#,
        r#"llm_gpu_memory_used_bytes{container="",gpu="0",namespace="",pod="",process="vllm"} 2147483648"#,
        r#"llm_gpu_memory_used_bytes{container="",gpu="1",namespace="",pod="",process="vllm"} 3221225472"#,
        r#"llm_gpu_memory_used_bytes{container="ollama",gpu="2/0",namespace="",pod="",process="ollama"} 4294967296"#,
        r#"llm_gpu_memory_used_bytes{container="server",gpu="1",namespace="llm",pod="sgl-0",process="sglang.launch_server"} 5368709120"#,
        r#"llm_gpu_power_watts{gpu="0"} 475"#,
        r#"llm_gpu_power_watts{gpu="1"} 350"#,
        r#"llm_gpu_power_watts{gpu="2"} 225"#,
        r#"llm_gpu_utilization_ratio{container="",gpu="0",namespace="",pod="",process="train"} 0.1"#,
        r#"llm_gpu_utilization_ratio{container="",gpu="0",namespace="",pod="",process="vllm"} 0"#,
        r#"llm_gpu_utilization_ratio{container="",gpu="1",namespace="",pod="",process="vllm"} 0.5"#,
        r#"llm_gpu_utilization_ratio{container="server",gpu="1",namespace="llm",pod="sgl-0",process="sglang.launch_server"} 0.25"#,
        r#"llm_memory_usage_bytes{container="",namespace="",pod="",process="train",type="gpu"} 1073741824"#,
        r#"llm_memory_usage_bytes{container="",namespace="",pod="",process="vllm",type="gpu"} 5368709120"#,
        r#"llm_memory_usage_bytes{container="ollama",namespace="",pod="",process="ollama",type="gpu"} 4294967296"#,
        r#"llm_memory_usage_bytes{container="server",namespace="llm",pod="sgl-0",process="sglang.launch_server",type="gpu"} 5368709120"#,
    ];
    assert_eq!(lines, want, "{text}");
    assert!(text.contains("llm_observer_gpu_errors_total{reason=\"no_permission\"} 1"));
    assert!(
        text.contains(
            "llm_gpu_info{gpu=\"2/0\",name=\"NVIDIA H100 80GB HBM3\",uuid=\"GPU-2/0\"} 1"
        )
    );

    // Next tick: energy adds only what is new; the gone worker's series drops out.
    let mut next = snapshot(1250.0);
    next.processes.retain(|p| p.pid != 102);
    next.errors.clear();
    s.source = Box::new(Fake(next));
    s.tick();
    let text = metrics.encode();
    assert!(
        text.contains("llm_gpu_energy_joules_total{gpu=\"0\"} 1250"),
        "{text}"
    );
    assert!(
        !text.contains("gpu=\"1\",namespace=\"\",pod=\"\",process=\"vllm\""),
        "{text}"
    );
    assert!(text.contains(
        "llm_memory_usage_bytes{container=\"\",namespace=\"\",pod=\"\",process=\"vllm\",type=\"gpu\"} 2147483648"
    ));
}

/// The sampler's cost per tick, against its floor: reading the same processes' identities from
/// /proc (the join does that plus the ancestor walk and the family updates). 8 GPUs with 16
/// processes each, every process a child of one of 8 servers. Run with
/// `cargo test -p llm-observer --release --lib tick_cost -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn tick_cost_against_proc_read_floor() {
    let p = FakeProc::new("gpu-bench");
    let serving = Arc::new(Mutex::new(ServingRegistry::default()));
    let mut snap = GpuSnapshot::default();
    for g in 0..8u32 {
        let server = 1000 + g;
        p.put(
            server,
            1,
            "python3",
            "python3|-m|sglang.launch_server|",
            5,
            "0::/\n",
        );
        let info = process::read(&p.0, server).unwrap();
        serving
            .lock()
            .unwrap()
            .serve(&info, &info.name, &Place::default());
        snap.devices
            .push(device(&g.to_string(), GIB, 80 * GIB, Some(0.5), Some(1.0)));
        for k in 0..16u32 {
            let pid = 2000 + g * 16 + k;
            p.put(
                pid,
                server,
                "sglang::schedul",
                "sglang::scheduler_TP0 ",
                6,
                "0::/\n",
            );
            snap.processes
                .push(proc_on(&g.to_string(), pid, GIB, Some(0.25)));
        }
    }
    let metrics = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    let names = Names::new();
    let mut s = GpuSampler::new(Box::new(Fake(snap.clone())), serving, names, &p.0, metrics);
    let rounds = 200;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        s.tick();
    }
    let tick = t.elapsed() / rounds;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        for gp in &snap.processes {
            std::hint::black_box(process::read(&p.0, gp.pid));
        }
    }
    let floor = t.elapsed() / rounds;
    println!(
        "GPU sampler tick (8 GPUs x 16 processes): {tick:?}; /proc identity floor {floor:?}; ratio {:.2}",
        tick.as_secs_f64() / floor.as_secs_f64()
    );
}
