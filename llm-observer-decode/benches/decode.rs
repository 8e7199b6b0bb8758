//! Decode throughput on realistic streaming bodies: an Ollama NDJSON stream and an OpenAI SSE
//! stream of 1,000 chunks each (generated deterministically below), decoded end to end by the API
//! decoder (framing + JSON + record), and the SSE / NDJSON framers alone.
//!
//! Two feed patterns: one call per event (each TCP segment carrying one event, as servers flush
//! per token) and 16 KiB pieces (a backlog read in one go). Criterion prints time per iteration,
//! MB/s (`Bytes` throughput) and events/s (`Elements` throughput, 1,000 per iteration, so
//! ns/event = time / 1,000).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, falling back to wall time
//! where that fails), so the figures are per core even on a busy shared machine.
//!
//! `h2_openai_sse`: the OpenAI stream as the response of one HTTP/2 stream (preface, HPACK
//! HEADERS, one DATA frame per event) through the whole `ConnDecoder`, against the same stream over
//! HTTP/1.1 chunked (`h1_openai_sse`): the cost of the HTTP/2 layer per event.
//!
//! Run: `cargo bench -p llm-observer-decode --bench decode`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_observer_decode::llm::{self, BodyEnd, Headers, Request, ResponseHead};
use llm_observer_decode::protocol::ndjson::NdjsonParser;
use llm_observer_decode::protocol::sse::SseParser;
use llm_observer_decode::{ConnDecoder, DecodeError, EndedBy, Limits, Output, Stream};

const CHUNKS: usize = 1_000;

/// Deterministic token text (xorshift), 1–8 lowercase letters with a leading space.
fn words() -> impl Iterator<Item = String> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 8) as usize;
        let mut w = String::from(" ");
        for i in 0..len {
            w.push((b'a' + ((x >> (8 + i * 5)) % 26) as u8) as char);
        }
        w
    })
}

/// An Ollama `/api/chat` NDJSON stream: one line per event.
fn ollama_events() -> Vec<Vec<u8>> {
    let mut ev: Vec<Vec<u8>> = words()
        .take(CHUNKS - 1)
        .map(|w| {
            format!(
                "{{\"model\":\"llama3.2:3b\",\"created_at\":\"2025-06-01T12:00:00.123456789Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"{w}\"}},\"done\":false}}\n"
            )
            .into_bytes()
        })
        .collect();
    ev.push(b"{\"model\":\"llama3.2:3b\",\"created_at\":\"2025-06-01T12:00:09.123456789Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":9000000000,\"load_duration\":12000000,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\"eval_count\":999,\"eval_duration\":8800000000}\n".to_vec());
    ev
}

/// An OpenAI `/v1/chat/completions` SSE stream: role chunk, content chunks, finish, usage, [DONE].
fn openai_events() -> Vec<Vec<u8>> {
    let head = "\"id\":\"chatcmpl-9a8b7c6d5e4f3a2b1c0d\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0123456789\"";
    let mut ev = vec![format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n").into_bytes()];
    ev.extend(words().take(CHUNKS - 3).map(|w| {
        format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n").into_bytes()
    }));
    ev.push(format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n").into_bytes());
    ev.push(format!("data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":26,\"completion_tokens\":997,\"total_tokens\":1023}}}}\n\ndata: [DONE]\n\n").into_bytes());
    ev
}

struct Body {
    path: &'static str,
    request: &'static str,
    content_type: &'static str,
    events: Vec<Vec<u8>>,
    whole: Vec<u8>,
}

impl Body {
    fn new(
        path: &'static str,
        request: &'static str,
        content_type: &'static str,
        events: Vec<Vec<u8>>,
    ) -> Self {
        let whole = events.concat();
        Body {
            path,
            request,
            content_type,
            events,
            whole,
        }
    }

    /// Decodes the response fed as `pieces`; returns the content-event count (checked).
    fn decode<'a>(&self, pieces: impl Iterator<Item = &'a [u8]>) -> u64 {
        let req_headers = Headers(vec![("content-type".into(), b"application/json".to_vec())]);
        let req = Request {
            method: "POST",
            path: self.path,
            headers: &req_headers,
            body: self.request.as_bytes(),
            body_truncated: false,
            start_ns: 1,
            end_ns: 2,
            wire_bytes: 300,
        };
        let mut d = llm::recognize(&req).expect("recognised");
        let h = Headers(vec![(
            "content-type".into(),
            self.content_type.as_bytes().to_vec(),
        )]);
        d.response_head(&ResponseHead {
            status: 200,
            headers: &h,
            start_ns: 3,
        });
        let mut errors: Vec<DecodeError> = Vec::new();
        for (i, p) in pieces.enumerate() {
            black_box(d.response_body(p, 10 + i as u64, &mut errors));
        }
        let e = d.finish(BodyEnd::Complete, u64::MAX, self.whole.len() as u64);
        assert!(errors.is_empty() && e.error.is_none());
        e.timings.content_events
    }
}

/// Nanoseconds of CPU time this thread has used, if the clock is available.
fn on_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Runs `f` `iters` times and returns its on-CPU (or wall) time.
fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let (cpu0, wall0) = (on_cpu_ns(), Instant::now());
    for _ in 0..iters {
        f();
    }
    match (cpu0, on_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
        _ => wall0.elapsed(),
    }
}

