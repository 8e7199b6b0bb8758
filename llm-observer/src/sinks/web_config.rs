//! `--web.config.file`: the Prometheus exporter-toolkit web configuration (YAML), so the agent's
//! `/metrics` is secured the way every Prometheus exporter is. Format:
//! <https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>.
//!
//! This module only parses and validates (no file is read but the config itself); [`super::tls`]
//! turns the result into a rustls server config and [`super::auth`] checks basic-auth credentials.
//! Unknown keys are errors naming the key (the toolkit parses strictly too). Keys of the format that
//! this server cannot honour exactly are errors too, never silently ignored, when ignoring them would
//! let in clients the operator meant to keep out.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid web config: {0}")]
    Syntax(String),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid(msg.into())
}

// The file as written. `deny_unknown_fields` makes a misspelt key an error that names it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<serde::de::IgnoredAny>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// PEM text from a file (relative paths are relative to the config file) or given inline.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl fmt::Debug for Pem {
    // Inline PEM may be a private key: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "File({})", p.display()),
            Pem::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

/// `client_auth_type` values this server enforces. The toolkit's `RequestClientCert` and
/// `RequireAnyClientCert` accept a certificate without verifying it; they are refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls10 => "TLS10",
            TlsVersion::Tls11 => "TLS11",
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

impl TlsVersion {
    fn parse(key: &str, s: &str) -> Result<TlsVersion, WebConfigError> {
        Ok(match s {
            "TLS10" => TlsVersion::Tls10,
            "TLS11" => TlsVersion::Tls11,
            "TLS12" => TlsVersion::Tls12,
            "TLS13" => TlsVersion::Tls13,
            _ => {
                return Err(invalid(format!(
                    "tls_server_config.{key}: unknown TLS version {s:?} (one of TLS10, TLS11, TLS12, TLS13)"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    /// Lowest version served: TLS10/TLS11 requests are raised to TLS 1.2 (rustls has no older).
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// IANA names (as Go spells them) of the TLS 1.2 suites allowed; empty = rustls's defaults.
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// Key exchange groups by Go name (`X25519`, `CurveP256`, `CurveP384`), in preference order.
    pub curve_preferences: Vec<String>,
}

/// A validated web config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash. Empty: no authentication.
    pub basic_auth_users: BTreeMap<String, String>,
    /// Extra response headers (`http_server_config.headers`), validated like the toolkit does.
    pub headers: Vec<(String, String)>,
    /// Settings accepted but not applied, for the startup log.
    pub warnings: Vec<String>,
}

/// Headers the toolkit lets a config set, with their allowed values (empty: any value).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads and validates `path`; relative file names inside are taken from its directory.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        WebConfig::parse(&text, dir)
    }

    /// Validates YAML `text`; relative file names are joined to `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawConfig = if is_blank_yaml(text) {
            RawConfig::default()
        } else {
            // No source snippet in the message: the line could be an inline private key.
            let options = serde_saphyr::options! { with_snippet: false };
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| WebConfigError::Syntax(e.to_string()))?
        };
        let mut warnings = Vec::new();
        if raw.rate_limit.is_some() {
            return Err(invalid(
                "rate_limit is not supported by llm-observer (remove it; the endpoint already bounds concurrent connections)",
            ));
        }
        let tls = match raw.tls_server_config {
            Some(t) => tls_settings(t, dir, &mut warnings)?,
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            if http.http2 == Some(true) {
                warnings.push(
                    "http_server_config.http2: HTTP/2 is not offered; /metrics is served over HTTP/1.1"
                        .into(),
                );
            }
            for (name, value) in http.headers.unwrap_or_default() {
                let Some((canonical, allowed)) = EXTRA_HEADERS
                    .iter()
                    .find(|(h, _)| h.eq_ignore_ascii_case(&name))
                else {
                    return Err(invalid(format!(
                        "http_server_config.headers: header {name:?} can not be configured (allowed: {})",
                        EXTRA_HEADERS
                            .iter()
                            .map(|(h, _)| *h)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                    return Err(invalid(format!(
                        "http_server_config.headers.{canonical}: {value:?} is not one of {allowed:?}"
                    )));
                }
                if value.bytes().any(|b| b.is_ascii_control()) {
                    return Err(invalid(format!(
                        "http_server_config.headers.{canonical}: control characters in the value"
                    )));
                }
                // Blank means unset, as in the toolkit's documentation.
                if !value.is_empty() {
                    headers.push(((*canonical).to_owned(), value));
                }
            }
        }
        let basic_auth_users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &basic_auth_users {
            if user.contains(':') {
                return Err(invalid(format!(
                    "basic_auth_users: user name {user:?} contains ':' (basic auth cannot carry it)"
                )));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                )));
            }
        }
        Ok(WebConfig {
            tls,
            basic_auth_users,
            headers,
            warnings,
        })
    }
}

/// Empty files and files of comments only are valid configs (plain HTTP, no auth).
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

fn pem_source(
    dir: &Path,
    file_key: &str,
    file: Option<String>,
    inline_key: &str,
    inline: Option<String>,
) -> Result<Option<Pem>, WebConfigError> {
    match (
        file.filter(|s| !s.is_empty()),
        inline.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "tls_server_config: give {file_key} or {inline_key}, not both"
        ))),
        (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
        (None, Some(text)) => Ok(Some(Pem::Inline(text))),
        (None, None) => Ok(None),
    }
}

