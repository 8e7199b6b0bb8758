//! Hostile and broken input: truncation, garbage, oversized heads and chunk lines, invalid UTF-8.
//! Every case asserts the exact error reason, no panic, and `buffered_bytes()` within the
//! documented cap after every call.

use crate::harness::*;
use llm_observer_decode::{ConnDecoder, DecodeError, EndedBy, Limits, Output, Stream};

/// Feeds `(stream, bytes)` in pieces of `piece` bytes, asserting the cap after every call.
fn drive(limits: Limits, input: &[(Stream, &[u8])], piece: usize, end: bool) -> Vec<Output> {
    let mut d = ConnDecoder::with_recognizer(limits, probe);
    let mut out = Vec::new();
    let mut ts = 1;
    for (stream, bytes) in input {
        for p in bytes.chunks(piece.max(1)) {
            d.feed(*stream, p, ts, &mut out);
            ts += 1;
            assert!(
                d.buffered_bytes() <= limits.max_buffered_bytes(),
                "buffered {} > {}",
                d.buffered_bytes(),
                limits.max_buffered_bytes()
            );
        }
    }
    if end {
        d.end(EndedBy::Client, ts, &mut out);
        assert_eq!(d.buffered_bytes(), 0);
    }
    out
}

#[test]
fn truncated_streams_end_with_the_right_body_end() {
    let req = fixture("ls_messages_stream.request.http");
    let resp = fixture("ls_messages_stream.response.http");
    for cut in (0..=req.len()).step_by(7) {
        let out = drive(
            Limits::default(),
            &[(Stream::Request, &req[..cut])],
            64,
            true,
        );
        let want = usize::from(cut == req.len());
        assert_eq!(done_rows(&out).len(), want, "request cut {cut}");
    }
    for cut in 0..=resp.len() {
        let input = [
            (Stream::Request, &req[..]),
            (Stream::Response, &resp[..cut]),
        ];
        let out = drive(Limits::default(), &input, 100, true);
        let rows = done_rows(&out);
        let want = if cut < 185 {
            "NoResponse(Client)"
        } else if cut < resp.len() {
            "Cut(Client)"
        } else {
            "Complete"
        };
        assert_eq!(rows.len(), 1, "cut {cut}");
        assert_eq!(rows[0].6, want, "cut {cut}");
        assert_eq!(errors(&out), [], "cut {cut}");
    }
}

