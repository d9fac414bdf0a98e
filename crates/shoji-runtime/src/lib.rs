//! Host runtime: configuration, sandbox lifecycle, hypervisor, helpers, agent client.
//!
//! How the parts compose: [`config`] loads the TOML; [`image`] unpacks an OCI image and [`spec`]
//! builds the runtime spec; [`helpers`] starts vhost-device-vsock and virtiofsd; [`hypervisor`]
//! is the VMM seam (QEMU today); [`agent`] talks ttRPC to the guest over hybrid vsock;
//! [`sandbox`] puts these together into one booted VM (its directory, binaries, root
//! filesystem, hooks, boot errors, and [`sandbox::SandboxVm`]); [`run`] is `shoji run` (one
//! sandbox, one container, to its exit), and [`lifecycle`] keeps a sandbox alive in a sandbox
//! process between `shoji create` and `shoji delete`; [`reclaim`] removes what a killed
//! `shoji run` left. Everything started is owned by a guard that kills and removes it on drop.
//! What the host keeps from its other users: directories and files made by [`private_fs`]
//! (0700/0600), every guest byte that reaches a host log capped by [`capped_log`].

pub mod agent;
pub mod capped_log;
pub mod config;
pub mod env;
pub mod helpers;
pub mod hypervisor;
pub mod image;
pub mod lifecycle;
pub mod mount_ns;
pub mod network;
pub mod private_fs;
pub mod process;
pub mod reclaim;
pub mod run;
pub mod sandbox;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod stdio;
pub mod volumes;
pub mod vsock;

pub use shoji_protocols::error_chain;
