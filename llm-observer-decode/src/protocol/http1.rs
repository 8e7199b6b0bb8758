//! Incremental HTTP/1.x message parser for one direction of a connection.
//!
//! Bytes go in as the capture delivered them (any split), events come out through a [`Handler`]:
//! each final head, the decoded body bytes (de-chunked, decompressed) stamped with the capture time
//! of the bytes that carried them, and the end of each message. Interim `1xx` responses are
//! skipped; `101` and `CONNECT` end parsing (the rest of the connection is not HTTP/1); the HTTP/2
//! preface is reported as such.
//!
//! Memory: the only bytes kept between calls are an incomplete head (at most
//! `Limits::max_head_bytes`, never more: a longer head is dropped with
//! [`DecodeError::HeadTooLarge`]), up to 7 bytes of a possible message start while resyncing, and
//! one byte of a `deflate` body being sniffed. Bodies stream through.
//!
//! Errors resync the way Pixie does: look for a request method / `HTTP/1.` at a line start and
//! parse from there. A capture gap inside body data of known length keeps the framing (the bytes
//! are skipped); anything else resyncs. Garbage before any valid message on the connection is
//! [`DecodeError::NotHttp`] and the parser stops for good.

use crate::types::{DecodeError, Limits, Unsupported};

use super::body::Body;
use super::head::{self, Direction, Framing, Head};
use super::start::{Marker, START_PROBE, Start, classify_start, match_marker};
use super::tsbuf::TsBuf;

/// What the handler wants of the body of the message whose head it just got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyPlan {
    /// Decode the body and pass it to [`Handler::body`]; false frames it without decoding.
    pub deliver: bool,
    /// The message has no body whatever its headers say (the response to a `HEAD` request).
    pub no_body: bool,
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The framing said the message is complete (or the close ended a close-delimited body).
    Complete,
    /// The connection ended first.
    Cut,
    /// Bytes of it were lost by the capture but its framing survived: the next message is found
    /// normally (its place in a request/response sequence is kept).
    Lost,
    /// Bytes were lost by the capture and the framing with them: the parser resyncs.
    Aborted,
    /// Bytes were malformed (a bad chunk size) and the framing with them: the parser resyncs.
    Malformed,
}

/// The end of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageEnd {
    pub outcome: Outcome,
    /// Capture time of the byte (or event) that ended it.
    pub ts_ns: u64,
    /// Bytes of the message on the wire: head + framed body.
    pub wire_bytes: u64,
    /// Decoded body data was lost (cap reached, coding failure, capture gap).
    pub truncated: bool,
}

/// Receives what a [`Parser`] finds. Calls for one message come in order: `head`, `body`*, `end`.
pub trait Handler {
    /// A complete final (non-1xx) head; `start_ns` is the capture time of its first byte and
    /// `ts_ns` of its last.
    fn head(&mut self, head: &Head, start_ns: u64, ts_ns: u64) -> BodyPlan;
    /// Decoded body bytes.
    fn body(&mut self, data: &[u8], ts_ns: u64);
    fn end(&mut self, end: MessageEnd);
    fn error(&mut self, err: DecodeError);
    /// The connection switched to something this parser does not read; it has stopped.
    fn unsupported(&mut self, what: Unsupported);
    /// The handler gave up on the connection: stop reading the current input at once.
    fn stopped(&self) -> bool {
        false
    }
}

#[derive(Debug)]
enum State {
    Head,
    Body(Box<Body>),
    Resync,
    Dead,
}

/// Parser for one direction.
#[derive(Debug)]
pub struct Parser {
    dir: Direction,
    limits: Limits,
    state: State,
    /// The incomplete head.
    head: TsBuf,
    /// End-of-head scanner: 0 normal, 1 after LF, 2 after LF CR.
    eoh: u8,
    /// The start of the current head passed the plausibility check.
    start_checked: bool,
    /// A valid HTTP/1 message was seen on this connection (either direction).
    seen_http: bool,
    /// While resyncing: a possible message start cut by the end of the input (< 8 bytes).
    tail: TsBuf,
    /// While resyncing: the next input byte begins a line.
    line_start: bool,
    /// Head bytes from earlier calls to rescan after a bad head (they may hold the next message
    /// start), with the capture time of their first byte.
    replay: Option<(Vec<u8>, u64)>,
    replaying: bool,
}

