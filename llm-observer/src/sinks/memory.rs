//! `llm_memory_usage_bytes`: resident memory of the server processes seen serving LLM requests.
//!
//! Pids are registered when a server-view exchange starts or ends and are read at scrape time from
//! `<proc_root>/<pid>/status` (`VmRSS`). A pid is forgotten when its status file is gone, when the
//! process name no longer matches (pid reuse after exit), or when the pipeline reports its exit.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::attribution::serving::UnitLabels;

/// Most pids tracked at once; server processes are few, and this bounds a pid-churn storm (a
/// forking server with short-lived workers) until dead pids are pruned at the next scrape.
const MAX_PIDS: usize = 4096;

#[derive(Debug)]
pub struct RssTracker {
    proc_root: PathBuf,
    /// pid → (comm as the kernel reported it, its unit's label values).
    pids: HashMap<u32, (String, UnitLabels)>,
}

impl RssTracker {
    pub fn new(proc_root: PathBuf) -> Self {
        RssTracker {
            proc_root,
            pids: HashMap::new(),
        }
    }

    pub fn register(&mut self, pid: u32, comm: &str, label: UnitLabels) {
        if self.pids.len() >= MAX_PIDS && !self.pids.contains_key(&pid) {
            return;
        }
        self.pids.insert(pid, (comm.to_string(), label));
    }

    pub fn forget(&mut self, pid: u32) {
        self.pids.remove(&pid);
    }

    /// Bytes of resident memory per unit, summed over live registered pids.
    pub fn sample(&mut self) -> BTreeMap<UnitLabels, u64> {
        let mut out = BTreeMap::new();
        let root = &self.proc_root;
        self.pids.retain(|pid, (comm, label)| {
            let path = root.join(pid.to_string()).join("status");
            let Ok(text) = std::fs::read_to_string(&path) else {
                return false; // exited (or never visible to us): stop asking
            };
            let Some((name, rss)) = parse_status(&text) else {
                return false;
            };
            // The kernel's comm is at most 15 bytes; the status Name: line is the same string.
            if name != comm.as_str() {
                return false; // pid reused by another program
            }
            *out.entry(label.clone()).or_insert(0) += rss;
            true
        });
        out
    }
}

/// `Name:` and `VmRSS:` (in bytes) from a `/proc/<pid>/status` text. Kernel threads and zombies
/// have no `VmRSS` line: they hold no user memory, so they read as `None`.
fn parse_status(text: &str) -> Option<(&str, u64)> {
    let mut name = None;
    let mut rss = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb = v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
            rss = Some(kb * 1024);
        }
    }
    Some((name?, rss?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tollama\nUmask:\t0022\nVmRSS:\t  123456 kB\nThreads:\t12\n";
        assert_eq!(parse_status(text), Some(("ollama", 123456 * 1024)));
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn sums_per_label_and_prunes() {
        let dir = std::env::temp_dir().join(format!("llmobs-rss-{}", std::process::id()));
        for (pid, name, kb) in [(10, "ollama", 100), (11, "ollama", 50), (12, "other", 7)] {
            let p = dir.join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(
                p.join("status"),
                format!("Name:\t{name}\nVmRSS:\t{kb} kB\n"),
            )
            .unwrap();
        }
        let mut t = RssTracker::new(dir.clone());
        let unit = |p: &str| [p.to_string(), "c".into(), String::new(), String::new()];
        t.register(10, "ollama", unit("ollama"));
        t.register(11, "ollama", unit("ollama"));
        t.register(12, "python3", unit("python3")); // name mismatch: reused pid
        t.register(13, "gone", unit("gone")); // no status file
        let s = t.sample();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            [(unit("ollama"), 150 * 1024)]
        );
        assert_eq!(t.pids.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
