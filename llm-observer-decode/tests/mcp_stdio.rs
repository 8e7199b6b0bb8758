//! MCP over stdio, from a real session: the official `mcp` SDK (2.3.0) client launching its
//! MCPServer (formerly FastMCP) with one tool, `add`, as a subprocess, recorded by
//! `tests/clients/mcp_stdio_record.py` between the two (the bytes of the server's fd 0 and fd 1,
//! in their real chunking, with CLOCK_MONOTONIC capture times):
//! `initialize`, `notifications/initialized`, `tools/list`, 3 × `tools/call add`, and one
//! `tools/call` of an unknown tool (answered `isError: true`).

use llm_observer_decode::llm::mcp_stdio::{McpStdio, Recognition};
use llm_observer_decode::{DecodeError, ErrorKind, Exchange, Operation, Stream};

const SESSION: &str = include_str!("data/mcp_stdio/mcp-2.3.0-add.jsonl");

fn chunks() -> Vec<(Stream, u64, Vec<u8>)> {
    SESSION
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let stream = match v["dir"].as_str() {
                Some("request") => Stream::Request,
                _ => Stream::Response,
            };
            let hex = v["hex"].as_str().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (stream, v["ts"].as_u64().unwrap(), bytes)
        })
        .collect()
}

/// Decodes the session with chunk `split` (if any) cut in two at byte `at`.
fn decode(split: Option<(usize, usize)>) -> (Vec<Exchange>, Vec<DecodeError>) {
    let mut d = McpStdio::new(1 << 20);
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let all = chunks();
    let end = all.last().map_or(0, |c| c.1);
    for (i, (stream, ts, bytes)) in all.iter().enumerate() {
        match split {
            Some((c, at)) if c == i => {
                d.feed(*stream, &bytes[..at], *ts, &mut out, &mut errors);
                d.feed(*stream, &bytes[at..], *ts, &mut out, &mut errors);
            }
            _ => d.feed(*stream, bytes, *ts, &mut out, &mut errors),
        }
    }
    assert_eq!(d.recognition(), Recognition::JsonRpc);
    assert_eq!(d.pending(), 0);
    d.finish(end, &mut out);
    (out, errors)
}

#[test]
fn a_real_sdk_session_is_seven_exchanges() {
    let (out, errors) = decode(None);
    assert!(errors.is_empty(), "{errors:?}");
    let got: Vec<(&str, Option<&str>, Operation, Option<ErrorKind>)> = out
        .iter()
        .map(|e| {
            let m = e.mcp.as_ref().unwrap();
            (m.method.as_str(), m.name.as_deref(), e.operation, e.error)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("initialize", None, Operation::McpOther, None),
            ("notifications/initialized", None, Operation::McpOther, None),
            ("tools/list", None, Operation::McpOther, None),
            ("tools/call", Some("add"), Operation::ToolCall, None),
            ("tools/call", Some("add"), Operation::ToolCall, None),
            ("tools/call", Some("add"), Operation::ToolCall, None),
            (
                "tools/call",
                Some("no_such_tool"),
                Operation::ToolCall,
                Some(ErrorKind::ToolError)
            ),
        ]
    );
    // Times are the capture times of the lines: each answer after its request.
    let c = chunks();
    assert_eq!(out[0].timings.request_start_ns, c[0].1);
    assert_eq!(out[0].timings.response_end_ns, Some(c[1].1));
    for e in &out {
        assert_eq!(e.status, Some(200));
        assert!(e.timings.latency_ns().is_some());
    }
    assert_eq!(out[3].request_bytes, c[4].2.len() as u64);
    assert_eq!(out[3].response_bytes, c[5].2.len() as u64);
}

#[test]
fn any_split_of_any_chunk_gives_the_same_exchanges() {
    let whole = decode(None);
    for (i, (_, _, bytes)) in chunks().iter().enumerate() {
        for at in 1..bytes.len() {
            assert_eq!(decode(Some((i, at))), whole, "chunk {i} split at {at}");
        }
    }
}

#[test]
fn other_pipe_traffic_is_not_jsonrpc() {
    for first in [
        &b"hello world\n"[..],
        b"{\"level\":\"info\",\"msg\":\"started\"}\n",
        b"\x00\x01binary",
    ] {
        let mut d = McpStdio::new(1024);
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        d.feed(Stream::Response, first, 1, &mut out, &mut errors);
        d.feed(
            Stream::Request,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n",
            2,
            &mut out,
            &mut errors,
        );
        assert_eq!(d.recognition(), Recognition::NotJsonRpc);
        assert!(out.is_empty() && errors.is_empty());
    }
}

