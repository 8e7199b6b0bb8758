//! Stage 1: load the eBPF programs, attach them, and read their events.
//!
//! The attach mode is syscall tracepoints: present on every kernel we support and the only mode
//! this project requires (kprobes can be compiled out, fentry can be refused; they would only be
//! faster, never needed). [`Capture::load`] checks what it needs first and fails with a message
//! that names what is missing.

pub mod event;
pub mod floor;
pub mod gotls;
pub mod inflight;
pub mod procfs;
pub mod ring;
pub mod system;
mod tgid_bits;
pub mod tls;

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePoint,
};
use llm_observer_common::{
    CONFIG_FLAG_ALL_PROTOCOLS, CONFIG_FLAG_EXIT_BY_LEADER, CONFIG_FLAG_EXIT_REGS_X86_64, Config,
    ConnState, MAX_CAPTURE_PER_CALL, ROLE_CLIENT, ROLE_SERVER, STAT_COUNT, Stat, TrackedFds,
    conn_key,
};
use tgid_bits::TgidBits;

pub use event::{ConnId, DataEvent, DataKind, Direction, Event, EventError, KernelRole};

/// The eBPF object built by build.rs (empty when the build had no bpf-linker).
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llm-observer"));

/// The attach mode this build uses; reported by `check` and in `llm_observer_build_info`.
pub const ATTACH_MODE: &str = "tracepoints";

/// Every tracepoint the capture attaches to: (category, name, program). `optional` ones are
/// skipped with a log line when the kernel lacks them (plain `accept` is absent on some arches).
pub(crate) const TRACEPOINTS: &[(&str, &str, bool)] = &[
    ("syscalls", "sys_enter_connect", false),
    ("syscalls", "sys_exit_connect", false),
    ("sock", "inet_sock_set_state", false),
    ("syscalls", "sys_enter_accept4", false),
    ("syscalls", "sys_exit_accept4", false),
    ("syscalls", "sys_enter_accept", true),
    ("syscalls", "sys_exit_accept", true),
    ("syscalls", "sys_enter_close", false),
    ("sched", "sched_process_exit", false),
    // Fork inheritance; without it a forked child's sockets are simply not captured.
    ("task", "task_newtask", true),
    ("oom", "mark_victim", true),
    ("sched", "sched_process_exec", false),
    ("syscalls", "sys_enter_write", false),
    ("syscalls", "sys_exit_write", false),
    ("syscalls", "sys_enter_writev", false),
    ("syscalls", "sys_exit_writev", false),
    ("syscalls", "sys_enter_sendto", false),
    ("syscalls", "sys_exit_sendto", false),
    ("syscalls", "sys_enter_sendmsg", false),
    ("syscalls", "sys_exit_sendmsg", false),
    ("syscalls", "sys_enter_sendmmsg", false),
    ("syscalls", "sys_exit_sendmmsg", false),
    ("syscalls", "sys_enter_read", false),
    ("syscalls", "sys_exit_read", false),
    ("syscalls", "sys_enter_readv", false),
    ("syscalls", "sys_exit_readv", false),
    ("syscalls", "sys_enter_recvfrom", false),
    ("syscalls", "sys_exit_recvfrom", false),
    ("syscalls", "sys_enter_recvmsg", false),
    ("syscalls", "sys_exit_recvmsg", false),
    ("syscalls", "sys_enter_recvmmsg", false),
    ("syscalls", "sys_exit_recvmmsg", false),
    ("syscalls", "sys_enter_sendfile64", false),
    ("syscalls", "sys_exit_sendfile64", false),
    // dup2 does not exist on every architecture (arm64 has only dup3).
    ("syscalls", "sys_enter_dup2", true),
    ("syscalls", "sys_exit_dup2", true),
    ("syscalls", "sys_enter_dup3", false),
    ("syscalls", "sys_exit_dup3", false),
    // Pipes that may carry MCP over stdio (llm-observer-ebpf/src/pipes.rs); plain `pipe` is
    // absent on arm64.
    ("syscalls", "sys_enter_pipe2", false),
    ("syscalls", "sys_exit_pipe2", false),
    ("syscalls", "sys_enter_pipe", true),
    ("syscalls", "sys_exit_pipe", true),
    // dup and fcntl(F_DUPFD*) of a pipe candidate (the mcp SDK's server moves its wire off 0/1).
    ("syscalls", "sys_enter_dup", false),
    ("syscalls", "sys_exit_dup", false),
    ("syscalls", "sys_enter_fcntl", false),
    ("syscalls", "sys_exit_fcntl", false),
];

