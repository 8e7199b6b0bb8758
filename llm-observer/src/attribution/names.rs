//! [`Names`]: container and pod metadata learned from the node's sources (the Docker Engine API,
//! the Kubernetes API), and the label values ([`Place`]) a process's cgroup ids resolve to.
//!
//! Sources fill it in the background; lookups never wait. What is not known (yet) degrades to
//! ids: a container's short id (12 hex, as `docker ps` prints it), a pod's uid, no namespace.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use super::{Place, cgroup::CgroupInfo};

/// Most containers / pods kept; a node runs far fewer. Beyond it new ones stay unnamed (ids).
const MAX_OBJECTS: usize = 16_384;
/// Most container ids queued for a lookup at once.
const MAX_WANTED: usize = 1024;
/// Most labels kept per container or pod, and the longest value kept (Kubernetes allows 63).
const MAX_LABELS: usize = 64;
const MAX_LABEL_VALUE: usize = 63;

/// A runtime's or the API's labels of one object, bounded for keeping: at most [`MAX_LABELS`],
/// values over [`MAX_LABEL_VALUE`] bytes left out.
pub fn kept_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = labels
        .into_iter()
        // Kubernetes keys are at most 253 + 1 + 63 bytes; a longer (Docker) key is never asked.
        .filter(|(k, v)| k.len() <= 317 && v.len() <= MAX_LABEL_VALUE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Stable whatever the map's order, so the same labels are kept every time.
    v.sort();
    v.truncate(MAX_LABELS);
    v
}

/// What a container runtime says about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// The runtime's name for it (Docker's `Name` without the leading `/`).
    pub name: String,
    pub image: String,
    /// `com.docker.compose.project` / `.service` labels.
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    /// `io.kubernetes.pod.name`, `.pod.namespace`, `.container.name` labels (kubelet-managed).
    pub k8s_pod: Option<String>,
    pub k8s_namespace: Option<String>,
    pub k8s_container: Option<String>,
    /// Its labels ([`kept_labels`]), for `--label-pod-label` outside Kubernetes.
    pub labels: Vec<(String, String)>,
}

impl ContainerMeta {
    /// The `container` label: the Kubernetes container name, the compose service a user wrote, or
    /// the container's name.
    fn label(&self) -> &str {
        self.k8s_container
            .as_deref()
            .or(self.compose_service.as_deref())
            .unwrap_or(&self.name)
    }
}

/// What the Kubernetes API says about one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    /// Container id (64 hex, no runtime prefix) → container name, from the pod's statuses.
    pub containers: HashMap<String, String>,
    /// The pod's labels ([`kept_labels`]), for `--label-pod-label`.
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    containers: HashMap<String, ContainerMeta>,
    /// By pod uid, and by the config hash of static pods (their mirror pod's annotation).
    pods: HashMap<String, Arc<PodMeta>>,
}

