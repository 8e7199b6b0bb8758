//! Exact expectations on a `/metrics` exposition, waited for with a deadline: the agent decodes
//! captured bytes asynchronously, so a test polls until every expected value is there and, when
//! the deadline passes, reports each mismatch instead of only the first. Once they hold, the agent
//! is waited for until it is quiescent ([`super::quiesce`]) and the expectations are checked once
//! more on a scrape taken after that, so a late over-count cannot pass.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::exposition::Exposition;
use super::quiesce::wait_quiescent;
use super::stack::scrape;

/// How a metric is selected and what it must read.
#[derive(Clone, Debug)]
pub struct Expectation {
    pub name: String,
    /// A subset of labels: the value is the sum over all samples that carry them.
    pub labels: Vec<(String, String)>,
    pub want: Want,
}

/// The condition on the summed value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Want {
    Exactly(f64),
    AtLeast(f64),
    AtMost(f64),
}

/// A list of expectations, built fluently:
/// `Expected::new().exactly("llm_requests_total", &[("model", "m1")], 5.0)`.
#[derive(Clone, Debug, Default)]
pub struct Expected(pub Vec<Expectation>);

impl Expected {
    pub fn new() -> Expected {
        Expected::default()
    }

    fn push(mut self, name: &str, labels: &[(&str, &str)], want: Want) -> Expected {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0.push(Expectation {
            name: name.to_owned(),
            labels,
            want,
        });
        self
    }

    pub fn exactly(self, name: &str, labels: &[(&str, &str)], value: f64) -> Expected {
        self.push(name, labels, Want::Exactly(value))
    }

    pub fn at_least(self, name: &str, labels: &[(&str, &str)], value: f64) -> Expected {
        self.push(name, labels, Want::AtLeast(value))
    }

    pub fn at_most(self, name: &str, labels: &[(&str, &str)], value: f64) -> Expected {
        self.push(name, labels, Want::AtMost(value))
    }

    /// `family{labels} | expected | observed`, one row per expectation (printed by passing tests, so
    /// `--nocapture` shows the whole expected-vs-observed table).
    pub fn table(&self, e: &Exposition) -> String {
        let mut out = String::new();
        for x in &self.0 {
            let labels: Vec<(&str, &str)> = x
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let shown: Vec<String> = x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let want = match x.want {
                Want::Exactly(v) => format!("= {v}"),
                Want::AtLeast(v) => format!(">= {v}"),
                Want::AtMost(v) => format!("<= {v}"),
            };
            let _ = writeln!(
                out,
                "| {}{{{}}} | {want} | {} |",
                x.name,
                shown.join(","),
                e.sum(&x.name, &labels)
            );
        }
        out
    }

    /// One line per expectation the exposition does not meet.
    pub fn mismatches(&self, e: &Exposition) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|x| {
                let labels: Vec<(&str, &str)> = x
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let got = e.sum(&x.name, &labels);
                let ok = match x.want {
                    Want::Exactly(v) => got == v,
                    Want::AtLeast(v) => got >= v,
                    Want::AtMost(v) => got <= v,
                };
                (!ok).then(|| format!("{}{:?}: want {:?}, got {got}", x.name, x.labels, x.want))
            })
            .collect()
    }
}

/// Scrapes `addr` until every expectation holds, then waits until the agent is quiescent and
/// checks them once more on the final scrape (returned). After `timeout`, or when the final
/// scrape differs, an error listing the mismatches and the `llm_*` samples of the last scrape.
pub fn wait_for_expected(
    addr: SocketAddr,
    expected: &Expected,
    timeout: Duration,
) -> anyhow::Result<Exposition> {
    let deadline = Instant::now() + timeout;
    loop {
        let scraped = scrape(addr);
        let problems = match &scraped {
            Ok(e) => expected.mismatches(e),
            Err(err) => vec![format!("{err:#}")],
        };
        if problems.is_empty() && scraped.is_ok() {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = wait_quiescent(addr, left.max(Duration::from_secs(5)))?;
            let late = expected.mismatches(&last);
            if !late.is_empty() {
                anyhow::bail!(
                    "the expectations held, but not once the agent had applied everything:\n  {}\n{}",
                    late.join("\n  "),
                    llm_samples(&last)
                );
            }
            print!("{}", expected.table(&last));
            return Ok(last);
        }
        if Instant::now() >= deadline {
            let mut msg = format!(
                "after {timeout:?}, {} expectation(s) unmet:\n",
                problems.len()
            );
            for p in &problems {
                let _ = writeln!(msg, "  {p}");
            }
            if let Ok(e) = &scraped {
                msg.push_str(&llm_samples(e));
            }
            anyhow::bail!(msg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn llm_samples(e: &Exposition) -> String {
    let mut msg = String::from("last scrape (llm_*):\n");
    for s in e.samples.iter().filter(|s| s.name.starts_with("llm_")) {
        let _ = writeln!(msg, "  {} {:?} {}", s.name, s.labels, s.value);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_mismatch() {
        let e = Exposition::parse(
            "llm_requests_total{model=\"m1\",status=\"2xx\"} 4\nllm_requests_total{model=\"m1\",status=\"5xx\"} 1\n",
        )
        .expect("valid");
        let ok = Expected::new()
            .exactly("llm_requests_total", &[("model", "m1")], 5.0)
            .at_least("llm_requests_total", &[("status", "2xx")], 4.0)
            .at_most("llm_requests_total", &[("status", "5xx")], 1.0)
            .exactly("llm_requests_total", &[("model", "m2")], 0.0);
        assert!(ok.mismatches(&e).is_empty());
        let bad = Expected::new()
            .exactly("llm_requests_total", &[("model", "m1")], 6.0)
            .at_least("missing_total", &[], 1.0);
        let m = bad.mismatches(&e);
        assert_eq!(m.len(), 2);
        assert!(m[0].contains("want Exactly(6.0), got 5"), "{}", m[0]);
    }
}
