//! HTTP/2 through [`ConnDecoder`]: real captures from Node's `http2` (nghttp2) client and server,
//! and hand-built frames for the failure paths.
//!
//! Fixtures (`tests/data/h2/`) were made with `node tests/support/h2c.js record DIR NAME N TOKENS
//! CONCURRENT`: a Node h2c server and client talking through a recording TCP relay, which wrote
//! each direction's exact bytes (`NAME.request.bin`, `NAME.response.bin`), the segments in arrival
//! order with their times (`NAME.timeline.tsv`) and what the client saw (`NAME.client.json`).
//! - `sequential`: 4 chat completions one after another on one connection (3 streamed with
//!   `include_usage`, the 4th not): the later HEADERS blocks use the HPACK dynamic table.
//! - `concurrent`: 4 streamed chat completions at once on one connection, their DATA frames
//!   interleaved.
//! - `httpx`: Python httpx 0.28 with `h2` 4.4 (hpack 4.2) as the client, through the same relay
//!   (`node tests/support/h2c.js relay DIR httpx` + `tests/support/h2_httpx_client.py PORT
//!   DIR/httpx.client.json`): the 4 requests of `sequential`, two at a time.
//!
//! The server's rules make every count known: prompt_tokens = characters of the message ("hello
//! number i": 14), completion_tokens = max_tokens = TOKENS + i % 3, one content chunk per token.

use std::path::PathBuf;

use llm_observer_decode::{
    Api, ConnDecoder, DecodeError, EndedBy, ErrorKind, Exchange, Incomplete, Limits, Operation,
    Output, Stream, TokenCount, Unsupported,
};

const BASE_NS: u64 = 1_000_000_000;

struct Seg {
    stream: Stream,
    bytes: Vec<u8>,
    ts_ns: u64,
}

fn load(name: &str) -> (Vec<Seg>, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/h2");
    let read = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).expect(ext);
    let (req, resp) = (read("request.bin"), read("response.bin"));
    let timeline = String::from_utf8(read("timeline.tsv")).expect("utf-8");
    let mut pos = [0usize; 2];
    let mut segs = Vec::new();
    for line in timeline.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        let (secs, frac) = c[0].split_once('.').expect("t_s");
        let ts_ns = BASE_NS
            + secs.parse::<u64>().expect("s") * 1_000_000_000
            + frac.parse::<u64>().expect("µs") * 1_000;
        let len: usize = c[2].parse().expect("bytes");
        let (stream, i, src) = match c[1] {
            "c2s" => (Stream::Request, 0, &req),
            _ => (Stream::Response, 1, &resp),
        };
        segs.push(Seg {
            stream,
            bytes: src[pos[i]..pos[i] + len].to_vec(),
            ts_ns,
        });
        pos[i] += len;
    }
    assert_eq!(pos, [req.len(), resp.len()], "{name}: timeline sizes");
    let client = serde_json::from_slice(&read("client.json")).expect("client.json");
    (segs, client)
}

/// Feeds `segs`, each cut into pieces of at most `piece` bytes; then the client closes.
fn run(segs: &[Seg], piece: usize) -> Vec<Output> {
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    for s in segs {
        for p in s.bytes.chunks(piece.max(1)) {
            d.feed(s.stream, p, s.ts_ns, &mut out);
            assert!(d.buffered_bytes() <= Limits::default().max_buffered_bytes_h2());
        }
    }
    assert!(d.is_http2(), "selected by content");
    let end = segs.last().map_or(BASE_NS, |s| s.ts_ns) + 1_000_000;
    d.end(EndedBy::Client, end, &mut out);
    assert_eq!(d.buffered_bytes(), 0);
    out
}

fn done(out: &[Output]) -> Vec<(u64, Exchange)> {
    let mut v: Vec<(u64, Exchange)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Done { seq, exchange } => Some((*seq, (**exchange).clone())),
            _ => None,
        })
        .collect();
    v.sort_by_key(|(s, _)| *s);
    v
}

