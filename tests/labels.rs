//! Root end-to-end test of user-defined labels: the real agent, started with
//! `--label-header tenant:8=x-tenant --label-body-field user=/user` and a `--service` rule naming the
//! emulator's port, watches the emulator while
//! curl makes chat requests for two tenants (one naming a user in the body), and one without
//! either. Once the agent is quiescent, the request and token families carry the exact values in
//! both views, a request without them is labelled `""`, and every series names the service.
//!
//! Needs root, BPF and the release agent (`LLM_OBSERVER_BIN`); under `CI=true` a missing piece
//! fails the test instead of skipping it.

use std::time::Duration;

use llm_observer_tests::harness::{
    guard,
    quiesce::wait_quiescent,
    stack::{Agent, EmulatorProc, curl_status},
};
use serde_json::json;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(30);

fn chat(url: &str, tenant: Option<&str>, user: Option<&str>, model: &str) {
    let mut body = json!({"model": model, "max_tokens": 3,
        "messages": [{"role": "user", "content": "one two three four"}]});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let header = tenant.map(|t| format!("X-Tenant: {t}"));
    let body = body.to_string();
    let mut args = vec!["-H", "content-type: application/json", "-d", &body, url];
    if let Some(h) = &header {
        args.extend(["-H", h]);
    }
    assert_eq!(curl_status(&args).expect("curl runs"), "200");
}

#[test]
#[ignore = "needs root, BPF and the release agent"]
fn header_and_body_field_labels_are_exact_in_both_views() {
    if let Some(why) = guard::agent_missing() {
        guard::skip_or_fail::<()>(&why);
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "5", "--token-interval-ms", "1"])
        .expect("emulator starts");
    let port = emu.addr().port().to_string();
    let service = format!("chat-api=port:{port}");
    let agent = Agent::start(&[
        "--port",
        &port,
        "--service",
        "nothing=port:1",
        "--service",
        &service,
        "--label-header",
        "tenant:8=x-tenant",
        "--label-body-field",
        "user=/user",
    ])
    .expect("agent starts");
    let model = format!("labels:{}", emu.addr().port());
    let url = format!("{}/v1/chat/completions", emu.base_url());
    for _ in 0..3 {
        chat(&url, Some("acme"), Some("u-1"), &model);
    }
    for _ in 0..2 {
        chat(&url, Some("globex"), None, &model);
    }
    chat(&url, None, None, &model);
    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent");
    // 4 prompt words and 3 output tokens per request (the emulator's accounting).
    for (tenant, user, n) in [("acme", "u-1", 3.0), ("globex", "", 2.0), ("", "", 1.0)] {
        let l = [
            ("model", model.as_str()),
            ("tenant", tenant),
            ("user", user),
            ("service", "chat-api"),
        ];
        assert_eq!(e.sum("llm_requests_total", &l), n, "{tenant}/{user}");
        assert_eq!(e.sum("llm_prompt_tokens_total", &l), 4.0 * n);
        assert_eq!(e.sum("llm_response_tokens_total", &l), 3.0 * n);
        assert_eq!(e.sum("llm_client_requests_total", &l), n, "curl's view");
        assert_eq!(e.sum("llm_client_prompt_tokens_total", &l), 4.0 * n);
    }
    assert_eq!(e.sum("llm_requests_total", &[("model", &model)]), 6.0);
    // The gauges carry the labels too, and are back to 0.
    assert_eq!(
        e.sum(
            "llm_active_requests",
            &[("tenant", "acme"), ("user", "u-1")]
        ),
        0.0
    );
    assert!(
        e.matching("llm_active_requests", &[("tenant", "acme")])
            .count()
            > 0,
        "the in-flight gauge is labelled"
    );
}
