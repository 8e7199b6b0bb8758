//! The HTTP/1 parser of one direction: never panics, never buffers past its caps, and reports the
//! same messages for any split of the same bytes.
//!
//! Input: 1 flag byte (bit 0: response direction, bit 1: frame only, bit 2: end the stream),
//! 8 bytes of split seed, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_observer_decode::protocol::head::{Direction, Head};
use llm_observer_decode::protocol::http1::{BodyPlan, Handler, MessageEnd, Parser};
use llm_observer_decode::{DecodeError, Limits, Unsupported};

#[path = "common.rs"]
mod common;

#[derive(Debug, PartialEq)]
enum Ev {
    Head(Head),
    Body(Vec<u8>),
    End(MessageEnd),
    Error(DecodeError),
    Unsupported(Unsupported),
}

struct Collect {
    events: Vec<Ev>,
    frame_only: bool,
    heads: u64,
}

impl Handler for Collect {
    fn head(&mut self, head: &Head, _start_ns: u64, _ts_ns: u64) -> BodyPlan {
        self.events.push(Ev::Head(head.clone()));
        self.heads += 1;
        BodyPlan {
            deliver: !self.frame_only,
            // Pretend every third response answers a HEAD request.
            no_body: matches!(head, Head::Response(_)) && self.heads.is_multiple_of(3),
        }
    }
    fn body(&mut self, data: &[u8], _ts_ns: u64) {
        assert!(!data.is_empty());
        match self.events.last_mut() {
            Some(Ev::Body(b)) => b.extend_from_slice(data),
            _ => self.events.push(Ev::Body(data.to_vec())),
        }
    }
    fn end(&mut self, mut end: MessageEnd) {
        end.ts_ns = 0;
        self.events.push(Ev::End(end));
    }
    fn error(&mut self, err: DecodeError) {
        self.events.push(Ev::Error(err));
    }
    fn unsupported(&mut self, what: Unsupported) {
        self.events.push(Ev::Unsupported(what));
    }
}

const LIMITS: Limits = Limits {
    max_head_bytes: 1024,
    max_body_bytes: 4096,
    max_event_bytes: 1024,
    max_pending_requests: 4,
    labels: &llm_observer_decode::labels::NO_LABELS,
};

fn run(dir: Direction, frame_only: bool, end: bool, pieces: &[&[u8]]) -> Vec<Ev> {
    let mut p = Parser::new(dir, LIMITS);
    let mut c = Collect {
        events: Vec::new(),
        frame_only,
        heads: 0,
    };
    for (i, piece) in pieces.iter().enumerate() {
        p.feed(piece, i as u64, &mut c);
        // One head, one resync probe, one sniffed deflate byte.
        assert!(p.buffered_bytes() <= LIMITS.max_head_bytes + 24 + 1);
    }
    if end {
        p.end(pieces.len() as u64, &mut c);
        assert_eq!(p.buffered_bytes(), 0);
    }
    c.events
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some((seed, stream)) = rest.split_at_checked(8) else {
        return;
    };
    let dir = if flags & 1 == 0 {
        Direction::Request
    } else {
        Direction::Response
    };
    let (frame_only, end) = (flags & 2 != 0, flags & 4 != 0);
    let whole = run(dir, frame_only, end, &[stream]);
    let split = run(dir, frame_only, end, &common::Splits::new(seed).cut(stream));
    // Decompressors may hand out different amounts before detecting corrupt data, so with a
    // decompression error only the non-body events must agree.
    let corrupt = |evs: &[Ev]| evs.contains(&Ev::Error(DecodeError::Decompress));
    if corrupt(&whole) || corrupt(&split) {
        let strip = |evs: Vec<Ev>| -> Vec<Ev> {
            evs.into_iter()
                .filter(|e| !matches!(e, Ev::Body(_)))
                .collect()
        };
        assert_eq!(strip(whole), strip(split));
    } else {
        assert_eq!(whole, split);
    }
});