fn check_fixture(name: &str, tokens: u64, streamed: &[bool]) {
    let (segs, client) = load(name);
    let out = run(&segs, usize::MAX);
    let errors: Vec<&Output> = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Error(_) | Output::Unsupported(_) | Output::Incomplete { .. }
            )
        })
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}");
    let started = out
        .iter()
        .filter(|o| matches!(o, Output::Started { .. }))
        .count();
    assert_eq!(started, streamed.len());
    let ex = done(&out);
    assert_eq!(ex.len(), streamed.len(), "{name}: one exchange per stream");
    let (mut prompt, mut completion, mut chunks) = (0, 0, 0);
    for (seq, e) in &ex {
        let i = *seq as usize;
        let n = tokens + (*seq % 3);
        assert_eq!(e.api, Api::Openai);
        assert_eq!(e.operation, Operation::Chat);
        assert_eq!(
            (e.method.as_str(), e.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        assert_eq!(e.request_model.as_deref(), Some("h2-model"));
        assert_eq!(e.response_model.as_deref(), Some("h2-model"));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.stream, streamed[i], "{name} seq {seq}");
        assert_eq!(e.error, None, "{name} seq {seq}");
        assert_eq!(e.incomplete, None);
        assert_eq!(e.finish_reason.as_deref(), Some("stop"));
        assert_eq!(e.tokens.prompt, TokenCount::reported(14));
        assert_eq!(e.tokens.completion, TokenCount::reported(n));
        if e.stream {
            assert_eq!(e.timings.content_events, n, "{name} seq {seq}");
            chunks += n;
            let t = &e.timings;
            assert!(t.request_start_ns <= t.request_end_ns.unwrap());
            assert!(t.response_start_ns.unwrap() <= t.first_token_ns.unwrap());
            assert!(t.first_token_ns.unwrap() < t.last_token_ns.unwrap());
            assert!(t.last_token_ns.unwrap() <= t.response_end_ns.unwrap());
        }
        assert!(e.request_bytes > 0 && e.response_bytes > 0);
        prompt += 14;
        completion += n;
    }
    // What the real client saw.
    assert_eq!(client["requests"], streamed.len());
    assert_eq!(client["prompt_tokens"], prompt);
    assert_eq!(client["completion_tokens"], completion);
    assert_eq!(client["content_chunks"], chunks);
    // Split invariance: the same bytes in smaller pieces (each keeping its segment's time) give
    // identical records.
    for piece in [1, 2, 3, 7, 9, 10, 64, 1000] {
        assert_eq!(done(&run(&segs, piece)), ex, "{name}: pieces of {piece}");
    }
}

#[test]
fn sequential_requests_share_the_hpack_dynamic_table() {
    let (segs, _) = load("sequential");
    // Evidence that the capture exercises the dynamic table: the 2nd request's HEADERS frame is
    // much shorter than the 1st (indexed fields ≥ 62 refer to entries the 1st added).
    let req: Vec<u8> = segs
        .iter()
        .filter(|s| s.stream == Stream::Request)
        .flat_map(|s| s.bytes.clone())
        .collect();
    let mut at = 24;
    let mut headers = Vec::new();
    while at + 9 <= req.len() {
        let len = u32::from_be_bytes([0, req[at], req[at + 1], req[at + 2]]) as usize;
        if req[at + 3] == 1 {
            headers.push(len);
        }
        at += 9 + len;
    }
    assert_eq!(headers.len(), 4);
    assert!(headers[1] < headers[0] * 2 / 3, "{headers:?}");
    check_fixture("sequential", 3, &[true, true, true, false]);
}

#[test]
fn concurrent_streams_on_one_connection() {
    check_fixture("concurrent", 5, &[true, true, true, true]);
}

/// A second, independent HTTP/2 stack as the client: Python httpx over the `h2` package (its own
/// framing and HPACK encoder), two streams at a time (tests/support/h2_httpx_client.py).
#[test]
fn python_h2_client_against_node() {
    check_fixture("httpx", 3, &[true, true, true, false]);
}

