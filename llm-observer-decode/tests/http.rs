//! The HTTP/1.1 layer, byte-exact: framing, decompression, real captures, split invariance,
//! keep-alive pairing, gaps, and hostile input under the memory caps.

#[path = "http/conn.rs"]
mod conn;
#[path = "http/harness.rs"]
mod harness;
#[path = "http/hostile.rs"]
mod hostile;

use harness::*;
use llm_observer_decode::protocol::head::{Direction, Head};
use llm_observer_decode::protocol::http1::{MessageEnd, Outcome};
use llm_observer_decode::{DecodeError, Unsupported};

fn end(outcome: Outcome, ts_ns: u64, wire_bytes: u64, truncated: bool) -> Ev {
    Ev::End(MessageEnd {
        outcome,
        ts_ns,
        wire_bytes,
        truncated,
    })
}

fn status_of(ev: &Ev) -> Option<u16> {
    match ev {
        Ev::Head(Head::Response(r)) => Some(r.status),
        _ => None,
    }
}

fn path_of(ev: &Ev) -> Option<String> {
    match ev {
        Ev::Head(Head::Request(r)) => Some(format!("{} {}", r.method, r.path)),
        _ => None,
    }
}

#[test]
fn content_length_request() {
    let wire =
        b"POST /v1/chat/completions?beta=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let ev = parse_whole(Direction::Request, wire, false);
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(
        path_of(&ev[0]).as_deref(),
        Some("POST /v1/chat/completions")
    );
    assert_eq!(ev[1], Ev::Body(b"hello".to_vec()));
    assert_eq!(ev[2], end(Outcome::Complete, 0, wire.len() as u64, false));
}

#[test]
fn request_without_length_has_no_body_and_blank_lines_between_are_skipped() {
    let wire = b"GET /a HTTP/1.1\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let ev = parse_whole(Direction::Request, wire, false);
    let paths: Vec<_> = ev.iter().filter_map(path_of).collect();
    assert_eq!(paths, ["GET /a", "GET /b"]);
    assert_eq!(ev[1], end(Outcome::Complete, 0, 19, false));
    assert_eq!(ev.len(), 4);
}

#[test]
fn chunked_response_with_extensions_and_trailers() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\ndata\r\n3\r\n: x\r\n0\r\nX-T: 1\r\n\r\n";
    let ev = parse_whole(Direction::Response, wire, false);
    assert_eq!(status_of(&ev[0]), Some(200));
    assert_eq!(ev[1], Ev::Body(b"data: x".to_vec()));
    assert_eq!(ev[2], end(Outcome::Complete, 0, wire.len() as u64, false));
    assert_eq!(ev.len(), 3);
}

#[test]
fn close_delimited_response_completes_at_end_and_is_cut_otherwise() {
    let wire = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close";
    let ev = parse_whole(Direction::Response, wire, true);
    assert_eq!(ev[1], Ev::Body(b"until close".to_vec()));
    assert_eq!(ev[2], end(Outcome::Complete, 1, wire.len() as u64, false));

    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    let ev = parse_whole(Direction::Response, cut, true);
    assert_eq!(
        ev[1..],
        [
            Ev::Body(b"abc".to_vec()),
            end(Outcome::Cut, 1, cut.len() as u64, false)
        ]
    );
}

#[test]
fn interim_responses_are_skipped() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let ev = parse_whole(Direction::Response, wire, false);
    let statuses: Vec<_> = ev.iter().filter_map(status_of).collect();
    assert_eq!(statuses, [201]);
    assert_eq!(ev[1], Ev::Body(b"ok".to_vec()));
    assert_eq!(ev.len(), 3);
}

#[test]
fn no_body_for_head_204_304() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let c = Collector {
        no_body: [true, false, false, false].into(),
        ..Collector::default()
    };
    let c = parse_pieces(
        Direction::Response,
        small_limits(),
        wire,
        &[wire.len()],
        c,
        false,
    );
    let statuses: Vec<_> = c.events.iter().filter_map(status_of).collect();
    assert_eq!(statuses, [200, 204, 304, 200]);
    let bodies: Vec<_> = c
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Body(_)))
        .collect();
    assert_eq!(bodies, [&Ev::Body(b"x".to_vec())]);
    assert_eq!(c.events.len(), 9);
}

