//! Root end-to-end tests of OTLP export: the real agent watches the emulator while the official
//! OpenAI SDK and curl call it, and sends its spans to a receiver this test runs: an OTLP/HTTP
//! one (decoding with the OTLP protobuf types), and an OTLP/gRPC one (tonic's server with the
//! generated TraceService). After the agent has exited (its exporter sends what is queued first),
//! the receiver holds exactly one span per exchange and view, with exact GenAI attribute values;
//! a call carrying a `traceparent` joins that trace; a loopback call's client and server spans
//! share a trace, the server's the child of the client's.
//!
//! Needs root, BPF, the release agent (`LLM_OBSERVER_BIN`), the emulator and the clients' venv;
//! under `CI=true` a missing piece fails the test instead of skipping it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llm_observer_tests::harness::{
    guard,
    quiesce::wait_quiescent,
    stack::{Agent, EmulatorProc, curl_status, run_workload},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::Span,
};
use prost::Message as _;

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLER_TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const CALLER_SPAN: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const SETTLE: Duration = Duration::from_secs(30);
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// One export request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// The HTTP path; empty over gRPC (tonic routes by it, so a wrong one never arrives).
    path: String,
    headers: BTreeMap<String, String>,
    request: ExportTraceServiceRequest,
}

/// A minimal OTLP/HTTP receiver: answers every POST 200 with an empty (valid) protobuf response.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

fn read_request(mut s: TcpStream) -> std::io::Result<Option<Received>> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf[..head_end]).map_err(std::io::Error::other)?;
    let path = req.path.unwrap_or("").to_owned();
    let headers: BTreeMap<String, String> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
        .map_err(std::io::Error::other)?;
    s.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )?;
    Ok(Some(Received {
        path,
        headers,
        request,
    }))
}

/// The gRPC receiver's TraceService: keeps each request with its metadata.
#[derive(Clone)]
struct GrpcService {
    got: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = req
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.got.lock().expect("receiver lock").push(Received {
            path: String::new(),
            headers,
            request: req.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// An OTLP/gRPC receiver on its own runtime thread.
    fn start_grpc() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let got = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(GrpcService { got: got.clone() });
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                if let Err(e) = tonic::transport::Server::builder()
                    .serve_with_incoming(service, incoming)
                    .await
                {
                    eprintln!("OTLP/gRPC receiver: {e}");
                }
            });
        });
        Receiver { addr, got }
    }

    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                match read_request(s) {
                    Ok(Some(r)) => sink.lock().expect("receiver lock").push(r),
                    Ok(None) => {}
                    Err(e) => eprintln!("OTLP receiver: bad request: {e}"),
                }
            }
        });
        Receiver { addr, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("receiver lock").clone()
    }
}

