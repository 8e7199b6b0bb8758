//! Pure readers of the servers' own inventory answers (JSON) and metrics expositions: bytes in,
//! readings out. Each shape is the server's documented (or captured) one; a field a server leaves
//! out is `None`, never a guess. Model names and descriptive strings become label values, so they
//! are sanitised as every label value is ([`labels::sanitize`]: cut to
//! [`labels::MAX_VALUE_BYTES`], control characters replaced).

use llm_observer_decode::llm::fingerprint::ServerKind;
use serde_json::Value;

use crate::sinks::labels;
use crate::top::exposition;

/// Most models read from one answer (a server listing more is cut, and says so in the log).
pub const MAX_MODELS: usize = 32;

/// One endpoint the agent asks a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    OllamaPs,
    LlamacppProps,
    LlamacppSlots,
    OpenaiModels,
    TgiInfo,
    SglangModelInfo,
    Metrics,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::OllamaPs,
        Endpoint::LlamacppProps,
        Endpoint::LlamacppSlots,
        Endpoint::OpenaiModels,
        Endpoint::TgiInfo,
        Endpoint::SglangModelInfo,
        Endpoint::Metrics,
    ];

    /// The `endpoint` label value (a fixed name, not the path: label values never carry paths).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::OllamaPs => "ollama_ps",
            Endpoint::LlamacppProps => "props",
            Endpoint::LlamacppSlots => "slots",
            Endpoint::OpenaiModels => "models",
            Endpoint::TgiInfo => "info",
            Endpoint::SglangModelInfo => "model_info",
            Endpoint::Metrics => "metrics",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::OllamaPs => "/api/ps",
            Endpoint::LlamacppProps => "/props",
            Endpoint::LlamacppSlots => "/slots",
            Endpoint::OpenaiModels => "/v1/models",
            Endpoint::TgiInfo => "/info",
            Endpoint::SglangModelInfo => "/get_model_info",
            Endpoint::Metrics => "/metrics",
        }
    }
}

/// What the agent asks each kind of server, in order. The inventory answer comes first: the
/// metrics of servers that label nothing by model (TGI, SGLang, llama-server) are put under the
/// model it named.
pub fn endpoints(kind: ServerKind) -> &'static [Endpoint] {
    match kind {
        ServerKind::Ollama => &[Endpoint::OllamaPs],
        ServerKind::Llamacpp => &[
            Endpoint::LlamacppProps,
            Endpoint::LlamacppSlots,
            Endpoint::Metrics,
        ],
        ServerKind::Vllm => &[Endpoint::OpenaiModels, Endpoint::Metrics],
        ServerKind::Tgi => &[Endpoint::TgiInfo, Endpoint::Metrics],
        ServerKind::Sglang => &[Endpoint::SglangModelInfo, Endpoint::Metrics],
        ServerKind::LlamacppPython => &[Endpoint::OpenaiModels],
        // A gateway lists what it routes to, not what it has loaded; LocalAI's backends are
        // separate processes with no shared inventory endpoint.
        ServerKind::Litellm | ServerKind::Localai => &[],
    }
}

/// A loaded model as its server describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelReading {
    pub model: String,
    pub family: String,
    pub parameter_size: String,
    pub quantization: String,
    pub size_bytes: Option<f64>,
    pub vram_bytes: Option<f64>,
    pub context_length: Option<f64>,
    pub expires_unix: Option<f64>,
}

/// Load a server reports about itself; `model` empty when its metrics name none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReading {
    pub model: String,
    pub queue: Option<f64>,
    pub running: Option<f64>,
    pub kv_cache: Option<f64>,
}

/// llama-server's decoding slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    pub total: Option<u64>,
    pub busy: Option<u64>,
}

/// What one answer said.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Models(Vec<ModelReading>),
    Slots(Slots),
    /// Models (from `/props`) and the slot count it gives.
    Props(Vec<ModelReading>, Slots),
    Load(Vec<LoadReading>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not the expected shape: {0}")]
    Shape(&'static str),
    #[error("not a metrics exposition: {0}")]
    Exposition(String),
}

fn bounded(s: &str) -> String {
    labels::sanitize(s)
}

fn text(v: &Value, path: &str) -> String {
    v.pointer(path)
        .and_then(Value::as_str)
        .map(bounded)
        .unwrap_or_default()
}

fn number(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path)
        .and_then(Value::as_f64)
        .filter(|n| n.is_finite())
}

