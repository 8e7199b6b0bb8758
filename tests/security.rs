//! Root tests of the agent's security properties (docs/security.md):
//!
//! - secrets planted in requests (an `Authorization: Bearer` header, an `x-api-key` header, a
//!   `?key=` URL parameter, an `"api_key"` JSON field, unique prompt text) appear nowhere in what the
//!   agent writes at `--log trace` — stdout, stderr, `/metrics` — nor in `llm-observer trace`
//!   output (without `--raw`); nor do the credentials a scraper sends to the agent's basic auth;
//! - the agent runs as a non-root uid with exactly the documented capabilities (setpriv: ambient,
//!   inheritable and bounding sets restricted) and counts a request exactly; without any one of
//!   them it fails at once, naming it.
//!
//! Like the other root tests they need root, BPF, the release agent (`LLM_OBSERVER_BIN`) and the
//! emulator; under `CI=true` a missing piece fails the test instead of skipping it.

use std::{process::Command, time::Duration};

use llm_observer_tests::harness::{
    expect::{Expected, wait_for_expected},
    guard,
    process::{Proc, Stream},
    stack::{Agent, EmulatorProc, curl_status, path_from_env},
};
use serde_json::{Value, json};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const SETTLE: Duration = Duration::from_secs(30);

const BEARER: &str = "sk-planted-bearer-5f2a9c71";
const X_API_KEY: &str = "planted-xapikey-7d1e44b0";
const URL_KEY: &str = "planted-urlkey-93ab10e2";
const BODY_KEY: &str = "planted-bodykey-c81f07d3";
/// Prompt words no log line, label or trace field could contain by chance.
const PROMPT: &str = "zebrafinch quartzlamp umbrellacactus";

fn agent_bin() -> std::path::PathBuf {
    path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer")
}

