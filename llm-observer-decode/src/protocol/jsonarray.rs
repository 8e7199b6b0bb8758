//! A streamed JSON array (`[{…},\r\n{…}]`, Gemini's `streamGenerateContent` without `alt=sse`):
//! each top-level element is handed out as soon as its last byte arrives, stamped with that byte's
//! capture time, so every element is one stream event like an SSE event or an NDJSON line.
//! Incremental, bounded: an element longer than `max_event` is skipped and reported.

use crate::types::DecodeError;

/// Where a byte scan stands in a JSON value: nesting depth and string/escape state. All a scanner
/// needs to tell when a value closes without parsing it (the streamed-array parser here, and the
/// whole-body scanner of the API decoders).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonNesting {
    depth: u32,
    in_str: bool,
    esc: bool,
}

impl JsonNesting {
    /// Open objects and arrays.
    pub(crate) fn depth(&self) -> u32 {
        self.depth
    }

    /// Takes one byte; true when it closed the outermost open value (a stray closer at depth 0
    /// counts as closing).
    pub(crate) fn step(&mut self, b: u8) -> bool {
        if self.in_str {
            if self.esc {
                self.esc = false;
            } else if b == b'\\' {
                self.esc = true;
            } else if b == b'"' {
                self.in_str = false;
            }
            return false;
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

#[derive(Debug)]
pub struct JsonArrayParser {
    buf: Vec<u8>,
    max_event: usize,
    /// The opening `[` was seen.
    opened: bool,
    /// The closing `]` was seen.
    closed: bool,
    /// Where the scan stands inside the current element (depth 0: between elements).
    nest: JsonNesting,
    /// The current element outgrew `max_event`: skip to its end.
    skipping: bool,
    /// The first bytes were not an array.
    not_array: bool,
}

impl JsonArrayParser {
    pub fn new(max_event: usize) -> Self {
        JsonArrayParser {
            buf: Vec::new(),
            max_event,
            opened: false,
            closed: false,
            nest: JsonNesting::default(),
            skipping: false,
            not_array: false,
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The closing `]` arrived: the array is whole.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Body bytes captured at `ts_ns`; `on` gets each complete element.
    pub fn feed(
        &mut self,
        data: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
        mut on: impl FnMut(&[u8], u64, &mut Vec<DecodeError>),
    ) {
        if self.closed || self.not_array {
            return;
        }
        let mut start = None;
        for (i, &b) in data.iter().enumerate() {
            if !self.opened {
                if b.is_ascii_whitespace() {
                    continue;
                }
                if b != b'[' {
                    self.not_array = true;
                    errors.push(DecodeError::BadJson);
                    return;
                }
                self.opened = true;
                continue;
            }
            if self.nest.depth() == 0 {
                match b {
                    b'{' | b'[' => {
                        self.nest.step(b);
                        start = Some(i);
                    }
                    b']' => {
                        self.closed = true;
                        return;
                    }
                    // Separators and whitespace between elements; scalars are not events.
                    _ => {}
                }
                continue;
            }
            if self.nest.step(b) {
                let from = start.take().unwrap_or(0);
                self.keep(&data[from..=i], errors);
                if !std::mem::take(&mut self.skipping) {
                    on(&self.buf, ts_ns, errors);
                }
                self.buf.clear();
            }
        }
        if self.nest.depth() > 0 {
            let from = start.unwrap_or(0);
            self.keep(&data[from..], errors);
        }
    }

    fn keep(&mut self, part: &[u8], errors: &mut Vec<DecodeError>) {
        if self.skipping {
            return;
        }
        if self.buf.len() + part.len() > self.max_event {
            self.skipping = true;
            self.buf = Vec::new();
            errors.push(DecodeError::EventTooLarge {
                limit: self.max_event,
            });
        } else {
            self.buf.extend_from_slice(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8], piece: usize, max: usize) -> (Vec<(String, u64)>, Vec<DecodeError>, bool) {
        let mut p = JsonArrayParser::new(max);
        let (mut got, mut errors) = (Vec::new(), Vec::new());
        for (i, c) in body.chunks(piece).enumerate() {
            p.feed(c, i as u64, &mut errors, |e, ts, _| {
                got.push((String::from_utf8_lossy(e).into_owned(), ts));
            });
        }
        (got, errors, p.is_closed())
    }

    #[test]
    fn elements_come_out_whole_at_every_split() {
        let body = b"[{\"a\":\"x]}\\\"\"},\r\n{\"b\":[1,{\"c\":2}]}\r\n]";
        let (whole, errors, closed) = run(body, body.len(), 1024);
        assert!(errors.is_empty() && closed);
        assert_eq!(
            whole.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
            vec!["{\"a\":\"x]}\\\"\"}", "{\"b\":[1,{\"c\":2}]}"]
        );
        for piece in 1..body.len() {
            let (got, errors, closed) = run(body, piece, 1024);
            assert!(errors.is_empty() && closed, "piece {piece}");
            let texts: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
            let want: Vec<&str> = whole.iter().map(|(e, _)| e.as_str()).collect();
            assert_eq!(texts, want, "piece {piece}");
        }
        // Stamped with the capture time of the byte that completed each element.
        let (got, _, _) = run(body, 1, 1024);
        assert_eq!(got[0].1, 13);
    }

    #[test]
    fn oversized_elements_are_skipped_and_reported() {
        let body = b"[{\"a\":\"xxxxxxxxxxxxxxxxxxxx\"},{\"b\":1}]";
        let (got, errors, closed) = run(body, 3, 12);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "{\"b\":1}");
        assert_eq!(errors, vec![DecodeError::EventTooLarge { limit: 12 }]);
        assert!(closed);
        let (got, errors, _) = run(b"{\"not\":\"an array\"}", 4, 100);
        assert!(got.is_empty());
        assert_eq!(errors, vec![DecodeError::BadJson]);
    }
}
