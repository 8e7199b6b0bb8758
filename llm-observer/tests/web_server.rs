//! The `/metrics` endpoint over plain HTTP on a real socket: routes, `/healthz`, `/readyz`, gzip,
//! HEAD, 404/405/431/400, the I/O timeout and graceful shutdown.

mod web_support;

use std::{io::Read as _, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use web_support::*;

#[tokio::test]
async fn plain_http_routes_readiness_gzip() {
    let m = metrics();
    let (addr, ready, stop) = start(bind().await, m.clone());

    let r = get(addr, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.header("content-encoding"), None);
    let plain = r.text();
    assert!(
        plain.contains("llm_observer_build_info{attach_mode=\"test\""),
        "{plain}"
    );
    assert_eq!(plain, m.encode(), "the page is the registry's exposition");

    let z = get(addr, "GET", "/metrics", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    assert_eq!(z.header("vary"), Some("Accept-Encoding"));
    assert!(z.body.len() < plain.len());
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&z.body[..])
        .read_to_string(&mut unzipped)
        .expect("gunzip");
    assert_eq!(unzipped, plain);
    let no = get(addr, "GET", "/metrics", &[("Accept-Encoding", "gzip;q=0")]).await;
    assert_eq!(
        (no.header("content-encoding"), no.text()),
        (None, plain.clone())
    );

    let head = get(addr, "HEAD", "/metrics", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(plain.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    assert!(get(addr, "GET", "/", &[]).await.text().contains("/metrics"));
    assert_eq!(get(addr, "GET", "/metrics?x=1", &[]).await.status, 200);
    let h = get(addr, "GET", "/healthz", &[]).await;
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "GET", "/readyz", &[]).await.status, 503);
    ready.set(true);
    assert_eq!(get(addr, "GET", "/readyz", &[]).await.status, 200);
    ready.set(false);
    assert_eq!(get(addr, "GET", "/readyz", &[]).await.status, 503);

    assert_eq!(get(addr, "GET", "/nope", &[]).await.status, 404);
    let post = get(addr, "POST", "/metrics", &[("Content-Length", "0")]).await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(get(addr, "DELETE", "/healthz", &[]).await.status, 405);

    // A head over the limit is refused, and garbage gets a 400; the server keeps serving.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(llm_observer::sinks::http::MAX_HEAD_BYTES + 10)
    );
    let s = TcpStream::connect(addr).await.expect("connect");
    let r = exchange_on(s, &big).await;
    assert_eq!(r.status, 431);
    let s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        exchange_on(s, "\x16\x03\x01\x02\x00\r\n\r\n").await.status,
        400
    );
    drop(TcpStream::connect(addr).await.expect("connect"));
    assert_eq!(get(addr, "GET", "/healthz", &[]).await.status, 200);

    stop().await.expect("join").expect("clean shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_timeout_and_shutdown_waits_for_none() {
    let server = bind().await.with_io_timeout(Duration::from_millis(300));
    let (addr, _, stop) = start(server, metrics());
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    // The server closes a connection that never sends a head: read returns EOF (0) or a reset.
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("closed by the server within its timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // A keep-alive connection left open does not hold up shutdown past the timeout.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let n = kept.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::timeout(Duration::from_secs(10), stop())
        .await
        .expect("shutdown within the timeout")
        .expect("join")
        .expect("ok");
}
