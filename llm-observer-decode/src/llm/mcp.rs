//! MCP (Model Context Protocol) JSON-RPC over HTTP.
//!
//! Streamable HTTP (2025-03-26 and later): every client message is a POST whose body is one
//! JSON-RPC message. The answer is `202 Accepted` without a body (notifications, client responses),
//! or the JSON-RPC response as `application/json`, or a `text/event-stream` whose events carry
//! server notifications / requests and finally the response with the request's `id`.
//! - `method` (or the `Mcp-Method` header of 2026-07-28) and the target name (`params.name` for
//!   `tools/call` / `prompts/get`, `params.uri` for `resources/read`, or the `Mcp-Name` header) go
//!   into [`McpInfo`]; `tools/call` is [`Operation::ToolCall`], anything else `McpOther`;
//! - a JSON-RPC `error` is `JsonRpcError` (its code kept), `result.isError: true` is `ToolError`;
//! - an HTTP error status whose body is a JSON-RPC error (unknown method: 404 + -32601) is a
//!   `JsonRpcError` too.
//!
//! The deprecated HTTP+SSE transport (2024-11-05) is covered only as far as one connection shows it:
//! the POSTs to the message endpoint are recognised (method, tool name), and answered `202`; their
//! results travel on the long-lived `GET` event stream, which is another TCP connection. Matching
//! those results (and so `isError` / JSON-RPC errors) to the POSTs by `id` across connections is left
//! out, as is the `GET` stream itself (its `endpoint` event and server-initiated messages), and
//! JSON-RPC batch arrays (2025-03-26 only). MCP has no tokens: no TTFT marker is set.

use serde::Deserialize;

use crate::exchange::{Api, ErrorKind, McpInfo, Operation};
use crate::protocol::sse::SseEvent;
use crate::types::{DecodeError, Limits};

use super::common::{Core, Engine, Handler, MAX_MCP, Native, cap};
use super::detect::Shape;
use super::errors::{ErrorFacts, classify_http};
use super::json::{RpcError, RpcId, RpcResult, Str, trim_start};
use super::{ApiDecoder, Request};

/// A JSON-RPC message from the server.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message<'a> {
    id: Option<RpcId>,
    #[serde(borrow)]
    method: Option<Str<'a>>,
    result: Option<RpcResult>,
    error: Option<RpcError>,
}

#[derive(Debug)]
pub(crate) struct Mcp {
    /// The request's id; `None` for a notification (nothing to wait for).
    id: Option<RpcId>,
}

/// The `Mcp-Name` header, unless it uses the Base64 sentinel form (then the body names it).
fn header_name<'a>(req: &Request<'a>) -> Option<&'a str> {
    req.headers
        .get_str("mcp-name")
        .filter(|v| !v.is_empty() && !v.starts_with("=?"))
}

/// A decoder for a JSON-RPC request, or `None` when the body is not one (a response or batch).
pub(crate) fn decoder(
    req: &Request<'_>,
    shape: Option<&Shape<'_>>,
    limits: &Limits,
) -> Option<Box<dyn ApiDecoder>> {
    let header_method = req.headers.get_str("mcp-method").filter(|m| !m.is_empty());
    let (method, id, name) = match shape {
        Some(s) if s.jsonrpc.is_some() && s.method.is_some() => {
            let name = s
                .params
                .as_ref()
                .and_then(|p| p.name.as_deref().or(p.uri.as_deref()));
            (s.method.as_deref(), s.id.clone(), name.or(header_name(req)))
        }
        // A cut or unparseable body: only the 2026-07-28 headers can say what it is.
        _ if trim_start(req.body).first() != Some(&b'[') => {
            let method = header_method?;
            let id = if req.body_truncated {
                Some(RpcId::Other)
            } else {
                None
            };
            (Some(method), id, header_name(req))
        }
        _ => return None,
    };
    let method = method.or(header_method)?;
    let operation = if method == "tools/call" {
        Operation::ToolCall
    } else {
        Operation::McpOther
    };
    let mut core = Core::new(req, Api::Mcp, operation, None, false);
    core.mcp = Some(McpInfo {
        method: cap(method, MAX_MCP),
        name: name.map(|n| cap(n, MAX_MCP)),
        error_code: None,
    });
    // A notification gets no response message.
    let id = id.filter(|i| *i != RpcId::Missing);
    if id.is_none() {
        core.terminal = true;
    }
    Some(Engine::boxed(core, Mcp { id }, limits))
}

impl Mcp {
    /// Interprets one server message; true when it was the response to our request.
    fn message(&mut self, core: &mut Core, data: &[u8], errors: &mut Vec<DecodeError>) -> bool {
        let Ok(m) = serde_json::from_slice::<Message<'_>>(data) else {
            errors.push(DecodeError::BadJson);
            return false;
        };
        // Server requests and notifications (progress, sampling, elicitation) carry a method.
        if m.method.is_some() || (m.result.is_none() && m.error.is_none()) {
            return false;
        }
        // An unmatched id is another exchange's answer; `RpcId::Other` (cut request) matches any.
        if let (Some(want), Some(got)) = (&self.id, &m.id)
            && want != got
            && *want != RpcId::Other
        {
            return false;
        }
        if let Some(e) = &m.error {
            core.fail(ErrorKind::JsonRpcError);
            if let Some(info) = core.mcp.as_mut() {
                info.error_code = e.code;
            }
        } else if m.result.as_ref().and_then(|r| r.is_error) == Some(true) {
            core.fail(ErrorKind::ToolError);
        }
        core.terminal = true;
        true
    }
}

impl Handler for Mcp {
    const NATIVE: Native = Native::Sse;

    fn on_sse(&mut self, core: &mut Core, ev: &SseEvent<'_>, errors: &mut Vec<DecodeError>) {
        // The priming event (an `id` with empty data) and anything after the response are skipped.
        if core.terminal || ev.data.trim_ascii().is_empty() {
            return;
        }
        self.message(core, ev.data, errors);
    }

    fn on_json(&mut self, core: &mut Core, body: &[u8], _ts: u64, errors: &mut Vec<DecodeError>) {
        if trim_start(body).first() == Some(&b'[') {
            // A batch answer: not decoded, but the body is whole.
            core.terminal = true;
            return;
        }
        self.message(core, body, errors);
    }

    fn on_error_body(&mut self, core: &mut Core, status: u16, body: Option<&[u8]>) {
        if let Some(b) = body {
            let mut scratch = Vec::new();
            if self.message(core, b, &mut scratch) && core.error.is_some() {
                return;
            }
        }
        let facts = body.and_then(ErrorFacts::from_body);
        core.fail(classify_http(status, facts.as_ref()));
    }

    fn finish(&mut self, core: &mut Core) {
        // 202: the answer (if any) goes elsewhere (old HTTP+SSE transport), nothing is missing here.
        if core.status == Some(202) {
            core.terminal = true;
        }
    }
}
