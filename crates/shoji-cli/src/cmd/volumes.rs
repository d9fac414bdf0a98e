//! The volume flags `run` and `create` share: `-v`, `--mount`, `--tmpfs`, `--read-only`,
//! `--shm-size`, parsed into the OCI mounts of `shoji_runtime::volumes`.

use anyhow::Context;
use shoji_runtime::spec::parse_size;
use shoji_runtime::volumes::{self, VolumeError};

#[derive(Debug, clap::Args)]
pub struct VolumeArgs {
    /// Bind a host file or directory: HOST_PATH:CONTAINER_PATH[:ro], HOST_PATH absolute and
    /// existing; repeatable (needs root)
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// A mount as Docker spells it: type=bind|tmpfs,source=,target=[,readonly][,bind-propagation=]
    /// [,tmpfs-size=][,tmpfs-mode=]; comma-separated as CSV, so a field holding a comma is
    /// quoted whole ('"source=/a,b"'); repeatable
    #[arg(long = "mount", value_name = "type=...,target=...")]
    pub mount: Vec<String>,
    /// Mount a tmpfs (noexec,nosuid,nodev by default): PATH[:size=64m,mode=1777,...]; repeatable
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Size of /dev/shm, e.g. 64M (default 64 MiB)
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
}

impl VolumeArgs {
    /// The mounts, parents before what is mounted inside them (as Docker orders them).
    pub fn mounts(&self) -> anyhow::Result<Vec<shoji_runtime::volumes::Mount>> {
        let mut mounts = Vec::new();
        if let Some(s) = &self.shm_size {
            let bytes = parse_size(s).context("while reading --shm-size")?;
            mounts.push(volumes::shm_mount(bytes)?);
        }
        let parsed: Result<Vec<_>, VolumeError> = self
            .volume
            .iter()
            .map(|v| volumes::parse_volume(v))
            .chain(self.mount.iter().map(|m| volumes::parse_mount(m)))
            .chain(self.tmpfs.iter().map(|t| volumes::parse_tmpfs(t)))
            .collect();
        mounts.extend(parsed?);
        mounts.sort_by_key(|m| m.destination().components().count());
        Ok(mounts)
    }
}
