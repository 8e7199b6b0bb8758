//! The agent's HTTP endpoint on hyper (HTTP/1.1), optionally behind TLS (rustls) and basic auth
//! configured by `--web.config.file` ([`super::web_config`]).
//!
//! Routes: `/metrics` (text format 0.0.4, gzip when the scrape accepts it), `/` (index),
//! `/healthz` (200 while the process serves), `/readyz` (200 once [`Readiness`] is set: capture
//! attached and the ring reader running; 503 before). Other paths 404, methods other than GET/HEAD
//! 405. The health routes need no basic auth (probes carry no credentials and the routes reveal
//! nothing); over TLS they are served over TLS like everything else.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (more are closed at accept), request heads of
//! at most [`MAX_HEAD_BYTES`], the TLS handshake and each request head within the I/O timeout, and a
//! connection lifetime of [`MAX_CONNECTION_AGE`] (keep-alive scrapers reconnect).

use std::{
    convert::Infallible,
    future::Future,
    io::{self, Write as _},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;

use super::{
    Metrics,
    auth::BasicAuth,
    tls,
    web_config::{WebConfig, WebConfigError},
};

/// Largest request head accepted (hyper's minimum buffer); a scrape request is ~200 bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Default deadline for a TLS handshake and for each request head.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed immediately, so a flood cannot pile up tasks.
pub const MAX_CONNECTIONS: usize = 32;
/// A keep-alive connection is closed (gracefully) after this long, so no client holds a slot
/// forever, however slowly it reads.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);

/// Refused connections and requests are logged at most this often, with their count.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

const INDEX_HTML: &str = "<html><head><title>llm-observer</title></head><body>\
<h1>llm-observer</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n";

/// Whether the agent is ready (capture attached, ring reader running): `/readyz` answers 200.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Connections and requests refused (over capacity, failed TLS handshake, wrong credentials): one
/// warning per [`REFUSAL_LOG_INTERVAL`] at most, so a scraper with a wrong password or a flood
/// cannot fill the log, and an operator still learns why scrapes fail. Never logs credentials.
#[derive(Debug, Default)]
struct Refusals {
    /// Refusals since the last line, and when that line was written.
    state: Mutex<(u64, Option<Instant>)>,
}

impl Refusals {
    /// Counts one refusal; logs it (with the count) when a line is due, and says whether it did.
    fn note(&self, peer: SocketAddr, why: &dyn std::fmt::Display, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.0 += 1;
        let due =
            s.1.is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_LOG_INTERVAL);
        if due {
            log::warn!(
                "metrics endpoint: {} refused since the last report; latest from {peer}: {why}",
                s.0
            );
            *s = (0, Some(now));
        }
        due
    }
}

/// TLS, authentication and extra headers from a web config.
#[derive(Default)]
struct Security {
    tls: Option<TlsAcceptor>,
    auth: Option<BasicAuth>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Security {
    fn from_config(cfg: &WebConfig) -> Result<Security, WebConfigError> {
        let tls = match &cfg.tls {
            Some(t) => Some(TlsAcceptor::from(tls::server_config(t)?)),
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in &cfg.headers {
            let parsed = HeaderName::try_from(name.as_str())
                .ok()
                .zip(HeaderValue::try_from(value.as_str()).ok());
            let Some(h) = parsed else {
                return Err(WebConfigError::Invalid(format!(
                    "http_server_config.headers.{name}: not a valid HTTP header"
                )));
            };
            headers.push(h);
        }
        Ok(Security {
            tls,
            auth: BasicAuth::new(cfg.basic_auth_users.clone()),
            headers,
        })
    }
}

/// A bound listener; [`MetricsServer::local_addr`] tells the port when bound to port 0.
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    security: Security,
    ready: Readiness,
    io_timeout: Duration,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .field("tls", &self.is_tls())
            .field("basic_auth", &self.security.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Binds `addr`; plain HTTP, no authentication, not ready until [`Readiness::set`].
    pub async fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer {
            listener,
            addr,
            security: Security::default(),
            ready: Readiness::default(),
            io_timeout: IO_TIMEOUT,
        })
    }

    /// Applies a web config: reads its certificates and keys now, so a bad file fails startup.
    pub fn with_web_config(mut self, cfg: &WebConfig) -> Result<MetricsServer, WebConfigError> {
        self.security = Security::from_config(cfg)?;
        Ok(self)
    }

