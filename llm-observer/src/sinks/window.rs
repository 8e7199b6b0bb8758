//! Sliding window behind `llm_tokens_per_second`.
//!
//! Output tokens are known only when an exchange ends, but they were generated over its lifetime.
//! Adding them all at the end would turn every long stream into a spike, so each exchange's tokens
//! are spread uniformly over its generation interval (first → last token event for streams, request
//! start → response end otherwise) into one-second buckets of kernel monotonic time. The gauge is
//! the sum of the last `W` complete seconds divided by `W`: the current, partial second is left out
//! so the value does not sag at the start of every second.
//!
//! Memory is bounded: per key at most `W + 1` buckets are kept (an interval is clipped to the `W`
//! seconds before its end, since older seconds can never be inside a future window), and keys are
//! bounded by the label caps.

use std::collections::{BTreeMap, HashMap};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Key: the label values of one `llm_tokens_per_second` series.
pub type RateKey = Vec<String>;

#[derive(Debug)]
pub struct TokenRateWindow {
    window_secs: u64,
    /// Per series: second index (monotonic ns / 1e9) → tokens generated in that second.
    buckets: HashMap<RateKey, BTreeMap<u64, f64>>,
}

impl TokenRateWindow {
    /// `window_secs` is clamped to at least 1.
    pub fn new(window_secs: u64) -> Self {
        TokenRateWindow {
            window_secs: window_secs.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Records `tokens` generated uniformly over `[start_ns, end_ns]` (a point when equal).
    pub fn add(&mut self, key: RateKey, tokens: u64, start_ns: u64, end_ns: u64) {
        let series = self.buckets.entry(key).or_default();
        if tokens == 0 {
            return;
        }
        let end_ns = end_ns.max(start_ns);
        if end_ns == start_ns {
            *series.entry(end_ns / NS_PER_SEC).or_default() += tokens as f64;
            return;
        }
        // Multiply before dividing so whole shares stay exact in f64.
        let (total, span) = (tokens as f64, (end_ns - start_ns) as f64);
        // Seconds more than `W` before the end can never fall inside a later window: skip them
        // (and their share of tokens) instead of allocating buckets for them.
        let mut t = start_ns.max(end_ns.saturating_sub(self.window_secs * NS_PER_SEC));
        while t < end_ns {
            let sec = t / NS_PER_SEC;
            let next = ((sec + 1) * NS_PER_SEC).min(end_ns);
            *series.entry(sec).or_default() += total * (next - t) as f64 / span;
            t = next;
        }
    }

    /// Tokens per second over the `W` complete seconds before the one containing `now_ns`, for
    /// every key ever seen (0 when idle, so series do not flap). Prunes buckets that are out of
    /// every future window.
    pub fn rates(&mut self, now_ns: u64) -> Vec<(RateKey, f64)> {
        let now_sec = now_ns / NS_PER_SEC;
        let first = now_sec.saturating_sub(self.window_secs);
        let w = self.window_secs as f64;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (key, series) in self.buckets.iter_mut() {
            // Everything before `first` is out of this and every later window.
            *series = series.split_off(&first);
            // fold from +0.0: `Sum` for f64 starts at -0.0, which would be exported as "-0".
            let sum = series
                .range(first..now_sec)
                .fold(0.0, |acc, (_, v)| acc + v);
            out.push((key.clone(), sum / w));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_SEC;

    fn rate(w: &mut TokenRateWindow, now: u64) -> f64 {
        let r = w.rates(now);
        assert_eq!(r.len(), 1);
        r[0].1
    }

    #[test]
    fn spread_over_interval() {
        let mut w = TokenRateWindow::new(10);
        // 40 tokens from t=95 s to t=99 s: 10 per second in seconds 95..=98.
        w.add(vec!["m".into()], 40, 95 * S, 99 * S);
        // Window at now=100.5 s: seconds 90..=99 → 40 tokens / 10 s.
        assert_eq!(rate(&mut w, 100 * S + S / 2), 4.0);
        // At now=106 s: seconds 96..=105 → 30 tokens.
        assert_eq!(rate(&mut w, 106 * S), 3.0);
        // At now=108 s the last bucket (98) is still inside; at 109 s nothing is.
        assert_eq!(rate(&mut w, 108 * S), 1.0);
        let idle = rate(&mut w, 109 * S);
        assert_eq!(idle, 0.0);
        assert!(idle.is_sign_positive());
    }

    #[test]
    fn point_mass_and_current_second_excluded() {
        let mut w = TokenRateWindow::new(5);
        w.add(vec!["m".into()], 7, 20 * S + 3, 20 * S + 3);
        // The current (partial) second is not in the window yet.
        assert_eq!(rate(&mut w, 20 * S + S / 2), 0.0);
        assert_eq!(rate(&mut w, 21 * S), 7.0 / 5.0);
    }

    #[test]
    fn long_interval_clipped_to_window() {
        let mut w = TokenRateWindow::new(2);
        // 1000 tokens over 100 s: 10/s. Only the last 2 s are kept.
        w.add(vec!["m".into()], 1000, 0, 100 * S);
        let series = w.buckets.values().next().unwrap();
        assert!(series.len() <= 3, "{series:?}");
        // Seconds 98 and 99 hold 10 tokens each: 20 tokens / 2 s.
        assert_eq!(rate(&mut w, 100 * S), 10.0);
    }
}
