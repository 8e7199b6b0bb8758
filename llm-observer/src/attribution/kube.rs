//! Pod names from the Kubernetes API server: the pods of this node
//! (`fieldSelector=spec.nodeName=<node>`), listed and then watched, with the service account's
//! bearer token (re-read on every request: projected tokens rotate). Needs RBAC `get`, `list`,
//! `watch` on `pods`; denied, the agent says so once and pods stay named by uid.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::http::{self, Endpoint, HttpError, Lines, Tls};
use super::names::{Names, PodMeta};

const LIST_LIMIT: usize = 64 << 20;
const EVENT_LIMIT: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(5);
/// Retry period while the API server has never answered (not in a cluster, or still starting).
const SLOW_RETRY: Duration = Duration::from_secs(30);
/// Static pods are cgroup-named by their config hash; the API shows it on the mirror pod.
const MIRROR: &str = "kubernetes.io/config.mirror";

#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// `https://host:port` (or `http://`) of the API server.
    pub url: String,
    /// CA bundle that signed the API server's certificate (https only).
    pub ca_file: PathBuf,
    pub node: String,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub struct PodList {
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default)]
    pub items: Vec<Pod>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct PodStatus {
    #[serde(rename = "containerStatuses", default)]
    pub containers: Option<Vec<ContainerStatus>>,
    #[serde(rename = "initContainerStatuses", default)]
    pub init: Option<Vec<ContainerStatus>>,
    #[serde(rename = "ephemeralContainerStatuses", default)]
    pub ephemeral: Option<Vec<ContainerStatus>>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// `<runtime>://<id>`; absent until the container was created.
    #[serde(rename = "containerID", default)]
    pub container_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

impl Pod {
    /// The keys a cgroup may name this pod by: its uid, and a static pod's config hash.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = vec![self.metadata.uid.to_ascii_lowercase()];
        if let Some(hash) = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR))
        {
            keys.push(hash.to_ascii_lowercase());
        }
        keys
    }

    pub fn meta(&self) -> PodMeta {
        let status = self.status.as_ref();
        let all = status.into_iter().flat_map(|s| {
            [&s.containers, &s.init, &s.ephemeral]
                .into_iter()
                .flatten()
                .flatten()
        });
        let containers = all
            .filter_map(|c| {
                let id = c.container_id.as_deref()?.rsplit("://").next()?;
                Some((id.to_ascii_lowercase(), c.name.clone()))
            })
            .collect();
        PodMeta {
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            containers,
            labels: self
                .metadata
                .labels
                .as_ref()
                .map(super::names::kept_labels)
                .unwrap_or_default(),
        }
    }
}

