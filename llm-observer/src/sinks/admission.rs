//! Label admission: which values from the wire may become label values, and when they are let go.
//!
//! A cap that admits the first `max` values it sees can be exhausted by junk: forty requests naming
//! made-up models (each answered 404 by the server) would leave every real model `other` for the
//! life of the agent. So a value *enters* a [`LabelCap`] only from an exchange the server answered
//! successfully ([`Admit::Yes`]); before that, and for failures, it is `other`. A value that no
//! exchange has used for the idle timeout leaves the cap, and its series are removed from every
//! family that carries it ([`Forget`]), so its slot is free for the next real value and the series
//! count stays bounded.
//!
//! Requests in flight have not been answered yet, but the in-flight gauges should name their model
//! from the first request on: an unproven value is *held* for them ([`LabelCap::hold`]) while at
//! least one request using it is in flight — at most `max` such values at once — and let go when
//! the last one ends unless a success admitted it meanwhile ([`LabelCap::release`]).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};

use super::labels::{OTHER, UNKNOWN, sanitize};

/// Whether the exchange behind a label value may admit it into its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The server answered it successfully: an unknown value takes a free slot.
    Yes,
    /// Not (yet) a success — a request in flight, an error: only already-admitted values are named.
    No,
}

/// Admits at most `max` distinct values, each only from a successful exchange; later or unproven
/// values map to [`OTHER`]. Values unused for `idle_ns` are let go by [`LabelCap::expire`].
///
/// One cap is shared by all families that carry the label (per view), so a value is either named in
/// every family or `other` in every family: ratios between families (tokens per request by model)
/// stay meaningful, and every family holds at most `max` distinct values (plus `other` and
/// `unknown`).
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    /// 0: values never expire.
    idle_ns: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Admitted value → capture-clock time it was last used.
    seen: HashMap<String, u64>,
    /// Unproven values held for requests in flight → how many.
    held: HashMap<String, usize>,
}

