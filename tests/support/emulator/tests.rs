//! The emulators' exact bytes and fields, checked with a plain TCP client on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Config, Emulator};
use crate::harness::http::{self, HttpResponse};

/// Every request in these tests finishes far sooner; the bound only keeps a bug from hanging CI.
const TIMEOUT: Duration = Duration::from_secs(10);

fn emulator(ttft_ms: u64, interval_ms: u64) -> Emulator {
    let config = Config {
        ttft: Duration::from_millis(ttft_ms),
        token_interval: Duration::from_millis(interval_ms),
        ..Config::default()
    };
    Emulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .expect("emulator starts on a free port")
}

fn post(emu: &Emulator, path: &str, body: Value) -> HttpResponse {
    http::post_json(emu.addr(), path, &body, TIMEOUT).expect("request completes")
}

fn ndjson(r: &HttpResponse) -> Vec<Value> {
    r.body_text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every NDJSON line is JSON"))
        .collect()
}

/// SSE events as (event name or "", data) pairs.
fn sse(r: &HttpResponse) -> Vec<(String, String)> {
    let text = r.body_text();
    assert!(
        text.ends_with("\n\n") || text.is_empty(),
        "SSE body ends with a blank line: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|event| {
            let mut name = String::new();
            let mut data = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                }
            }
            (name, data)
        })
        .collect()
}

fn data_json(data: &str) -> Value {
    serde_json::from_str(data).expect("SSE data is JSON")
}

#[test]
fn ollama_generate_streams_ndjson_with_exact_metrics() {
    let emu = emulator(20, 5);
    let r = post(
        &emu,
        "/api/generate",
        json!({"model": "m1", "prompt": "why is the sky blue", "options": {"num_predict": 4}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.complete);
    let lines = ndjson(&r);
    assert_eq!(lines.len(), 5);
    for (i, line) in lines[..4].iter().enumerate() {
        let want = if i == 0 {
            "w0".to_owned()
        } else {
            format!(" w{i}")
        };
        assert_eq!(line["response"], want);
        assert_eq!(line["done"], false);
        assert_eq!(line["model"], "m1");
    }
    let last = &lines[4];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["response"], "");
    assert_eq!(last["prompt_eval_count"], 5);
    assert_eq!(last["eval_count"], 4);
    assert_eq!(last["load_duration"], 5_000_000);
    assert_eq!(last["prompt_eval_duration"], 20_000_000);
    assert_eq!(last["eval_duration"], 15_000_000);
    assert_eq!(last["total_duration"], 40_000_000);
}

#[test]
fn ollama_nonstream_chat_and_load_replies() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/api/chat",
        json!({"model": "m1", "stream": false, "options": {"num_predict": 3},
               "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": "w0 w1 w2"})
    );
    assert_eq!(
        (v["prompt_eval_count"].clone(), v["eval_count"].clone()),
        (json!(4), json!(3))
    );
    // Zero durations are omitted, as Ollama's omitempty does.
    assert!(v.get("prompt_eval_duration").is_none());

    let load = post(&emu, "/api/generate", json!({"model": "m1", "prompt": ""}));
    let v: Value = serde_json::from_slice(&load.body).expect("JSON body");
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    assert!(v.get("eval_count").is_none() && v.get("prompt_eval_count").is_none());
    let unload = post(
        &emu,
        "/api/chat",
        json!({"model": "m1", "messages": [], "keep_alive": 0}),
    );
    let v: Value = serde_json::from_slice(&unload.body).expect("JSON body");
    assert_eq!(v["done_reason"], "unload");

    let root = http::request(emu.addr(), "GET", "/", b"", TIMEOUT).expect("GET /");
    assert_eq!(
        (root.status, root.body_text().as_str()),
        (200, "Ollama is running")
    );
    let tags = http::request(emu.addr(), "GET", "/api/tags", b"", TIMEOUT).expect("GET /api/tags");
    let v: Value = serde_json::from_slice(&tags.body).expect("JSON body");
    assert_eq!(v["models"][0]["name"], "m1:latest");
}

#[test]
fn openai_chat_stream_with_usage_has_the_exact_event_sequence() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "m1", "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 2,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}]}),
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let events = sse(&r);
    let created = data_json(&events[0].1)["created"]
        .as_u64()
        .expect("created is a number");
    let head = format!(
        r#"{{"id":"chatcmpl-emu-1","object":"chat.completion.chunk","created":{created},"model":"m1","system_fingerprint":"fp_emulator","choices":"#
    );
    let want = [
        format!(
            r#"{head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{"content":"w0"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{"content":" w1"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#
        ),
    ];
    let got: Vec<&str> = events.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        got[..4],
        want.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    let usage = data_json(got[4]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(usage["usage"]["total_tokens"], 5);
    assert_eq!(got[5], "[DONE]");
    assert_eq!(got.len(), 6);
}

