//! How long the ring's reader sleeps between drains it does on its own.
//!
//! Data records do not wake the reader (see docs/capture.md, "Wakeups"), so it drains the ring
//! on a timer. On a busy node the timer's short interval keeps the ring from filling; on an idle
//! one it was most of what the agent spent (a timer interrupt, a worker thread and the reader's
//! thread woken 200 times a second). So the interval doubles after each drain that found
//! nothing, up to a ceiling, and drops back to the short one as soon as a record arrives. The
//! records that end an idle spell (a connection opened, a process exiting) wake the reader
//! anyway; only data on a connection that was already open can wait for the longer interval,
//! and records carry kernel timestamps, so that wait changes no measured value.

use std::time::Duration;

/// The drain timer's state.
#[derive(Debug, Clone)]
pub struct PollBackoff {
    busy: Duration,
    idle: Duration,
    current: Duration,
}

impl PollBackoff {
    /// `busy`: the interval while records arrive (at least 1 ms); `idle`: the ceiling (at least
    /// `busy`).
    pub fn new(busy: Duration, idle: Duration) -> Self {
        let busy = busy.max(Duration::from_millis(1));
        PollBackoff {
            busy,
            idle: idle.max(busy),
            current: busy,
        }
    }

    /// The wait before the next drain.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// After a timed drain: `applied` says whether it found records. Returns the next wait.
    pub fn after_drain(&mut self, applied: bool) -> Duration {
        self.current = if applied {
            self.busy
        } else {
            self.current.saturating_mul(2).min(self.idle)
        };
        self.current
    }

    /// A wakeup found records: back to the short interval. True when the wait changed (the
    /// pending timer should then be shortened).
    pub fn busy(&mut self) -> bool {
        let changed = self.current != self.busy;
        self.current = self.busy;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_while_idle_up_to_the_ceiling_and_drops_back_at_a_record() {
        let mut b = PollBackoff::new(5 * MS, 100 * MS);
        assert_eq!(b.current(), 5 * MS);
        let idle: Vec<_> = (0..7).map(|_| b.after_drain(false)).collect();
        assert_eq!(idle, [10, 20, 40, 80, 100, 100, 100].map(|n| n * MS));
        assert_eq!(b.after_drain(true), 5 * MS);
        assert_eq!(b.after_drain(false), 10 * MS);
        assert!(b.busy());
        assert_eq!(b.current(), 5 * MS);
        assert!(!b.busy(), "already short: the pending timer stays");
    }

    #[test]
    fn a_ceiling_below_the_busy_interval_is_the_busy_interval() {
        let mut b = PollBackoff::new(50 * MS, 10 * MS);
        assert_eq!(b.after_drain(false), 50 * MS);
        let mut z = PollBackoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.current(), MS);
        assert_eq!(z.after_drain(false), MS);
    }
}