/// POSTs `body` to `url` with every credential planted; returns the HTTP status.
fn curl_planted(url: &str, body: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "30", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {BEARER}")])
        .args(["-H", &format!("x-api-key: {X_API_KEY}")])
        .args(["-H", "anthropic-version: 2023-06-01"])
        .args(["-d", body, url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("curl's status")
}

fn messages() -> Value {
    json!([{"role": "user", "content": PROMPT}])
}

/// Starts `llm-observer <args>` (a trace) and waits until its capture is attached.
fn start_trace(args: &[&str]) -> Proc {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args);
    let mut p = Proc::spawn("llm-observer trace", cmd).expect("start the trace");
    p.wait_for_line(Duration::from_secs(60), |s, l| {
        (s == Stream::Stderr && l.contains("tracking")).then_some(())
    })
    .expect("trace attaches");
    p
}

#[test]
fn planted_secrets_reach_no_log_trace_or_metric() {
    if !guard::agent_ready() {
        return;
    }
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "5", "--token-interval-ms", "1"])
        .expect("emulator");
    let port = emu.addr().port().to_string();
    let agent = Agent::start(&["--log", "trace", "--port", &port]).expect("agent");
    let mut trace = start_trace(&["--log", "trace", "trace", "--port", &port]);
    // Proof that the secrets are really captured: a raw trace that shows them (it is not searched).
    let mut shown = start_trace(&["trace", "--raw", "--show-secrets", "--port", &port]);

    let base = emu.base_url();
    let q = format!("?key={URL_KEY}");
    let (openai, anthropic, ollama) = (
        format!("sec-openai:{port}"),
        format!("sec-anthropic:{port}"),
        format!("sec-ollama:{port}"),
    );
    let requests = [
        (
            format!("{base}/v1/chat/completions{q}"),
            json!({"model": openai, "messages": messages(), "max_tokens": 3, "stream": true,
                   "stream_options": {"include_usage": true}, "api_key": BODY_KEY}),
        ),
        (
            format!("{base}/v1/messages{q}"),
            json!({"model": anthropic, "messages": messages(), "max_tokens": 3, "api_key": BODY_KEY}),
        ),
        (
            format!("{base}/api/chat{q}"),
            json!({"model": ollama, "messages": messages(), "stream": false,
                   "options": {"num_predict": 3}, "api_key": BODY_KEY}),
        ),
    ];
    for (url, body) in &requests {
        assert_eq!(curl_planted(url, &body.to_string()), 200, "{url}");
    }
    // A body that does not parse, carrying the secrets too: the decode-error paths must not leak.
    let broken =
        format!(r#"{{"model": "sec-broken", "api_key": "{BODY_KEY}", "prompt": "{PROMPT}""#);
    assert_eq!(
        curl_planted(&format!("{base}/v1/chat/completions{q}"), &broken),
        400
    );

    let secrets: Vec<&str> = [BEARER, X_API_KEY, URL_KEY, BODY_KEY, PROMPT]
        .into_iter()
        .chain(PROMPT.split(' '))
        .collect();
    let mut unseen = secrets.clone();
    shown
        .wait_for_line(SETTLE, |s, l| {
            unseen.retain(|secret| !(s == Stream::Stdout && l.contains(secret)));
            unseen.is_empty().then_some(())
        })
        .expect("the raw trace with --show-secrets shows every planted secret");
    drop(shown);

    // Exactly the three good requests (both views) are counted before anything is read.
    let mut expected = Expected::new();
    for (api, model) in [
        ("openai", &openai),
        ("anthropic", &anthropic),
        ("ollama", &ollama),
    ] {
        expected = expected
            .exactly(
                "llm_requests_total",
                &[("api", api), ("model", model), ("process", "llm-emulator")],
                1.0,
            )
            .exactly(
                "llm_client_requests_total",
                &[("api", api), ("model", model)],
                1.0,
            );
    }
    let exposition = wait_for_expected(agent.addr(), &expected, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent:\n{}", agent.proc.output()));
    // The trace shows both views of the three good exchanges.
    let mut seen = 0;
    trace
        .wait_for_line(SETTLE, |s, l| {
            let ours = [&openai, &anthropic, &ollama]
                .iter()
                .any(|m| l.contains(&format!("\"request_model\":\"{m}\"")));
            seen += usize::from(s == Stream::Stdout && ours);
            (seen == 6).then_some(())
        })
        .expect("six exchange lines");
    let metrics_text = llm_observer_tests::harness::http::request(
        agent.addr(),
        "GET",
        "/metrics",
        b"",
        Duration::from_secs(10),
    )
    .expect("scrape")
    .body_text();

    let mut agent = agent;
    agent
        .proc
        .terminate(Duration::from_secs(10))
        .expect("agent stops");
    trace
        .terminate(Duration::from_secs(10))
        .expect("trace stops");
    let everything = [
        ("agent stdout+stderr", agent.proc.output()),
        ("trace stdout+stderr", trace.output()),
        ("/metrics", metrics_text),
    ];
    // Not vacuous: the logs really are at trace level, the trace shows paths (query cut off).
    let agent_log = &everything[0].1;
    assert!(
        agent_log.contains("DEBUG") || agent_log.contains("TRACE"),
        "no debug/trace lines:\n{agent_log}"
    );
    let trace_out = trace.lines(Stream::Stdout).join("\n");
    assert!(
        trace_out.contains("\"path\":\"/v1/chat/completions\""),
        "{trace_out}"
    );
    assert!(exposition.has("llm_requests_total"));
    for secret in secrets {
        for (what, text) in &everything {
            assert!(
                !text.contains(secret),
                "{secret:?} leaked into {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// The agent's own endpoint credentials (`--web.config.file` basic auth): bcrypt (cost 4) of
/// [`SCRAPE_PASSWORD`], and the `Authorization: Basic` values of the right and a wrong password.
const SCRAPE_PASSWORD: &str = "planted-scrape-pw-4e1b";
const SCRAPE_HASH: &str = "$2b$04$A3PYR5GZbJZgg9wv/Ofz8.i7wC/2jVzjGbU3m3jNrQh3RQuYw1vre";
const RIGHT_BASIC: &str = "cHJvbWV0aGV1czpwbGFudGVkLXNjcmFwZS1wdy00ZTFi";
const WRONG_PASSWORD: &str = "planted-wrong-pw-77c2";
const WRONG_BASIC: &str = "cHJvbWV0aGV1czpwbGFudGVkLXdyb25nLXB3LTc3YzI=";

/// `curl` GET of `url` with optional extra headers, within 10 s; the HTTP status.
fn get_status(url: &str, headers: &[String]) -> String {
    // A later --max-time overrides the helper's own.
    let mut args = vec!["--max-time", "10"];
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(url);
    curl_status(&args).expect("curl")
}

#[test]
fn scrape_credentials_reach_no_log() {
    if !guard::agent_ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("llmo-sec-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  prometheus: \"{SCRAPE_HASH}\"\n"),
    )
    .expect("write the web config");
    let mut cmd = Command::new(agent_bin());
    cmd.args([
        "--log",
        "trace",
        "--metrics-addr",
        "127.0.0.1:0",
        "--port",
        "1",
    ])
    .arg("--web.config.file")
    .arg(&web);
    let mut agent = Proc::spawn("llm-observer with basic auth", cmd).expect("agent");
    let base = agent
        .wait_for_line(Duration::from_secs(60), |_, l| {
            let rest = &l[l.find("serving /metrics on ")? + "serving /metrics on ".len()..];
            Some(rest.trim().trim_end_matches("/metrics").to_owned())
        })
        .expect("the agent serves");
    let metrics = format!("{base}/metrics");
    let auth = |b64: &str| vec![format!("Authorization: Basic {b64}")];
    assert_eq!(get_status(&metrics, &auth(RIGHT_BASIC)), "200");
    assert_eq!(get_status(&metrics, &auth(RIGHT_BASIC)), "200");
    assert_eq!(get_status(&metrics, &auth(WRONG_BASIC)), "401");
    assert_eq!(get_status(&metrics, &[]), "401");
    assert_eq!(get_status(&format!("{base}/healthz"), &[]), "200");
    assert_eq!(get_status(&format!("{base}/readyz"), &[]), "200");
    agent
        .terminate(Duration::from_secs(10))
        .expect("agent stops");
    let _ = std::fs::remove_dir_all(&dir);
    let out = agent.output();
    // Not vacuous: the refusal was logged (once: the second falls in the same minute).
    assert_eq!(
        out.matches("refused since the last report").count(),
        1,
        "{out}"
    );
    for secret in [SCRAPE_PASSWORD, RIGHT_BASIC, WRONG_PASSWORD, WRONG_BASIC] {
        assert!(!out.contains(secret), "{secret:?} leaked:\n{out}");
    }
}

/// The capabilities the agent needs as a non-root uid (docs/security.md), in setpriv's spelling,
/// and what the agent says without each.
const CAPS: [(&str, &str); 4] = [
    ("bpf", "missing CAP_BPF"),
    ("perfmon", "missing CAP_PERFMON"),
    ("sys_ptrace", "missing CAP_SYS_PTRACE"),
    ("dac_read_search", "needs CAP_DAC_READ_SEARCH"),
];

/// `setpriv … --` running as nobody with exactly `caps` (effective, permitted, inheritable,
/// ambient and bounding sets).
fn setpriv_with(caps: &[&str]) -> Vec<String> {
    let list: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--inh-caps",
        &list,
        "--ambient-caps",
        &list,
        "--bounding-set",
        &list,
        "--",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// tracefs must be mounted before an unprivileged agent starts (mounting needs CAP_SYS_ADMIN):
/// `check`, run as root, mounts it if it is not.
fn ensure_tracefs() {
    let out = Command::new(agent_bin())
        .arg("check")
        .output()
        .expect("check runs");
    assert!(out.status.success(), "check as root: {out:?}");
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

#[test]
fn runs_as_nobody_with_exactly_the_documented_capabilities() {
    if !guard::agent_ready() {
        return;
    }
    ensure_tracefs();
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "5", "--token-interval-ms", "1"])
        .expect("emulator");
    let port = emu.addr().port().to_string();
    let names: Vec<&str> = CAPS.iter().map(|(c, _)| *c).collect();
    let wrapper = setpriv_with(&names);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // --port makes the agent resolve each accepted socket's local port in /proc/<pid>/fd of the
    // root-owned emulator: that is what CAP_SYS_PTRACE is for.
    let agent = Agent::start_via(&wrapper, &["--port", &port]).expect("agent starts");
    let pid = agent.proc.id();
    assert_eq!(status_field(pid, "Uid:"), "65534\t65534\t65534\t65534");
    // CAP_DAC_READ_SEARCH 2, CAP_SYS_PTRACE 19, CAP_PERFMON 38, CAP_BPF 39.
    let mask = format!("{:016x}", (1u64 << 2) | (1 << 19) | (1 << 38) | (1 << 39));
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(pid, set), mask, "{set}");
    }

    let model = format!("sec-caps:{port}");
    let body = json!({"model": model, "messages": messages(), "max_tokens": 2});
    let body = body.to_string();
    let url = format!("{}/v1/chat/completions", emu.base_url());
    let status =
        curl_status(&["-H", "content-type: application/json", "-d", &body, &url]).expect("curl");
    assert_eq!(status, "200");
    let server = [
        ("api", "openai"),
        ("operation", "chat"),
        ("model", model.as_str()),
        ("process", "llm-emulator"),
    ];
    let expected = Expected::new()
        .exactly("llm_requests_total", &server, 1.0)
        .exactly("llm_prompt_tokens_total", &server, 3.0)
        .exactly("llm_response_tokens_total", &server, 2.0)
        .exactly(
            "llm_client_requests_total",
            &[("api", "openai"), ("model", model.as_str())],
            1.0,
        );
    wait_for_expected(agent.addr(), &expected, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\nagent:\n{}", agent.proc.output()));
}

#[test]
fn without_any_one_capability_the_agent_fails_naming_it() {
    if !guard::agent_ready() {
        return;
    }
    ensure_tracefs();
    for (dropped, message) in CAPS {
        let kept: Vec<&str> = CAPS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| *c != dropped)
            .collect();
        let wrapper = setpriv_with(&kept);
        let mut cmd = Command::new(&wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(agent_bin())
            .args(["--metrics-addr", "127.0.0.1:0"]);
        let mut p = Proc::spawn("llm-observer without one capability", cmd).expect("setpriv");
        let status = p
            .wait_exit(Duration::from_secs(30))
            .expect("the agent exits at once");
        let line = p
            .wait_for_line(Duration::from_secs(10), |s, l| {
                (s == Stream::Stderr && l.starts_with("llm-observer:")).then(|| l.to_owned())
            })
            .expect("an error line");
        assert!(!status.success(), "ran without {dropped}");
        assert!(line.contains(message), "without {dropped}: {line}");
    }
}
