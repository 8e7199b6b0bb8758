//! Request/response pairing for [`ConnDecoder`](crate::ConnDecoder): the [`Handler`]s of the
//! two directions and the queue between them.
//!
//! Requests are numbered (`seq`) in wire order and queue until their response head arrives (FIFO:
//! keep-alive and pipelining). Every request keeps its place, recognised or not, so a response is
//! never paired with the wrong request; only recognised ones carry an [`ApiDecoder`].

use std::collections::VecDeque;

use crate::exchange::Incomplete;
use crate::llm::{self, ApiDecoder, BodyEnd, Headers};
use crate::llm::{Candidate, Recognizer};
use crate::types::{DecodeError, EndedBy, Limits, Output, Unsupported};

use super::head::Head;
use super::http1::{BodyPlan, Handler, MessageEnd, Outcome};
use super::tsbuf::TsBuf;

/// Emits `Done` for an exchange.
fn finish(
    out: &mut Vec<Output>,
    seq: u64,
    decoder: Box<dyn ApiDecoder>,
    end: BodyEnd,
    end_ns: u64,
    wire_bytes: u64,
    truncated: bool,
) {
    let mut exchange = decoder.finish(end, end_ns, wire_bytes);
    exchange.body_truncated |= truncated;
    out.push(Output::Done {
        seq,
        exchange: Box::new(exchange),
    });
}

/// A request received in full, waiting for its response head.
#[derive(Debug)]
struct Pending {
    seq: u64,
    /// `None`: not a recognised API (or lost); framed only.
    decoder: Option<Box<dyn ApiDecoder>>,
    /// A `HEAD` request: its response has no body.
    no_body: bool,
    start_ns: u64,
    /// A place held for a request the capture lost (bytes after a gap that did not parse): its
    /// exchange is incomplete, accounted when its response arrives or the connection ends.
    lost: bool,
}

/// The request being received.
#[derive(Debug)]
struct Incoming {
    seq: u64,
    method: String,
    path: String,
    headers: Headers,
    /// Decoded body, cut at `max_body_bytes` (collected only for API candidates).
    body: TsBuf,
    truncated: bool,
    start_ns: u64,
    /// The head could belong to a known API (the pairing's `candidate`); otherwise the body is only
    /// framed and recognition is skipped.
    candidate: bool,
}

/// The response being received, for a recognised request.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    decoder: Box<dyn ApiDecoder>,
    first_token: bool,
}

/// Request/response pairing state, apart from the parsers so both can be borrowed at once.
#[derive(Debug)]
pub(crate) struct Pairing {
    limits: Limits,
    recognize: Recognizer,
    candidate: Candidate,
    next_seq: u64,
    incoming: Option<Incoming>,
    /// FIFO of complete requests without a response head yet.
    pending: VecDeque<Pending>,
    inflight: Option<InFlight>,
    /// The response stream lost its framing: pair the next response head by capture time.
    pub(crate) resp_resynced: bool,
    /// The request stream lost bytes, and no response or incomplete exchange has accounted for
    /// them since: the gap may have held a whole request (head included), which then ends as one
    /// incomplete exchange when its response arrives unmatched or the connection ends.
    pub(crate) req_gap_unaccounted: bool,
    /// A lost request was accounted for and no request head has been parsed since: further
    /// gaps are more of the same lost bytes, not another exchange (at most one count each).
    pub(crate) req_loss_counted: bool,
    /// How the connection ended, for bodies it cut.
    pub(crate) ended_by: EndedBy,
    /// Give up on the connection (not HTTP, unsupported protocol, too many pending).
    pub(crate) stop: bool,
    /// Why decoding stopped, for the exchanges still open then.
    pub(crate) stop_why: Incomplete,
    /// Capture time of the current call.
    pub(crate) ts_ns: u64,
}

