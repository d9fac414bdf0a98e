//! The OCI runtime spec a container runs with: from an image's configuration plus the
//! `docker run`-style options, from a bundle's `config.json`, or a default for a bare rootfs.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use std::collections::HashSet;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxResourcesBuilder, Process, ProcessBuilder, Spec, User, UserBuilder,
};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path} is not a valid OCI runtime config: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("bundle {path} has no rootfs at {rootfs}")]
    NoRootfs { path: PathBuf, rootfs: PathBuf },
    #[error("no command: the image has no Entrypoint or Cmd, give one after --")]
    NoCommand,
    #[error("invalid {what} {value:?}: {expected}")]
    Invalid {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Size(shoji_units::UnitError),
    #[error("cannot build the runtime spec: {0}")]
    Build(String),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Mount(#[from] crate::volumes::VolumeError),
}

/// Docker's default capability set, which containers from images and root filesystems get.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// What `shoji run` lets the user override.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessOptions {
    /// Command and arguments; empty = the image's Entrypoint + Cmd.
    pub args: Vec<String>,
    /// `K=V` pairs added after (and overriding) the image's Env.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `UID[:GID]`, or a user (and group) name that the guest agent resolves in the
    /// container's /etc/passwd (and /etc/group).
    pub user: Option<String>,
    pub terminal: bool,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    /// Capabilities added to / dropped from Docker's default set (`CAP_X`, `X` or `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `-v`, `--tmpfs`, `--mount` (and `--shm-size` as a `/dev/shm` mount), in order, after the
    /// spec's own mounts ([`crate::volumes`]).
    #[serde(default)]
    pub mounts: Vec<oci_spec::runtime::Mount>,
    /// `--read-only`: the container's root filesystem is mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

fn build_err(e: impl std::fmt::Display) -> SpecError {
    SpecError::Build(e.to_string())
}

/// Spec from an image configuration.
pub fn from_image(
    image: &ImageConfiguration,
    rootfs: &Path,
    opts: &ProcessOptions,
) -> Result<Spec, SpecError> {
    let cfg = image.config().clone().unwrap_or_default();
    let args = if opts.args.is_empty() {
        let mut a = cfg.entrypoint().clone().unwrap_or_default();
        a.extend(cfg.cmd().clone().unwrap_or_default());
        a
    } else {
        let mut a = cfg.entrypoint().clone().unwrap_or_default();
        a.extend(opts.args.iter().cloned());
        a
    };
    let base_env = cfg.env().clone().unwrap_or_default();
    let cwd = opts
        .cwd
        .clone()
        .or_else(|| cfg.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let user = opts
        .user
        .clone()
        .or_else(|| cfg.user().clone().filter(|u| !u.is_empty()));
    build(args, base_env, cwd, user, rootfs, opts)
}

/// Spec for a bare root filesystem (`--rootfs`).
pub fn for_rootfs(rootfs: &Path, opts: &ProcessOptions) -> Result<Spec, SpecError> {
    let args = if opts.args.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        opts.args.clone()
    };
    let env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    build(
        args,
        env,
        opts.cwd.clone().unwrap_or_else(|| "/".into()),
        opts.user.clone(),
        rootfs,
        opts,
    )
}

/// Loads a runc-style bundle: `config.json` and its root filesystem. Command-line options
/// override the bundle's process where given.
pub fn from_bundle(dir: &Path, opts: &ProcessOptions) -> Result<(Spec, PathBuf), SpecError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| SpecError::BadConfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut spec: Spec = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(
        &text,
    ))
    .map_err(|e| SpecError::BadConfig {
        path: path.clone(),
        message: format!("at {}: {}", e.path(), e.inner()),
    })?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let rootfs = if root.is_absolute() {
        root
    } else {
        dir.join(root)
    };
    if !rootfs.is_dir() {
        return Err(SpecError::NoRootfs {
            path: dir.to_path_buf(),
            rootfs,
        });
    }
    let mut process = spec.process().clone().ok_or_else(|| SpecError::BadConfig {
        path: path.clone(),
        message: "no process".into(),
    })?;
    // The bundle's process stays as it is (capabilities, rlimits, ...) but for what the
    // command line gives.
    if !opts.args.is_empty() {
        process.set_args(Some(opts.args.clone()));
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::NoCommand);
    }
    if let Some(cwd) = &opts.cwd {
        process.set_cwd(PathBuf::from(cwd));
    }
    if opts.user.is_some() {
        process.set_user(user_of(opts.user.as_deref())?);
    }
    let mut env = process.env().clone().unwrap_or_default();
    merge_env(&mut env, opts)?;
    process.set_env(Some(env));
    process.set_terminal(Some(opts.terminal));
    spec.set_process(Some(process));
    add_mounts(&mut spec, opts);
    if opts.memory_bytes.is_some() || opts.cpus.is_some() {
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_resources(Some(resources(opts)?));
        spec.set_linux(Some(linux));
    }
    Ok((spec, rootfs))
}

