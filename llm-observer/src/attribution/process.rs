//! Process identity by tgid, read from /proc on first sight, refreshed on exec, dropped at exit.
//!
//! A pid can be reused after a process exits; if the exit event was lost (full ring) the cache
//! would hand the old identity to the new process. A lookup therefore compares the process's
//! start time (`/proc/<pid>/stat` field 22) with the cached one and re-reads on a mismatch — at
//! most once per [`REVALIDATE`] per process, so a server accepting thousands of connections a
//! second does not read its stat file for each (a pid cannot cycle through the pid space and come
//! back to the same number in that time on any realistic `pid_max`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{cgroup, name};

/// What the agent knows of a process. `comm` is bounded by the kernel (15 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub tgid: u32,
    /// Kernel name (`/proc/<pid>/comm`).
    pub comm: Arc<str>,
    /// The `process` label: see [`name::process_name`].
    pub name: Arc<str>,
    /// Basename of `/proc/<pid>/exe` (empty when unreadable: kernel threads, other namespaces).
    pub exe: Arc<str>,
    /// Parent tgid (0 when unknown).
    pub ppid: u32,
    /// Start time in clock ticks since boot; with the tgid it names one process for its lifetime.
    pub start_time: u64,
    pub cgroup: cgroup::CgroupInfo,
}

/// Fields of `/proc/<pid>/stat` after the `(comm)`: ppid (4th field) and starttime (22nd).
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // comm may contain spaces and parentheses: the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is the state (field 3): ppid is f[1], starttime (field 22) is f[19].
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

/// Reads one process's identity. `None` when the process is gone.
pub fn read(proc_root: &Path, tgid: u32) -> Option<ProcessInfo> {
    let dir = proc_root.join(tgid.to_string());
    let (ppid, start_time) = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let comm = std::fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default();
    let argv = std::fs::read(dir.join("cmdline"))
        .map(|raw| name::split_cmdline(&raw))
        .unwrap_or_default();
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cgroup = std::fs::read_to_string(dir.join("cgroup"))
        .map(|t| cgroup::parse(&t))
        .unwrap_or_default();
    Some(ProcessInfo {
        tgid,
        name: name::process_name(&comm, &argv).into(),
        comm: comm.into(),
        exe: exe.into(),
        ppid,
        start_time,
        cgroup,
    })
}

/// A placeholder for a process that is already gone when first seen.
fn gone(tgid: u32) -> ProcessInfo {
    ProcessInfo {
        tgid,
        comm: "unknown".into(),
        name: "unknown".into(),
        exe: "".into(),
        ppid: 0,
        start_time: 0,
        cgroup: cgroup::CgroupInfo::default(),
    }
}

/// The start time of a live process, read cheaply (one small file).
fn start_time(proc_root: &Path, tgid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join(tgid.to_string()).join("stat")).ok()?;
    Some(parse_stat(&text)?.1)
}

/// How long a start-time check holds.
pub const REVALIDATE: Duration = Duration::from_secs(1);

/// Most processes cached at once: the node's live processes are far fewer; this bounds a storm of
/// short-lived ones whose exits were lost.
const MAX_PROCESSES: usize = 65_536;

/// tgid → [`ProcessInfo`].
#[derive(Debug)]
pub struct ProcessCache {
    proc_root: PathBuf,
    /// Identity and when its start time was last checked.
    by_tgid: HashMap<u32, (Arc<ProcessInfo>, Instant)>,
    revalidate: Duration,
}

impl ProcessCache {
    pub fn new(proc_root: &Path) -> Self {
        ProcessCache {
            proc_root: proc_root.to_owned(),
            by_tgid: HashMap::new(),
            revalidate: REVALIDATE,
        }
    }

    /// Checks start times on every lookup (tests).
    pub fn with_revalidate(mut self, every: Duration) -> Self {
        self.revalidate = every;
        self
    }

    /// The identity of `tgid`, re-read when the cached one belongs to an earlier process that had
    /// the same pid.
    pub fn get(&mut self, tgid: u32) -> Arc<ProcessInfo> {
        let now = Instant::now();
        if let Some((p, checked)) = self.by_tgid.get_mut(&tgid) {
            if now.duration_since(*checked) < self.revalidate {
                return p.clone();
            }
            let start = start_time(&self.proc_root, tgid);
            if start.is_none() || start == Some(p.start_time) {
                *checked = now;
                return p.clone();
            }
        }
        self.refresh(tgid)
    }

    /// Re-reads `tgid` (it exec'd another program, or its pid was reused).
    pub fn refresh(&mut self, tgid: u32) -> Arc<ProcessInfo> {
        let info = Arc::new(read(&self.proc_root, tgid).unwrap_or_else(|| gone(tgid)));
        if self.by_tgid.len() >= MAX_PROCESSES && !self.by_tgid.contains_key(&tgid) {
            // Dead entries whose exit we missed go first.
            let root = &self.proc_root;
            self.by_tgid
                .retain(|t, _| root.join(t.to_string()).join("stat").exists());
            if self.by_tgid.len() >= MAX_PROCESSES {
                return info;
            }
        }
        self.by_tgid.insert(tgid, (info.clone(), Instant::now()));
        info
    }