fn endpoint(url: &str, ca_file: &std::path::Path) -> Result<Endpoint, String> {
    let (rest, https) = if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else {
        return Err(format!("{url}: not an http:// or https:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.ends_with(']') => {
            (h, p.parse().map_err(|_| format!("{url}: bad port"))?)
        }
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = if https {
        Some(Tls::from_ca_file(ca_file, &host)?)
    } else {
        None
    };
    Ok(Endpoint::Tcp { host, port, tls })
}

fn headers(cfg: &KubeConfig) -> Vec<(&'static str, String)> {
    let mut h = vec![("accept", "application/json".to_owned())];
    if let Some(f) = &cfg.token_file
        && let Ok(t) = std::fs::read_to_string(f)
    {
        h.push(("authorization", format!("Bearer {}", t.trim())));
    }
    h
}

/// `fieldSelector=spec.nodeName=<node>`, percent-encoded (node names are DNS labels, but be safe).
fn selector(node: &str) -> String {
    let mut s = String::from("fieldSelector=spec.nodeName%3D");
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

async fn list(ep: &Endpoint, cfg: &KubeConfig, names: &Names) -> Result<String, HttpError> {
    let path = format!("/api/v1/pods?{}", selector(&cfg.node));
    let l: PodList = http::get_json(ep, &path, &headers(cfg), LIST_LIMIT, TIMEOUT).await?;
    names.set_pods(l.items.iter().map(|p| (p.keys(), p.meta())).collect());
    Ok(l.metadata.resource_version.unwrap_or_default())
}

/// Applies watch events until the stream ends or the server says the version is too old.
async fn watch(
    ep: &Endpoint,
    cfg: &KubeConfig,
    names: &Names,
    mut rv: String,
) -> Result<(), HttpError> {
    loop {
        // A server that ends watches at once must not turn this into a busy loop.
        let began = tokio::time::Instant::now();
        let path = format!(
            "/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&{}",
            selector(&cfg.node)
        );
        let mut lines = Lines::new(http::get(ep, &path, &headers(cfg)).await?, EVENT_LIMIT);
        while let Some(line) = lines.next().await? {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev: WatchEvent = serde_json::from_slice(&line)?;
            if ev.kind == "ERROR" {
                // 410 Gone: our version expired; the caller lists again.
                return Ok(());
            }
            let pod: Pod = serde_json::from_value(ev.object)?;
            if let Some(v) = &pod.metadata.resource_version {
                rv.clone_from(v);
            }
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => names.set_pod(&pod.keys(), pod.meta()),
                "DELETED" => names.remove_pod(&pod.keys()),
                _ => {} // BOOKMARK: only the version moves
            }
        }
        tokio::time::sleep_until(began + Duration::from_secs(1)).await;
    }
}

/// The Kubernetes source. Logs one line saying whether it is used (and why not).
pub async fn run(cfg: KubeConfig, names: Arc<Names>) {
    let ep = match endpoint(&cfg.url, &cfg.ca_file) {
        Ok(ep) => ep,
        Err(why) => {
            log::info!("pod names: Kubernetes API not used ({why}); pods are named by uid");
            return;
        }
    };
    let (mut announced, mut warned) = (false, false);
    loop {
        match list(&ep, &cfg, &names).await {
            Ok(rv) => {
                if !announced {
                    log::info!(
                        "pod names: Kubernetes API at {} (node {}, {} pods)",
                        cfg.url,
                        cfg.node,
                        names.counts().1
                    );
                    announced = true;
                }
                if let Err(e) = watch(&ep, &cfg, &names, rv).await {
                    log::debug!("kubernetes: watch ended: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
            Err(e) if e.is_denied() => {
                // Denied does not heal by retrying; say so once.
                log::info!(
                    "pod names: Kubernetes API at {} not used ({e}: grant the service account get/list/watch on pods); pods are named by uid",
                    cfg.url
                );
                return;
            }
            Err(e) if !announced && !warned => {
                log::info!(
                    "pod names: Kubernetes API at {} not reachable yet ({e}); pods are named by uid until it answers (retrying every {}s)",
                    cfg.url,
                    SLOW_RETRY.as_secs()
                );
                warned = true;
                tokio::time::sleep(SLOW_RETRY).await;
            }
            Err(e) if !announced => {
                log::debug!("kubernetes: listing pods: {e}");
                tokio::time::sleep(SLOW_RETRY).await;
            }
            Err(e) => {
                log::debug!("kubernetes: listing pods: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PodList as the API server returns it (trimmed from a real `kubectl get --raw` answer).
    #[test]
    fn parses_pod_list() {
        let l: PodList = serde_json::from_str(
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"12345"},"items":[
            {"metadata":{"name":"vllm-0","namespace":"llm","uid":"8712f785-1a3e-41ec-a00b-e2dcc77431cb","resourceVersion":"12001","labels":{"app":"vllm"}},
             "spec":{"nodeName":"node-1","containers":[{"name":"server","image":"vllm/vllm-openai"}]},
             "status":{"phase":"Running","qosClass":"Burstable","containerStatuses":[{"name":"server","state":{"running":{}},"ready":true,"restartCount":0,"image":"vllm/vllm-openai","imageID":"x","containerID":"containerd://9A8B7C6D5E4F30211203F4E5D6C7B8A99A8B7C6D5E4F30211203F4E5D6C7B8A9","started":true}],
                       "initContainerStatuses":[{"name":"fetch","containerID":"containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}},
            {"metadata":{"name":"kube-apiserver-node-1","namespace":"kube-system","uid":"a2c1e1d0-0000-4000-8000-000000000001","annotations":{"kubernetes.io/config.mirror":"3e61c214bc3ed9ff81e21474dd6cba17","kubernetes.io/config.source":"file"}},
             "status":{"phase":"Pending"}}]}"#,
        )
        .unwrap();
        assert_eq!(l.metadata.resource_version.as_deref(), Some("12345"));
        let p = &l.items[0];
        assert_eq!(p.keys(), ["8712f785-1a3e-41ec-a00b-e2dcc77431cb"]);
        let m = p.meta();
        assert_eq!((m.name.as_str(), m.namespace.as_str()), ("vllm-0", "llm"));
        assert_eq!(
            m.containers
                .get("9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9")
                .map(String::as_str),
            Some("server")
        );
        assert_eq!(m.containers.len(), 2);
        assert_eq!(
            l.items[1].keys(),
            [
                "a2c1e1d0-0000-4000-8000-000000000001",
                "3e61c214bc3ed9ff81e21474dd6cba17"
            ]
        );
    }

    #[test]
    fn endpoints_and_selectors() {
        let none = std::path::Path::new("/nonexistent/ca.crt");
        assert!(matches!(
            endpoint("http://127.0.0.1:8001", none).unwrap(),
            Endpoint::Tcp { host, port: 8001, tls: None } if host == "127.0.0.1"
        ));
        assert!(matches!(
            endpoint("http://[::1]/", none).unwrap(),
            Endpoint::Tcp { host, port: 80, tls: None } if host == "::1"
        ));
        // https needs the CA bundle.
        let err = endpoint("https://10.0.0.1:443", none).unwrap_err();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
        assert!(endpoint("ftp://x", none).is_err());
        assert_eq!(
            selector("node-1.a"),
            "fieldSelector=spec.nodeName%3Dnode-1.a"
        );
        assert_eq!(selector("a b"), "fieldSelector=spec.nodeName%3Da%20b");
    }
}