/// Capture settings (the CLI's `--ring-bytes`, `--max-capture-bytes`, `--pid`, ...).
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Ring buffer size in bytes (a power of two, ≥ one page).
    pub ring_bytes: u32,
    /// Payload bytes copied per syscall at most; the rest is counted as truncated.
    pub max_bytes_per_call: u32,
    /// Capture only this process.
    pub target_pid: Option<u32>,
    /// Never capture this process (the agent itself).
    pub ignore_pid: Option<u32>,
    /// Copy payloads of non-HTTP connections too (debugging).
    pub all_protocols: bool,
    /// How often the reader drains the ring on its own; data records then wake it only when an
    /// eighth of the ring is waiting. Zero: a wakeup whenever the reader has caught up (the
    /// kernel's adaptive rule; one per record at moderate rates).
    pub poll_interval: Duration,
    /// The longest the reader waits between drains of an idle ring: the interval doubles from
    /// `poll_interval` after each drain that found nothing and drops back at the next record.
    pub idle_poll_interval: Duration,
    /// Capture TLS plaintext through uprobes on OpenSSL/BoringSSL (`--tls`).
    pub tls: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            ring_bytes: 16 * 1024 * 1024,
            max_bytes_per_call: MAX_CAPTURE_PER_CALL,
            target_pid: None,
            ignore_pid: Some(std::process::id()),
            all_protocols: false,
            poll_interval: DEFAULT_POLL_INTERVAL,
            idle_poll_interval: DEFAULT_IDLE_POLL_INTERVAL,
            tls: true,
        }
    }
}

/// The CLI's default `--ring-poll-ms`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// The CLI's default `--ring-idle-poll-ms`.
pub const DEFAULT_IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "this agent was built without its eBPF programs (no bpf-linker at build time); build it with `cargo xtask build`"
    )]
    NoObject,
    #[error("{0}")]
    Precondition(String),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("--ring-bytes must be a power of two ≥ 4096, got {0}")]
    RingSize(u32),
    #[error(transparent)]
    Ring(#[from] ring::RingError),
}

/// Loaded and attached programs plus the maps user space talks to.
pub struct Capture {
    ebpf: Ebpf,
    ring: Option<ring::EventRing>,
    attached: Vec<String>,
    seed_generation: u64,
    poll_interval: Duration,
    idle_poll_interval: Duration,
    seeded_tgids: TgidBits,
    tls: tls::TlsProbes,
}