/// A pipe end's first message tells which side writes it, whatever its key order.
#[test]
fn the_first_message_names_the_writer() {
    use llm_observer_decode::llm::mcp_stdio::{SIDE_PEEK, Side, writer_side};
    // The recorded session: the first request chunk is the client's, the first response the
    // server's.
    let all = chunks();
    let first = |want: Stream| &all.iter().find(|c| c.0 == want).unwrap().2;
    assert_eq!(writer_side(first(Stream::Request)), Side::Client);
    assert_eq!(writer_side(first(Stream::Response)), Side::Server);
    // Other SDKs' key orders, Python's separators, an error answer.
    for (head, want) in [
        (
            &br#"{"method":"initialize","params":{},"jsonrpc":"2.0","id":0}"#[..],
            Side::Client,
        ),
        (
            br#"{"result":{"tools":[]},"jsonrpc":"2.0","id":0}"#,
            Side::Server,
        ),
        (
            br#"{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601}}"#,
            Side::Server,
        ),
        (
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Side::Client,
        ),
        // A member name inside a value does not count; `params` holding "result" neither.
        (br#"{"id":"method","result":{}}"#, Side::Server),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"result":1}}"#,
            Side::Client,
        ),
        // Too early to tell; then not JSON-RPC once the line ended without either.
        (br#"{"jsonrpc":"2.0","id":1,"#, Side::Undecided),
        (b"  ", Side::Undecided),
        (
            b"{\"level\":\"info\"}\n{\"method\":\"x\"}",
            Side::NotJsonRpc,
        ),
        (b"hello", Side::NotJsonRpc),
    ] {
        assert_eq!(writer_side(head), want, "{}", String::from_utf8_lossy(head));
    }
    // A first line longer than the peek with neither member in it.
    let long = format!("{{\"jsonrpc\":\"2.0\",\"x\":\"{}\"", "a".repeat(SIDE_PEEK));
    assert_eq!(writer_side(long.as_bytes()), Side::NotJsonRpc);
}

#[test]
fn bad_lines_errors_and_unanswered_requests_are_counted() {
    let mut d = McpStdio::new(128);
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let req = |id: u32| {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"t\"}}}}\n"
        )
    };
    d.feed(
        Stream::Request,
        req(1).as_bytes(),
        10,
        &mut out,
        &mut errors,
    );
    d.feed(
        Stream::Request,
        req(2).as_bytes(),
        11,
        &mut out,
        &mut errors,
    );
    // Not JSON, too long, an answer nobody asked for, a JSON-RPC error.
    d.feed(Stream::Response, b"oops\n", 12, &mut out, &mut errors);
    d.feed(
        Stream::Response,
        format!("{}\n", "x".repeat(200)).as_bytes(),
        13,
        &mut out,
        &mut errors,
    );
    d.feed(
        Stream::Response,
        b"{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n",
        14,
        &mut out,
        &mut errors,
    );
    d.feed(
        Stream::Response,
        b"{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32602}}\n",
        15,
        &mut out,
        &mut errors,
    );
    assert_eq!(
        errors,
        vec![
            DecodeError::BadJson,
            DecodeError::EventTooLarge { limit: 128 },
            DecodeError::UnmatchedResponse
        ]
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].error, Some(ErrorKind::JsonRpcError));
    assert_eq!(out[0].mcp.as_ref().unwrap().error_code, Some(-32602));
    // Request 1 never got its answer: the server's stdout ended.
    d.finish(20, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].error, Some(ErrorKind::ServerClosed));
    assert_eq!(out[1].timings.response_end_ns, Some(20));
}

#[test]
fn the_pending_table_is_bounded() {
    let mut d = McpStdio::new(1024);
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    for id in 0..=llm_observer_decode::llm::mcp_stdio::MAX_PENDING {
        let line = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n");
        d.feed(Stream::Request, line.as_bytes(), 1, &mut out, &mut errors);
    }
    assert_eq!(
        d.pending(),
        llm_observer_decode::llm::mcp_stdio::MAX_PENDING
    );
    assert_eq!(errors, vec![DecodeError::TooManyPending]);
}

#[test]
fn after_a_capture_gap_unanswered_requests_are_incomplete() {
    let mut d = McpStdio::new(1024);
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let line =
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}\n";
    d.feed(Stream::Request, line, 1, &mut out, &mut errors);
    d.feed(
        Stream::Response,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"res",
        2,
        &mut out,
        &mut errors,
    );
    d.gap(Stream::Response, 40, &mut errors);
    d.finish(3, &mut out);
    assert_eq!(errors, vec![DecodeError::Gap { missing: 40 }]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].incomplete,
        Some(llm_observer_decode::Incomplete::CaptureGap)
    );
    assert_eq!(out[0].error, None);
}
