//! MCP over the stdio transport: an agent launches the MCP server as a subprocess and the two talk
//! JSON-RPC 2.0 over its stdin and stdout, one message per line (UTF-8, no embedded newlines).
//!
//! [`McpStdio`] is one session as one process sees it, its two directions fed separately:
//! [`Stream::Request`] carries the client's messages (what the launcher writes to the child's
//! stdin, what the child reads from fd 0), [`Stream::Response`] the server's (the child's fd 1).
//! The same decoder serves both views; the caller labels the exchanges with the process's role.
//!
//! - Recognition ([`is_jsonrpc_start`]): the first line of either direction must be a JSON object
//!   with `"jsonrpc":"2.0"`, looked for in its first bytes (SDKs write `jsonrpc` first); anything
//!   else makes the session [`Recognition::NotJsonRpc`] and every later byte is ignored.
//! - A client request (`method` and `id`) waits for the server message with the same `id` and a
//!   `result` or `error`; the pair is one [`Exchange`] (`api: mcp`, `tools/call` →
//!   [`Operation::ToolCall`]) with the method and tool (or prompt, resource) name in [`McpInfo`],
//!   `JsonRpcError` (code kept) or `ToolError` (`result.isError: true`) as its error.
//! - A client notification (`method`, no `id`) is an exchange at once (nothing answers it).
//! - There is no HTTP status on a pipe: an answered request (and a notification) is recorded with
//!   status 200, so the MCP families treat it as an HTTP exchange that got its answer.
//! - Server requests and notifications (sampling, progress, logging) and the client's answers to
//!   them are not exchanges of the client's asking, and are skipped.
//! - Times: the capture time of the bytes that completed each line (request start = end = its
//!   line; response end = its line).
//! - Bounds: a line is at most `max_line_bytes` (longer ones are skipped and reported once each);
//!   at most [`MAX_PENDING`] requests wait (a further one is reported `TooManyPending` and not
//!   tracked); a response nobody waits for is `UnmatchedResponse`; a line that is not JSON is
//!   `BadJson`. At [`McpStdio::finish`] requests still waiting end `ServerClosed` (the server's
//!   stdout ended) or, when the capture lost bytes, incomplete.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::exchange::{
    Api, ErrorKind, Exchange, Incomplete, McpInfo, Operation, Stream, Timings, TokenCount,
};
use crate::protocol::ndjson::NdjsonParser;
use crate::types::DecodeError;

use super::common::{MAX_MCP, cap};
use super::json::{RpcError, RpcId, RpcResult, Str};

/// Requests waiting for their answer at once.
pub const MAX_PENDING: usize = 256;

/// How far into the first line `"jsonrpc"` is looked for (SDKs write it first; a client that
/// puts a large `params` before it is not recognised, and says so by not being captured).
const PEEK: usize = 64;

/// Whether a stream starting with `data` is JSON-RPC (see the module docs): the same rule the
/// kernel's peek applies to a pipe's first write. `None`: too few bytes to tell yet.
pub fn is_jsonrpc_start(data: &[u8]) -> Option<bool> {
    let text = data.trim_ascii_start();
    let first = *text.first()?;
    if first != b'{' {
        return Some(false);
    }
    let head = &text[..text.len().min(PEEK)];
    if memchr::memmem::find(head, b"\"jsonrpc\"").is_some() {
        return Some(true);
    }
    // Not in the bytes seen: decided once the peek window is full or the line ended.
    (head.len() == PEEK || memchr::memchr(b'\n', head).is_some()).then_some(false)
}

/// Who writes a stream, told from its first message ([`writer_side`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Too few bytes yet.
    Undecided,
    /// A request or notification first (`method`): the client's messages ([`Stream::Request`]).
    Client,
    /// A response first (`result` or `error`): the server's ([`Stream::Response`]).
    Server,
    /// Not a JSON object with any of those members in its first [`SIDE_PEEK`] bytes or line.
    NotJsonRpc,
}

/// How far into a stream's first line [`writer_side`] looks.
pub const SIDE_PEEK: usize = 4096;

/// Which side writes the stream whose first bytes are `head`: the first of the members
/// `"method"`, `"result"` or `"error"` (a name followed by `:`) in its first line. A pipe end
/// carries one side's messages for its whole life (the client's requests, notifications and
/// answers to the server's requests; or the server's), so its first message tells its stream,
/// whatever fd it is and whichever process holds it.
pub fn writer_side(head: &[u8]) -> Side {
    let text = head.trim_ascii_start();
    match text.first() {
        None => return Side::Undecided,
        Some(b'{') => {}
        Some(_) => return Side::NotJsonRpc,
    }
    let line = memchr::memchr(b'\n', text).map_or(text, |n| &text[..n]);
    let line = &line[..line.len().min(SIDE_PEEK)];
    let member = |name: &[u8]| {
        memchr::memmem::find_iter(line, name).find(|&at| {
            line[at + name.len()..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b':')
        })
    };
    let method = member(b"\"method\"");
    let answer = [member(b"\"result\""), member(b"\"error\"")]
        .into_iter()
        .flatten()
        .min();
    match (method, answer) {
        (Some(m), Some(a)) if a < m => Side::Server,
        (Some(_), _) => Side::Client,
        (None, Some(_)) => Side::Server,
        (None, None) if line.len() < text.len() || line.len() >= SIDE_PEEK => Side::NotJsonRpc,
        (None, None) => Side::Undecided,
    }
}