fn bench(c: &mut Criterion) {
    let bodies = [
        (
            "ollama_ndjson",
            Body::new(
                "/api/chat",
                r#"{"model":"llama3.2:3b","messages":[{"role":"user","content":"Tell me a story."}]}"#,
                "application/x-ndjson",
                ollama_events(),
            ),
        ),
        (
            "openai_sse",
            Body::new(
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a story."}]}"#,
                "text/event-stream; charset=utf-8",
                openai_events(),
            ),
        ),
    ];
    for (name, body) in &bodies {
        assert!(body.decode(body.events.iter().map(Vec::as_slice)) >= (CHUNKS - 3) as u64);
        for (unit, throughput) in [
            ("bytes", Throughput::Bytes(body.whole.len() as u64)),
            ("events", Throughput::Elements(CHUNKS as u64)),
        ] {
            let mut g = c.benchmark_group(format!("{name}/{unit}"));
            g.throughput(throughput);
            g.bench_function("decode_per_event", |b| {
                b.iter_custom(|n| {
                    timed(n, || {
                        black_box(body.decode(body.events.iter().map(Vec::as_slice)));
                    })
                })
            });
            g.bench_function("decode_16k_pieces", |b| {
                b.iter_custom(|n| {
                    timed(n, || {
                        black_box(body.decode(body.whole.chunks(16 * 1024)));
                    })
                })
            });
            g.bench_function("framing_only", |b| {
                b.iter_custom(|n| {
                    timed(n, || {
                        let mut errors = Vec::new();
                        let mut n = 0u64;
                        if body.content_type.contains("event-stream") {
                            let mut p = SseParser::new(1 << 20);
                            for (i, e) in body.events.iter().enumerate() {
                                p.feed(e, i as u64, &mut errors, |ev, _| n += ev.data.len() as u64);
                            }
                        } else {
                            let mut p = NdjsonParser::new(1 << 20);
                            for (i, e) in body.events.iter().enumerate() {
                                p.feed(e, i as u64, &mut errors, |l, _, _| n += l.len() as u64);
                            }
                        }
                        black_box(n);
                    })
                })
            });
            g.finish();
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The OpenAI stream as one connection's two directions, per protocol: (request bytes, response
/// pieces — one per event after the head).
fn conn_bytes(h2: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let body: &[u8] = br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me a story."}]}"#;
    let events = openai_events();
    if h2 {
        let mut enc = loona_hpack::Encoder::new();
        let req_block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/v1/chat/completions"),
            (b":authority", b"localhost"),
            (b"content-type", b"application/json"),
        ]);
        let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        req.extend(frame(4, 0, 0, &[]));
        req.extend(frame(1, 4, 1, &req_block));
        req.extend(frame(0, 1, 1, body));
        let mut enc = loona_hpack::Encoder::new();
        let resp_block = enc.encode([
            (&b":status"[..], &b"200"[..]),
            (b"content-type", b"text/event-stream"),
        ]);
        let mut pieces = vec![[frame(4, 0, 0, &[]), frame(1, 4, 1, &resp_block)].concat()];
        let last = events.len() - 1;
        for (i, e) in events.iter().enumerate() {
            pieces.push(frame(0, if i == last { 1 } else { 0 }, 1, e));
        }
        (req, pieces)
    } else {
        let mut req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let mut pieces = vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
        ];
        for e in &events {
            let mut c = format!("{:x}\r\n", e.len()).into_bytes();
            c.extend_from_slice(e);
            c.extend_from_slice(b"\r\n");
            pieces.push(c);
        }
        pieces.push(b"0\r\n\r\n".to_vec());
        (req, pieces)
    }
}

/// One connection decoded whole; returns the content events of its one exchange.
fn decode_conn(req: &[u8], pieces: &[Vec<u8>]) -> u64 {
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, req, 1, &mut out);
    for (i, p) in pieces.iter().enumerate() {
        d.feed(Stream::Response, p, 2 + i as u64, &mut out);
    }
    d.end(EndedBy::Client, u64::MAX, &mut out);
    out.iter()
        .find_map(|o| match o {
            Output::Done { exchange, .. } => Some(exchange.timings.content_events),
            _ => None,
        })
        .unwrap_or(0)
}

fn bench_conn(c: &mut Criterion) {
    for (name, h2) in [("h1_openai_sse", false), ("h2_openai_sse", true)] {
        let (req, pieces) = conn_bytes(h2);
        assert!(decode_conn(&req, &pieces) >= (CHUNKS - 3) as u64, "{name}");
        let bytes: usize = req.len() + pieces.iter().map(Vec::len).sum::<usize>();
        for (unit, throughput) in [
            ("bytes", Throughput::Bytes(bytes as u64)),
            ("events", Throughput::Elements(CHUNKS as u64)),
        ] {
            let mut g = c.benchmark_group(format!("{name}/{unit}"));
            g.throughput(throughput);
            g.bench_function("conn_per_event", |b| {
                b.iter_custom(|n| {
                    timed(n, || {
                        black_box(decode_conn(&req, &pieces));
                    })
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench, bench_conn);
criterion_main!(benches);
