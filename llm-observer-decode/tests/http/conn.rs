//! `ConnDecoder`: request/response pairing, recognition hand-off, gaps and connection end, driven
//! with a probe API decoder (see `harness::probe`) so no real API decoder is needed.

use crate::harness::*;
use llm_observer_decode::{DecodeError, EndedBy, Limits, Output, Stream, Unsupported};

const REQ: Stream = Stream::Request;
const RESP: Stream = Stream::Response;

fn data(stream: Stream, bytes: impl AsRef<[u8]>) -> Step {
    Step::Data(stream, bytes.as_ref().to_vec())
}

fn whole(n: usize) -> Vec<usize> {
    vec![n]
}

fn row(
    seq: u64,
    method: &str,
    path: &str,
    status: Option<u16>,
    req: &str,
    resp: &str,
    end: &str,
) -> DoneRow {
    (
        seq,
        method.into(),
        path.into(),
        status,
        req.into(),
        resp.into(),
        end.into(),
    )
}

/// One exchange of the keep-alive script: request bytes (head, then body sent after a 100
/// Continue when `expect`), response bytes, and the row the probe should report.
struct Ex {
    head: Vec<u8>,
    body: Vec<u8>,
    expect: bool,
    response: Vec<u8>,
    row: Option<DoneRow>,
}

fn exchange(i: usize) -> Ex {
    let path = if i % 5 == 3 {
        format!("/skip/{i}")
    } else {
        format!("/r/{i}")
    };
    let json = format!("{{\"i\":{i}}}");
    let (method, head_extra, body, req_text, expect) = match i % 6 {
        0 => ("GET", String::new(), Vec::new(), String::new(), false),
        1 => (
            "POST",
            format!("Content-Length: {}\r\n", json.len()),
            json.clone().into_bytes(),
            json.clone(),
            false,
        ),
        2 => (
            "POST",
            "Transfer-Encoding: chunked\r\n".into(),
            chunked(json.as_bytes(), 3),
            json.clone(),
            false,
        ),
        3 => ("HEAD", String::new(), Vec::new(), String::new(), false),
        4 => {
            let gz = gzip(json.as_bytes());
            let extra = format!(
                "Content-Encoding: gzip\r\nExpect: 100-continue\r\nContent-Length: {}\r\n",
                gz.len()
            );
            ("PUT", extra, gz, json.clone(), true)
        }
        _ => ("DELETE", String::new(), Vec::new(), String::new(), false),
    };
    let head =
        format!("{method} {path}?q={i} HTTP/1.1\r\nHost: h\r\n{head_extra}\r\n").into_bytes();
    let text = format!("response {i}");
    let (status, response, resp_text) = if method == "HEAD" {
        (
            200,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len()).into_bytes(),
            String::new(),
        )
    } else {
        match i % 4 {
            0 => (
                200,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
                .into_bytes(),
                text,
            ),
            1 => {
                let mut r = b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                r.extend(chunked(&gzip(text.as_bytes()), 5));
                (500, r, text)
            }
            2 => (
                204,
                b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                String::new(),
            ),
            _ => (
                304,
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n".to_vec(),
                String::new(),
            ),
        }
    };
    let row = (!path.starts_with("/skip")).then(|| {
        row(
            i as u64,
            method,
            &path,
            Some(status),
            &req_text,
            &resp_text,
            "Complete",
        )
    });
    Ex {
        head,
        body,
        expect,
        response,
        row,
    }
}

/// 100 mixed exchanges on one keep-alive connection, in pipelined groups of 1–5.
fn keep_alive_script() -> (Vec<Step>, Vec<DoneRow>) {
    let exs: Vec<Ex> = (0..100).map(exchange).collect();
    let mut steps = Vec::new();
    let mut rows = Vec::new();
    let groups = [1, 1, 3, 1, 5, 2, 1, 4];
    let (mut i, mut g) = (0, 0);
    while i < exs.len() {
        let group = &exs[i..(i + groups[g % groups.len()]).min(exs.len())];
        for ex in group {
            steps.push(data(REQ, &ex.head));
            if ex.expect {
                steps.push(data(RESP, "HTTP/1.1 100 Continue\r\n\r\n"));
            }
            if !ex.body.is_empty() {
                steps.push(data(REQ, &ex.body));
            }
        }
        for ex in group {
            steps.push(data(RESP, &ex.response));
            rows.extend(ex.row.clone());
        }
        i += group.len();
        g += 1;
    }
    (steps, rows)
}

