//! Credential redaction of HTTP/2 streams for `trace --raw`: header blocks (HEADERS, CONTINUATION,
//! PUSH_PROMISE payloads) are HPACK, where a credential may be a literal in any frame, Huffman-coded
//! or not, so no header-name pattern can find it. Every header-block byte is replaced by `*`
//! (same length, so frame lengths stay readable); the preface, frame headers and the other frames'
//! payloads are printed as they are. Frame boundaries are followed across slices.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types whose payload is (or holds) an HPACK header block.
fn is_header_block(kind: u8) -> bool {
    matches!(kind, 0x1 | 0x5 | 0x9)
}

/// Whether the first bytes of a stream are HTTP/2: the client preface (or its start), or the 9-byte
/// header of a server's SETTINGS frame on stream 0.
pub fn starts_h2(first: &[u8]) -> bool {
    let n = first.len().min(PREFACE.len());
    if n >= 4 && first[..n] == PREFACE[..n] {
        return true;
    }
    first.len() >= 9
        && first[0] == 0
        && first[3] == 0x4
        && first[5..9] == [0, 0, 0, 0]
        && (u16::from(first[1]) << 8 | u16::from(first[2])) % 6 == 0
}

#[derive(Debug, Default)]
pub struct H2Redactor {
    /// Preface bytes seen so far (the client side starts with it).
    preface: usize,
    preface_done: bool,
    head: [u8; 9],
    have: usize,
    /// Payload bytes left in the current frame, and whether they are a header block.
    left: u32,
    secret: bool,
}

impl H2Redactor {
    pub fn redact(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len());
        let mut data = payload;
        if !self.preface_done {
            // The server side has no preface; the client side's may be cut anywhere.
            let n = data.len().min(PREFACE.len() - self.preface);
            if self.preface > 0 || data[..n] == PREFACE[..n] {
                out.extend_from_slice(&data[..n]);
                self.preface += n;
                data = &data[n..];
                if self.preface < PREFACE.len() {
                    return out;
                }
            }
            self.preface_done = true;
        }
        while !data.is_empty() {
            if self.left == 0 && self.have < 9 {
                let take = (9 - self.have).min(data.len());
                self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
                out.extend_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have == 9 {
                    self.have = 0;
                    let h = self.head;
                    self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                    self.secret = is_header_block(h[3]);
                }
                continue;
            }
            let take = (self.left as usize).min(data.len());
            if self.secret {
                out.resize(out.len() + take, b'*');
            } else {
                out.extend_from_slice(&data[..take]);
            }
            self.left -= take as u32;
            data = &data[take..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut v = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, 0x4];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_blocks_are_masked_at_every_cut() {
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(0x4, 0, &[0, 3, 0, 0, 0, 100]));
        stream.extend(frame(0x1, 1, b"authorization: Bearer sk-secret-1"));
        stream.extend(frame(0x9, 1, b"sk-secret-2"));
        stream.extend(frame(0x0, 1, b"{\"model\":\"m\"}"));
        assert!(starts_h2(&stream));
        for cut in 1..stream.len() {
            let mut r = H2Redactor::default();
            let mut out = r.redact(&stream[..cut]);
            out.extend(r.redact(&stream[cut..]));
            assert_eq!(out.len(), stream.len());
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("sk-secret"), "cut {cut}: {text}");
            assert!(text.contains("{\"model\":\"m\"}"), "cut {cut}");
            assert!(text.starts_with("PRI * HTTP/2.0"));
        }
        // The server side: no preface, SETTINGS first.
        let mut server = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
        server.extend(frame(0x1, 1, b"set-cookie: s=secret"));
        assert!(starts_h2(&server));
        let out = H2Redactor::default().redact(&server);
        assert!(!String::from_utf8_lossy(&out).contains("secret"));
        assert!(!starts_h2(b"POST /v1/chat/completions HTTP/1.1\r\n"));
        assert!(!starts_h2(b"HTTP/1.1 200 OK\r\n"));
    }
}