fn tls_settings(
    t: RawTls,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsSettings>, WebConfigError> {
    if t.client_allowed_sans.is_some() {
        return Err(invalid(
            "tls_server_config.client_allowed_sans is not supported by llm-observer; restrict clients with client_ca_file instead",
        ));
    }
    let cert = pem_source(dir, "cert_file", t.cert_file, "cert", t.cert)?;
    let key = pem_source(dir, "key_file", t.key_file, "key", t.key)?;
    let client_ca = pem_source(
        dir,
        "client_ca_file",
        t.client_ca_file,
        "client_ca",
        t.client_ca,
    )?;
    let client_auth_type = t.client_auth_type.filter(|s| !s.is_empty());
    // The toolkit's rule: any TLS key set turns TLS on, and then cert and key are required.
    if cert.is_none() && key.is_none() && client_ca.is_none() && client_auth_type.is_none() {
        return Ok(None);
    }
    let cert =
        cert.ok_or_else(|| invalid("tls_server_config: missing one of cert or cert_file"))?;
    let key = key.ok_or_else(|| invalid("tls_server_config: missing one of key or key_file"))?;
    let client_auth = match client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::NoClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert") => {
            return Err(invalid(format!(
                "tls_server_config.client_auth_type: {other} accepts unverified client certificates and is not supported; use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
            )));
        }
        other => {
            return Err(invalid(format!(
                "tls_server_config.client_auth_type: unknown value {other:?} (NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            )));
        }
    };
    match (client_auth, &client_ca) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(invalid(
                "tls_server_config: client CAs are configured without a client_auth_type (set RequireAndVerifyClientCert)",
            ));
        }
        (ClientAuth::NoClientCert, None) | (_, Some(_)) => {}
        (_, None) => {
            return Err(invalid(
                "tls_server_config: client_auth_type verifies client certificates but neither client_ca_file nor client_ca is set",
            ));
        }
    }
    let min_version = match t.min_version.as_deref() {
        Some(v) => TlsVersion::parse("min_version", v)?,
        None => TlsVersion::Tls12,
    };
    let max_version = match t.max_version.as_deref() {
        Some(v) => TlsVersion::parse("max_version", v)?,
        None => TlsVersion::Tls13,
    };
    if max_version < min_version {
        return Err(invalid(format!(
            "tls_server_config: max_version {max_version} is below min_version {min_version}"
        )));
    }
    if max_version < TlsVersion::Tls12 {
        return Err(invalid(
            "tls_server_config.max_version: TLS 1.0 and 1.1 are not supported (rustls serves TLS 1.2 and 1.3)",
        ));
    }
    if min_version < TlsVersion::Tls12 {
        warnings.push(format!(
            "tls_server_config.min_version {min_version}: TLS 1.0 and 1.1 are not offered; the minimum is TLS 1.2"
        ));
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        min_version: min_version.max(TlsVersion::Tls12),
        max_version,
        cipher_suites: t.cipher_suites.unwrap_or_default(),
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences: t.curve_preferences.unwrap_or_default(),
    }))
}

#[cfg(test)]
#[path = "web_config_tests.rs"]
mod tests;
