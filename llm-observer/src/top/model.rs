//! The rows `top` shows, computed from the current scrape and (for rates and recent TTFT) the one
//! before it. Pure: no I/O, no clock; the caller passes the seconds between the two scrapes.

use std::collections::BTreeMap;

use super::exposition::Sample;

/// One server (the `server` label) and model: the server view (`llm_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    pub server: String,
    pub model: String,
    /// Requests served since the agent started (every status).
    pub requests: f64,
    /// Requests per second since the previous scrape; `None` on the first one or after a reset.
    pub req_per_s: Option<f64>,
    /// TTFT quantiles over the streamed requests since the previous scrape, or over all of them
    /// when none arrived in between (so an idle server still shows its history).
    pub ttft_p50: Option<f64>,
    pub ttft_p95: Option<f64>,
    /// Completion tokens per second since the previous scrape.
    pub tokens_per_s: Option<f64>,
    pub active: f64,
    pub queue: f64,
    pub errors: f64,
}

/// One observed client process: the client view (`llm_client_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub process: String,
    pub calls: f64,
    pub prompt_tokens: f64,
    pub response_tokens: f64,
    pub cost_usd: f64,
    pub tool_calls: f64,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    pub servers: Vec<ServerRow>,
    pub agents: Vec<AgentRow>,
}

type ServerKey = (String, String);

/// Sums of one family per (server, model), other labels aggregated away (as `sum by`).
fn by_server(samples: &[Sample], name: &str) -> BTreeMap<ServerKey, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let key = (s.label("server").to_owned(), s.label("model").to_owned());
        *out.entry(key).or_insert(0.0) += s.value;
    }
    out
}

fn by_process(samples: &[Sample], name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        *out.entry(s.label("process").to_owned()).or_insert(0.0) += s.value;
    }
    out
}

/// Cumulative TTFT bucket counts per (server, model), by upper bound, ascending (`+Inf` last).
fn ttft_buckets(samples: &[Sample]) -> BTreeMap<ServerKey, Vec<(f64, f64)>> {
    let mut sums: BTreeMap<ServerKey, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "llm_time_to_first_token_seconds_bucket")
    {
        let Ok(le) = parse_le(s.label("le")) else {
            continue;
        };
        let key = (s.label("server").to_owned(), s.label("model").to_owned());
        let buckets = sums.entry(key).or_default();
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += s.value,
            None => buckets.push((le, s.value)),
        }
    }
    for b in sums.values_mut() {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    sums
}

fn parse_le(s: &str) -> Result<f64, std::num::ParseFloatError> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        _ => s.parse(),
    }
}

/// `histogram_quantile` over cumulative `buckets` (ascending bounds, `+Inf` last): linear
/// interpolation inside the bucket holding the rank; a rank in the `+Inf` bucket answers the
/// highest finite bound, as Prometheus does. `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if !last_le.is_infinite() || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    None
}

/// Per-bucket `cur - prev`, or `None` when a counter went backwards (the agent restarted) or the
/// bounds differ.
fn bucket_delta(cur: &[(f64, f64)], prev: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    if cur.len() != prev.len() {
        return None;
    }
    cur.iter()
        .zip(prev)
        .map(|(&(le, c), &(ple, p))| (le == ple && c >= p).then_some((le, c - p)))
        .collect()
}

/// Rate of a counter between two scrapes `dt` seconds apart; `None` without a previous value,
/// a positive interval, or after a reset.
fn rate(cur: f64, prev: Option<f64>, dt: f64) -> Option<f64> {
    let prev = prev?;
    (dt > 0.0 && cur >= prev).then(|| (cur - prev) / dt)
}

/// The rows of `cur`, with rates against `prev` (the previous scrape and the seconds since it).
pub fn compute(cur: &[Sample], prev: Option<(&[Sample], f64)>) -> View {
    let requests = by_server(cur, "llm_requests_total");
    let tokens = by_server(cur, "llm_response_tokens_total");
    let active = by_server(cur, "llm_active_requests");
    let queue = by_server(cur, "llm_queue_size");
    let errors = by_server(cur, "llm_inference_errors_total");
    let buckets = ttft_buckets(cur);
    let (prev_requests, prev_tokens, prev_buckets, dt) = match prev {
        Some((p, dt)) => (
            Some(by_server(p, "llm_requests_total")),
            Some(by_server(p, "llm_response_tokens_total")),
            Some(ttft_buckets(p)),
            dt,
        ),
        None => (None, None, None, 0.0),
    };

    // A row for every (server, model) any family names: a server with only requests in flight
    // shows up before its first completes.
    let mut keys: Vec<&ServerKey> = requests
        .keys()
        .chain(active.keys())
        .chain(queue.keys())
        .chain(errors.keys())
        .chain(buckets.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let get = |m: &BTreeMap<ServerKey, f64>, k: &ServerKey| m.get(k).copied().unwrap_or(0.0);
    let servers = keys
        .into_iter()
        .map(|k| {
            let cum = buckets.get(k).map(Vec::as_slice).unwrap_or(&[]);
            let recent = prev_buckets
                .as_ref()
                .and_then(|p| p.get(k))
                .and_then(|p| bucket_delta(cum, p))
                .filter(|d| d.last().is_some_and(|&(_, n)| n > 0.0));
            let window = recent.as_deref().unwrap_or(cum);
            let prev_of = |m: &Option<BTreeMap<ServerKey, f64>>| {
                // A key absent before is a series born since: it started from zero.
                m.as_ref().map(|m| m.get(k).copied().unwrap_or(0.0))
            };
            ServerRow {
                server: k.0.clone(),
                model: k.1.clone(),
                requests: get(&requests, k),
                req_per_s: rate(get(&requests, k), prev_of(&prev_requests), dt),
                ttft_p50: quantile(0.5, window),
                ttft_p95: quantile(0.95, window),
                tokens_per_s: rate(get(&tokens, k), prev_of(&prev_tokens), dt),
                active: get(&active, k),
                queue: get(&queue, k),
                errors: get(&errors, k),
            }
        })
        .collect();

    let calls = by_process(cur, "llm_client_requests_total");
    let prompt = by_process(cur, "llm_client_prompt_tokens_total");
    let response = by_process(cur, "llm_client_response_tokens_total");
    let cost = by_process(cur, "llm_client_cost_usd_total");
    let tools = by_process(cur, "llm_client_tool_calls_total");
    let pget = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let agents = calls
        .keys()
        .map(|p| AgentRow {
            process: p.clone(),
            calls: pget(&calls, p),
            prompt_tokens: pget(&prompt, p),
            response_tokens: pget(&response, p),
            cost_usd: pget(&cost, p),
            tool_calls: pget(&tools, p),
        })
        .collect();
    View { servers, agents }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
