//! `llm-observer top`: a live terminal view of a running agent, read from its own `/metrics`
//! (so it needs no privileges and works against any agent it can reach). Every `--interval` it
//! scrapes, parses ([`exposition`]), computes rows and rates against the previous scrape
//! ([`model`]) and draws them ([`ui`]). Plain keys only, so it works over SSH.

pub mod exposition;
pub mod model;
pub mod ui;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::cli::TopArgs;

/// How long one scrape may take before it counts as failed (the agent answers in milliseconds).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to scrape, taken apart once.
struct Target {
    host: String,
    port: u16,
    path_and_query: String,
    authority: String,
    /// `Basic …` from the URL's `user:password@`, for an endpoint behind basic auth.
    authorization: Option<String>,
}

fn target(url: &str) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url {url:?}: only http:// is supported");
    }
    let auth = uri.authority().context("--url has no host")?;
    // hyper's Authority keeps `user:pass@` in its text; split it off for the header.
    let (userinfo, hostport) = match auth.as_str().rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, auth.as_str()),
    };
    let authorization = userinfo.map(|u| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(u)
        )
    });
    Ok(Target {
        host: auth.host().trim_matches(['[', ']']).to_owned(),
        port: auth.port_u16().unwrap_or(80),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/metrics".to_owned(), |p| p.as_str().to_owned()),
        authority: hostport.to_owned(),
        authorization,
    })
}

/// One GET of the exposition; any status but 200 is an error.
async fn fetch(t: &Target) -> anyhow::Result<String> {
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("connecting to {}:{}", t.host, t.port))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("top scrape connection: {e}");
        }
    });
    let mut req = hyper::Request::get(t.path_and_query.as_str()).header("host", &t.authority);
    if let Some(a) = &t.authorization {
        req = req.header("authorization", a);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        bail!("the endpoint answered {status}");
    }
    let body = resp.into_body().collect().await?.to_bytes();
    String::from_utf8(body.to_vec()).context("the exposition is not UTF-8")
}

/// Leaves the alternate screen and raw mode however `run` ends (return, error, panic unwinding;
/// ratatui's own panic hook covers a panic before the guard exists).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Set by SIGTERM, SIGHUP or SIGQUIT: `kill`, a closed SSH session or a terminal multiplexer
/// ending `top` must leave the terminal as it found it, so the signal only asks the loop to
/// return through [`Restore`].
static STOP: AtomicBool = AtomicBool::new(false);

/// The longest the loop waits for a key before it looks at [`STOP`] again.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn catch_stop_signals() -> anyhow::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic and an empty
        // mask is valid; sigaction reads it and the old action pointer may be null.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("installing a signal handler");
        }
    }
    Ok(())
}

/// The previous good scrape and when it was taken, for rates.
type Previous = Option<(Vec<exposition::Sample>, Instant)>;

fn scrape_once(rt: &tokio::runtime::Runtime, t: &Target, app: &mut ui::App, prev: &mut Previous) {
    let now = Instant::now();
    let result = rt
        .block_on(async { tokio::time::timeout(SCRAPE_TIMEOUT, fetch(t)).await })
        .map_err(|_| anyhow::anyhow!("timed out after {SCRAPE_TIMEOUT:?}"))
        .and_then(|r| r)
        .and_then(|text| Ok(exposition::parse(&text)?));
    match result {
        Ok(samples) => {
            let before = prev
                .as_ref()
                .map(|(p, at)| (p.as_slice(), now.duration_since(*at).as_secs_f64()));
            app.view = model::compute(&samples, before);
            ui::sort(app);
            app.status = format!(
                "ok: {} servers/models, {} agent processes",
                app.view.servers.len(),
                app.view.agents.len()
            );
            *prev = Some((samples, now));
        }
        // Keep the last rows on screen; the status line says why they are not fresh.
        Err(e) => app.status = format!("scrape failed: {e:#}"),
    }
}

/// Runs the view until `q`, Esc, Ctrl-C, or SIGTERM / SIGHUP / SIGQUIT.
pub fn run(args: &TopArgs) -> anyhow::Result<()> {
    let t = target(&args.url)?;
    let interval = args.interval;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    catch_stop_signals()?;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let _restore = Restore;
    let mut app = ui::App::new(args.url.clone());
    let mut prev: Previous = None;
    let mut next = Instant::now();
    loop {
        if STOP.load(Ordering::Relaxed) {
            return Ok(());
        }
        if Instant::now() >= next {
            scrape_once(&rt, &t, &mut app, &mut prev);
            // From now, not from the missed deadline: a slow scrape must not cause a burst.
            next = Instant::now() + interval;
        }
        terminal.draw(|f| ui::draw(f, &app))?;
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(SIGNAL_CHECK);
        // A signal during the wait interrupts it; that is not an error, the loop looks at STOP.
        match event::poll(wait) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        // Raw mode turns Ctrl-C into a key press rather than SIGINT, so it is handled here.
        let ev = match event::read() {
            Ok(ev) => ev,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if let Event::Key(k) = ev
            && k.kind == KeyEventKind::Press
        {
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(());
                }
                KeyCode::Char('s') => app.cycle_server_sort(),
                KeyCode::Char('a') => app.cycle_agent_sort(),
                KeyCode::Char('r') => app.reverse = !app.reverse,
                _ => continue,
            }
            ui::sort(&mut app);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_and_basic_auth() {
        let t = target("http://127.0.0.1:9202/metrics").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9202));
        assert_eq!(t.path_and_query, "/metrics");
        assert_eq!(t.authority, "127.0.0.1:9202");
        assert_eq!(t.authorization, None);
        let t = target("http://user:pw@[::1]/m?x=1").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(
            (t.path_and_query.as_str(), t.authority.as_str()),
            ("/m?x=1", "[::1]")
        );
        assert_eq!(t.authorization.as_deref(), Some("Basic dXNlcjpwdw=="));
        assert!(target("https://h/metrics").is_err());
        assert!(target("not a url").is_err());
    }
}