/// Whether the session turned out to be JSON-RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// No complete first line yet.
    Pending,
    JsonRpc,
    NotJsonRpc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    uri: Option<Str<'a>>,
}

/// Any JSON-RPC message; which kind it is follows from the members present.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Str<'a>>,
    id: Option<RpcId>,
    #[serde(borrow)]
    method: Option<Str<'a>>,
    #[serde(borrow)]
    params: Option<Params<'a>>,
    result: Option<RpcResult>,
    error: Option<RpcError>,
}

#[derive(Debug)]
struct Waiting {
    id: RpcId,
    info: McpInfo,
    start_ns: u64,
    bytes: u64,
}

/// One stdio session (see the module docs).
#[derive(Debug)]
pub struct McpStdio {
    request: NdjsonParser,
    response: NdjsonParser,
    recognition: Recognition,
    pending: VecDeque<Waiting>,
    /// The capture lost bytes of this session: unanswered requests end incomplete.
    gap: bool,
    max_line_bytes: usize,
    /// The session's first bytes while it is not recognised yet.
    head: Vec<u8>,
}

impl McpStdio {
    pub fn new(max_line_bytes: usize) -> Self {
        McpStdio {
            request: NdjsonParser::new(max_line_bytes),
            response: NdjsonParser::new(max_line_bytes),
            recognition: Recognition::Pending,
            pending: VecDeque::new(),
            gap: false,
            max_line_bytes,
            head: Vec::new(),
        }
    }

    pub fn recognition(&self) -> Recognition {
        self.recognition
    }

    /// Requests waiting for their answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of unfinished lines held.
    pub fn buffered_bytes(&self) -> usize {
        self.request.buffered_bytes() + self.response.buffered_bytes()
    }

    /// The capture lost `missing` bytes of `stream`: the line in progress there is unreliable,
    /// and requests left unanswered at the end are the capture's loss, not the server's.
    pub fn gap(&mut self, stream: Stream, missing: u64, errors: &mut Vec<DecodeError>) {
        self.gap = true;
        errors.push(DecodeError::Gap { missing });
        // Whatever was held of the interrupted line would join bytes of another line.
        let parser = match stream {
            Stream::Request => &mut self.request,
            Stream::Response => &mut self.response,
        };
        *parser = NdjsonParser::new(self.max_line_bytes);
    }

    /// Bytes of `stream` captured at `ts_ns`; finished exchanges are pushed to `out`.
    pub fn feed(
        &mut self,
        stream: Stream,
        data: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
        errors: &mut Vec<DecodeError>,
    ) {
        if self.recognition == Recognition::NotJsonRpc {
            return;
        }
        if self.recognition == Recognition::Pending {
            // The first bytes of the session, however the capture cut them (at most PEEK kept).
            let room = PEEK.saturating_sub(self.head.len());
            self.head.extend_from_slice(&data[..data.len().min(room)]);
            match is_jsonrpc_start(&self.head) {
                Some(true) => {
                    self.recognition = Recognition::JsonRpc;
                    self.head = Vec::new();
                }
                Some(false) => {
                    self.recognition = Recognition::NotJsonRpc;
                    self.head = Vec::new();
                    return;
                }
                // Too few bytes to tell: decoded as usual, judged again with the next ones.
                None => {}
            }
        }
        let McpStdio {
            request,
            response,
            pending,
            ..
        } = self;
        match stream {
            Stream::Request => request.feed(data, ts_ns, errors, |line, ts, errors| {
                client_line(pending, line, ts, out, errors)
            }),
            Stream::Response => response.feed(data, ts_ns, errors, |line, ts, errors| {
                server_line(pending, line, ts, out, errors)
            }),
        }
    }

    /// The session ended at `end_ns` (the pipes closed, or the process exited): requests still
    /// waiting are pushed to `out`, failed `ServerClosed` (or incomplete after a capture gap).
    pub fn finish(mut self, end_ns: u64, out: &mut Vec<Exchange>) {
        while let Some(w) = self.pending.pop_front() {
            let mut ex = exchange(w.info, w.start_ns, None, end_ns, w.bytes, 0);
            if self.gap {
                ex.incomplete = Some(Incomplete::CaptureGap);
            } else {
                ex.error = Some(ErrorKind::ServerClosed);
            }
            out.push(ex);
        }
    }
}