    /// Deadline for the TLS handshake and each request head (default 10 s).
    pub fn with_io_timeout(mut self, timeout: Duration) -> MetricsServer {
        self.io_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_tls(&self) -> bool {
        self.security.tls.is_some()
    }

    /// The flag behind `/readyz`; the caller sets it once capture runs.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Serves until `shutdown` completes, then closes idle connections, lets in-flight responses
    /// finish, and returns once every connection is gone (or after the I/O timeout).
    pub async fn run<F: Future>(self, metrics: Arc<Metrics>, shutdown: F) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (stop_tx, stop_rx) = watch::channel(false);
        let io_timeout = self.io_timeout;
        let app = Arc::new(App {
            metrics,
            security: self.security,
            ready: self.ready,
            refusals: Refusals::default(),
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            let why = format!("over {MAX_CONNECTIONS} connections; closed");
                            app.refusals.note(peer, &why, Instant::now());
                            continue; // dropping the stream closes it
                        };
                        let app = app.clone();
                        let stop = stop_rx.clone();
                        tokio::spawn(async move {
                            connection(stream, peer, app, stop, io_timeout).await;
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
        drop(self.listener);
        let _ = stop_tx.send(true);
        let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(io_timeout, slots.acquire_many(all)).await;
        Ok(())
    }
}

/// Binds `addr`, logs "serving /metrics on ADDR", and serves until `shutdown` completes (plain
/// HTTP, ready at once).
pub async fn serve<F: Future>(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: F,
) -> io::Result<()> {
    let server = MetricsServer::bind(addr).await?;
    log::info!("serving /metrics on {}", server.local_addr());
    server.readiness().set(true);
    server.run(metrics, shutdown).await
}

struct App {
    metrics: Arc<Metrics>,
    security: Security,
    ready: Readiness,
    refusals: Refusals,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    t: Duration,
) {
    let _ = stream.set_nodelay(true);
    match &app.security.tls {
        None => serve_http(stream, peer, app, stop, t).await,
        Some(acceptor) => {
            // A failed or slow handshake (wrong CA, no client cert, plain HTTP) closes.
            match tokio::time::timeout(t, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, peer, app, stop, t).await,
                Ok(Err(e)) => {
                    let why = format!("TLS handshake failed: {e}");
                    app.refusals.note(peer, &why, Instant::now());
                }
                Err(_) => {
                    let why = format!("no TLS handshake within {t:?}");
                    app.refusals.note(peer, &why, Instant::now());
                }
            }
        }
    }
}

async fn serve_http<S>(
    io: S,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    t: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(t)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(respond(&app, &req, peer).await) }
            }),
        );
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
    }
    // Finish the response in flight (if any), then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(t, conn).await;
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn status_text(status: StatusCode) -> Response<Full<Bytes>> {
    text(
        status,
        &format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    )
}

async fn respond(app: &App, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let mut resp = route(app, req, peer).await;
    for (name, value) in &app.security.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

async fn route(app: &App, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let health = matches!(path, "/healthz" | "/readyz");
    if !health && let Some(auth) = &app.security.auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !auth.check(given).await {
            let why = if given.is_some() {
                "401: wrong basic auth credentials"
            } else {
                "401: no basic auth credentials"
            };
            app.refusals.note(peer, &why, Instant::now());
            let mut r = status_text(StatusCode::UNAUTHORIZED);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            return r;
        }
    }
    if !matches!(path, "/metrics" | "/" | "/healthz" | "/readyz") {
        return status_text(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status_text(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => metrics_response(&app.metrics, req.headers()),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if app.ready.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: capture is not running yet\n",
        ),
        _ => {
            let mut r = text(StatusCode::OK, INDEX_HTML);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
    }
}

fn metrics_response(metrics: &Metrics, req: &HeaderMap) -> Response<Full<Bytes>> {
    let body = metrics.encode();
    let gzip = accepts_gzip(req);
    let bytes = if gzip {
        gzip_bytes(body.as_bytes())
    } else {
        None
    };
    let mut r = match bytes {
        Some(b) => {
            let mut r = Response::new(Full::new(Bytes::from(b)));
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => Response::new(Full::new(Bytes::from(body))),
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_METRICS),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    r
}

fn gzip_bytes(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, without `q=0`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn reads_accept_encoding() {
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("gzip; q=0.0, br")));
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn refusals_are_logged_once_per_interval() {
        let r = Refusals::default();
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let t0 = Instant::now();
        assert!(r.note(peer, &"x", t0), "the first one is logged");
        assert!(!r.note(peer, &"x", t0 + Duration::from_secs(1)));
        assert!(!r.note(peer, &"x", t0 + Duration::from_secs(59)));
        assert_eq!(r.state.lock().unwrap().0, 2);
        assert!(r.note(peer, &"x", t0 + REFUSAL_LOG_INTERVAL));
        assert_eq!(
            r.state.lock().unwrap().0,
            0,
            "the count restarts after a line"
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let text = "a 1\n".repeat(1000);
        let z = gzip_bytes(text.as_bytes()).expect("gzip");
        assert!(z.len() < text.len() / 10);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut out)
            .expect("gunzip");
        assert_eq!(out, text);
    }
}