impl LabelCap {
    pub fn new(max: usize, idle_ns: u64) -> Self {
        LabelCap {
            max,
            idle_ns,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the maps are still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The label value for `raw` at `now_ns`: sanitised; [`UNKNOWN`] when absent or empty; the
    /// value itself when admitted before or admitted now (`admit` is [`Admit::Yes`] and a slot is
    /// free); else [`OTHER`].
    pub fn label(&self, raw: Option<&str>, admit: Admit, now_ns: u64) -> String {
        let value = match raw.map(sanitize) {
            None => return UNKNOWN.to_string(),
            Some(v) if v.is_empty() => return UNKNOWN.to_string(),
            Some(v) => v,
        };
        if value == OTHER || value == UNKNOWN {
            return value;
        }
        let mut st = self.lock();
        if let Some(last) = st.seen.get_mut(&value) {
            *last = (*last).max(now_ns);
            return value;
        }
        if admit == Admit::Yes && st.seen.len() < self.max {
            st.seen.insert(value.clone(), now_ns);
            return value;
        }
        OTHER.to_string()
    }

    /// The label value for a request now in flight: an admitted value, or an unproven one held
    /// until [`LabelCap::release`] (while fewer than `max` are held), else [`OTHER`] / [`UNKNOWN`].
    /// Every value returned that is neither must be released exactly once.
    pub fn hold(&self, raw: Option<&str>, now_ns: u64) -> String {
        let value = self.label(raw, Admit::No, now_ns);
        if value != OTHER {
            return value;
        }
        let Some(raw) = raw.map(sanitize).filter(|v| !v.is_empty() && v != OTHER) else {
            return value;
        };
        let mut st = self.lock();
        let max = self.max;
        if let Some(n) = st.held.get_mut(&raw) {
            *n += 1;
            return raw;
        }
        if st.held.len() < max {
            st.held.insert(raw.clone(), 1);
            return raw;
        }
        OTHER.to_string()
    }

    /// A request labelled `value` by [`LabelCap::hold`] ended. Returns true when `value` is now
    /// neither held nor admitted: its in-flight series must be removed.
    pub fn release(&self, value: &str) -> bool {
        let mut st = self.lock();
        let Some(n) = st.held.get_mut(value) else {
            return false;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        st.held.remove(value);
        !st.seen.contains_key(value)
    }

    /// Lets go of the values not used for the idle timeout before `now_ns`; returns them, so their
    /// series can be removed.
    pub fn expire(&self, now_ns: u64) -> Vec<String> {
        if self.idle_ns == 0 {
            return Vec::new();
        }
        let mut st = self.lock();
        let idle = self.idle_ns;
        let gone: Vec<String> = st
            .seen
            .iter()
            .filter(|(v, last)| now_ns.saturating_sub(**last) > idle && !st.held.contains_key(*v))
            .map(|(v, _)| v.clone())
            .collect();
        for v in &gone {
            st.seen.remove(v);
        }
        gone
    }

    /// Values admitted now.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A family whose series can be removed by one label's value (all series with `label == value`).
pub trait Forget: Send + Sync {
    /// The family's name (to scope a removal to one view's families).
    fn family_name(&self) -> String;
    /// Removes every series whose `label` is `value`; returns how many.
    fn forget(&self, label: &str, value: &str) -> usize;
}

impl<T: MetricVecBuilder + 'static> Forget for MetricVec<T> {
    fn family_name(&self) -> String {
        self.desc()
            .first()
            .map(|d| d.fq_name.clone())
            .unwrap_or_default()
    }

    fn forget(&self, label: &str, value: &str) -> usize {
        let Some(names) = self.desc().first().map(|d| d.variable_labels.clone()) else {
            return 0;
        };
        if !names.iter().any(|n| n == label) {
            return 0;
        }
        let mut removed = 0;
        for family in self.collect() {
            for metric in family.get_metric() {
                let pairs = metric.get_label();
                let get = |name: &str| {
                    pairs
                        .iter()
                        .find(|p| p.name() == name)
                        .map(|p| p.value().to_string())
                };
                if get(label).as_deref() != Some(value) {
                    continue;
                }
                // The exposition sorts label pairs by name; removal takes them in declared order.
                let values: Vec<String> =
                    names.iter().map(|n| get(n).unwrap_or_default()).collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                if self.remove_label_values(&refs).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts};

    #[test]
    fn only_successes_admit_and_junk_cannot_exhaust_the_cap() {
        let cap = LabelCap::new(2, 0);
        // 40 junk models, each answered with an error: none takes a slot.
        for i in 0..40 {
            assert_eq!(cap.label(Some(&format!("junk-{i}")), Admit::No, 1), OTHER);
        }
        assert_eq!(cap.len(), 0);
        // The real model's first success admits it; its failures are named from then on.
        assert_eq!(cap.label(Some("llama3"), Admit::Yes, 2), "llama3");
        assert_eq!(cap.label(Some("llama3"), Admit::No, 3), "llama3");
        assert_eq!(cap.label(Some("qwen"), Admit::Yes, 4), "qwen");
        // Full: a third success is `other`, and stays so while the others are in use.
        assert_eq!(cap.label(Some("mistral"), Admit::Yes, 5), OTHER);
        // Absent and empty values never consume a slot.
        assert_eq!(cap.label(None, Admit::Yes, 6), UNKNOWN);
        assert_eq!(cap.label(Some("  "), Admit::Yes, 6), UNKNOWN);
    }

    #[test]
    fn idle_values_expire_and_free_their_slot() {
        let cap = LabelCap::new(1, 100);
        assert_eq!(cap.label(Some("a"), Admit::Yes, 1_000), "a");
        assert_eq!(cap.label(Some("b"), Admit::Yes, 1_050), OTHER);
        // Used again at 1_080: not idle at 1_150.
        assert_eq!(cap.label(Some("a"), Admit::No, 1_080), "a");
        assert!(cap.expire(1_150).is_empty());
        assert_eq!(cap.expire(1_181), vec!["a".to_string()]);
        assert_eq!(cap.label(Some("b"), Admit::Yes, 1_200), "b");
    }

    #[test]
    fn in_flight_values_are_held_then_released_or_admitted() {
        let cap = LabelCap::new(2, 0);
        // Two junk requests in flight hold both slots of the in-flight pool...
        assert_eq!(cap.hold(Some("junk-1"), 1), "junk-1");
        assert_eq!(cap.hold(Some("junk-2"), 1), "junk-2");
        assert_eq!(cap.hold(Some("junk-3"), 1), OTHER);
        // ...but never an admission slot: a real model's success is still admitted.
        assert_eq!(cap.label(Some("llama3"), Admit::Yes, 2), "llama3");
        assert_eq!(cap.hold(Some("llama3"), 2), "llama3");
        // Both junk requests fail: released, their series must go.
        assert!(cap.release("junk-1"));
        assert!(cap.release("junk-2"));
        assert_eq!(cap.len(), 1);
        // A held value that a success admitted stays.
        assert_eq!(cap.hold(Some("qwen"), 3), "qwen");
        assert_eq!(cap.hold(Some("qwen"), 3), "qwen");
        assert!(!cap.release("qwen"));
        assert_eq!(cap.label(Some("qwen"), Admit::Yes, 4), "qwen");
        assert!(!cap.release("qwen"));
        assert!(!cap.release("never-held"));
        assert_eq!(cap.len(), 2);
    }

    #[test]
    fn zero_idle_never_expires() {
        let cap = LabelCap::new(1, 0);
        assert_eq!(cap.label(Some("a"), Admit::Yes, 0), "a");
        assert!(cap.expire(u64::MAX).is_empty());
    }

    #[test]
    fn forget_removes_every_series_with_the_value() {
        let v = IntCounterVec::new(Opts::new("t_total", "t"), &["model", "status"]).expect("vec");
        v.with_label_values(&["a", "2xx"]).inc();
        v.with_label_values(&["a", "5xx"]).inc();
        v.with_label_values(&["b", "2xx"]).inc();
        assert_eq!(v.forget("model", "a"), 2);
        assert_eq!(v.forget("nope", "a"), 0);
        let left: Vec<String> = v.collect()[0]
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value().to_string())
            .collect();
        assert_eq!(left, vec!["b".to_string()]);
        assert_eq!(v.family_name(), "t_total");
    }
}