#[test]
fn keep_alive_100_mixed_requests_pair_in_order() {
    let (steps, rows) = keep_alive_script();
    assert_eq!(rows.len(), 80);
    let out = run_conn(Limits::default(), &steps, whole, false);
    assert_eq!(errors(&out), []);
    assert_eq!(done_rows(&out), rows);
    let started: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Started { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(started, rows.iter().map(|r| r.0).collect::<Vec<_>>());
}

#[test]
fn keep_alive_script_is_split_invariant() {
    let (steps, rows) = keep_alive_script();
    let reference = run_conn(Limits::default(), &steps, whole, false);
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let out = run_conn(Limits::default(), &steps, |n| rng.pieces(n), false);
        assert_eq!(done_rows(&out), rows);
        assert_eq!(errors(&out), errors(&reference));
    }
}

#[test]
fn fixture_exchange_reports_timings_and_bytes_for_any_split() {
    let req = fixture("lcp_chat_stream.request.http");
    let resp = fixture("lcp_chat_stream.response.http");
    let steps = [data(REQ, &req), data(RESP, &resp)];
    let reference = run_conn(Limits::default(), &steps, whole, false);
    let Some(Output::Done { seq: 0, exchange }) = reference.last() else {
        panic!("{reference:?}")
    };
    assert_eq!(
        (exchange.method.as_str(), exchange.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        (
            exchange.status,
            exchange.request_bytes,
            exchange.response_bytes
        ),
        (Some(200), 702, 3713)
    );
    assert_eq!(exchange.timings.request_start_ns, 1000);
    assert_eq!(exchange.timings.request_end_ns, Some(1000));
    assert_eq!(exchange.timings.response_start_ns, Some(2000));
    assert_eq!(exchange.timings.response_end_ns, Some(2000));
    assert_eq!(
        exchange.response_model.as_ref().map(String::len),
        Some(3311)
    );
    assert_eq!(
        reference[1],
        Output::FirstToken {
            seq: 0,
            ts_ns: 2000
        }
    );
    let mut rng = Rng::new(3);
    for _ in 0..1000 {
        let out = run_conn(Limits::default(), &steps, |n| rng.pieces(n), false);
        assert_eq!(done_rows(&out), done_rows(&reference));
    }
}

#[test]
fn every_split_point_of_a_small_exchange_gives_the_same_record() {
    let req = b"POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let want = [row(0, "POST", "/v1/x", Some(200), "{}", "abc", "Complete")];
    for cut in 0..=req.len() {
        for rcut in (0..=resp.len()).step_by(3) {
            let steps = [
                data(REQ, &req[..cut]),
                data(REQ, &req[cut..]),
                data(RESP, &resp[..rcut]),
                data(RESP, &resp[rcut..]),
            ];
            let out = run_conn(Limits::default(), &steps, whole, false);
            assert_eq!(done_rows(&out), want, "cuts {cut} {rcut}");
        }
    }
}

#[test]
fn request_body_over_the_cap_is_truncated_but_framed() {
    let limits = Limits {
        max_body_bytes: 8,
        ..Limits::default()
    };
    let steps = [
        data(
            REQ,
            "POST /a HTTP/1.1\r\nContent-Length: 20\r\n\r\n0123456789abcdefghij",
        ),
        data(REQ, "GET /b HTTP/1.1\r\n\r\n"),
        data(
            RESP,
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2",
        ),
    ];
    let out = run_conn(limits, &steps, whole, false);
    assert_eq!(
        done_rows(&out),
        [
            row(0, "POST", "/a", Some(200), "01234567", "1", "Complete"),
            row(1, "GET", "/b", Some(200), "", "2", "Complete")
        ]
    );
    let truncated: Vec<bool> = out
        .iter()
        .filter_map(|o| match o {
            Output::Done { exchange, .. } => Some(exchange.body_truncated),
            _ => None,
        })
        .collect();
    assert_eq!(truncated, [true, false]);
}

#[test]
fn end_completes_close_delimited_and_reports_the_rest() {
    let steps = [
        data(
            REQ,
            "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        ),
        data(
            RESP,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ncut",
        ),
    ];
    let out = run_conn(Limits::default(), &steps, whole, true);
    assert_eq!(
        done_rows(&out),
        [
            row(0, "GET", "/a", Some(200), "", "first", "Complete"),
            row(1, "GET", "/b", Some(200), "", "cut", "Cut(Client)"),
            row(2, "GET", "/c", None, "", "", "NoResponse(Client)"),
        ]
    );
    let close = [
        data(REQ, "GET /a HTTP/1.1\r\n\r\n"),
        data(RESP, "HTTP/1.0 200 OK\r\n\r\nuntil close"),
    ];
    let out = run_conn(Limits::default(), &close, whole, true);
    assert_eq!(
        done_rows(&out),
        [row(
            0,
            "GET",
            "/a",
            Some(200),
            "",
            "until close",
            "Complete"
        )]
    );
}

#[test]
fn gap_inside_a_known_length_body_keeps_pairing() {
    let steps = [
        data(REQ, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
        data(RESP, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012"),
        Step::Gap(RESP, 4),
        data(RESP, "789HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ];
    let out = run_conn(Limits::default(), &steps, whole, false);
    assert_eq!(errors(&out), [DecodeError::Gap { missing: 4 }]);
    assert_eq!(
        done_rows(&out),
        [
            row(
                0,
                "GET",
                "/a",
                Some(200),
                "",
                "012",
                "Cut(Capture(CaptureGap))"
            ),
            row(1, "GET", "/b", Some(200), "", "ok", "Complete")
        ]
    );
}

#[test]
fn gap_that_breaks_framing_resyncs_by_time() {
    // Request /a's response is lost in the gap; the next response head answers /b.
    let steps = [
        data(REQ, "GET /a HTTP/1.1\r\n\r\n"),
        data(
            RESP,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
        ),
        Step::Gap(RESP, 100),
        data(RESP, "tail of something\r\n"),
        data(REQ, "GET /b HTTP/1.1\r\n\r\n"),
        data(
            RESP,
            "more\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nb",
        ),
    ];
    let out = run_conn(Limits::default(), &steps, whole, false);
    assert_eq!(errors(&out), [DecodeError::Gap { missing: 100 }]);
    assert_eq!(
        done_rows(&out),
        [
            row(
                0,
                "GET",
                "/a",
                Some(200),
                "",
                "he",
                "Cut(Capture(CaptureGap))"
            ),
            row(1, "GET", "/b", Some(201), "", "b", "Complete")
        ]
    );
}

#[test]
fn request_gap_loses_that_request_and_resyncs() {
    let steps = [
        data(REQ, "POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"),
        Step::Gap(REQ, 500),
        data(REQ, "xyz\r\nGET /b HTTP/1.1\r\n\r\n"),
        data(RESP, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
    ];
    let out = run_conn(Limits::default(), &steps, whole, false);
    assert_eq!(errors(&out), [DecodeError::Gap { missing: 500 }]);
    assert_eq!(
        done_rows(&out),
        [row(1, "GET", "/b", Some(200), "", "b", "Complete")]
    );
}

#[test]
fn unmatched_responses_and_early_responses_are_dropped() {
    let steps = [
        data(RESP, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
        data(REQ, "GET /a HTTP/1.1\r\n\r\n"),
    ];
    let out = run_conn(Limits::default(), &steps, whole, true);
    assert_eq!(errors(&out), [DecodeError::UnmatchedResponse]);
    assert_eq!(
        done_rows(&out),
        [row(0, "GET", "/a", None, "", "", "NoResponse(Client)")]
    );
}

#[test]
fn upgrade_and_connect_stop_the_connection() {
    let steps = [
        data(
            REQ,
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
        data(
            RESP,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
        ),
        data(REQ, b"\x81\x82garbage"),
    ];
    let out = run_conn(Limits::default(), &steps, whole, true);
    assert_eq!(
        done_rows(&out),
        [row(0, "GET", "/ws", Some(101), "", "", "Complete")]
    );
    assert_eq!(out.last(), Some(&Output::Unsupported(Unsupported::Upgrade)));

    let steps = [
        data(REQ, "GET /a HTTP/1.1\r\n\r\nCONNECT h:443 HTTP/1.1\r\n\r\n"),
        data(RESP, "HTTP/1.1 200 OK\r\n\r\n"),
    ];
    let out = run_conn(Limits::default(), &steps, whole, true);
    assert_eq!(out[1], Output::Unsupported(Unsupported::Connect));
    assert_eq!(
        done_rows(&out),
        [row(
            0,
            "GET",
            "/a",
            None,
            "",
            "",
            "NoResponse(Capture(Undecodable))"
        )]
    );
    assert_eq!(out.len(), 3);
}

#[test]
fn too_many_pending_requests_stop_the_connection() {
    let limits = Limits {
        max_pending_requests: 3,
        ..Limits::default()
    };
    let steps = [data(REQ, "GET /a HTTP/1.1\r\n\r\n".repeat(5))];
    let out = run_conn(limits, &steps, whole, false);
    assert_eq!(errors(&out), [DecodeError::TooManyPending]);
    let ends: Vec<_> = done_rows(&out).into_iter().map(|r| (r.0, r.6)).collect();
    let no = "NoResponse(Capture(DecoderLimit))".to_string();
    assert_eq!(ends, [(0, no.clone()), (1, no.clone()), (2, no)]);
}

#[test]
fn first_token_is_reported_once_with_the_bytes_time() {
    let steps = [
        data(REQ, "POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        data(
            RESP,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        data(RESP, "5\r\nfirst\r\n"),
        data(RESP, "6\r\nsecond\r\n0\r\n\r\n"),
    ];
    let out = run_conn(Limits::default(), &steps, whole, false);
    let kinds: Vec<String> = out
        .iter()
        .map(|o| match o {
            Output::Started { seq, ts_ns, .. } => format!("started {seq} {ts_ns}"),
            Output::FirstToken { seq, ts_ns } => format!("first {seq} {ts_ns}"),
            Output::Done { seq, exchange } => {
                format!(
                    "done {seq} {:?} {:?}",
                    exchange.timings.response_start_ns, exchange.timings.response_end_ns
                )
            }
            o => format!("{o:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started 0 1000",
            "first 0 3000",
            "done 0 Some(2000) Some(4000)"
        ]
    );
}

#[test]
fn end_before_any_response_and_decoder_ignores_input_after_end() {
    let mut d = llm_observer_decode::ConnDecoder::with_recognizer(Limits::default(), probe);
    let mut out = Vec::new();
    d.feed(REQ, b"GET /a HTTP/1.1\r\n\r\n", 5, &mut out);
    assert_eq!(d.pending_requests(), 1);
    d.end(EndedBy::Server, 9, &mut out);
    d.feed(RESP, b"HTTP/1.1 200 OK\r\n\r\n", 10, &mut out);
    d.end(EndedBy::Server, 11, &mut out);
    assert_eq!(
        done_rows(&out),
        [row(0, "GET", "/a", None, "", "", "NoResponse(Server)")]
    );
    assert_eq!(
        (d.is_done(), d.buffered_bytes(), d.pending_requests()),
        (true, 0, 0)
    );
}