/// Adds `opts.env` (overriding same-named entries) and the defaults every process gets.
fn merge_env(env: &mut Vec<String>, opts: &ProcessOptions) -> Result<(), SpecError> {
    for kv in &opts.env {
        let key = kv.split('=').next().unwrap_or("");
        if key.is_empty() || !kv.contains('=') {
            return Err(SpecError::Invalid {
                what: "environment variable",
                value: kv.clone(),
                expected: "K=V",
            });
        }
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if opts.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push("HOSTNAME=shoji".into());
    }
    Ok(())
}

/// The process of `shoji exec`: the container's own process (env, cwd, user, rlimits) with
/// `opts` applied on top, like `docker exec`.
pub fn exec_process(
    base: &oci_spec::runtime::Process,
    opts: &ProcessOptions,
    _rootfs: &Path,
) -> Result<oci_spec::runtime::Process, SpecError> {
    if opts.args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let mut p = base.clone();
    let mut env = base.env().clone().unwrap_or_default();
    merge_env(&mut env, opts)?;
    p.set_env(Some(env));
    p.set_args(Some(opts.args.clone()));
    if let Some(cwd) = &opts.cwd {
        p.set_cwd(PathBuf::from(cwd));
    }
    if opts.user.is_some() {
        p.set_user(user_of(opts.user.as_deref())?);
    }
    p.set_terminal(Some(opts.terminal));
    Ok(p)
}

fn build(
    args: Vec<String>,
    mut env: Vec<String>,
    cwd: String,
    user: Option<String>,
    _rootfs: &Path,
    opts: &ProcessOptions,
) -> Result<Spec, SpecError> {
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    merge_env(&mut env, opts)?;
    let caps = capabilities(opts)?;
    let cap_set = |names: &HashSet<String>| -> Result<HashSet<Capability>, SpecError> {
        names.iter().map(|n| parse_capability(n)).collect()
    };
    let process = ProcessBuilder::default()
        .args(args)
        .env(env)
        .cwd(cwd)
        .terminal(opts.terminal)
        .user(user_of(user.as_deref())?)
        // Docker's defaults: its capability set, setuid binaries keep working.
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(cap_set(&caps)?)
                .effective(cap_set(&caps)?)
                .permitted(cap_set(&caps)?)
                // The builder's defaults would put three capabilities in these two sets
                // (ambient ones survive an exec even as a non-root user); Docker's are empty.
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()
                .map_err(build_err)?,
        )
        .no_new_privileges(false)
        .rlimits(Process::default().rlimits().clone().unwrap_or_default())
        .build()
        .map_err(build_err)?;
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_hostname(Some("shoji".into()));
    // `Spec::default()` makes the root read-only; Docker's is writable unless asked otherwise.
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(false));
    }
    let mut linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().unwrap_or_default());
    linux.set_resources(Some(resources(opts)?));
    linux.set_seccomp(Some(crate::seccomp::default_profile(&caps)?));
    spec.set_linux(Some(linux));
    add_mounts(&mut spec, opts);
    Ok(spec)
}

/// Appends `opts.mounts` to the spec's (one for `/dev/shm` replaces the spec's), and makes the
/// root read-only for `--read-only`.
fn add_mounts(spec: &mut Spec, opts: &ProcessOptions) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &opts.mounts {
        if crate::volumes::is_standard(m) {
            mounts.retain(|old| old.destination() != m.destination());
        }
        mounts.push(m.clone());
    }
    spec.set_mounts(Some(mounts));
    if opts.read_only {
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(true));
        }
    }
}

/// `linux.resources` from `--memory` and `--cpus`.
fn resources(opts: &ProcessOptions) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(m) = opts.memory_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(m as i64)
                .build()
                .map_err(build_err)?,
        );
    }
    if let Some(c) = opts.cpus {
        let period = 100_000u64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota((c * period as f64) as i64)
                .period(period)
                .build()
                .map_err(build_err)?,
        );
    }
    resources.build().map_err(build_err)
}

/// `CAP_X` or `X`, in any case, as Docker takes them.
fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        SpecError::Invalid {
            what: "capability",
            value: name.to_string(),
            expected: "a Linux capability such as CAP_NET_ADMIN or NET_ADMIN, or ALL",
        }
    })
}

fn cap_name(c: &Capability) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Docker's default set with `--cap-drop` then `--cap-add` applied (`ALL` in either).
pub fn capabilities(opts: &ProcessOptions) -> Result<HashSet<String>, SpecError> {
    let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
    let mut set: HashSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    if opts.cap_drop.iter().any(is_all) {
        set.clear();
    }
    for n in opts.cap_drop.iter().filter(|n| !is_all(n)) {
        set.remove(&cap_name(&parse_capability(n)?));
    }
    if opts.cap_add.iter().any(is_all) {
        set.extend(ALL_CAPABILITIES.iter().map(|s| s.to_string()));
    }
    for n in opts.cap_add.iter().filter(|n| !is_all(n)) {
        set.insert(cap_name(&parse_capability(n)?));
    }
    Ok(set)
}

/// Every capability `--cap-add ALL` gives (those of Linux 6.1, the guest's kernel).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
];

