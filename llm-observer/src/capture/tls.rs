//! TLS plaintext capture, user side: finds the OpenSSL/BoringSSL code processes run and attaches
//! the SSL uprobes (llm-observer-ebpf `tls.rs`) once per file, for all processes.
//!
//! A uprobe belongs to a file (device, inode), not to a process: once a library is probed, every
//! process that maps it — already running, or started later, in any container — runs the probes
//! without anything more from us. So discovery only has to find each file once:
//! - at start: the usual library directories (`libssl.so*`), and every process's
//!   `/proc/<pid>/maps` (`libssl.so*` from wherever it is loaded, containers included through
//!   `/proc/<pid>/root`) and executable (NodeSource's `node` exports the `SSL_*` functions itself);
//! - after each `execve` (the kernel's exec event): the new program's executable at once, and its
//!   maps again a few times during its first seconds, as its loader and `dlopen` map libraries.
//!
//! An executable without OpenSSL may be a Go program: its `crypto/tls` gets the Go probes
//! (`gotls.rs`), found the same way.
//!
//! Attaching reads the file's symbol table in the agent; the observed programs never wait for it.

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachPoint, UProbeScope},
    },
};

use super::gotls::GoInspect;

/// Entry programs by the function they probe. `SSL_do_handshake` also covers `SSL_connect` and
/// `SSL_accept`, which call it.
const ENTRIES: &[(&str, &str, bool)] = &[
    // (symbol, program, required)
    ("SSL_write", "ssl_write", true),
    ("SSL_read", "ssl_read", true),
    ("SSL_write_ex", "ssl_write_ex", false),
    ("SSL_read_ex", "ssl_read_ex", false),
    ("SSL_do_handshake", "ssl_handshake", false),
];

/// The return program, attached to each probed function.
const RETURN: &str = "ssl_ret";

/// `SSL_free`'s entry program.
const FREE: &str = "ssl_free";

/// Every program of the TLS capture (loaded once at start).
pub const PROGRAMS: &[&str] = &[
    "ssl_write",
    "ssl_read",
    "ssl_write_ex",
    "ssl_read_ex",
    "ssl_handshake",
    RETURN,
    FREE,
];

/// Directories searched for `libssl.so*` at start (the host's own libraries, probed before any
/// process maps them, so even the first short-lived client is captured).
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// When a new program's maps are read again after its exec: its loader maps `DT_NEEDED`
/// libraries within milliseconds, interpreters `dlopen` theirs (Python's `_ssl`) after their
/// imports, which can take seconds.
const RESCAN_AFTER: &[Duration] = &[
    Duration::from_millis(0),
    Duration::from_millis(50),
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(10),
];

/// Most exec'd processes waiting for a rescan (an exec storm must not grow memory).
const MAX_PENDING: usize = 4096;

/// At most one attach-failure log line per this long (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters exported as `llm_observer_tls_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// Files (libraries, executables) with probes attached.
    pub libraries: u64,
    /// Uprobes attached (entry and return probes).
    pub probes: u64,
    /// Files that have TLS functions but could not be probed.
    pub attach_failures: u64,
}

/// Discovery and attach state.
pub struct TlsProbes {
    enabled: bool,
    /// The Go programs loaded (Go executables are probed).
    go: bool,
    proc_root: PathBuf,
    /// (dev, inode, ctime, size) of every file already looked at: probed, failed, or without SSL
    /// functions.
    seen: HashSet<(u64, u64, i64, i64, u64)>,
    /// Exec'd processes whose maps are read again: (tgid, exec time, next RESCAN_AFTER index).
    pending: Vec<(u32, Instant, usize)>,
    stats: TlsStats,
    last_log: Option<Instant>,
    suppressed: u64,
    skip_pid: u32,
}

/// What attaching to one file did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Attached(u64),
    /// No `SSL_write`/`SSL_read` in it (most executables).
    NotTls,
    Failed(String),
}

