//! Credential redaction for `trace --raw`, across event boundaries.
//!
//! Payloads arrive in slices (4 KiB events, whatever each read returned), so a header line such as
//! `Authorization: Bearer …` can be cut anywhere: inside its name, or inside its value. A
//! [`Redactor`] per connection and direction remembers how the previous slice ended — mid secret
//! line, mid ordinary line, or at a line start that could still become a secret header — so no
//! byte of a credential value is ever printed, wherever the cuts fall.

/// Header names whose values are credentials (compared case-insensitively at a line start).
const SECRET_HEADERS: [&[u8]; 8] = [
    b"x-goog-api-key:",
    b"x-amz-security-token:",
    b"authorization:",
    b"proxy-authorization:",
    b"x-api-key:",
    b"api-key:",
    b"cookie:",
    b"set-cookie:",
];

/// What is known of a line start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A credential header: its name (bytes) is known.
    Secret(usize),
    /// Not a credential header.
    Plain,
    /// Too short to tell (a prefix of a credential header name).
    Undecided,
}

fn classify(line: &[u8]) -> Start {
    for h in SECRET_HEADERS {
        if line.len() >= h.len() && line[..h.len()].eq_ignore_ascii_case(h) {
            return Start::Secret(h.len());
        }
    }
    let could_be = SECRET_HEADERS
        .iter()
        .any(|h| line.len() < h.len() && h[..line.len()].eq_ignore_ascii_case(line));
    if could_be {
        Start::Undecided
    } else {
        Start::Plain
    }
}

/// Redaction state of one byte stream.
#[derive(Debug, Default)]
pub struct Redactor {
    /// The line the last slice ended in is a credential header: redact up to its end.
    in_secret: bool,
    /// The line the last slice ended in is known not to be one.
    in_plain: bool,
    /// The start of the line the last slice ended in, while it is still undecided (it is at most
    /// as long as the longest header name, so this never grows beyond that).
    partial: Vec<u8>,
    /// The stream's first bytes were looked at (HTTP/2 or not).
    decided: bool,
    /// The stream is HTTP/2: its HPACK header blocks are masked instead ([`super::redact_h2`]).
    h2: Option<super::redact_h2::H2Redactor>,
}

fn line_ending(line: &[u8]) -> &'static [u8] {
    if line == b"\n" {
        // The rest of a line whose CR ended the previous slice.
        b"\n"
    } else if line.ends_with(b"\r\n") {
        b"\r\n"
    } else if line.ends_with(b"\n") {
        b"\n"
    } else {
        b""
    }
}

impl Redactor {
    /// `payload` (the next slice of the stream) with every credential header value replaced by
    /// `[redacted]`.
    pub fn redact(&mut self, payload: &[u8]) -> Vec<u8> {
        if !self.decided && !payload.is_empty() {
            self.decided = true;
            if super::redact_h2::starts_h2(payload) {
                self.h2 = Some(super::redact_h2::H2Redactor::default());
            }
        }
        if let Some(h2) = &mut self.h2 {
            return h2.redact(payload);
        }
        let mut out = Vec::with_capacity(payload.len());
        for line in payload.split_inclusive(|&b| b == b'\n') {
            let complete = line.ends_with(b"\n");
            // The part of this line the previous slices already printed decides with it.
            let mut joined = Vec::new();
            let continued = self.in_secret;
            let start = if self.in_secret {
                Start::Secret(0)
            } else if self.in_plain {
                Start::Plain
            } else {
                joined = std::mem::take(&mut self.partial);
                let seen = joined.len();
                joined.extend_from_slice(line);
                match classify(&joined) {
                    Start::Secret(name) => Start::Secret(name.saturating_sub(seen)),
                    other => other,
                }
            };
            match start {
                Start::Secret(name_here) => {
                    out.extend_from_slice(&line[..name_here.min(line.len())]);
                    if !continued {
                        out.extend_from_slice(b" [redacted]");
                    }
                    // A header value holds no CR: a trailing one starts the line ending.
                    let ending: &[u8] = if complete {
                        line_ending(line)
                    } else if line.ends_with(b"\r") {
                        b"\r"
                    } else {
                        b""
                    };
                    out.extend_from_slice(ending);
                }
                Start::Plain => out.extend_from_slice(line),
                Start::Undecided => {
                    // No credential byte can be in it yet (the name itself is incomplete).
                    out.extend_from_slice(line);
                    if !complete {
                        self.partial = joined;
                    }
                }
            }
            self.in_secret = !complete && matches!(start, Start::Secret(_));
            self.in_plain = !complete && start == Start::Plain;
            if complete {
                self.partial.clear();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-local-test-123\r\nx-api-key: qwertyuiop\r\nCOOKIE: s=zxcvbnm\r\n\r\n{\"messages\":[]}";
    const SECRETS: [&str; 3] = ["sk-local-test-123", "qwertyuiop", "s=zxcvbnm"];

    fn leaks(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(out);
        let mut found = Vec::new();
        for s in SECRETS {
            // Any 4-byte piece of a secret value is a leak.
            for w in s.as_bytes().windows(4) {
                let piece = String::from_utf8_lossy(w);
                if text.contains(piece.as_ref()) {
                    found.push(piece.into_owned());
                }
            }
        }
        found
    }

    #[test]
    fn whole_payload() {
        let out = Redactor::default().redact(REQUEST);
        assert_eq!(
            out,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: [redacted]\r\nx-api-key: [redacted]\r\nCOOKIE: [redacted]\r\n\r\n{\"messages\":[]}".to_vec()
        );
    }

    #[test]
    fn no_split_point_leaks_a_credential() {
        for a in 0..=REQUEST.len() {
            for b in a..=REQUEST.len().min(a + 40) {
                let mut r = Redactor::default();
                let mut out = r.redact(&REQUEST[..a]);
                out.extend(r.redact(&REQUEST[a..b]));
                out.extend(r.redact(&REQUEST[b..]));
                assert!(
                    leaks(&out).is_empty(),
                    "cuts at {a}, {b}: {}",
                    String::from_utf8_lossy(&out)
                );
                let text = String::from_utf8_lossy(&out);
                // Everything else passes through untouched.
                assert!(
                    text.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"),
                    "{text}"
                );
                assert!(text.ends_with("\r\n\r\n{\"messages\":[]}"), "{text}");
            }
        }
    }
}
