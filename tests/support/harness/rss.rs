//! Sampling a process's resident memory (`VmRSS`) on a thread while a test runs, to bound it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// `VmRSS` of `pid` in bytes, or `None` once the process is gone.
pub fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Samples `VmRSS` every `every` until stopped; keeps the peak and the number of samples.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, p, n) = (Arc::clone(&stop), Arc::clone(&peak), Arc::clone(&samples));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                if let Some(rss) = vm_rss(pid) {
                    p.fetch_max(rss, Ordering::AcqRel);
                    n.fetch_add(1, Ordering::AcqRel);
                }
                std::thread::sleep(every);
            }
        });
        RssSampler {
            stop,
            peak,
            samples,
            thread: Some(thread),
        }
    }

    /// The peak so far, in bytes, and how many samples it is the maximum of.
    pub fn peak(&self) -> (u64, u64) {
        (
            self.peak.load(Ordering::Acquire),
            self.samples.load(Ordering::Acquire),
        )
    }

    /// Stops sampling (one last sample is taken first) and returns the peak and sample count.
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let rss = vm_rss(std::process::id()).expect("own status");
        assert!(rss > 0);
        let s = RssSampler::start(std::process::id(), Duration::from_millis(1));
        while s.peak().1 < 2 {
            std::thread::yield_now();
        }
        let (peak, n) = s.stop();
        assert!(peak > 0 && n >= 2);
    }
}