impl TlsProbes {
    /// `enabled`: the `--tls` flag; without it, nothing is ever attached.
    pub fn new(enabled: bool) -> TlsProbes {
        TlsProbes {
            enabled,
            go: false,
            proc_root: PathBuf::from("/proc"),
            seen: HashSet::new(),
            pending: Vec::new(),
            stats: TlsStats::default(),
            last_log: None,
            suppressed: 0,
            skip_pid: std::process::id(),
        }
    }

    pub fn stats(&self) -> TlsStats {
        self.stats
    }

    /// Loads the TLS programs. On failure TLS capture is off (logged, counted); the syscall
    /// capture goes on.
    pub fn load(&mut self, ebpf: &mut Ebpf) {
        if !self.enabled {
            return;
        }
        if let Err(e) = load_uprobes(ebpf, PROGRAMS) {
            log::warn!("TLS capture off: {e}");
            self.stats.attach_failures += 1;
            self.enabled = false;
            return;
        }
        // Apart: a failure here leaves OpenSSL capture on.
        match load_uprobes(ebpf, super::gotls::PROGRAMS) {
            Ok(()) => self.go = true,
            Err(e) => {
                log::warn!("Go TLS capture off: {e}");
                self.stats.attach_failures += 1;
            }
        }
    }

    /// Start-up discovery: library directories, then every running process.
    pub fn scan_existing(&mut self, ebpf: &mut Ebpf, proc_root: &Path) {
        self.proc_root = proc_root.to_path_buf();
        if !self.enabled {
            return;
        }
        let started = Instant::now();
        for dir in LIB_DIRS {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if is_libssl(&name.to_string_lossy()) {
                    self.consider(ebpf, &e.path(), true);
                }
            }
        }
        let Ok(procs) = fs::read_dir(&self.proc_root) else {
            return;
        };
        for e in procs.flatten() {
            let Some(tgid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if tgid != self.skip_pid {
                self.scan_process(ebpf, tgid);
            }
        }
        log::info!(
            "TLS capture: probes on {} libraries/executables ({} uprobes, {} failed; {} files looked at in {:?})",
            self.stats.libraries,
            self.stats.probes,
            self.stats.attach_failures,
            self.seen.len(),
            started.elapsed()
        );
    }

    /// A process exec'd: look at it now and during its first seconds.
    pub fn exec(&mut self, tgid: u32) {
        if !self.enabled || tgid == self.skip_pid || self.pending.len() >= MAX_PENDING {
            return;
        }
        self.pending.push((tgid, Instant::now(), 0));
    }

