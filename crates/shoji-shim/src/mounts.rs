//! A task's mounts: the bind and tmpfs mounts of its bundle's `config.json` (CRI's binds of
//! `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, `/dev/termination-log` and volumes among
//! them) checked and staged in the sandbox's share the way `shoji run` stages volumes
//! (`shoji_runtime::volumes`, ADR 017); the spec the agent gets names the staged copies.
//!
//! The serving shim lives in a mount namespace of its own (ADR 023, entered by
//! [`enter_own_namespace`] before any thread starts): what it stages there never shows in the
//! host's mount table, and goes with the namespace when the shim and its helpers die. Volume
//! host paths are still looked up in the host's namespace, as the host sees them now.

use std::path::Path;
use std::sync::OnceLock;

use oci_spec::runtime::Spec;
use shoji_runtime::mount_ns::{MountNs, MountNsError};

/// The host's mount namespace, which the serving shim left.
static HOST: OnceLock<MountNs> = OnceLock::new();

/// Moves the shim into a mount namespace of its own (see the module's doc) and keeps the
/// host's. Without root, where the shim can make no mount anyway, an `EPERM` leaves it where it
/// is (false); any other failure is an error.
pub fn enter_own_namespace() -> Result<bool, MountNsError> {
    match shoji_runtime::mount_ns::enter_own() {
        Ok(host) => {
            let _ = HOST.set(host);
            Ok(true)
        }
        Err(MountNsError::Unshare(nix::Error::EPERM)) if !nix::unistd::geteuid().is_root() => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskMountsError {
    #[error("the bundle's config.json is not a valid OCI runtime spec")]
    Spec(#[source] serde_json::Error),
    #[error(transparent)]
    Volumes(#[from] shoji_runtime::volumes::PrepareError),
}

/// Checks and stages the mounts of `spec_json` into `container_dir` (the container's directory
/// in the sandbox's share); `sandbox_root` is where no volume may come from. Returns the spec
/// to send to the agent.
pub fn stage_task_mounts(
    spec_json: &[u8],
    container_dir: &Path,
    sandbox_root: &Path,
) -> Result<Vec<u8>, TaskMountsError> {
    let mut spec: Spec = serde_json::from_slice(spec_json).map_err(TaskMountsError::Spec)?;
    shoji_runtime::volumes::prepare_spec(
        &mut spec,
        container_dir,
        &[sandbox_root.into()],
        HOST.get(),
    )?;
    serde_json::to_vec(&spec).map_err(TaskMountsError::Spec)
}
