//! The TLS discovery thread: the ring reader hands it every exec'd process; it looks at the new
//! program (and its libraries, again during its first seconds) and attaches the TLS probes where
//! they are missing. Reading ELF symbol tables can take long for big executables: done here, it
//! never delays applying kernel events.

use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use crate::capture::Capture;

/// Exec'd processes waiting for the thread at most (an exec storm must not grow memory; a process
/// beyond it is looked at only if a later scan finds its libraries through another process).
const QUEUE: usize = 4096;

/// The longest the thread sleeps without an exec. Rescans are due at known times (it sleeps
/// until the next one), so this only bounds a wait that nothing needs; a fixed 20 ms tick had the
/// thread up 50 times a second on an idle node.
const IDLE: Duration = Duration::from_secs(60);

/// The ring reader's end: never blocks.
pub struct Execs(Option<mpsc::SyncSender<u32>>);

impl Execs {
    pub fn exec(&self, tgid: u32) {
        if let Some(tx) = &self.0 {
            // Full: dropped (see QUEUE).
            let _ = tx.try_send(tgid);
        }
    }
}

/// Starts the thread; it ends when the returned [`Execs`] is dropped.
pub fn spawn(capture: Arc<Mutex<Capture>>) -> Execs {
    let (tx, rx) = mpsc::sync_channel::<u32>(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("tls-discovery".into())
        .spawn(move || {
            let mut wait = IDLE;
            loop {
                let mut got = Vec::new();
                match rx.recv_timeout(wait) {
                    Ok(tgid) => got.push(tgid),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                got.extend(rx.try_iter());
                let mut c = capture.lock().unwrap_or_else(PoisonError::into_inner);
                for tgid in got {
                    c.tls_exec(tgid);
                }
                c.tls_due();
                wait = c.tls_next_due().map_or(IDLE, |at| {
                    at.saturating_duration_since(std::time::Instant::now())
                });
            }
        });
    match spawned {
        Ok(_) => Execs(Some(tx)),
        Err(e) => {
            log::warn!(
                "TLS capture: no discovery thread ({e}): programs started later are not probed unless they share an already probed library"
            );
            Execs(None)
        }
    }
}