impl Capture {
    /// Checks privileges and kernel facilities, loads the programs, writes the config and attaches
    /// every tracepoint. Nothing is captured before this returns.
    pub fn load(cfg: &CaptureConfig) -> Result<Capture, CaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        if !cfg.ring_bytes.is_power_of_two() || cfg.ring_bytes < 4096 {
            return Err(CaptureError::RingSize(cfg.ring_bytes));
        }
        system::ensure_capture_possible().map_err(CaptureError::Precondition)?;
        system::raise_memlock_rlimit();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", cfg.ring_bytes)
            .load(EBPF_OBJECT)?;
        let config = Config {
            target_tgid: cfg.target_pid.unwrap_or(0),
            ignore_tgid: cfg.ignore_pid.unwrap_or(0),
            max_bytes_per_call: cfg.max_bytes_per_call.min(MAX_CAPTURE_PER_CALL),
            flags: if cfg.all_protocols {
                CONFIG_FLAG_ALL_PROTOCOLS
            } else {
                0
            } | if system::exit_has_group_dead() {
                0
            } else {
                CONFIG_FLAG_EXIT_BY_LEADER
            } | if cfg!(target_arch = "x86_64") {
                CONFIG_FLAG_EXIT_REGS_X86_64
            } else {
                0
            },
            wake_bytes: if cfg.poll_interval.is_zero() {
                0
            } else {
                cfg.ring_bytes / 8
            },
            // A sixteenth of the ring is kept for the records that are not payload.
            data_limit: cfg.ring_bytes - cfg.ring_bytes / 16,
        };
        {
            let map = ebpf
                .map_mut("CONFIG")
                .ok_or(CaptureError::MissingMap("CONFIG"))?;
            let mut arr: Array<_, Config> =
                Array::try_from(map).map_err(|source| CaptureError::Map {
                    name: "CONFIG",
                    source,
                })?;
            arr.set(0, config, 0).map_err(|source| CaptureError::Map {
                name: "CONFIG",
                source,
            })?;
        }
        let ring = match ebpf.take_map("EVENTS") {
            Some(aya::maps::Map::RingBuf(data)) => ring::EventRing::new(data)?,
            Some(_) => {
                return Err(CaptureError::Precondition(
                    "eBPF map EVENTS is not a ring buffer".into(),
                ));
            }
            None => return Err(CaptureError::MissingMap("EVENTS")),
        };
        let seeded_tgids = ebpf
            .take_map("SEEDED_TGIDS")
            .and_then(TgidBits::new)
            .ok_or(CaptureError::MissingMap("SEEDED_TGIDS"))?;
        let mut attached = Vec::new();
        for &(category, name, optional) in TRACEPOINTS {
            if optional && !system::tracepoint_exists(category, name) {
                log::info!("tracepoint {category}:{name} not present on this kernel; skipped");
                continue;
            }
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| {
                    CaptureError::Precondition(format!("program {name} missing from the object"))
                })?
                .try_into()
                .map_err(|source| CaptureError::Program {
                    name: name.to_owned(),
                    source,
                })?;
            prog.load().map_err(|source| CaptureError::Program {
                name: name.to_owned(),
                source,
            })?;
            prog.attach(category, name)
                .map_err(|source| CaptureError::Program {
                    name: name.to_owned(),
                    source,
                })?;
            attached.push(format!("{category}:{name}"));
        }
        let mut tls = tls::TlsProbes::new(cfg.tls);
        tls.load(&mut ebpf);
        Ok(Capture {
            ebpf,
            ring: Some(ring),
            attached,
            seed_generation: 0,
            poll_interval: cfg.poll_interval,
            idle_poll_interval: cfg.idle_poll_interval.max(cfg.poll_interval),
            seeded_tgids,
            tls,
        })
    }

    /// Attaches the TLS probes to the libraries and executables of the host and of every running
    /// process (see [`tls`]). Their next SSL call is captured.
    pub fn scan_tls(&mut self, proc_root: &Path) {
        self.tls.scan_existing(&mut self.ebpf, proc_root);
    }

    /// A process exec'd: its program and libraries are looked at for TLS functions.
    pub fn tls_exec(&mut self, tgid: u32) {
        self.tls.exec(tgid);
    }

    /// Rescans exec'd processes that are due (cheap when none is).
    pub fn tls_due(&mut self) {
        self.tls.run_due(&mut self.ebpf);
    }

    /// When [`Capture::tls_due`] next has work; `None` when no rescan is waiting.
    pub fn tls_next_due(&self) -> Option<std::time::Instant> {
        self.tls.next_due()
    }

    pub fn tls_stats(&self) -> tls::TlsStats {
        self.tls.stats()
    }

    /// The tracepoints attached, as `category:name`.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// How often the reader must drain the ring without a wakeup (zero: it is woken for every
    /// record once it has caught up).
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The longest wait between drains of an idle ring (at least [`Capture::poll_interval`]).
    pub fn idle_poll_interval(&self) -> Duration {
        self.idle_poll_interval
    }

    /// Takes the event ring (once) for the reader task.
    pub fn take_ring(&mut self) -> Option<ring::EventRing> {
        self.ring.take()
    }

    /// Starts tracking sockets that existed before the programs were attached: they are captured
    /// from their next I/O. Call after [`Capture::load`] so no socket falls between the two.
    /// Returns the sockets seeded.
    pub fn seed_existing(
        &mut self,
        proc_root: &Path,
        only: Option<u32>,
    ) -> Vec<procfs::ExistingSocket> {
        let skip = std::process::id();
        let sockets = procfs::existing_sockets(proc_root, only, skip);
        let seeded_tgids = &mut self.seeded_tgids;
        let Some(map) = self.ebpf.map_mut("CONNS") else {
            return Vec::new();
        };
        let Ok(mut conns) = HashMap::<_, u64, ConnState>::try_from(map) else {
            return Vec::new();
        };
        let generation = system::monotonic_ns();
        self.seed_generation = generation;
        let mut seeded = Vec::new();
        for s in sockets {
            let key = conn_key(s.tgid, s.fd);
            // A socket the kernel already tracks (accepted/connected after attach) keeps its state.
            if conns.get(&key, 0).is_ok() {
                continue;
            }
            let role = if s.server { ROLE_SERVER } else { ROLE_CLIENT };
            let state = ConnState::seeded(generation, role);
            // The probes look at a process's sockets only once its bit is set: before the insert.
            if !seeded_tgids.set(s.tgid, true) {
                continue;
            }
            if conns.insert(key, state, 0).is_ok() {
                seeded.push(s);
            }
        }
        seeded
    }

    /// The generation given to sockets seeded by the last [`Capture::seed_existing`].
    pub fn seed_generation(&self) -> u64 {
        self.seed_generation
    }

    /// Stops capturing a connection (not TCP after all, filtered out by `--port`, gone with its
    /// process, ...). Only that generation: if the fd has meanwhile been reused for a new
    /// connection, the new one stays tracked.
    pub fn untrack(&mut self, id: ConnId) {
        if let Some(map) = self.ebpf.map_mut("CONNS")
            && let Ok(mut conns) = HashMap::<_, u64, ConnState>::try_from(map)
        {
            let key = conn_key(id.tgid, id.fd);
            if conns
                .get(&key, 0)
                .is_ok_and(|s| s.generation == id.generation)
            {
                let _ = conns.remove(&key);
            }
        }
    }

    /// Saves the arguments of accept and read/write-family calls that were already blocked when
    /// the probes attached (see [`inflight`]), so their exits are captured like any other. Call
    /// after [`Capture::seed_existing`]: a blocked read is seeded only on a tracked socket. Returns
    /// how many calls were seeded.
    pub fn seed_inflight(&mut self, proc_root: &Path, only: Option<u32>, skip: u32) -> usize {
        let mut seeded = 0;
        for (tgid, tid) in inflight::threads(proc_root, only, skip) {
            let Some(b) = inflight::blocked(proc_root, tgid, tid) else {
                continue;
            };
            let pid_tgid = (u64::from(tgid) << 32) | u64::from(tid);
            let map = match inflight::kind_of(b.nr) {
                Some(inflight::Kind::Accept) => {
                    let len = inflight::read_u32(tgid, b.args[2]).unwrap_or(0);
                    let args = inflight::accept_args(&b, len);
                    self.seed_map("ACTIVE_ACCEPT", pid_tgid, args)
                }
                Some(inflight::Kind::Io(sys)) => {
                    let Some(generation) = self.tracked_generation(tgid, b.args[0] as i32) else {
                        continue;
                    };
                    let args = inflight::io_args(&b, sys, generation);
                    self.seed_map("ACTIVE_IO", pid_tgid, args)
                }
                None => continue,
            };
            if !map {
                continue;
            }
            // Still blocked in the same call? If it returned meanwhile, its exit found no entry
            // or consumed this one; either way a leftover must not meet a later call.
            if inflight::blocked(proc_root, tgid, tid) == Some(b) {
                seeded += 1;
            } else {
                self.unseed_map::<llm_observer_common::AcceptArgs>("ACTIVE_ACCEPT", pid_tgid);
                self.unseed_map::<llm_observer_common::IoArgs>("ACTIVE_IO", pid_tgid);
            }
        }
        seeded
    }

    fn tracked_generation(&self, tgid: u32, fd: i32) -> Option<u64> {
        let map = self.ebpf.map("CONNS")?;
        let conns = HashMap::<_, u64, ConnState>::try_from(map).ok()?;
        conns.get(&conn_key(tgid, fd), 0).ok().map(|s| s.generation)
    }

    /// Inserts `value` unless the thread's enter probe already saved its own.
    fn seed_map<V: aya::Pod>(&mut self, name: &str, key: u64, value: V) -> bool {
        let Some(map) = self.ebpf.map_mut(name) else {
            return false;
        };
        let Ok(mut m) = HashMap::<_, u64, V>::try_from(map) else {
            return false;
        };
        // BPF_NOEXIST: an entry there came from a real enter probe, which knows better.
        m.insert(key, value, 1).is_ok()
    }

    fn unseed_map<V: aya::Pod>(&mut self, name: &str, key: u64) {
        if let Some(map) = self.ebpf.map_mut(name)
            && let Ok(mut m) = HashMap::<_, u64, V>::try_from(map)
        {
            let _ = m.remove(&key);
        }
    }

    /// Removes kernel connection entries of processes that no longer exist (their exit event was
    /// lost, or an fd passed to another process was never closed there): the map is a plain hash,
    /// so nothing else would. Returns (entries removed, entries left).
    pub fn sweep_dead(&mut self, proc_root: &Path) -> (usize, usize) {
        let Some(map) = self.ebpf.map_mut("CONNS") else {
            return (0, 0);
        };
        let Ok(mut conns) = HashMap::<_, u64, ConnState>::try_from(map) else {
            return (0, 0);
        };
        let keys: Vec<u64> = conns.keys().flatten().collect();
        let mut alive = std::collections::HashMap::new();
        let mut removed = 0;
        for key in &keys {
            let tgid = (key >> 32) as u32;
            let live = *alive
                .entry(tgid)
                .or_insert_with(|| procfs::is_process(proc_root, tgid));
            if !live && conns.remove(key).is_ok() {
                removed += 1;
            }
        }
        // Their seeded bits (the kernel clears its own at exit).
        for (&tgid, &live) in &alive {
            if !live {
                self.seeded_tgids.set(tgid, false);
            }
        }
        // The per-process fd lists (fork inheritance) of the same dead processes.
        if let Some(map) = self.ebpf.map_mut("TGID_FDS")
            && let Ok(mut lists) = HashMap::<_, u32, TrackedFds>::try_from(map)
        {
            let tgids: Vec<u32> = lists.keys().flatten().collect();
            for tgid in tgids {
                let live = *alive
                    .entry(tgid)
                    .or_insert_with(|| procfs::is_process(proc_root, tgid));
                if !live {
                    let _ = lists.remove(&tgid);
                }
            }
        }
        (removed, keys.len() - removed)
    }

    /// Whether the kernel's per-process bit (`TRACKED_TGIDS`) is set for `tgid`: the process holds
    /// (or may hold) something the kernel tracks, so its data syscalls pay the map lookups.
    /// `None` when the map cannot be read.
    pub fn tgid_marked(&self, tgid: u32) -> Option<bool> {
        let (word, bit) = llm_observer_common::tgid_bit(tgid);
        let map = self.ebpf.map("TRACKED_TGIDS")?;
        let arr = aya::maps::Array::<_, u64>::try_from(map).ok()?;
        arr.get(&word, 0).ok().map(|w| w & bit != 0)
    }

    /// The kernel's counters, summed over CPUs.
    pub fn kernel_stats(&self) -> KernelStats {
        let mut out = [0u64; STAT_COUNT as usize];
        if let Some(map) = self.ebpf.map("STATS")
            && let Ok(arr) = PerCpuArray::<_, u64>::try_from(map)
        {
            for (i, slot) in out.iter_mut().enumerate() {
                if let Ok(values) = arr.get(&(i as u32), 0) {
                    *slot = values.iter().sum();
                }
            }
        }
        KernelStats {
            lost_events: out[Stat::LostEvents as usize],
            lost_control_events: out[Stat::LostControlEvents as usize],
            truncated_bytes: out[Stat::TruncatedBytes as usize],
            other_protocol_bytes: out[Stat::OtherProtoBytes as usize],
            conn_map_full: out[Stat::ConnMapFull as usize],
            inflight_map_full: out[Stat::InflightMapFull as usize],
            fork_list_full: out[Stat::ForkListFull as usize],
            tls_unmatched_bytes: out[Stat::TlsUnmatchedBytes as usize],
            tls_record_binds: out[Stat::TlsRecordBinds as usize],
        }
    }

    /// Raw fd of the ring (for diagnostics).
    pub fn ring_fd(&self) -> Option<i32> {
        self.ring.as_ref().map(|r| r.as_fd().as_raw_fd())
    }
}

/// Counters the kernel side keeps, summed over CPUs (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub lost_events: u64,
    pub lost_control_events: u64,
    pub truncated_bytes: u64,
    pub other_protocol_bytes: u64,
    pub conn_map_full: u64,
    pub inflight_map_full: u64,
    pub fork_list_full: u64,
    pub tls_unmatched_bytes: u64,
    pub tls_record_binds: u64,
}
