//! Host runtime: configuration, sandbox lifecycle, hypervisor, helpers, agent client.
//!
//! How the parts compose: [`config`] loads the TOML; [`image`] turns an OCI image, bundle or
//! rootfs into a root filesystem and a runtime spec; [`sandbox`] owns the per-sandbox directory;
//! [`helpers`] starts vhost-device-vsock and virtiofsd; [`hypervisor`] launches QEMU; [`agent`]
//! talks ttRPC to the guest over hybrid vsock; [`vm`] holds one booted sandbox; [`run`] strings
//! them together for `shoji run`, and [`lifecycle`] keeps a sandbox alive in a sandbox process
//! between `shoji create` and `shoji delete`. Everything started is owned by a guard that kills
//! and removes it on drop.

pub mod agent;
pub mod config;
pub mod env;
pub mod helpers;
pub mod hypervisor;
pub mod image;
pub mod lifecycle;
pub mod process;
pub mod run;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod stdio;
pub mod vm;
pub mod vsock;
