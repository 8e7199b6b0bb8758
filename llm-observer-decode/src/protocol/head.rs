//! HTTP/1.x heads: parsing a complete head with `httparse` into owned values, and deciding from
//! it how the body is framed (RFC 9112 §6.3) and encoded.

use crate::llm::Headers;
use crate::types::DecodeError;

use super::decompress::Coding;

/// Most header fields accepted in one head (httparse needs a fixed array). Real LLM traffic
/// carries 5–30; more is treated as a malformed head.
pub const MAX_HEADERS: usize = 128;

/// Which direction of the connection a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (may include a query).
    pub target: String,
    /// `target` without its query string or fragment.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

impl Head {
    pub fn headers(&self) -> &Headers {
        match self {
            Head::Request(r) => &r.headers,
            Head::Response(r) => &r.headers,
        }
    }
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid version",
    }
}

fn owned_headers(raw: &[httparse::Header<'_>]) -> Headers {
    Headers(
        raw.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
    )
}

/// Parses a complete head (`bytes` ends with its blank line).
pub fn parse(dir: Direction, bytes: &[u8]) -> Result<Head, DecodeError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let partial = DecodeError::BadHead("incomplete head");
    match dir {
        Direction::Request => {
            let mut req = httparse::Request::new(&mut raw);
            let status = req
                .parse(bytes)
                .map_err(|e| DecodeError::BadHead(httparse_reason(e)))?;
            if status.is_partial() {
                return Err(partial);
            }
            let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version)
            else {
                return Err(partial);
            };
            let end = target.find(['?', '#']).unwrap_or(target.len());
            Ok(Head::Request(RequestHead {
                method: method.to_owned(),
                target: target.to_owned(),
                path: target.get(..end).unwrap_or(target).to_owned(),
                minor_version: minor,
                headers: owned_headers(req.headers),
            }))
        }
        Direction::Response => {
            let mut resp = httparse::Response::new(&mut raw);
            let status = httparse::ParserConfig::default()
                .allow_obsolete_multiline_headers_in_responses(true)
                .parse_response(&mut resp, bytes)
                .map_err(|e| DecodeError::BadHead(httparse_reason(e)))?;
            if status.is_partial() {
                return Err(partial);
            }
            let (Some(code), Some(minor)) = (resp.code, resp.version) else {
                return Err(partial);
            };
            Ok(Head::Response(ResponseHead {
                status: code,
                minor_version: minor,
                headers: owned_headers(resp.headers),
            }))
        }
    }
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// How a body is framed and encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyShape {
    pub framing: Framing,
    /// The one content/transfer coding to undo, if any.
    pub coding: Option<Coding>,
    /// The body uses a coding we cannot undo (unknown, or several stacked): it is framed but not
    /// decoded.
    pub undecodable: bool,
}