/// The shared metadata store.
#[derive(Debug, Default)]
pub struct Names {
    inner: RwLock<Inner>,
    /// Container ids seen in a cgroup but unknown to every source: to be looked up once.
    wanted: Mutex<(Vec<String>, HashSet<String>)>,
    notify: tokio::sync::Notify,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Names {
    pub fn new() -> Arc<Names> {
        Arc::new(Names::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The label values for a process with this cgroup.
    pub fn place(&self, cg: &CgroupInfo) -> Place {
        let inner = self.read();
        let id = cg.container.as_ref().map(|(_, id)| id.as_str());
        let meta = id.and_then(|id| inner.containers.get(id));
        let pod = cg.pod_uid.as_deref().and_then(|uid| inner.pods.get(uid));
        if let (Some(id), None) = (id, meta) {
            self.want(id);
        }
        let container = match (id, pod.and_then(|p| p.containers.get(id?)), meta) {
            (_, Some(name), _) => name.clone(),
            (_, None, Some(m)) => m.label().to_owned(),
            (Some(id), None, None) => short(id).to_owned(),
            (None, _, _) => String::new(),
        };
        let (pod_name, namespace) = match (pod, meta) {
            (Some(p), _) => (p.name.clone(), p.namespace.clone()),
            (
                None,
                Some(ContainerMeta {
                    k8s_pod: Some(name),
                    k8s_namespace,
                    ..
                }),
            ) => (name.clone(), k8s_namespace.clone().unwrap_or_default()),
            _ => (cg.pod_uid.clone().unwrap_or_default(), String::new()),
        };
        Place {
            container,
            pod: pod_name,
            namespace,
        }
    }

    /// The values of the pod labels `keys` for a process in `cg`: its pod's labels, else (a
    /// container outside Kubernetes) its container's; `""` where neither has the key.
    pub fn workload_labels(&self, cg: &CgroupInfo, keys: &[String]) -> Vec<String> {
        if keys.is_empty() {
            return Vec::new();
        }
        let inner = self.read();
        let pod = cg.pod_uid.as_deref().and_then(|uid| inner.pods.get(uid));
        let meta = cg
            .container
            .as_ref()
            .and_then(|(_, id)| inner.containers.get(id.as_str()));
        let labels: &[(String, String)] = match (pod, meta) {
            (Some(p), _) => &p.labels,
            (None, Some(m)) => &m.labels,
            (None, None) => &[],
        };
        keys.iter()
            .map(|k| {
                labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn want(&self, id: &str) {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let (queue, asked) = &mut *w;
        if asked.len() >= MAX_OBJECTS || queue.len() >= MAX_WANTED || asked.contains(id) {
            return;
        }
        asked.insert(id.to_owned());
        queue.push(id.to_owned());
        drop(w);
        self.notify.notify_one();
    }

    /// Waits until at least one container id wants a lookup, and takes them all.
    pub async fn wanted(&self) -> Vec<String> {
        loop {
            let notified = self.notify.notified();
            let ids = std::mem::take(&mut self.wanted.lock().unwrap_or_else(|e| e.into_inner()).0);
            if !ids.is_empty() {
                return ids;
            }
            notified.await;
        }
    }

    pub fn set_container(&self, id: &str, meta: ContainerMeta) {
        let mut inner = self.write();
        if inner.containers.len() < MAX_OBJECTS || inner.containers.contains_key(id) {
            inner.containers.insert(id.to_ascii_lowercase(), meta);
        }
    }

    /// Replaces every container (a full listing).
    pub fn set_containers(&self, all: Vec<(String, ContainerMeta)>) {
        let map = all
            .into_iter()
            .take(MAX_OBJECTS)
            .map(|(id, m)| (id.to_ascii_lowercase(), m))
            .collect();
        self.write().containers = map;
    }

    /// Adds or replaces one pod under each of its keys (uid, mirror hash).
    pub fn set_pod(&self, keys: &[String], pod: PodMeta) {
        let pod = Arc::new(pod);
        let mut inner = self.write();
        for k in keys {
            if inner.pods.len() < MAX_OBJECTS || inner.pods.contains_key(k) {
                inner.pods.insert(k.clone(), pod.clone());
            }
        }
    }

    pub fn remove_pod(&self, keys: &[String]) {
        let mut inner = self.write();
        for k in keys {
            inner.pods.remove(k);
        }
    }

    /// Replaces every pod (a full listing): `(keys, pod)` pairs.
    pub fn set_pods(&self, all: Vec<(Vec<String>, PodMeta)>) {
        let mut map = HashMap::new();
        for (keys, pod) in all {
            let pod = Arc::new(pod);
            for k in keys {
                if map.len() < MAX_OBJECTS {
                    map.insert(k, pod.clone());
                }
            }
        }
        self.write().pods = map;
    }

    /// Containers and distinct pods known (self-metrics; tests wait on them).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        let pods: HashSet<*const PodMeta> = inner.pods.values().map(Arc::as_ptr).collect();
        (inner.containers.len(), pods.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::cgroup::{Qos, Runtime};

    const ID: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
    const UID: &str = "8712f785-1a3e-41ec-a00b-e2dcc77431cb";

    fn cg(pod: Option<&str>) -> CgroupInfo {
        CgroupInfo {
            container: Some((Runtime::Containerd, ID.to_owned())),
            pod_uid: pod.map(str::to_owned),
            qos: pod.map(|_| Qos::Burstable),
        }
    }

    fn place(c: &str, p: &str, n: &str) -> Place {
        Place {
            container: c.into(),
            pod: p.into(),
            namespace: n.into(),
        }
    }

    #[test]
    fn degrades_to_ids_then_names() {
        let names = Names::new();
        assert_eq!(names.place(&CgroupInfo::default()), Place::default());
        assert_eq!(names.place(&cg(None)), place("9a8b7c6d5e4f", "", ""));
        assert_eq!(names.place(&cg(Some(UID))), place("9a8b7c6d5e4f", UID, ""));
        // Compose: the service name.
        names.set_container(
            ID,
            ContainerMeta {
                name: "chat-vllm-1".into(),
                compose_project: Some("chat".into()),
                compose_service: Some("vllm".into()),
                ..ContainerMeta::default()
            },
        );
        assert_eq!(names.place(&cg(None)), place("vllm", "", ""));
        // Kubernetes: the pod's status names the container.
        names.set_pod(
            &[UID.to_owned()],
            PodMeta {
                name: "vllm-0".into(),
                namespace: "llm".into(),
                containers: [(ID.to_owned(), "server".to_owned())].into(),
                labels: vec![("app.kubernetes.io/name".into(), "vllm".into())],
            },
        );
        assert_eq!(
            names.place(&cg(Some(UID))),
            place("server", "vllm-0", "llm")
        );
        assert_eq!(names.counts(), (1, 1));
        // `--label-pod-label`: the pod's labels; outside a pod, the container's.
        let keys = [
            "app.kubernetes.io/name".to_owned(),
            "com.docker.compose.project".to_owned(),
        ];
        assert_eq!(names.workload_labels(&cg(Some(UID)), &keys), ["vllm", ""]);
        names.set_container(
            ID,
            ContainerMeta {
                name: "chat-vllm-1".into(),
                labels: kept_labels(&std::collections::HashMap::from([(
                    "com.docker.compose.project".to_owned(),
                    "chat".to_owned(),
                )])),
                ..ContainerMeta::default()
            },
        );
        assert_eq!(names.workload_labels(&cg(None), &keys), ["", "chat"]);
        assert!(names.workload_labels(&cg(None), &[]).is_empty());
    }

    #[test]
    fn kept_labels_are_bounded_and_ordered() {
        let many: std::collections::HashMap<String, String> = (0..100)
            .map(|i| (format!("k{i:03}"), "v".to_owned()))
            .chain([("long".to_owned(), "x".repeat(64))])
            .collect();
        let kept = kept_labels(&many);
        assert_eq!(kept.len(), MAX_LABELS);
        assert_eq!(kept[0].0, "k000");
        assert!(kept.iter().all(|(k, _)| k != "long"));
    }

    #[tokio::test]
    async fn unknown_ids_are_asked_for_once() {
        let names = Names::new();
        let _ = names.place(&cg(None));
        let _ = names.place(&cg(None));
        assert_eq!(names.wanted().await, vec![ID.to_owned()]);
        let _ = names.place(&cg(None));
        assert!(names.wanted.lock().unwrap().0.is_empty());
    }
}