#[test]
fn upgrade_connect_and_http2_stop_parsing() {
    let wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    let ev = parse_whole(Direction::Response, wire, true);
    assert_eq!(status_of(&ev[0]), Some(101));
    assert_eq!(
        ev[1..],
        [
            end(Outcome::Complete, 0, 56, false),
            Ev::Unsupported(Unsupported::Upgrade)
        ]
    );

    let ev = parse_whole(
        Direction::Request,
        b"CONNECT api.openai.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01",
        true,
    );
    assert_eq!(ev, [Ev::Unsupported(Unsupported::Connect)]);

    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00";
    for cut in 0..preface.len() {
        let c = parse_pieces(
            Direction::Request,
            small_limits(),
            preface,
            &[cut, preface.len() - cut],
            Collector::default(),
            true,
        );
        assert_eq!(c.events, [Ev::Unsupported(Unsupported::Http2)], "cut {cut}");
    }
}

#[test]
fn not_http_is_reported_once_and_bad_heads_resync_after_http() {
    let ev = parse_whole(
        Direction::Request,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        false,
    );
    assert_eq!(ev, [Ev::Error(DecodeError::NotHttp)]);
    let ev = parse_whole(Direction::Response, b"SSH-2.0-OpenSSH_9.6\r\n", false);
    assert_eq!(ev, [Ev::Error(DecodeError::NotHttp)]);
    // A bad start is judged before the head size, so the verdict is the same for any split
    // (found by the http1 fuzz target).
    let mut long = b"P\xaa".to_vec();
    long.resize(10_000, b'a');
    assert_eq!(
        parse_whole(Direction::Request, &long, false),
        [Ev::Error(DecodeError::NotHttp)]
    );

    // After one good message, garbage is a bad message and the parser finds the next one.
    let wire = b"GET /a HTTP/1.1\r\n\r\n\x00\x01garbage\r\nmore junk\r\nGET /b HTTP/1.1\r\n\r\n";
    let ev = parse_whole(Direction::Request, wire, false);
    let paths: Vec<_> = ev.iter().filter_map(path_of).collect();
    assert_eq!(paths, ["GET /a", "GET /b"]);
    assert!(ev.contains(&Ev::Error(DecodeError::BadHead(
        "not an HTTP/1 message start"
    ))));
}

#[test]
fn head_and_body_timestamps_come_from_the_bytes() {
    // Head spread over ts 0..=2, body pieces at ts 3 and 4.
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef";
    let c = parse_pieces(
        Direction::Response,
        small_limits(),
        wire,
        &[5, 20, 13, 2, 4],
        Collector::default(),
        false,
    );
    assert_eq!(c.head_ts, [(0, 2)]);
    assert_eq!(c.body_ts, [(2, 3), (4, 4)]);
    assert_eq!(
        c.events.last(),
        Some(&end(Outcome::Complete, 4, wire.len() as u64, false))
    );
}

fn encoded_response(coding: &str, body: &[u8], chunk: Option<usize>) -> Vec<u8> {
    let mut wire = format!("HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\n").into_bytes();
    match chunk {
        Some(n) => {
            wire.extend(b"Transfer-Encoding: chunked\r\n\r\n");
            wire.extend(chunked(body, n));
        }
        None => {
            wire.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
            wire.extend(body);
        }
    }
    wire
}

#[test]
fn decompresses_every_coding_at_random_splits() {
    let plain: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("data: {{\"i\":{i}}}\n\n").into_bytes())
        .collect();
    let cases: [(&str, Vec<u8>); 6] = [
        ("gzip", gzip(&plain)),
        ("x-gzip", gzip(&plain)),
        ("deflate", zlib(&plain)),
        ("deflate", raw_deflate(&plain)),
        ("br", brotli(&plain)),
        ("zstd", zstd(&plain)),
    ];
    let limits = llm_observer_decode::Limits {
        max_body_bytes: 1 << 20,
        ..small_limits()
    };
    let mut rng = Rng::new(7);
    for (coding, body) in &cases {
        for chunk in [None, Some(100), Some(7)] {
            let wire = encoded_response(coding, body, chunk);
            for _ in 0..5 {
                let pieces = rng.pieces(wire.len());
                let c = parse_pieces(
                    Direction::Response,
                    limits,
                    &wire,
                    &pieces,
                    Collector::default(),
                    false,
                );
                assert_eq!(c.events.len(), 3, "{coding} {chunk:?}");
                assert_eq!(c.events[1], Ev::Body(plain.clone()), "{coding} {chunk:?}");
                assert_eq!(
                    c.events[2],
                    end(
                        Outcome::Complete,
                        pieces.len() as u64 - 1,
                        wire.len() as u64,
                        false
                    )
                );
            }
        }
    }
}

