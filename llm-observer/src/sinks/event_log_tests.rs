use llm_observer_decode::{Api, Exchange, Operation, Role, TokenCount, Tokens, exchange::Timings};
use serde_json::{Value, json};

use super::*;
use crate::{
    attribution::{Place, process::ProcessInfo},
    capture::ConnId,
    sinks::{sink::ConnView, wallclock::WallClock},
};

const S: u64 = 1_000_000_000;

pub(crate) fn process() -> ProcessInfo {
    ProcessInfo {
        tgid: 42,
        comm: "llm-emulator".into(),
        name: "llm-emulator".into(),
        exe: "llm-emulator".into(),
        ppid: 1,
        start_time: 7,
        cgroup: Default::default(),
    }
}

pub(crate) fn exchange() -> Exchange {
    Exchange {
        api: Api::Openai,
        operation: Operation::Chat,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        request_model: Some("m1".into()),
        response_model: Some("m1-2025".into()),
        stream: true,
        status: Some(200),
        timings: Timings {
            request_start_ns: 10 * S,
            request_end_ns: Some(10 * S + 1_000),
            response_start_ns: Some(10 * S + 50_000_000),
            first_token_ns: Some(10 * S + 100_000_000),
            last_token_ns: Some(10 * S + 400_000_000),
            response_end_ns: Some(10 * S + 500_000_000),
            content_events: 4,
        },
        tokens: Tokens {
            prompt: TokenCount::reported(5),
            completion: TokenCount::reported(4),
            ..Tokens::default()
        },
        finish_reason: Some("stop".into()),
        error: None,
        incomplete: None,
        tool_calls: vec!["get_weather".into()],
        mcp: None,
        load_duration_ns: None,
        request_bytes: 300,
        response_bytes: 900,
        body_truncated: false,
        params: llm_observer_decode::RequestParams {
            max_tokens: Some(16),
            temperature: Some(0.5),
            trace_parent: None,
            prompts: None,
            choices: Some(2),
            user_labels: Vec::new(),
        },
        server: None,
        cache_write_tokens: TokenCount::ABSENT,
        tool_ids: Default::default(),
    }
}

pub(crate) fn view(p: &ProcessInfo) -> ConnView<'_> {
    ConnView {
        id: ConnId {
            tgid: 42,
            fd: 7,
            generation: 99,
        },
        role: Role::Server,
        process: p,
        local: Some("127.0.0.1:8000".parse().unwrap()),
        peer: Some("127.0.0.1:50000".parse().unwrap()),
        host: None,
        stdio: false,
    }
}

fn ids() -> crate::sinks::correlate::SpanIds {
    crate::sinks::correlate::SpanIds {
        trace_id: [0x11; 16],
        span_id: [0x22; 8],
        parent_span_id: Some([0x33; 8]),
    }
}

fn clock() -> WallClock {
    // Monotonic 10 s is 2026-12-01T14:46:25Z.
    WallClock::fixed(10 * S, 1_796_136_385 * S)
}

fn line_of(ex: &Exchange) -> Value {
    let p = process();
    let place = Place {
        container: "c1".into(),
        pod: String::new(),
        namespace: String::new(),
    };
    let r = ExchangeRecord::new(&clock(), &view(&p), 3, ex, place, ids());
    serde_json::to_value(&r).unwrap()
}

