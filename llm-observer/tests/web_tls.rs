//! The endpoint with a web config: TLS with a generated CA, client certificates, basic auth,
//! configured headers, startup errors for bad files, and certificate rotation without a restart.

mod web_support;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use web_support::*;

#[tokio::test]
async fn tls_and_basic_auth() {
    let pki = Pki::new("auth");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let cfg = pki.config(&format!(
        "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n\
         http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
         basic_auth_users:\n  prometheus: \"{hash}\"\n"
    ));
    let server = bind()
        .await
        .with_web_config(&cfg)
        .expect("TLS config loads");
    assert!(server.is_tls());
    let m = metrics();
    let (addr, ready, stop) = start(server, m.clone());
    ready.set(true);
    let client = pki.client(&pki.ca_pem, false);

    let right = basic("prometheus", "s3cret");
    // Twice: the second is served from the verified-password cache, with the same answer.
    for _ in 0..2 {
        let ok = tls_get(
            addr,
            client.clone(),
            "/metrics",
            &[("Authorization", &right)],
        )
        .await
        .expect("TLS with the right CA");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.text(), m.encode());
        assert_eq!(ok.header("x-frame-options"), Some("deny"));
    }

    let wrong = basic("prometheus", "guess");
    let unknown = basic("root", "s3cret");
    for creds in [
        None,
        Some(wrong.as_str()),
        Some(unknown.as_str()),
        Some("Bearer s3cret"),
    ] {
        let extra: Vec<(&str, &str)> = creds.map(|c| ("Authorization", c)).into_iter().collect();
        for path in ["/metrics", "/", "/nope"] {
            let r = tls_get(addr, client.clone(), path, &extra)
                .await
                .expect("TLS");
            assert_eq!(r.status, 401, "{path} with {creds:?}");
            assert_eq!(r.header("www-authenticate"), Some("Basic"));
            assert_eq!(r.header("x-frame-options"), Some("deny"));
            assert!(!r.text().contains("llm_observer"), "{}", r.text());
        }
    }
    // Probes need no credentials.
    for path in ["/healthz", "/readyz"] {
        let r = tls_get(addr, client.clone(), path, &[]).await.expect("TLS");
        assert_eq!(r.status, 200, "{path}");
    }

    // Without the CA the client refuses the server; a plain-HTTP request gets no answer.
    let (other_ca, _) = ca("some other CA");
    let err = tls_get(addr, pki.client(&other_ca, false), "/healthz", &[])
        .await
        .err()
        .expect("an untrusted certificate fails the handshake");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request("GET", "/healthz", &[]).as_bytes())
        .await
        .expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    assert!(
        !raw.starts_with(b"HTTP/1.1 200"),
        "plain HTTP served over the TLS port"
    );

    stop().await.expect("join").expect("clean shutdown");
}

#[tokio::test]
async fn client_certificates_are_verified_as_configured() {
    let pki = Pki::new("mtls");
    let stranger = Pki::new("mtls-stranger");
    // Admitted: a client without a certificate, one with a certificate from the configured CA,
    // one with a certificate from another CA.
    for (mode, admitted) in [
        ("RequireAndVerifyClientCert", [false, true, false]),
        ("VerifyClientCertIfGiven", [true, true, false]),
    ] {
        let cfg = pki.config(&format!(
            "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n  \
             client_auth_type: {mode}\n  client_ca_file: tls/ca.crt\n"
        ));
        let server = bind().await.with_web_config(&cfg).expect("loads");
        let (addr, _, stop) = start(server, metrics());
        let clients = [
            ("no certificate", pki.client(&pki.ca_pem, false)),
            ("the CA's certificate", pki.client(&pki.ca_pem, true)),
            ("a foreign certificate", stranger.client(&pki.ca_pem, true)),
        ];
        for ((what, client), admit) in clients.into_iter().zip(admitted) {
            // TLS 1.3 checks the client's certificate after its Finished: a refusal shows on the
            // read, as an error instead of a response.
            let r = tls_get(addr, client, "/metrics", &[]).await;
            match r {
                Ok(r) => assert!(admit && r.status == 200, "{mode}: {what} got {}", r.status),
                Err(e) => assert!(!admit, "{mode}: {what} refused: {e}"),
            }
        }
        stop().await.expect("join").expect("clean shutdown");
    }
}

#[tokio::test]
async fn bad_files_fail_at_startup_with_the_reason() {
    let pki = Pki::new("bad");
    for (cert, key, needle) in [
        ("tls/none.crt", "tls/server.key", "cannot read cert"),
        ("tls/server.key", "tls/server.key", "no PEM certificate"),
        // The CA's certificate with the server's key: a key of another certificate.
        ("tls/ca.crt", "tls/server.key", "cert and key"),
    ] {
        let cfg = pki.config(&format!(
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        ));
        let e = bind().await.with_web_config(&cfg).expect_err("refused");
        assert!(e.to_string().contains(needle), "{cert}/{key}: {e}");
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let pki = Pki::new("rotate");
    let cfg =
        pki.config("tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n");
    let server = bind().await.with_web_config(&cfg).expect("loads");
    let (addr, _, stop) = start(server, metrics());
    let client = pki.client(&pki.ca_pem, false);
    let first = served_cert(addr, client.clone()).await;
    assert_eq!(
        served_cert(addr, client.clone()).await,
        first,
        "unchanged files: same certificate"
    );
    let second = pki.new_server_cert();
    assert_ne!(second, first);
    assert_eq!(
        served_cert(addr, client.clone()).await,
        second,
        "the rotated certificate"
    );
    // A rotation that does not load (here: a truncated certificate) keeps the last good one.
    std::fs::write(
        pki.dir.join("tls/server.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .expect("write");
    assert_eq!(
        served_cert(addr, client.clone()).await,
        second,
        "the previous certificate"
    );
    stop().await.expect("join").expect("clean shutdown");
}
