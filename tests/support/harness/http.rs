//! A deliberately tiny blocking HTTP/1.1 client over `std::net::TcpStream`, used to scrape
//! `/metrics` and to check the emulators' exact bytes. It sends one request with
//! `Connection: close`, reads to EOF under a deadline, and keeps the raw bytes and the arrival time
//! of every read so tests can reason about framing and timing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response, as read off the socket.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
    /// Whether the body ended as its framing says (terminal chunk, Content-Length reached, or EOF
    /// for a close-delimited body). False when the server closed the connection mid-body.
    pub complete: bool,
    /// Every byte received, head included.
    pub raw: Vec<u8>,
    /// `(time since the request was sent, bytes received so far)` after each read.
    pub reads: Vec<(Duration, usize)>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// When the raw byte at `offset` (of the whole response) arrived, since the request was sent.
    pub fn arrival_of(&self, offset: usize) -> Option<Duration> {
        self.reads
            .iter()
            .find(|(_, len)| *len > offset)
            .map(|(t, _)| *t)
    }

    /// Offset in [`Self::raw`] of the first occurrence of `needle`.
    pub fn raw_offset_of(&self, needle: &str) -> Option<usize> {
        self.raw
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
    }
}

/// Sends `method path` with `body` (JSON when non-empty) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let sent = Instant::now();
    let mut raw = Vec::new();
    let mut reads = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not finished before the deadline",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                reads.push((sent.elapsed(), raw.len()));
            }
            // A reset is how an aborted response may end; what arrived before it is the answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    parse_response(raw, reads)
}

/// One persistent connection for sequential requests (HTTP/1.1 keep-alive), to test what happens to
/// a connection across events such as the agent starting in the middle of it.
pub struct KeepAlive {
    stream: TcpStream,
    addr: SocketAddr,
    /// Bytes read past the end of the previous response.
    pending: Vec<u8>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<KeepAlive> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(KeepAlive {
            stream,
            addr,
            pending: Vec::new(),
        })
    }

    /// The socket, for writing bytes no well-behaved client would send.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// POSTs `body` and reads exactly one response (which must be framed by Content-Length or
    /// chunked encoding, as keep-alive responses are).
    pub fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> io::Result<HttpResponse> {
        let deadline = Instant::now() + timeout;
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.stream.write_all(head.as_bytes())?;
        self.stream.write_all(body.as_bytes())?;
        let sent = Instant::now();
        let mut raw = std::mem::take(&mut self.pending);
        let mut reads = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let len = loop {
            if let Some(len) = framed_len(&raw) {
                break len;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "response not finished before the deadline",
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-response",
                    ));
                }
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    reads.push((sent.elapsed(), raw.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.pending = raw.split_off(len);
        parse_response(raw, reads)
    }
}

/// The length of the first complete response in `raw`, when it is complete and self-delimited.
fn framed_len(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
    };
    if header("transfer-encoding").is_some_and(|te| te == "chunked") {
        let mut at = head_end;
        loop {
            let line_end = at + raw[at..].windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&raw[at..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2 + size + 2;
            if raw.len() < at {
                return None;
            }
            if size == 0 {
                return Some(at);
            }
        }
    }
    let len: usize = header("content-length")?.parse().ok()?;
    (raw.len() >= head_end + len).then_some(head_end + len)
}

/// POSTs a JSON value.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    request(addr, "POST", path, body.to_string().as_bytes(), timeout)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Parses a complete (or server-aborted) response from its raw bytes.
pub fn parse_response(raw: Vec<u8>, reads: Vec<(Duration, usize)>) -> io::Result<HttpResponse> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no complete response head"))?;
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[head_end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (body, complete) =
        if find("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)
        } else if let Some(len) = find("content-length").and_then(|l| l.parse::<usize>().ok()) {
            (rest[..len.min(rest.len())].to_vec(), rest.len() >= len)
        } else {
            (rest.to_vec(), true)
        };
    Ok(HttpResponse {
        status,
        headers,
        body,
        complete,
        raw,
        reads,
    })
}

/// Removes chunked framing; the flag says whether the terminal zero-size chunk arrived.
pub fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        // Chunk extensions (`;name=value`) are legal and ignored.
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, false);
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_complete_and_cut_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            (b"abcde".to_vec(), true)
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nd"), (b"abcd".to_vec(), false));
        assert_eq!(dechunk(b"3\r\nabc\r\n"), (b"abc".to_vec(), false));
    }

    #[test]
    fn finds_where_a_framed_response_ends() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1";
        assert_eq!(framed_len(cl), Some(cl.len() - 8));
        assert_eq!(framed_len(&cl[..cl.len() - 9]), None);
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nnext";
        assert_eq!(framed_len(ch), Some(ch.len() - 4));
        assert_eq!(framed_len(&ch[..ch.len() - 6]), None);
    }

    #[test]
    fn keep_alive_reads_one_response_at_a_time() {
        let emu = crate::emulator::Emulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            crate::emulator::Config {
                ttft: Duration::ZERO,
                token_interval: Duration::ZERO,
                ..Default::default()
            },
        )
        .expect("emulator");
        let mut conn = KeepAlive::connect(emu.addr(), Duration::from_secs(10)).expect("connect");
        for stream in [false, true, false] {
            let body = serde_json::json!({"model": "m", "stream": stream, "max_tokens": 2, "messages": []});
            let r = conn
                .post_json("/v1/chat/completions", &body, Duration::from_secs(10))
                .expect("response");
            assert_eq!((r.status, r.complete), (200, true));
        }
        assert_eq!((emu.stats().connections, emu.stats().requests), (1, 3));
    }

    #[test]
    fn parses_content_length_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok".to_vec();
        let r = parse_response(raw, Vec::new()).expect("valid response");
        assert_eq!(
            (r.status, r.body_text().as_str(), r.complete),
            (200, "ok", true)
        );
        assert_eq!(r.header("x-a"), Some("b"));
    }
}