#[test]
fn the_planted_secret_stays_out_of_records() {
    let (segs, _) = load("concurrent");
    let out = run(&segs, usize::MAX);
    let text = format!("{out:?}");
    assert!(!text.contains("sk-fixture-secret"));
}

#[test]
fn joined_mid_way_is_counted_not_misparsed() {
    let (segs, _) = load("sequential");
    // Drop the first request segment (preface, SETTINGS and the first HEADERS): what follows uses
    // dynamic-table entries the decoder never saw.
    let rest: Vec<Seg> = segs
        .into_iter()
        .skip_while(|s| s.stream == Stream::Response)
        .skip(1)
        .filter(|s| s.stream == Stream::Request)
        .collect();
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    // The server's SETTINGS first (so the connection is taken as HTTP/2), then request frames.
    let settings = [0u8, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    d.feed(Stream::Response, &settings, BASE_NS, &mut out);
    for s in &rest {
        d.feed(s.stream, &s.bytes, s.ts_ns, &mut out);
    }
    d.end(EndedBy::Client, BASE_NS + 1, &mut out);
    assert_eq!(out, vec![Output::Unsupported(Unsupported::Http2MidStream)]);
}

#[test]
fn frames_without_a_preface_are_counted_mid_stream() {
    let (segs, _) = load("concurrent");
    // The client's second segment alone (a WINDOW_UPDATE / HEADERS after the start).
    let later: Vec<&Seg> = segs
        .iter()
        .filter(|s| s.stream == Stream::Request)
        .collect();
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, &later[1].bytes, BASE_NS, &mut out);
    assert_eq!(out, vec![Output::Unsupported(Unsupported::Http2MidStream)]);
    assert!(d.is_done());
}

// ---- hand-built frames ----

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

const CHAT: &[u8] = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

struct Peer {
    enc: loona_hpack::Encoder<'static>,
}

impl Peer {
    fn new() -> Self {
        Peer {
            enc: loona_hpack::Encoder::new(),
        }
    }
    fn block(&mut self, h: &[(&str, &str)]) -> Vec<u8> {
        self.enc
            .encode(h.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }
}

fn request_headers(peer: &mut Peer, stream: u32, ct: &str) -> Vec<u8> {
    let b = peer.block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "api.openai.com"),
        ("content-type", ct),
    ]);
    frame(1, 0x4, stream, &b)
}

/// Preface + SETTINGS + a streamed chat request on `stream`.
fn open(client: &mut Peer, stream: u32) -> Vec<u8> {
    let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    v.extend(frame(4, 0, 0, &[]));
    v.extend(request_headers(client, stream, "application/json"));
    v.extend(frame(0, 0x1, stream, CHAT));
    v
}

fn sse_head(server: &mut Peer, stream: u32) -> Vec<u8> {
    let b = server.block(&[(":status", "200"), ("content-type", "text/event-stream")]);
    frame(1, 0x4, stream, &b)
}

const CHUNK: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";

#[test]
fn headers_split_over_continuation_and_padded_data() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let block = c.block(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "localhost"),
        ("content-type", "application/json"),
    ]);
    let (a, b) = block.split_at(5);
    // HEADERS (padded, with priority) without END_HEADERS, then CONTINUATION.
    let mut p = vec![3u8, 0, 0, 0, 0, 16];
    p.extend_from_slice(a);
    p.extend_from_slice(&[0, 0, 0]);
    req.extend(frame(1, 0x8 | 0x20, 1, &p));
    req.extend(frame(9, 0x4, 1, b));
    // Body in a padded DATA frame with END_STREAM.
    let mut body = vec![4u8];
    body.extend_from_slice(CHAT);
    body.extend_from_slice(&[0; 4]);
    req.extend(frame(0, 0x8 | 0x1, 1, &body));
    let mut resp = frame(4, 0, 0, &[]);
    resp.extend(sse_head(&mut s, 1));
    resp.extend(frame(0, 0, 1, CHUNK));
    resp.extend(frame(0, 0, 1, CHUNK));
    resp.extend(frame(0, 0x1, 1, b"data: [DONE]\n\n"));
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, &req, BASE_NS, &mut out);
    d.feed(Stream::Response, &resp, BASE_NS + 10, &mut out);
    let ex = done(&out);
    assert_eq!(ex.len(), 1, "{out:?}");
    let e = &ex[0].1;
    assert_eq!(e.request_model.as_deref(), Some("m"));
    assert_eq!(e.timings.content_events, 2);
    assert_eq!(e.tokens.completion, TokenCount::counted(2));
    assert_eq!(e.error, None);
}

