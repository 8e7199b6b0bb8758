//! The GPU sampler: every `--gpu-interval` a [`GpuSource`] reading, joined to serving units
//! (`attribution::serving`), replaces the GPU families. Runs on its own thread: NVML calls block.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::attribution::gpu::GpuSource;
use crate::attribution::names::Names;
use crate::attribution::nvml::{self, NvmlSource};
use crate::attribution::serving::{self, ServingRegistry};
use crate::sinks::Metrics;

pub struct GpuSampler {
    source: Box<dyn GpuSource>,
    serving: Arc<Mutex<ServingRegistry>>,
    names: Arc<Names>,
    proc_root: PathBuf,
    metrics: Arc<Metrics>,
}

impl GpuSampler {
    pub fn new(
        source: Box<dyn GpuSource>,
        serving: Arc<Mutex<ServingRegistry>>,
        names: Arc<Names>,
        proc_root: &Path,
        metrics: Arc<Metrics>,
    ) -> Self {
        GpuSampler {
            source,
            serving,
            names,
            proc_root: proc_root.to_owned(),
            metrics,
        }
    }

    /// One sample: read, join, publish.
    pub fn tick(&mut self) {
        let snap = self.source.sample();
        let joined = {
            let reg = self.serving.lock().unwrap_or_else(|e| e.into_inner());
            serving::join(&snap, &reg, &self.proc_root, &self.names)
        };
        self.metrics.gpu().update(&snap, &joined);
        self.metrics.set_gpu_memory(joined.memory);
    }
}

/// Loads NVML (`lib` or the loader's paths) and starts sampling every `interval`; without it,
/// logs one info line, counts the reason and exports `llm_observer_nvml_available 0`.
pub fn start(
    lib: Option<&Path>,
    interval: Duration,
    serving: Arc<Mutex<ServingRegistry>>,
    names: Arc<Names>,
    proc_root: &Path,
    metrics: Arc<Metrics>,
) {
    let gpu = metrics.gpu();
    let source = match NvmlSource::open(lib) {
        Ok(s) => s,
        Err(e) => {
            let reason = nvml::reason(&e);
            gpu.errors.with_label_values(&[reason.as_str()]).inc();
            gpu.nvml_available.set(0);
            log::info!("GPU: NVML not available ({e}); GPU families are not exported");
            return;
        }
    };
    log::info!(
        "GPU: NVML loaded ({}), sampling every {interval:?}",
        source.describe()
    );
    gpu.nvml_available.set(1);
    let mut sampler = GpuSampler::new(Box::new(source), serving, names, proc_root, metrics);
    let spawned = std::thread::Builder::new()
        .name("gpu-sampler".into())
        .spawn(move || {
            loop {
                sampler.tick();
                std::thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        log::warn!("GPU: cannot start the sampler thread: {e}");
    }
}

#[cfg(test)]
#[path = "gpu_sampler_tests.rs"]
mod tests;
