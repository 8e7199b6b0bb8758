//! Container and pod identity from `/proc/<pid>/cgroup`: a pure parser of every path shape the
//! runtimes and kubelet drivers produce (docs/attribution.md lists them).
//!
//! Each line is `hierarchy:controllers:path`. The cgroup v2 line (`0::`) is read first, then the
//! v1 lines; the first one that names a container wins. Within a path the innermost container
//! id wins (kind and other nested setups put a node's whole cgroup tree under an outer
//! container), and relative segments (`..`, from a private cgroup namespace) are ignored.

/// The container runtime a cgroup path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A bare 64-hex id under a kubelet pod (cgroupfs driver): docker or containerd.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// Kubernetes QoS class, from the kubelet's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// What one process's cgroup says about where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CgroupInfo {
    /// Runtime and 64-hex container id (lower case).
    pub container: Option<(Runtime, String)>,
    /// Pod uid with dashes: the API uid, or for a static pod the 32-hex config hash (the mirror
    /// pod's `kubernetes.io/config.mirror` annotation).
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
}

impl CgroupInfo {
    pub fn is_empty(&self) -> bool {
        self.container.is_none() && self.pod_uid.is_none()
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container id in one path segment, with the runtime it names. Conmon (podman, cri-o monitor)
/// scopes are not containers.
fn container_in(segment: &str, parent: Option<&str>) -> Option<(Runtime, String)> {
    let s = segment.strip_suffix(".scope").unwrap_or(segment);
    if s.contains("conmon") {
        return None;
    }
    const PREFIXES: &[(&str, Runtime)] = &[
        ("cri-containerd-", Runtime::Containerd),
        ("cri-containerd:", Runtime::Containerd),
        ("containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("docker-", Runtime::Docker),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, rt) in PREFIXES {
        if let Some(id) = s.strip_prefix(prefix)
            && is_hex64(id)
        {
            return Some((*rt, id.to_ascii_lowercase()));
        }
    }
    if is_hex64(s) {
        let rt = match parent {
            Some("docker") => Runtime::Docker,
            Some("libpod_parent") => Runtime::Podman,
            _ => Runtime::Unknown,
        };
        return Some((rt, s.to_ascii_lowercase()));
    }
    None
}

/// A pod uid in one segment: `pod<uid>` (cgroupfs) or `…-pod<uid_>.slice` (systemd).
fn pod_in(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = if s.starts_with("pod") {
        0
    } else {
        s.rfind("-pod")? + 1
    };
    if !s[..at].is_empty() && !s[..at].starts_with("kube") {
        return None;
    }
    let uid = s[at + 3..].replace('_', "-");
    let hex = |t: &str| t.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = uid.split('-').collect();
    let uuid = parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| hex(p));
    let static_hash = uid.len() == 32 && hex(&uid);
    (uuid || static_hash).then(|| uid.to_ascii_lowercase())
}

fn qos_in(segment: &str) -> Option<Qos> {
    let s = segment.strip_suffix(".slice").unwrap_or(segment);
    if s == "burstable" || s.ends_with("kubepods-burstable") {
        Some(Qos::Burstable)
    } else if s == "besteffort" || s.ends_with("kubepods-besteffort") {
        Some(Qos::BestEffort)
    } else {
        None
    }
}

/// Parses one cgroup path.
pub fn parse_path(path: &str) -> CgroupInfo {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".." && *s != ".")
        .collect();
    let mut info = CgroupInfo::default();
    // Innermost first: the last segment that names a container is the process's own.
    for i in (0..segments.len()).rev() {
        let parent = i.checked_sub(1).map(|p| segments[p]);
        if info.container.is_none()
            && let Some(c) = container_in(segments[i], parent)
        {
            info.container = Some(c);
        }
        if info.pod_uid.is_none()
            && let Some(uid) = pod_in(segments[i])
        {
            info.pod_uid = Some(uid);
            // The QoS level sits between kubepods and the pod, or is folded into the pod's
            // systemd slice name; a pod directly under kubepods is Guaranteed.
            info.qos = Some(
                qos_in(segments[i].split("-pod").next().unwrap_or(""))
                    .or_else(|| parent.and_then(qos_in))
                    .unwrap_or(Qos::Guaranteed),
            );
        }
        if info.pod_uid.is_some() {
            break;
        }
    }
    info
}

/// Parses a whole `/proc/<pid>/cgroup` text.
pub fn parse(text: &str) -> CgroupInfo {
    let mut lines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (h, _controllers, path) = (it.next()?, it.next()?, it.next()?);
            Some((h, path))
        })
        .collect();
    // v2 (hierarchy 0) first; among v1 lines the file's order.
    lines.sort_by_key(|(h, _)| *h != "0");
    let mut fallback = CgroupInfo::default();
    for (_, path) in lines {
        let info = parse_path(path);
        if info.container.is_some() {
            return info;
        }
        if fallback.is_empty() && !info.is_empty() {
            fallback = info;
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
    const OUTER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn info(rt: Runtime, uid: Option<&str>, qos: Option<Qos>) -> CgroupInfo {
        CgroupInfo {
            container: Some((rt, ID.to_owned())),
            pod_uid: uid.map(str::to_owned),
            qos,
        }
    }

    /// Every row of the research table (../shared/research/attribution-gpu.md), as real files.
    #[test]
    fn real_world_shapes() {
        let uid = "8712f785-1a3e-41ec-a00b-e2dcc77431cb";
        let cases: Vec<(String, CgroupInfo)> = vec![
            // v1 cgroupfs, docker, burstable (uid with dashes).
            (
                format!(
                    "12:memory:/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/{ID}\n1:name=systemd:/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/{ID}\n"
                ),
                info(
                    Runtime::Unknown,
                    Some("6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e"),
                    Some(Qos::Burstable),
                ),
            ),
            // cgroupfs guaranteed: no QoS level.
            (
                format!("4:pids:/kubepods/poda38c12e8-255a-11e9-8cd9-0007cb0b2cc8/{ID}\n"),
                info(
                    Runtime::Unknown,
                    Some("a38c12e8-255a-11e9-8cd9-0007cb0b2cc8"),
                    Some(Qos::Guaranteed),
                ),
            ),
            // cgroupfs cri-o.
            (
                format!("0::/kubepods/besteffort/pod{uid}/crio-{ID}\n"),
                info(Runtime::CriO, Some(uid), Some(Qos::BestEffort)),
            ),
            // v2 systemd docker besteffort (underscores → dashes).
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/docker-{ID}.scope\n"
                ),
                info(Runtime::Docker, Some(uid), Some(Qos::BestEffort)),
            ),
            // systemd containerd (EKS), burstable.
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-{ID}.scope\n"
                ),
                info(Runtime::Containerd, Some(uid), Some(Qos::Burstable)),
            ),
            // systemd guaranteed.
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-{ID}.scope\n"
                ),
                info(Runtime::Containerd, Some(uid), Some(Qos::Guaranteed)),
            ),
            // systemd cri-o with the nested `container` leaf.
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/crio-{ID}.scope/container\n"
                ),
                info(Runtime::CriO, Some(uid), Some(Qos::Burstable)),
            ),
            // Static pod: the 32-hex config hash.
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3e61c214bc3ed9ff81e21474dd6cba17.slice/cri-containerd-{ID}\n"
                ),
                info(
                    Runtime::Containerd,
                    Some("3e61c214bc3ed9ff81e21474dd6cba17"),
                    Some(Qos::Burstable),
                ),
            ),
            // kind: the node is itself a docker container; the innermost id wins.
            (
                format!(
                    "0::/docker/{OUTER}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-{ID}.scope\n"
                ),
                info(Runtime::Containerd, Some(uid), Some(Qos::BestEffort)),
            ),
            // Private cgroup namespace: relative path.
            (
                format!("0::/../../../../system.slice/docker-{ID}.scope\n"),
                info(Runtime::Docker, None, None),
            ),
            // Plain docker, v1 and v2 (compose services).
            (
                format!("13:devices:/docker/{ID}\n12:memory:/docker/{ID}\n"),
                info(Runtime::Docker, None, None),
            ),
            (
                format!("0::/system.slice/docker-{ID}.scope\n"),
                info(Runtime::Docker, None, None),
            ),
            // Podman, and its conmon (not a container).
            (
                format!("0::/machine.slice/libpod-{ID}.scope\n"),
                info(Runtime::Podman, None, None),
            ),
            (
                format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
                CgroupInfo::default(),
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/crio-conmon-{ID}.scope\n"
                ),
                CgroupInfo {
                    container: None,
                    pod_uid: Some(uid.to_owned()),
                    qos: Some(Qos::Guaranteed),
                },
            ),
            // Hybrid host (v1 controllers + v2 unified): the container is named on the v1 lines only.
            (
                format!(
                    "12:pids:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n0::/\n"
                ),
                info(Runtime::Docker, None, None),
            ),
            // Not in a container.
            (
                "0::/user.slice/user-0.slice/session-3.scope\n".to_owned(),
                CgroupInfo::default(),
            ),
            ("0::/init.scope\n".to_owned(), CgroupInfo::default()),
            // Garbage never panics.
            (
                "no colons here\n::\n0::\n".to_owned(),
                CgroupInfo::default(),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(&text), want, "{text}");
        }
    }

    #[test]
    fn upper_case_ids_are_normalised() {
        let up = ID.to_ascii_uppercase();
        let got = parse(&format!("0::/system.slice/docker-{up}.scope\n"));
        assert_eq!(got.container, Some((Runtime::Docker, ID.to_owned())));
    }
}
