//! [`TlsSettings`] → a rustls [`ServerConfig`] (ring provider): certificate and key, client
//! certificate verification, protocol versions, TLS 1.2 cipher suites and key-exchange groups by
//! the names Go (and so the exporter-toolkit format) uses. Every file is read and checked here, at
//! startup, so a bad path or key is a startup error rather than a failed scrape. The certificate
//! and key files are checked again at each handshake and reloaded when they changed (the toolkit
//! re-reads them per connection too), so a rotated certificate is served without a restart.

use std::sync::{Arc, Mutex};

use rustls::{
    RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::{CryptoProvider, SupportedKxGroup, ring},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::auth::sha256;
use super::web_config::{ClientAuth, Pem, TlsSettings, TlsVersion, WebConfigError};

fn invalid(msg: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid(msg.into())
}

fn read_pem(pem: &Pem, what: &str) -> Result<Vec<u8>, WebConfigError> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => std::fs::read(path).map_err(|e| {
            invalid(format!(
                "tls_server_config: cannot read {what} {}: {e}",
                path.display()
            ))
        }),
    }
}

fn certs(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let bytes = read_pem(pem, what)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("tls_server_config: {what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "tls_server_config: {what} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

/// Go's `tls.CipherSuites()` names of the TLS 1.2 suites; rustls's `Debug` names are the same IANA
/// names, and Go also knows the ChaCha20 ones without their `_SHA256` suffix.
fn suite_matches(suite: &SupportedCipherSuite, name: &str) -> bool {
    let ours = format!("{:?}", suite.suite());
    ours == name || ours.strip_suffix("_SHA256") == Some(name) && name.contains("CHACHA20")
}

fn tls12_suite_names(provider: &CryptoProvider) -> Vec<String> {
    provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_none())
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// `cipher_suites` restricts TLS 1.2 only (as in Go, TLS 1.3 suites are not configurable).
fn select_suites(provider: &mut CryptoProvider, names: &[String]) -> Result<(), WebConfigError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut chosen: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_some())
        .copied()
        .collect();
    for name in names {
        let Some(suite) = provider
            .cipher_suites
            .iter()
            .find(|s| s.tls13().is_none() && suite_matches(s, name))
        else {
            return Err(invalid(format!(
                "tls_server_config.cipher_suites: {name:?} is not supported (supported TLS 1.2 suites: {})",
                tls12_suite_names(provider).join(", ")
            )));
        };
        chosen.push(*suite);
    }
    provider.cipher_suites = chosen;
    Ok(())
}

fn select_groups(provider: &mut CryptoProvider, names: &[String]) -> Result<(), WebConfigError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for name in names {
        let group = match name.as_str() {
            "X25519" => ring::kx_group::X25519,
            "CurveP256" => ring::kx_group::SECP256R1,
            "CurveP384" => ring::kx_group::SECP384R1,
            _ => {
                return Err(invalid(format!(
                    "tls_server_config.curve_preferences: {name:?} is not supported (X25519, CurveP256, CurveP384)"
                )));
            }
        };
        chosen.push(group);
    }
    provider.kx_groups = chosen;
    Ok(())
}

/// What identifies a version of the PEM files: a digest of each file's content (modification
/// times are too coarse to tell two writes in one clock tick apart). Reading two small files per
/// handshake costs microseconds; scrapes come seconds apart.
type Stamp = Vec<Option<[u8; 32]>>;

fn stamp(pems: &[&Pem]) -> Stamp {
    pems.iter()
        .map(|p| match p {
            Pem::File(path) => std::fs::read(path).ok().map(|bytes| sha256(&bytes)),
            Pem::Inline(_) => None,
        })
        .collect()
}

fn certified_key(
    cert: &Pem,
    key: &Pem,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, WebConfigError> {
    let chain = certs(cert, "cert")?;
    let key_bytes = read_pem(key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        invalid(format!(
            "tls_server_config: key: no usable PEM private key ({e})"
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| invalid(format!("tls_server_config: cert and key: {e}")))
}

/// The server certificate, re-read at a handshake when its files changed since the last read. A
/// change that does not load (a half-written rotation, a key not matching yet) keeps the previous
/// certificate, with one warning per change.
#[derive(Debug)]
struct ReloadingCert {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    fn new(cert: Pem, key: Pem, provider: Arc<CryptoProvider>) -> Result<Self, WebConfigError> {
        let version = stamp(&[&cert, &key]);
        let first = certified_key(&cert, &key, &provider)?;
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            loaded: Mutex::new((version, Arc::new(first))),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut loaded = self.loaded.lock().ok()?;
        let now = stamp(&[&self.cert, &self.key]);
        if now != loaded.0 {
            loaded.0 = now;
            match certified_key(&self.cert, &self.key, &self.provider) {
                Ok(k) => {
                    loaded.1 = Arc::new(k);
                    log::info!("TLS certificate files changed: reloaded");
                }
                Err(e) => log::warn!(
                    "TLS certificate files changed but do not load ({e}); serving the previous certificate"
                ),
            }
        }
        Some(loaded.1.clone())
    }
}

/// Builds the server config, reading every file it names.
pub fn server_config(t: &TlsSettings) -> Result<Arc<ServerConfig>, WebConfigError> {
    let mut provider = ring::default_provider();
    select_suites(&mut provider, &t.cipher_suites)?;
    select_groups(&mut provider, &t.curve_preferences)?;
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls13, &rustls::version::TLS13),
        (TlsVersion::Tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter(|(v, _)| (t.min_version..=t.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(format!("tls_server_config: {e}")))?;
    let builder = match (&t.client_auth, &t.client_ca) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "client CA")? {
                roots.add(c).map_err(|e| {
                    invalid(format!("tls_server_config: client CA certificate: {e}"))
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let v = if *auth == ClientAuth::VerifyClientCertIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| invalid(format!("tls_server_config: client CA: {e}")))?,
            )
        }
    };
    let resolver = ReloadingCert::new(t.cert.clone(), t.key.clone(), provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = t.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suite_names_follow_go() {
        let mut p = ring::default_provider();
        let all = tls12_suite_names(&p);
        assert!(
            all.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()),
            "{all:?}"
        );
        select_suites(
            &mut p,
            &[
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(),
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into(),
            ],
        )
        .expect("known names");
        let tls12: Vec<String> = tls12_suite_names(&p);
        assert_eq!(
            tls12,
            vec![
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert!(p.cipher_suites.iter().any(|s| s.tls13().is_some()));
        let err = select_suites(&mut p, &["TLS_RSA_WITH_AES_128_CBC_SHA".into()])
            .expect_err("CBC is not offered");
        assert!(
            err.to_string()
                .contains("\"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported"),
            "{err}"
        );
    }

    #[test]
    fn curve_names_follow_go() {
        let mut p = ring::default_provider();
        select_groups(&mut p, &["CurveP384".into(), "X25519".into()]).expect("known");
        let names: Vec<String> = p
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(names, vec!["secp384r1", "X25519"]);
        let err = select_groups(&mut p, &["CurveP521".into()]).expect_err("no P-521 in ring");
        assert!(err.to_string().contains("CurveP521"), "{err}");
    }
}
