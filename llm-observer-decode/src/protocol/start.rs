//! Where an HTTP/1 message can start: the plausibility check on the first bytes of a stream (so
//! binary garbage is rejected at once, not after `max_head_bytes`), the HTTP/2 preface, and the
//! markers the resync looks for at line starts (as Pixie does: a request method + SP, or
//! `HTTP/1.`).

use super::head::Direction;

const HTTP2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";
const REQUEST_STARTS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const RESPONSE_START: &[u8] = b"HTTP/1.";
/// Bytes looked at to judge whether a stream starts like HTTP/1 (longest method + SP fits).
pub(crate) const START_PROBE: usize = 24;

pub(crate) enum Start {
    Plausible,
    NeedMore,
    Http2,
    Garbage,
}

pub(crate) enum Marker {
    Match,
    Partial,
    No,
}

/// Whether `bytes` (the first bytes of a head) can start an HTTP/1 message of this direction.
pub(crate) fn classify_start(dir: Direction, bytes: &[u8]) -> Start {
    match dir {
        Direction::Request => {
            let n = bytes.len().min(HTTP2_PREFACE_LINE.len());
            if bytes.get(..n) == HTTP2_PREFACE_LINE.get(..n) {
                return if n == HTTP2_PREFACE_LINE.len() {
                    Start::Http2
                } else {
                    Start::NeedMore
                };
            }
            // A method is a token followed by one space.
            for (i, &b) in bytes.iter().enumerate() {
                if b == b' ' {
                    return if i == 0 {
                        Start::Garbage
                    } else {
                        Start::Plausible
                    };
                }
                if !is_tchar(b) || i >= 20 {
                    return Start::Garbage;
                }
            }
            Start::NeedMore
        }
        Direction::Response => {
            let n = bytes.len().min(RESPONSE_START.len());
            if bytes.get(..n) != RESPONSE_START.get(..n) {
                Start::Garbage
            } else if n == RESPONSE_START.len() {
                Start::Plausible
            } else {
                Start::NeedMore
            }
        }
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(crate) fn match_marker(dir: Direction, bytes: &[u8]) -> Marker {
    let one = |m: &[u8]| {
        if bytes.len() >= m.len() {
            if bytes.starts_with(m) {
                Marker::Match
            } else {
                Marker::No
            }
        } else if m.starts_with(bytes) {
            Marker::Partial
        } else {
            Marker::No
        }
    };
    let mut best = Marker::No;
    let markers: &[&[u8]] = match dir {
        Direction::Request => &REQUEST_STARTS,
        Direction::Response => &[RESPONSE_START],
    };
    for m in markers {
        match one(m) {
            Marker::Match => return Marker::Match,
            Marker::Partial => best = Marker::Partial,
            Marker::No => {}
        }
    }
    best
}