/// A message the client sent.
fn client_line(
    pending: &mut VecDeque<Waiting>,
    line: &[u8],
    ts: u64,
    out: &mut Vec<Exchange>,
    errors: &mut Vec<DecodeError>,
) {
    let Ok(m) = serde_json::from_slice::<Message<'_>>(line) else {
        errors.push(DecodeError::BadJson);
        return;
    };
    // Answers to the server's own requests, and anything that is not JSON-RPC 2.0.
    let Some(method) = m.method.as_deref().filter(|_| m.jsonrpc.is_some()) else {
        return;
    };
    let name = m
        .params
        .as_ref()
        .and_then(|p| p.name.as_deref().or(p.uri.as_deref()));
    let info = McpInfo {
        method: cap(method, MAX_MCP),
        name: name.map(|n| cap(n, MAX_MCP)),
        error_code: None,
    };
    let bytes = line.len() as u64 + 1;
    match m.id.filter(|i| *i != RpcId::Missing) {
        // A notification: nothing will answer it.
        None => out.push(exchange(info, ts, Some(200), ts, bytes, 0)),
        Some(id) => {
            if pending.len() >= MAX_PENDING {
                errors.push(DecodeError::TooManyPending);
                return;
            }
            pending.push_back(Waiting {
                id,
                info,
                start_ns: ts,
                bytes,
            });
        }
    }
}

/// A message the server sent.
fn server_line(
    pending: &mut VecDeque<Waiting>,
    line: &[u8],
    ts: u64,
    out: &mut Vec<Exchange>,
    errors: &mut Vec<DecodeError>,
) {
    let Ok(m) = serde_json::from_slice::<Message<'_>>(line) else {
        errors.push(DecodeError::BadJson);
        return;
    };
    // The server's own requests and notifications.
    if m.method.is_some() || (m.result.is_none() && m.error.is_none()) {
        return;
    }
    let Some(at) =
        m.id.as_ref()
            .and_then(|id| pending.iter().position(|w| w.id == *id))
    else {
        errors.push(DecodeError::UnmatchedResponse);
        return;
    };
    let Some(w) = pending.remove(at) else {
        return;
    };
    let mut ex = exchange(
        w.info,
        w.start_ns,
        Some(200),
        ts,
        w.bytes,
        line.len() as u64 + 1,
    );
    if let Some(e) = &m.error {
        ex.error = Some(ErrorKind::JsonRpcError);
        if let Some(info) = ex.mcp.as_mut() {
            info.error_code = e.code;
        }
    } else if m.result.as_ref().and_then(|r| r.is_error) == Some(true) {
        ex.error = Some(ErrorKind::ToolError);
    }
    out.push(ex);
}

fn exchange(
    info: McpInfo,
    start_ns: u64,
    status: Option<u16>,
    end_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
) -> Exchange {
    let operation = if info.method == "tools/call" {
        Operation::ToolCall
    } else {
        Operation::McpOther
    };
    Exchange {
        api: Api::Mcp,
        operation,
        method: String::new(),
        path: String::new(),
        request_model: None,
        response_model: None,
        stream: false,
        status,
        timings: Timings {
            request_start_ns: start_ns,
            request_end_ns: Some(start_ns),
            response_start_ns: status.map(|_| end_ns),
            response_end_ns: Some(end_ns),
            ..Timings::default()
        },
        tokens: Default::default(),
        cache_write_tokens: TokenCount::ABSENT,
        finish_reason: None,
        error: None,
        incomplete: None,
        tool_calls: Vec::new(),
        tool_ids: Default::default(),
        mcp: Some(info),
        load_duration_ns: None,
        request_bytes,
        response_bytes,
        body_truncated: false,
        params: Default::default(),
        server: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognition_looks_at_the_first_bytes_only() {
        assert_eq!(
            is_jsonrpc_start(b"{\"jsonrpc\":\"2.0\",\"id\":1"),
            Some(true)
        );
        assert_eq!(
            is_jsonrpc_start(b"  \n{\"method\":\"x\",\"jsonrpc\":\"2.0\"}\n"),
            Some(true)
        );
        assert_eq!(is_jsonrpc_start(b"hello\n"), Some(false));
        assert_eq!(is_jsonrpc_start(b"{\"a\":1}\n"), Some(false));
        assert_eq!(is_jsonrpc_start(b"{\"a\""), None);
        assert_eq!(is_jsonrpc_start(b"   "), None);
        let late = format!("{{\"params\":\"{}\",\"jsonrpc\":\"2.0\"}}", "x".repeat(100));
        assert_eq!(is_jsonrpc_start(late.as_bytes()), Some(false));
    }
}
