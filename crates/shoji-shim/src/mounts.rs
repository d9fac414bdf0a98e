//! A task's mounts: the bind and tmpfs mounts of its bundle's `config.json` (CRI's binds of
//! `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, `/dev/termination-log` and volumes among
//! them) checked and staged in the sandbox's share the way `shoji run` stages volumes
//! (`shoji_runtime::volumes`, ADR 017); the spec the agent gets names the staged copies.

use std::path::Path;

use oci_spec::runtime::Spec;

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
    shoji_runtime::volumes::prepare_spec(&mut spec, container_dir, &[sandbox_root.into()])?;
    serde_json::to_vec(&spec).map_err(TaskMountsError::Spec)
}
