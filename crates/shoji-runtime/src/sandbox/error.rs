//! What can go wrong while a sandbox is prepared, booted or run.

use std::path::PathBuf;

use crate::agent::AgentError;
use crate::{helpers, hypervisor, image, process, spec, stdio};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sandbox(#[from] super::SandboxError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error(transparent)]
    Volumes(#[from] crate::volumes::PrepareError),
    #[error(transparent)]
    Helper(#[from] helpers::HelperError),
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::HypervisorError),
    #[error(transparent)]
    Stdio(#[from] stdio::StdioError),
    #[error(
        "{what} {path} does not exist; run `shoji image build`, or set [hypervisor.qemu] {key}"
    )]
    GuestImage {
        what: &'static str,
        key: &'static str,
        path: PathBuf,
    },
    #[error("sandbox {sandbox}: {cause}\n{output}")]
    Boot {
        sandbox: String,
        cause: AgentError,
        /// What the hypervisor wrote on stderr if it exited, then the console's last lines,
        /// each under a heading.
        output: String,
    },
    #[error("invalid --memory {given}: {reason}")]
    Memory { given: String, reason: String },
    #[error("sandbox {sandbox}: the VM exited unexpectedly ({status}) while the container was running\n--- last lines of the guest console ---\n{console}")]
    VmDied {
        sandbox: String,
        status: String,
        console: String,
    },
    #[error("sandbox {sandbox}: {cause}")]
    Agent { sandbox: String, cause: AgentError },
}
