//! A task's mounts: the bind and tmpfs mounts of its bundle's `config.json` (CRI's binds of
//! `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, `/dev/termination-log` and volumes among
//! them) checked and staged in the sandbox's share the way `shoji run` stages volumes
//! (`shoji_runtime::volumes`, ADR 017); the spec the agent gets names the staged copies.
//!
//! The serving shim lives in a mount namespace of its own (ADR 023, entered by
//! [`enter_own_namespace`] before any thread starts): what it stages there never shows in the
//! host's mount table, and goes with the namespace when the shim and its helpers die. Volume
//! host paths are still looked up in the host's namespace, as the host sees them now.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::{MountBuilder, Spec};
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
    #[error("cannot read the size of the pod's /dev/shm {path} (statfs)")]
    ShmSize {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the pod's /dev/shm mount cannot be rewritten")]
    ShmMount(#[source] oci_spec::OciSpecError),
}

/// Checks and stages the mounts of `spec_json` into `container_dir` (the container's directory
/// in the sandbox's share); `sandbox_root` is where no volume may come from. For a pod's
/// container (`pod`), CRI's `/dev/shm` bind (a tmpfs containerd made on the host for the pod)
/// first becomes a `/dev/shm` tmpfs of the same size: the agent gives the pod one tmpfs in the
/// guest, shared by its containers, and nothing of it touches the host's. Returns the spec to
/// send to the agent.
pub fn stage_task_mounts(
    spec_json: &[u8],
    container_dir: &Path,
    sandbox_root: &Path,
    pod: bool,
) -> Result<Vec<u8>, TaskMountsError> {
    let mut spec: Spec = serde_json::from_slice(spec_json).map_err(TaskMountsError::Spec)?;
    if pod {
        pod_shm_in_the_guest(&mut spec)?;
    }
    shoji_runtime::volumes::prepare_spec(
        &mut spec,
        container_dir,
        &[sandbox_root.into()],
        HOST.get(),
    )?;
    serde_json::to_vec(&spec).map_err(TaskMountsError::Spec)
}

/// Replaces a bind mount on `/dev/shm` with a tmpfs of its source's size (containerd sizes the
/// pod's shm tmpfs as the pod asks, 64 MiB by default).
fn pod_shm_in_the_guest(spec: &mut Spec) -> Result<(), TaskMountsError> {
    let Some(mounts) = spec.mounts_mut() else {
        return Ok(());
    };
    for m in mounts.iter_mut() {
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if m.destination() != Path::new("/dev/shm") || !is_bind {
            continue;
        }
        let source = m.source().clone().unwrap_or_default();
        let fs = nix::sys::statfs::statfs(&source).map_err(|e| TaskMountsError::ShmSize {
            path: source.clone(),
            source: e,
        })?;
        let bytes = fs.blocks() * fs.block_size() as u64;
        *m = MountBuilder::default()
            .destination("/dev/shm")
            .typ("tmpfs")
            .source("shm")
            .options(
                ["nosuid", "noexec", "nodev", "mode=1777"]
                    .map(String::from)
                    .into_iter()
                    .chain([format!("size={bytes}")])
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(TaskMountsError::ShmMount)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_shm_bind_becomes_a_tmpfs_of_its_sources_size() {
        let dir = tempfile::tempdir().unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [
                {"destination": "/dev/shm", "type": "bind", "source": dir.path(),
                 "options": ["rbind", "ro"]},
                {"destination": "/data", "type": "tmpfs", "source": "tmpfs"}
            ]
        });
        let mut spec: Spec = serde_json::from_value(spec).unwrap();
        pod_shm_in_the_guest(&mut spec).unwrap();
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(mounts[0].typ().as_deref(), Some("tmpfs"));
        let fs = nix::sys::statfs::statfs(dir.path()).unwrap();
        let size = format!("size={}", fs.blocks() * fs.block_size() as u64);
        assert!(
            mounts[0].options().as_ref().unwrap().contains(&size),
            "{mounts:?}"
        );
        assert_eq!(mounts[1].destination(), Path::new("/data"));
        // A source that is not there: an error naming it, not a silent default.
        let spec = serde_json::json!({"ociVersion": "1.0.2", "mounts": [
            {"destination": "/dev/shm", "type": "bind", "source": "/nonexistent/shm"}]});
        let mut spec: Spec = serde_json::from_value(spec).unwrap();
        let e = pod_shm_in_the_guest(&mut spec).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/shm"), "{e}");
    }
}
