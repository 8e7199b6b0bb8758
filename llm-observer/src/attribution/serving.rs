//! The serving unit: who GPU memory belongs to. The process that accepts HTTP is often not the one
//! holding the GPU (Ollama's runner, vLLM's EngineCore and workers, TGI's shards, SGLang's
//! schedulers), so a GPU process joins, in this order:
//! 1. the server whose container it shares (when it runs in a container and a server does);
//! 2. else the nearest ancestor that served requests (itself included);
//! 3. else nobody: it stands for itself (its own name and place).
//!
//! A unit's labels are those of its server's request series (`process`, `container`, `pod`,
//! `namespace`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Place;
use super::gpu::GpuSnapshot;
use super::names::Names;
use super::process::{self, ProcessInfo};

/// Servers tracked at once.
const MAX_SERVERS: usize = 4096;
/// Longest parent chain walked from a GPU process.
const MAX_DEPTH: usize = 64;

/// Label values of one unit: `process`, `container`, `pod`, `namespace`.
pub type UnitLabels = [String; 4];

fn labels(process: &str, p: &Place) -> UnitLabels {
    [
        process.to_owned(),
        p.container.clone(),
        p.pod.clone(),
        p.namespace.clone(),
    ]
}

#[derive(Debug, Clone)]
struct Server {
    start_time: u64,
    container: Option<String>,
    labels: UnitLabels,
}

/// Processes seen serving LLM requests (server view), by tgid.
#[derive(Debug, Default)]
pub struct ServingRegistry {
    servers: HashMap<u32, Server>,
}

impl ServingRegistry {
    /// `info` served a request labelled `process` at `place`.
    pub fn serve(&mut self, info: &ProcessInfo, process: &str, place: &Place) {
        if self.servers.len() >= MAX_SERVERS && !self.servers.contains_key(&info.tgid) {
            return;
        }
        self.servers.insert(
            info.tgid,
            Server {
                start_time: info.start_time,
                container: info.cgroup.container.as_ref().map(|(_, id)| id.clone()),
                labels: labels(process, place),
            },
        );
    }

    pub fn forget(&mut self, tgid: u32) {
        self.servers.remove(&tgid);
    }

    fn server(&self, tgid: u32, start_time: u64) -> Option<&Server> {
        self.servers
            .get(&tgid)
            .filter(|s| s.start_time == start_time)
    }

    /// The unit of the GPU process `info` (see the module doc).
    pub fn unit_of(&self, proc_root: &Path, info: &ProcessInfo, names: &Names) -> UnitLabels {
        if let Some((_, id)) = &info.cgroup.container {
            let mut same: Vec<(&u32, &Server)> = self
                .servers
                .iter()
                .filter(|(_, s)| s.container.as_ref() == Some(id))
                .collect();
            same.sort_by_key(|(t, _)| **t);
            if let Some((_, s)) = same.first() {
                return s.labels.clone();
            }
        }
        let (mut tgid, mut start, mut ppid) = (info.tgid, info.start_time, info.ppid);
        for _ in 0..MAX_DEPTH {
            if let Some(s) = self.server(tgid, start) {
                return s.labels.clone();
            }
            if ppid <= 1 {
                break;
            }
            let Some((pp, st)) =
                std::fs::read_to_string(proc_root.join(ppid.to_string()).join("stat"))
                    .ok()
                    .and_then(|t| process::parse_stat(&t))
            else {
                break;
            };
            (tgid, start, ppid) = (ppid, st, pp);
        }
        labels(&info.name, &names.place(&info.cgroup))
    }
}

/// One tick's per-process GPU readings joined to serving units.
#[derive(Debug, Default, PartialEq)]
pub struct Joined {
    /// (gpu, unit) → (memory bytes, SM utilization ratio; `None` when no process had a sample).
    pub per_gpu: BTreeMap<(String, UnitLabels), (u64, Option<f64>)>,
    /// unit → GPU memory over all GPUs (for `llm_memory_usage_bytes{type="gpu"}`).
    pub memory: BTreeMap<UnitLabels, u64>,
}

/// Joins `snap`'s processes to units; processes already gone are left out.
pub fn join(
    snap: &GpuSnapshot,
    registry: &ServingRegistry,
    proc_root: &Path,
    names: &Names,
) -> Joined {
    let mut out = Joined::default();
    let mut seen: HashMap<u32, Option<UnitLabels>> = HashMap::new();
    for p in &snap.processes {
        let unit = seen
            .entry(p.pid)
            .or_insert_with(|| {
                let info = process::read(proc_root, p.pid)?;
                Some(registry.unit_of(proc_root, &info, names))
            })
            .clone();
        let Some(unit) = unit else { continue };
        let bytes = p.memory_bytes.unwrap_or(0);
        let e = out
            .per_gpu
            .entry((p.gpu.clone(), unit.clone()))
            .or_insert((0, None));
        e.0 += bytes;
        if let Some(u) = p.sm_utilization_ratio {
            e.1 = Some(e.1.unwrap_or(0.0) + u);
        }
        *out.memory.entry(unit).or_insert(0) += bytes;
    }
    out
}
