//! Response bodies and the paced streaming driver shared by every API.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use super::Stats;
use super::plan::{Plan, token_text};

/// The error a body yields to make hyper abandon the response and close the connection: this is
/// how the `die-mid-stream` scenario closes the TCP connection from the server process.
#[derive(Debug)]
pub struct Died;

impl fmt::Display for Died {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("emulated server death mid-response")
    }
}

impl std::error::Error for Died {}

/// A response body: either complete, or fed frame by frame by a pacing task.
pub enum EmuBody {
    Full(Option<Bytes>),
    /// Frames from the pacing task; a `Died` waiting for its turn (see `poll_frame`).
    Channel(mpsc::Receiver<Result<Bytes, Died>>, Option<Died>),
}

impl EmuBody {
    pub fn full(bytes: impl Into<Bytes>) -> EmuBody {
        EmuBody::Full(Some(bytes.into()))
    }
}

impl Body for EmuBody {
    type Data = Bytes;
    type Error = Died;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Died>>> {
        match self.get_mut() {
            EmuBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            EmuBody::Channel(rx, deferred) => {
                if let Some(died) = deferred.take() {
                    return Poll::Ready(Some(Err(died)));
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(Err(died))) => {
                        // hyper abandons its unflushed buffer when a body fails, so the tokens sent
                        // just before would be lost. Answer Pending once first: hyper flushes what
                        // it has buffered, polls again (the wake below) and only then sees the error.
                        *deferred = Some(died);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    other => other.map(|item| item.map(|r| r.map(Frame::data))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, EmuBody::Full(None))
    }

    // An exact size hint lets hyper send Content-Length for complete bodies; streams stay chunked.
    fn size_hint(&self) -> SizeHint {
        match self {
            EmuBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            EmuBody::Full(None) => SizeHint::with_exact(0),
            EmuBody::Channel(..) => SizeHint::default(),
        }
    }
}

/// The wire framing of one API's streamed answer. Each method returns whole events, already framed
/// (an SSE event with its blank line, an NDJSON line with its newline).
pub trait StreamFormat: Send + 'static {
    /// Events sent as soon as the response starts, before the first token is due.
    fn preamble(&mut self, plan: &Plan) -> Vec<String>;
    /// The event carrying output token `index`.
    fn token(&mut self, plan: &Plan, index: u32, text: &str) -> String;
    /// The events after the last token (finish, usage, terminator).
    fn finish(&mut self, plan: &Plan) -> Vec<String>;
    /// The API's in-stream error event, sent instead of the remaining tokens.
    fn error_event(&mut self, plan: &Plan) -> String;
}

/// How a streamed answer ended, for the emulator's own accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    ErrorEvent,
    Died,
    /// Like `Died`, with a TCP reset.
    Reset,
    ClientGone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ErrorEvent => "error_event",
            Outcome::Died => "died",
            Outcome::Reset => "reset",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Frames buffered between the pacing task and hyper. Small, so that a token is written when it is
/// due rather than queued far ahead, and a vanished client is noticed within a few tokens.
const CHANNEL_FRAMES: usize = 2;

/// Starts the paced stream of `plan` in `format`; returns the body to hand to hyper.
pub fn spawn_stream(
    plan: Plan,
    mut format: impl StreamFormat,
    stats: Arc<Stats>,
    log: bool,
) -> EmuBody {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    tokio::spawn(async move {
        let outcome = drive(&plan, &mut format, &tx, &stats).await;
        stats.record(outcome);
        if log {
            super::log_request(&plan, outcome.as_str());
        }
    });
    EmuBody::Channel(rx, None)
}

async fn drive(
    plan: &Plan,
    format: &mut impl StreamFormat,
    tx: &mpsc::Sender<Result<Bytes, Died>>,
    stats: &Stats,
) -> Outcome {
    // A send fails only when hyper dropped the body: the client went away.
    let send = |event: String| async move { tx.send(Ok(Bytes::from(event))).await.is_ok() };
    for event in format.preamble(plan) {
        if !send(event).await {
            return Outcome::ClientGone;
        }
    }
    // An interruption asked for after more tokens than the answer has happens after the last one.
    let interrupt_at = plan
        .scenario
        .interrupt_at()
        .map(|at| at.min(plan.output_tokens));
    // One extra round so an interruption after the last token happens when the next token would
    // have been due.
    for index in 0..=plan.output_tokens {
        if index == plan.output_tokens && interrupt_at.is_none() {
            break;
        }
        sleep_until(plan.token_due(index)).await;
        if interrupt_at == Some(index) {
            return match plan.scenario {
                super::Scenario::DieAfter(_) | super::Scenario::ResetAfter(_) => {
                    let reset = plan.scenario.resets();
                    plan.reset_on_close
                        .store(reset, std::sync::atomic::Ordering::Relaxed);
                    // An error in the body makes hyper close the socket without the chunked
                    // terminator; a failed send means the client is gone anyway.
                    let _ = tx.send(Err(Died)).await;
                    if reset { Outcome::Reset } else { Outcome::Died }
                }
                _ => {
                    if !send(format.error_event(plan)).await {
                        return Outcome::ClientGone;
                    }
                    Outcome::ErrorEvent
                }
            };
        }
        if !send(format.token(plan, index, &token_text(index))).await {
            return Outcome::ClientGone;
        }
        stats.add_tokens(1);
    }
    for event in format.finish(plan) {
        if !send(event).await {
            return Outcome::ClientGone;
        }
    }
    Outcome::Complete
}
