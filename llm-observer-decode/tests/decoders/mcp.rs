//! MCP JSON-RPC over Streamable HTTP (and the POST half of the old HTTP+SSE transport).

use super::*;

fn mcp_case<'a>(body: &'a str) -> Case<'a> {
    let mut c = Case::new("/mcp", body);
    c.req_headers
        .push(("accept", "application/json, text/event-stream"));
    c
}

fn want(op: Operation, method: &str, name: Option<&str>, end: u64) -> Exchange {
    Exchange {
        mcp: Some(McpInfo {
            method: method.into(),
            name: name.map(Into::into),
            error_code: None,
        }),
        timings: timings(None, None, 0, end),
        ..base(Api::Mcp, op, "/mcp", None, false)
    }
}

#[test]
fn tools_call_json_result() {
    let case = mcp_case(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"New York"}}}"#,
    )
    .ct("application/json")
    .pieces(&[r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"72F"}],"isError":false}}"#]);
    let out = drive(&case);
    assert_eq!(
        out.exchange,
        want(
            Operation::ToolCall,
            "tools/call",
            Some("get_weather"),
            case.end_ns()
        )
    );
    assert_eq!(out.markers, vec![None]);
}

#[test]
fn tools_call_sse_with_progress_then_tool_error() {
    let case = mcp_case(
        r#"{"jsonrpc":"2.0","id":"a7","method":"tools/call","params":{"name":"run_query","arguments":{}}}"#,
    )
    .ct("text/event-stream")
    .pieces(&[
        "id: ev-0\ndata:\n\n: keep-alive\n\n",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"a7\",\"progress\":50}}\n\n",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a7\",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"syntax error\"}],\"isError\":true}}\n\n",
    ]);
    let out = drive(&case);
    let w = Exchange {
        error: Some(ErrorKind::ToolError),
        ..want(
            Operation::ToolCall,
            "tools/call",
            Some("run_query"),
            case.end_ns(),
        )
    };
    assert_eq!(out.exchange, w);
}

#[test]
fn jsonrpc_error_keeps_its_code() {
    let case = mcp_case(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope"}}"#,
    )
    .ct("application/json")
    .pieces(&[
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"Unknown tool: nope"}}"#,
    ]);
    let out = drive(&case);
    let mut w = want(
        Operation::ToolCall,
        "tools/call",
        Some("nope"),
        case.end_ns(),
    );
    w.error = Some(ErrorKind::JsonRpcError);
    if let Some(m) = w.mcp.as_mut() {
        m.error_code = Some(-32602);
    }
    assert_eq!(out.exchange, w);
}

#[test]
fn unknown_method_404_with_jsonrpc_body() {
    let mut case = mcp_case(r#"{"jsonrpc":"2.0","id":9,"method":"foo/bar","params":{}}"#)
        .status(404)
        .ct("application/json")
        .pieces(&[
            r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32601,"message":"Method not found"}}"#,
        ]);
    case.req_headers.push(("mcp-method", "foo/bar"));
    let out = drive(&case);
    let mut w = want(Operation::McpOther, "foo/bar", None, case.end_ns());
    w.status = Some(404);
    w.error = Some(ErrorKind::JsonRpcError);
    if let Some(m) = w.mcp.as_mut() {
        m.error_code = Some(-32601);
    }
    assert_eq!(out.exchange, w);
}

#[test]
fn notification_gets_202() {
    let case = mcp_case(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).status(202);
    let out = drive(&case);
    let mut w = want(
        Operation::McpOther,
        "notifications/initialized",
        None,
        case.end_ns(),
    );
    w.status = Some(202);
    assert_eq!(out.exchange, w);
}

#[test]
fn old_transport_post_answered_202() {
    // HTTP+SSE (2024-11-05): the result goes to the GET stream on another connection.
    let mut case = Case::new(
        "/messages",
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}"#,
    )
    .status(202)
    .ct("text/plain")
    .pieces(&["Accepted"]);
    case.req_headers.clear();
    let out = drive(&case);
    let w = Exchange {
        path: "/messages".into(),
        status: Some(202),
        ..want(Operation::McpOther, "tools/list", None, case.end_ns())
    };
    assert_eq!(out.exchange, w);
}

#[test]
fn initialize_sse_response_matched_by_id() {
    let case = mcp_case(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
    )
    .ct("text/event-stream")
    .pieces(&[
        // a server request that reuses id 1 in its own id space is not our answer
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"roots/list\"}\n\n",
        "retry: 3000\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"serverInfo\":{\"name\":\"s\",\"version\":\"1\"}}}\n\n",
    ]);
    let out = drive(&case);
    assert_eq!(
        out.exchange,
        want(Operation::McpOther, "initialize", None, case.end_ns())
    );
}

#[test]
fn sse_cut_before_the_answer() {
    let case = mcp_case(
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"slow"}}"#,
    )
    .ct("text/event-stream")
    .pieces(&[
        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
    ])
    .end(BodyEnd::Cut(EndedBy::Client));
    let out = drive(&case);
    let w = Exchange {
        error: Some(ErrorKind::ClientCancelled),
        ..want(
            Operation::ToolCall,
            "tools/call",
            Some("slow"),
            case.end_ns(),
        )
    };
    assert_eq!(out.exchange, w);
}
