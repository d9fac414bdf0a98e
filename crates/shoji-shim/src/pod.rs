//! The sandbox one shim holds: one VM ([`SandboxVm`]) and the containers in it, each with its
//! processes. Shaped as 1 VM : N containers : M execs; what containerd sends this slice is one
//! container per shim (the shim groups by container id), and the VM's virtio-fs share is that
//! container's root filesystem.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_shim::protos::api::Mount;
use shoji_runtime::agent::AgentClient;
use shoji_runtime::lifecycle::status::Container;
use shoji_runtime::sandbox::SandboxVm;
use shoji_runtime::stdio::FIRST_STDIO_PORT;

use crate::process::Proc;

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
    pub containers: HashMap<String, Arc<Ctr>>,
    next_port: u32,
}

impl Default for Pod {
    fn default() -> Self {
        Self {
            vm: None,
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
}
