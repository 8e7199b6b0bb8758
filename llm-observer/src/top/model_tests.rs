use super::*;
use crate::top::exposition::parse;

#[test]
fn quantile_interpolates_like_histogram_quantile() {
    let b = [
        (0.25, 4.0),
        (0.5, 12.0),
        (1.0, 18.0),
        (2.0, 20.0),
        (f64::INFINITY, 20.0),
    ];
    // Rank 10 lies in (0.25, 0.5], 6 of its 8 observations in: 0.25 + 0.25 * 6/8.
    assert_eq!(quantile(0.5, &b), Some(0.4375));
    // Rank 19 in (1, 2], 1 of 2 in.
    assert_eq!(quantile(0.95, &b), Some(1.5));
    // Rank 2 in the first bucket, interpolated from 0.
    assert_eq!(quantile(0.1, &b), Some(0.125));
    // A rank in the +Inf bucket answers the highest finite bound.
    let tail = [(0.5, 1.0), (1.0, 1.0), (f64::INFINITY, 4.0)];
    assert_eq!(quantile(0.5, &tail), Some(1.0));
    // No observations, or no +Inf bucket: nothing to say.
    assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
    assert_eq!(quantile(0.5, &[(1.0, 3.0)]), None);
    assert_eq!(quantile(0.5, &[]), None);
}

fn ttft(server: &str, model: &str, counts: [u32; 4]) -> String {
    let mut s = String::new();
    for (le, n) in ["0.25", "0.5", "1", "+Inf"].iter().zip(counts) {
        s.push_str(&format!(
            "llm_time_to_first_token_seconds_bucket{{api=\"openai\",model=\"{model}\",server=\"{server}\",le=\"{le}\"}} {n}\n"
        ));
    }
    s
}

const FIRST: &str = "\
llm_requests_total{api=\"openai\",model=\"m1\",server=\"vllm\",status=\"2xx\"} 10
llm_requests_total{api=\"openai\",model=\"m1\",server=\"vllm\",status=\"5xx\"} 2
llm_response_tokens_total{model=\"m1\",server=\"vllm\",source=\"reported\"} 100
llm_active_requests{model=\"m1\",server=\"vllm\"} 1
llm_queue_size{model=\"m1\",server=\"vllm\"} 0
llm_inference_errors_total{model=\"m1\",server=\"vllm\",type=\"server_error\"} 2
llm_client_requests_total{model=\"m1\",process=\"agent.py\",status=\"2xx\"} 3
llm_client_requests_total{model=\"m2\",process=\"agent.py\",status=\"2xx\"} 1
llm_client_prompt_tokens_total{model=\"m1\",process=\"agent.py\",source=\"reported\"} 40
llm_client_response_tokens_total{model=\"m1\",process=\"agent.py\",source=\"reported\"} 12
llm_client_response_tokens_total{model=\"m1\",process=\"agent.py\",source=\"counted\"} 4
llm_client_cost_usd_total{model=\"m1\",process=\"agent.py\"} 0.25
llm_client_tool_calls_total{model=\"m1\",process=\"agent.py\",tool=\"search\"} 2
llm_client_tool_calls_total{model=\"m1\",process=\"agent.py\",tool=\"read\"} 1
";

#[test]
fn first_scrape_has_totals_and_cumulative_ttft_but_no_rates() {
    let text = format!("{FIRST}{}", ttft("vllm", "m1", [2, 6, 8, 8]));
    let cur = parse(&text).expect("parses");
    let v = compute(&cur, None);
    assert_eq!(
        v.servers,
        vec![ServerRow {
            server: "vllm".into(),
            model: "m1".into(),
            requests: 12.0,
            req_per_s: None,
            // Over all 8 observations: rank 4 in (0.25, 0.5], 2 of 4 in.
            ttft_p50: Some(0.375),
            // Rank 7.6 in (0.5, 1], 1.6 of 2 in: 0.5 + 0.5 * 0.8.
            ttft_p95: Some(0.5 + 0.5 * (0.95 * 8.0 - 6.0) / 2.0),
            tokens_per_s: None,
            active: 1.0,
            queue: 0.0,
            errors: 2.0,
        }]
    );
    assert_eq!(
        v.agents,
        vec![AgentRow {
            process: "agent.py".into(),
            calls: 4.0,
            prompt_tokens: 40.0,
            response_tokens: 16.0,
            cost_usd: 0.25,
            tool_calls: 3.0,
        }]
    );
}

#[test]
fn second_scrape_gives_rates_and_ttft_of_the_interval() {
    let first = format!("{FIRST}{}", ttft("vllm", "m1", [2, 6, 8, 8]));
    // Two seconds later: 4 more requests, 30 more tokens, 4 more TTFTs all in (0.5, 1]; a new
    // server appears with only a request in flight.
    let second = format!(
        "{}{}{}",
        FIRST
            .replace("status=\"2xx\"} 10", "status=\"2xx\"} 14")
            .replace("source=\"reported\"} 100", "source=\"reported\"} 130"),
        ttft("vllm", "m1", [2, 6, 12, 12]),
        "llm_active_requests{model=\"m9\",server=\"ollama\"} 1\n"
    );
    let (p, c) = (
        parse(&first).expect("first"),
        parse(&second).expect("second"),
    );
    let v = compute(&c, Some((&p, 2.0)));
    assert_eq!(v.servers.len(), 2);
    let ollama = &v.servers[0];
    assert_eq!(
        (ollama.server.as_str(), ollama.model.as_str()),
        ("ollama", "m9")
    );
    assert_eq!((ollama.requests, ollama.active), (0.0, 1.0));
    assert_eq!(ollama.req_per_s, Some(0.0));
    assert_eq!((ollama.ttft_p50, ollama.ttft_p95), (None, None));
    let vllm = &v.servers[1];
    assert_eq!(vllm.requests, 16.0);
    assert_eq!(vllm.req_per_s, Some(2.0));
    assert_eq!(vllm.tokens_per_s, Some(15.0));
    // Only the interval's 4 observations, all in (0.5, 1]: rank 2 of 4 is halfway.
    assert_eq!(vllm.ttft_p50, Some(0.75));
    assert_eq!(vllm.ttft_p95, Some(0.5 + 0.5 * (0.95 * 4.0) / 4.0));
}

#[test]
fn an_idle_interval_keeps_cumulative_ttft_and_a_reset_drops_rates() {
    let a = format!("{FIRST}{}", ttft("vllm", "m1", [2, 6, 8, 8]));
    let (p, c) = (parse(&a).expect("a"), parse(&a).expect("a"));
    let idle = compute(&c, Some((&p, 1.0)));
    assert_eq!(idle.servers[0].req_per_s, Some(0.0));
    assert_eq!(idle.servers[0].ttft_p50, Some(0.375));
    // The agent restarted: counters below the previous scrape's.
    let restarted = format!(
        "{}{}",
        FIRST.replace("status=\"2xx\"} 10", "status=\"2xx\"} 1"),
        ttft("vllm", "m1", [1, 1, 1, 1])
    );
    let r = parse(&restarted).expect("restarted");
    let after = compute(&r, Some((&p, 1.0)));
    assert_eq!(after.servers[0].req_per_s, None);
    // TTFT falls back to the new process's cumulative buckets: rank 0.5 in the first.
    assert_eq!(after.servers[0].ttft_p50, Some(0.125));
}
