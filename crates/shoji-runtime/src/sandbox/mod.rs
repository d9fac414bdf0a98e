//! One sandbox: a VM with its agent, and everything the host runs and keeps for it.
//!
//! How the parts compose: [`dir`] owns the per-sandbox directory (sockets, console, and the one share
//! served to the guest, each container's rootfs in it),
//! private to this user, with the rootfs reached through a `nosuid,nodev` mount ([`mounts`]);
//! [`binaries`] resolves the hypervisor, the guest image and the helpers before anything
//! starts; [`rootfs`] turns an image, bundle or rootfs into the container's root filesystem
//! and spec; [`vm`] boots the helpers and the hypervisor and connects to the agent, each owned
//! by a guard, into a [`SandboxVm`], whose serial console [`console`] copies into a capped
//! `console.log`; [`hooks`] is where the caller's telemetry plugs in;
//! [`error`] says which of these failed. `shoji run` ([`crate::run`]) and the lifecycle's
//! sandbox process ([`crate::lifecycle`]) both build on this; see ADR 013 for how the model
//! grows to one VM holding several containers, each with several processes.

pub mod binaries;
pub mod console;
pub mod dir;
pub mod error;
pub mod hooks;
pub mod mounts;
pub mod rootfs;
pub mod vm;

pub use binaries::Binaries;
pub use dir::{
    console_tail, default_root, new_sandbox_id, remove_sandbox_dir, SandboxDir, SandboxError,
    SharedRootfs, SHARE_TAG,
};
pub use error::BootError;
pub use hooks::{NoHooks, PastSpan, RunHooks, SpanCount};
pub use rootfs::{prepare_rootfs, RootSource, UnpackProgress};
pub use vm::{AgentSpanCounts, BootOptions, SandboxVm, StartedProcess};

use std::path::PathBuf;

use crate::config::Config;

/// Where sandbox directories are made: `[runtime] sandbox_root`, else [`default_root`].
pub fn sandbox_root(config: &Config) -> PathBuf {
    config
        .runtime
        .sandbox_root
        .clone()
        .unwrap_or_else(default_root)
}