impl Pairing {
    pub(crate) fn new(limits: Limits, recognize: Recognizer, candidate: Candidate) -> Self {
        Pairing {
            limits,
            recognize,
            candidate,
            next_seq: 0,
            incoming: None,
            pending: VecDeque::new(),
            inflight: None,
            resp_resynced: false,
            req_gap_unaccounted: false,
            req_loss_counted: false,
            ended_by: EndedBy::Capture(Incomplete::CloseUnseen),
            stop: false,
            stop_why: Incomplete::Undecodable,
            ts_ns: 0,
        }
    }

    /// Bytes of the request body being collected, and of the response being decoded.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.incoming.as_ref().map_or(0, |i| i.body.len())
            + self
                .inflight
                .as_ref()
                .map_or(0, |f| f.decoder.buffered_bytes())
    }

    /// Requests received and waiting for (the end of) their response.
    pub(crate) fn open_requests(&self) -> usize {
        self.pending.len() + usize::from(self.inflight.is_some())
    }

    /// No more input: every exchange still open gets its `Done`.
    pub(crate) fn close_all(&mut self, by: EndedBy, ts_ns: u64, out: &mut Vec<Output>) {
        self.incoming = None;
        if std::mem::take(&mut self.req_gap_unaccounted) {
            // Request bytes were lost and nothing came back for them: at least one exchange.
            self.req_loss_counted = true;
            let seq = self.next_seq();
            out.push(Output::Incomplete {
                seq,
                why: Incomplete::CaptureGap,
            });
        }
        if let Some(f) = self.inflight.take() {
            finish(out, f.seq, f.decoder, BodyEnd::Cut(by), ts_ns, 0, false);
        }
        for q in self.pending.drain(..) {
            if q.lost {
                out.push(Output::Incomplete {
                    seq: q.seq,
                    why: Incomplete::CaptureGap,
                });
            }
            if let Some(d) = q.decoder {
                finish(out, q.seq, d, BodyEnd::NoResponse(by), ts_ns, 0, false);
            }
        }
    }

    /// Queues a request (recognised or not) for its response.
    fn enqueue(&mut self, pending: Pending, out: &mut Vec<Output>) {
        if self.pending.len() >= self.limits.max_pending_requests {
            // A client that pipelines this deep without answers is not one we can pair: stop
            // rather than guess.
            out.push(Output::Error(DecodeError::TooManyPending));
            self.stop = true;
            self.stop_why = Incomplete::DecoderLimit;
            if let Some(d) = pending.decoder {
                finish(
                    out,
                    pending.seq,
                    d,
                    BodyEnd::NoResponse(EndedBy::Capture(Incomplete::DecoderLimit)),
                    self.ts_ns,
                    0,
                    false,
                );
            }
            return;
        }
        self.pending.push_back(pending);
    }

    /// The queued request a response head starting at `start_ns` answers.
    fn request_for(&mut self, start_ns: u64, out: &mut Vec<Output>) -> Option<Pending> {
        if self.resp_resynced {
            let latest = self.pending.iter().rposition(|q| q.start_ns <= start_ns)?;
            // Responses of the earlier ones were in the lost bytes.
            for q in self.pending.drain(..latest) {
                if q.lost {
                    out.push(Output::Incomplete {
                        seq: q.seq,
                        why: Incomplete::CaptureGap,
                    });
                }
                if let Some(d) = q.decoder {
                    let end = BodyEnd::Cut(EndedBy::Capture(Incomplete::CaptureGap));
                    finish(out, q.seq, d, end, start_ns, 0, true);
                }
            }
            self.resp_resynced = false;
        }
        // A response cannot start before its request.
        if self.pending.front()?.start_ns > start_ns {
            return None;
        }
        self.pending.pop_front()
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// [`Handler`] for the request direction.
pub(crate) struct ReqSide<'a> {
    p: &'a mut Pairing,
    out: &'a mut Vec<Output>,
}

impl<'a> ReqSide<'a> {
    pub(crate) fn new(p: &'a mut Pairing, out: &'a mut Vec<Output>) -> Self {
        ReqSide { p, out }
    }
}

