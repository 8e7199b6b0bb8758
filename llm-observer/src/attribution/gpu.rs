//! What a GPU sampler reports each tick, behind [`GpuSource`] so the join and the families can be
//! tested with a fake; the NVML implementation is [`super::nvml`].

/// One GPU, or one MIG instance of a GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDevice {
    /// The `gpu` label: the NVML index (`"0"`), or `"<index>/<slot>"` for MIG instance `slot`.
    pub gpu: String,
    pub uuid: String,
    pub name: String,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// Fraction of the last sample period with a kernel running (0..=1).
    pub utilization_ratio: Option<f64>,
    pub power_watts: Option<f64>,
    /// Energy since the driver loaded (joules).
    pub energy_joules: Option<f64>,
}

/// GPU use of one process on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuProcess {
    /// The device's `gpu` label.
    pub gpu: String,
    /// Host pid (NVML reports pids in the caller's pid namespace: run with `hostPID`).
    pub pid: u32,
    /// Used GPU memory over its compute, graphics and MPS contexts (the largest of the three
    /// lists' values, as one context appears in several).
    pub memory_bytes: Option<u64>,
    /// SM utilization over the samples since the last tick (0..=1); 0 when the driver had no
    /// sample (idle); `None` where per-process utilization is not supported (MIG).
    pub sm_utilization_ratio: Option<f64>,
}

/// One tick's reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSnapshot {
    pub devices: Vec<GpuDevice>,
    pub processes: Vec<GpuProcess>,
    /// Reasons (`GpuErrorReason::as_str`) of the queries that failed this tick, one entry each.
    pub errors: Vec<&'static str>,
}

/// A GPU sampler.
pub trait GpuSource: Send {
    fn sample(&mut self) -> GpuSnapshot;
}

/// Why NVML could not be used or a query failed, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuErrorReason {
    /// libnvidia-ml.so not found (no driver on this machine, or not mounted into the container).
    LibraryMissing,
    DriverNotLoaded,
    NoPermission,
    /// The library lacks a function this agent calls (driver older than the wrapper expects).
    SymbolMissing,
    /// Library and kernel module versions differ (driver upgraded without a reboot).
    DriverMismatch,
    GpuLost,
    NotSupported,
    Other,
}

impl GpuErrorReason {
    pub const ALL: &[GpuErrorReason] = &[
        GpuErrorReason::LibraryMissing,
        GpuErrorReason::DriverNotLoaded,
        GpuErrorReason::NoPermission,
        GpuErrorReason::SymbolMissing,
        GpuErrorReason::DriverMismatch,
        GpuErrorReason::GpuLost,
        GpuErrorReason::NotSupported,
        GpuErrorReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GpuErrorReason::LibraryMissing => "library_missing",
            GpuErrorReason::DriverNotLoaded => "driver_not_loaded",
            GpuErrorReason::NoPermission => "no_permission",
            GpuErrorReason::SymbolMissing => "symbol_missing",
            GpuErrorReason::DriverMismatch => "driver_mismatch",
            GpuErrorReason::GpuLost => "gpu_lost",
            GpuErrorReason::NotSupported => "not_supported",
            GpuErrorReason::Other => "other",
        }
    }
}