    /// When the next rescan is due; `None` when none is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|(_, at, next)| RESCAN_AFTER.get(*next).map(|d| *at + *d))
            .min()
    }

    /// Rescans the exec'd processes that are due.
    pub fn run_due(&mut self, ebpf: &mut Ebpf) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut pending = std::mem::take(&mut self.pending);
        pending.retain_mut(|(tgid, at, next)| {
            if now < *at + RESCAN_AFTER[*next] {
                return true;
            }
            let t0 = Instant::now();
            let alive = self.scan_process(ebpf, *tgid);
            log::debug!("TLS rescan {} of {tgid}: {:?}", *next, t0.elapsed());
            *next += 1;
            alive && *next < RESCAN_AFTER.len()
        });
        pending.append(&mut self.pending);
        self.pending = pending;
    }

    /// Looks at one process's executable and mapped `libssl`s. False when it is gone.
    fn scan_process(&mut self, ebpf: &mut Ebpf, tgid: u32) -> bool {
        let base = self.proc_root.join(tgid.to_string());
        let Ok(maps) = fs::read_to_string(base.join("maps")) else {
            return false;
        };
        // `/proc/<pid>/exe` resolves in the process's own mount namespace.
        self.consider(ebpf, &base.join("exe"), false);
        let root = base.join("root");
        let mut done: HashSet<&str> = HashSet::new();
        for line in maps.lines() {
            let Some(path) = map_path(line) else {
                continue;
            };
            let name = path.rsplit('/').next().unwrap_or(path);
            if !is_libssl(name) || !done.insert(path) {
                continue;
            }
            // The path as the process sees it, reached through its root (its container's
            // filesystem); `map_files` when that path is gone or not reachable.
            let via_root = root.join(path.trim_start_matches('/'));
            if fs::metadata(&via_root).is_ok() {
                self.consider(ebpf, &via_root, true);
            } else if let Some(range) = line.split_whitespace().next() {
                self.consider(ebpf, &base.join("map_files").join(range), true);
            }
        }
        true
    }

    /// Probes `path` unless its file was already looked at. `library`: a `libssl` (missing
    /// symbols are a failure there; in an executable they just mean it has no TLS of its own).
    fn consider(&mut self, ebpf: &mut Ebpf, path: &Path, library: bool) {
        let Ok(meta) = fs::metadata(path) else {
            return;
        };
        // The inode number alone could be a deleted file's, reused by a new one.
        let key = (
            meta.dev(),
            meta.ino(),
            meta.ctime(),
            meta.ctime_nsec(),
            meta.size(),
        );
        if !meta.is_file() || !self.seen.insert(key) {
            return;
        }
        match attach_file(ebpf, path) {
            Outcome::Attached(n) => {
                self.stats.libraries += 1;
                self.stats.probes += n;
                log::info!("TLS capture: {n} uprobes on {}", shown(path).display());
            }
            Outcome::NotTls if library => self.failed(path, "no SSL_write/SSL_read symbol"),
            Outcome::NotTls => {}
            Outcome::Failed(why) => self.failed(path, &why),
        }
        // A Go program may link OpenSSL too (cgo): its crypto/tls is looked at either way.
        if !library {
            self.consider_go(ebpf, path);
        }
    }

    /// An executable: Go's `crypto/tls` gets the Go probes.
    fn consider_go(&mut self, ebpf: &mut Ebpf, path: &Path) {
        if !self.go {
            return;
        }
        match super::gotls::inspect(path) {
            GoInspect::NotGo | GoInspect::NoTls => {}
            // Most Go binaries shipped are stripped; not a failure of the agent, but said once
            // per file for whoever wonders why a Go program's HTTPS is not seen.
            GoInspect::Stripped => log::debug!(
                "TLS capture: {} is a Go executable without a symbol table (stripped): its crypto/tls is not captured",
                shown(path).display()
            ),
            GoInspect::Unsupported(why) => self.failed(path, &why),
            GoInspect::Targets {
                version,
                write,
                read,
                handshake,
            } => match super::gotls::attach(ebpf, path, &write, &read, handshake) {
                Ok(n) => {
                    self.stats.libraries += 1;
                    self.stats.probes += n;
                    log::info!(
                        "TLS capture: {n} uprobes on Go crypto/tls ({version}) in {}",
                        shown(path).display()
                    );
                }
                Err(why) => self.failed(path, &format!("Go crypto/tls: {why}")),
            },
        }
    }

    fn failed(&mut self, path: &Path, why: &str) {
        let path = &shown(path);
        self.stats.attach_failures += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        let more = std::mem::take(&mut self.suppressed);
        let more = if more > 0 {
            format!(" ({more} more failures since the last line)")
        } else {
            String::new()
        };
        log::warn!(
            "TLS capture: cannot probe {}: {why}; its TLS traffic is not captured{more}",
            path.display()
        );
        self.last_log = Some(now);
    }
}

