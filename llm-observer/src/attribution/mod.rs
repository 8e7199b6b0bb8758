//! Who is behind a connection: the process ([`process`], named by [`name`]), the container and
//! pod it runs in ([`cgroup`] ids, [`names`] from the node's runtimes and the Kubernetes API).
//! The rules are documented in docs/attribution.md.
pub mod cgroup;
pub mod docker;
#[cfg(test)]
pub(crate) mod fakeproc;
pub mod gpu;
pub mod http;
pub mod kube;
pub mod name;
pub mod names;
pub mod nvml;
pub mod process;
pub mod serving;

/// Where a process runs, as label values: empty outside containers (the cAdvisor convention).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Place {
    pub container: String,
    pub pod: String,
    pub namespace: String,
}