#[test]
fn openai_stream_without_include_usage_carries_no_usage() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "m1", "stream": true, "max_tokens": 3, "messages": []}),
    );
    assert!(!r.body_text().contains("usage"));
    let events = sse(&r);
    assert_eq!(events.len(), 1 + 3 + 1 + 1);
    assert_eq!(events.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
}

#[test]
fn openai_completions_json_and_stream() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/completions",
        json!({"model": "m2", "prompt": "a b c d", "max_tokens": 2}),
    );
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "w0 w1");
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["completion_tokens"], 2);

    let r = post(
        &emu,
        "/v1/completions",
        json!({"model": "m2", "prompt": ["a", "b"], "max_tokens": 2, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let events = sse(&r);
    // No role chunk on the legacy endpoint: 2 tokens, finish, usage, [DONE].
    assert_eq!(events.len(), 5);
    assert_eq!(data_json(&events[0].1)["choices"][0]["text"], "w0");
    assert_eq!(
        data_json(&events[2].1)["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(data_json(&events[3].1)["usage"]["prompt_tokens"], 2);
}

#[test]
fn anthropic_stream_has_named_events_and_cumulative_usage() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/messages",
        json!({"model": "cached-2", "stream": true, "max_tokens": 3, "system": "be nice",
               "messages": [{"role": "user", "content": "hello there you"}]}),
    );
    assert_eq!(r.header("request-id"), Some("req_emu_1"));
    let events = sse(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(
            data_json(data)["type"],
            name.as_str(),
            "event name equals the data's type"
        );
    }
    let start = data_json(&events[0].1);
    // 5 prompt words, 2 of them reported as cache reads and excluded from input_tokens.
    assert_eq!(start["message"]["usage"]["input_tokens"], 3);
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 2);
    assert_eq!(start["message"]["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(data_json(&events[5].1)["delta"]["text"], " w2");
    let delta = data_json(&events[7].1);
    assert_eq!(delta["usage"]["output_tokens"], 3);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
}

#[test]
fn anthropic_nonstream_message() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/messages",
        json!({"model": "finish-length", "max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": "x y"}]}]}),
    );
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v["content"], json!([{"type": "text", "text": "w0 w1"}]));
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["input_tokens"], 2);
    assert_eq!(v["usage"]["output_tokens"], 2);
}

#[test]
fn http_error_scenarios_use_each_apis_error_body() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "err-429", "messages": []}),
    );
    assert_eq!(r.status, 429);
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let r = post(
        &emu,
        "/v1/messages",
        json!({"model": "err-529", "max_tokens": 1, "messages": []}),
    );
    assert_eq!(r.status, 529);
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(
        (v["type"].clone(), v["error"]["type"].clone()),
        (json!("error"), json!("overloaded_error"))
    );
    let r = post(
        &emu,
        "/api/generate",
        json!({"model": "err-500:latest", "prompt": "x"}),
    );
    assert_eq!(r.status, 500);
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert!(v["error"].is_string());
    assert_eq!(emu.stats().http_errors, 3);
}

#[test]
fn errors_after_200_end_the_stream_with_the_apis_error_event() {
    let emu = emulator(0, 0);
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "err-after-200", "stream": true, "messages": []}),
    );
    assert_eq!(r.status, 200);
    assert!(r.complete, "the HTTP response itself ends cleanly");
    let events = sse(&r);
    // role chunk, 3 tokens, the error; no finish chunk and no [DONE].
    assert_eq!(events.len(), 5);
    assert_eq!(data_json(&events[4].1)["error"]["type"], "server_error");

    let r = post(
        &emu,
        "/v1/messages",
        json!({"model": "err-after-200-1", "stream": true, "max_tokens": 5, "messages": []}),
    );
    let events = sse(&r);
    let last = events.last().expect("events");
    assert_eq!(last.0, "error");
    assert_eq!(data_json(&last.1)["error"]["type"], "overloaded_error");
    assert_eq!(
        events
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .count(),
        1
    );

    let r = post(
        &emu,
        "/api/chat",
        json!({"model": "err-after-200-2", "messages": [{"role": "user", "content": "x"}]}),
    );
    let lines = ndjson(&r);
    assert_eq!(lines.len(), 3);
    assert!(lines[2]["error"].is_string());

    // Without streaming the failure is an HTTP 500 once generation would have ended.
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "err-after-200", "messages": []}),
    );
    assert_eq!(r.status, 500);
    assert_eq!(emu.stats().error_events, 3);
}

