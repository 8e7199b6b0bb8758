//! Loopback LLM servers for end-to-end tests: one HTTP/1.1 server (hyper) that speaks Ollama's
//! native API, the OpenAI API and the Anthropic Messages API on the same port, as Ollama itself does,
//! with deterministic token counts ([`plan`]) and timing, and errors chosen by model name
//! ([`scenario`]).
//!
//! Routes: `GET|HEAD /`, `GET /api/version`, `GET /api/tags`, `POST /api/generate`, `POST /api/chat`,
//! `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `POST /v1/messages`,
//! `POST /completion` (llama.cpp native, non-streamed: what the [`runner`] of runner mode answers).

mod anthropic;
mod conn_io;
pub mod demo;
pub mod inventory;
mod ollama;
mod openai;
pub mod plan;
pub mod runner;
pub mod scenario;
mod stream;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use ollama::{PS_CONTEXT_LENGTH, PS_EXPIRES_UNIX, PS_SIZE, PS_SIZE_VRAM};
pub use plan::{Api, Plan};
pub use scenario::Scenario;
pub use stream::{Died, EmuBody};

/// Timing and defaults of an emulator. Everything a test needs to predict is here or in the request.
#[derive(Clone, Debug)]
pub struct Config {
    /// Request read → first output token.
    pub ttft: Duration,
    /// Between consecutive output tokens.
    pub token_interval: Duration,
    /// Output tokens when the request does not ask for a count.
    pub default_output_tokens: u32,
    /// Reported (not slept) as Ollama's `load_duration`.
    pub load_duration: Duration,
    /// One stderr line per finished request.
    pub log: bool,
    /// TCP_NODELAY on accepted sockets, as real streaming servers set (Go's net/http, uvicorn):
    /// without it Nagle holds each small SSE chunk until the client's delayed ACK.
    pub nodelay: bool,
    /// Runner mode ([`runner`]): chat and completion requests are first handed to the runner
    /// process at this loopback address, as Ollama's serve does.
    pub runner: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ttft: Duration::from_millis(150),
            token_interval: Duration::from_millis(10),
            default_output_tokens: 20,
            load_duration: Duration::from_millis(5),
            log: false,
            nodelay: false,
            runner: None,
        }
    }
}

