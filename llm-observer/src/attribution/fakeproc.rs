//! A fake proc filesystem for tests: processes written the way procfs shows them.

use std::path::PathBuf;

pub struct FakeProc(pub PathBuf);

impl FakeProc {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("llmobs-proc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        FakeProc(d)
    }

    /// A process with parent `ppid`; `cmdline` uses `|` for the kernel's NUL separators.
    pub fn put(&self, tgid: u32, ppid: u32, comm: &str, cmdline: &str, start: u64, cgroup: &str) {
        let d = self.0.join(tgid.to_string());
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("cmdline"), cmdline.replace('|', "\0")).unwrap();
        std::fs::write(d.join("cgroup"), cgroup).unwrap();
        std::fs::write(
            d.join("stat"),
            format!(
                "{tgid} ({comm}) S {ppid} {tgid} {tgid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 10 18446744073709551615\n"
            ),
        )
        .unwrap();
    }

    pub fn remove(&self, tgid: u32) {
        std::fs::remove_dir_all(self.0.join(tgid.to_string())).unwrap();
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