/// Loads uprobe programs by name; the error names the first that failed.
pub(crate) fn load_uprobes(ebpf: &mut Ebpf, names: &[&str]) -> Result<(), String> {
    for name in names {
        let r = match ebpf.program_mut(name) {
            Some(p) => match <&mut UProbe>::try_from(p) {
                Ok(u) => u.load().map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => Err("missing from the object".into()),
        };
        r.map_err(|e| format!("loading eBPF program {name} failed: {e}"))?;
    }
    Ok(())
}

/// Attaches the return program, then the entry program, to each SSL function `path` has (return
/// first: an entry without its return would leave a call in flight that marks the thread's next
/// plain syscall as TLS). Optional functions (`_ex`, handshake) may be missing.
fn attach_file(ebpf: &mut Ebpf, path: &Path) -> Outcome {
    let mut attached = 0;
    for &(symbol, entry, required) in ENTRIES {
        match attach_uprobe(ebpf, RETURN, symbol, path) {
            Ok(()) => attached += 1,
            Err((true, _)) if required && attached == 0 => return Outcome::NotTls,
            Err((_, why)) if required => return Outcome::Failed(format!("{symbol}: {why}")),
            Err(_) => continue,
        }
        match attach_uprobe(ebpf, entry, symbol, path) {
            Ok(()) => attached += 1,
            // Its return probe alone is harmless: it finds no call in flight.
            Err((_, why)) if required => return Outcome::Failed(format!("{symbol}: {why}")),
            Err(_) => {}
        }
    }
    // Optional: forgets what a freed `SSL*` was tied to, before the allocator hands its address
    // to the next connection (without it, a remembered socket that is gone is forgotten at the
    // next call instead).
    if attach_uprobe(ebpf, FREE, "SSL_free", path).is_ok() {
        attached += 1;
    }
    Outcome::Attached(attached)
}

/// Attaches the loaded uprobe program `prog` at `at` (a symbol, or a file offset) in `path`, for
/// all processes; the error says whether a symbol is missing, and why.
pub(crate) fn attach_uprobe<'a>(
    ebpf: &mut Ebpf,
    prog: &str,
    at: impl Into<UProbeAttachPoint<'a>>,
    path: &Path,
) -> Result<(), (bool, String)> {
    let Some(Ok(u)) = ebpf.program_mut(prog).map(<&mut UProbe>::try_from) else {
        return Err((false, format!("program {prog} missing")));
    };
    u.attach(at, path, UProbeScope::AllProcesses)
        .map(|_| ())
        .map_err(|e| {
            let missing = matches!(
                &e,
                aya::programs::ProgramError::UProbeError(
                    aya::programs::uprobe::UProbeError::SymbolError { .. }
                )
            );
            (missing, e.to_string())
        })
}

/// The file a `/proc/<pid>/exe` or `map_files` link names (for log lines), else `path`.
fn shown(path: &Path) -> PathBuf {
    let link = path.parent().is_some_and(|p| p.ends_with("map_files")) || path.ends_with("exe");
    match link.then(|| fs::read_link(path)) {
        Some(Ok(target)) => PathBuf::from(format!("{} ({})", target.display(), path.display())),
        _ => path.to_path_buf(),
    }
}

/// Whether a file name is OpenSSL's (or BoringSSL's) libssl: `libssl.so`, `libssl.so.3`, ...
/// (NSS's `libssl3.so` has another API.)
pub fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so")
}

/// The path of a `/proc/<pid>/maps` line, if it maps a file.
fn map_path(line: &str) -> Option<&str> {
    // address perms offset dev inode path
    let mut it = line.splitn(6, ' ');
    let inode = it.nth(4)?;
    if inode == "0" {
        return None;
    }
    let path = it.next()?.trim_start();
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None;
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libssl_paths_in_maps() {
        let line = "7f1c2a400000-7f1c2a45e000 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3";
        assert_eq!(
            map_path(line),
            Some("/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert_eq!(
            map_path("7ffd-7ffe rw-p 00000000 00:00 0                          [stack]"),
            None
        );
        assert_eq!(
            map_path("7f00-7f01 r-xp 00000000 fe:01 99 /opt/app/libssl.so.1.1 (deleted)"),
            None
        );
        assert_eq!(
            map_path("7f00-7f01 r-xp 00000000 fe:01 99   /opt/my app/libssl.so.3"),
            Some("/opt/my app/libssl.so.3")
        );
        assert!(is_libssl("libssl.so.3") && is_libssl("libssl.so") && is_libssl("libssl.so.1.1"));
        assert!(!is_libssl("libssl3.so") && !is_libssl("libcrypto.so.3"));
    }
}
