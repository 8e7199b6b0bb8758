//! LLM / MCP API recognition and decoders.
//!
//! The HTTP layer ([`crate::protocol`]) reassembles messages and calls into this module through a
//! narrow interface: [`recognize`] looks at a complete request and, for a known API, returns an
//! [`ApiDecoder`] that then receives the response head and the response body (de-chunked and
//! decompressed) incrementally, and finally builds the [`Exchange`].
//!
//! Decoders keep no prompt or response text beyond what decoding needs: bounded buffers for the
//! JSON value or stream event being parsed, never the accumulated output.

use crate::exchange::{Api, Exchange, Operation};
use crate::types::{DecodeError, EndedBy, Limits};

mod anthropic;
mod batches;
mod common;
mod detect;
mod errors;
pub mod fingerprint;
mod gemini;
mod json;
mod llamacpp;
mod mcp;
pub mod mcp_stdio;
mod ollama;
mod openai;
mod responses;
mod skim;
mod tgi;
mod tool_ids;

/// HTTP header list as received: names lower-cased ASCII, values raw bytes, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

/// Turns a complete request into an API decoder, or `None` for traffic that is not a known API.
/// [`crate::ConnDecoder::new`] uses [`recognize_with_limits`]; tests (and embedders with their own
/// APIs) can plug in another with [`crate::ConnDecoder::with_recognizer`].
pub type Recognizer = fn(&Request<'_>, &Limits) -> Option<Box<dyn ApiDecoder>>;

/// Judges a request by method, path and headers before its body is read: only candidates have
/// their body collected and offered to the [`Recognizer`]. [`crate::ConnDecoder::new`] uses
/// [`is_candidate`]; [`crate::ConnDecoder::with_recognizer`] collects every body.
pub type Candidate = fn(&str, &str, &Headers) -> bool;

impl Headers {
    /// First value of header `name` (give it lower-case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// First value of header `name` as UTF-8 text, trimmed.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }
}

/// The request's `Host` (HTTP/2's `:authority` is passed on as one), bounded: `None` when absent,
/// empty or longer than [`crate::types::MAX_HOST_BYTES`].
pub(crate) fn request_host(headers: &Headers) -> Option<String> {
    headers
        .get_str("host")
        .filter(|h| !h.is_empty() && h.len() <= crate::types::MAX_HOST_BYTES)
        .map(str::to_owned)
}

/// A complete request, as the HTTP layer hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub headers: &'a Headers,
    /// Decoded body (de-chunked, decompressed), cut at `Limits::max_body_bytes`.
    pub body: &'a [u8],
    /// The body was longer than `body` (cut at the cap).
    pub body_truncated: bool,
    /// Capture time of the first byte of the request head.
    pub start_ns: u64,
    /// Capture time of the last byte of the request.
    pub end_ns: u64,
    /// Bytes of the request on the wire (head + framed body).
    pub wire_bytes: u64,
}

/// The final (non-1xx) response head.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub headers: &'a Headers,
    /// Capture time of the first byte of the status line.
    pub start_ns: u64,
}

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Framing said the body is complete (Content-Length reached, last chunk, or a
    /// close-delimited body ended by the server's close).
    Complete,
    /// The connection ended before the framing said the body was complete.
    Cut(EndedBy),
    /// The connection ended before any response head arrived.
    NoResponse(EndedBy),
}

/// What the first call tells the HTTP layer about a recognised request (for `Output::Started`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    pub api: Api,
    pub operation: Operation,
    pub model: Option<String>,
    pub stream: bool,
    /// The user-defined labels' values ([`crate::labels`]), in rule order.
    pub user_labels: Vec<String>,
}

/// Decodes one recognised request's response into an [`Exchange`].
pub trait ApiDecoder: Send + std::fmt::Debug {
    /// Api, operation, requested model and stream flag, known from the request alone.
    fn summary(&self) -> RequestSummary;

    /// The final (non-1xx) response head.
    fn response_head(&mut self, head: &ResponseHead<'_>);

    /// Decoded response body bytes, in order, stamped with the capture time of the bytes that
    /// carried them. Returns the capture time of the first content-bearing event when this call is
    /// the one that saw it (the TTFT marker), so the agent can update its queue gauge. Decode
    /// problems are pushed to `errors` (each counted by reason) and never panic.
    fn response_body(
        &mut self,
        data: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
    ) -> Option<u64>;

    /// Bytes this decoder buffers now (a JSON body, a partial stream event), for the agent's
    /// memory budget.
    fn buffered_bytes(&self) -> usize {
        0
    }

    /// No more response: build the record. `end_ns` is the capture time of the last response byte
    /// (or of the close that ended it); `response_wire_bytes` counts head + framed body.
    fn finish(self: Box<Self>, end: BodyEnd, end_ns: u64, response_wire_bytes: u64) -> Exchange;

    /// The request's user-defined label values, read at recognition ([`crate::labels`]).
    /// Decoders without them (MCP) ignore them.
    fn set_user_labels(&mut self, values: Vec<String>) {
        let _ = values;
    }
}

/// Whether a request, known by its head alone, could belong to a known API (a POST to a known
/// endpoint, with MCP headers, or with a JSON or absent content type). The HTTP layer collects the
/// body — which [`recognize`] needs — only for such requests; uploads, forms and every non-POST are
/// framed without buffering anything.
pub fn is_candidate(method: &str, path: &str, headers: &Headers) -> bool {
    detect::candidate(method, path, headers)
}

/// Recognises a request by method, path, headers and body shape (ports are never needed). Returns
/// `None` for traffic that is not a known LLM/MCP API; such exchanges are dropped cheaply.
///
/// Uses [`Limits::default`] for the per-event and per-body caps; see [`recognize_with_limits`].
pub fn recognize(req: &Request<'_>) -> Option<Box<dyn ApiDecoder>> {
    detect::recognize(req, &Limits::default())
}

/// [`recognize`] with the connection's caps: `max_event_bytes` bounds one SSE event / NDJSON line,
/// `max_body_bytes` one buffered JSON response body.
pub fn recognize_with_limits(req: &Request<'_>, limits: &Limits) -> Option<Box<dyn ApiDecoder>> {
    let mut d = detect::recognize(req, limits)?;
    if !limits.labels.is_empty() {
        d.set_user_labels(limits.labels.extract(req));
    }
    Some(d)
}