    /// Whether `tgid` is cached (an exec of an unseen process needs no work).
    pub fn contains(&self, tgid: u32) -> bool {
        self.by_tgid.contains_key(&tgid)
    }

    /// Caches a forked child (seen first through a socket it inherited, or one its parent passed it
    /// over a unix socket): its own /proc entry if it is still there, else its parent's facts. A
    /// child keeps its parent's comm until it execs or renames itself, and a per-connection child
    /// is often gone before its first event is applied.
    pub fn inherit(&mut self, child: u32, parent: u32) {
        if self.by_tgid.contains_key(&child) {
            return;
        }
        let info = match read(&self.proc_root, child) {
            Some(own) => own,
            None => {
                // Gone already: the parent's identity (same program, same cgroup), under the
                // child's pid, with the parent as its parent.
                let p = self.get(parent);
                ProcessInfo {
                    tgid: child,
                    ppid: parent,
                    start_time: 0,
                    ..(*p).clone()
                }
            }
        };
        if self.by_tgid.len() < MAX_PROCESSES {
            self.by_tgid.insert(child, (Arc::new(info), Instant::now()));
        }
    }

    pub fn forget(&mut self, tgid: u32) {
        self.by_tgid.remove(&tgid);
    }

    pub fn len(&self) -> usize {
        self.by_tgid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tgid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::fakeproc::FakeProc;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let text = "42 (a (b) c) S 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0\n";
        assert_eq!(parse_stat(text), Some((7, 123456)));
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("garbage)"), None);
    }

    #[test]
    fn reads_identity() {
        let p = FakeProc::new("read");
        let id = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
        p.put(
            100,
            1,
            "python3",
            "python3|-m|llama_cpp.server|",
            5000,
            &format!("0::/system.slice/docker-{id}.scope\n"),
        );
        let info = read(&p.0, 100).unwrap();
        assert_eq!(&*info.comm, "python3");
        assert_eq!(&*info.name, "llama_cpp.server");
        assert_eq!((info.ppid, info.start_time), (1, 5000));
        assert_eq!(
            info.cgroup.container,
            Some((cgroup::Runtime::Docker, id.to_owned()))
        );
        assert!(read(&p.0, 101).is_none());
    }

    /// A pid reused by a new process (its exit event lost) does not keep the old identity; an
    /// exit drops the entry; an exec is re-read on refresh.
    #[test]
    fn pid_reuse_and_exec_do_not_inherit() {
        let p = FakeProc::new("reuse");
        let mut cache = ProcessCache::new(&p.0).with_revalidate(Duration::ZERO);
        p.put(200, 1, "ollama", "/usr/bin/ollama|serve|", 1000, "0::/\n");
        assert_eq!(&*cache.get(200).name, "ollama");
        // Same pid, a later process: the start time tells them apart.
        p.remove(200);
        p.put(200, 1, "node", "node|/srv/agent.js|", 2000, "0::/\n");
        let now = cache.get(200);
        assert_eq!((&*now.name, now.start_time), ("agent", 2000));
        // exec keeps pid and start time: only the exec event's refresh sees the new program.
        p.put(
            200,
            1,
            "python3",
            "python3|-m|vllm.entrypoints.openai.api_server|",
            2000,
            "0::/\n",
        );
        assert_eq!(&*cache.get(200).name, "agent");
        assert_eq!(
            &*cache.refresh(200).name,
            "vllm.entrypoints.openai.api_server"
        );
        assert_eq!(&*cache.get(200).name, "vllm.entrypoints.openai.api_server");
        // Exit: forgotten; a gone process reads as unknown.
        cache.forget(200);
        p.remove(200);
        assert!(!cache.contains(200));
        assert_eq!(&*cache.get(200).name, "unknown");
    }

    #[test]
    fn a_forked_child_gone_from_proc_takes_its_parents_identity() {
        let p = FakeProc::new("inherit");
        p.put(
            7,
            1,
            "python3",
            "python3|-m|llama_cpp.server|",
            500,
            "0::/\n",
        );
        p.put(
            9,
            7,
            "renamed",
            "python3|-m|llama_cpp.server|",
            600,
            "0::/\n",
        );
        let mut cache = ProcessCache::new(&p.0);
        // Child 8 has no /proc entry (exited already); child 9 still has its own.
        cache.inherit(8, 7);
        cache.inherit(9, 7);
        let eight = cache.get(8);
        assert_eq!(
            (eight.tgid, &*eight.comm, &*eight.name, eight.ppid),
            (8, "python3", "llama_cpp.server", 7)
        );
        assert_eq!(&*cache.get(9).comm, "renamed");
        assert_eq!(&*cache.get(7).comm, "python3");
    }
}