impl Handler for ReqSide<'_> {
    fn head(&mut self, head: &Head, start_ns: u64, _ts_ns: u64) -> BodyPlan {
        let Head::Request(r) = head else {
            return BodyPlan::default();
        };
        // A new request: a gap from here on may be another exchange lost.
        self.p.req_loss_counted = false;
        let seq = self.p.next_seq();
        let candidate = (self.p.candidate)(&r.method, &r.path, &r.headers);
        self.p.incoming = Some(Incoming {
            seq,
            method: r.method.clone(),
            path: r.path.clone(),
            headers: r.headers.clone(),
            body: TsBuf::new(),
            truncated: false,
            start_ns,
            candidate,
        });
        // Recognition needs the request body, so a candidate's is collected (capped).
        BodyPlan {
            deliver: candidate,
            no_body: false,
        }
    }

    fn body(&mut self, data: &[u8], ts_ns: u64) {
        let max = self.p.limits.max_body_bytes;
        if let Some(inc) = &mut self.p.incoming {
            let take = data.len().min(max.saturating_sub(inc.body.len()));
            inc.body.push(data.get(..take).unwrap_or_default(), ts_ns);
            if take < data.len() {
                inc.truncated = true;
            }
        }
    }

    fn end(&mut self, end: MessageEnd) {
        let Some(inc) = self.p.incoming.take() else {
            return;
        };
        let no_body = inc.method.eq_ignore_ascii_case("HEAD");
        if matches!(end.outcome, Outcome::Lost | Outcome::Aborted) {
            // The gap fell inside this request: it is the one that lost bytes.
            self.p.req_gap_unaccounted = false;
            self.p.req_loss_counted = true;
        }
        if inc.candidate && matches!(end.outcome, Outcome::Lost | Outcome::Aborted) {
            // Lost before it could be recognised: account for it as the capture's loss.
            self.out.push(Output::Incomplete {
                seq: inc.seq,
                why: Incomplete::CaptureGap,
            });
        }
        let decoder = match end.outcome {
            Outcome::Complete => {
                if !inc.candidate || self.p.pending.len() >= self.p.limits.max_pending_requests {
                    None
                } else {
                    let req = llm::Request {
                        method: &inc.method,
                        path: &inc.path,
                        headers: &inc.headers,
                        body: inc.body.as_slice(),
                        body_truncated: inc.truncated || end.truncated,
                        start_ns: inc.start_ns,
                        end_ns: end.ts_ns,
                        wire_bytes: end.wire_bytes,
                    };
                    (self.p.recognize)(&req, &self.p.limits)
                }
            }
            // Its bytes were lost but its response will still come: keep its place.
            Outcome::Lost => None,
            Outcome::Cut | Outcome::Aborted | Outcome::Malformed => return,
        };
        if let Some(d) = &decoder {
            let s = d.summary();
            self.out.push(Output::Started {
                seq: inc.seq,
                api: s.api,
                operation: s.operation,
                model: s.model,
                stream: s.stream,
                user_labels: s.user_labels,
                ts_ns: end.ts_ns,
                host: crate::llm::request_host(&inc.headers),
            });
        }
        let pending = Pending {
            seq: inc.seq,
            decoder,
            no_body,
            start_ns: inc.start_ns,
            lost: false,
        };
        self.p.enqueue(pending, self.out);
    }

    fn error(&mut self, err: DecodeError) {
        match err {
            DecodeError::NotHttp => self.p.stop = true,
            DecodeError::HeadTooLarge { .. } => {
                // A request we cannot read still gets a response: hold its place in the queue.
                let seq = self.p.next_seq();
                // Right after a gap, the "head" is most likely the rest of a lost request.
                let lost = std::mem::take(&mut self.p.req_gap_unaccounted);
                if lost {
                    self.p.req_loss_counted = true;
                }
                let pending = Pending {
                    seq,
                    decoder: None,
                    no_body: false,
                    start_ns: self.p.ts_ns,
                    lost,
                };
                self.out.push(Output::Error(err));
                self.p.enqueue(pending, self.out);
                return;
            }
            _ => {}
        }
        self.out.push(Output::Error(err));
    }

    fn unsupported(&mut self, what: Unsupported) {
        self.out.push(Output::Unsupported(what));
        self.p.stop = true;
    }

    fn stopped(&self) -> bool {
        self.p.stop
    }
}

