//! A small HTTP/1.1 client (hyper's own connection API) for the metadata sources: the Docker
//! Engine API on a unix socket and the Kubernetes API over TCP. One connection per request: the
//! sources ask rarely (a listing at start, a lookup per new container, one long watch).

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where a source listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `http://host:port`, or `https://` when `tls` is set.
    Tcp {
        host: String,
        port: u16,
        tls: Option<Tls>,
    },
}

/// A TLS client configuration and the name the server's certificate must carry.
#[derive(Clone)]
pub struct Tls {
    pub config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.server_name)
    }
}

impl Tls {
    /// Trusts the PEM certificates in `ca_file` (a service account's `ca.crt`) for `host`.
    pub fn from_ca_file(ca_file: &std::path::Path, host: &str) -> Result<Tls, String> {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", ca_file.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host}: {e}"))?;
        Ok(Tls {
            config: std::sync::Arc::new(config),
            server_name,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body: {0}")]
    Body(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out")]
    Timeout,
}

impl HttpError {
    /// The source refused us (authentication or authorization).
    pub fn is_denied(&self) -> bool {
        matches!(self, HttpError::Status(401 | 403))
    }
}

async fn over<IO>(
    io: IO,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("metadata source connection: {e}");
        }
    });
    Ok(sender.send_request(req).await?)
}

/// Sends `GET path` with `headers`; the response's status must be 2xx.
pub async fn get(
    ep: &Endpoint,
    path: &str,
    headers: &[(&str, String)],
) -> Result<hyper::Response<Incoming>, HttpError> {
    let host = match ep {
        Endpoint::Unix(_) => "localhost".to_owned(),
        Endpoint::Tcp { host, port, .. } => format!("{host}:{port}"),
    };
    let mut req = hyper::Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req.body(Empty::new())?;
    let resp = match ep {
        Endpoint::Unix(p) => over(tokio::net::UnixStream::connect(p).await?, req).await?,
        Endpoint::Tcp { host, port, tls } => {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            match tls {
                None => over(tcp, req).await?,
                Some(t) => {
                    let conn = tokio_rustls::TlsConnector::from(t.config.clone());
                    over(conn.connect(t.server_name.clone(), tcp).await?, req).await?
                }
            }
        }
    };
    if !resp.status().is_success() {
        return Err(HttpError::Status(resp.status().as_u16()));
    }
    Ok(resp)
}

/// `GET path` → JSON, with the body capped at `limit` bytes and the whole exchange at `timeout`.
pub async fn get_json<T: DeserializeOwned>(
    ep: &Endpoint,
    path: &str,
    headers: &[(&str, String)],
    limit: usize,
    timeout: Duration,
) -> Result<T, HttpError> {
    let work = async {
        let resp = get(ep, path, headers).await?;
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| HttpError::Body(e.to_string()))?
            .to_bytes();
        Ok(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout)?
}

/// Newline-delimited records of a streaming body (a Kubernetes watch), each at most `limit` bytes.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    limit: usize,
}

impl Lines {
    pub fn new(resp: hyper::Response<Incoming>, limit: usize) -> Lines {
        Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            limit,
        }
    }

    /// The next line (without its newline); `Ok(None)` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                return Ok(Some(line));
            }
            if self.buf.len() > self.limit {
                return Err(HttpError::Body(format!(
                    "a record longer than {} bytes",
                    self.limit
                )));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
