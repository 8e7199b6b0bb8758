//! HTTP/2 framing (RFC 9113 §4): one direction's bytes in, frame events out, incrementally.
//!
//! DATA payloads are passed through as they arrive (minus padding), stamped with the capture time
//! of the bytes that carried them, so a streamed token's time is its bytes' time and a 16 MiB
//! frame costs no buffer. Every other frame is small by protocol (SETTINGS, PING, WINDOW_UPDATE,
//! RST_STREAM, PRIORITY) or a header-block fragment, and is buffered whole up to `max_frame`;
//! a longer one is reported as [`FrameEvent::Oversized`] and skipped.

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

/// Frame flags.
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; 9]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Whether `b` (at least 9 bytes) starts with a plausible server SETTINGS frame: the first frame a
/// server sends (RFC 9113 §3.4), on stream 0, a whole number of 6-byte settings, not an ACK.
pub fn looks_like_server_preface(b: &[u8]) -> bool {
    let Some(h) = b.first_chunk::<9>().map(FrameHeader::parse) else {
        return false;
    };
    h.kind == SETTINGS && h.stream == 0 && h.flags == 0 && h.len % 6 == 0 && h.len <= 16_384
}

/// Whether `b` starts with something shaped like an HTTP/2 frame header of a known type (length
/// under 64 KiB; stream 0 only for connection-level types). No HTTP/1 request starts with a NUL.
pub fn looks_like_h2_frame(b: &[u8]) -> bool {
    let Some(h) = b.first_chunk::<9>().map(FrameHeader::parse) else {
        return false;
    };
    // SETTINGS, PING, GOAWAY live on stream 0; WINDOW_UPDATE on any; the rest on a stream.
    let allowed = match h.kind {
        SETTINGS | 0x6 | GOAWAY => h.stream == 0,
        0x8 => true,
        _ => h.stream != 0,
    };
    b[0] == 0 && h.kind <= CONTINUATION && allowed
}

/// What [`FrameReader::feed`] reports, in wire order.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A whole non-DATA frame; `payload` as received (padding not removed). `start_ns` is the
    /// capture time of its first byte.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
        start_ns: u64,
    },
    /// Part of a DATA frame's data (padding removed).
    Data {
        stream: u32,
        bytes: &'a [u8],
        ts_ns: u64,
    },
    /// A DATA frame ended; `wire_bytes` counts its header and whole payload.
    DataEnd {
        stream: u32,
        end_stream: bool,
        wire_bytes: u64,
        ts_ns: u64,
    },
    /// A non-DATA frame longer than the buffer cap; its payload was skipped.
    Oversized { header: FrameHeader },
    /// A DATA frame whose pad length exceeds its payload (a connection error in RFC 9113 §6.1).
    BadPadding { stream: u32 },
}

#[derive(Debug)]
enum State {
    /// Collecting a frame header (`have` bytes of it so far).
    Header,
    /// Buffering a non-DATA payload.
    Buffer { header: FrameHeader, start_ns: u64 },
    /// Skipping an oversized payload: bytes left.
    Skip { left: u64 },
    /// Inside a DATA payload.
    Data {
        header: FrameHeader,
        /// Payload bytes not consumed yet.
        left: u32,
        /// Data bytes (after the pad-length byte, before the padding) not delivered yet; `None`
        /// while the pad-length byte of a PADDED frame has not arrived.
        data_left: Option<u32>,
    },
}

/// One direction's frame parser.
#[derive(Debug)]
pub struct FrameReader {
    head: [u8; 9],
    have: usize,
    head_start_ns: u64,
    state: State,
    buf: Vec<u8>,
    max_frame: usize,
}

impl FrameReader {
    /// `max_frame`: the longest non-DATA payload buffered.
    pub fn new(max_frame: usize) -> Self {
        FrameReader {
            head: [0; 9],
            have: 0,
            head_start_ns: 0,
            state: State::Header,
            buf: Vec::new(),
            max_frame,
        }
    }

