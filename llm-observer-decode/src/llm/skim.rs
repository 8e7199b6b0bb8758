//! A minimal, allocation-free JSON walker for the per-token hot path (OpenAI chunks, Ollama lines).
//!
//! Why not serde: a stream event is ~250 bytes of which the decoder needs a handful of fields; a
//! derived `Deserialize` spends most of its time matching and visiting fields it then drops. This
//! walker visits the keys of an object, lets the caller read the few values it wants, and skips the
//! rest with `memchr` over strings, so framing + JSON stays above 1 GB/s.
//!
//! Validation: structure (brackets, commas, colons, literals, string escapes) is checked, and
//! nesting is bounded ([`MAX_DEPTH`]); skipped strings are not checked for UTF-8 or control
//! characters (as serde's `IgnoredAny` does not check UTF-8 either). Strings that are read are
//! UTF-8-checked, and unescaped by serde_json when they contain escapes.

use std::borrow::Cow;

/// The input is not (acceptable) JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bad;

pub(crate) type R<T> = Result<T, Bad>;

/// Deeper nesting is rejected (bounds the recursion on hostile input).
pub(crate) const MAX_DEPTH: u32 = 128;

pub(crate) struct Skim<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

/// Bytes scanned a word at a time before [`quote_or_escape`] hands the rest to memchr.
const SHORT: usize = 32;

/// Index of the first `"` or `\` in `b`. Keys and most values are short, where memchr's setup
/// costs more than the scan: their first [`SHORT`] bytes are tested 8 at a time (a byte equal to
/// `c` is a zero byte of `w ^ c·0x01…01`, and `(x - 0x01…01) & !x & 0x80…80` flags the first zero
/// byte of `x` exactly: a borrow can only flag bytes above a true one).
#[inline]
fn quote_or_escape(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let words = b.len().min(SHORT) / 8;
    for (k, c) in b.chunks_exact(8).take(words).enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let w = u64::from_le_bytes(a);
        let m = zero(w ^ (LO * u64::from(b'"'))) | zero(w ^ (LO * u64::from(b'\\')));
        if m != 0 {
            return Some(k * 8 + (m.trailing_zeros() / 8) as usize);
        }
    }
    let done = words * 8;
    let rest = &b[done..];
    if done < SHORT {
        // Fewer than 8 bytes left before the end.
        return rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\')
            .map(|p| done + p);
    }
    memchr::memchr2(b'"', b'\\', rest).map(|p| done + p)
}

