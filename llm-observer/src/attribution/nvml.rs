//! [`GpuSource`] over NVML (`nvml-wrapper`; `libnvidia-ml.so.1` is dlopened at run time, from the
//! loader's usual paths or `--nvml-lib`). Every failed query is an error reason for the tick,
//! never a panic; a process list entry or a device that cannot be read is left out.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::gpu::{GpuDevice, GpuErrorReason, GpuProcess, GpuSnapshot, GpuSource};

/// The bounded reason of an NVML error.
pub fn reason(e: &NvmlError) -> GpuErrorReason {
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            GpuErrorReason::LibraryMissing
        }
        NvmlError::DriverNotLoaded => GpuErrorReason::DriverNotLoaded,
        NvmlError::NoPermission => GpuErrorReason::NoPermission,
        NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound => {
            GpuErrorReason::SymbolMissing
        }
        NvmlError::LibRmVersionMismatch => GpuErrorReason::DriverMismatch,
        NvmlError::GpuLost => GpuErrorReason::GpuLost,
        NvmlError::NotSupported => GpuErrorReason::NotSupported,
        _ => GpuErrorReason::Other,
    }
}

pub struct NvmlSource {
    nvml: Nvml,
    /// Last process-utilization timestamp seen per device (µs), so each tick reads new samples.
    last_seen: HashMap<String, u64>,
}

impl NvmlSource {
    /// Loads NVML from `lib` or the loader's default paths.
    pub fn open(lib: Option<&Path>) -> Result<NvmlSource, NvmlError> {
        let nvml = match lib {
            Some(p) => Nvml::builder().lib_path(OsStr::new(p)).init()?,
            None => Nvml::init()?,
        };
        Ok(NvmlSource {
            nvml,
            last_seen: HashMap::new(),
        })
    }

    /// The driver's version and the number of GPUs, for the start-up log line.
    pub fn describe(&self) -> String {
        let version = self.nvml.sys_driver_version().unwrap_or_default();
        let count = self.nvml.device_count().unwrap_or(0);
        format!("driver {version}, {count} GPU(s)")
    }
}

struct Tick<'a> {
    snap: &'a mut GpuSnapshot,
}

impl Tick<'_> {
    fn ok<T>(&mut self, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            // Absent data is not a failure (an empty MIG slot, no samples on an idle GPU).
            Err(NvmlError::NotFound) => None,
            Err(e) => {
                self.snap.errors.push(reason(&e).as_str());
                None
            }
        }
    }
}

fn used(m: &UsedGpuMemory) -> Option<u64> {
    match m {
        UsedGpuMemory::Used(b) => Some(*b),
        UsedGpuMemory::Unavailable => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whole,
    /// A GPU in MIG mode: its processes are read through its instances.
    MigParent,
    MigInstance,
}

/// Reads one device (or MIG instance) into the tick's snapshot.
fn device(
    last_seen: &mut HashMap<String, u64>,
    t: &mut Tick<'_>,
    d: &Device<'_>,
    gpu: String,
    kind: Kind,
) {
    let mig = kind == Kind::MigInstance;
    {
        let mem = t.ok(d.memory_info());
        let dev = GpuDevice {
            uuid: t.ok(d.uuid()).unwrap_or_default(),
            name: t.ok(d.name()).unwrap_or_default(),
            memory_used_bytes: mem.as_ref().map(|m| m.used),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            // Device-level utilization, power and energy belong to the whole GPU, not a MIG slot.
            utilization_ratio: if mig {
                None
            } else {
                t.ok(d.utilization_rates())
                    .map(|u| f64::from(u.gpu) / 100.0)
            },
            power_watts: if mig {
                None
            } else {
                t.ok(d.power_usage()).map(|mw| f64::from(mw) / 1000.0)
            },
            energy_joules: if mig {
                None
            } else {
                t.ok(d.total_energy_consumption())
                    .map(|mj| mj as f64 / 1000.0)
            },
            gpu: gpu.clone(),
        };
        t.snap.devices.push(dev);
        if kind == Kind::MigParent {
            return;
        }
        let mut memory: HashMap<u32, Option<u64>> = HashMap::new();
        for list in [
            d.running_compute_processes(),
            d.running_graphics_processes(),
            d.mps_running_compute_processes(),
        ] {
            for p in t.ok(list).unwrap_or_default() {
                let e = memory.entry(p.pid).or_insert(None);
                *e = (*e).max(used(&p.used_gpu_memory));
            }
        }
        // Per-process utilization is not supported on MIG instances.
        let util: Option<HashMap<u32, f64>> = if mig {
            None
        } else {
            let last = last_seen.get(&gpu).copied();
            match d.process_utilization_stats(last) {
                Ok(samples) => {
                    let mut sum: HashMap<u32, (f64, u32)> = HashMap::new();
                    for s in &samples {
                        let e = sum.entry(s.pid).or_insert((0.0, 0));
                        *e = (e.0 + f64::from(s.sm_util), e.1 + 1);
                    }
                    if let Some(max) = samples.iter().map(|s| s.timestamp).max() {
                        last_seen.insert(gpu.clone(), max);
                    }
                    Some(
                        sum.into_iter()
                            .map(|(pid, (total, n))| (pid, total / f64::from(n) / 100.0))
                            .collect(),
                    )
                }
                // No samples since `last`: every process idle.
                Err(NvmlError::NotFound) => Some(HashMap::new()),
                Err(e) => {
                    t.snap.errors.push(reason(&e).as_str());
                    None
                }
            }
        };
        let mut pids: Vec<u32> = memory.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            t.snap.processes.push(GpuProcess {
                gpu: gpu.clone(),
                pid,
                memory_bytes: memory[&pid],
                sm_utilization_ratio: util.as_ref().map(|u| u.get(&pid).copied().unwrap_or(0.0)),
            });
        }
    }
}

impl GpuSource for NvmlSource {
    fn sample(&mut self) -> GpuSnapshot {
        let mut snap = GpuSnapshot::default();
        let mut t = Tick { snap: &mut snap };
        let nvml = &self.nvml;
        let count = t.ok(nvml.device_count()).unwrap_or(0);
        for i in 0..count {
            let Some(d) = t.ok(nvml.device_by_index(i)) else {
                continue;
            };
            let index = t.ok(d.index()).unwrap_or(i);
            // Processes on a MIG instance are listed only through its own handle.
            let mig_on = matches!(d.mig_mode(), Ok(m) if m.current == 1);
            if mig_on {
                let slots = t.ok(d.mig_device_count()).unwrap_or(0);
                for slot in 0..slots {
                    if let Some(m) = t.ok(d.mig_device_by_index(slot)) {
                        device(
                            &mut self.last_seen,
                            &mut t,
                            &m,
                            format!("{index}/{slot}"),
                            Kind::MigInstance,
                        );
                    }
                }
            }
            let kind = if mig_on { Kind::MigParent } else { Kind::Whole };
            device(&mut self.last_seen, &mut t, &d, index.to_string(), kind);
        }
        snap
    }
}
