//! The kernel BPF objects a process holds, and proof that they are gone after it exits.
//!
//! While the agent runs, its file descriptors name exactly what it loaded: `/proc/<pid>/fdinfo/<fd>`
//! of a `bpf-prog`, `bpf-map` or `bpf_link` fd carries `prog_id:` / `map_id:` / `link_id:`. Those ids
//! are allocated cyclically by the kernel (never reused soon), so once the process is gone,
//! `bpftool` listing none of them — and no perf event of that pid — proves nothing was left
//! behind, even on a machine where other agents hold programs of the same names. The kernel frees
//! a dead process's objects asynchronously once its last fd closes, so the check polls with a
//! deadline.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The BPF ids one process held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfObjects {
    pub pid: u32,
    pub progs: BTreeSet<u64>,
    pub maps: BTreeSet<u64>,
    pub links: BTreeSet<u64>,
    /// `perf_event` fds (tracepoint attachments without a BPF link).
    pub perf_fds: usize,
}

/// The first `key:` value of an fdinfo text.
fn fdinfo_id(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

impl BpfObjects {
    /// Reads the BPF fds of `pid` from `/proc`.
    pub fn of(pid: u32) -> anyhow::Result<BpfObjects> {
        let mut objects = BpfObjects {
            pid,
            ..BpfObjects::default()
        };
        let dir = format!("/proc/{pid}/fd");
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let entry = entry?;
            // An fd closed between the listing and here is simply not counted.
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
            let text = std::fs::read_to_string(&info).unwrap_or_default();
            match target.as_ref() {
                "anon_inode:bpf-prog" => objects.progs.extend(fdinfo_id(&text, "prog_id:")),
                "anon_inode:bpf-map" => objects.maps.extend(fdinfo_id(&text, "map_id:")),
                "anon_inode:bpf_link" => objects.links.extend(fdinfo_id(&text, "link_id:")),
                "anon_inode:[perf_event]" => objects.perf_fds += 1,
                _ => {}
            }
        }
        Ok(objects)
    }

    /// Waits until `bpftool` lists none of these programs, maps or links and no perf event of the
    /// pid. Returns how long that took.
    pub fn wait_gone(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let left = self.still_present()?;
            if left.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                bail!(
                    "after {timeout:?} the kernel still holds objects of pid {}: {left:?}",
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `bpftool` still lists of these objects, one description each.
    pub fn still_present(&self) -> anyhow::Result<Vec<String>> {
        let mut left = Vec::new();
        for p in bpftool(&["prog", "show"])? {
            if let Some(id) = p.get("id").and_then(Value::as_u64)
                && self.progs.contains(&id)
            {
                left.push(format!(
                    "prog {id} {}",
                    p.get("name").unwrap_or(&Value::Null)
                ));
            }
        }
        for m in bpftool(&["map", "show"])? {
            if let Some(id) = m.get("id").and_then(Value::as_u64)
                && self.maps.contains(&id)
            {
                left.push(format!(
                    "map {id} {}",
                    m.get("name").unwrap_or(&Value::Null)
                ));
            }
        }
        for l in bpftool(&["link", "show"])? {
            let id = l.get("id").and_then(Value::as_u64);
            let prog = l.get("prog_id").and_then(Value::as_u64);
            if id.is_some_and(|i| self.links.contains(&i))
                || prog.is_some_and(|p| self.progs.contains(&p))
            {
                left.push(format!("link {l}"));
            }
        }
        for e in bpftool(&["perf"])? {
            let pid = e.get("pid").and_then(Value::as_u64);
            let prog = e.get("prog_id").and_then(Value::as_u64);
            if pid == Some(u64::from(self.pid)) || prog.is_some_and(|p| self.progs.contains(&p)) {
                left.push(format!("perf {e}"));
            }
        }
        Ok(left)
    }
}

/// The names of the programs with these ids, as `bpftool prog show` reports them (the kernel keeps
/// 15 bytes of a name).
pub fn prog_names(ids: &BTreeSet<u64>) -> anyhow::Result<BTreeSet<String>> {
    Ok(bpftool(&["prog", "show"])?
        .iter()
        .filter(|p| {
            p.get("id")
                .and_then(Value::as_u64)
                .is_some_and(|i| ids.contains(&i))
        })
        .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// `bpftool -j <args>` as a JSON array (bpftool prints nothing at all for an empty perf list).
pub fn bpftool(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("running bpftool (cargo xtask setup --test installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str(&text).with_context(|| format!("bpftool {args:?} output"))? {
        Value::Array(items) => Ok(items),
        other => bail!("bpftool {args:?}: not an array: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nprog_type:\t5\nprog_id:\t812\n";
        assert_eq!(fdinfo_id(text, "prog_id:"), Some(812));
        assert_eq!(fdinfo_id(text, "map_id:"), None);
    }
}
