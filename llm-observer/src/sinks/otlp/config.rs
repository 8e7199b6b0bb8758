//! Where spans go: the protocol, endpoint and headers from flags and the standard
//! `OTEL_EXPORTER_OTLP_*` variables (flags win), parsed and checked at start so a bad setting
//! fails at once.

use std::{collections::BTreeMap, time::Duration};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "OTLP endpoint {0:?}: only http:// endpoints are supported (run a local collector for TLS)"
    )]
    Scheme(String),
    #[error("OTLP endpoint {0:?}: no host:port")]
    Address(String),
    #[error("OTLP protocol {0:?}: expected grpc or http/protobuf (http/json is not supported)")]
    Protocol(String),
    #[error("OTLP header {0:?}: expected key=value with a valid header name and value")]
    Header(String),
}

/// How spans travel: the two OTLP transports the specification defines with protobuf bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST {endpoint}/v1/traces`, `application/x-protobuf` (the specification's default).
    HttpProtobuf,
    /// The unary `TraceService/Export` call over HTTP/2 (h2c), default port 4317.
    Grpc,
}

impl Protocol {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(ConfigError::Protocol(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A parsed `http://host:port/path` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// `host:port` to connect to.
    pub authority: String,
    /// Request path of OTLP/HTTP (`/v1/traces` by default); empty for gRPC, whose method path is
    /// fixed.
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub queue_spans: usize,
    pub batch_spans: usize,
    pub flush_interval: Duration,
}

/// The flags' values; `env` reads the process environment (a closure, so tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct OtlpSettings {
    /// `grpc` or `http/protobuf`; `None`: the standard variables, else `http/protobuf`.
    pub protocol: Option<String>,
    pub endpoint: Option<String>,
    pub headers: Vec<String>,
    pub timeout_ms: u64,
    pub queue_spans: usize,
    pub batch_spans: usize,
    pub flush_ms: u64,
}

/// `%XX` escapes decoded (header values are URL-encoded in `OTEL_EXPORTER_OTLP_HEADERS`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_headers(list: &str, into: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::Header(item.to_owned()))?;
        let k = percent_decode(k.trim()).to_ascii_lowercase();
        let v = percent_decode(v.trim());
        // Checked here rather than per batch: a header no request can carry would fail every
        // export. gRPC metadata is HTTP/2 headers, so the same rule covers both transports.
        if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(&v).is_err()
        {
            return Err(ConfigError::Header(item.to_owned()));
        }
        into.insert(k, v);
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<(String, String), ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ConfigError::Scheme(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(ConfigError::Address(url.to_owned()));
    }
    Ok((authority.to_owned(), path.to_owned()))
}

impl OtlpConfig {
    /// Where spans go, for logs (a gRPC endpoint has no path).
    pub fn target(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }

