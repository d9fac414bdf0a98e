//! The OCI runtime spec a container runs with: from an image's configuration plus the
//! `docker run`-style options, from a bundle's `config.json`, or a default for a bare rootfs.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, ProcessBuilder, Spec,
    UserBuilder,
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
    #[error("{path}: mount {destination} (type {kind}, from {from}) is not supported yet: the container gets only the standard {}; remove it from \"mounts\"", STANDARD_MOUNTS.join(", "))]
    UnsupportedMount {
        path: PathBuf,
        destination: String,
        kind: String,
        from: String,
    },
}

/// The mounts every container gets from the agent; a bundle may list them (runc's `spec`
/// does) and they are honoured as they always are. Any other mount would be silently missing
/// in the guest, so it is refused until bundle mounts are honoured (volumes, issue 13).
pub const STANDARD_MOUNTS: [&str; 7] = [
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

/// Refuses the first mount of `spec` that is not one of [`STANDARD_MOUNTS`].
fn check_mounts(spec: &Spec, path: &Path) -> Result<(), SpecError> {
    let standard = |d: &Path| STANDARD_MOUNTS.iter().any(|m| Path::new(m) == d);
    let Some(m) = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| !standard(m.destination()))
    else {
        return Ok(());
    };
    Err(SpecError::UnsupportedMount {
        path: path.to_path_buf(),
        destination: m.destination().display().to_string(),
        kind: m.typ().clone().unwrap_or_else(|| "none".into()),
        from: m
            .source()
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| "nothing".into()),
    })
}

/// What `shoji run` lets the user override.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessOptions {
    /// Command and arguments; empty = the image's Entrypoint + Cmd.
    pub args: Vec<String>,
    /// `K=V` pairs added after (and overriding) the image's Env.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `UID[:GID]` or a user name from the rootfs's /etc/passwd.
    pub user: Option<String>,
    pub terminal: bool,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
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
    let mut spec: Spec = serde_json::from_str(&text).map_err(|e| SpecError::BadConfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    check_mounts(&spec, &path)?;
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
    let process = spec.process().clone().ok_or_else(|| SpecError::BadConfig {
        path: path.clone(),
        message: "no process".into(),
    })?;
    let args = if opts.args.is_empty() {
        process.args().clone().unwrap_or_default()
    } else {
        opts.args.clone()
    };
    let cwd = opts
        .cwd
        .clone()
        .unwrap_or_else(|| process.cwd().display().to_string());
    let user = opts
        .user
        .clone()
        .or_else(|| Some(format!("{}:{}", process.user().uid(), process.user().gid())));
    let env = process.env().clone().unwrap_or_default();
    let built = build(args, env, cwd, user, &rootfs, opts)?;
    spec.set_process(built.process().clone());
    if opts.memory_bytes.is_some() || opts.cpus.is_some() {
        spec.set_linux(built.linux().clone());
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
    rootfs: &Path,
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
        let (uid, gid) = resolve_user(opts.user.as_deref(), rootfs)?;
        p.set_user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(build_err)?,
        );
    }
    p.set_terminal(Some(opts.terminal));
    Ok(p)
}

fn build(
    args: Vec<String>,
    mut env: Vec<String>,
    cwd: String,
    user: Option<String>,
    rootfs: &Path,
    opts: &ProcessOptions,
) -> Result<Spec, SpecError> {
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    merge_env(&mut env, opts)?;
    let (uid, gid) = resolve_user(user.as_deref(), rootfs)?;
    let process = ProcessBuilder::default()
        .args(args)
        .env(env)
        .cwd(cwd)
        .terminal(opts.terminal)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(build_err)?,
        )
        .build()
        .map_err(build_err)?;
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_hostname(Some("shoji".into()));
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
    let mut linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().unwrap_or_default());
    linux.set_resources(Some(resources.build().map_err(build_err)?));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// `UID[:GID]`, or names looked up in the rootfs's /etc/passwd and /etc/group.
pub fn resolve_user(user: Option<&str>, rootfs: &Path) -> Result<(u32, u32), SpecError> {
    let Some(user) = user else { return Ok((0, 0)) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let invalid = |v: &str| SpecError::Invalid {
        what: "user",
        value: v.to_string(),
        expected: "UID[:GID] or a user name in the image's /etc/passwd",
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(n) => (
            n,
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(n),
        ),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == u)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| invalid(user))?,
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => std::fs::read_to_string(rootfs.join("etc/group"))
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| invalid(user))?,
        },
    };
    Ok((uid, gid))
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
    fn users() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), "user:x:1000:1001::/:/bin/sh\n").unwrap();
        std::fs::write(t.path().join("etc/group"), "staff:x:50:\n").unwrap();
        assert_eq!(resolve_user(Some("1000"), t.path()).unwrap(), (1000, 1001));
        assert_eq!(
            resolve_user(Some("user:staff"), t.path()).unwrap(),
            (1000, 50)
        );
        assert_eq!(resolve_user(Some("5:6"), t.path()).unwrap(), (5, 6));
        assert!(resolve_user(Some("nobody"), t.path()).is_err());
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
