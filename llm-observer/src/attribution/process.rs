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
