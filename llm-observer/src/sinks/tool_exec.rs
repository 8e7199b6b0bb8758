//! Tool execution time of an agent: the model's response asks for tool call `X` (OpenAI
//! `tool_calls[].id`, Anthropic `tool_use.id`); the agent runs the tool and sends the result for
//! `X` in its next request (`role: tool, tool_call_id`, `tool_result.tool_use_id`). The time from
//! that response's last byte to that request's first byte is the tool's execution time, as the
//! agent process experienced it (kernel capture times of its own reads and writes).
//!
//! Pending calls are kept per process (the same process asks and answers: an agent's conversation
//! lives in one process), at most `max_per_process` each (the oldest is evicted first) and at most
//! [`MAX_PROCESSES`] processes (the one idle longest goes first), and expire after `timeout`. A
//! request repeats the whole conversation, so old results come back in every later request: each
//! id is matched once, and ids not pending are ignored.

use std::collections::{HashMap, VecDeque};

/// Processes with pending calls at once; past it the process idle longest is forgotten.
pub const MAX_PROCESSES: usize = 1024;

/// Why a pending call left the table without its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The process's table (or the process table) was full.
    Full,
    /// No result came within the timeout.
    Expired,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Full => "full",
            Dropped::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    id: String,
    tool: String,
    /// Capture time of the last byte of the response that asked for the call.
    asked_ns: u64,
}

/// A call whose result was sent: which tool, and how long it ran (ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub tool: String,
    pub ns: u64,
}

/// The pending calls of every process.
#[derive(Debug)]
pub struct ToolExec {
    by_pid: HashMap<u32, VecDeque<Pending>>,
    max_per_process: usize,
    timeout_ns: u64,
}

impl ToolExec {
    /// `timeout_ns` 0: pending calls never expire (they still leave when the table is full).
    pub fn new(max_per_process: usize, timeout_ns: u64) -> Self {
        ToolExec {
            by_pid: HashMap::new(),
            max_per_process,
            timeout_ns,
        }
    }