/// [`Handler`] for the response direction.
pub(crate) struct RespSide<'a> {
    p: &'a mut Pairing,
    out: &'a mut Vec<Output>,
}

impl<'a> RespSide<'a> {
    pub(crate) fn new(p: &'a mut Pairing, out: &'a mut Vec<Output>) -> Self {
        RespSide { p, out }
    }
}

impl Handler for RespSide<'_> {
    fn head(&mut self, head: &Head, start_ns: u64, _ts_ns: u64) -> BodyPlan {
        let Head::Response(r) = head else {
            return BodyPlan::default();
        };
        let lost_request = std::mem::take(&mut self.p.req_gap_unaccounted);
        let Some(req) = self.p.request_for(start_ns, self.out) else {
            if lost_request {
                // Its request was in bytes the capture lost.
                self.p.req_loss_counted = true;
                let seq = self.p.next_seq();
                self.out.push(Output::Incomplete {
                    seq,
                    why: Incomplete::CaptureGap,
                });
            } else {
                self.out.push(Output::Error(DecodeError::UnmatchedResponse));
            }
            return BodyPlan::default();
        };
        if req.lost {
            self.out.push(Output::Incomplete {
                seq: req.seq,
                why: Incomplete::CaptureGap,
            });
        }
        let Some(mut decoder) = req.decoder else {
            return BodyPlan {
                deliver: false,
                no_body: req.no_body,
            };
        };
        decoder.response_head(&llm::ResponseHead {
            status: r.status,
            headers: &r.headers,
            start_ns,
        });
        self.p.inflight = Some(InFlight {
            seq: req.seq,
            decoder,
            first_token: false,
        });
        BodyPlan {
            deliver: true,
            no_body: req.no_body,
        }
    }

    fn body(&mut self, data: &[u8], ts_ns: u64) {
        let Some(f) = &mut self.p.inflight else {
            return;
        };
        let mut errors = Vec::new();
        let first = f.decoder.response_body(data, ts_ns, &mut errors);
        self.out.extend(errors.into_iter().map(Output::Error));
        if let (Some(ts_ns), false) = (first, f.first_token) {
            f.first_token = true;
            self.out.push(Output::FirstToken { seq: f.seq, ts_ns });
        }
    }

    fn end(&mut self, end: MessageEnd) {
        if matches!(end.outcome, Outcome::Aborted | Outcome::Malformed) {
            self.p.resp_resynced = true;
        }
        let Some(f) = self.p.inflight.take() else {
            return;
        };
        let body_end = match end.outcome {
            Outcome::Complete => BodyEnd::Complete,
            Outcome::Cut => BodyEnd::Cut(self.p.ended_by),
            Outcome::Lost | Outcome::Aborted => {
                BodyEnd::Cut(EndedBy::Capture(Incomplete::CaptureGap))
            }
            Outcome::Malformed => BodyEnd::Cut(EndedBy::Capture(Incomplete::Undecodable)),
        };
        finish(
            self.out,
            f.seq,
            f.decoder,
            body_end,
            end.ts_ns,
            end.wire_bytes,
            end.truncated,
        );
    }

    fn error(&mut self, err: DecodeError) {
        match err {
            DecodeError::NotHttp => self.p.stop = true,
            DecodeError::BadHead(_) | DecodeError::HeadTooLarge { .. } | DecodeError::BadChunk => {
                self.p.resp_resynced = true;
            }
            _ => {}
        }
        self.out.push(Output::Error(err));
    }

    fn unsupported(&mut self, what: Unsupported) {
        self.out.push(Output::Unsupported(what));
        self.p.stop = true;
    }

    fn stopped(&self) -> bool {
        self.p.stop
    }
}
