//! One plain-HTTP GET of a server's own endpoint, bounded in time and size. A server bound to
//! loopback inside another network namespace (a container's) is reached from a short-lived
//! thread that enters that namespace only to create and connect the socket: a socket stays in the
//! namespace it was made in, so the rest runs on the runtime as usual.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Largest answer read (Ollama's `/api/ps` with many models, a busy vLLM's `/metrics`).
pub const MAX_BODY: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("entering the server's network namespace {0}: {1}")]
    Netns(PathBuf, std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("answered {0}")]
    Status(u16),
    #[error("answer over {MAX_BODY} bytes or cut short: {0}")]
    Body(String),
    #[error("timed out")]
    Timeout,
}

impl FetchError {
    /// The `result` label of `llm_observer_inventory_polls_total`.
    pub fn result(&self) -> &'static str {
        match self {
            FetchError::Status(404 | 405 | 501) => "unavailable",
            FetchError::Status(_) | FetchError::Http(_) | FetchError::Body(_) => "http_error",
            FetchError::Connect(_)
            | FetchError::Netns(..)
            | FetchError::Timeout
            | FetchError::Request(_) => "unreachable",
        }
    }
}

/// `netns`: the server process's `/proc/<pid>/ns/net` when it differs from the agent's.
async fn connect(
    addr: SocketAddr,
    netns: Option<PathBuf>,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, FetchError> {
    let Some(ns) = netns else {
        return tokio::net::TcpStream::connect(addr)
            .await
            .map_err(FetchError::Connect);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own, never a pooled one: setns changes the calling thread for good.
    std::thread::Builder::new()
        .name("inventory-netns".into())
        .spawn(move || {
            let r = (|| {
                let f = std::fs::File::open(&ns).map_err(|e| FetchError::Netns(ns.clone(), e))?;
                // SAFETY: `f` is an open namespace file for the call's duration; setns only
                // changes this thread's network namespace.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(FetchError::Netns(
                        ns.clone(),
                        std::io::Error::last_os_error(),
                    ));
                }
                let s = std::net::TcpStream::connect_timeout(&addr, timeout)
                    .map_err(FetchError::Connect)?;
                s.set_nonblocking(true).map_err(FetchError::Connect)?;
                Ok(s)
            })();
            let _ = tx.send(r);
        })
        .map_err(FetchError::Connect)?;
    let s = rx
        .await
        .map_err(|_| FetchError::Connect(std::io::Error::other("netns thread ended")))??;
    tokio::net::TcpStream::from_std(s).map_err(FetchError::Connect)
}

/// GET `path` from `addr`; the body of a 200 answer.
pub async fn get(
    addr: SocketAddr,
    netns: Option<PathBuf>,
    path: &str,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let work = async {
        let tcp = connect(addr, netns, timeout).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(
                hyper::header::USER_AGENT,
                concat!("llm-observer/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY).collect().await;
        driver.abort();
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        body.map(|b| b.to_bytes())
            .map_err(|e| FetchError::Body(e.to_string()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| FetchError::Timeout)?
}
