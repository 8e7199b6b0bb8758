//! `Transfer-Encoding: chunked` as an explicit byte-level state machine (RFC 9112 §7.1), in the
//! shape of hyper's `ChunkedState`: it can stop and resume at any byte, so a chunk-size line, a
//! CRLF or the last-chunk marker split across two TCP segments needs no buffering at all.
//!
//! Nothing is buffered: the size line is folded into a `u64` as it arrives, extensions and
//! trailers are only counted (and capped), and chunk data is handed out as sub-slices of the input.

use crate::types::DecodeError;

/// Longest chunk extension (`;name=value...` after the size) accepted. Nobody sends long ones; a
/// longer one means the stream is not chunked data we understand.
pub const MAX_CHUNK_EXT_BYTES: usize = 4096;

/// Hex digits of a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    Start,
    /// Inside the hex digits.
    Size,
    /// Whitespace after the size (tolerated, as hyper does).
    SizeLws,
    /// Inside `;ext`.
    Extension,
    /// Saw CR at the end of the size line.
    SizeLf,
    /// Inside chunk data.
    Body,
    /// Expecting the CR after chunk data.
    BodyCr,
    /// Expecting the LF after chunk data.
    BodyLf,
    /// After the last chunk: a trailer field line or the final CRLF.
    EndCr,
    /// Inside a trailer field line.
    Trailer,
    /// Saw CR at the end of a trailer line.
    TrailerLf,
    /// Saw the final CR.
    EndLf,
    /// The body is complete.
    End,
}

/// Resumable de-chunker for one message body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Remaining bytes of the current chunk (or the size being read).
    size: u64,
    digits: u8,
    ext_len: usize,
    trailer_len: usize,
    max_trailer_bytes: usize,
    /// Bytes consumed so far, including the one that failed (wire size of an aborted body,
    /// whatever the split).
    total: u64,
}

/// What one [`ChunkedDecoder::feed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (all of them unless `done`).
    pub consumed: usize,
    /// The last chunk and the trailers were read: the body is complete.
    pub done: bool,
}

impl ChunkedDecoder {
    /// `max_trailer_bytes` caps the trailer section (counted, never stored).
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Start,
            size: 0,
            digits: 0,
            ext_len: 0,
            trailer_len: 0,
            max_trailer_bytes,
            total: 0,
        }
    }

    /// Bytes consumed so far (framing and data), including a byte that failed.
    pub fn total_consumed(&self) -> u64 {
        self.total
    }

    /// True once the terminating last-chunk and trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// Data bytes still owed by the current chunk (0 outside chunk data). Lets a capture gap that
    /// falls inside chunk data be skipped without losing the framing.
    pub fn remaining_in_chunk(&self) -> u64 {
        if self.state == State::Body {
            self.size
        } else {
            0
        }
    }

    /// Skips `n` bytes of chunk data lost by the capture; `n <= remaining_in_chunk()`.
    pub fn skip_data(&mut self, n: u64) {
        if self.state == State::Body {
            self.size = self.size.saturating_sub(n);
            self.total += n;
            if self.size == 0 {
                self.state = State::BodyCr;
            }
        }
    }

    /// Consumes framing from `input`, passing chunk data to `data`. Stops right after the body's
    /// last byte, so what follows (the next message) is left unconsumed.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Progress, DecodeError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::End {
                break;
            }
            if self.state == State::Body {
                let rest = input.get(i..).unwrap_or_default();
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                if let Some(chunk) = rest.get(..take) {
                    data(chunk);
                }
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::BodyCr;
                }
                continue;
            }
            let Some(&b) = input.get(i) else { break };
            i += 1;
            if let Err(e) = self.step(b) {
                self.total += i as u64;
                return Err(e);
            }
        }
        self.total += i as u64;
        Ok(Progress {
            consumed: i,
            done: self.state == State::End,
        })
    }

    /// One framing byte (everything but chunk data).
    fn step(&mut self, b: u8) -> Result<(), DecodeError> {
        use State::*;
        self.state = match (self.state, b) {
            (Start | Size, b) if b.is_ascii_hexdigit() => {
                // Capping the digit count (not just the value) makes a megabyte of leading "0"
                // fail fast too; nobody pads a chunk size past 16 digits.
                if self.digits >= MAX_SIZE_DIGITS {
                    return Err(DecodeError::BadChunk);
                }
                self.digits += 1;
                let v = hex_value(b);
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(v))
                    .ok_or(DecodeError::BadChunk)?;
                Size
            }
            (Size | SizeLws, b' ' | b'\t') => SizeLws,
            (Size | SizeLws, b';') => Extension,
            (Size | SizeLws, b'\r') => SizeLf,
            // A bare LF ending the size line: unambiguous, so tolerated.
            (Size | SizeLws, b'\n') | (SizeLf, b'\n') => self.after_size_line(),
            (Extension, b'\r') => SizeLf,
            (Extension, b'\n') => self.after_size_line(),
            (Extension, _) => {
                self.ext_len += 1;
                if self.ext_len > MAX_CHUNK_EXT_BYTES {
                    return Err(DecodeError::BadChunk);
                }
                Extension
            }
            (BodyCr, b'\r') => BodyLf,
            (BodyCr | BodyLf, b'\n') => self.next_chunk(),
            (EndCr, b'\r') => EndLf,
            (EndCr | EndLf, b'\n') => End,
            (EndCr | Trailer, b) => {
                self.trailer_len += 1;
                if self.trailer_len > self.max_trailer_bytes {
                    return Err(DecodeError::BadChunk);
                }
                if b == b'\r' { TrailerLf } else { Trailer }
            }
            (TrailerLf, b'\n') => EndCr,
            _ => return Err(DecodeError::BadChunk),
        };
        Ok(())
    }

    fn after_size_line(&mut self) -> State {
        self.ext_len = 0;
        if self.size == 0 {
            State::EndCr
        } else {
            State::Body
        }
    }

    fn next_chunk(&mut self) -> State {
        self.size = 0;
        self.digits = 0;
        State::Start
    }
}

