//! Process facts by tgid, cached for the life of the process (dropped at its exit event).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::capture::procfs;

/// What the agent knows of a process. `comm` is bounded by the kernel (15 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub tgid: u32,
    pub comm: Arc<str>,
}

/// tgid → [`ProcessInfo`], read from /proc on first sight.
#[derive(Debug)]
pub struct ProcessCache {
    proc_root: PathBuf,
    by_tgid: HashMap<u32, Arc<ProcessInfo>>,
}

impl ProcessCache {
    pub fn new(proc_root: &Path) -> Self {
        ProcessCache {
            proc_root: proc_root.to_owned(),
            by_tgid: HashMap::new(),
        }
    }

    pub fn get(&mut self, tgid: u32) -> Arc<ProcessInfo> {
        let root = &self.proc_root;
        self.by_tgid
            .entry(tgid)
            .or_insert_with(|| {
                // A process that is already gone keeps a placeholder name rather than failing.
                let comm = procfs::comm(root, tgid).unwrap_or_else(|| "unknown".to_owned());
                Arc::new(ProcessInfo {
                    tgid,
                    comm: comm.into(),
                })
            })
            .clone()
    }

    /// Caches a forked child (seen first through a socket it inherited): its own /proc entry if it
    /// is still there, else its parent's facts. A child keeps its parent's comm until it execs or
    /// renames itself, and a per-connection child is often gone before its first event is applied.
    pub fn inherit(&mut self, child: u32, parent: u32) {
        if self.by_tgid.contains_key(&child) {
            return;
        }
        let comm = match procfs::comm(&self.proc_root, child) {
            Some(c) => Arc::from(c),
            None => self.get(parent).comm.clone(),
        };
        self.by_tgid
            .insert(child, Arc::new(ProcessInfo { tgid: child, comm }));
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

    #[test]
    fn a_forked_child_gone_from_proc_takes_its_parents_comm() {
        let root = std::env::temp_dir().join(format!("llm-observer-proc-{}", std::process::id()));
        for (pid, comm) in [("7", "server\n"), ("9", "renamed\n")] {
            std::fs::create_dir_all(root.join(pid)).expect("mkdir");
            std::fs::write(root.join(pid).join("comm"), comm).expect("comm");
        }
        let mut cache = ProcessCache::new(&root);
        // Child 8 has no /proc entry (exited already); child 9 still has its own.
        cache.inherit(8, 7);
        cache.inherit(9, 7);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(&*cache.get(8).comm, "server");
        assert_eq!(cache.get(8).tgid, 8);
        assert_eq!(&*cache.get(9).comm, "renamed");
        assert_eq!(&*cache.get(7).comm, "server");
    }
}
