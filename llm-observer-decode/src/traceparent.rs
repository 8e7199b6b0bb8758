//! W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header):
//! `version-traceid-parentid-flags` in lowercase hex. A request that carries one belongs to the
//! caller's trace, so the agent's span of it becomes that span's child.

use serde::Serialize;

/// A valid `traceparent` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TraceParent {
    #[serde(serialize_with = "hex_ser")]
    pub trace_id: [u8; 16],
    #[serde(serialize_with = "hex_ser")]
    pub parent_id: [u8; 8],
    pub flags: u8,
}

fn hex_ser<S: serde::Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 * N);
    for b in v {
        let _ = write!(out, "{b:02x}");
    }
    s.serialize_str(&out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

impl TraceParent {
    /// Parses a header value; `None` for anything the specification says to ignore (bad
    /// lengths, uppercase or non-hex digits, version `ff`, all-zero ids).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let v = value.trim_ascii();
        // Version 00 is exactly 55 bytes; later versions may append `-` and more fields.
        if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let version = hex::<1>(&v[0..2])?[0];
        if version == 0xff || (version == 0 && v.len() != 55) {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id = hex::<16>(&v[3..35])?;
        let parent_id = hex::<8>(&v[36..52])?;
        let flags = hex::<1>(&v[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_specification_example() {
        let t = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(t.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(
            t.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(t.flags, 1);
        assert_eq!(
            serde_json::to_value(t).unwrap()["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // A later version may carry more fields.
        assert!(
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn rejects_what_the_specification_ignores() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01".as_bytes(),
        ] {
            assert_eq!(
                TraceParent::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
