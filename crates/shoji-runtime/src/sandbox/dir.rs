//! The sandbox directory: sockets, console log, root filesystem, spec. Removed whole when the
//! [`SandboxDir`] drops, on every exit path.

use std::path::{Path, PathBuf};

use rand::Rng;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot create sandbox directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A fresh sandbox id: 16 hex digits.
pub fn new_sandbox_id() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Default parent of sandbox directories.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("shoji");
    }
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/shoji")
    } else {
        std::env::temp_dir().join(format!("shoji-{}", nix::unistd::geteuid()))
    }
}

#[derive(Debug)]
pub struct SandboxDir {
    pub id: String,
    path: PathBuf,
    keep: bool,
}

impl SandboxDir {
    pub fn create(root: &Path, id: &str) -> Result<Self, SandboxError> {
        let path = root.join(id);
        std::fs::create_dir_all(&path).map_err(|source| SandboxError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            id: id.to_string(),
            path,
            keep: std::env::var_os("SHOJI_KEEP_SANDBOX").is_some(),
        })
    }

    /// Takes over `root/id`, made by someone else (`shoji create` makes it, so that a second
    /// create of the same id fails); removed on drop like one this process made.
    pub fn adopt(root: &Path, id: &str) -> Self {
        Self {
            id: id.to_string(),
            path: root.join(id),
            keep: std::env::var_os("SHOJI_KEEP_SANDBOX").is_some(),
        }
    }

    /// Leaves the directory in place on drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn vsock_uds(&self) -> PathBuf {
        self.path.join("vm.vsock")
    }
    pub fn vhost_socket(&self) -> PathBuf {
        self.path.join("vh.sock")
    }
    pub fn virtiofs_socket(&self) -> PathBuf {
        self.path.join("vfs.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
    /// The host end of guest port `port` (guest `connect(2, port)` arrives here).
    pub fn host_port_socket(&self, port: u32) -> PathBuf {
        PathBuf::from(format!("{}_{port}", self.vsock_uds().display()))
    }

    /// The last `n` lines of the guest console, for error messages.
    pub fn console_tail(&self, n: usize) -> String {
        console_tail(&self.console_log(), n)
    }
}

pub fn console_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

impl Drop for SandboxDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
