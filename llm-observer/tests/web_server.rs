//! The `/metrics` endpoint over real sockets: plain HTTP routes, `/readyz`, gzip, TLS with a
//! generated CA (and client certificates), basic auth, configured headers, connection bounds and
//! graceful shutdown; and the committed sample web config checked by our parser and by `promtool
//! check web-config` (when promtool is installed; under `CI=true` it must be).

use std::{
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

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
fn metrics() -> Arc<Metrics> {
    let env = ScrapeEnv {
        now_ns: Arc::new(|| 1_000_000_000),
        proc_root: PathBuf::from("/nonexistent-proc"),
    };
    Arc::new(Metrics::with_env(MetricsConfig::default(), "test", env).expect("metrics"))
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse_response(raw: &[u8]) -> Resp {
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

async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Resp {
    s.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    parse_response(&raw)
}

fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in extra {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r + "\r\n"
}

async fn get(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let s = TcpStream::connect(addr).await.expect("connect");
    exchange_on(s, &request(method, path, extra)).await
}

async fn tls_get(
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

/// Starts `server`; returns its address, readiness flag, and a stopper that awaits the shutdown.
fn start(
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

async fn bind() -> MetricsServer {
    MetricsServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
}

#[tokio::test]
async fn plain_http_routes_readiness_gzip() {
    let m = metrics();
    let (addr, ready, stop) = start(bind().await, m.clone());

    let r = get(addr, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.header("content-encoding"), None);
    let plain = r.text();
    assert!(
        plain.contains("llm_observer_build_info{attach_mode=\"test\""),
        "{plain}"
    );
    assert_eq!(plain, m.encode(), "the page is the registry's exposition");

    let z = get(addr, "GET", "/metrics", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    assert_eq!(z.header("vary"), Some("Accept-Encoding"));
    assert!(z.body.len() < plain.len());
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&z.body[..])
        .read_to_string(&mut unzipped)
        .expect("gunzip");
    assert_eq!(unzipped, plain);
    let no = get(addr, "GET", "/metrics", &[("Accept-Encoding", "gzip;q=0")]).await;
    assert_eq!(
        (no.header("content-encoding"), no.text()),
        (None, plain.clone())
    );

    let head = get(addr, "HEAD", "/metrics", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(plain.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    assert!(get(addr, "GET", "/", &[]).await.text().contains("/metrics"));
    assert_eq!(get(addr, "GET", "/metrics?x=1", &[]).await.status, 200);
    let h = get(addr, "GET", "/healthz", &[]).await;
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "GET", "/readyz", &[]).await.status, 503);
    ready.set(true);
    assert_eq!(get(addr, "GET", "/readyz", &[]).await.status, 200);
    ready.set(false);
    assert_eq!(get(addr, "GET", "/readyz", &[]).await.status, 503);

    assert_eq!(get(addr, "GET", "/nope", &[]).await.status, 404);
    let post = get(addr, "POST", "/metrics", &[("Content-Length", "0")]).await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(get(addr, "DELETE", "/healthz", &[]).await.status, 405);

    // A head over the limit is refused, and garbage gets a 400; the server keeps serving.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(llm_observer::sinks::http::MAX_HEAD_BYTES + 10)
    );
    let s = TcpStream::connect(addr).await.expect("connect");
    let r = exchange_on(s, &big).await;
    assert_eq!(r.status, 431);
    let s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        exchange_on(s, "\x16\x03\x01\x02\x00\r\n\r\n").await.status,
        400
    );
    drop(TcpStream::connect(addr).await.expect("connect"));
    assert_eq!(get(addr, "GET", "/healthz", &[]).await.status, 200);

    stop().await.expect("join").expect("clean shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_timeout_and_shutdown_waits_for_none() {
    let server = bind().await.with_io_timeout(Duration::from_millis(300));
    let (addr, _, stop) = start(server, metrics());
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    // The server closes a connection that never sends a head: read returns EOF (0) or a reset.
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("closed by the server within its timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // A keep-alive connection left open does not hold up shutdown past the timeout.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let n = kept.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::timeout(Duration::from_secs(10), stop())
        .await
        .expect("shutdown within the timeout")
        .expect("join")
        .expect("ok");
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, signed by it.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_chain: Vec<CertificateDer<'static>>,
    client_key_pem: String,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("CA cert");
    (cert.pem(), Issuer::new(p, key))
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("llmo-web-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tls")).expect("tmp dir");
        let (ca_pem, issuer) = ca("llm-observer test CA");
        let server_key = KeyPair::generate().expect("key");
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&server_key, &issuer)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("key");
        let mut cp = CertificateParams::new(vec!["prometheus".to_owned()]).expect("params");
        cp.distinguished_name.push(DnType::CommonName, "prometheus");
        let client = cp.signed_by(&client_key, &issuer).expect("client cert");
        std::fs::write(dir.join("tls/server.crt"), server.pem()).expect("write");
        std::fs::write(dir.join("tls/server.key"), server_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("tls/ca.crt"), &ca_pem).expect("write");
        Pki {
            dir,
            ca_pem,
            client_chain: vec![client.der().clone()],
            client_key_pem: client_key.serialize_pem(),
        }
    }

    fn config(&self, yaml: &str) -> WebConfig {
        let path = self.dir.join("web.yml");
        std::fs::write(&path, yaml).expect("write");
        WebConfig::load(&path).expect("valid web config")
    }

    fn client(&self, trust: &str, with_cert: bool) -> Arc<ClientConfig> {
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

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

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
async fn client_certificates_are_required_and_verified() {
    let pki = Pki::new("mtls");
    let cfg = pki.config(
        "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: tls/ca.crt\n  \
         min_version: TLS13\n",
    );
    let server = bind().await.with_web_config(&cfg).expect("loads");
    let (addr, _, stop) = start(server, metrics());
    let ok = tls_get(addr, pki.client(&pki.ca_pem, true), "/metrics", &[])
        .await
        .expect("a client with a certificate from the CA");
    assert_eq!(ok.status, 200);
    // TLS 1.3 client auth is checked after the client's Finished: the refusal shows on the read.
    let refused = tls_get(addr, pki.client(&pki.ca_pem, false), "/metrics", &[]).await;
    assert!(refused.is_err(), "served a client without a certificate");
    stop().await.expect("join").expect("clean shutdown");
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

#[test]
fn the_sample_config_passes_promtool_and_our_parser() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/web-config.example.yml");
    let pki = Pki::new("sample");
    let copy = pki.dir.join("web-config.yml");
    std::fs::copy(&sample, &copy).expect("copy the sample next to generated certs");
    let cfg = WebConfig::load(&copy).expect("our parser accepts the sample");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        bind()
            .await
            .with_web_config(&cfg)
            .expect("and its files load");
    });
    let out = match std::process::Command::new("promtool")
        .args(["check", "web-config"])
        .arg(&copy)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !in_ci(),
                "CI=true and no promtool ({e}); cargo xtask setup installs it"
            );
            println!("skipping the promtool half: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool check web-config refused the sample: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And promtool refuses what we refuse as unknown, so the two agree on strictness.
    std::fs::write(&copy, "tls_server_config:\n  certfile: a\n").expect("write");
    let bad = std::process::Command::new("promtool")
        .args(["check", "web-config"])
        .arg(&copy)
        .output()
        .expect("promtool");
    assert!(!bad.status.success());
    assert!(WebConfig::load(&copy).is_err());
}

/// Kills the child on drop, so a failing assertion leaves no Prometheus running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `up` per job from Prometheus's query API, once every job in `jobs` has a sample.
async fn up_by_job(prom: SocketAddr, jobs: &[&str]) -> Option<Vec<(String, String)>> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_over_tls_with_basic_auth() {
    let pki = Pki::new("prom");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let cfg = pki.config(&format!(
        "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n\
         basic_auth_users:\n  prometheus: \"{hash}\"\n"
    ));
    let server = bind().await.with_web_config(&cfg).expect("loads");
    let (addr, _, stop) = start(server, metrics());
    // A free port for Prometheus's own API (it cannot report one it picked itself).
    let prom_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n      server_name: localhost\n\
             \x20   basic_auth:\n      username: prometheus\n      password: {password}\n\
             \x20   static_configs:\n      - targets: [\"{addr}\"]\n",
            ca = pki.dir.join("tls/ca.crt").display()
        )
    };
    let prom_cfg = pki.dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("right", "s3cret"),
            job("wrong", "guess")
        ),
    )
    .expect("write");
    let spawned = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            pki.dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let _prom = match spawned {
        Ok(c) => Child(c),
        Err(e) => {
            assert!(
                !in_ci(),
                "CI=true and no prometheus ({e}); cargo xtask setup installs it"
            );
            println!("skipping: no prometheus binary: {e}");
            return;
        }
    };
    // Prometheus needs a few seconds to start and scrape; poll its API with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let up = loop {
        if let Some(up) = up_by_job(prom_addr, &["right", "wrong"]).await {
            break up;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never reported up for both jobs"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        up,
        vec![("right".into(), "1".into()), ("wrong".into(), "0".into())]
    );
    stop().await.expect("join").expect("clean shutdown");
}