/// Request on stream 1, response head and one chunk, then `tail` (from `tail_dir`).
fn cut_with(tail: Vec<u8>, tail_dir: Stream) -> (Vec<Output>, ConnDecoder) {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, &open(&mut c, 1), BASE_NS, &mut out);
    let mut resp = sse_head(&mut s, 1);
    resp.extend(frame(0, 0, 1, CHUNK));
    d.feed(Stream::Response, &resp, BASE_NS + 10, &mut out);
    d.feed(tail_dir, &tail, BASE_NS + 20, &mut out);
    (out, d)
}

#[test]
fn rst_stream_from_the_client_is_a_cancel() {
    let (out, d) = cut_with(frame(3, 0, 1, &[0, 0, 0, 8]), Stream::Request);
    let ex = done(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].1.error, Some(ErrorKind::ClientCancelled));
    assert_eq!(d.pending_requests(), 0);
}

#[test]
fn rst_stream_from_the_server_is_a_server_close() {
    let (out, _) = cut_with(frame(3, 0, 1, &[0, 0, 0, 2]), Stream::Response);
    assert_eq!(done(&out)[0].1.error, Some(ErrorKind::ServerClosed));
}

#[test]
fn goaway_ends_streams_it_did_not_process() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    let mut req = open(&mut c, 1);
    req.extend(request_headers(&mut c, 3, "application/json"));
    req.extend(frame(0, 0x1, 3, CHAT));
    d.feed(Stream::Request, &req, BASE_NS, &mut out);
    // The server processed stream 1 only.
    let mut resp = frame(7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    resp.extend(sse_head(&mut s, 1));
    resp.extend(frame(0, 0x1, 1, b"data: [DONE]\n\n"));
    d.feed(Stream::Response, &resp, BASE_NS + 5, &mut out);
    let ex = done(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].0, 1, "stream 3 is seq 1");
    assert_eq!(ex[1].1.status, None, "no response head");
    assert_eq!(ex[1].1.error, Some(ErrorKind::ServerClosed));
    assert_eq!(ex[0].1.status, Some(200));
}

#[test]
fn connection_close_mid_stream() {
    // The connection ends with part of a SETTINGS frame received (held by the frame reader).
    let (mut out, mut d) = cut_with(
        frame(4, 0, 0, &[0, 3, 0, 0, 0, 100])[..12].to_vec(),
        Stream::Response,
    );
    assert!(d.buffered_bytes() > 0);
    d.end(EndedBy::Server, BASE_NS + 30, &mut out);
    assert_eq!(done(&out)[0].1.error, Some(ErrorKind::ServerClosed));
    assert_eq!(d.buffered_bytes(), 0, "nothing held after the end");
}

#[test]
fn a_gap_ends_every_open_exchange_incomplete() {
    let (mut out, mut d) = cut_with(Vec::new(), Stream::Request);
    d.gap(Stream::Response, 100, BASE_NS + 30, &mut out);
    let ex = done(&out);
    assert_eq!(ex[0].1.incomplete, Some(Incomplete::CaptureGap));
    assert!(d.is_done());
    assert!(out.contains(&Output::Error(DecodeError::Gap { missing: 100 })));
}

