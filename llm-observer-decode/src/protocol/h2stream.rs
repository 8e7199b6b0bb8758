//! One HTTP/2 stream as an exchange: its request (headers and body, collected for API candidates),
//! then its response fed to the [`ApiDecoder`] the request was recognised as — the same decoders
//! the HTTP/1.1 path feeds.

use crate::exchange::Incomplete;
use crate::llm::{self, ApiDecoder, BodyEnd, Headers};
use crate::types::{DecodeError, EndedBy, Limits, Output};

use super::decompress::Decompressor;
use super::head::{Head, RequestHead, ResponseHead, body_shape};
use super::tsbuf::TsBuf;

/// A decoded header block: pseudo-header values and the regular fields.
#[derive(Debug, Default)]
pub(crate) struct Block {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub status: Option<u16>,
    pub headers: Headers,
}

/// A body's content coding, undone as it arrives. `None` inside: identity.
#[derive(Debug, Default)]
struct Coding(Option<Decompressor>);

impl Coding {
    /// From the message's `content-encoding`; an unknown or stacked coding is an error and the
    /// body is then not delivered.
    fn for_head(head: &Head, max: usize, errors: &mut Vec<Output>) -> Option<Coding> {
        match body_shape(head, false) {
            Ok(s) if s.undecodable => {
                errors.push(Output::Error(DecodeError::Decompress));
                None
            }
            Ok(s) => match s.coding.map(|c| Decompressor::new(c, max)) {
                None => Some(Coding(None)),
                Some(Ok(d)) => Some(Coding(Some(d))),
                Some(Err(e)) => {
                    errors.push(Output::Error(e));
                    None
                }
            },
            // HTTP/2 has no transfer codings; a bad content-length says nothing about coding.
            Err(_) => Some(Coding(None)),
        }
    }

    fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        match &mut self.0 {
            None => {
                out(data);
                Ok(())
            }
            Some(d) => d.feed(data, out),
        }
    }

    fn finish(&mut self, out: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        match &mut self.0 {
            None => Ok(()),
            Some(d) => d.finish(out),
        }
    }

    fn truncated(&self) -> bool {
        self.0.as_ref().is_some_and(Decompressor::truncated)
    }
}

#[derive(Debug)]
pub(crate) struct H2Stream {
    pub seq: u64,
    method: String,
    path: String,
    headers: Headers,
    /// Request body, collected only for a candidate (capped at `max_body_bytes`).
    body: TsBuf,
    body_truncated: bool,
    req_coding: Option<Coding>,
    start_ns: u64,
    pub candidate: bool,
    /// The request's END_STREAM was seen.
    pub request_done: bool,
    req_wire: u64,
    /// Set once the request was recognised.
    decoder: Option<Box<dyn ApiDecoder>>,
    /// The final (non-1xx) response head was seen.
    pub response_started: bool,
    resp_coding: Option<Coding>,
    resp_wire: u64,
    first_token: bool,
}

impl H2Stream {
    /// A stream opened by the request header block `b` (its pseudo-headers already checked).
    pub fn new(seq: u64, b: Block, candidate: bool, start_ns: u64, limits: &Limits) -> Self {
        let method = b.method.unwrap_or_default();
        let target = b.path.unwrap_or_default();
        let path = target
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut headers = b.headers;
        // `:authority` plays HTTP/1.1's Host (RFC 9113 §8.3.1): give the API layer the same field.
        if let Some(a) = b.authority
            && headers.get("host").is_none()
        {
            headers.0.push(("host".to_owned(), a.into_bytes()));
        }
        let mut errors = Vec::new();
        let req_coding = candidate
            .then(|| {
                let head = Head::Request(RequestHead {
                    method: method.clone(),
                    target: target.clone(),
                    path: path.clone(),
                    minor_version: 1,
                    headers: headers.clone(),
                });
                Coding::for_head(&head, limits.max_body_bytes, &mut errors)
            })
            .flatten();
        H2Stream {
            seq,
            method,
            path,
            headers,
            body: TsBuf::new(),
            body_truncated: false,
            req_coding,
            start_ns,
            candidate,
            request_done: false,
            req_wire: 0,
            decoder: None,
            response_started: false,
            resp_coding: None,
            resp_wire: 0,
            first_token: false,
        }
    }

    pub fn is_recognised(&self) -> bool {
        self.decoder.is_some()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.body.len() + self.decoder.as_ref().map_or(0, |d| d.buffered_bytes())
    }

    /// Frame bytes (header + payload) of this stream, per direction.
    pub fn wire(&mut self, request: bool, n: u64) {
        if request {
            self.req_wire += n;
        } else {
            self.resp_wire += n;
        }
    }

    /// Request DATA bytes.
    pub fn request_data(&mut self, data: &[u8], ts_ns: u64, limits: &Limits) {
        let Some(c) = &mut self.req_coding else {
            return;
        };
        let (body, truncated) = (&mut self.body, &mut self.body_truncated);
        let max = limits.max_body_bytes;
        let r = c.feed(data, &mut |d| {
            let take = d.len().min(max.saturating_sub(body.len()));
            body.push(d.get(..take).unwrap_or_default(), ts_ns);
            *truncated |= take < d.len();
        });
        if r.is_err() {
            self.req_coding = None;
            self.body_truncated = true;
        }
    }