#[test]
fn garbage_is_not_http_once_then_ignored() {
    let mut rng = Rng::new(99);
    for _ in 0..200 {
        let len = 1 + rng.below(5000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let stream = if rng.below(2) == 0 {
            Stream::Request
        } else {
            Stream::Response
        };
        let out = drive(
            small_limits(),
            &[(stream, &bytes), (stream, b"GET / HTTP/1.1\r\n\r\n")],
            1 + rng.below(300),
            true,
        );
        // Random bytes either fail fast (NotHttp) or, if they start like a request line, stay
        // pending until a head cap or the end; never anything else.
        for o in &out {
            assert!(
                matches!(
                    o,
                    Output::Error(DecodeError::NotHttp | DecodeError::HeadTooLarge { .. })
                ),
                "{o:?}"
            );
        }
        assert!(
            out.iter()
                .filter(|o| **o == Output::Error(DecodeError::NotHttp))
                .count()
                <= 1
        );
    }
    let out = drive(
        small_limits(),
        &[(
            Stream::Request,
            b"\x00\x01\x02\x03 binary\r\n\r\n".repeat(50).as_slice(),
        )],
        3,
        true,
    );
    assert_eq!(out, [Output::Error(DecodeError::NotHttp)]);
    let out = drive(
        small_limits(),
        &[(Stream::Response, b"220 smtp.example.com ESMTP\r\n")],
        5,
        true,
    );
    assert_eq!(out, [Output::Error(DecodeError::NotHttp)]);
}

#[test]
fn garbage_after_http_resyncs_to_the_next_message() {
    let input: [(Stream, &[u8]); 4] = [
        (Stream::Request, b"GET /a HTTP/1.1\r\n\r\n"),
        (
            Stream::Response,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
        ),
        (
            Stream::Request,
            b"\x00\xff junk \x01\r\nmore\r\nGET /b HTTP/1.1\r\n\r\n",
        ),
        (
            Stream::Response,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
        ),
    ];
    for piece in [1, 2, 5, 1000] {
        let out = drive(Limits::default(), &input, piece, false);
        assert_eq!(
            errors(&out),
            [DecodeError::BadHead("not an HTTP/1 message start")],
            "piece {piece}"
        );
        let paths: Vec<_> = done_rows(&out)
            .into_iter()
            .map(|r| (r.0, r.2, r.5))
            .collect();
        assert_eq!(
            paths,
            [(0, "/a".into(), "a".into()), (1, "/b".into(), "b".into())],
            "piece {piece}"
        );
    }
}

#[test]
fn ten_mib_head_is_refused_without_buffering_and_pairing_survives() {
    let limits = Limits::default();
    let mut huge = b"POST /big HTTP/1.1\r\nX-Fill: ".to_vec();
    huge.resize(10 << 20, b'a');
    huge.extend(b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    let input: [(Stream, &[u8]); 2] = [
        (Stream::Request, &huge),
        (Stream::Response, b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"),
    ];
    let out = drive(limits, &input, 64 * 1024, false);
    assert_eq!(
        errors(&out),
        [DecodeError::HeadTooLarge {
            limit: limits.max_head_bytes
        }]
    );
    // The refused request keeps its place (seq 0, not recognised); /next gets its own answer.
    assert_eq!(
        done_rows(&out),
        [(
            1,
            "GET".into(),
            "/next".into(),
            Some(200),
            String::new(),
            "next".into(),
            "Complete".into()
        )]
    );

    // A huge response head on a fresh connection is also head_too_large, not not_http.
    let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
    resp.resize(1 << 20, b'x');
    let out = drive(
        small_limits(),
        &[
            (Stream::Request, b"GET / HTTP/1.1\r\n\r\n"),
            (Stream::Response, &resp),
        ],
        4000,
        true,
    );
    assert_eq!(errors(&out), [DecodeError::HeadTooLarge { limit: 4096 }]);
}

#[test]
fn megabyte_chunk_size_line_is_bad_chunk() {
    for filler in [&b"1"[..], b"0", b";"] {
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec();
        resp.extend(std::iter::repeat_n(filler[0], 1 << 20));
        let input: [(Stream, &[u8]); 2] = [
            (Stream::Request, b"POST /c HTTP/1.1\r\n\r\n"),
            (Stream::Response, &resp),
        ];
        let out = drive(Limits::default(), &input, 8192, true);
        assert_eq!(errors(&out), [DecodeError::BadChunk], "filler {filler:?}");
        assert_eq!(done_rows(&out)[0].6, "Cut(Capture(Undecodable))");
    }
    // In a request body too: the request is lost, nothing else breaks.
    let mut req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'f', 1 << 20));
    let out = drive(Limits::default(), &[(Stream::Request, &req)], 8192, true);
    assert_eq!(errors(&out), [DecodeError::BadChunk]);
    assert_eq!(done_rows(&out), []);
}

#[test]
fn invalid_utf8_in_heads() {
    // Header values are opaque bytes: accepted and passed on as-is.
    let input: [(Stream, &[u8]); 2] = [
        (
            Stream::Request,
            b"POST /u HTTP/1.1\r\nX-Name: \xff\xfe\xc3\x28\r\nContent-Length: 1\r\n\r\n\xff",
        ),
        (
            Stream::Response,
            b"HTTP/1.1 200 \xe9t\xe9\r\nX: \x80\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    let out = drive(Limits::default(), &input, 3, false);
    assert_eq!(errors(&out), []);
    assert_eq!(
        done_rows(&out),
        [(
            0,
            "POST".into(),
            "/u".into(),
            Some(200),
            "\u{fffd}".into(),
            String::new(),
            "Complete".into()
        )]
    );

    // Invalid UTF-8 in the request target or a header name is a malformed head.
    let bad_target: [(Stream, &[u8]); 2] = [
        (Stream::Request, b"GET /ok HTTP/1.1\r\n\r\n"),
        (
            Stream::Request,
            b"GET /\xff\xfe HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
        ),
    ];
    let out = drive(Limits::default(), &bad_target, 4, true);
    assert_eq!(errors(&out), [DecodeError::BadHead("invalid token")]);
    let rows: Vec<_> = done_rows(&out).into_iter().map(|r| r.2).collect();
    assert_eq!(rows, ["/ok", "/after"]);

    let out = drive(
        Limits::default(),
        &[(Stream::Request, b"GET / HTTP/1.1\r\nN\xffme: v\r\n\r\n")],
        4,
        true,
    );
    assert_eq!(out, [Output::Error(DecodeError::NotHttp)]);
}

#[test]
fn random_splits_gaps_and_garbage_never_exceed_the_caps() {
    let req = fixture("lcp_chat_stream.request.http");
    let resp = fixture("lcp_chat_stream.response.http");
    let mut rng = Rng::new(5);
    let limits = small_limits();
    for _ in 0..300 {
        let mut d = ConnDecoder::with_recognizer(limits, probe);
        let mut out = Vec::new();
        let mut ts = 0;
        for _ in 0..3 {
            for (stream, bytes) in [(Stream::Request, &req), (Stream::Response, &resp)] {
                let mut at = 0;
                for n in rng.pieces(bytes.len()) {
                    ts += 1;
                    match rng.below(40) {
                        0 => d.gap(stream, n as u64, ts, &mut out),
                        1 => d.feed(stream, &[0xff; 3], ts, &mut out),
                        _ => d.feed(stream, &bytes[at..at + n], ts, &mut out),
                    }
                    at += n;
                    assert!(d.buffered_bytes() <= limits.max_buffered_bytes());
                }
            }
        }
        d.end(EndedBy::Server, ts + 1, &mut out);
        // Every Started has exactly one Done.
        let started = out
            .iter()
            .filter(|o| matches!(o, Output::Started { .. }))
            .count();
        assert_eq!(started, done_rows(&out).len());
    }
}
