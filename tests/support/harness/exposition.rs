//! A small parser for the Prometheus text exposition format (version 0.0.4), enough to read one
//! sample by name and labels out of the agent's `/metrics` and to assert exact counts.
//!
//! Handles `# HELP` / `# TYPE` lines, label values with `\\`, `\"` and `\n` escapes, `+Inf`, `-Inf`
//! and `NaN` values, optional timestamps, and histograms (`_bucket{le=…}`, `_sum`, `_count`).

use std::collections::BTreeMap;
use std::fmt;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// Whether every `(name, value)` pair in `subset` is one of this sample's labels.
    pub fn has_labels(&self, subset: &[(&str, &str)]) -> bool {
        subset
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` per family name.
    pub types: BTreeMap<String, String>,
    /// `# HELP` per family name, unescaped.
    pub help: BTreeMap<String, String>,
}

/// A histogram read back from its `_bucket`, `_sum` and `_count` samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `(upper bound, cumulative count)`, ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The cumulative count of observations ≤ `le` (the bucket with exactly that bound).
    pub fn count_le(&self, le: f64) -> Option<f64> {
        self.buckets.iter().find(|(b, _)| *b == le).map(|(_, c)| *c)
    }
}

/// Where and why a line did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exposition line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Exposition {
    pub fn parse(text: &str) -> Result<Exposition, ParseError> {
        let mut out = Exposition::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ParseError {
                line: i + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut parts = comment.trim_start().splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        out.types.insert(name.to_owned(), kind.trim().to_owned());
                    }
                    (Some("HELP"), Some(name), doc) => {
                        out.help
                            .insert(name.to_owned(), unescape_help(doc.unwrap_or_default()));
                    }
                    // Other comments carry nothing.
                    _ => {}
                }
                continue;
            }
            out.samples.push(parse_sample(line).map_err(err)?);
        }
        Ok(out)
    }

    /// The value of the sample with exactly this name and label set.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && s.has_labels(labels))
            .map(|s| s.value)
    }

    /// Samples of `name` whose labels include `subset`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        subset: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has_labels(subset))
    }

    /// The sum over samples of `name` whose labels include `subset` (0 when there are none), e.g.
    /// all requests of one model across status classes.
    pub fn sum(&self, name: &str, subset: &[(&str, &str)]) -> f64 {
        // Starting from +0.0: an empty float sum is -0.0, which reads oddly in failure messages.
        self.matching(name, subset)
            .fold(0.0, |acc, s| acc + s.value)
    }

    /// Whether any sample of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// The histogram `family` with labels including `subset`, its series summed (buckets by bound),
    /// or `None` when it has no `_count` sample matching.
    pub fn histogram(&self, family: &str, subset: &[(&str, &str)]) -> Option<Histogram> {
        let count_name = format!("{family}_count");
        self.matching(&count_name, subset).next()?;
        let bucket_name = format!("{family}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in self.matching(&bucket_name, subset) {
            let le = s.labels.get("le").and_then(|le| parse_value(le).ok())?;
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram {
            buckets,
            sum: self.sum(&format!("{family}_sum"), subset),
            count: self.sum(&count_name, subset),
        })
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("missing value")?)?;
    let timestamp_ms = match fields.next() {
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp {ts:?}"))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `name="value",…}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let name = s[..eq].trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in label {name:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated value of label {name:?}")),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name:?} repeated"));
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".to_owned());
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse::<f64>().map_err(|_| format!("bad value {v:?}")),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn unescape_help(doc: &str) -> String {
    let mut out = String::new();
    let mut chars = doc.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP llm_requests_total Requests served.\nBy status class.
# TYPE llm_requests_total counter
llm_requests_total{api="openai",model="m1",status="2xx"} 5
llm_requests_total{api="openai",model="m1",status="5xx"} 2
llm_requests_total{api="ollama",model="odd \"q\" \\ \n",status="2xx",} 1 1700000000000
# a free comment
llm_active_requests 0
# TYPE llm_time_to_first_token_seconds histogram
llm_time_to_first_token_seconds_bucket{api="openai",le="0.1"} 1
llm_time_to_first_token_seconds_bucket{api="openai",le="0.25"} 3
llm_time_to_first_token_seconds_bucket{api="openai",le="+Inf"} 4
llm_time_to_first_token_seconds_sum{api="openai"} 0.75
llm_time_to_first_token_seconds_count{api="openai"} 4
weird_values{a="1"} NaN
neg{a="1"} -Inf
sci 1.5e-3
"#;

    #[test]
    fn reads_samples_by_name_and_labels() {
        let e = Exposition::parse(TEXT).expect("valid exposition");
        assert_eq!(
            e.get(
                "llm_requests_total",
                &[("api", "openai"), ("model", "m1"), ("status", "2xx")]
            ),
            Some(5.0)
        );
        // Exact label sets only: a subset is not a match for `get`…
        assert_eq!(e.get("llm_requests_total", &[("api", "openai")]), None);
        // …but is for `sum`.
        assert_eq!(e.sum("llm_requests_total", &[("api", "openai")]), 7.0);
        assert_eq!(e.sum("llm_requests_total", &[]), 8.0);
        assert_eq!(e.sum("llm_requests_total", &[("api", "anthropic")]), 0.0);
        assert_eq!(e.get("llm_active_requests", &[]), Some(0.0));
        assert_eq!(e.get("sci", &[]), Some(0.0015));
        assert!(
            e.get("weird_values", &[("a", "1")])
                .is_some_and(f64::is_nan)
        );
        assert_eq!(e.get("neg", &[("a", "1")]), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn unescapes_label_values_and_help() {
        let e = Exposition::parse(TEXT).expect("valid exposition");
        let odd = e
            .matching("llm_requests_total", &[("api", "ollama")])
            .next()
            .expect("the ollama sample");
        assert_eq!(odd.labels["model"], "odd \"q\" \\ \n");
        assert_eq!(odd.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(
            e.help["llm_requests_total"],
            "Requests served.\nBy status class."
        );
        assert_eq!(e.types["llm_time_to_first_token_seconds"], "histogram");
    }

    #[test]
    fn reads_histograms() {
        let e = Exposition::parse(TEXT).expect("valid exposition");
        let h = e
            .histogram("llm_time_to_first_token_seconds", &[("api", "openai")])
            .expect("histogram");
        assert_eq!(
            h.buckets,
            vec![(0.1, 1.0), (0.25, 3.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!((h.sum, h.count), (0.75, 4.0));
        assert_eq!(h.count_le(0.25), Some(3.0));
        assert!(
            e.histogram("llm_time_to_first_token_seconds", &[("api", "ollama")])
                .is_none()
        );
    }

    #[test]
    fn rejects_malformed_lines_with_their_number() {
        let bad = [
            ("m{a=\"1\" 1", "expected ',' or '}'"),
            ("m{a=1} 1", "not quoted"),
            ("m{a=\"1} 1", "unterminated"),
            ("m{a=\"\\x\"} 1", "bad escape"),
            ("m{a=\"1\",a=\"2\"} 1", "repeated"),
            ("m one", "bad value"),
            ("m 1 2 3", "unexpected"),
            ("m", "missing value"),
            ("1m 1", "bad metric name"),
        ];
        for (line, why) in bad {
            let err = Exposition::parse(&format!("ok 1\n{line}\n")).expect_err(line);
            assert_eq!(err.line, 2, "{line}");
            assert!(err.message.contains(why), "{line}: {}", err.message);
        }
    }

    /// The agent's own golden exposition (owned by the sinks) parses completely, so this parser
    /// reads what the agent writes.
    #[test]
    fn parses_the_agents_golden_exposition() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../llm-observer/tests/data/metrics_golden.prom"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("no {path}: skipped");
            return;
        };
        let e = Exposition::parse(&text).expect("the golden exposition parses");
        assert!(e.samples.len() > 50);
        assert_eq!(
            e.types.get("llm_requests_total").map(String::as_str),
            Some("counter")
        );
        assert!(
            e.histogram("llm_time_to_first_token_seconds", &[])
                .is_some()
        );
    }
}