    /// The request ended (END_STREAM): a candidate is offered to the recognizer.
    pub fn request_end(
        &mut self,
        ts_ns: u64,
        recognize: llm::Recognizer,
        limits: &Limits,
        out: &mut Vec<Output>,
    ) {
        self.request_done = true;
        if !self.candidate {
            return;
        }
        if let Some(c) = &mut self.req_coding {
            let (body, max) = (&mut self.body, limits.max_body_bytes);
            let mut truncated = false;
            let r = c.finish(&mut |d| {
                let take = d.len().min(max.saturating_sub(body.len()));
                body.push(d.get(..take).unwrap_or_default(), ts_ns);
                truncated |= take < d.len();
            });
            self.body_truncated |= truncated || r.is_err() || c.truncated();
            if let Err(e) = r {
                out.push(Output::Error(e));
            }
        }
        let req = llm::Request {
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            body: self.body.as_slice(),
            body_truncated: self.body_truncated,
            start_ns: self.start_ns,
            end_ns: ts_ns,
            wire_bytes: self.req_wire,
        };
        self.decoder = recognize(&req, limits);
        // The body is no longer needed: the decoder has what it wanted from it.
        self.body = TsBuf::new();
        if let Some(d) = &self.decoder {
            let s = d.summary();
            out.push(Output::Started {
                seq: self.seq,
                api: s.api,
                operation: s.operation,
                model: s.model,
                stream: s.stream,
                user_labels: s.user_labels,
                ts_ns,
                host: crate::llm::request_host(&self.headers),
            });
        }
    }

    /// A response header block: the final head (status ≥ 200), or trailers after it.
    pub fn response_headers(
        &mut self,
        b: Block,
        start_ns: u64,
        limits: &Limits,
        out: &mut Vec<Output>,
    ) {
        let Some(status) = b.status else {
            return;
        };
        if self.response_started || (100..200).contains(&status) {
            // Trailers, or an interim (1xx) response.
            return;
        }
        self.response_started = true;
        let Some(d) = &mut self.decoder else {
            return;
        };
        d.response_head(&llm::ResponseHead {
            status,
            headers: &b.headers,
            start_ns,
        });
        let head = Head::Response(ResponseHead {
            status,
            minor_version: 1,
            headers: b.headers,
        });
        self.resp_coding = Coding::for_head(&head, limits.max_body_bytes, out);
    }

    /// Response DATA bytes.
    pub fn response_data(&mut self, data: &[u8], ts_ns: u64, out: &mut Vec<Output>) {
        let (Some(d), Some(c)) = (&mut self.decoder, &mut self.resp_coding) else {
            return;
        };
        let mut errors = Vec::new();
        let mut first = None;
        let r = c.feed(data, &mut |bytes| {
            if let Some(t) = d.response_body(bytes, ts_ns, &mut errors) {
                first.get_or_insert(t);
            }
        });
        out.extend(errors.into_iter().map(Output::Error));
        if let Err(e) = r {
            out.push(Output::Error(e));
            self.resp_coding = None;
        }
        if let (Some(ts_ns), false) = (first, self.first_token) {
            self.first_token = true;
            out.push(Output::FirstToken {
                seq: self.seq,
                ts_ns,
            });
        }
    }

    /// The stream is over: `end` says how. Emits `Done` for a recognised request, or
    /// `Incomplete` for a candidate the capture lost before it could be recognised.
    pub fn finish(mut self, end: BodyEnd, ts_ns: u64, out: &mut Vec<Output>) {
        if !self.request_done {
            if self.candidate
                && matches!(end, BodyEnd::Cut(EndedBy::Capture(Incomplete::CaptureGap)))
            {
                out.push(Output::Incomplete {
                    seq: self.seq,
                    why: Incomplete::CaptureGap,
                });
            }
            return;
        }
        let Some(mut d) = self.decoder.take() else {
            return;
        };
        let mut truncated = false;
        if matches!(end, BodyEnd::Complete)
            && let Some(c) = &mut self.resp_coding
        {
            let mut errors = Vec::new();
            let r = c.finish(&mut |bytes| {
                let _ = d.response_body(bytes, ts_ns, &mut errors);
            });
            out.extend(errors.into_iter().map(Output::Error));
            if let Err(e) = r {
                out.push(Output::Error(e));
            }
            truncated = c.truncated();
        }
        let end = match end {
            // Ended before its response head: the no-response form of the same cause.
            BodyEnd::Cut(by) if !self.response_started => BodyEnd::NoResponse(by),
            e => e,
        };
        let mut exchange = d.finish(end, ts_ns, self.resp_wire);
        exchange.body_truncated |= truncated;
        out.push(Output::Done {
            seq: self.seq,
            exchange: Box::new(exchange),
        });
    }
}