/// Comma-separated tokens of every `name` field, lower-cased and trimmed, in order.
fn tokens(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .0
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The message's Content-Length: every value (and list element) must agree (RFC 9112 §6.3 (5)).
fn content_length(headers: &Headers) -> Result<Option<u64>, DecodeError> {
    let bad = DecodeError::BadHead("invalid content-length");
    let mut found = None;
    for v in tokens(headers, "content-length") {
        if !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 19 {
            return Err(bad);
        }
        let n: u64 = v.parse().map_err(|_| bad.clone())?;
        if found.is_some_and(|f| f != n) {
            return Err(bad);
        }
        found = Some(n);
    }
    Ok(found)
}

/// Framing of a message whose head is `head`. `no_body` is set for responses that cannot have a
/// body whatever their headers say (to HEAD, 1xx, 204, 304).
pub fn body_shape(head: &Head, no_body: bool) -> Result<BodyShape, DecodeError> {
    let headers = head.headers();
    let mut codings = tokens(headers, "transfer-encoding");
    let chunked = codings.last().is_some_and(|c| c == "chunked");
    if chunked {
        codings.pop();
    }
    let te_present = headers.get("transfer-encoding").is_some();
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3 (3)).
        Framing::Chunked
    } else if te_present {
        match head {
            // A request whose final transfer coding is not chunked has no knowable length.
            Head::Request(_) => {
                return Err(DecodeError::BadHead("transfer-encoding without chunked"));
            }
            Head::Response(_) => Framing::Close,
        }
    } else if let Some(n) = content_length(headers)? {
        Framing::Length(n)
    } else if matches!(head, Head::Request(_)) {
        Framing::Length(0)
    } else {
        Framing::Close
    };
    codings.extend(tokens(headers, "content-encoding"));
    let mut coding = None;
    let mut undecodable = false;
    for c in &codings {
        match Coding::from_token(c) {
            Ok(None) => {}
            Ok(Some(c)) if coding.is_none() => coding = Some(c),
            Ok(Some(_)) | Err(_) => undecodable = true,
        }
    }
    if undecodable {
        coding = None;
    }
    Ok(BodyShape {
        framing,
        coding,
        undecodable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> Head {
        req_bytes(extra.as_bytes())
    }

    fn req_bytes(extra: &[u8]) -> Head {
        let mut text = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\n".to_vec();
        text.extend_from_slice(extra);
        text.extend_from_slice(b"\r\n");
        parse(Direction::Request, &text).unwrap()
    }

    #[test]
    fn request_head_is_owned_and_lower_cased() {
        let Head::Request(r) = req_bytes(b"Content-Type: application/json\r\nX-Bin: \xff\r\n")
        else {
            panic!("not a request")
        };
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/v1/chat/completions?x=1");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.headers.get_str("content-type"), Some("application/json"));
        assert_eq!(r.headers.get("x-bin"), Some(&b"\xff"[..]));
    }

    #[test]
    fn framing_rules() {
        let shape = |h: &Head, nb| body_shape(h, nb).map(|s| (s.framing, s.coding, s.undecodable));
        assert_eq!(
            shape(&req(""), false),
            Ok((Framing::Length(0), None, false))
        );
        assert_eq!(
            shape(&req("Content-Length: 12\r\n"), false),
            Ok((Framing::Length(12), None, false))
        );
        assert_eq!(
            shape(&req("Content-Length: 5\r\nContent-Length: 5, 5\r\n"), false),
            Ok((Framing::Length(5), None, false))
        );
        assert_eq!(
            shape(&req("Content-Length: 5\r\nContent-Length: 6\r\n"), false),
            Err(DecodeError::BadHead("invalid content-length"))
        );
        assert_eq!(
            shape(&req("Content-Length: -1\r\n"), false),
            Err(DecodeError::BadHead("invalid content-length"))
        );
        assert_eq!(
            shape(
                &req("Transfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n"),
                false
            ),
            Ok((Framing::Chunked, Some(Coding::Gzip), false))
        );
        assert_eq!(
            shape(&req("Transfer-Encoding: gzip\r\n"), false),
            Err(DecodeError::BadHead("transfer-encoding without chunked"))
        );
        let resp = |extra: &str| {
            let text = format!("HTTP/1.1 200 OK\r\n{extra}\r\n");
            parse(Direction::Response, text.as_bytes()).unwrap()
        };
        assert_eq!(shape(&resp(""), false), Ok((Framing::Close, None, false)));
        assert_eq!(
            shape(&resp("Content-Length: 9\r\n"), true),
            Ok((Framing::Length(0), None, false))
        );
        assert_eq!(
            shape(
                &resp("Content-Encoding: br\r\nContent-Length: 9\r\n"),
                false
            ),
            Ok((Framing::Length(9), Some(Coding::Br), false))
        );
        assert_eq!(
            shape(&resp("Content-Encoding: gzip, br\r\n"), false),
            Ok((Framing::Close, None, true))
        );
        assert_eq!(
            shape(&resp("Content-Encoding: compress\r\n"), false),
            Ok((Framing::Close, None, true))
        );
        assert_eq!(
            shape(
                &resp("Content-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"),
                false
            ),
            Ok((Framing::Chunked, None, false))
        );
    }

    #[test]
    fn bad_heads_name_the_reason() {
        assert_eq!(
            parse(Direction::Request, b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Err(DecodeError::BadHead("invalid header name"))
        );
        assert_eq!(
            parse(Direction::Response, b"HTTP/2 200 OK\r\n\r\n"),
            Err(DecodeError::BadHead("invalid version"))
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("h{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(
            parse(Direction::Request, &many),
            Err(DecodeError::BadHead("too many headers"))
        );
    }
}