impl<'a> Skim<'a> {
    /// Walks a whole document: `f` must consume exactly one value, then only whitespace may follow.
    pub(crate) fn document<T>(b: &'a [u8], f: impl FnOnce(&mut Skim<'a>) -> R<T>) -> R<T> {
        let mut s = Skim { b, i: 0, depth: 0 };
        let v = f(&mut s)?;
        s.ws();
        if s.i == b.len() { Ok(v) } else { Err(Bad) }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bad)
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Bad)
        } else {
            Ok(())
        }
    }

    /// Visits an object: `f(self, raw_key)` is called with the cursor at each value and must
    /// consume it. Keys are compared raw (a key written with escapes matches nothing).
    pub(crate) fn object(&mut self, f: impl FnMut(&mut Self, &'a [u8]) -> R<()>) -> R<()> {
        self.expect(b'{')?;
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        self.members(f)
    }

    /// The rest of the document's top-level object, from `at`: the start of a member (just past
    /// the comma after another member). For a caller that has walked a byte-identical prefix of
    /// another document up to there and needs nothing from it (stream chunks repeat their first
    /// members); the prefix includes that comma, so its last value cannot run on in this one.
    pub(crate) fn object_after(
        &mut self,
        at: usize,
        f: impl FnMut(&mut Self, &'a [u8]) -> R<()>,
    ) -> R<()> {
        if self.i != 0 || at > self.b.len() {
            return Err(Bad);
        }
        self.i = at;
        self.enter()?;
        self.members(f)
    }

    /// Where the cursor is (after a value: the caller's `f` has consumed it).
    pub(crate) fn pos(&self) -> usize {
        self.i
    }

    /// From the opening quote of an object's member key: its members and closing brace.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> R<()>) -> R<()> {
        loop {
            if self.peek() != Some(b'"') {
                return Err(Bad);
            }
            let (key, _) = self.raw_str()?;
            self.expect(b':')?;
            f(self, key)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Bad),
            }
        }
    }

    /// Visits an array (`null` counts as empty): `f(self, index)` must consume each element.
    /// Returns the element count.
    pub(crate) fn array(&mut self, mut f: impl FnMut(&mut Self, usize) -> R<()>) -> R<usize> {
        if self.null()? {
            return Ok(0);
        }
        self.expect(b'[')?;
        self.enter()?;
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(0);
        }
        let mut n = 0;
        loop {
            f(self, n)?;
            n += 1;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(n);
                }
                _ => return Err(Bad),
            }
        }
    }

    /// An object, or `null` (then `f` is not called). True when it was an object.
    pub(crate) fn object_or_null(
        &mut self,
        f: impl FnMut(&mut Self, &'a [u8]) -> R<()>,
    ) -> R<bool> {
        if self.null()? {
            return Ok(false);
        }
        self.object(f)?;
        Ok(true)
    }

    /// Cursor at the opening quote: returns the raw contents and whether they hold escapes.
    fn raw_str(&mut self) -> R<(&'a [u8], bool)> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            let rel = quote_or_escape(&self.b[self.i..]).ok_or(Bad)?;
            self.i += rel;
            if self.b[self.i] == b'"' {
                let s = &self.b[start..self.i];
                self.i += 1;
                return Ok((s, escaped));
            }
            escaped = true;
            match self.b.get(self.i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                Some(b'u') => {
                    let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Bad)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(Bad);
                    }
                    self.i += 6;
                }
                _ => return Err(Bad),
            }
        }
    }

    fn literal(&mut self, lit: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// Consumes `null` if it is next.
    pub(crate) fn null(&mut self) -> R<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn number(&mut self) -> R<&'a [u8]> {
        let start = self.i;
        while let Some(c) = self.b.get(self.i) {
            if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E') {
                self.i += 1;
            } else {
                break;
            }
        }
        let n = &self.b[start..self.i];
        if n.iter().any(u8::is_ascii_digit) {
            Ok(n)
        } else {
            Err(Bad)
        }
    }

    /// The next non-whitespace byte, not consumed (which kind of value comes next).
    pub(crate) fn peek_byte(&mut self) -> Option<u8> {
        self.peek()
    }

    /// Skips any value.
    pub(crate) fn skip(&mut self) -> R<()> {
        match self.peek().ok_or(Bad)? {
            b'"' => self.raw_str().map(drop),
            b'{' => self.object(|s, _| s.skip()),
            b'[' => self.array(|s, _| s.skip()).map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => Err(Bad),
        }
    }

    /// A non-negative integer count (`12`, `12.0`); `None` for null, negatives, other types.
    pub(crate) fn count(&mut self) -> R<Option<u64>> {
        match self.peek().ok_or(Bad)? {
            b'-' | b'0'..=b'9' => {
                let n = self.number()?;
                // Plain digits (nearly every count) without a UTF-8 check and a generic parse; a
                // value past u64 goes on to the float reading below, as before.
                if n.iter().all(u8::is_ascii_digit) {
                    let v = n.iter().try_fold(0u64, |v, &d| {
                        v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    });
                    if let Some(v) = v {
                        return Ok(Some(v));
                    }
                }
                let f: f64 = std::str::from_utf8(n)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Bad)?;
                Ok((f >= 0.0 && f.fract() == 0.0 && f < 1.8e19).then_some(f as u64))
            }
            _ => self.skip().map(|()| None),
        }
    }

    /// A string (unescaped when needed); `None` for null or other types.
    pub(crate) fn str(&mut self) -> R<Option<Cow<'a, str>>> {
        if self.peek() != Some(b'"') {
            return self.skip().map(|()| None);
        }
        let start = self.i;
        let (raw, escaped) = self.raw_str()?;
        if !escaped {
            return std::str::from_utf8(raw)
                .map(|s| Some(Cow::Borrowed(s)))
                .map_err(|_| Bad);
        }
        serde_json::from_slice::<String>(&self.b[start..self.i])
            .map(|s| Some(Cow::Owned(s)))
            .map_err(|_| Bad)
    }

    /// Whether the value carries anything: non-empty string / array / object, any number or bool.
    pub(crate) fn nonempty(&mut self) -> R<bool> {
        match self.peek().ok_or(Bad)? {
            b'"' => self.raw_str().map(|(s, _)| !s.is_empty()),
            b'[' => self.array(|s, _| s.skip()).map(|n| n > 0),
            b'{' => {
                let mut any = false;
                self.object(|s, _| {
                    any = true;
                    s.skip()
                })?;
                Ok(any)
            }
            b'n' => self.literal(b"null").map(|()| false),
            _ => self.skip().map(|()| true),
        }
    }

    /// `true` / `false`; `None` for anything else.
    pub(crate) fn bool(&mut self) -> R<Option<bool>> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| Some(true)),
            Some(b'f') => self.literal(b"false").map(|()| Some(false)),
            _ => self.skip().map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(s: &str) -> R<Vec<String>> {
        Skim::document(s.as_bytes(), |k| {
            let mut keys = Vec::new();
            k.object(|k, key| {
                keys.push(String::from_utf8_lossy(key).into_owned());
                k.skip()
            })?;
            Ok(keys)
        })
    }

    #[test]
    fn accepts_json_and_rejects_junk() {
        assert_eq!(
            walk(r#" {"a":[1,-2.5e3,{"b":null}],"c":"x\"\u00e9","d":true} "#),
            Ok(vec!["a".into(), "c".into(), "d".into()])
        );
        for bad in [
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":1} x"#,
            r#"{a:1}"#,
            r#"{"a":[1 2]}"#,
            "",
        ] {
            assert_eq!(walk(bad), Err(Bad), "{bad}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(walk(&deep), Err(Bad));
    }

    #[test]
    fn quote_or_escape_finds_the_first_of_either_at_every_offset() {
        for len in 0..80 {
            for at in 0..=len {
                for c in [b'"', b'\\'] {
                    // Bytes that differ from the targets by one bit, and 0x01 / 0x00 bytes that
                    // trip a borrow-carrying word test.
                    let mut b: Vec<u8> = (0..len)
                        .map(|i| [b'#', b'!', 0x01, 0x00, b']'][i % 5])
                        .collect();
                    if at < len {
                        b[at] = c;
                        if at + 1 < len {
                            b[at + 1] = b'"';
                        }
                    }
                    let want = (at < len).then_some(at);
                    assert_eq!(quote_or_escape(&b), want, "len {len} at {at}");
                }
            }
        }
    }

    #[test]
    fn typed_reads() {
        let doc = br#"["a\nb", "x", 12, 12.0, -1, null, 18446744073709551615, 18446744073709551616, [], {"k":0}]"#;
        let r = Skim::document(doc, |s| {
            let mut v = Vec::new();
            s.array(|s, i| {
                v.push(match i {
                    0 | 1 => format!("{:?}", s.str()?),
                    2..=7 => format!("{:?}", s.count()?),
                    _ => format!("{:?}", s.nonempty()?),
                });
                Ok(())
            })?;
            Ok(v)
        });
        assert_eq!(
            r,
            Ok(vec![
                r#"Some("a\nb")"#.to_owned(),
                r#"Some("x")"#.into(),
                "Some(12)".into(),
                "Some(12)".into(),
                "None".into(),
                "None".into(),
                "Some(18446744073709551615)".into(),
                "None".into(),
                "false".into(),
                "true".into()
            ])
        );
    }
}
