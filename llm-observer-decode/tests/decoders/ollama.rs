//! Ollama native API.

use super::*;

const NDJSON: &str = "application/x-ndjson";

#[test]
fn generate_streams_by_default_and_reports_metrics() {
    let case = Case::new("/api/generate", r#"{"model":"llama3.2","prompt":"Why?"}"#)
        .ct(NDJSON)
        .pieces(&[
            "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"response\":\"The\",\"done\":false}\n",
            "{\"model\":\"llama3.2\",\"created_at\":\"x\",\"response\":\" sky\",\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"x\",\"response\":\"\",\"do",
            "ne\":true,\"done_reason\":\"stop\",\"context\":[1,2,3],\"total_duration\":10706818083,\"load_duration\":6338219291,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\"eval_count\":259,\"eval_duration\":4232710000}\n",
        ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("llama3.2".into()),
        timings: timings(Some(ts(0)), Some(ts(1)), 2, case.end_ns()),
        tokens: tokens(rep(26), rep(259)),
        finish_reason: Some("stop".into()),
        load_duration_ns: Some(6_338_219_291),
        ..base(
            Api::Ollama,
            Operation::TextCompletion,
            "/api/generate",
            Some("llama3.2"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
    assert!(out.errors.is_empty());
    marker_at(&out.markers, 0);
}

#[test]
fn chat_tool_calls_and_omitted_counts_are_absent() {
    // `eval_count` omitted (omitempty zero) must stay Absent, not 0.
    let case = Case::new(
        "/api/chat",
        r#"{"model":"qwen3","messages":[{"role":"user","content":"weather?"}],"tools":[]}"#,
    )
    .ct(NDJSON)
    .pieces(&[
        "{\"model\":\"qwen3\",\"created_at\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Tokyo\"}}},{\"function\":{\"name\":\"get_time\",\"arguments\":{}}}]},\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":12}\n",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("qwen3".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(rep(12), ABSENT),
        finish_reason: Some("stop".into()),
        tool_calls: vec!["get_weather".into(), "get_time".into()],
        ..base(
            Api::Ollama,
            Operation::Chat,
            "/api/chat",
            Some("qwen3"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn chat_not_streamed_marks_the_body_end() {
    let case = Case::new(
        "/api/chat",
        r#"{"model":"llama3.2","stream":false,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .ct("application/json; charset=utf-8")
    .pieces(&[
        "{\"model\":\"llama3.2\",\"created_at\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel",
        "lo!\",\"thinking\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":5,\"load_duration\":7,\"prompt_eval_count\":3,\"eval_count\":2}",
    ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("llama3.2".into()),
        timings: timings(Some(ts(1)), Some(ts(1)), 1, case.end_ns()),
        tokens: tokens(rep(3), rep(2)),
        finish_reason: Some("stop".into()),
        load_duration_ns: Some(7),
        ..base(
            Api::Ollama,
            Operation::Chat,
            "/api/chat",
            Some("llama3.2"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
    marker_at(&out.markers, 1);
}

#[test]
fn empty_prompt_is_a_model_load() {
    let case = Case::new("/api/generate", r#"{"model":"llama3.2"}"#)
        .ct("application/json; charset=utf-8")
        .pieces(&[r#"{"model":"llama3.2","created_at":"x","response":"","done":true,"done_reason":"load"}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("llama3.2".into()),
        timings: timings(None, None, 0, case.end_ns()),
        finish_reason: Some("load".into()),
        ..base(
            Api::Ollama,
            Operation::ModelLoad,
            "/api/generate",
            Some("llama3.2"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn keep_alive_zero_is_a_model_unload() {
    let case = Case::new(
        "/api/chat",
        r#"{"model":"llama3.2","messages":[],"keep_alive":0}"#,
    )
    .ct(NDJSON)
    .pieces(&["{\"model\":\"llama3.2\",\"created_at\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"unload\",\"done\":true}\n"]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("llama3.2".into()),
        timings: timings(None, None, 0, case.end_ns()),
        finish_reason: Some("unload".into()),
        ..base(
            Api::Ollama,
            Operation::ModelUnload,
            "/api/chat",
            Some("llama3.2"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn error_line_after_200_is_a_stream_error() {
    let case = Case::new("/api/generate", r#"{"model":"m","prompt":"p"}"#)
        .ct(NDJSON)
        .pieces(&[
            "{\"model\":\"m\",\"created_at\":\"x\",\"response\":\"a\",\"done\":false}\n",
            "{\"model\":\"m\",\"created_at\":\"x\",\"response\":\"b\",\"done\":false}\n",
            "{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n",
        ]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("m".into()),
        timings: timings(Some(ts(0)), Some(ts(1)), 2, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(2)),
        error: Some(ErrorKind::StreamError),
        ..base(
            Api::Ollama,
            Operation::TextCompletion,
            "/api/generate",
            Some("m"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn stream_cut_by_client_is_cancelled_and_counted() {
    let case = Case::new("/api/chat", r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
        .ct(NDJSON)
        .pieces(&[
            "{\"model\":\"m\",\"created_at\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n",
            "{\"model\":\"m\",\"created_at\":\"x\",\"message\":{\"role\":\"assistant\",\"con",
        ])
        .end(BodyEnd::Cut(EndedBy::Client));
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("m".into()),
        timings: timings(Some(ts(0)), Some(ts(0)), 1, case.end_ns()),
        tokens: tokens(ABSENT, TokenCount::counted(1)),
        error: Some(ErrorKind::ClientCancelled),
        ..base(Api::Ollama, Operation::Chat, "/api/chat", Some("m"), true)
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn embed_reports_prompt_tokens_and_load_time() {
    let case = Case::new("/api/embed", r#"{"model":"all-minilm","input":["a","b"]}"#)
        .ct("application/json; charset=utf-8")
        .pieces(&[r#"{"model":"all-minilm","embeddings":[[0.1,0.2],[0.3,0.4]],"total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8}"#]);
    let out = drive(&case);
    let want = Exchange {
        response_model: Some("all-minilm".into()),
        timings: timings(None, None, 0, case.end_ns()),
        tokens: tokens(rep(8), ABSENT),
        load_duration_ns: Some(1_019_500),
        ..base(
            Api::Ollama,
            Operation::Embeddings,
            "/api/embed",
            Some("all-minilm"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn legacy_embeddings_have_no_metrics() {
    let case = Case::new("/api/embeddings", r#"{"model":"all-minilm","prompt":"x"}"#)
        .ct("application/json; charset=utf-8")
        .pieces(&[r#"{"embedding":[0.5,-0.25]}"#]);
    let out = drive(&case);
    let want = Exchange {
        timings: timings(None, None, 0, case.end_ns()),
        ..base(
            Api::Ollama,
            Operation::Embeddings,
            "/api/embeddings",
            Some("all-minilm"),
            false,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn pull_status_stream() {
    let case = Case::new("/api/pull", r#"{"model":"llama3.2"}"#)
        .ct(NDJSON)
        .pieces(&[
            "{\"status\":\"pulling manifest\"}\n{\"status\":\"pulling 8eeb52dfb3bb\",\"digest\":\"sha256:8eeb\",\"total\":2142590208}\n",
            "{\"status\":\"pulling 8eeb52dfb3bb\",\"digest\":\"sha256:8eeb\",\"total\":2142590208,\"completed\":241970}\n{\"status\":\"success\"}\n",
        ]);
    let out = drive(&case);
    let want = Exchange {
        timings: timings(None, None, 0, case.end_ns()),
        ..base(
            Api::Ollama,
            Operation::ModelPull,
            "/api/pull",
            Some("llama3.2"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn model_not_found_is_a_client_error() {
    let case = Case::new(
        "/api/chat",
        r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
    )
    .status(404)
    .ct("application/json; charset=utf-8")
    .pieces(&[r#"{"error":"model 'nope' not found"}"#]);
    let out = drive(&case);
    let want = Exchange {
        status: Some(404),
        timings: timings(None, None, 0, case.end_ns()),
        error: Some(ErrorKind::ClientError),
        ..base(
            Api::Ollama,
            Operation::Chat,
            "/api/chat",
            Some("nope"),
            true,
        )
    };
    assert_eq!(out.exchange, want);
}

#[test]
fn gpu_out_of_memory_status() {
    let case = Case::new(
        "/api/generate",
        r#"{"model":"big","prompt":"x","stream":false}"#,
    )
    .status(500)
    .ct("application/json; charset=utf-8")
    .pieces(&[r#"{"error":"llama runner process has terminated: CUDA error: out of memory"}"#]);
    let out = drive(&case);
    assert_eq!(out.exchange.error, Some(ErrorKind::OutOfMemory));
    assert_eq!(out.exchange.status, Some(500));
}
