//! Container names from the Docker Engine API (`/run/docker.sock`): a listing at start, then one
//! lookup per container id that a cgroup names and the listing did not have.
//!
//! Shapes (Engine API v1.43+): `GET /containers/json` → `[{"Id", "Names": ["/x"], "Image",
//! "Labels"}]`; `GET /containers/{id}/json` → `{"Id", "Name": "/x", "Config": {"Image",
//! "Labels"}}`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::http::{self, Endpoint, HttpError};
use super::names::{ContainerMeta, Names};

const LIST_LIMIT: usize = 32 << 20;
const INSPECT_LIMIT: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub struct ListItem {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Option<Vec<String>>,
    #[serde(rename = "Image", default)]
    pub image: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct Inspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    #[serde(rename = "Config", default)]
    pub config: Option<InspectConfig>,
}

#[derive(Debug, Deserialize)]
pub struct InspectConfig {
    #[serde(rename = "Image", default)]
    pub image: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
}

/// What the labels and name of one container say.
pub fn meta(name: &str, image: &str, labels: &HashMap<String, String>) -> ContainerMeta {
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    ContainerMeta {
        name: name.trim_start_matches('/').to_owned(),
        image: image.to_owned(),
        compose_project: get("com.docker.compose.project"),
        compose_service: get("com.docker.compose.service"),
        k8s_pod: get("io.kubernetes.pod.name"),
        k8s_namespace: get("io.kubernetes.pod.namespace"),
        k8s_container: get("io.kubernetes.container.name"),
        labels: super::names::kept_labels(labels),
    }
}

impl ListItem {
    fn meta(&self) -> ContainerMeta {
        let name = self
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map_or("", String::as_str);
        meta(
            name,
            self.image.as_deref().unwrap_or(""),
            &self.labels.clone().unwrap_or_default(),
        )
    }
}

impl Inspect {
    fn meta(&self) -> ContainerMeta {
        let c = self.config.as_ref();
        meta(
            self.name.as_deref().unwrap_or(""),
            c.and_then(|c| c.image.as_deref()).unwrap_or(""),
            &c.and_then(|c| c.labels.clone()).unwrap_or_default(),
        )
    }
}

/// The Docker source: probes `socket`, then serves lookups until the agent stops. Logs one line
/// saying whether it is used.
pub async fn run(socket: PathBuf, names: Arc<Names>) {
    let ep = Endpoint::Unix(socket.clone());
    let list: Vec<ListItem> =
        match http::get_json(&ep, "/containers/json", &[], LIST_LIMIT, TIMEOUT).await {
            Ok(l) => l,
            Err(e) => {
                log::info!(
                    "container names: Docker API not used ({}: {e}); containers are named by id",
                    socket.display()
                );
                return;
            }
        };
    log::info!(
        "container names: Docker API at {} ({} running containers)",
        socket.display(),
        list.len()
    );
    names.set_containers(list.iter().map(|c| (c.id.clone(), c.meta())).collect());
    loop {
        for id in names.wanted().await {
            match inspect(&ep, &id).await {
                Ok(i) => names.set_container(&i.id, i.meta()),
                // Not a Docker container (containerd, cri-o) or already gone: stays an id.
                Err(HttpError::Status(404)) => {}
                Err(e) => log::debug!("docker: inspecting {id}: {e}"),
            }
        }
    }
}

async fn inspect(ep: &Endpoint, id: &str) -> Result<Inspect, HttpError> {
    // Ids come from our cgroup parser: 64 hex, nothing to escape.
    http::get_json(
        ep,
        &format!("/containers/{id}/json"),
        &[],
        INSPECT_LIMIT,
        TIMEOUT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from the Engine API reference's ContainerSummary / ContainerInspectResponse.
    #[test]
    fn parses_api_shapes() {
        let list: Vec<ListItem> = serde_json::from_str(
            r#"[{"Id":"8dfafdbc3a40","Names":["/chat-vllm-1"],"Image":"vllm/vllm-openai:v0.6.3","ImageID":"sha256:1","Command":"python3 -m vllm","Created":1367854155,"State":"running","Status":"Up 5 hours","Ports":[],"Labels":{"com.docker.compose.project":"chat","com.docker.compose.service":"vllm","com.docker.compose.version":"2.29.1"},"SizeRw":12288,"HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":{}},"Mounts":[]}]"#,
        )
        .unwrap();
        let m = list[0].meta();
        assert_eq!(m.name, "chat-vllm-1");
        assert_eq!(m.compose_service.as_deref(), Some("vllm"));
        assert_eq!(m.compose_project.as_deref(), Some("chat"));
        let i: Inspect = serde_json::from_str(
            r#"{"Id":"ba033ac4401106a3b513bc9d639eee123ad78ca3616b921167cd74b20e25ed39","Created":"2015-01-06T15:47:31.485331387Z","Path":"/bin/sh","Args":[],"State":{"Status":"running","Running":true,"Pid":4242},"Image":"sha256:04c5d3b7b065","Name":"/k8s_server_vllm-0_llm_8712f785_0","Config":{"Hostname":"vllm-0","Image":"vllm/vllm-openai","Labels":{"io.kubernetes.container.name":"server","io.kubernetes.pod.name":"vllm-0","io.kubernetes.pod.namespace":"llm","io.kubernetes.pod.uid":"8712f785-1a3e-41ec-a00b-e2dcc77431cb"}},"HostConfig":{},"Mounts":[]}"#,
        )
        .unwrap();
        let m = i.meta();
        assert_eq!(
            (
                m.k8s_container.as_deref(),
                m.k8s_pod.as_deref(),
                m.k8s_namespace.as_deref()
            ),
            (Some("server"), Some("vllm-0"), Some("llm"))
        );
        // Null labels are allowed by the schema.
        let i: Inspect =
            serde_json::from_str(r#"{"Id":"x","Name":"/a","Config":{"Labels":null}}"#).unwrap();
        assert_eq!(i.meta().name, "a");
    }
}
