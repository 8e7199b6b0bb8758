//! A small parser of the Prometheus text exposition (format 0.0.4), enough for `top` to read the
//! agent's own `/metrics`: sample lines with labels, values (including `+Inf`/`NaN`) and optional
//! timestamps. `# HELP`/`# TYPE` lines carry nothing `top` needs and are skipped.

use std::fmt;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or "" when the sample has none (as PromQL treats it).
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Why a line could not be parsed, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exposition line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition; the first malformed line fails it (a half-read scrape would show
/// wrong numbers, which is worse than showing the error).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?;
        out.push(sample);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    // An optional timestamp (milliseconds); anything after it is malformed.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing text after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("bad label name");
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label");
        }
    }
}

fn parse_value(s: &str) -> Result<f64, &'static str> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| "bad value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_samples_labels_escapes_and_special_values() {
        let text = "# HELP llm_requests_total Requests.\n\
                    # TYPE llm_requests_total counter\n\
                    llm_requests_total{model=\"a\\\"b\",server=\"x\\\\y\",note=\"l1\\nl2\"} 3\n\
                    \n\
                    llm_queue_size 0\n\
                    h_bucket{le=\"+Inf\"} 7 1700000000000\n\
                    g{a=\"1\",} -Inf\n\
                    n NaN\n";
        let s = parse(text).expect("parses");
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "llm_requests_total");
        assert_eq!(
            s[0].labels,
            labels(&[("model", "a\"b"), ("server", "x\\y"), ("note", "l1\nl2")])
        );
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[0].label("model"), "a\"b");
        assert_eq!(s[0].label("absent"), "");
        assert_eq!(
            (s[1].name.as_str(), s[1].labels.len(), s[1].value),
            ("llm_queue_size", 0, 0.0)
        );
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!(s[2].value, 7.0);
        assert_eq!(s[3].labels, labels(&[("a", "1")]));
        assert_eq!(s[3].value, f64::NEG_INFINITY);
        assert!(s[4].value.is_nan());
    }

    #[test]
    fn label_values_may_hold_braces_commas_and_spaces() {
        let s = parse("m{a=\"x, y} z\",b=\"\"} 1.5e1\n").expect("parses");
        assert_eq!(s[0].labels, labels(&[("a", "x, y} z"), ("b", "")]));
        assert_eq!(s[0].value, 15.0);
    }

    #[test]
    fn malformed_lines_fail_with_their_number() {
        for (text, reason) in [
            ("ok 1\nm{a=\"x} 1\n", "unterminated label value"),
            ("ok 1\nm{a=x} 1\n", "label value not quoted"),
            ("ok 1\nm{a=\"\\q\"} 1\n", "bad escape in label value"),
            ("ok 1\nm\n", "no value"),
            ("ok 1\nm abc\n", "bad value"),
            ("ok 1\nm 1 2 3\n", "trailing text after the timestamp"),
            ("ok 1\nm 1 x\n", "bad timestamp"),
            (
                "ok 1\nm{a=\"1\" b=\"2\"} 1\n",
                "expected ',' or '}' after a label",
            ),
            ("ok 1\nm-x 1\n", "bad metric name"),
        ] {
            assert_eq!(parse(text), Err(ParseError { line: 2, reason }), "{text:?}");
        }
    }
}