#[test]
fn die_mid_stream_closes_the_connection_without_a_terminator() {
    let emu = emulator(0, 1);
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "die-mid-stream", "stream": true, "messages": []}),
    );
    assert_eq!(r.status, 200);
    assert!(!r.complete, "no terminal chunk");
    let events = sse(&r);
    assert_eq!(
        events.len(),
        1 + 3,
        "role chunk and 3 tokens, nothing after"
    );
    let r = post(
        &emu,
        "/api/generate",
        json!({"model": "die-mid-stream-2", "prompt": "x"}),
    );
    assert!(!r.complete);
    assert_eq!(ndjson(&r).len(), 2);
    // Without streaming: the connection closes with no response at all.
    let err = http::post_json(
        emu.addr(),
        "/v1/messages",
        &json!({"model": "die-mid-stream", "max_tokens": 2}),
        TIMEOUT,
    )
    .expect_err("no response head");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(emu.stats().died, 3);
}

#[test]
fn tokens_follow_the_configured_schedule() {
    let (ttft, interval) = (Duration::from_millis(150), Duration::from_millis(40));
    let emu = emulator(150, 40);
    let r = post(
        &emu,
        "/v1/chat/completions",
        json!({"model": "m1", "stream": true, "max_tokens": 3, "messages": []}),
    );
    let at = |needle: &str| {
        let offset = r
            .raw_offset_of(needle)
            .unwrap_or_else(|| panic!("{needle} in the response"));
        r.arrival_of(offset).expect("arrival time")
    };
    // The role chunk goes out at once; tokens come at ttft + i × interval (lower bounds only:
    // a loaded machine may be late, never early).
    assert!(
        at("\"role\"") < ttft,
        "role chunk before the first token is due"
    );
    assert!(at("\"w0\"") >= ttft);
    assert!(at("\" w1\"") >= ttft + interval);
    assert!(at("\" w2\"") >= ttft + interval * 2);
}

#[test]
fn a_client_that_goes_away_is_noticed() {
    use std::io::{Read, Write};
    let emu = emulator(0, 20);
    let body =
        json!({"model": "m1", "stream": true, "max_tokens": 500, "messages": []}).to_string();
    let mut s = std::net::TcpStream::connect(emu.addr()).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\" w1\"") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let deadline = Instant::now() + TIMEOUT;
    while emu.stats().client_gone == 0 {
        assert!(
            Instant::now() < deadline,
            "emulator never noticed the client leaving"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(emu.stats().output_tokens < 500);
}

#[test]
fn unknown_paths_and_bad_json() {
    let emu = emulator(0, 0);
    let r = http::request(emu.addr(), "GET", "/nope", b"", TIMEOUT).expect("GET");
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (404, "404 page not found")
    );
    let r = http::request(emu.addr(), "POST", "/v1/messages", b"{not json", TIMEOUT).expect("POST");
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = http::request(emu.addr(), "GET", "/v1/models", b"", TIMEOUT).expect("GET");
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v["data"][0]["id"], "m1");
}

/// Reads a raw response until the connection ends; `Err` is how it ended when it was not EOF.
fn read_until_end(emu: &Emulator, body: &Value) -> (Vec<u8>, std::io::Result<()>) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(emu.addr()).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

#[test]
fn reset_mid_stream_ends_with_a_tcp_reset() {
    let emu = emulator(0, 1);
    let (_, end) = read_until_end(
        &emu,
        &json!({"model": "reset-mid-stream-2", "stream": true, "messages": []}),
    );
    let err = end.expect_err("the connection is reset, not closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let (got, end) = read_until_end(&emu, &json!({"model": "reset-mid-stream", "messages": []}));
    assert!(got.is_empty(), "no response at all without streaming");
    assert_eq!(
        end.expect_err("reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    // die-mid-stream, by contrast, is an orderly close (FIN): EOF after the partial response.
    let (got, end) = read_until_end(
        &emu,
        &json!({"model": "die-mid-stream", "stream": true, "messages": []}),
    );
    assert!(end.is_ok(), "{end:?}");
    assert!(String::from_utf8_lossy(&got).contains("\" w2\""));
    assert_eq!(emu.stats().died, 3);
}
