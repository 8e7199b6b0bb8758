use super::*;

// bcrypt of "test" at cost 4 (the cheapest bcrypt allows).
const HASH: &str = "$2b$04$da4VQqVgJLaBjO1U8af30eqr6TiXKzYdHL57qioEahOhxITc6gwaO";

fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(text, Path::new("/etc/llmo"))
}

fn err(text: &str) -> String {
    parse(text).expect_err("must be refused").to_string()
}

#[test]
fn the_hash_constant_is_valid() {
    assert!(bcrypt::verify("test", HASH).expect("a bcrypt hash"));
}

#[test]
fn empty_and_comment_only_files_mean_plain_http() {
    for text in ["", "\n", "# nothing\n", "---\n# x\n"] {
        assert_eq!(
            parse(text).expect("valid"),
            WebConfig::default(),
            "{text:?}"
        );
    }
}

#[test]
fn every_key() {
    let text = format!(
        r#"
tls_server_config:
  cert_file: tls/server.crt
  key_file: /abs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: "1; mode=block"
    Content-Security-Policy: ""
basic_auth_users:
  prometheus: "{HASH}"
"#
    );
    let c = parse(&text).expect("valid");
    let t = c.tls.expect("TLS on");
    assert_eq!(t.cert, Pem::File("/etc/llmo/tls/server.crt".into()));
    assert_eq!(t.key, Pem::File("/abs/server.key".into()));
    assert_eq!(t.client_ca, Some(Pem::File("/etc/llmo/ca.pem".into())));
    assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        (t.min_version, t.max_version),
        (TlsVersion::Tls13, TlsVersion::Tls13)
    );
    assert_eq!(
        t.cipher_suites,
        vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    );
    assert!(!t.prefer_server_cipher_suites);
    assert_eq!(t.curve_preferences, vec!["X25519", "CurveP256"]);
    assert_eq!(
        c.headers,
        vec![
            (
                "Strict-Transport-Security".into(),
                "max-age=31536000".into()
            ),
            ("X-Content-Type-Options".into(), "nosniff".into()),
            ("X-Frame-Options".into(), "deny".into()),
            ("X-XSS-Protection".into(), "1; mode=block".into()),
        ]
    );
    assert_eq!(
        c.basic_auth_users.get("prometheus").map(String::as_str),
        Some(HASH)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults_and_inline_pem() {
    let c = parse("tls_server_config:\n  cert: |\n    CERT\n  key: KEY\n").expect("valid");
    let t = c.tls.expect("TLS on");
    assert_eq!(t.cert, Pem::Inline("CERT\n".into()));
    assert_eq!(t.key, Pem::Inline("KEY".into()));
    assert_eq!(t.client_auth, ClientAuth::NoClientCert);
    assert_eq!(
        (t.min_version, t.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert!(t.prefer_server_cipher_suites);
    // The inline key never shows in Debug output (which may reach a log).
    assert!(!format!("{t:?}").contains("KEY"));
    let c = parse("basic_auth_users: {}\nhttp_server_config: {}\n").expect("valid");
    assert_eq!(c, WebConfig::default());
}

#[test]
fn unsupported_but_harmless_settings_warn() {
    let c = parse(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\nhttp_server_config:\n  http2: true\n",
    )
    .expect("valid");
    assert_eq!(c.tls.expect("tls").min_version, TlsVersion::Tls12);
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("TLS 1.2"), "{:?}", c.warnings);
    assert!(c.warnings[1].contains("HTTP/1.1"), "{:?}", c.warnings);
}

#[test]
fn unknown_keys_are_named() {
    for (text, key) in [
        ("tls_config:\n  cert_file: a\n", "tls_config"),
        ("tls_server_config:\n  certfile: a\n", "certfile"),
        ("http_server_config:\n  http3: true\n", "http3"),
    ] {
        let e = err(text);
        assert!(e.contains(key) && e.contains("unknown field"), "{e}");
    }
}

#[test]
fn invalid_values_are_explained() {
    let tls = |extra: &str| format!("tls_server_config:\n  cert_file: a\n  key_file: b\n{extra}");
    for (text, needle) in [
        (
            "tls_server_config:\n  cert_file: a\n".to_owned(),
            "missing one of key or key_file",
        ),
        (
            "tls_server_config:\n  key_file: a\n".to_owned(),
            "missing one of cert or cert_file",
        ),
        (
            "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n".to_owned(),
            "missing one of cert",
        ),
        (tls("  cert: x\n"), "give cert_file or cert, not both"),
        (
            tls("  client_auth_type: Sometimes\n"),
            "unknown value \"Sometimes\"",
        ),
        (
            tls("  client_auth_type: RequireAnyClientCert\n"),
            "unverified client certificates",
        ),
        (
            tls("  client_auth_type: RequireAndVerifyClientCert\n"),
            "neither client_ca_file",
        ),
        (
            tls("  client_ca_file: ca.pem\n"),
            "without a client_auth_type",
        ),
        (
            tls("  min_version: TLS14\n"),
            "unknown TLS version \"TLS14\"",
        ),
        (
            tls("  min_version: TLS13\n  max_version: TLS12\n"),
            "below min_version",
        ),
        (
            tls("  min_version: TLS10\n  max_version: TLS11\n"),
            "TLS 1.0 and 1.1 are not supported",
        ),
        (
            tls("  max_version: TLS11\n"),
            "max_version TLS11 is below min_version TLS12",
        ),
        (
            tls("  client_allowed_sans: [a]\n"),
            "client_allowed_sans is not supported",
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 2\n".to_owned(),
            "rate_limit is not supported",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: me\n".to_owned(),
            "\"X-Powered-By\" can not be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n".to_owned(),
            "X-Frame-Options: \"allow\" is not one of",
        ),
        (
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n".to_owned(),
            "X-Content-Type-Options",
        ),
        (
            "basic_auth_users:\n  alice: plain-password\n".to_owned(),
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            format!("basic_auth_users:\n  \"a:b\": \"{HASH}\"\n"),
            "contains ':'",
        ),
        (
            "tls_server_config: [1, 2]\n".to_owned(),
            "not a valid web config",
        ),
        (
            "basic_auth_users:\n  - alice\n".to_owned(),
            "not a valid web config",
        ),
        ("key: [unclosed\n".to_owned(), "not a valid web config"),
    ] {
        let e = err(&text);
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    // Syntax errors name the place, not the text there (it could be an inline key).
    let e = err("tls_server_config:\n  key: |\n    SECRET-KEY\n  bogus: 1\n");
    assert!(
        e.contains("bogus") && e.contains("line 4") && !e.contains("SECRET-KEY"),
        "{e}"
    );
    // A bad hash is never echoed back (it may be a plain password written by mistake).
    assert!(!err("basic_auth_users:\n  alice: plain-password\n").contains("plain-password"));
}

#[test]
fn headers_are_matched_case_insensitively_and_canonicalised() {
    let c =
        parse("http_server_config:\n  headers:\n    x-frame-options: sameorigin\n").expect("valid");
    assert_eq!(
        c.headers,
        vec![("X-Frame-Options".into(), "sameorigin".into())]
    );
}

#[test]
fn load_reads_the_file_and_resolves_paths_next_to_it() {
    let dir = std::env::temp_dir().join(format!("llmo-webcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
    )
    .expect("write");
    let c = WebConfig::load(&path).expect("valid");
    assert_eq!(c.tls.expect("tls").cert, Pem::File(dir.join("c.pem")));
    let missing = WebConfig::load(&dir.join("nope.yml")).expect_err("no file");
    assert!(missing.to_string().contains("nope.yml"), "{missing}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_committed_sample_is_valid() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/web-config.example.yml");
    let c = WebConfig::load(&sample).expect("deploy/web-config.example.yml is valid");
    assert!(c.tls.is_some() && !c.basic_auth_users.is_empty());
}