    /// `None` when no endpoint is configured (export off).
    pub fn resolve(
        s: &OtlpSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpConfig>, ConfigError> {
        let protocol = match s.protocol.clone().or_else(|| {
            env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        }) {
            Some(p) => Protocol::parse(&p)?,
            None => Protocol::HttpProtobuf,
        };
        // OTLP/HTTP: a base endpoint gets the signal's path, a traces endpoint is used as given.
        // gRPC: every endpoint is `host:port` and the method path is fixed, so a path is ignored.
        let base = |url: String| -> Result<(String, String), ConfigError> {
            let (a, p) = parse_url(&url)?;
            Ok((a, format!("{}/v1/traces", p.trim_end_matches('/'))))
        };
        let (authority, path) = match (&s.endpoint, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(url), _) => base(url.clone())?,
            (None, Some(url)) => {
                let (a, p) = parse_url(&url)?;
                (a, if p.is_empty() { "/".to_owned() } else { p })
            }
            (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(url) => base(url)?,
                None => return Ok(None),
            },
        };
        let path = match protocol {
            Protocol::HttpProtobuf => path,
            Protocol::Grpc => String::new(),
        };
        let mut headers = BTreeMap::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = env(var) {
                parse_headers(&list, &mut headers)?;
            }
        }
        for h in &s.headers {
            parse_headers(h, &mut headers)?;
        }
        // gRPC metadata: a `-bin` key carries binary values, which a text setting cannot give.
        if protocol == Protocol::Grpc
            && let Some(k) = headers.keys().find(|k| k.ends_with("-bin"))
        {
            return Err(ConfigError::Header(k.clone()));
        }
        let timeout_ms = if s.timeout_ms > 0 {
            s.timeout_ms
        } else {
            env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
                .and_then(|t| t.parse().ok())
                .unwrap_or(10_000)
        };
        Ok(Some(OtlpConfig {
            protocol,
            authority,
            path,
            headers,
            timeout: Duration::from_millis(timeout_ms),
            queue_spans: s.queue_spans.max(1),
            batch_spans: s.batch_spans.max(1),
            flush_interval: Duration::from_millis(s.flush_ms.max(1)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>) -> OtlpSettings {
        OtlpSettings {
            protocol: None,
            endpoint: endpoint.map(str::to_owned),
            headers: vec![],
            timeout_ms: 0,
            queue_spans: 2048,
            batch_spans: 512,
            flush_ms: 1000,
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(OtlpConfig::resolve(&settings(None), env(&[])), Ok(None));
    }

    #[test]
    fn standard_variables_and_flags() {
        let c = OtlpConfig::resolve(
            &settings(None),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-tenant=t1"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("collector:4318", "/v1/traces")
        );
        assert_eq!(c.headers["api-key"], "a b");
        assert_eq!(c.headers["x-tenant"], "t1");
        assert_eq!(c.timeout, Duration::from_millis(2500));

        let c = OtlpConfig::resolve(
            &settings(None),
            env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:9/custom",
            )]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.path, "/custom");

        let mut s = settings(Some("http://127.0.0.1:4318"));
        s.headers = vec!["a=1".into()];
        let c = OtlpConfig::resolve(&s, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        assert_eq!(c.headers["a"], "1");
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        let s = settings(Some("https://collector:4318"));
        assert!(matches!(
            OtlpConfig::resolve(&s, env(&[])),
            Err(ConfigError::Scheme(_))
        ));
        let s = settings(Some("http://collector"));
        assert!(matches!(
            OtlpConfig::resolve(&s, env(&[])),
            Err(ConfigError::Address(_))
        ));
        let s = settings(Some("http://c:1"));
        assert_eq!(
            OtlpConfig::resolve(&s, env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])),
            Err(ConfigError::Protocol("http/json".into()))
        );
        for bad in ["bad name=1", "k=line\nbreak"] {
            let mut s = settings(Some("http://c:1"));
            s.headers = vec![bad.into()];
            assert_eq!(
                OtlpConfig::resolve(&s, env(&[])),
                Err(ConfigError::Header(bad.into()))
            );
        }
        let mut s = settings(Some("http://c:1"));
        s.headers = vec!["novalue".into()];
        assert!(matches!(
            OtlpConfig::resolve(&s, env(&[])),
            Err(ConfigError::Header(_))
        ));
        assert_eq!(percent_decode("%41%zz%4"), "A%zz%4");
    }

    #[test]
    fn a_binary_metadata_key_is_refused_for_grpc() {
        let mut s = settings(Some("http://c:4317"));
        s.protocol = Some("grpc".into());
        s.headers = vec!["x-trace-bin=abc".into()];
        assert_eq!(
            OtlpConfig::resolve(&s, env(&[])),
            Err(ConfigError::Header("x-trace-bin".into()))
        );
        s.protocol = None;
        assert!(
            OtlpConfig::resolve(&s, env(&[])).is_ok(),
            "a plain header over HTTP"
        );
    }

    #[test]
    fn grpc_from_the_flag_or_the_standard_variables() {
        // The flag wins over the variables; the signal-specific variable over the general one.
        let mut s = settings(Some("http://collector:4317/ignored"));
        s.protocol = Some("grpc".into());
        let c = OtlpConfig::resolve(&s, env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.protocol, c.authority.as_str(), c.path.as_str()),
            (Protocol::Grpc, "collector:4317", "")
        );
        let c = OtlpConfig::resolve(
            &settings(None),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        let c = OtlpConfig::resolve(&settings(Some("http://c:4318")), env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.protocol, c.path.as_str()),
            (Protocol::HttpProtobuf, "/v1/traces")
        );
    }
}