#[test]
fn decompression_bomb_stops_at_the_cap() {
    let zeros = vec![0u8; 64 << 20];
    let limits = small_limits();
    for (coding, body) in [
        ("gzip", gzip(&zeros)),
        ("br", brotli(&zeros)),
        ("zstd", zstd(&zeros)),
    ] {
        let wire = encoded_response(coding, &body, None);
        let ev = parse_whole(Direction::Response, &wire, false);
        assert_eq!(
            ev[1],
            Ev::Body(vec![0u8; limits.max_body_bytes]),
            "{coding}"
        );
        assert_eq!(
            ev[2],
            end(Outcome::Complete, 0, wire.len() as u64, true),
            "{coding}"
        );
    }
}

#[test]
fn bad_compressed_data_and_unknown_codings_are_framed_but_not_decoded() {
    let wire = encoded_response("gzip", b"this is not gzip at all", None);
    let ev = parse_whole(Direction::Response, &wire, false);
    assert_eq!(
        ev[1..],
        [
            Ev::Error(DecodeError::Decompress),
            end(Outcome::Complete, 0, wire.len() as u64, true)
        ]
    );
    let mut twice = encoded_response("compress", b"abc", None);
    let first = twice.len() as u64;
    twice.extend(encoded_response("gzip", &gzip(b"ok"), None));
    let ev = parse_whole(Direction::Response, &twice, false);
    assert_eq!(ev[1], Ev::Error(DecodeError::Decompress));
    assert_eq!(ev[2], end(Outcome::Complete, 0, first, true));
    assert_eq!(ev[4], Ev::Body(b"ok".to_vec()));
}

#[test]
fn frame_only_bodies_are_not_delivered() {
    let wire = encoded_response("gzip", &gzip(b"secret prompt"), Some(3));
    let c = Collector {
        frame_only: true,
        ..Collector::default()
    };
    let c = parse_pieces(
        Direction::Response,
        small_limits(),
        &wire,
        &[wire.len()],
        c,
        false,
    );
    assert_eq!(c.events.len(), 2);
    assert_eq!(
        c.events[1],
        end(Outcome::Complete, 0, wire.len() as u64, false)
    );
}

