//! Server fingerprints (`Exchange::server`) from the documented shapes of each server's answers
//! (shared/research/server-processes.md); the real llama-server and llama-cpp-python captures are
//! checked in tests/fixtures.rs.

use super::*;

const CHAT: &str = "/v1/chat/completions";
const CHAT_REQ: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

fn server_of(case: &Case<'_>) -> Option<(ServerKind, Strength)> {
    drive(case).exchange.server.map(|e| (e.kind, e.strength))
}

fn with_headers<'a>(mut case: Case<'a>, h: &[(&'a str, &'a str)]) -> Case<'a> {
    case.resp_headers.extend_from_slice(h);
    case
}

const OLLAMA_BODY: &str = r#"{"id":"chatcmpl-42","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp_ollama","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

#[test]
fn ollama_openai_compat_by_its_system_fingerprint() {
    let case = Case::new(CHAT, CHAT_REQ).ct(JSON).pieces(&[OLLAMA_BODY]);
    assert_eq!(server_of(&case), Some((ServerKind::Ollama, Strength::Body)));
}

#[test]
fn litellm_headers_beat_the_body_it_relays() {
    let case = with_headers(
        Case::new(CHAT, CHAT_REQ).ct(JSON).pieces(&[OLLAMA_BODY]),
        &[
            ("server", "uvicorn"),
            ("x-litellm-call-id", "0b8c"),
            ("x-litellm-model-id", "abc"),
        ],
    );
    assert_eq!(
        server_of(&case),
        Some((ServerKind::Litellm, Strength::Header))
    );
}

#[test]
fn tgi_openai_stream_by_its_compute_header() {
    // TGI's /v1 stream: `data:` without a space, an empty id, `x-compute-type` on the head.
    let case = with_headers(
        Case::new(
            CHAT,
            r#"{"model":"tgi","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .ct(SSE)
        .pieces(&[
            "data:{\"object\":\"chat.completion.chunk\",\"id\":\"\",\"model\":\"m\",\"system_fingerprint\":\"3.3.7-native\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\"},\"finish_reason\":null}]}\n\n",
            "data:{\"object\":\"chat.completion.chunk\",\"id\":\"\",\"model\":\"m\",\"system_fingerprint\":\"3.3.7-native\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"length\"}]}\n\n",
            "data:[DONE]\n\n",
        ]),
        &[("x-compute-type", "gpu+optimized"), ("x-accel-buffering", "no")],
    );
    assert_eq!(server_of(&case), Some((ServerKind::Tgi, Strength::Header)));
}

#[test]
fn vllm_and_sglang_leave_no_mark_in_the_exchange() {
    // `server: uvicorn` and a uuid4().hex id: vLLM, SGLang (and others) alike; the process
    // identity decides those.
    let case = with_headers(
        Case::new(CHAT, CHAT_REQ).ct(JSON).pieces(&[
            r#"{"id":"chatcmpl-9f1c2e3d4b5a69788796a5b4c3d2e1f0","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        ]),
        &[("server", "uvicorn")],
    );
    assert_eq!(server_of(&case), None);
}

#[test]
fn llama_server_id_shape_without_its_header() {
    // The id alone (a proxy that dropped `Server: llama.cpp`).
    let case = Case::new(CHAT, CHAT_REQ).ct(JSON).pieces(&[
        r#"{"id":"chatcmpl-J6bEkwpZEHIhdsVKkJi1xjn28TcXTrHm","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}]}"#,
    ]);
    assert_eq!(
        server_of(&case),
        Some((ServerKind::Llamacpp, Strength::Body))
    );
}

#[test]
fn anthropic_messages_on_llama_server_by_header() {
    let case = with_headers(
        Case::new(
            "/v1/messages",
            r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .ct(JSON)
        .pieces(&[
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#,
        ]),
        &[("server", "llama.cpp")],
    );
    assert_eq!(
        server_of(&case),
        Some((ServerKind::Llamacpp, Strength::Header))
    );
}

#[test]
fn native_apis_name_their_server_weakly() {
    let tgi = Case::new(
        "/generate",
        r#"{"inputs":"hi","parameters":{"max_new_tokens":2}}"#,
    )
    .ct(JSON)
    .pieces(&[r#"{"generated_text":"x"}"#]);
    assert_eq!(server_of(&tgi), Some((ServerKind::Tgi, Strength::Api)));
    let tgi_headers = with_headers(
        Case::new(
            "/generate",
            r#"{"inputs":"hi","parameters":{"max_new_tokens":2}}"#,
        )
        .ct(JSON)
        .pieces(&[r#"{"generated_text":"x"}"#]),
        &[("x-compute-type", "gpu+optimized")],
    );
    assert_eq!(
        server_of(&tgi_headers),
        Some((ServerKind::Tgi, Strength::Header))
    );
    let ollama = Case::new("/api/chat", r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}"#)
        .ct(JSON)
        .pieces(&[r#"{"model":"m","message":{"role":"assistant","content":"x"},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":1}"#]);
    assert_eq!(
        server_of(&ollama),
        Some((ServerKind::Ollama, Strength::Api))
    );
}

#[test]
fn a_placeholder_first_chunk_leaves_the_fingerprint_to_the_next() {
    // Azure's content-filter chunk comes first with an empty id: the ids are read (once) from the
    // first chunk that has them, so llama-server's id shape in chunk 2 still names it.
    let case = Case::new(
        CHAT,
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct(SSE)
    .pieces(&[
        "data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[],\"prompt_filter_results\":[]}\n\n",
        "data: {\"id\":\"chatcmpl-J6bEkwpZEHIhdsVKkJi1xjn28TcXTrHm\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
    ]);
    assert_eq!(
        server_of(&case),
        Some((ServerKind::Llamacpp, Strength::Body))
    );
}
