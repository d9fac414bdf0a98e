//! Host runtime: configuration, sandbox lifecycle, hypervisor, helpers, agent client.
//!
//! How the parts compose: [`config`] loads the TOML; [`image`] unpacks an OCI image and [`spec`]
//! builds the runtime spec; [`helpers`] starts vhost-device-vsock and virtiofsd; [`hypervisor`]
//! is the VMM seam (QEMU today); [`agent`] talks ttRPC to the guest over hybrid vsock;
//! [`sandbox`] puts these together into one booted VM (its directory, binaries, root
//! filesystem, hooks, boot errors, and [`sandbox::SandboxVm`]); [`run`] is `shoji run` (one
//! sandbox, one container, to its exit), and [`lifecycle`] keeps a sandbox alive in a sandbox
//! process between `shoji create` and `shoji delete`. Everything started is owned by a guard that kills
//! and removes it on drop.

pub mod agent;
pub mod config;
pub mod env;
pub mod helpers;
pub mod hypervisor;
pub mod image;
pub mod lifecycle;
pub mod network;
pub mod process;
pub mod run;
pub mod sandbox;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod stdio;
pub mod vsock;