/// The OCI user of a `--user` string. `UID:GID` is complete; anything else (a name, or a UID
/// whose group comes from its passwd entry) goes as `username`, which the guest agent resolves
/// inside the container's root: the host never opens the image's /etc/passwd or /etc/group.
pub fn user_of(user: Option<&str>) -> Result<User, SpecError> {
    let mut b = UserBuilder::default().uid(0u32).gid(0u32);
    if let Some(user) = user {
        let invalid = || SpecError::Invalid {
            what: "user",
            value: user.to_string(),
            expected: "UID[:GID] or NAME[:GROUP] from the image's /etc/passwd and /etc/group",
        };
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let part_ok = |p: &str| {
            !p.is_empty() && p.len() <= 256 && p.chars().all(|c| c.is_ascii_graphic() && c != ':')
        };
        if !part_ok(u) || g.is_some_and(|g| !part_ok(g)) {
            return Err(invalid());
        }
        match (u.parse::<u32>(), g.map(|g| g.parse::<u32>())) {
            (Ok(uid), Some(Ok(gid))) => b = b.uid(uid).gid(gid),
            _ => b = b.username(user),
        }
    }
    b.build().map_err(build_err)
}

/// Bytes in `512M`, `1G`, `1048576`: binary units, one meaning everywhere (see `shoji_units`).
pub fn parse_size(s: &str) -> Result<u64, SpecError> {
    shoji_units::parse_size(s).map_err(SpecError::Size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn names_are_left_to_the_guest_and_numbers_are_not() {
        let u = user_of(Some("5:6")).unwrap();
        assert_eq!((u.uid(), u.gid(), u.username().as_deref()), (5, 6, None));
        for name in ["someone", "1000", "user:staff", "1000:staff"] {
            let u = user_of(Some(name)).unwrap();
            assert_eq!(u.username().as_deref(), Some(name));
        }
        assert_eq!(user_of(None).unwrap().uid(), 0);
        for bad in ["", ":5", "a:", "a b", "a:b:c"] {
            let e = user_of(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("invalid user"), "{bad}: {e}");
        }
    }

    #[test]
    fn image_specs_get_dockers_capabilities_seccomp_and_no_nnp() {
        let opts = ProcessOptions {
            args: vec!["true".into()],
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["CAP_MKNOD".into(), "NET_RAW".into()],
            ..Default::default()
        };
        let spec = for_rootfs(Path::new("/nonexistent"), &opts).unwrap();
        let p = spec.process().as_ref().unwrap();
        let caps = p.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(bounding.contains(&Capability::SysAdmin));
        assert!(bounding.contains(&Capability::Chown));
        assert!(!bounding.contains(&Capability::Mknod) && !bounding.contains(&Capability::NetRaw));
        assert_eq!(bounding.len(), 13);
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.inheritable().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(caps.ambient().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(p.no_new_privileges(), Some(false));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        // CAP_SYS_ADMIN was added: mount is allowed.
        assert!(seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.names().contains(&"mount".to_string())));

        let none = ProcessOptions {
            args: vec!["true".into()],
            cap_drop: vec!["all".into()],
            cap_add: vec!["CAP_KILL".into()],
            ..Default::default()
        };
        assert_eq!(
            capabilities(&none).unwrap(),
            HashSet::from(["CAP_KILL".to_string()])
        );
        let bad = ProcessOptions {
            cap_add: vec!["CAP_FLY".into()],
            ..none
        };
        let e = capabilities(&bad).unwrap_err().to_string();
        assert!(e.contains("invalid capability \"CAP_FLY\""), "{e}");
    }

    #[test]
    fn image_env_is_overridden_and_entrypoint_kept() {
        let cfg: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1","PATH=/bin"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/tmp"},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let opts = ProcessOptions {
            env: vec!["A=2".into()],
            ..Default::default()
        };
        let spec = from_image(&cfg, Path::new("/nonexistent"), &opts).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
        assert!(p.env().as_ref().unwrap().contains(&"A=2".to_string()));
        assert!(!p.env().as_ref().unwrap().contains(&"A=1".to_string()));
        assert_eq!(p.cwd(), Path::new("/tmp"));
    }

    #[test]
    fn exec_process_inherits_the_containers_and_overrides() {
        let base = for_rootfs(
            Path::new("/nonexistent"),
            &ProcessOptions {
                args: vec!["sleep".into()],
                env: vec!["A=1".into(), "B=1".into()],
                cwd: Some("/srv".into()),
                user: Some("5:6".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let base = base.process().as_ref().unwrap();
        let opts = ProcessOptions {
            args: vec!["sh".into()],
            env: vec!["B=2".into()],
            terminal: true,
            ..Default::default()
        };
        let p = exec_process(base, &opts, Path::new("/nonexistent")).unwrap();
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=2".to_string()));
        assert!(!env.contains(&"B=1".to_string()));
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (5, 6));
        assert_eq!(p.terminal(), Some(true));
        assert!(exec_process(base, &ProcessOptions::default(), Path::new("/")).is_err());
    }
}
