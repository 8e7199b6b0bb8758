use super::*;

/// The body of a captured `curl -i` response.
fn body(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/inventory")
        .join(format!("{name}.response.http"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
        .expect("head and body");
    raw[at..].to_vec()
}

#[test]
fn llama_server_props_and_slots_from_real_captures() {
    let r = parse(
        ServerKind::Llamacpp,
        Endpoint::LlamacppProps,
        &body("llama-server_props"),
    );
    assert_eq!(
        r,
        Ok(Reading::Props(
            vec![ModelReading {
                model: "tiny".into(),
                quantization: "all F32".into(),
                context_length: Some(512.0),
                ..ModelReading::default()
            }],
            Slots {
                total: Some(1),
                busy: None
            }
        ))
    );
    let r = parse(
        ServerKind::Llamacpp,
        Endpoint::LlamacppSlots,
        &body("llama-server_slots"),
    );
    assert_eq!(
        r,
        Ok(Reading::Slots(Slots {
            total: Some(1),
            busy: Some(0)
        }))
    );
    let r = parse(
        ServerKind::Llamacpp,
        Endpoint::LlamacppSlots,
        &body("llama-server_slots_np2"),
    );
    assert_eq!(
        r,
        Ok(Reading::Slots(Slots {
            total: Some(2),
            busy: Some(0)
        }))
    );
}

#[test]
fn llama_server_metrics_from_a_real_capture() {
    let r = parse(
        ServerKind::Llamacpp,
        Endpoint::Metrics,
        &body("llama-server_metrics_enabled"),
    );
    assert_eq!(
        r,
        Ok(Reading::Load(vec![LoadReading {
            model: String::new(),
            queue: Some(0.0),
            running: Some(0.0),
            kv_cache: None,
        }]))
    );
}

#[test]
fn openai_models_from_real_captures() {
    let r = parse(
        ServerKind::Llamacpp,
        Endpoint::OpenaiModels,
        &body("llama-server_v1models"),
    );
    assert_eq!(
        r,
        Ok(Reading::Models(vec![ModelReading {
            model: "tiny".into(),
            context_length: Some(512.0),
            size_bytes: Some(1_049_856.0),
            ..ModelReading::default()
        }]))
    );
    let r = parse(
        ServerKind::LlamacppPython,
        Endpoint::OpenaiModels,
        &body("llama-cpp-python_v1models"),
    );
    assert_eq!(
        r,
        Ok(Reading::Models(vec![ModelReading {
            model: "tiny".into(),
            ..ModelReading::default()
        }]))
    );
}

/// Ollama's documented `/api/ps` answer (docs/api.md), with `context_length` as 0.6+ adds it.
const OLLAMA_PS: &str = r#"{"models":[{"name":"mistral:latest","model":"mistral:latest","size":5137025024,"digest":"2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"7.2B","quantization_level":"Q4_0"},"expires_at":"2024-06-04T14:38:31.83753-07:00","size_vram":5137025024,"context_length":4096}]}"#;

#[test]
fn ollama_ps_documented_shape() {
    let r = parse(ServerKind::Ollama, Endpoint::OllamaPs, OLLAMA_PS.as_bytes());
    assert_eq!(
        r,
        Ok(Reading::Models(vec![ModelReading {
            model: "mistral:latest".into(),
            family: "llama".into(),
            parameter_size: "7.2B".into(),
            quantization: "Q4_0".into(),
            size_bytes: Some(5_137_025_024.0),
            vram_bytes: Some(5_137_025_024.0),
            context_length: Some(4096.0),
            // 2024-06-04T21:38:31.83753Z
            expires_unix: Some(1_717_537_111.837_53),
        }]))
    );
    let empty = parse(ServerKind::Ollama, Endpoint::OllamaPs, br#"{"models":[]}"#);
    assert_eq!(empty, Ok(Reading::Models(vec![])));
}

#[test]
fn vllm_tgi_sglang_documented_shapes() {
    let models = br#"{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model","created":1,"owned_by":"vllm","root":"meta-llama/Llama-3.1-8B-Instruct","parent":null,"max_model_len":8192}]}"#;
    let r = parse(ServerKind::Vllm, Endpoint::OpenaiModels, models);
    assert_eq!(
        r,
        Ok(Reading::Models(vec![ModelReading {
            model: "meta-llama/Llama-3.1-8B-Instruct".into(),
            context_length: Some(8192.0),
            ..ModelReading::default()
        }]))
    );
    let exposition = "# TYPE vllm:num_requests_waiting gauge\n\
        vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0\n\
        vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 2.0\n\
        vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 7.0\n\
        vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
        vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.5\n\
        vllm:prompt_tokens_total{model_name=\"m\"} 100\n";
    let r = parse(ServerKind::Vllm, Endpoint::Metrics, exposition.as_bytes());
    assert_eq!(
        r,
        Ok(Reading::Load(vec![LoadReading {
            model: "m".into(),
            queue: Some(5.0),
            running: Some(7.0),
            kv_cache: Some(0.5),
        }]))
    );
    let info = br#"{"model_id":"bigscience/bloom-560m","model_sha":"x","model_dtype":"torch.float16","model_device_type":"cuda","max_concurrent_requests":128,"max_best_of":2,"max_stop_sequences":4,"max_input_tokens":1024,"max_total_tokens":2048,"router":"text-generation-router","version":"2.4.1"}"#;
    let r = parse(ServerKind::Tgi, Endpoint::TgiInfo, info);
    assert_eq!(
        r,
        Ok(Reading::Models(vec![ModelReading {
            model: "bigscience/bloom-560m".into(),
            quantization: "torch.float16".into(),
            context_length: Some(2048.0),
            ..ModelReading::default()
        }]))
    );
    let tgi = "tgi_queue_size 4\ntgi_batch_current_size 2\n";
    let r = parse(ServerKind::Tgi, Endpoint::Metrics, tgi.as_bytes());
    assert_eq!(
        r,
        Ok(Reading::Load(vec![LoadReading {
            model: String::new(),
            queue: Some(4.0),
            running: Some(2.0),
            kv_cache: None,
        }]))
    );
    let sg = br#"{"model_path":"/models/Qwen2.5-7B-Instruct/","tokenizer_path":"/models/Qwen2.5-7B-Instruct","is_generation":true}"#;
    let r = parse(ServerKind::Sglang, Endpoint::SglangModelInfo, sg);
    assert_eq!(
        r,
        Ok(Reading::Models(vec![ModelReading {
            model: "Qwen2.5-7B-Instruct".into(),
            ..ModelReading::default()
        }]))
    );
}

#[test]
fn bad_answers_are_errors_never_panics() {
    for (kind, ep, body) in [
        (ServerKind::Ollama, Endpoint::OllamaPs, &b"not json"[..]),
        (ServerKind::Ollama, Endpoint::OllamaPs, b"{\"models\":3}"),
        (ServerKind::Llamacpp, Endpoint::LlamacppSlots, b"{}"),
        (ServerKind::Llamacpp, Endpoint::LlamacppProps, b"{}"),
        (ServerKind::Vllm, Endpoint::Metrics, b"\xff\xfe"),
        (ServerKind::Tgi, Endpoint::TgiInfo, b"[]"),
    ] {
        assert!(parse(kind, ep, body).is_err(), "{ep:?} {body:?}");
    }
    // Long names are cut at a character boundary.
    let long = format!(r#"{{"data":[{{"id":"{}"}}]}}"#, "é".repeat(100));
    let Ok(Reading::Models(m)) = parse(ServerKind::Vllm, Endpoint::OpenaiModels, long.as_bytes())
    else {
        panic!("models");
    };
    assert_eq!(m[0].model.len(), crate::sinks::labels::MAX_VALUE_BYTES);
}

#[test]
fn rfc3339() {
    assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(
        rfc3339_unix("2026-12-01T18:00:00+01:00"),
        Some(1_796_144_400.0)
    );
    assert_eq!(
        rfc3339_unix("0001-01-01T00:00:00Z"),
        Some(-62_135_596_800.0)
    );
    for bad in [
        "",
        "2026-12-01",
        "2026-13-01T00:00:00Z",
        "2026-12-01T00:00:00",
        "x026-12-01T00:00:00Z",
    ] {
        assert_eq!(rfc3339_unix(bad), None, "{bad}");
    }
}