fn hex_value(b: u8) -> u64 {
    match b {
        b'0'..=b'9' => u64::from(b - b'0'),
        b'a'..=b'f' => u64::from(b - b'a' + 10),
        b'A'..=b'F' => u64::from(b - b'A' + 10),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` cut at every split of `cuts`, returning (data, total consumed, done).
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), DecodeError> {
        let mut d = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let p = d.feed(piece, |c| out.extend_from_slice(c))?;
            used += p.consumed;
            if p.done {
                return Ok((out, used, true));
            }
        }
        Ok((out, used, false))
    }

    #[test]
    fn decodes_chunks_at_every_piece_size() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (data, used, done) = run(wire, step).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
            assert!(done);
            assert_eq!(used, wire.len() - 4, "step {step}");
        }
    }

    #[test]
    fn trailers_are_skipped() {
        let wire = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
        let (data, used, done) = run(wire, 1).unwrap();
        assert_eq!(
            (data.as_slice(), used, done),
            (&b"abc"[..], wire.len(), true)
        );
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let (data, _, done) = run(b"3\nabc\n0\n\n", 2).unwrap();
        assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
    }

    #[test]
    fn oversized_size_and_extension_and_garbage_fail() {
        assert_eq!(run(b"11111111111111111\r\n", 3), Err(DecodeError::BadChunk));
        let mut ext = b"1;".to_vec();
        ext.resize(MAX_CHUNK_EXT_BYTES + 10, b'x');
        assert_eq!(run(&ext, 7), Err(DecodeError::BadChunk));
        assert_eq!(run(b"zz\r\n", 1), Err(DecodeError::BadChunk));
        assert_eq!(run(b"3\r\nabcX", 1), Err(DecodeError::BadChunk));
        let zeros = vec![b'0'; 1000];
        assert_eq!(run(&zeros, 100), Err(DecodeError::BadChunk));
    }

    #[test]
    fn trailer_cap_is_enforced() {
        let mut wire = b"0\r\n".to_vec();
        wire.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(run(&wire, 64), Err(DecodeError::BadChunk));
    }

    #[test]
    fn gap_inside_chunk_data_keeps_framing() {
        let mut d = ChunkedDecoder::new(64);
        let mut out = Vec::new();
        d.feed(b"a\r\n01", |c| out.extend_from_slice(c)).unwrap();
        assert_eq!(d.remaining_in_chunk(), 8);
        d.skip_data(5);
        let p = d
            .feed(b"789\r\n0\r\n\r\n", |c| out.extend_from_slice(c))
            .unwrap();
        assert_eq!((out.as_slice(), p.done), (&b"01789"[..], true));
    }
}
