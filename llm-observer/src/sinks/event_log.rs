//! [`EventLog`]: the per-exchange event log (`--events-log FILE|-`): one JSON line per exchange, as
//! Loki, Vector or Fluent Bit ingest it. A file is rotated by size: when the next line would take
//! it past `--events-log-max-bytes`, it is renamed to `FILE.1` (replacing the previous one) and a
//! new `FILE` is started, so the log never holds more than about twice the limit.
//!
//! Each line is written with one `write` and flushed at once: a reader that waited until the
//! agent is quiescent sees every line (and the agent's own writes are never captured: its pid is
//! excluded, and files are not sockets). A failed write is counted in
//! `llm_observer_dropped_total{stage="events_log"}` and logged at most once a minute.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::record::{ExchangeRecord, RecordOutput};

/// Where the lines go.
enum Target {
    Stdout,
    File {
        path: PathBuf,
        file: File,
        /// Bytes in the current file.
        size: u64,
        /// Rotate before a line would pass this (0: never).
        max_bytes: u64,
    },
}

pub struct EventLog {
    target: Target,
    dropped: Option<prometheus::IntCounter>,
    last_warning: Option<Instant>,
    /// Lines written (for tests and logs).
    pub lines: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `FILE.1`, the one rotated file kept.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl EventLog {
    /// `-` is standard output; anything else a file opened for appending (created if missing).
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<EventLog> {
        let target = if path == Path::new("-") {
            Target::Stdout
        } else {
            let file = open_append(path)?;
            let size = file.metadata()?.len();
            Target::File {
                path: path.to_path_buf(),
                file,
                size,
                max_bytes,
            }
        };
        Ok(EventLog {
            target,
            dropped: None,
            last_warning: None,
            lines: 0,
        })
    }

    /// Counts failed writes in this counter.
    pub fn with_dropped(mut self, dropped: prometheus::IntCounter) -> Self {
        self.dropped = Some(dropped);
        self
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match &mut self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            Target::File {
                path,
                file,
                size,
                max_bytes,
            } => {
                let len = line.len() as u64;
                if *max_bytes > 0 && *size > 0 && *size + len > *max_bytes {
                    std::fs::rename(&*path, rotated_path(path))?;
                    *file = open_append(path)?;
                    *size = 0;
                }
                file.write_all(line)?;
                *size += len;
                Ok(())
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        if let Some(d) = &self.dropped {
            d.inc();
        }
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_warning = Some(now);
            log::warn!(
                "events log: a line was not written: {e} (counted in llm_observer_dropped_total{{stage=\"events_log\"}}; warning at most once a minute)"
            );
        }
    }
}

impl RecordOutput for EventLog {
    fn record(&mut self, record: &ExchangeRecord<'_>) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                self.failed(&io::Error::other(e));
                return;
            }
        };
        line.push(b'\n');
        match self.write_line(&line) {
            Ok(()) => self.lines += 1,
            Err(e) => self.failed(&e),
        }
    }
}

#[cfg(test)]
#[path = "event_log_tests.rs"]
pub(crate) mod tests;