/// Real captures: heads, de-chunked bodies and wire sizes, exact.
#[test]
fn real_captures_parse_exactly() {
    struct Case {
        name: &'static str,
        dir: Direction,
        first: &'static str,
        headers: usize,
        body_len: usize,
        body_tail: &'static [u8],
    }
    let cases = [
        Case {
            name: "lcp_chat_stream.request.http",
            dir: Direction::Request,
            first: "POST /v1/chat/completions",
            headers: 17,
            body_len: 175,
            body_tail: b"\"temperature\":0.8}",
        },
        Case {
            name: "lcp_chat_stream.response.http",
            dir: Direction::Response,
            first: "200",
            headers: 10,
            body_len: 3311,
            body_tail: b"\"length\"}]}\n\ndata: [DONE]\n\n",
        },
        Case {
            name: "lcp_chat_nonstream.request.http",
            dir: Direction::Request,
            first: "POST /v1/chat/completions",
            headers: 18,
            body_len: 103,
            body_tail: b"\"seed\":7}",
        },
        Case {
            name: "lcp_chat_nonstream.response.http",
            dir: Direction::Response,
            first: "200",
            headers: 7,
            body_len: 348,
            body_tail: b"\"total_tokens\":33}}",
        },
        Case {
            name: "lcp_error_400_too_long.request.http",
            dir: Direction::Request,
            first: "POST /v1/chat/completions",
            headers: 17,
            body_len: 10073,
            body_tail: b"\"max_tokens\":8}",
        },
        Case {
            name: "lcp_error_400_too_long.response.http",
            dir: Direction::Response,
            first: "400",
            headers: 6,
            body_len: 293,
            body_tail: b"context_length_exceeded\"}}",
        },
        Case {
            name: "ls_messages_stream.request.http",
            dir: Direction::Request,
            first: "POST /v1/messages",
            headers: 19,
            body_len: 108,
            body_tail: b"\"stream\":true}",
        },
        Case {
            name: "ls_messages_stream.response.http",
            dir: Direction::Response,
            first: "200",
            headers: 6,
            body_len: 2098,
            body_tail: b"data: {\"type\":\"message_stop\"}\n\n",
        },
    ];
    let mut rng = Rng::new(42);
    for case in cases {
        let wire = fixture(case.name);
        let whole = parse_whole(case.dir, &wire, false);
        assert_eq!(whole.len(), 3, "{}: {whole:?}", case.name);
        let (first, headers) = match &whole[0] {
            Ev::Head(Head::Request(r)) => (format!("{} {}", r.method, r.path), r.headers.0.len()),
            Ev::Head(Head::Response(r)) => (r.status.to_string(), r.headers.0.len()),
            e => panic!("{}: {e:?}", case.name),
        };
        assert_eq!(
            (first.as_str(), headers),
            (case.first, case.headers),
            "{}",
            case.name
        );
        let Ev::Body(body) = &whole[1] else {
            panic!("{}: no body", case.name)
        };
        assert_eq!(body.len(), case.body_len, "{}", case.name);
        assert!(body.ends_with(case.body_tail), "{}", case.name);
        assert_eq!(
            whole[2],
            end(Outcome::Complete, 0, wire.len() as u64, false),
            "{}",
            case.name
        );
        // The planted fake secret is kept as a header value for the API layer, nowhere else.
        if case.dir == Direction::Request {
            assert!(!String::from_utf8_lossy(body).contains("sk-local-test"));
        }
        // Split invariance: 1,000 seeded random split patterns give the same events.
        for _ in 0..1000 {
            let pieces = rng.pieces(wire.len());
            let c = parse_pieces(
                case.dir,
                small_limits(),
                &wire,
                &pieces,
                Collector::default(),
                false,
            );
            assert_eq!(
                without_ts(c.events),
                without_ts(whole.clone()),
                "{}",
                case.name
            );
        }
    }
}

/// Every single split point (and every byte-by-byte feed) of small messages gives the same events.
#[test]
fn small_messages_are_split_invariant_at_every_point() {
    let inputs: [(Direction, &[u8]); 6] = [
        // A bad chunk line aborts the message (wire size counted up to the bad byte), then resync.
        (
            Direction::Request,
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nmore\r\nGET /c HTTP/1.1\r\n\r\n",
        ),
        (Direction::Request, b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\n\r\n"),
        (Direction::Request, b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;e\r\nab\r\n1\r\nc\r\n0\r\nT: v\r\n\r\n"),
        (Direction::Response, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        (Direction::Response, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 200 OK\r\n\r\nclose-delimited"),
        (Direction::Response, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX: \xe2\x82\xac\r\n\r\nbody"),
    ];
    for (dir, wire) in inputs {
        let whole = without_ts(parse_whole(dir, wire, true));
        for cut in 0..=wire.len() {
            let c = parse_pieces(
                dir,
                small_limits(),
                wire,
                &[cut, wire.len() - cut],
                Collector::default(),
                true,
            );
            assert_eq!(without_ts(c.events), whole, "cut at {cut}");
        }
        for second in 1..wire.len() {
            let pieces = [1, second - 1, wire.len() - second];
            let c = parse_pieces(
                dir,
                small_limits(),
                wire,
                &pieces,
                Collector::default(),
                true,
            );
            assert_eq!(without_ts(c.events), whole);
        }
        let bytes = vec![1; wire.len()];
        let c = parse_pieces(
            dir,
            small_limits(),
            wire,
            &bytes,
            Collector::default(),
            true,
        );
        assert_eq!(without_ts(c.events), whole);
    }
}