#[test]
fn a_line_has_ids_wall_times_tokens_and_attribution() {
    let v = line_of(&exchange());
    assert_eq!(
        v,
        json!({
            "time": "2026-12-01T14:46:25.500000000Z",
            "id": "42-7-99-3",
            "trace_id": "11111111111111111111111111111111",
            "span_id": "2222222222222222",
            "parent_span_id": "3333333333333333",
            "role": "server",
            "api": "openai",
            "operation": "chat",
            "method": "POST",
            "path": "/v1/chat/completions",
            "request_model": "m1",
            "response_model": "m1-2025",
            "stream": true,
            "max_tokens": 16,
            "temperature": 0.5,
            "prompts": null,
            "choices": 2,
            "status": 200,
            "error_type": null,
            "incomplete": null,
            "finish_reason": "stop",
            "tokens": {
                "prompt": {"value": 5, "source": "reported"},
                "completion": {"value": 4, "source": "reported"},
                "cached": {"value": null, "source": "absent"},
                "reasoning": {"value": null, "source": "absent"},
            },
            "timings": {
                "request_start": "2026-12-01T14:46:25.000000000Z",
                "request_end": "2026-12-01T14:46:25.000001000Z",
                "response_start": "2026-12-01T14:46:25.050000000Z",
                "first_token": "2026-12-01T14:46:25.100000000Z",
                "last_token": "2026-12-01T14:46:25.400000000Z",
                "response_end": "2026-12-01T14:46:25.500000000Z",
            },
            "ttft_seconds": 0.1,
            "latency_seconds": 0.5,
            "tpot_seconds": 0.1,
            "content_events": 4,
            "tool_calls": ["get_weather"],
            "mcp_method": null,
            "mcp_tool": null,
            "request_bytes": 300,
            "response_bytes": 900,
            "process": "llm-emulator",
            "comm": "llm-emulator",
            "pid": 42,
            "container": "c1",
            "pod": "",
            "namespace": "",
            "local": "127.0.0.1:8000",
            "peer": "127.0.0.1:50000",
        })
    );
}

#[test]
fn wire_strings_are_bounded() {
    let mut ex = exchange();
    ex.request_model = Some("é".repeat(300));
    let v = line_of(&ex);
    let m = v["request_model"].as_str().unwrap();
    assert_eq!(m.len(), 256);
    assert!(m.chars().all(|c| c == 'é'));
}

fn write(log: &mut EventLog, n: usize) {
    let p = process();
    let ex = exchange();
    for seq in 0..n {
        let r = ExchangeRecord::new(
            &clock(),
            &view(&p),
            seq as u64,
            &ex,
            Place::default(),
            ids(),
        );
        log.record(&r);
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llm-observer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn rotates_by_size_keeping_one_file() {
    let dir = tempdir("events-rotate");
    let path = dir.join("events.jsonl");
    // One line's length, measured.
    let mut probe = EventLog::open(&dir.join("probe"), 0).unwrap();
    write(&mut probe, 1);
    let line = std::fs::metadata(dir.join("probe")).unwrap().len();
    // Room for exactly 3 lines per file.
    let mut log = EventLog::open(&path, 3 * line + line / 2).unwrap();
    write(&mut log, 8);
    assert_eq!(log.lines, 8);
    let (cur, old) = (lines(&path), lines(&rotated_path(&path)));
    // 8 lines: [0 1 2] rotated away (replaced), [3 4 5] in .1, [6 7] current.
    let ids = |v: &[Value]| {
        v.iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&old), ["42-7-99-3", "42-7-99-4", "42-7-99-5"]);
    assert_eq!(ids(&cur), ["42-7-99-6", "42-7-99-7"]);
    assert!(std::fs::metadata(&path).unwrap().len() <= 3 * line + line / 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn appends_to_an_existing_file_and_counts_failed_writes() {
    let dir = tempdir("events-append");
    let path = dir.join("events.jsonl");
    write(&mut EventLog::open(&path, 0).unwrap(), 2);
    write(&mut EventLog::open(&path, 0).unwrap(), 1);
    assert_eq!(lines(&path).len(), 3);

    // A rotation that cannot happen (the directory is gone) is a counted drop, not a panic.
    let dropped = prometheus::IntCounter::new("d", "d").unwrap();
    let mut log = EventLog::open(&path, 1)
        .unwrap()
        .with_dropped(dropped.clone());
    std::fs::remove_dir_all(&dir).unwrap();
    write(&mut log, 2);
    assert_eq!((log.lines, dropped.get()), (0, 2));
}