#[test]
fn grpc_is_counted_unsupported_and_skipped() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    req.extend(request_headers(&mut c, 1, "application/grpc+proto"));
    req.extend(frame(0, 0x1, 1, &[0, 0, 0, 0, 2, 8, 1]));
    // A chat request after it on the same connection still decodes.
    req.extend(request_headers(&mut c, 3, "application/json"));
    req.extend(frame(0, 0x1, 3, CHAT));
    d.feed(Stream::Request, &req, BASE_NS, &mut out);
    let mut resp = sse_head(&mut s, 1);
    resp.extend(frame(0, 0, 1, &[0, 0, 0, 0, 0]));
    resp.extend(sse_head(&mut s, 3));
    resp.extend(frame(0, 0x1, 3, b"data: [DONE]\n\n"));
    d.feed(Stream::Response, &resp, BASE_NS + 1, &mut out);
    assert_eq!(
        out.iter()
            .filter(|o| **o == Output::Unsupported(Unsupported::Grpc))
            .count(),
        1
    );
    let ex = done(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].0, 1);
}

#[test]
fn undecodable_hpack_stops_the_connection() {
    let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // Indexed field 70: not in the (empty) dynamic table.
    req.extend(frame(1, 0x4 | 0x1, 1, &[0x80 | 70]));
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, &req, BASE_NS, &mut out);
    assert_eq!(out, vec![Output::Error(DecodeError::Hpack)]);
    assert!(d.is_done());
}

#[test]
fn header_blocks_are_bounded() {
    let limits = Limits {
        max_head_bytes: 256,
        ..Limits::default()
    };
    let mut c = Peer::new();
    let big = "v".repeat(300);
    let block = c.block(&[(":method", "POST"), ("x-big", big.as_str())]);
    let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // Split into frames under the cap whose sum is over it.
    let (a, b) = block.split_at(block.len() / 2);
    req.extend(frame(1, 0, 1, a));
    req.extend(frame(9, 0x4, 1, b));
    let mut d = ConnDecoder::new(limits);
    let mut out = Vec::new();
    d.feed(Stream::Request, &req, BASE_NS, &mut out);
    assert_eq!(
        out,
        vec![Output::Error(DecodeError::HeadTooLarge { limit: 256 })]
    );
    assert!(d.is_done());
    assert!(d.buffered_bytes() <= limits.max_buffered_bytes());
}

#[test]
fn streams_per_connection_are_bounded() {
    let limits = Limits {
        max_pending_requests: 2,
        ..Limits::default()
    };
    let mut c = Peer::new();
    let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for id in [1, 3, 5] {
        req.extend(request_headers(&mut c, id, "application/json"));
    }
    let mut d = ConnDecoder::new(limits);
    let mut out = Vec::new();
    d.feed(Stream::Request, &req, BASE_NS, &mut out);
    assert_eq!(out, vec![Output::Error(DecodeError::TooManyPending)]);
    assert_eq!(d.pending_requests(), 2);
}

#[test]
fn http1_still_goes_to_http1() {
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, b"P", BASE_NS, &mut out);
    d.feed(
        Stream::Request,
        b"OST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
        BASE_NS,
        &mut out,
    );
    assert!(!d.is_http2());
    assert!(
        matches!(
            out.as_slice(),
            [Output::Started {
                seq: 0,
                api: Api::Openai,
                ..
            }]
        ),
        "{out:?}"
    );
}

/// Found by the conn_decoder fuzz target: a connection that ended after the first bytes of a
/// preface kept them.
#[test]
fn a_preface_cut_short_is_not_kept_after_the_end() {
    let mut d = ConnDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(Stream::Request, b"PRI", BASE_NS, &mut out);
    assert_eq!(d.buffered_bytes(), 3);
    d.end(
        EndedBy::Capture(Incomplete::CaptureGap),
        BASE_NS + 1,
        &mut out,
    );
    assert_eq!(d.buffered_bytes(), 0);
    assert!(out.is_empty(), "{out:?}");
}