    /// Bytes held between calls.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() + self.have
    }

    /// Frame bytes captured at `ts_ns`, in order. `out` gets every event they complete.
    pub fn feed(&mut self, mut data: &[u8], ts_ns: u64, out: &mut dyn FnMut(FrameEvent<'_>)) {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    if self.have == 0 {
                        self.head_start_ns = ts_ns;
                    }
                    let take = (9 - self.have).min(data.len());
                    self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have == 9 {
                        self.have = 0;
                        let header = FrameHeader::parse(&self.head);
                        self.start(header, ts_ns, out);
                    }
                }
                State::Buffer { header, start_ns } => {
                    let need = header.len as usize - self.buf.len();
                    let take = need.min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == header.len as usize {
                        let (header, start_ns) = (*header, *start_ns);
                        self.state = State::Header;
                        out(FrameEvent::Frame {
                            header,
                            payload: &self.buf,
                            start_ns,
                        });
                        self.buf.clear();
                    }
                }
                State::Skip { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Data {
                    header,
                    left,
                    data_left,
                } => {
                    let stream = header.stream;
                    match data_left {
                        None => {
                            // The pad-length byte of a PADDED frame.
                            let pad = u32::from(data[0]);
                            data = &data[1..];
                            *left -= 1;
                            if pad > *left {
                                out(FrameEvent::BadPadding { stream });
                                // Skip the rest of the frame; the caller stops anyway.
                                self.state = State::Skip {
                                    left: u64::from(*left),
                                };
                                continue;
                            }
                            *data_left = Some(*left - pad);
                        }
                        Some(d) => {
                            let take = (*d as usize).min(data.len());
                            if take > 0 {
                                out(FrameEvent::Data {
                                    stream,
                                    bytes: &data[..take],
                                    ts_ns,
                                });
                                *d -= take as u32;
                                *left -= take as u32;
                                data = &data[take..];
                            } else {
                                // Padding.
                                let take = (*left as usize).min(data.len());
                                *left -= take as u32;
                                data = &data[take..];
                            }
                        }
                    }
                    self.end_data(ts_ns, out);
                }
            }
        }
    }

    /// A frame header is complete: choose how to read its payload.
    fn start(&mut self, header: FrameHeader, ts_ns: u64, out: &mut dyn FnMut(FrameEvent<'_>)) {
        if header.kind == DATA {
            let padded = header.has(PADDED) && header.len > 0;
            if header.has(PADDED) && header.len == 0 {
                out(FrameEvent::BadPadding {
                    stream: header.stream,
                });
                return;
            }
            self.state = State::Data {
                header,
                left: header.len,
                data_left: if padded { None } else { Some(header.len) },
            };
            self.end_data(ts_ns, out);
        } else if header.len as usize > self.max_frame {
            out(FrameEvent::Oversized { header });
            self.state = State::Skip {
                left: u64::from(header.len),
            };
        } else if header.len == 0 {
            out(FrameEvent::Frame {
                header,
                payload: &[],
                start_ns: self.head_start_ns,
            });
        } else {
            self.state = State::Buffer {
                header,
                start_ns: self.head_start_ns,
            };
        }
    }

    /// Ends a DATA frame whose payload is all consumed.
    fn end_data(&mut self, ts_ns: u64, out: &mut dyn FnMut(FrameEvent<'_>)) {
        if let State::Data {
            header, left: 0, ..
        } = self.state
        {
            self.state = State::Header;
            out(FrameEvent::DataEnd {
                stream: header.stream,
                end_stream: header.has(END_STREAM),
                wire_bytes: 9 + u64::from(header.len),
                ts_ns,
            });
        }
    }
}

/// The header-block fragment of a HEADERS or PUSH_PROMISE payload: padding and the priority /
/// promised-stream fields removed. `None` when the padding does not fit (a protocol error).
pub fn header_fragment<'a>(header: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if header.has(PADDED) && header.kind != CONTINUATION {
        pad = usize::from(*p.first()?);
        p = p.get(1..)?;
    }
    let skip = match header.kind {
        HEADERS if header.has(PRIORITY) => 5,
        PUSH_PROMISE => 4,
        _ => 0,
    };
    p = p.get(skip..)?;
    p.get(..p.len().checked_sub(pad)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut v = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Events as owned values, for comparing split feeds.
    fn run(bytes: &[u8], split: usize) -> Vec<String> {
        let mut r = FrameReader::new(64);
        let mut got = Vec::new();
        for (i, c) in bytes.chunks(split.max(1)).enumerate() {
            r.feed(c, i as u64, &mut |e| {
                got.push(match e {
                    FrameEvent::Frame {
                        header, payload, ..
                    } => format!("F{}:{}:{:?}", header.kind, header.stream, payload),
                    FrameEvent::Data { stream, bytes, .. } => format!("D{stream}:{bytes:?}"),
                    FrameEvent::DataEnd {
                        stream,
                        end_stream,
                        wire_bytes,
                        ..
                    } => format!("E{stream}:{end_stream}:{wire_bytes}"),
                    FrameEvent::Oversized { header } => format!("O{}", header.len),
                    FrameEvent::BadPadding { stream } => format!("P{stream}"),
                })
            });
        }
        // Merge adjacent data pieces so every split compares equal.
        let mut merged: Vec<String> = Vec::new();
        for g in got {
            if let (Some(last), true) = (merged.last_mut(), g.starts_with('D'))
                && last.starts_with('D')
            {
                let a: Vec<u8> = parse_bytes(last);
                let b: Vec<u8> = parse_bytes(&g);
                let s = last.split(':').next().unwrap_or("").to_string();
                *last = format!("{s}:{:?}", [a, b].concat());
                continue;
            }
            merged.push(g);
        }
        merged
    }

    fn parse_bytes(s: &str) -> Vec<u8> {
        let inner = s.split_once(':').map(|x| x.1).unwrap_or("");
        inner
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap())
            .collect()
    }

    #[test]
    fn frames_split_anywhere_give_the_same_events() {
        let mut bytes = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        bytes.extend(frame(HEADERS, END_HEADERS, 1, b"hdr"));
        // Padded DATA: pad length 2, data "abc", padding.
        bytes.extend(frame(DATA, PADDED, 1, &[2, b'a', b'b', b'c', 0, 0]));
        bytes.extend(frame(DATA, END_STREAM, 1, b"de"));
        bytes.extend(frame(DATA, END_STREAM, 3, b""));
        bytes.extend(frame(HEADERS, 0, 5, &[0; 100]));
        bytes.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        let whole = run(&bytes, bytes.len());
        assert_eq!(
            whole,
            vec![
                "F4:0:[0, 3, 0, 0, 0, 100]",
                "F1:1:[104, 100, 114]",
                "D1:[97, 98, 99]",
                "E1:false:15",
                "D1:[100, 101]",
                "E1:true:11",
                "E3:true:9",
                "O100",
                "F7:0:[0, 0, 0, 5, 0, 0, 0, 0]",
            ]
        );
        for split in 1..bytes.len() {
            assert_eq!(run(&bytes, split), whole, "split {split}");
        }
    }

    #[test]
    fn padding_longer_than_the_frame_is_reported() {
        let bytes = frame(DATA, PADDED, 1, &[9, b'a']);
        assert_eq!(run(&bytes, 100), vec!["P1"]);
        assert_eq!(run(&frame(DATA, PADDED, 7, b""), 100), vec!["P7"]);
    }

    #[test]
    fn header_fragment_strips_padding_and_priority() {
        let h = |kind, flags| FrameHeader {
            len: 0,
            kind,
            flags,
            stream: 1,
        };
        assert_eq!(
            header_fragment(
                &h(HEADERS, PADDED | PRIORITY),
                &[2, 0, 0, 0, 1, 16, b'x', 0, 0]
            ),
            Some(&b"x"[..])
        );
        assert_eq!(
            header_fragment(&h(PUSH_PROMISE, 0), &[0, 0, 0, 2, b'y']),
            Some(&b"y"[..])
        );
        assert_eq!(header_fragment(&h(HEADERS, PADDED), &[5, b'x']), None);
        assert_eq!(header_fragment(&h(CONTINUATION, 0), b"z"), Some(&b"z"[..]));
    }

    #[test]
    fn server_preface_shape() {
        let s = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        assert!(looks_like_server_preface(&s));
        assert!(!looks_like_server_preface(&frame(SETTINGS, 1, 0, b"")));
        assert!(!looks_like_server_preface(b"HTTP/1.1 200 OK\r\n"));
        assert!(!looks_like_server_preface(&s[..8]));
        assert!(looks_like_h2_frame(&s));
        assert!(looks_like_h2_frame(&frame(HEADERS, END_HEADERS, 3, b"x")));
        assert!(!looks_like_h2_frame(&frame(HEADERS, END_HEADERS, 0, b"x")));
        assert!(!looks_like_h2_frame(b"POST /v1/chat HTTP/1.1\r\n"));
    }
}
