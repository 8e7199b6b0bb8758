//! Benchmark only: the floor of syscall-tracepoint capture. Attaches the object's `floor_*`
//! programs (each returns at once) to the same tracepoints [`super::Capture::load`] uses, and
//! nothing else, so `cargo xtask bench` can measure what enabling those tracepoints costs every
//! syscall and read the agent's cost against it. The agent itself never calls this.

use aya::{Ebpf, EbpfLoader, programs::TracePoint};

use super::{CaptureError, EBPF_OBJECT, TRACEPOINTS, system};

/// The attached floor programs; dropping it detaches them.
pub struct Floor {
    _ebpf: Ebpf,
    attached: Vec<String>,
}

impl Floor {
    /// Loads the object and attaches `floor_<name>` to every tracepoint of the agent's list, or
    /// only to those named in `only` (e.g. `sys_enter_write`) when it is not empty.
    pub fn attach(only: &[String]) -> Result<Floor, CaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        system::ensure_capture_possible().map_err(CaptureError::Precondition)?;
        system::raise_memlock_rlimit();
        // The floor never reads the ring: keep its memory to one page.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", 4096)
            .load(EBPF_OBJECT)?;
        let mut attached = Vec::new();
        for &(category, name, optional) in TRACEPOINTS {
            if !only.is_empty() && !only.iter().any(|o| o == name) {
                continue;
            }
            if optional && !system::tracepoint_exists(category, name) {
                continue;
            }
            let program = format!("floor_{name}");
            let err = |source| CaptureError::Program {
                name: program.clone(),
                source,
            };
            let prog: &mut TracePoint = ebpf
                .program_mut(&program)
                .ok_or_else(|| {
                    CaptureError::Precondition(format!("program {program} missing from the object"))
                })?
                .try_into()
                .map_err(err)?;
            prog.load().map_err(err)?;
            prog.attach(category, name).map_err(err)?;
            attached.push(format!("{category}:{name}"));
        }
        Ok(Floor {
            _ebpf: ebpf,
            attached,
        })
    }

    /// The tracepoints attached, as `category:name`.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tracepoint the agent attaches has its floor program (and the agent's own), so the
    /// bench measures the floor of exactly the agent's set. The object's symbol table names them.
    #[test]
    fn every_agent_tracepoint_has_a_floor_program() {
        if EBPF_OBJECT.is_empty() {
            eprintln!("skipped: built without the eBPF object (no bpf-linker)");
            return;
        }
        let has = |name: &str| {
            EBPF_OBJECT
                .windows(name.len() + 1)
                .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
        };
        for &(_, name, _) in TRACEPOINTS {
            assert!(has(name), "program {name} missing from the object");
            let floor = format!("floor_{name}");
            assert!(has(&floor), "program {floor} missing from the object");
        }
    }
}
