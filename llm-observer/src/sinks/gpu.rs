//! GPU families: per device (memory, utilization, power, energy) and per serving unit (memory and
//! SM utilization joined by `attribution::serving`), plus NVML's own health. Definitions in
//! docs/metrics.md.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec};

use super::registry::Reg;
use crate::attribution::gpu::{GpuErrorReason, GpuSnapshot};
use crate::attribution::serving::Joined;

pub const UNIT_LABELS: &[&str] = &["gpu", "process", "container", "pod", "namespace"];

pub struct GpuFamilies {
    pub info: IntGaugeVec,
    pub device_memory_used: IntGaugeVec,
    pub device_memory_total: IntGaugeVec,
    pub device_utilization: GaugeVec,
    pub power: GaugeVec,
    pub energy: CounterVec,
    pub memory_used: IntGaugeVec,
    pub utilization: GaugeVec,
    pub nvml_available: IntGauge,
    pub errors: IntCounterVec,
    /// Last absolute energy reading per gpu, to add only what is new to the counter.
    last_energy: Mutex<HashMap<String, f64>>,
}

fn bytes(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl GpuFamilies {
    pub(crate) fn register(reg: &mut Reg) -> prometheus::Result<Self> {
        let g = &["gpu"];
        let f = GpuFamilies {
            info: reg.gauge_vec(
                "llm_gpu_info",
                "GPUs and MIG instances NVML reports (value 1); gpu is the NVML index, or index/slot for a MIG instance.",
                &["gpu", "uuid", "name"],
            )?,
            device_memory_used: reg.gauge_vec(
                "llm_gpu_device_memory_used_bytes",
                "GPU memory in use on the device (all processes and the driver's reservation), bytes.",
                g,
            )?,
            device_memory_total: reg.gauge_vec(
                "llm_gpu_device_memory_total_bytes",
                "GPU memory installed on the device (or assigned to the MIG instance), bytes.",
                g,
            )?,
            device_utilization: reg.float_gauge_vec(
                "llm_gpu_device_utilization_ratio",
                "Fraction of the driver's last sample period during which a kernel ran on the GPU (0 to 1).",
                g,
            )?,
            power: reg.float_gauge_vec(
                "llm_gpu_power_watts",
                "GPU power draw, watts.",
                g,
            )?,
            energy: reg.float_counter_vec(
                "llm_gpu_energy_joules_total",
                "GPU energy consumed since the driver loaded, joules (per output token: divide its rate by llm_tokens_generated_total's).",
                g,
            )?,
            memory_used: reg.gauge_vec(
                "llm_gpu_memory_used_bytes",
                "GPU memory held by the processes of a serving unit (the server, its descendants and its container), per GPU, bytes.",
                UNIT_LABELS,
            )?,
            utilization: reg.float_gauge_vec(
                "llm_gpu_utilization_ratio",
                "SM utilization of a serving unit's processes since the previous sample, per GPU, summed over processes (0 to 1; absent on MIG).",
                UNIT_LABELS,
            )?,
            nvml_available: reg.gauge(
                "llm_observer_nvml_available",
                "1 when NVML was loaded and GPUs are sampled, 0 otherwise.",
            )?,
            errors: reg.counter_vec(
                "llm_observer_gpu_errors_total",
                "NVML loads and queries that failed, by reason.",
                &["reason"],
            )?,
            last_energy: Mutex::new(HashMap::new()),
        };
        for r in GpuErrorReason::ALL {
            f.errors.with_label_values(&[r.as_str()]);
        }
        Ok(f)
    }

    /// One tick: device readings and the joined per-unit readings replace the previous ones (a
    /// process or GPU that went away drops out).
    pub fn update(&self, snap: &GpuSnapshot, joined: &Joined) {
        for r in &snap.errors {
            self.errors.with_label_values(&[r]).inc();
        }
        for fam in [
            &self.info,
            &self.device_memory_used,
            &self.device_memory_total,
        ] {
            fam.reset();
        }
        for fam in [&self.device_utilization, &self.power] {
            fam.reset();
        }
        let mut last = self.last_energy.lock().unwrap_or_else(|e| e.into_inner());
        for d in &snap.devices {
            let g = [d.gpu.as_str()];
            self.info
                .with_label_values(&[d.gpu.as_str(), &d.uuid, &d.name])
                .set(1);
            if let Some(v) = d.memory_used_bytes {
                self.device_memory_used.with_label_values(&g).set(bytes(v));
            }
            if let Some(v) = d.memory_total_bytes {
                self.device_memory_total.with_label_values(&g).set(bytes(v));
            }
            if let Some(v) = d.utilization_ratio {
                self.device_utilization.with_label_values(&g).set(v);
            }
            if let Some(v) = d.power_watts {
                self.power.with_label_values(&g).set(v);
            }
            if let Some(total) = d.energy_joules {
                let prev = last.insert(d.gpu.clone(), total);
                // A lower reading means the driver reloaded: everything it reports is new.
                let delta = match prev {
                    Some(p) if total >= p => total - p,
                    _ => total,
                };
                self.energy.with_label_values(&g).inc_by(delta);
            }
        }
        self.memory_used.reset();
        self.utilization.reset();
        for ((gpu, unit), (mem, util)) in &joined.per_gpu {
            let l = [
                gpu.as_str(),
                unit[0].as_str(),
                unit[1].as_str(),
                unit[2].as_str(),
                unit[3].as_str(),
            ];
            self.memory_used.with_label_values(&l).set(bytes(*mem));
            if let Some(u) = util {
                self.utilization.with_label_values(&l).set(*u);
            }
        }
    }
}
