//! Shared by the endpoint's integration tests: deterministic metrics, a tiny HTTP/1.1 client
//! (plain and TLS), a server started on port 0, and a generated PKI (CA, server and client
//! certificates) in a temporary directory.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use llm_observer::sinks::{
    MetricsServer,
    metrics::{Metrics, MetricsConfig, ScrapeEnv},
    web_config::WebConfig,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{ClientConfig, RootCertStore, crypto::ring};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// Metrics whose exposition is the same at every scrape (fixed clock, no processes to read).
pub fn metrics() -> Arc<Metrics> {
    let env = ScrapeEnv {
        now_ns: Arc::new(|| 1_000_000_000),
        proc_root: PathBuf::from("/nonexistent-proc"),
    };
    Arc::new(Metrics::with_env(MetricsConfig::default(), "test", env).expect("metrics"))
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

pub async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Resp {
    s.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    parse_response(&raw)
}

pub fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in extra {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r + "\r\n"
}

pub async fn get(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let s = TcpStream::connect(addr).await.expect("connect");
    exchange_on(s, &request(method, path, extra)).await
}

pub async fn tls_get(
    addr: SocketAddr,
    client: Arc<ClientConfig>,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await?;
    let mut s = tls;
    s.write_all(request("GET", path, extra).as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    Ok(parse_response(&raw))
}

/// The certificate the server presents in a TLS handshake.
pub async fn served_cert(addr: SocketAddr, client: Arc<ClientConfig>) -> CertificateDer<'static> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// Starts `server`; returns its address, readiness flag, and a stopper that awaits the shutdown.
pub fn start(
    server: MetricsServer,
    m: Arc<Metrics>,
) -> (
    SocketAddr,
    llm_observer::sinks::Readiness,
    impl FnOnce() -> tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let addr = server.local_addr();
    let ready = server.readiness();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(m, stopped));
    (addr, ready, move || {
        let _ = stop.send(());
        task
    })
}

pub async fn bind() -> MetricsServer {
    MetricsServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, signed by it.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key_pem: String,
}

pub fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("CA cert");
    (cert.pem(), Issuer::new(p, key))
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("llmo-web-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tls")).expect("tmp dir");
        let (ca_pem, issuer) = ca("llm-observer test CA");
        let client_key = KeyPair::generate().expect("key");
        let mut cp = CertificateParams::new(vec!["prometheus".to_owned()]).expect("params");
        cp.distinguished_name.push(DnType::CommonName, "prometheus");
        let client = cp.signed_by(&client_key, &issuer).expect("client cert");
        std::fs::write(dir.join("tls/ca.crt"), &ca_pem).expect("write");
        let pki = Pki {
            dir,
            ca_pem,
            issuer,
            client_chain: vec![client.der().clone()],
            client_key_pem: client_key.serialize_pem(),
        };
        pki.new_server_cert();
        pki
    }

    /// Writes a fresh server certificate for localhost/127.0.0.1 (and its key) to
    /// `tls/server.crt` and `tls/server.key`; returns the certificate.
    pub fn new_server_cert(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("server cert");
        std::fs::write(self.dir.join("tls/server.crt"), cert.pem()).expect("write");
        std::fs::write(self.dir.join("tls/server.key"), key.serialize_pem()).expect("write");
        cert.der().clone()
    }

    pub fn config(&self, yaml: &str) -> WebConfig {
        let path = self.dir.join("web.yml");
        std::fs::write(&path, yaml).expect("write");
        WebConfig::load(&path).expect("valid web config")
    }

    pub fn client(&self, trust: &str, with_cert: bool) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(trust.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let b = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let c = if with_cert {
            let key = PrivateKeyDer::from_pem_slice(self.client_key_pem.as_bytes()).expect("key");
            b.with_client_auth_cert(self.client_chain.clone(), key)
                .expect("client cert")
        } else {
            b.with_no_client_auth()
        };
        Arc::new(c)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Kills the child on drop, so a failing assertion leaves no Prometheus running.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `up` per job from Prometheus's query API, once every job in `jobs` has a sample.
pub async fn up_by_job(prom: SocketAddr, jobs: &[&str]) -> Option<Vec<(String, String)>> {
    let s = TcpStream::connect(prom).await.ok()?;
    let r = exchange_on(s, &request("GET", "/api/v1/query?query=up", &[])).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|s| {
            (
                s["metric"]["job"].as_str().unwrap_or("").to_owned(),
                s["value"][1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    (out.len() == jobs.len()).then_some(out)
}
