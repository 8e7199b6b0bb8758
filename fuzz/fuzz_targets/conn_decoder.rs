//! The whole per-connection decoder, with the real API decoders: arbitrary bytes on both
//! directions at random splits, capture gaps and connection ends. Never panics, never buffers past
//! `Limits::max_buffered_bytes` (`max_buffered_bytes_h2` once the bytes made it HTTP/2), and every
//! `Started` gets exactly one `Done`.
//!
//! Input: 8 bytes of split seed, then ops. Op byte `o`: `o % 8` 0–2 feed the request stream,
//! 3–5 the response stream (next 2 bytes: little-endian length, then that many bytes); 6 a gap
//! (bit 3 picks the stream, next byte the missing count); 7 ends the connection (`o >> 3 % 3`
//! picks who).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use llm_observer_decode::{ConnDecoder, EndedBy, Incomplete, Limits, Output, Stream};

#[path = "common.rs"]
mod common;

const LIMITS: Limits = Limits {
    max_head_bytes: 1024,
    max_body_bytes: 4096,
    max_event_bytes: 1024,
    max_pending_requests: 4,
    labels: &llm_observer_decode::labels::NO_LABELS,
};

fuzz_target!(|input: &[u8]| {
    let Some((seed, mut ops)) = input.split_at_checked(8) else {
        return;
    };
    let mut splits = common::Splits::new(seed);
    let mut d = ConnDecoder::new(LIMITS);
    let mut out = Vec::new();
    let mut ts = 0u64;
    let mut ended = false;
    let bound = |d: &ConnDecoder| {
        if d.is_http2() {
            LIMITS.max_buffered_bytes_h2()
        } else {
            LIMITS.max_buffered_bytes()
        }
    };
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        ts += 1;
        match op % 8 {
            0..=5 => {
                let stream = if op % 8 < 3 {
                    Stream::Request
                } else {
                    Stream::Response
                };
                let (len, rest) = match ops {
                    [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
                    _ => (ops.len(), &[][..]),
                };
                let (data, rest) = rest.split_at(len.min(rest.len()));
                ops = rest;
                for piece in splits.cut(data) {
                    d.feed(stream, piece, ts, &mut out);
                    ts += 1;
                    assert!(d.buffered_bytes() <= bound(&d));
                }
            }
            6 => {
                let stream = if op & 8 == 0 {
                    Stream::Request
                } else {
                    Stream::Response
                };
                let (missing, rest) = ops.split_first().map_or((1, &[][..]), |(m, r)| (*m, r));
                ops = rest;
                d.gap(stream, u64::from(missing) + 1, ts, &mut out);
            }
            _ => {
                let by =
                    [EndedBy::Client, EndedBy::Server, EndedBy::Capture(Incomplete::CaptureGap)][usize::from(op >> 3) % 3];
                d.end(by, ts, &mut out);
                ended = true;
                break;
            }
        }
        assert!(d.buffered_bytes() <= bound(&d));
    }
    if !ended {
        d.end(EndedBy::Capture(Incomplete::CaptureGap), ts + 1, &mut out);
    }
    assert_eq!(d.buffered_bytes(), 0);
    let mut started = BTreeSet::new();
    let mut done = BTreeMap::new();
    let mut first = BTreeSet::new();
    for o in &out {
        match o {
            Output::Started { seq, .. } => assert!(started.insert(*seq), "Started twice: {seq}"),
            Output::FirstToken { seq, .. } => {
                assert!(started.contains(seq), "FirstToken before Started: {seq}");
                assert!(first.insert(*seq), "FirstToken twice: {seq}");
            }
            Output::Done { seq, .. } => {
                assert!(started.contains(seq), "Done without Started: {seq}");
                *done.entry(*seq).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    assert_eq!(started.len(), done.len());
    assert!(done.values().all(|&n| n == 1), "a Done twice: {done:?}");
});