/// What an emulator has done so far, for tests that compare it with what an observer reports.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    complete: AtomicU64,
    http_errors: AtomicU64,
    error_events: AtomicU64,
    died: AtomicU64,
    client_gone: AtomicU64,
    output_tokens: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// TCP connections accepted.
    pub connections: u64,
    pub requests: u64,
    pub complete: u64,
    pub http_errors: u64,
    pub error_events: u64,
    pub died: u64,
    pub client_gone: u64,
    /// Output tokens actually written (streams) or answered (complete bodies).
    pub output_tokens: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: get(&self.connections),
            requests: get(&self.requests),
            complete: get(&self.complete),
            http_errors: get(&self.http_errors),
            error_events: get(&self.error_events),
            died: get(&self.died),
            client_gone: get(&self.client_gone),
            output_tokens: get(&self.output_tokens),
        }
    }

    fn add_tokens(&self, n: u64) {
        self.output_tokens.fetch_add(n, Ordering::Relaxed);
    }

    fn record(&self, outcome: stream::Outcome) {
        let counter = match outcome {
            stream::Outcome::Complete => &self.complete,
            stream::Outcome::ErrorEvent => &self.error_events,
            stream::Outcome::Died | stream::Outcome::Reset => &self.died,
            stream::Outcome::ClientGone => &self.client_gone,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Shared by every connection of one emulator.
struct Ctx {
    config: Config,
    stats: Arc<Stats>,
    next_id: AtomicU64,
    /// Models asked for so far: what `/api/ps` lists as loaded.
    loaded: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// An emulator running on its own thread and runtime, so synchronous tests can use it; it stops
/// when dropped.
pub struct Emulator {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    /// Binds `listen` (use port 0 for a free port) and serves until dropped.
    pub fn start(listen: SocketAddr, config: Config) -> anyhow::Result<Emulator> {
        let listener =
            std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        listener
            .set_nonblocking(true)
            .context("making the listener non-blocking")?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building the emulator's runtime")?;
        let stats = Arc::new(Stats::default());
        let (shutdown, stop) = oneshot::channel();
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("llm-emulator".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            serve(listener, config, thread_stats, async {
                                let _ = stop.await;
                            })
                            .await
                        }
                        Err(e) => eprintln!("llm-emulator: cannot register the listener: {e}"),
                    }
                });
                // Dropping the runtime here cancels the connections still open.
            })
            .context("spawning the emulator thread")?;
        Ok(Emulator {
            addr,
            stats,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes; each connection is served by
/// hyper's HTTP/1.1 server with keep-alive.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) {
    let ctx = Arc::new(Ctx {
        config,
        stats,
        next_id: AtomicU64::new(1),
        loaded: Default::default(),
    });
    tokio::pin!(shutdown);
    loop {
        let (socket, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Transient (EMFILE under a big concurrency test, a reset before accept): go on
                    // after a pause, so a persistent error does not spin.
                    eprintln!("llm-emulator: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        if ctx.config.nodelay {
            let _ = socket.set_nodelay(true);
        }
        let conn = ctx.stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let ctx = Arc::clone(&ctx);
        let io = conn_io::ConnIo::new(socket);
        let reset = io.reset_flag();
        tokio::spawn(async move {
            let service =
                service_fn(move |req| handle(req, Arc::clone(&ctx), conn, Arc::clone(&reset)));
            // Errors here are clients going away and the die-mid-stream scenario: both expected.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }
}

/// Request bodies above this are refused; prompts in tests are tiny.
const MAX_REQUEST_BYTES: usize = 16 << 20;

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    conn: u64,
    reset: Arc<AtomicBool>,
) -> Result<Response<EmuBody>, Died> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => {
            return Ok(text(StatusCode::OK, "Ollama is running"));
        }
        (&Method::GET, "/api/version") => {
            return Ok(json(StatusCode::OK, r#"{"version":"0.5.1"}"#.to_owned()));
        }
        (&Method::GET, "/api/tags") => return Ok(json(StatusCode::OK, ollama::tags())),
        (&Method::GET, "/v1/models") => return Ok(json(StatusCode::OK, openai::models())),
        (&Method::GET, "/api/ps") => {
            let loaded = ctx.loaded.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Ok(json(StatusCode::OK, ollama::ps(&loaded)));
        }
        // llama-server's own inventory and metrics endpoints, answered with real captures.
        (&Method::GET, "/props") => return Ok(json(StatusCode::OK, inventory::PROPS.body())),
        (&Method::GET, "/slots") => return Ok(json(StatusCode::OK, inventory::SLOTS.body())),
        (&Method::GET, "/metrics") => {
            return Ok(response(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                EmuBody::full(inventory::METRICS.body()),
            ));
        }
        (&Method::POST, "/api/generate") => Route::OllamaGenerate,
        (&Method::POST, "/api/chat") => Route::OllamaChat,
        (&Method::POST, "/v1/chat/completions") => Route::OpenAiChat,
        (&Method::POST, "/v1/completions") => Route::OpenAiCompletions,
        (&Method::POST, "/v1/messages") => Route::AnthropicMessages,
        (&Method::POST, "/completion") => Route::LlamacppCompletion,
        // OpenAI's Batch API: documented object shapes, nothing run.
        (&Method::POST, "/v1/batches") => {
            return Ok(json(StatusCode::OK, openai::batch("validating")));
        }
        (&Method::GET, "/v1/batches") => return Ok(json(StatusCode::OK, openai::batch_list())),
        (&Method::POST, p) if p.starts_with("/v1/batches/") && p.ends_with("/cancel") => {
            return Ok(json(StatusCode::OK, openai::batch("cancelling")));
        }
        (&Method::GET, p) if p.starts_with("/v1/batches/") => {
            return Ok(json(StatusCode::OK, openai::batch("in_progress")));
        }
        // Go's net/http text, as Ollama answers.
        _ => return Ok(text(StatusCode::NOT_FOUND, "404 page not found")),
    };
    let api = route.api();
    let bytes = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        // The client vanished or sent too much: nothing sensible to answer.
        Err(_) => return Err(Died),
    };
    let start = tokio::time::Instant::now();
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Ok(error_response(
                api,
                400,
                "request body is not a JSON object",
            ));
        }
    };
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        let mut loaded = ctx.loaded.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded like a real server's memory: a flood of names does not grow it.
        if loaded.len() < 64 {
            loaded.insert(m.to_owned());
        }
    }
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut plan = Plan::new(id, api, &body, &ctx.config, start);
    plan.conn = conn;
    plan.reset_on_close = reset;
    if let Scenario::HttpError(status) = plan.scenario {
        ctx.stats.http_errors.fetch_add(1, Ordering::Relaxed);
        log_line(&ctx, &plan, &format!("http_error={status}"));
        return Ok(error_response(
            api,
            status,
            "emulated error selected by the model name",
        ));
    }
    if let (
        Some(runner),
        Route::OpenAiChat | Route::OpenAiCompletions | Route::OllamaChat | Route::OllamaGenerate,
    ) = (ctx.config.runner, route)
        && let Err(e) = runner::generate(runner, &body, &plan).await
    {
        eprintln!("llm-emulator: runner: {e:#}");
        return Ok(error_response(api, 500, "the runner failed"));
    }
    match route {
        Route::LlamacppCompletion => {
            let reply = runner::completion_reply(&body, &plan);
            respond_complete(&plan, &ctx, reply).await
        }
        Route::OllamaGenerate | Route::OllamaChat => {
            let chat = route == Route::OllamaChat;
            if let Some(reason) = plan::ollama_load_reason(&body, chat) {
                ctx.stats.complete.fetch_add(1, Ordering::Relaxed);
                log_line(&ctx, &plan, reason);
                return Ok(json(
                    StatusCode::OK,
                    ollama::load_reply(&plan, chat, reason),
                ));
            }
            ollama::respond(plan, chat, &ctx).await
        }
        Route::OpenAiChat => openai::respond(plan, true, &ctx).await,
        Route::OpenAiCompletions => openai::respond(plan, false, &ctx).await,
        Route::AnthropicMessages => anthropic::respond(plan, &ctx).await,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    OllamaGenerate,
    OllamaChat,
    OpenAiChat,
    OpenAiCompletions,
    AnthropicMessages,
    /// llama.cpp's native `/completion`, as the runner of [`runner`] answers it.
    LlamacppCompletion,
}

impl Route {
    fn api(self) -> Api {
        match self {
            Route::OllamaGenerate | Route::OllamaChat => Api::Ollama,
            // Errors in the OpenAI shape, as llama-server writes them.
            Route::OpenAiChat | Route::OpenAiCompletions | Route::LlamacppCompletion => Api::OpenAi,
            Route::AnthropicMessages => Api::Anthropic,
        }
    }
}

/// The non-streamed path shared by the APIs: wait until generation would have ended, then answer
/// `body`, or apply the interruption scenarios (see [`scenario`]).
async fn respond_complete(plan: &Plan, ctx: &Ctx, body: String) -> Result<Response<EmuBody>, Died> {
    tokio::time::sleep_until(plan.done_due()).await;
    match plan.scenario {
        Scenario::DieAfter(_) | Scenario::ResetAfter(_) => {
            ctx.stats.died.fetch_add(1, Ordering::Relaxed);
            let reset = plan.scenario.resets();
            plan.reset_on_close.store(reset, Ordering::Relaxed);
            log_line(ctx, plan, if reset { "reset" } else { "died" });
            // Failing the service makes hyper close the connection without writing a response.
            Err(Died)
        }
        Scenario::ErrorAfter(_) => {
            ctx.stats.http_errors.fetch_add(1, Ordering::Relaxed);
            log_line(ctx, plan, "http_error=500");
            Ok(error_response(
                plan.api,
                500,
                "emulated failure during generation",
            ))
        }
        _ => {
            ctx.stats.complete.fetch_add(1, Ordering::Relaxed);
            ctx.stats.add_tokens(u64::from(plan.output_tokens));
            log_line(ctx, plan, "complete");
            Ok(json(StatusCode::OK, body))
        }
    }
}

fn log_line(ctx: &Ctx, plan: &Plan, outcome: &str) {
    if ctx.config.log {
        log_request(plan, outcome);
    }
}

/// One stderr line per finished request, so a failing e2e test shows what the server did.
fn log_request(plan: &Plan, outcome: &str) {
    eprintln!(
        "llm-emulator: request {} conn={} api={} model={:?} stream={} prompt_tokens={} output_tokens={} outcome={outcome}",
        plan.id,
        plan.conn,
        plan.api.as_str(),
        plan.model,
        plan.stream,
        plan.prompt_tokens,
        plan.output_tokens
    );
}

/// The API's error body for `status`.
pub fn error_response(api: Api, status: u16, message: &str) -> Response<EmuBody> {
    let body = match api {
        Api::Ollama => ollama::error_body(message),
        Api::OpenAi => openai::error_body(status, message),
        Api::Anthropic => anthropic::error_body(status, message),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, body)
}

fn response(status: StatusCode, content_type: &'static str, body: EmuBody) -> Response<EmuBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, body: String) -> Response<EmuBody> {
    response(
        status,
        "application/json; charset=utf-8",
        EmuBody::full(body),
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<EmuBody> {
    response(
        status,
        "text/plain; charset=utf-8",
        EmuBody::Full(Some(Bytes::from_static(body.as_bytes()))),
    )
}

/// A JSON string literal (quoted, escaped); the emulators write JSON by hand to keep real servers'
/// field order, which serde_json's default map would sort.
pub fn js(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now as RFC 3339 UTC with nanoseconds, as Ollama's `created_at`.
fn rfc3339_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since)
}

fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day); H. Hinnant's `civil_from_days`, for days ≥ 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(
            rfc3339(Duration::new(0, 5)),
            "1970-01-01T00:00:00.000000005Z"
        );
        assert_eq!(
            rfc3339(Duration::new(1_700_000_000, 0)),
            "2023-11-14T22:13:20.000000000Z"
        );
        assert_eq!(
            rfc3339(Duration::new(951_782_400, 0)),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
