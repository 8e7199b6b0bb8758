use std::io::{Read as _, Write as _};
use std::sync::Mutex;

use super::*;
use crate::attribution::Place;
use crate::sinks::metrics::MetricsConfig;

/// Path → (status, body).
type Answers = Arc<Mutex<HashMap<String, (u16, Vec<u8>)>>>;

/// A canned HTTP server: each path answers its (status, body); every answer closes.
struct Canned {
    addr: SocketAddr,
    answers: Answers,
}

impl Canned {
    fn start() -> Canned {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answers: Answers = Arc::default();
        let a = answers.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let (status, body) = a
                    .lock()
                    .unwrap()
                    .get(&path)
                    .cloned()
                    .unwrap_or((404, Vec::new()));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        Canned { addr, answers }
    }

    fn answer(&self, path: &str, status: u16, body: &[u8]) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_owned(), (status, body.to_vec()));
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/inventory")
        .join(format!("{name}.response.http"));
    let raw = std::fs::read(path).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    raw[at..].to_vec()
}

fn setup(kind: ServerKind, addr: SocketAddr) -> (TargetKey, Target, Arc<PollConfig>, Arc<Metrics>) {
    let key = TargetKey {
        pid: std::process::id(),
        port: addr.port(),
    };
    let t = Target {
        kind,
        addr,
        process: "llama-server".into(),
        place: Place {
            container: "c1".into(),
            pod: String::new(),
            namespace: String::new(),
        },
    };
    let cfg = Arc::new(PollConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        proc_root: PathBuf::from("/proc"),
    });
    let m = Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap());
    (key, t, cfg, m)
}

fn exposition(m: &Metrics, prefix: &str) -> Vec<String> {
    let text = m.encode();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn llama_server_round_from_real_answers_then_a_stopped_endpoint() {
    let srv = Canned::start();
    srv.answer("/props", 200, &fixture("llama-server_props"));
    srv.answer("/slots", 200, &fixture("llama-server_slots_np2"));
    srv.answer("/metrics", 200, &fixture("llama-server_metrics_enabled"));
    let (key, t, cfg, m) = setup(ServerKind::Llamacpp, srv.addr);
    let (_, series) = poll_one(key, t.clone(), cfg.clone(), m.clone()).await;
    apply(m.inventory(), None, &series);
    let base = r#"container="c1",model="tiny",namespace="",pod="",process="llama-server",server="llamacpp""#;
    let place = r#"container="c1",namespace="",pod="",process="llama-server",server="llamacpp""#;
    assert_eq!(
        exposition(&m, "llm_model_"),
        [
            format!("llm_model_context_length{{{base}}} 512"),
            r#"llm_model_loaded_info{container="c1",family="",model="tiny",namespace="",parameter_size="",pod="",process="llama-server",quantization="all F32",server="llamacpp"} 1"#
                .to_owned(),
        ]
    );
    assert_eq!(
        exposition(&m, "llm_server_"),
        [
            format!("llm_server_reported_queue_size{{{base}}} 0"),
            format!("llm_server_reported_running_requests{{{base}}} 0"),
            format!(r#"llm_server_slots{{{place},state="busy"}} 0"#),
            format!(r#"llm_server_slots{{{place},state="idle"}} 2"#),
        ]
    );
    let ok = |ep: &str, result: &str| {
        m.inventory()
            .polls
            .with_label_values(&["llamacpp", ep, result])
            .get()
    };
    assert_eq!(
        (ok("props", "ok"), ok("slots", "ok"), ok("metrics", "ok")),
        (1, 1, 1)
    );

    // Restarted without --metrics and --slots: those series go, /props's stay.
    srv.answer("/slots", 501, b"");
    srv.answer("/metrics", 501, b"");
    let (_, next) = poll_one(key, t, cfg, m.clone()).await;
    apply(m.inventory(), Some(&series), &next);
    assert_eq!(
        exposition(&m, "llm_server_"),
        [
            format!(r#"llm_server_slots{{{place},state="busy"}} 0"#),
            format!(r#"llm_server_slots{{{place},state="idle"}} 1"#),
        ],
        "the slot count from /props alone"
    );
    assert_eq!(exposition(&m, "llm_model_").len(), 2);
    assert_eq!(
        (ok("slots", "unavailable"), ok("metrics", "unavailable")),
        (1, 1)
    );
}

#[tokio::test]
async fn an_unloaded_model_leaves_no_series_and_garbage_is_counted() {
    let srv = Canned::start();
    let ps = |names: &[&str]| {
        let models: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({"name": n, "model": n, "size": 100, "size_vram": 50, "details": {"family": "llama", "parameter_size": "1B", "quantization_level": "Q8_0"}, "expires_at": "1970-01-01T00:00:10Z", "context_length": 2048}))
            .collect();
        serde_json::json!({ "models": models })
            .to_string()
            .into_bytes()
    };
    srv.answer("/api/ps", 200, &ps(&["a:1", "b:1"]));
    let (key, t, cfg, m) = setup(ServerKind::Ollama, srv.addr);
    let (_, first) = poll_one(key, t.clone(), cfg.clone(), m.clone()).await;
    apply(m.inventory(), None, &first);
    assert_eq!(exposition(&m, "llm_model_vram_bytes").len(), 2);
    assert_eq!(
        exposition(&m, "llm_model_").len(),
        10,
        "5 families x 2 models"
    );
    srv.answer("/api/ps", 200, &ps(&["b:1"]));
    let (_, second) = poll_one(key, t.clone(), cfg.clone(), m.clone()).await;
    apply(m.inventory(), Some(&first), &second);
    let left = exposition(&m, "llm_model_expires_timestamp_seconds");
    assert_eq!(left.len(), 1);
    assert!(
        left[0].contains(r#"model="b:1""#) && left[0].ends_with(" 10"),
        "{left:?}"
    );
    srv.answer("/api/ps", 200, b"\x00garbage");
    let (_, third) = poll_one(key, t, cfg, m.clone()).await;
    apply(m.inventory(), Some(&second), &third);
    assert!(exposition(&m, "llm_model_").is_empty());
    let polls = &m.inventory().polls;
    assert_eq!(
        polls
            .with_label_values(&["ollama", "ollama_ps", "ok"])
            .get(),
        2
    );
    assert_eq!(
        polls
            .with_label_values(&["ollama", "ollama_ps", "bad_body"])
            .get(),
        1
    );
}

#[tokio::test]
async fn a_server_that_is_gone_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (key, t, cfg, m) = setup(ServerKind::Tgi, SocketAddr::from(([127, 0, 0, 1], port)));
    let (_, series) = poll_one(key, t, cfg, m.clone()).await;
    assert!(series.is_empty());
    let polls = &m.inventory().polls;
    assert_eq!(
        polls
            .with_label_values(&["tgi", "info", "unreachable"])
            .get(),
        1
    );
    assert_eq!(
        polls
            .with_label_values(&["tgi", "metrics", "unreachable"])
            .get(),
        1
    );
}