/// The last path component: llama-server and SGLang name a model by its file or folder.
fn file_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// Reads `body`, the answer of `endpoint` from a server of `kind`.
pub fn parse(kind: ServerKind, endpoint: Endpoint, body: &[u8]) -> Result<Reading, ParseError> {
    if endpoint == Endpoint::Metrics {
        let text = std::str::from_utf8(body).map_err(|e| ParseError::Exposition(e.to_string()))?;
        let samples = exposition::parse(text).map_err(|e| ParseError::Exposition(e.to_string()))?;
        return Ok(Reading::Load(load(kind, &samples)));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    match endpoint {
        Endpoint::OllamaPs => ollama_ps(&v).map(Reading::Models),
        Endpoint::LlamacppProps => llamacpp_props(&v),
        Endpoint::LlamacppSlots => llamacpp_slots(&v).map(Reading::Slots),
        Endpoint::OpenaiModels => openai_models(&v).map(Reading::Models),
        Endpoint::TgiInfo => tgi_info(&v).map(|m| Reading::Models(vec![m])),
        Endpoint::SglangModelInfo => sglang_model_info(&v).map(|m| Reading::Models(vec![m])),
        Endpoint::Metrics => Err(ParseError::Shape("unreachable")),
    }
}

/// Ollama `/api/ps`: `{"models":[{name, size, size_vram, context_length, expires_at,
/// details{family, parameter_size, quantization_level}}]}`.
fn ollama_ps(v: &Value) -> Result<Vec<ModelReading>, ParseError> {
    let models = v
        .get("models")
        .and_then(Value::as_array)
        .ok_or(ParseError::Shape("no models array"))?;
    Ok(models
        .iter()
        .take(MAX_MODELS)
        .filter_map(|m| {
            let name = text(m, "/name");
            let name = if name.is_empty() {
                text(m, "/model")
            } else {
                name
            };
            (!name.is_empty()).then(|| ModelReading {
                model: name,
                family: text(m, "/details/family"),
                parameter_size: text(m, "/details/parameter_size"),
                quantization: text(m, "/details/quantization_level"),
                size_bytes: number(m, "/size"),
                vram_bytes: number(m, "/size_vram"),
                context_length: number(m, "/context_length"),
                expires_unix: m
                    .get("expires_at")
                    .and_then(Value::as_str)
                    .and_then(rfc3339_unix),
            })
        })
        .collect())
}

/// llama-server `/props`: `model_alias` (else the file of `model_path`), `model_ftype`,
/// `default_generation_settings.n_ctx`, `total_slots`.
fn llamacpp_props(v: &Value) -> Result<Reading, ParseError> {
    let alias = text(v, "/model_alias");
    let model = if alias.is_empty() {
        bounded(file_name(&text(v, "/model_path")))
    } else {
        alias
    };
    if model.is_empty() {
        return Err(ParseError::Shape("no model_alias or model_path"));
    }
    let m = ModelReading {
        model,
        quantization: text(v, "/model_ftype"),
        context_length: number(v, "/default_generation_settings/n_ctx"),
        ..ModelReading::default()
    };
    let slots = Slots {
        total: v.get("total_slots").and_then(Value::as_u64),
        busy: None,
    };
    Ok(Reading::Props(vec![m], slots))
}

/// llama-server `/slots`: an array of slots, each with `is_processing`.
fn llamacpp_slots(v: &Value) -> Result<Slots, ParseError> {
    let slots = v
        .as_array()
        .ok_or(ParseError::Shape("not an array of slots"))?;
    let busy = slots
        .iter()
        .filter(|s| s.get("is_processing").and_then(Value::as_bool) == Some(true))
        .count();
    Ok(Slots {
        total: Some(slots.len() as u64),
        busy: Some(busy as u64),
    })
}

/// OpenAI-compatible `/v1/models`: `data[].id`, vLLM's `max_model_len`, llama-server's
/// `meta.n_ctx` and `meta.size`.
fn openai_models(v: &Value) -> Result<Vec<ModelReading>, ParseError> {
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or(ParseError::Shape("no data array"))?;
    Ok(data
        .iter()
        .take(MAX_MODELS)
        .filter_map(|m| {
            let id = text(m, "/id");
            (!id.is_empty()).then(|| ModelReading {
                model: id,
                context_length: number(m, "/max_model_len").or_else(|| number(m, "/meta/n_ctx")),
                size_bytes: number(m, "/meta/size"),
                ..ModelReading::default()
            })
        })
        .collect())
}

/// TGI `/info`: `model_id`, `model_dtype`, `max_total_tokens`.
fn tgi_info(v: &Value) -> Result<ModelReading, ParseError> {
    let model = text(v, "/model_id");
    if model.is_empty() {
        return Err(ParseError::Shape("no model_id"));
    }
    Ok(ModelReading {
        model,
        quantization: text(v, "/model_dtype"),
        context_length: number(v, "/max_total_tokens"),
        ..ModelReading::default()
    })
}

/// SGLang `/get_model_info`: `model_path` (the served name is its last component unless
/// `--served-model-name` set one, which the answer does not carry).
fn sglang_model_info(v: &Value) -> Result<ModelReading, ParseError> {
    let path = text(v, "/model_path");
    if path.is_empty() {
        return Err(ParseError::Shape("no model_path"));
    }
    Ok(ModelReading {
        model: bounded(file_name(&path)),
        ..ModelReading::default()
    })
}

/// The server's own queue, running and KV-cache gauges, per model where it labels them
/// (vLLM's `model_name`), else under `""`.
fn load(kind: ServerKind, samples: &[exposition::Sample]) -> Vec<LoadReading> {
    let (queue, running, kv): (&[&str], &[&str], &[&str]) = match kind {
        ServerKind::Vllm => (
            &["vllm:num_requests_waiting"],
            &["vllm:num_requests_running"],
            // Renamed in vLLM 0.10 (V1); older servers publish the GPU-named one.
            &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
        ),
        ServerKind::Tgi => (&["tgi_queue_size"], &["tgi_batch_current_size"], &[]),
        ServerKind::Sglang => (
            &["sglang:num_queue_reqs"],
            &["sglang:num_running_reqs"],
            &["sglang:token_usage"],
        ),
        ServerKind::Llamacpp => (
            &["llamacpp:requests_deferred"],
            &["llamacpp:requests_processing"],
            &[],
        ),
        _ => (&[], &[], &[]),
    };
    let mut out: Vec<LoadReading> = Vec::new();
    for s in samples {
        let slot = if queue.contains(&s.name.as_str()) {
            0
        } else if running.contains(&s.name.as_str()) {
            1
        } else if kv.contains(&s.name.as_str()) {
            2
        } else {
            continue;
        };
        if !s.value.is_finite() {
            continue;
        }
        let model = s
            .labels
            .iter()
            .find(|(k, _)| k == "model_name")
            .map(|(_, v)| bounded(v))
            .unwrap_or_default();
        let r = match out.iter().position(|r| r.model == model) {
            Some(i) => &mut out[i],
            None => {
                if out.len() >= MAX_MODELS {
                    continue;
                }
                out.push(LoadReading {
                    model,
                    ..LoadReading::default()
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        // Several engines of one model (vLLM data parallel) add up; the KV ratio is their mean's
        // best stand-in, the highest (the one closest to preempting).
        let field = match slot {
            0 => &mut r.queue,
            1 => &mut r.running,
            _ => &mut r.kv_cache,
        };
        *field = Some(match (*field, slot) {
            (Some(v), 2) => v.max(s.value),
            (Some(v), _) => v + s.value,
            (None, _) => s.value,
        });
    }
    out
}

/// Unix seconds of an RFC 3339 time (`2024-06-04T14:38:31.83753-07:00`, `…Z`); `None` when it is
/// not one. Go's zero time (`0001-01-01T00:00:00Z`, "never") is a valid, very negative answer.
pub fn rfc3339_unix(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest.as_bytes().first()? {
        b'Z' | b'z' if rest.len() == 1 => 0,
        sign @ (b'+' | b'-') if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs as f64 + frac)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
