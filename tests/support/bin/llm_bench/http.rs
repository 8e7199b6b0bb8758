//! The client side of one streamed exchange: a fixed OpenAI chat request, and a response reader
//! that knows where an HTTP/1.1 response ends (Content-Length or chunked framing) without keeping
//! the body.

use std::io;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A streamed OpenAI chat completion asking for `tokens` output tokens (one SSE chunk each).
pub fn chat_request(host: &str, tokens: u32) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"bench","stream":true,"max_tokens":{tokens},"messages":[{{"role":"user","content":"hello"}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Where the body's framing is, once the head is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    /// In a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left, including its trailing CRLF.
    ChunkData(u64),
    /// After the last (zero) chunk: trailer lines up to the empty one.
    Trailer,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Sends `request` and reads the whole response; returns its body bytes (framing excluded for
/// Content-Length, included for chunked). `buf` is reused between calls.
pub async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    stream.write_all(request).await?;
    buf.clear();
    // The head.
    let (mut state, mut pos) = loop {
        read_more(stream, buf).await?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                if resp.code != Some(200) {
                    return Err(bad("status is not 200"));
                }
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                let state = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    Body::ChunkSize
                } else if let Some(len) = header("content-length") {
                    Body::Length(len.parse().map_err(|_| bad("bad Content-Length"))?)
                } else {
                    return Err(bad("response without length or chunked framing"));
                };
                break (state, n);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(bad("unparsable response head")),
        }
    };
    let mut body_bytes = 0u64;
    loop {
        match state {
            Body::Length(left) => {
                let have = (buf.len() - pos) as u64;
                if have >= left {
                    return Ok(body_bytes + left);
                }
                body_bytes += have;
                state = Body::Length(left - have);
                buf.clear();
                pos = 0;
                read_more(stream, buf).await?;
            }
            Body::ChunkSize | Body::Trailer => match find_crlf(&buf[pos..]) {
                Some(end) => {
                    let line = &buf[pos..pos + end];
                    pos += end + 2;
                    body_bytes += end as u64 + 2;
                    if state == Body::Trailer {
                        if line.is_empty() {
                            return Ok(body_bytes);
                        }
                        continue;
                    }
                    let hex = line.split(|&b| b == b';').next().unwrap_or(line);
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        .ok_or_else(|| bad("bad chunk size"))?;
                    state = if size == 0 {
                        Body::Trailer
                    } else {
                        Body::ChunkData(size + 2)
                    };
                }
                None => {
                    buf.drain(..pos);
                    pos = 0;
                    read_more(stream, buf).await?;
                }
            },
            Body::ChunkData(left) => {
                let take = left.min((buf.len() - pos) as u64);
                pos += take as usize;
                body_bytes += take;
                if take == left {
                    state = Body::ChunkSize;
                } else {
                    state = Body::ChunkData(left - take);
                    buf.clear();
                    pos = 0;
                    read_more(stream, buf).await?;
                }
            }
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `response` once per request, written in pieces of `piece` bytes, and checks that
    /// the client finds each response's end (so two exchanges on one connection both complete).
    async fn roundtrip(response: &'static [u8], piece: usize) -> Vec<u64> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            let mut req = [0u8; 4096];
            for _ in 0..2 {
                let _ = s.read(&mut req).await.expect("read request");
                for part in response.chunks(piece) {
                    s.write_all(part).await.expect("write");
                    s.flush().await.expect("flush");
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        let req = chat_request("x", 2);
        let mut out = Vec::new();
        for _ in 0..2 {
            out.push(exchange(&mut c, &req, &mut buf).await.expect("exchange"));
        }
        server.await.expect("server");
        out
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n3;ext=1\r\nabc\r\n0\r\n\r\n";
    const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";

    #[tokio::test]
    async fn chunked_responses_end_at_the_last_chunk_however_split() {
        // "5\r\ndata:\r\n" + "3;ext=1\r\nabc\r\n" + "0\r\n" + "\r\n" = 10 + 14 + 3 + 2 bytes.
        for piece in [1, 2, 3, 7, CHUNKED.len()] {
            assert_eq!(
                roundtrip(CHUNKED, piece).await,
                vec![29, 29],
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn length_framed_responses_end_after_content_length() {
        for piece in [1, 5, LENGTH.len()] {
            assert_eq!(roundtrip(LENGTH, piece).await, vec![7, 7], "piece {piece}");
        }
    }

    #[tokio::test]
    async fn an_error_status_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req).await;
            let _ = s
                .write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let err = exchange(&mut c, &chat_request("x", 1), &mut Vec::new())
            .await
            .expect_err("500 is refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