/// A span with its resource's attributes.
struct Got {
    span: Span,
    resource: BTreeMap<String, Value>,
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .filter_map(|kv| {
            let v = kv.value.clone()?.value?;
            Some((kv.key.clone(), v))
        })
        .collect()
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

fn spans(received: &[Received]) -> Vec<Got> {
    let mut out = Vec::new();
    for r in received {
        for rs in &r.request.resource_spans {
            let resource = attrs(&rs.resource.clone().unwrap_or_default().attributes);
            for ss in &rs.scope_spans {
                assert_eq!(
                    ss.scope.as_ref().map(|s| s.name.as_str()),
                    Some("llm-observer")
                );
                for span in &ss.spans {
                    out.push(Got {
                        span: span.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
    out
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn one_span_per_exchange_with_genai_attributes_and_linked_views() {
    if !guard::agent_ready() {
        return;
    }
    one_span_per_exchange(Receiver::start(), "http/protobuf");
}

#[test]
#[ignore = "needs root, BPF, the release agent and the clients' venv"]
fn the_same_spans_over_grpc() {
    if !guard::agent_ready() {
        return;
    }
    one_span_per_exchange(Receiver::start_grpc(), "grpc");
}

/// The workload, and every check of what `receiver` got over `protocol`.
fn one_span_per_exchange(receiver: Receiver, protocol: &str) {
    let emu = EmulatorProc::start(EMULATOR, &["--ttft-ms", "20", "--token-interval-ms", "5"])
        .expect("emulator starts");
    let port = emu.addr().port();
    let endpoint = format!("http://{}", receiver.addr);
    let mut agent = Agent::start(&[
        "--port",
        &port.to_string(),
        "--otlp-protocol",
        protocol,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-header",
        "x-tenant=t1",
        "--otlp-flush-ms",
        "50",
    ])
    .expect("agent starts");
    let began = unix_ns();

    let model = format!("otlp-openai:{port}");
    let c = run_workload(
        &emu.base_url(),
        &[
            "--api", "openai", "--mode", "stream", "--usage", "--n", "3", "--model", &model,
        ],
        WORKLOAD_TIMEOUT,
    )
    .expect("workload");
    assert_eq!(
        (c.ok(), c.prompt_tokens(), c.completion_tokens()),
        (3, 15, 24),
        "{:?}",
        c.0
    );
    // A call made inside the caller's trace (a W3C traceparent), with sampling parameters.
    let traced = format!("otlp-traced:{port}");
    let body = serde_json::json!({
        "model": traced, "max_tokens": 4, "temperature": 0.5, "stream": false,
        "messages": [{"role": "user", "content": "hi there"}],
    });
    let traceparent = format!("traceparent: {TRACEPARENT}");
    let body = body.to_string();
    let url = format!("{}/v1/chat/completions", emu.base_url());
    let status = curl_status(&[
        "-H",
        "content-type: application/json",
        "-H",
        &traceparent,
        "-d",
        &body,
        &url,
    ])
    .expect("run curl");
    assert_eq!(status, "200");
    let ended = unix_ns();
    let e = wait_quiescent(agent.addr(), SETTLE).expect("agent quiescent");
    assert_eq!(e.sum("llm_requests_total", &[("model", &model)]), 3.0);
    // The exporter sends everything queued before the agent exits.
    let status = agent
        .proc
        .terminate(Duration::from_secs(20))
        .expect("agent exits");
    assert!(
        status.success(),
        "agent exit {status}: {}",
        agent.proc.output()
    );

    let received = receiver.received();
    assert!(
        !received.is_empty(),
        "nothing exported; agent log:\n{}",
        agent.proc.output()
    );
    for r in &received {
        if protocol == "grpc" {
            // tonic's server only hands over a well-formed TraceService/Export call.
            assert_eq!(r.path, "");
        } else {
            assert_eq!(r.path, "/v1/traces");
            assert_eq!(
                r.headers.get("content-type").map(String::as_str),
                Some("application/x-protobuf")
            );
        }
        assert_eq!(r.headers.get("x-tenant").map(String::as_str), Some("t1"));
    }
    let all = spans(&received);
    assert_eq!(
        all.len(),
        8,
        "4 calls x 2 views; agent log:\n{}",
        agent.proc.output()
    );
    let (traced_spans, got): (Vec<Got>, Vec<Got>) = all
        .into_iter()
        .partition(|g| attrs(&g.span.attributes)["gen_ai.request.model"] == s(&traced));
    assert_eq!((traced_spans.len(), got.len()), (2, 6));
    // The traced call: both views in the caller's trace, the client's span the caller's child,
    // the server's the client's.
    let tc = traced_spans
        .iter()
        .find(|g| g.span.kind == 3)
        .expect("client span");
    let ts = traced_spans
        .iter()
        .find(|g| g.span.kind == 2)
        .expect("server span");
    assert_eq!(tc.span.trace_id, CALLER_TRACE.to_vec());
    assert_eq!(ts.span.trace_id, CALLER_TRACE.to_vec());
    assert_eq!(tc.span.parent_span_id, CALLER_SPAN.to_vec());
    assert_eq!(ts.span.parent_span_id, tc.span.span_id);
    assert_eq!(tc.resource["service.name"], s("curl"));
    for g in [tc, ts] {
        let a = attrs(&g.span.attributes);
        assert_eq!(g.span.name, format!("chat {traced}"));
        assert_eq!(a["gen_ai.request.max_tokens"], Value::IntValue(4));
        assert_eq!(a["gen_ai.request.temperature"], Value::DoubleValue(0.5));
        assert_eq!(a["gen_ai.usage.input_tokens"], Value::IntValue(2));
        assert_eq!(a["gen_ai.usage.output_tokens"], Value::IntValue(4));
    }
    let (server, client): (Vec<&Got>, Vec<&Got>) = got.iter().partition(|g| g.span.kind == 2);
    assert_eq!((server.len(), client.len()), (3, 3));
    assert!(
        client.iter().all(|g| g.span.kind == 3),
        "client views are CLIENT spans"
    );

    let name = format!("chat {model}");
    for g in got.iter() {
        let sp = &g.span;
        let a = attrs(&sp.attributes);
        assert_eq!(sp.name, name);
        assert_eq!(a["gen_ai.operation.name"], s("chat"));
        assert_eq!(a["gen_ai.provider.name"], s("openai"));
        assert_eq!(a["gen_ai.request.model"], s(&model));
        assert_eq!(a["gen_ai.usage.input_tokens"], Value::IntValue(5));
        assert_eq!(a["gen_ai.usage.output_tokens"], Value::IntValue(8));
        assert_eq!(a["gen_ai.usage.output_tokens.source"], s("reported"));
        let finish = match &a["gen_ai.response.finish_reasons"] {
            Value::ArrayValue(v) => v.values.clone(),
            other => panic!("finish reasons {other:?}"),
        };
        assert_eq!(
            finish,
            vec![AnyValue {
                value: Some(s("stop"))
            }]
        );
        assert_eq!(a["server.address"], s("127.0.0.1"));
        assert_eq!(a["server.port"], Value::IntValue(i64::from(port)));
        assert_eq!(a["http.response.status_code"], Value::IntValue(200));
        assert!(!a.contains_key("error.type"), "{a:?}");
        // Kernel times converted to wall clock: inside the workload's run, in order.
        assert!(
            began <= sp.start_time_unix_nano && sp.start_time_unix_nano < sp.end_time_unix_nano
        );
        assert!(
            sp.end_time_unix_nano <= ended,
            "{} > {ended}",
            sp.end_time_unix_nano
        );
        let Value::DoubleValue(ttft) = a["gen_ai.server.time_to_first_token"] else {
            panic!("TTFT attribute {a:?}");
        };
        assert!(ttft >= 0.02, "TTFT {ttft} below the emulator's 20 ms");
        assert_eq!(sp.events.len(), 1);
        let ev = &sp.events[0];
        assert_eq!(ev.name, "gen_ai.first_token");
        let from_start = ev.time_unix_nano - sp.start_time_unix_nano;
        assert!(
            (from_start as f64 / 1e9 - ttft).abs() < 1e-6,
            "{from_start} vs {ttft}"
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(g.resource["host.name"], s(host.trim()));
        assert_eq!(sp.trace_id.len(), 16);
        assert_eq!(sp.span_id.len(), 8);
    }
    for g in &server {
        assert_eq!(g.resource["service.name"], s("llm-emulator"));
        assert_eq!(
            g.resource["process.pid"],
            Value::IntValue(i64::from(emu.proc.id()))
        );
        // The loopback call's client view is this span's parent, in the same trace.
        let parent = client
            .iter()
            .find(|c| c.span.span_id == g.span.parent_span_id)
            .unwrap_or_else(|| panic!("server span {:?} has no client parent", g.span.name));
        assert_eq!(parent.span.trace_id, g.span.trace_id);
        assert!(
            parent.span.parent_span_id.is_empty(),
            "the client view is the root"
        );
    }
    let traces: std::collections::BTreeSet<&Vec<u8>> =
        got.iter().map(|g| &g.span.trace_id).collect();
    assert_eq!(traces.len(), 3, "one trace per call");
    assert!(!traces.contains(&CALLER_TRACE.to_vec()));
}
