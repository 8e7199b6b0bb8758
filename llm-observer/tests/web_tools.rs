//! The web config against Prometheus's own tools: the committed sample passes `promtool check
//! web-config` and our parser, and a real Prometheus scrapes the endpoint over TLS with basic auth
//! (and fails with a wrong password). Under `CI=true` promtool and prometheus must be installed
//! (`cargo xtask setup` installs Debian's `prometheus`); elsewhere a missing one skips.

mod web_support;

use std::{path::Path, time::Duration};

use llm_observer::sinks::web_config::WebConfig;
use web_support::*;

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