    /// Calls pending now (all processes).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.by_pid.values().map(VecDeque::len).sum()
    }

    /// The response that ended at `asked_ns` asked process `pid` to run `tool` as call `id`.
    /// Returns the calls that had to leave (expired or evicted) to make room.
    pub fn asked(&mut self, pid: u32, id: &str, tool: &str, asked_ns: u64) -> Vec<Dropped> {
        let mut dropped = self.expire(pid, asked_ns);
        if self.max_per_process == 0 {
            dropped.push(Dropped::Full);
            return dropped;
        }
        if !self.by_pid.contains_key(&pid) && self.by_pid.len() >= MAX_PROCESSES {
            // The process whose newest call is oldest: the least likely to still answer.
            let idle = self
                .by_pid
                .iter()
                .min_by_key(|(_, q)| q.back().map_or(0, |p| p.asked_ns))
                .map(|(pid, _)| *pid);
            if let Some(q) = idle.and_then(|p| self.by_pid.remove(&p)) {
                dropped.extend(q.iter().map(|_| Dropped::Full));
            }
        }
        let q = self.by_pid.entry(pid).or_default();
        // A server repeating an id (a retried response) re-arms it rather than doubling it.
        q.retain(|p| p.id != id);
        if q.len() >= self.max_per_process {
            q.pop_front();
            dropped.push(Dropped::Full);
        }
        q.push_back(Pending {
            id: id.to_owned(),
            tool: tool.to_owned(),
            asked_ns,
        });
        dropped
    }

    /// Process `pid` sent, in a request that started at `start_ns`, the result of call `id`.
    /// `Some` exactly once per pending call; the expired calls found on the way are pushed to
    /// `dropped`.
    pub fn answered(
        &mut self,
        pid: u32,
        id: &str,
        start_ns: u64,
        dropped: &mut Vec<Dropped>,
    ) -> Option<Executed> {
        dropped.extend(self.expire(pid, start_ns));
        let q = self.by_pid.get_mut(&pid)?;
        let at = q.iter().position(|p| p.id == id)?;
        let p = q.remove(at)?;
        if q.is_empty() {
            self.by_pid.remove(&pid);
        }
        // A result captured before its call's end cannot be this call's (clock skew between
        // CPUs is far below a round trip): not a measurement.
        (start_ns >= p.asked_ns).then(|| Executed {
            tool: p.tool,
            ns: start_ns - p.asked_ns,
        })
    }

    /// The process exited: its calls will never be answered (not a fault of anyone's).
    pub fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// Removes `pid`'s calls asked more than the timeout before `now_ns`.
    fn expire(&mut self, pid: u32, now_ns: u64) -> Vec<Dropped> {
        let mut out = Vec::new();
        if self.timeout_ns == 0 {
            return out;
        }
        let Some(q) = self.by_pid.get_mut(&pid) else {
            return out;
        };
        // Calls are asked in capture order per process, so the oldest are at the front.
        while q
            .front()
            .is_some_and(|p| now_ns.saturating_sub(p.asked_ns) > self.timeout_ns)
        {
            q.pop_front();
            out.push(Dropped::Expired);
        }
        if q.is_empty() {
            self.by_pid.remove(&pid);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn pairs_each_call_once_with_its_result() {
        let mut t = ToolExec::new(8, 600 * S);
        assert!(t.asked(7, "call_1", "get_weather", 10 * S).is_empty());
        assert!(t.asked(7, "call_2", "get_time", 10 * S).is_empty());
        let mut d = Vec::new();
        assert_eq!(
            t.answered(7, "call_2", 12 * S + 500, &mut d),
            Some(Executed {
                tool: "get_time".into(),
                ns: 2 * S + 500
            })
        );
        // Repeated in the next request's history: not measured again.
        assert_eq!(t.answered(7, "call_2", 13 * S, &mut d), None);
        // Another process quoting the same id is not this call's result.
        assert_eq!(t.answered(8, "call_1", 13 * S, &mut d), None);
        assert_eq!(
            t.answered(7, "call_1", 14 * S, &mut d).map(|e| e.ns),
            Some(4 * S)
        );
        assert!(d.is_empty());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn full_tables_evict_the_oldest_and_say_so() {
        let mut t = ToolExec::new(2, 0);
        t.asked(1, "a", "f", 1);
        t.asked(1, "b", "f", 2);
        assert_eq!(t.asked(1, "c", "f", 3), vec![Dropped::Full]);
        let mut d = Vec::new();
        assert_eq!(t.answered(1, "a", 10, &mut d), None);
        assert_eq!(t.answered(1, "b", 10, &mut d).map(|e| e.ns), Some(8));
        // Re-asking a pending id re-arms it instead of using a slot.
        t.asked(1, "c", "f", 5);
        assert_eq!(t.pending(), 1);
        assert_eq!(t.answered(1, "c", 10, &mut d).map(|e| e.ns), Some(5));
        let mut none = ToolExec::new(0, 0);
        assert_eq!(none.asked(1, "a", "f", 1), vec![Dropped::Full]);
    }

    #[test]
    fn process_table_is_bounded() {
        let mut t = ToolExec::new(4, 0);
        for pid in 0..MAX_PROCESSES as u32 {
            t.asked(pid, "x", "f", 100 + u64::from(pid));
        }
        // Process 0 has the oldest newest call: it goes.
        assert_eq!(t.asked(99_999, "y", "f", 5_000), vec![Dropped::Full]);
        assert_eq!(t.by_pid.len(), MAX_PROCESSES);
        assert!(!t.by_pid.contains_key(&0));
    }

    #[test]
    fn calls_expire_after_the_timeout() {
        let mut t = ToolExec::new(8, 10 * S);
        t.asked(3, "old", "f", S);
        t.asked(3, "new", "f", 9 * S);
        let mut d = Vec::new();
        assert_eq!(t.answered(3, "old", 12 * S, &mut d), None);
        assert_eq!(d, vec![Dropped::Expired]);
        assert_eq!(
            t.answered(3, "new", 12 * S, &mut d).map(|e| e.ns),
            Some(3 * S)
        );
        t.asked(4, "z", "f", S);
        t.forget(4);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_result_before_its_call_is_not_a_measurement() {
        let mut t = ToolExec::new(8, 0);
        t.asked(1, "a", "f", 100);
        let mut d = Vec::new();
        assert_eq!(t.answered(1, "a", 50, &mut d), None);
        assert_eq!(t.pending(), 0);
    }
}
