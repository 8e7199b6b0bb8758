//! A real Prometheus server (Debian's `prometheus` package) started for one test, and the parts of
//! its HTTP API the tests use: instant queries, series lookups, and waiting for a value.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use llm_observer_tests::harness::{http, process::Proc};
use serde_json::Value;

/// One sample of an instant query: labels and value (NaN kept as NaN).
pub type Sample = (BTreeMap<String, String>, f64);

pub struct Prometheus {
    pub proc: Proc,
    addr: SocketAddr,
    dir: PathBuf,
}

/// How long Prometheus may take to open its TSDB and serve.
const READY: Duration = Duration::from_secs(60);

impl Prometheus {
    /// Writes `config` (prometheus.yml) into a fresh directory and starts `prometheus` on a free
    /// loopback port; returns once `/-/ready` answers 200.
    pub fn start(config: &str) -> anyhow::Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!(
            "llm-observer-prometheus-{}-{}",
            std::process::id(),
            now()
        ));
        std::fs::create_dir_all(dir.join("data"))?;
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config)?;
        // A free port: bound and released just before Prometheus binds it.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn("prometheus", cmd)?;
        let p = Prometheus { proc, addr, dir };
        let deadline = Instant::now() + READY;
        loop {
            match http::request(addr, "GET", "/-/ready", b"", Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => return Ok(p),
                _ if Instant::now() >= deadline => {
                    bail!(
                        "prometheus never became ready on {addr}:\n{}",
                        p.proc.output()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn get(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let url = format!("{path}?{}", query.join("&"));
        let r = http::request(self.addr, "GET", &url, b"", Duration::from_secs(30))
            .with_context(|| format!("GET {path}"))?;
        let body: Value = serde_json::from_slice(&r.body)
            .with_context(|| format!("{path} answered {}: {}", r.status, r.body_text()))?;
        if body["status"] != "success" {
            bail!(
                "{path} {params:?}: {} {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            );
        }
        Ok(body["data"].clone())
    }

    /// Instant query at `time` (Unix seconds); a scalar comes back as one sample without labels.
    pub fn query_at(&self, expr: &str, time: f64) -> anyhow::Result<Vec<Sample>> {
        let t = format!("{time:.3}");
        let data = self.get("/api/v1/query", &[("query", expr), ("time", &t)])?;
        let value = |v: &Value| -> f64 {
            v.get(1)
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN)
        };
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| (labels(&s["metric"]), value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), value(&data["result"]))],
            other => bail!("{expr}: unexpected result type {other:?}"),
        })
    }

    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        self.query_at(expr, now())
    }

    /// The label sets of the series `selector` matches (what Grafana's `label_values` reads).
    pub fn series(&self, selector: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        let data = self.get("/api/v1/series", &[("match[]", selector)])?;
        Ok(data.as_array().into_iter().flatten().map(labels).collect())
    }

    /// `(rule name, health)` of every rule Prometheus loaded.
    pub fn rules(&self) -> anyhow::Result<Vec<(String, String)>> {
        let data = self.get("/api/v1/rules", &[])?;
        Ok(data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("name"), s("health"))
            })
            .collect())
    }

    /// Polls `sum(expr)` until every `(expr, want)` holds at one evaluation time; returns that
    /// time. Fails after `timeout` with the values last seen.
    pub fn wait_for_totals(
        &self,
        wants: &[(String, f64)],
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let t = now();
            let mut seen = Vec::new();
            for (expr, want) in wants {
                let got = self
                    .query_at(&format!("sum({expr})"), t)?
                    .first()
                    .map_or(f64::NAN, |s| s.1);
                if got != *want {
                    seen.push(format!("{expr} = {got} (want {want})"));
                }
            }
            if seen.is_empty() {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                bail!(
                    "Prometheus never showed the expected totals within {timeout:?}:\n{}",
                    seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.proc.terminate(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Percent-encoding of a query parameter (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
