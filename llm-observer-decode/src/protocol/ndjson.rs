//! Newline-delimited JSON framing, incremental.
//!
//! Ollama streams one JSON object per line (`json.Marshal(v)` + `\n`). The parser splits the decoded
//! body into lines at LF (a CR before it is dropped), skips blank lines, and calls back once per
//! line, stamped with the capture time of the feed that completed it. A last line without a newline
//! is delivered by [`NdjsonParser::finish`] when the body is known to be complete.
//!
//! Memory: a line is bounded by `max_line_bytes`; a longer one is skipped up to its newline and
//! reported once as [`DecodeError::EventTooLarge`]. Lines that lie whole inside one feed are handed
//! out in place, without copying.

use crate::types::DecodeError;

/// Incremental NDJSON line splitter for one response body.
#[derive(Debug)]
pub struct NdjsonParser {
    max_line_bytes: usize,
    /// A line that started in an earlier feed.
    buf: Vec<u8>,
    /// The line in progress is over the cap: drop it up to its newline.
    skipping: bool,
    lines: u64,
}

impl NdjsonParser {
    pub fn new(max_line_bytes: usize) -> Self {
        NdjsonParser {
            max_line_bytes,
            buf: Vec::new(),
            skipping: false,
            lines: 0,
        }
    }

    /// Lines delivered so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// True when bytes of an unfinished line are held.
    pub fn pending(&self) -> bool {
        !trim(&self.buf).is_empty() || self.skipping
    }

    /// Bytes currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Feeds body bytes captured at `ts_ns`; calls `on_line(line, ts_ns)` for each line they complete.
    pub fn feed<F>(
        &mut self,
        input: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
        mut on_line: F,
    ) where
        F: FnMut(&[u8], u64, &mut Vec<DecodeError>),
    {
        let mut pos = 0;
        while pos < input.len() {
            let Some(rel) = memchr::memchr(b'\n', &input[pos..]) else {
                self.hold(&input[pos..], errors);
                return;
            };
            let end = pos + rel;
            if self.skipping {
                self.skipping = false;
            } else if self.buf.is_empty() {
                self.emit(&input[pos..end], ts_ns, errors, &mut on_line);
            } else if self.buf.len() + (end - pos) > self.max_line_bytes {
                self.buf = Vec::new();
                errors.push(DecodeError::EventTooLarge {
                    limit: self.max_line_bytes,
                });
            } else {
                let mut line = std::mem::take(&mut self.buf);
                line.extend_from_slice(&input[pos..end]);
                self.emit(&line, ts_ns, errors, &mut on_line);
                line.clear();
                self.buf = line;
            }
            pos = end + 1;
        }
    }

    /// The body is complete: a final line without a newline is delivered.
    pub fn finish<F>(&mut self, ts_ns: u64, errors: &mut Vec<DecodeError>, mut on_line: F)
    where
        F: FnMut(&[u8], u64, &mut Vec<DecodeError>),
    {
        let line = std::mem::take(&mut self.buf);
        self.skipping = false;
        self.emit(&line, ts_ns, errors, &mut on_line);
    }

    fn hold(&mut self, part: &[u8], errors: &mut Vec<DecodeError>) {
        if self.skipping {
            return;
        }
        if self.buf.len() + part.len() > self.max_line_bytes {
            self.buf = Vec::new();
            self.skipping = true;
            errors.push(DecodeError::EventTooLarge {
                limit: self.max_line_bytes,
            });
            return;
        }
        self.buf.extend_from_slice(part);
    }

    fn emit<F>(&mut self, line: &[u8], ts_ns: u64, errors: &mut Vec<DecodeError>, on_line: &mut F)
    where
        F: FnMut(&[u8], u64, &mut Vec<DecodeError>),
    {
        // The cap applies to the raw line (as while buffering), so cuts cannot change verdicts.
        if line.len() > self.max_line_bytes {
            errors.push(DecodeError::EventTooLarge {
                limit: self.max_line_bytes,
            });
            return;
        }
        let line = trim(line);
        if line.is_empty() {
            return;
        }
        self.lines += 1;
        on_line(line, ts_ns, errors);
    }
}

/// Strips ASCII whitespace (CR included) from both ends.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(parts: &[&[u8]], max: usize) -> (Vec<(Vec<u8>, u64)>, Vec<DecodeError>) {
        let mut p = NdjsonParser::new(max);
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            p.feed(part, i as u64, &mut errors, |l, ts, _| {
                out.push((l.to_vec(), ts))
            });
        }
        p.finish(99, &mut errors, |l, ts, _| out.push((l.to_vec(), ts)));
        (out, errors)
    }

    #[test]
    fn lines_split_anywhere() {
        let (out, err) = run(&[b"{\"a\":1}\r\n{\"b\"", b":2}\n\n", b"{\"c\":3}"], 64);
        assert_eq!(
            out,
            vec![
                (b"{\"a\":1}".to_vec(), 0),
                (b"{\"b\":2}".to_vec(), 1),
                (b"{\"c\":3}".to_vec(), 99)
            ]
        );
        assert!(err.is_empty());
    }

    #[test]
    fn cap_counts_the_raw_line_wherever_it_is_cut() {
        // 8 raw bytes (with the CR) over a cap of 7: rejected whole or cut (found by fuzzing).
        for parts in [&[&b" {\"a\":1}\r\n"[..]][..], &[b" {\"a", b"\":1}\r\n"]] {
            let (out, err) = run(parts, 7);
            assert!(out.is_empty());
            assert_eq!(err, vec![DecodeError::EventTooLarge { limit: 7 }]);
        }
    }

    #[test]
    fn long_line_skipped() {
        let (out, err) = run(&[b"0123456789", b"0123456789\n{}\n"], 8);
        assert_eq!(out, vec![(b"{}".to_vec(), 1)]);
        assert_eq!(err, vec![DecodeError::EventTooLarge { limit: 8 }]);
    }
}
