//! The vhost-user helper processes a sandbox needs: rust-vmm's `vhost-device-vsock` (hybrid
//! vsock on a Unix socket) and `virtiofsd` (the container's root filesystem). Both keep running
//! after QEMU exits, so their guards stop them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::process::{find_binary, ChildGuard, ProcessError};

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{what} exited ({status}) before creating its socket {socket}: {stderr}")]
    Exited {
        what: &'static str,
        status: String,
        socket: PathBuf,
        stderr: String,
    },
    #[error("{what} did not create its socket {socket} within {secs} s")]
    NoSocket {
        what: &'static str,
        socket: PathBuf,
        secs: u64,
    },
}

const HINT: &str = "run scripts/setup.sh, or cargo install vhost-device-vsock virtiofsd";

/// Locates a helper binary by name.
pub fn locate(name: &'static str) -> Result<PathBuf, ProcessError> {
    find_binary(name).ok_or_else(|| ProcessError::NotFound {
        what: "helper",
        name: name.to_string(),
        hint: HINT,
    })
}

/// Starts vhost-device-vsock for guest CID 3.
pub async fn start_vsock(
    bin: &Path,
    vhost_socket: &Path,
    uds: &Path,
) -> Result<ChildGuard, HelperError> {
    let mut cmd = Command::new(bin);
    cmd.arg("--guest-cid")
        .arg("3")
        .arg("--socket")
        .arg(vhost_socket)
        .arg("--uds-path")
        .arg(uds);
    start("vhost-device-vsock", cmd, vhost_socket, ChildGuard::spawn).await
}

/// virtiofsd's own confinement (ADR 009). As root, `namespace`: it serves the guest from new
/// mount, PID and network namespaces whose root is the shared directory (pivot_root), so a
/// path the guest makes up cannot name a host file even if virtiofsd's checks were wrong.
/// Without root, `none`: `namespace` would need a user namespace with an ID mapping, and
/// `chroot` needs root; the files served are then the user's own.
pub fn virtiofsd_sandbox() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        "namespace"
    } else {
        "none"
    }
}

/// Starts virtiofsd sharing `dir`.
pub async fn start_virtiofsd(
    bin: &Path,
    socket: &Path,
    dir: &Path,
) -> Result<ChildGuard, HelperError> {
    let mut cmd = Command::new(bin);
    cmd.arg("--socket-path")
        .arg(socket)
        .arg("--shared-dir")
        .arg(dir)
        .arg("--sandbox")
        .arg(virtiofsd_sandbox())
        .arg("--cache")
        .arg("auto")
        .env("RUST_LOG", "error");
    // Its own group: as root it serves from a forked child (`--sandbox namespace`).
    start("virtiofsd", cmd, socket, ChildGuard::spawn_group).await
}

async fn start(
    what: &'static str,
    mut cmd: Command,
    socket: &Path,
    spawn: fn(&'static str, Command) -> Result<ChildGuard, ProcessError>,
) -> Result<ChildGuard, HelperError> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = spawn(what, cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if socket.exists() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait() {
            let mut stderr = Vec::new();
            if let Some(pipe) = child.take_stderr() {
                use tokio::io::AsyncReadExt;
                let mut limited = pipe.take(4096);
                let read = limited.read_to_end(&mut stderr);
                let _ = tokio::time::timeout(Duration::from_millis(500), read).await;
            }
            return Err(HelperError::Exited {
                what,
                status: status.to_string(),
                socket: socket.to_path_buf(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        if Instant::now() > deadline {
            return Err(HelperError::NoSocket {
                what,
                socket: socket.to_path_buf(),
                secs: 10,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
