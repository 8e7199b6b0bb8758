//! A deliberately tiny HTTP/1.x server for `/metrics`: one request per connection, bounded head,
//! timeouts, bounded concurrency. It answers Prometheus and curl; anything else gets a short error.
//! No HTTP library: the agent must stay small, and the surface here is a dozen lines of parsing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::Metrics;

/// Largest request head read; a scrape request is ~200 bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Slow or idle clients are cut off after this long (read of the head, write of the response).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed immediately, so a flood cannot pile up tasks.
const MAX_CONNECTIONS: usize = 32;

pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

const INDEX_HTML: &str = "<html><head><title>llm-observer</title></head><body>\
<h1>llm-observer</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n";

/// A bound listener; [`MetricsServer::local_addr`] tells the port when bound to port 0.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes. Connections already accepted finish on their own (each
    /// is bounded by [`IO_TIMEOUT`]).
    pub async fn run<F: Future>(self, metrics: Arc<Metrics>, shutdown: F) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            continue; // dropping the stream closes it
                        };
                        let metrics = metrics.clone();
                        tokio::spawn(async move {
                            handle(stream, &metrics).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning on a failing accept.
                        log::warn!("metrics endpoint: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// Binds `addr`, logs "serving /metrics on ADDR", and serves until `shutdown` completes.
pub async fn serve<F: Future>(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: F,
) -> io::Result<()> {
    let server = MetricsServer::bind(addr).await?;
    log::info!("serving /metrics on {}", server.local_addr());
    server.run(metrics, shutdown).await
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) {
    let head = match timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => Ok(head),
        Ok(Ok(None)) => return, // closed without sending anything
        Ok(Err(HeadError::TooLarge)) => Err(431),
        Ok(Err(HeadError::Io)) | Err(_) => return,
    };
    let response = match head {
        Ok(head) => respond(&head, metrics),
        Err(code) => error_response(code),
    };
    let _ = timeout(IO_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

enum HeadError {
    TooLarge,
    Io,
}

/// Reads until the blank line that ends the head. `None` when the peer closed before sending any
/// byte; a close mid-head returns what arrived (it will not parse, and gets a 400).
async fn read_head(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The full response for a request head (pure: tested without sockets).
fn respond(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let Some((method, path)) = parse_request_line(head) else {
        return error_response(400);
    };
    let (content_type, body) = match path {
        "/metrics" => (CONTENT_TYPE_METRICS, metrics.encode()),
        "/" => ("text/html; charset=utf-8", INDEX_HTML.to_string()),
        _ => return error_response(404),
    };
    match method {
        "GET" => response(200, content_type, &body, true),
        // HEAD: the same headers (Content-Length included), no body.
        "HEAD" => response(200, content_type, &body, false),
        _ => error_response(405),
    }
}

/// Method and path (query string removed) of an HTTP/1.x request line.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

fn error_response(code: u16) -> Vec<u8> {
    let body = format!("{} {}\n", code, reason(code));
    response(code, "text/plain; charset=utf-8", &body, true)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn response(code: u16, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::MetricsConfig;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(MetricsConfig::default(), "test").unwrap())
    }

    fn status_of(resp: &[u8]) -> String {
        let text = String::from_utf8_lossy(resp);
        text.lines().next().unwrap_or("").to_string()
    }

    #[test]
    fn routes() {
        let m = metrics();
        let ok = respond(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", &m);
        assert_eq!(status_of(&ok), "HTTP/1.1 200 OK");
        let text = String::from_utf8(ok).unwrap();
        assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(text.contains("llm_observer_build_info"));
        let head = respond(b"HEAD /metrics HTTP/1.0\r\n\r\n", &m);
        assert!(String::from_utf8(head).unwrap().ends_with("\r\n\r\n"));
        assert_eq!(
            status_of(&respond(b"GET / HTTP/1.1\r\n\r\n", &m)),
            "HTTP/1.1 200 OK"
        );
        let nf = respond(b"GET /nope HTTP/1.1\r\n\r\n", &m);
        assert_eq!(status_of(&nf), "HTTP/1.1 404 Not Found");
        let post = respond(b"POST /metrics HTTP/1.1\r\n\r\n", &m);
        assert_eq!(status_of(&post), "HTTP/1.1 405 Method Not Allowed");
        for garbage in [
            &b"\x00\xff\xfe\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"",
        ] {
            assert_eq!(status_of(&respond(garbage, &m)), "HTTP/1.1 400 Bad Request");
        }
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer (431) and close before it reads everything we send.
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_over_tcp_and_shuts_down() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(metrics(), stopped));

        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("llm_observer_build_info{attach_mode=\"test\""),
            "{ok}"
        );

        let big = vec![b'a'; MAX_HEAD_BYTES + 10];
        let too_large = exchange(addr, &big).await;
        assert!(
            too_large.is_empty() || too_large.starts_with("HTTP/1.1 431 "),
            "{too_large}"
        );

        let bad = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n").await;
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");

        // Peer that closes without a request: no response, server keeps going.
        drop(TcpStream::connect(addr).await.unwrap());
        let again = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(again.contains("/metrics"), "{again}");

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
