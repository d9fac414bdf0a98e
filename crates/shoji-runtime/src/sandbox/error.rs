//! What can go wrong while a sandbox is prepared, booted or run: each variant names the step
//! and keeps the step's error as its source (shown as one chain at the top).

use std::path::PathBuf;

use crate::agent::AgentError;
use crate::{helpers, hypervisor, image, process, spec, stdio};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("reading the configuration")]
    Config(#[from] crate::config::ConfigError),
    #[error("preparing the sandbox directory")]
    Sandbox(#[from] super::SandboxError),
    #[error("reading the image")]
    Image(#[from] image::ImageError),
    #[error("building the container's runtime spec")]
    Spec(#[from] spec::SpecError),
    #[error("starting a sandbox process")]
    Process(#[from] process::ProcessError),
    #[error("starting a helper of the VM")]
    Helper(#[from] helpers::HelperError),
    #[error("starting the hypervisor")]
    Hypervisor(#[from] hypervisor::HypervisorError),
    #[error("connecting the container's stdio")]
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