impl Parser {
    pub fn new(dir: Direction, limits: Limits) -> Self {
        Parser {
            dir,
            limits,
            state: State::Head,
            head: TsBuf::new(),
            eoh: 0,
            start_checked: false,
            seen_http: false,
            tail: TsBuf::new(),
            line_start: false,
            replay: None,
            replaying: false,
        }
    }

    /// Tells the parser that the other direction parsed valid HTTP/1, so garbage here is a bad
    /// message (resync), not a non-HTTP connection.
    pub fn set_seen_http(&mut self) {
        self.seen_http = true;
    }

    pub fn seen_http(&self) -> bool {
        self.seen_http
    }

    /// Bytes held between calls.
    pub fn buffered_bytes(&self) -> usize {
        let body = match &self.state {
            State::Body(b) => b.buffered_bytes(),
            _ => 0,
        };
        self.head.len() + self.tail.len() + body
    }

    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead)
    }

    pub fn is_resyncing(&self) -> bool {
        matches!(self.state, State::Resync)
    }

    /// Inside a message body (a gap now falls inside that message, which accounts for it).
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Stops parsing for good, releasing buffers.
    pub fn stop(&mut self) {
        self.state = State::Dead;
        self.head = TsBuf::new();
        self.tail = TsBuf::new();
    }

    /// Bytes of this direction captured at `ts_ns`, in order.
    pub fn feed(&mut self, data: &[u8], ts_ns: u64, h: &mut dyn Handler) {
        let mut input = data;
        while !input.is_empty() && !h.stopped() {
            let used = match &mut self.state {
                State::Dead => return,
                State::Resync => match self.resync(input, ts_ns) {
                    Some(at) => at,
                    None => return,
                },
                State::Head => self.feed_head(input, ts_ns, h),
                State::Body(body) => match body.feed(input, ts_ns, h) {
                    Ok(fed) => {
                        if fed.done {
                            self.finish_body(ts_ns, h);
                        }
                        fed.consumed
                    }
                    Err(e) => {
                        h.error(e.err);
                        if !body.muted {
                            h.end(MessageEnd {
                                outcome: Outcome::Malformed,
                                ts_ns,
                                wire_bytes: body.wire_bytes,
                                truncated: true,
                            });
                        }
                        // Resync right after the bad byte, wherever the input was split.
                        self.enter_resync(ends_line(input, e.consumed));
                        e.consumed
                    }
                },
            };
            if let Some((old, old_ts)) = self.replay.take() {
                // At most one level deep: a replay starts with an empty head, so a bad head
                // inside it has nothing older to replay.
                self.replaying = true;
                self.feed(&old, old_ts, h);
                self.replaying = false;
            }
            input = input.get(used..).unwrap_or_default();
        }
    }

    /// `missing` bytes of this direction were lost by the capture.
    pub fn gap(&mut self, missing: u64, ts_ns: u64, h: &mut dyn Handler) {
        match &mut self.state {
            State::Dead => {}
            State::Body(body) => {
                let was_muted = body.muted;
                let (kept, done) = body.lose(missing);
                if !was_muted {
                    h.end(MessageEnd {
                        outcome: if kept {
                            Outcome::Lost
                        } else {
                            Outcome::Aborted
                        },
                        ts_ns,
                        wire_bytes: body.wire_bytes,
                        truncated: true,
                    });
                }
                if kept {
                    body.muted = true;
                    if done {
                        self.state = State::Head;
                    }
                } else {
                    self.enter_resync(true);
                }
            }
            // The gap may have eaten any number of whole messages: the next byte is as likely as
            // any to start one.
            State::Head | State::Resync => self.enter_resync(true),
        }
    }

    /// The connection ended at `ts_ns`. Completes a close-delimited body, cuts any other.
    pub fn end(&mut self, ts_ns: u64, h: &mut dyn Handler) {
        if let State::Body(body) = &mut self.state
            && !body.muted
        {
            let outcome = if body.is_close_delimited() {
                body.finish(ts_ns, h);
                Outcome::Complete
            } else {
                Outcome::Cut
            };
            h.end(MessageEnd {
                outcome,
                ts_ns,
                wire_bytes: body.wire_bytes,
                truncated: body.truncated(),
            });
        }
        self.stop();
    }

    fn enter_resync(&mut self, line_start: bool) {
        self.state = State::Resync;
        self.head.clear();
        self.tail.clear();
        self.line_start = line_start;
    }

    /// A malformed head: the end of a non-HTTP connection, or a bad message on an HTTP one.
    /// `old_len` head bytes came from earlier calls; they are rescanned for a message start, and
    /// the caller rescans the current input (so a valid message right after garbage is found).
    fn invalid(&mut self, err: DecodeError, old_len: usize, h: &mut dyn Handler) {
        if !self.seen_http {
            h.error(DecodeError::NotHttp);
            self.stop();
            return;
        }
        h.error(err);
        let old = self.head.as_slice().get(..old_len).unwrap_or_default();
        if !old.is_empty() && !self.replaying {
            self.replay = Some((old.to_vec(), self.head.first_ts().unwrap_or(0)));
        }
        self.enter_resync(false);
    }

    /// Head bytes; returns how many of `input` were used.
    fn feed_head(&mut self, input: &[u8], ts_ns: u64, h: &mut dyn Handler) -> usize {
        if self.head.is_empty() {
            // Blank lines between messages are allowed (RFC 9112 §2.2).
            let blank = input
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                return blank;
            }
            self.eoh = 0;
            self.start_checked = false;
        }
        let mut end = None;
        for (i, &b) in input.iter().enumerate() {
            self.eoh = match (self.eoh, b) {
                (1 | 2, b'\n') => {
                    end = Some(i + 1);
                    break;
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        let take = end.unwrap_or(input.len());
        let piece = input.get(..take).unwrap_or_default();
        let old_len = self.head.len();
        // Judge the start before the size, so the verdict does not depend on how the bytes were
        // split. Until it passes, fewer than START_PROBE bytes are held.
        if !self.start_checked {
            let mut probe = [0u8; START_PROBE];
            let held = self.head.as_slice();
            let held = held.get(..START_PROBE).unwrap_or(held);
            let more = piece.get(..START_PROBE - held.len()).unwrap_or(piece);
            let n = held.len() + more.len();
            for (d, s) in probe.iter_mut().zip(held.iter().chain(more)) {
                *d = *s;
            }
            match classify_start(self.dir, probe.get(..n).unwrap_or_default()) {
                Start::Plausible => self.start_checked = true,
                Start::NeedMore if end.is_none() => {}
                Start::NeedMore | Start::Garbage => {
                    let err = DecodeError::BadHead("not an HTTP/1 message start");
                    self.invalid(err, old_len, h);
                    return 0;
                }
                Start::Http2 => {
                    h.unsupported(Unsupported::Http2);
                    self.stop();
                    return take;
                }
            }
        }
        let limit = self.limits.max_head_bytes;
        if old_len + take > limit {
            // Drop what was kept and read on without buffering: the rest of this head, and its
            // unknowable body, are skipped by the resync.
            h.error(DecodeError::HeadTooLarge { limit });
            // Resync from the first byte past the cap: the same stream offset for any split.
            let used = (limit + 1).saturating_sub(old_len).min(input.len());
            self.enter_resync(ends_line(input, used));
            return used;
        }
        // Parse straight from the input when the whole head is in it (the common case).
        let direct = old_len == 0 && end.is_some();
        if !direct {
            self.head.push(piece, ts_ns);
        }
        if end.is_none() {
            return take;
        }
        let (parsed, start_ns, len) = if direct {
            (head::parse(self.dir, piece), ts_ns, piece.len())
        } else {
            let start = self.head.first_ts().unwrap_or(ts_ns);
            (
                head::parse(self.dir, self.head.as_slice()),
                start,
                self.head.len(),
            )
        };
        match parsed {
            Ok(head) => {
                self.head.clear();
                self.on_head(&head, start_ns, ts_ns, len as u64, h);
                take
            }
            Err(e) => {
                self.invalid(e, old_len, h);
                0
            }
        }
    }

    fn on_head(&mut self, head: &Head, start_ns: u64, ts_ns: u64, len: u64, h: &mut dyn Handler) {
        self.seen_http = true;
        let status = match head {
            Head::Request(r) if r.method.eq_ignore_ascii_case("CONNECT") => {
                h.unsupported(Unsupported::Connect);
                self.stop();
                return;
            }
            Head::Request(_) => None,
            Head::Response(r) => Some(r.status),
        };
        if status == Some(101) {
            // The head is the whole HTTP/1 response; the connection speaks something else after.
            h.head(head, start_ns, ts_ns);
            h.end(MessageEnd {
                outcome: Outcome::Complete,
                ts_ns,
                wire_bytes: len,
                truncated: false,
            });
            h.unsupported(Unsupported::Upgrade);
            self.stop();
            return;
        }
        if status.is_some_and(|s| (100..200).contains(&s)) {
            // 100 Continue, 103 Early Hints: interim, the final response follows.
            self.state = State::Head;
            return;
        }
        let mut shape = match head::body_shape(head, false) {
            Ok(shape) => shape,
            // The head itself was consumed; resync from the bytes after it.
            Err(e) => {
                h.error(e);
                self.enter_resync(true);
                return;
            }
        };
        let plan = h.head(head, start_ns, ts_ns);
        if plan.no_body || matches!(status, Some(204 | 304)) {
            shape.framing = Framing::Length(0);
        }
        let body = Body::new(
            shape,
            plan.deliver,
            self.limits.max_body_bytes,
            self.limits.max_head_bytes,
            len,
            h,
        );
        self.state = State::Body(Box::new(body));
        if let State::Body(b) = &self.state
            && b.is_empty()
        {
            self.finish_body(ts_ns, h);
        }
    }

    fn finish_body(&mut self, ts_ns: u64, h: &mut dyn Handler) {
        if let State::Body(mut body) = std::mem::replace(&mut self.state, State::Head)
            && !body.muted
        {
            body.finish(ts_ns, h);
            h.end(MessageEnd {
                outcome: Outcome::Complete,
                ts_ns,
                wire_bytes: body.wire_bytes,
                truncated: body.truncated(),
            });
        }
    }

    /// Looks for a message start in `input`. Returns its offset (the parser is then back in
    /// `Head`, with any held prefix moved into the head buffer), or `None` when all of `input` was
    /// skipped.
    fn resync(&mut self, input: &[u8], ts_ns: u64) -> Option<usize> {
        if !self.tail.is_empty() {
            let mut probe = self.tail.as_slice().to_vec();
            let need = START_PROBE.saturating_sub(probe.len()).min(input.len());
            probe.extend_from_slice(input.get(..need).unwrap_or_default());
            match match_marker(self.dir, &probe) {
                Marker::Match => {
                    let ts = self.tail.first_ts().unwrap_or(ts_ns);
                    self.head.clear();
                    self.head.push(self.tail.as_slice(), ts);
                    self.tail.clear();
                    self.begin_head();
                    return Some(0);
                }
                Marker::Partial => {
                    self.tail.push(input, ts_ns);
                    return None;
                }
                Marker::No => self.tail.clear(),
            }
        }
        let next_line = |from: usize| {
            input
                .get(from..)
                .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                .map(|i| from + i + 1)
        };
        let mut at = if self.line_start {
            Some(0)
        } else {
            next_line(0)
        };
        while let Some(p) = at {
            let Some(rest) = input.get(p..).filter(|r| !r.is_empty()) else {
                self.line_start = true;
                return None;
            };
            match match_marker(self.dir, rest) {
                Marker::Match => {
                    self.begin_head();
                    return Some(p);
                }
                Marker::Partial => {
                    self.tail.push(rest, ts_ns);
                    self.line_start = false;
                    return None;
                }
                Marker::No => at = next_line(p),
            }
        }
        self.line_start = false;
        None
    }

    fn begin_head(&mut self) {
        self.state = State::Head;
        self.eoh = 0;
        self.start_checked = false;
        self.line_start = false;
    }
}

/// True when the `used` bytes of `input` end with a line feed (the next byte starts a line).
fn ends_line(input: &[u8], used: usize) -> bool {
    used.checked_sub(1).and_then(|i| input.get(i)) == Some(&b'\n')
}
