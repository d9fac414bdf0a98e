//! The sandbox one shim holds: one VM ([`SandboxVm`]) and the containers in it, each with its
//! processes: 1 VM : N containers : M execs. A Kubernetes pod is one sandbox: containerd's CRI
//! plugin marks every container of a pod, its sandbox ("pause") container included, with the
//! pod's id ([`SANDBOX_ID_ANNOTATION`]), and [`grouping`] sends them all to one shim; a container
//! without it (`ctr run`) is a sandbox of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::protos::api::Mount;
use shoji_runtime::agent::AgentClient;
use shoji_runtime::lifecycle::status::Container;
use shoji_runtime::sandbox::SandboxVm;
use shoji_runtime::stdio::FIRST_STDIO_PORT;

use crate::process::Proc;

/// The annotation containerd's CRI plugin gives every container of a pod, the pod's sandbox
/// container included: the pod sandbox's id.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("cannot read the container's spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's spec {path} is not an OCI runtime spec")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("bad pod sandbox id {id:?} in the annotation {SANDBOX_ID_ANNOTATION}: {reason}")]
    SandboxId { id: String, reason: &'static str },
}

/// The pod sandbox a container belongs to: its spec's [`SANDBOX_ID_ANNOTATION`], if it has one.
pub fn sandbox_id(spec_json: &[u8], path: &Path) -> Result<Option<String>, PodError> {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let spec: Annotated = serde_json::from_slice(spec_json).map_err(|source| PodError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    match spec.annotations.get(SANDBOX_ID_ANNOTATION) {
        None => Ok(None),
        Some(id) => shoji_runtime::lifecycle::state::id_problem(id)
            .map(|_| Some(id.clone()))
            .map_err(|reason| PodError::SandboxId {
                id: id.clone(),
                reason,
            }),
    }
}

/// Whether a pod's container shares the pod's PID namespace: its spec names an existing one
/// (`linux.namespaces` has a `pid` entry with a `path`), as containerd's CRI plugin writes it for
/// a container whose `namespace_options.pid` is POD (or TARGET). The path is a host `/proc` path
/// that means nothing in the guest; the agent joins the sandbox container's namespace instead.
pub fn joins_pid_namespace(spec_json: &[u8], path: &Path) -> Result<bool, PodError> {
    #[derive(serde::Deserialize)]
    struct Namespace {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        path: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Linux {
        #[serde(default)]
        namespaces: Vec<Namespace>,
    }
    #[derive(serde::Deserialize)]
    struct WithLinux {
        #[serde(default)]
        linux: Option<Linux>,
    }
    let spec: WithLinux = serde_json::from_slice(spec_json).map_err(|source| PodError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(spec
        .linux
        .unwrap_or_default()
        .namespaces
        .iter()
        .any(|ns| ns.kind == "pid" && ns.path.as_deref().is_some_and(|p| !p.is_empty())))
}

/// The shim that serves the container whose bundle is `bundle`: its pod's (the pod sandbox id)
/// for a container of a pod, else its own (`id`). As runc's shim groups a pod's containers.
pub fn grouping(bundle: &Path, id: &str) -> Result<String, PodError> {
    let path = bundle.join("config.json");
    let spec = std::fs::read(&path).map_err(|source| PodError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(sandbox_id(&spec, &path)?.unwrap_or_else(|| id.to_string()))
}

/// One container: its bundle, its root filesystem and its processes, with their states in the
/// lifecycle's model.
#[derive(Debug)]
pub struct Ctr {
    pub id: String,
    pub bundle: PathBuf,
    pub mounts: Vec<Mount>,
    /// containerd's mounts are on `<bundle>/rootfs` (unmounted on delete).
    pub mounted: bool,
    pub client: AgentClient,
    pub init: Arc<Proc>,
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
    pub record: Mutex<Container>,
    /// The container's OOM kills in the guest that containerd has been told of (TaskOOM); held
    /// while a `TaskOOM` is queued, so that an exit's `TaskExit` queued after it waits for it.
    pub oom_kills: tokio::sync::Mutex<u64>,
}

impl Ctr {
    /// The container's record; nothing panics while holding it.
    pub fn record(&self) -> std::sync::MutexGuard<'_, Container> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Proc>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process `exec_id` names (`""`: the init).
    pub fn proc(&self, exec_id: &str) -> Option<Arc<Proc>> {
        if exec_id.is_empty() {
            Some(self.init.clone())
        } else {
            self.execs().get(exec_id).cloned()
        }
    }
}

/// The shim's sandbox: the VM once the first container has booted it, and its containers.
#[derive(Debug)]
pub struct Pod {
    pub vm: Option<SandboxVm>,
    /// The pod's network, kept until the VM has stopped (see [`Pod::stop_vm`]).
    pub network: Option<crate::network::PodNetwork>,
    pub containers: HashMap<String, Arc<Ctr>>,
    next_port: u32,
}

impl Default for Pod {
    fn default() -> Self {
        Self {
            vm: None,
            network: None,
            containers: HashMap::new(),
            next_port: FIRST_STDIO_PORT,
        }
    }
}

impl Pod {
    /// Three fresh host ports (stdin, stdout, stderr) for one process of the sandbox.
    pub fn stdio_ports(&mut self) -> u32 {
        let p = self.next_port;
        self.next_port += 3;
        p
    }

    pub fn get(&self, id: &str) -> Option<Arc<Ctr>> {
        self.containers.get(id).cloned()
    }

    /// Stops the VM, then undoes the pod network's set-up in the namespace.
    pub async fn stop_vm(&mut self) {
        if let Some(vm) = self.vm.take() {
            vm.stop().await;
        }
        self.network = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_containers_are_grouped_by_the_cri_sandbox_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = |annotations: &str| {
            std::fs::write(
                dir.path().join("config.json"),
                format!(r#"{{"ociVersion":"1.2.0","annotations":{{{annotations}}}}}"#),
            )
            .expect("write");
        };
        spec(
            r#""io.kubernetes.cri.sandbox-id":"pod1","io.kubernetes.cri.container-type":"container""#,
        );
        assert_eq!(grouping(dir.path(), "c1").expect("grouping"), "pod1");
        spec("");
        assert_eq!(grouping(dir.path(), "c1").expect("grouping"), "c1");
        spec(r#""io.kubernetes.cri.sandbox-id":"../x""#);
        let e = grouping(dir.path(), "c1").expect_err("a bad id is refused");
        assert!(e.to_string().contains("../x"), "{e}");
        std::fs::write(dir.path().join("config.json"), "{").expect("write");
        assert!(matches!(
            grouping(dir.path(), "c1"),
            Err(PodError::Parse { .. })
        ));
    }

    #[test]
    fn a_pid_namespace_with_a_path_is_the_pods() {
        let joins = |spec: &str| joins_pid_namespace(spec.as_bytes(), Path::new("config.json"));
        let pod = r#"{"linux":{"namespaces":[{"type":"network","path":"/proc/7/ns/net"},{"type":"pid","path":"/proc/7/ns/pid"}]}}"#;
        assert!(joins(pod).expect("parsed"));
        let own = r#"{"linux":{"namespaces":[{"type":"network","path":"/proc/7/ns/net"},{"type":"pid"}]}}"#;
        assert!(!joins(own).expect("parsed"));
        assert!(!joins(r#"{"linux":{"namespaces":[{"type":"pid","path":""}]}}"#).expect("parsed"));
        assert!(!joins(r#"{"ociVersion":"1.2.0"}"#).expect("parsed"));
        assert!(matches!(joins("["), Err(PodError::Parse { .. })));
    }
}
