//! Volumes and mounts: `-v`, `--tmpfs`, `--mount`, `--shm-size` as OCI mounts, every mount of a
//! spec checked before anything starts ([`check`]), and each host directory or file bound into
//! the sandbox's shared directory before virtiofsd serves it ([`stage`]).
//!
//! What the guest receives: the spec's `mounts`, in order, with every bind's `source` rewritten
//! to a path relative to the container's directory in the share (`mounts/<n>`): the agent never
//! sees a host path, and a bind can only ever name what the host staged. Read-only volumes are
//! read-only on the host (the staging bind), so virtiofsd itself cannot write through them.
//! Decisions in `docs/adr/017-volumes.md`.

mod stage;

use std::path::{Component, Path, PathBuf};

pub use oci_spec::runtime::Mount;
use oci_spec::runtime::MountBuilder;

use crate::mount_ns::{MountNs, MountNsError};

pub use stage::{stage, StageError};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid {flag} {value:?}: {reason}")]
    Syntax {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("mount on {destination}: {reason}")]
    Refused { destination: String, reason: String },
    #[error("mount on {destination}: host path {source_path} cannot be used")]
    Source {
        destination: String,
        source_path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Mounts the agent makes itself for every container (runc's `spec` lists them): honoured as
/// they always are when a bundle lists them with their usual type. `/dev/shm` may carry a size.
pub use shoji_protocols::STANDARD_MOUNTS;

/// Options a bind or tmpfs mount may carry; the agent knows the same set. `ro` on a bind makes
/// its own mount read-only, `rro` the mounts below it too (OCI's recursive read-only, which
/// `-v ...:ro` and `--mount ...,readonly` ask for, as Docker's do since Docker 25).
pub const FLAG_OPTIONS: [&str; 19] = [
    "ro",
    "rro",
    "rw",
    "bind",
    "rbind",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "noatime",
    "strictatime",
];
/// Propagations that would let the guest's mounts reach the host: refused.
const SHARED: [&str; 4] = ["shared", "rshared", "unbindable", "runbindable"];
/// tmpfs data options.
const TMPFS_DATA: [&str; 5] = ["size", "mode", "uid", "gid", "nr_inodes"];

fn syntax(flag: &'static str, value: &str, reason: impl Into<String>) -> VolumeError {
    VolumeError::Syntax {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn build(
    destination: &str,
    typ: &str,
    source: &str,
    options: Vec<String>,
) -> Result<Mount, VolumeError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .map_err(|e| VolumeError::Refused {
            destination: destination.into(),
            reason: e.to_string(),
        })
}

/// `-v HOST_PATH:CONTAINER_PATH[:OPTIONS]`, OPTIONS comma-separated among `ro`, `rw` and a
/// propagation (`rprivate`, the default, `private`, `rslave`, `slave`).
pub fn parse_volume(s: &str) -> Result<Mount, VolumeError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, dest, opts) = match parts.as_slice() {
        [h, d] => (*h, *d, ""),
        [h, d, o] => (*h, *d, *o),
        _ => return Err(syntax("-v", s, "expected HOST_PATH:CONTAINER_PATH[:ro|rw]")),
    };
    if !host.starts_with('/') {
        return Err(syntax(
            "-v",
            s,
            format!("host path {host:?} is not absolute (named volumes are not supported; give an absolute path)"),
        ));
    }
    let mut options = vec!["rbind".to_string()];
    let mut propagation = "rprivate";
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => options.push("rro".into()),
            "rw" => options.push(o.into()),
            // `shared`/`rshared` parse, to be refused by [`check`] with the reason.
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => propagation = o,
            _ => {
                return Err(syntax(
                    "-v",
                    s,
                    format!("unknown option {o:?} (ro, rw, rprivate, private, rslave, slave)"),
                ))
            }
        }
    }
    options.push(propagation.into());
    build(dest, "bind", host, options)
}

/// `--tmpfs PATH[:OPTIONS]`: Docker's defaults `noexec,nosuid,nodev` with OPTIONS
/// (comma-separated mount options such as `size=64m`, `mode=1777`, `exec`) after them.
pub fn parse_tmpfs(s: &str) -> Result<Mount, VolumeError> {
    let (dest, opts) = s.split_once(':').unwrap_or((s, ""));
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev"].map(String::from).into();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        options.push(tmpfs_option("--tmpfs", s, o)?);
    }
    build(dest, "tmpfs", "tmpfs", options)
}

/// A tmpfs option as the guest takes it: sizes (`64m`, `1g`) in bytes, one meaning everywhere.
fn tmpfs_option(flag: &'static str, whole: &str, o: &str) -> Result<String, VolumeError> {
    match o.split_once('=') {
        Some(("size", v)) => {
            let bytes = shoji_units::parse_size(v)
                .map_err(|e| syntax(flag, whole, format!("size {v:?}: {e}")))?;
            Ok(format!("size={bytes}"))
        }
        Some(("mode", v)) if u32::from_str_radix(v, 8).is_ok_and(|m| m <= 0o7777) => {
            Ok(o.into())
        }
        Some(("uid" | "gid" | "nr_inodes", v)) if v.parse::<u64>().is_ok() => Ok(o.into()),
        None if FLAG_OPTIONS.contains(&o) => Ok(o.into()),
        _ => Err(syntax(
            flag,
            whole,
            format!("unknown or malformed tmpfs option {o:?} (size=, mode=OCTAL, uid=, gid=, nr_inodes=, ro, exec, ...)"),
        )),
    }
}

/// The fields of a `--mount` value, read as Docker reads it: one CSV record, so that a field
/// holding a comma or a quote is quoted whole (`"source=/srv/a,b"`, a quote inside doubled).
fn mount_fields(s: &str) -> Result<Vec<String>, VolumeError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(s.as_bytes());
    let mut records = reader.records();
    let record = match records.next() {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return Err(syntax(
                "--mount",
                s,
                format!("not one line of comma-separated fields: {e}"),
            ))
        }
        None => return Err(syntax("--mount", s, "empty (give type=, source=, target=)")),
    };
    if records.next().is_some() {
        return Err(syntax(
            "--mount",
            s,
            "more than one line (one mount per --mount)",
        ));
    }
    Ok(record.iter().map(String::from).collect())
}

/// A boolean field's value as Go's `strconv.ParseBool` (which Docker uses) takes it; a key
/// alone is `true`.
fn mount_bool(whole: &str, key: &str, v: Option<&str>) -> Result<bool, VolumeError> {
    match v {
        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(syntax(
            "--mount",
            whole,
            format!("{key}={v:?} is not a boolean (true or false)"),
        )),
    }
}

/// `--mount type=bind|tmpfs,source=...,target=...,readonly,...` as Docker spells it: CSV
/// fields ([`mount_fields`]), keys case-insensitive, `src`, `dst`, `destination`, `ro`,
/// `bind-propagation`, `tmpfs-size`, `tmpfs-mode`; `consistency` (macOS only) is accepted and
/// ignored, as Docker on Linux does.
pub fn parse_mount(s: &str) -> Result<Mount, VolumeError> {
    let (mut typ, mut source, mut target) = (None, None, None);
    let (mut readonly, mut propagation, mut size, mut mode) = (false, None, None, None);
    let fields = mount_fields(s)?;
    for field in &fields {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let value = || {
            v.ok_or_else(|| {
                syntax(
                    "--mount",
                    s,
                    format!("field {field:?} must be a key=value pair"),
                )
            })
        };
        match k.as_str() {
            "type" => typ = Some(value()?),
            "source" | "src" => source = Some(value()?),
            "target" | "dst" | "destination" => target = Some(value()?),
            "readonly" | "ro" => readonly = mount_bool(s, &k, v)?,
            "bind-propagation" => {
                let p = value()?;
                // `shared`/`rshared` parse, to be refused by [`check`] with the reason.
                if ![
                    "private", "rprivate", "slave", "rslave", "shared", "rshared",
                ]
                .contains(&p)
                {
                    return Err(syntax(
                        "--mount",
                        s,
                        format!(
                            "bind-propagation {p:?} is not one of rprivate, private, rslave, slave"
                        ),
                    ));
                }
                propagation = Some(p);
            }
            "tmpfs-size" => size = Some(value()?),
            "tmpfs-mode" => mode = Some(value()?),
            "consistency" => {
                value()?;
            }
            _ => {
                let hint = if field.contains('"') {
                    " (a field with a comma is quoted whole: \"source=/a,b\")"
                } else {
                    ""
                };
                return Err(syntax(
                    "--mount",
                    s,
                    format!("unknown field {field:?}{hint}; known: type, source, target, readonly, bind-propagation, tmpfs-size, tmpfs-mode"),
                ));
            }
        }
    }
    let target = target.ok_or_else(|| syntax("--mount", s, "no target="))?;
    let ro = if readonly { "rro" } else { "rw" };
    match typ {
        Some("bind") => {
            if size.is_some() || mode.is_some() {
                return Err(syntax(
                    "--mount",
                    s,
                    "tmpfs-size and tmpfs-mode need type=tmpfs",
                ));
            }
            let source = source.ok_or_else(|| syntax("--mount", s, "type=bind needs source="))?;
            if !source.starts_with('/') {
                return Err(syntax(
                    "--mount",
                    s,
                    format!("source {source:?} is not an absolute host path"),
                ));
            }
            let propagation = propagation.unwrap_or("rprivate");
            build(
                target,
                "bind",
                source,
                vec!["rbind".into(), ro.into(), propagation.into()],
            )
        }
        Some("tmpfs") => {
            if source.is_some() || propagation.is_some() {
                return Err(syntax(
                    "--mount",
                    s,
                    "type=tmpfs takes no source or bind-propagation",
                ));
            }
            let mut options: Vec<String> = ["nosuid", "nodev", ro].map(String::from).into();
            if let Some(v) = size {
                options.push(tmpfs_option("--mount", s, &format!("size={v}"))?);
            }
            if let Some(v) = mode {
                options.push(tmpfs_option("--mount", s, &format!("mode={v}"))?);
            }
            build(target, "tmpfs", "tmpfs", options)
        }
        Some(other) => Err(syntax(
            "--mount",
            s,
            format!("type {other:?} is not supported (bind or tmpfs)"),
        )),
        None => Err(syntax("--mount", s, "no type= (bind or tmpfs)")),
    }
}

/// The `/dev/shm` mount of `--shm-size`: a tmpfs of that many bytes.
pub fn shm_mount(bytes: u64) -> Result<Mount, VolumeError> {
    build(
        "/dev/shm",
        "tmpfs",
        "shm",
        ["nosuid", "noexec", "nodev", "mode=1777"]
            .map(String::from)
            .into_iter()
            .chain([format!("size={bytes}")])
            .collect(),
    )
}

/// Whether `m` is a bind mount (type `bind`, or `none`/absent with a `bind`/`rbind` option).
pub fn is_bind(m: &Mount) -> bool {
    let opts = m.options().as_deref().unwrap_or_default();
    match m.typ().as_deref() {
        Some("bind") => true,
        None | Some("none") | Some("") => opts.iter().any(|o| o == "bind" || o == "rbind"),
        _ => false,
    }
}

/// Whether `m` is one of the [`STANDARD_MOUNTS`] (the agent makes those itself).
pub fn is_standard(m: &Mount) -> bool {
    let typ = m.typ().as_deref().unwrap_or("");
    STANDARD_MOUNTS
        .iter()
        .any(|(d, t)| m.destination() == Path::new(d) && typ == *t)
}

/// A path of the container: absolute, no `.` or `..`, not `/`.
fn container_path_problem(p: &Path) -> Option<&'static str> {
    if !p.is_absolute() {
        return Some("the container path is not absolute");
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || p.as_os_str().to_string_lossy().contains("/./")
    {
        return Some("the container path has . or .. components");
    }
    if p == Path::new("/") {
        return Some("a mount over / replaces the root filesystem; use --rootfs or a bundle");
    }
    None
}

/// Refuses a mount Shoji cannot honour or must not make, before anything starts. `forbidden`:
/// host directories no volume may be inside of (the sandbox root: sandbox and state
/// directories). A bind's source must exist; it is resolved again, once and for all, when it is
/// staged ([`stage`]).
pub fn check(mounts: &[Mount], forbidden: &[PathBuf]) -> Result<(), VolumeError> {
    for m in mounts {
        let dest = m.destination();
        let refused = |reason: String| VolumeError::Refused {
            destination: dest.display().to_string(),
            reason,
        };
        if let Some(problem) = container_path_problem(dest) {
            return Err(refused(problem.into()));
        }
        if is_standard(m) {
            if m.destination() == Path::new("/dev/shm") {
                check_options(m, &refused)?;
            }
            continue;
        }
        if dest.starts_with("/proc") || dest.starts_with("/sys") {
            return Err(refused(
                "a mount over /proc or /sys would hide or replace the kernel's view the container is given; choose another path".into(),
            ));
        }
        let typ = m.typ().as_deref().unwrap_or("none");
        if is_bind(m) {
            check_options(m, &refused)?;
            if !crate::sandbox::mounts::can_mount() {
                return Err(refused(
                    "bind volumes need root: the host path is bind-mounted into the sandbox's shared directory".into(),
                ));
            }
            let Some(src) = m.source() else {
                return Err(refused("a bind mount needs a source".into()));
            };
            if !src.is_absolute() {
                return Err(refused(format!(
                    "host path {} is relative; give an absolute path",
                    src.display()
                )));
            }
            let real = std::fs::canonicalize(src).map_err(|source| VolumeError::Source {
                destination: dest.display().to_string(),
                source_path: src.clone(),
                source,
            })?;
            inside_forbidden(&real, forbidden).map_err(refused)?;
        } else if typ == "tmpfs" {
            check_options(m, &refused)?;
        } else {
            return Err(refused(format!(
                "mount type {typ:?} is not supported: only bind, tmpfs and the standard mounts ({})",
                STANDARD_MOUNTS.map(|(d, _)| d).join(", ")
            )));
        }
    }
    Ok(())
}

/// Refuses `real` (a resolved host path) inside one of `forbidden`.
fn inside_forbidden(real: &Path, forbidden: &[PathBuf]) -> Result<(), String> {
    for f in forbidden {
        let f = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        if real.starts_with(&f) {
            return Err(format!(
                "host path {} is inside Shoji's sandbox and state directories ({}); a volume must not expose them",
                real.display(),
                f.display()
            ));
        }
    }
    Ok(())
}

fn check_options(m: &Mount, refused: &dyn Fn(String) -> VolumeError) -> Result<(), VolumeError> {
    let tmpfs = m.typ().as_deref() == Some("tmpfs");
    for o in m.options().iter().flatten() {
        if SHARED.contains(&o.as_str()) {
            return Err(refused(format!(
                "propagation {o:?} is refused: mounts made in the guest never reach the host (use rprivate or rslave)"
            )));
        }
        let ok = FLAG_OPTIONS.contains(&o.as_str())
            || (tmpfs
                && o.split_once('=')
                    .is_some_and(|(k, _)| TMPFS_DATA.contains(&k)));
        if !ok {
            return Err(refused(format!("mount option {o:?} is not supported")));
        }
    }
    Ok(())
}

/// [`check`] then [`stage`]: what every caller does with a container's mounts before its
/// sandbox's virtiofsd serves them (`container_dir`: the container's directory in the share).
/// `host`: the mount namespace host paths are looked up in, when the caller serves from one of
/// its own (the shim); `None`: the calling thread's.
pub fn prepare(
    mounts: &mut [Mount],
    container_dir: &Path,
    forbidden: &[PathBuf],
    host: Option<&MountNs>,
) -> Result<(), PrepareError> {
    let checked: &[Mount] = mounts;
    match host {
        Some(ns) => ns.run(|| check(checked, forbidden))??,
        None => check(mounts, forbidden)?,
    }
    stage(mounts, container_dir, forbidden, host)?;
    Ok(())
}

/// [`prepare`] for the mounts of `spec`, rewritten in place.
pub fn prepare_spec(
    spec: &mut oci_spec::runtime::Spec,
    container_dir: &Path,
    forbidden: &[PathBuf],
    host: Option<&MountNs>,
) -> Result<(), PrepareError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    prepare(&mut mounts, container_dir, forbidden, host)?;
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Check(#[from] VolumeError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot check the volumes' host paths in the host's mount namespace")]
    HostNamespace(#[from] MountNsError),
}

/// Whether a mount's options ask for it read-only (the last of `ro`/`rro`/`rw` wins).
pub fn is_readonly(m: &Mount) -> bool {
    readonly_option(m).is_some_and(|o| o != "rw")
}

/// Whether a mount's options ask for it and every mount below it read-only (`rro` last).
pub fn is_recursively_readonly(m: &Mount) -> bool {
    readonly_option(m) == Some("rro")
}

fn readonly_option(m: &Mount) -> Option<&str> {
    m.options()
        .iter()
        .flatten()
        .rev()
        .map(String::as_str)
        .find(|o| matches!(*o, "ro" | "rro" | "rw"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn volume_flags_parse_as_docker_spells_them() {
        let v = parse_volume("/data:/srv:ro").unwrap();
        assert_eq!(v.destination(), Path::new("/srv"));
        assert_eq!(v.source().as_deref(), Some(Path::new("/data")));
        assert_eq!(opts(&v), ["rbind", "rro", "rprivate"]);
        assert!(is_bind(&v) && is_readonly(&v) && is_recursively_readonly(&v));
        let v = parse_volume("/data:/srv:rw,rslave").unwrap();
        assert_eq!(opts(&v), ["rbind", "rw", "rslave"]);
        assert!(!is_readonly(&v) && !is_recursively_readonly(&v));
        for (bad, says) in [
            ("data:/srv", "not absolute"),
            ("/data", "expected HOST_PATH"),
            ("/a:/b:c:d", "expected HOST_PATH"),
            ("/data:/srv:z", "unknown option \"z\""),
        ] {
            let e = parse_volume(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("invalid -v"), "{bad}: {e}");
        }

        let t = parse_tmpfs("/run:size=64m,mode=1777,exec").unwrap();
        assert_eq!(t.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            opts(&t),
            [
                "noexec",
                "nosuid",
                "nodev",
                "size=67108864",
                "mode=1777",
                "exec"
            ]
        );
        assert!(parse_tmpfs("/run:size=lots").is_err());
        assert!(parse_tmpfs("/run:mode=999").is_err());
        assert!(parse_tmpfs("/run:uid=me").is_err());

        let b = parse_mount("type=bind,source=/data,target=/srv,readonly").unwrap();
        assert_eq!(opts(&b), ["rbind", "rro", "rprivate"]);
        let b = parse_mount("type=bind,src=/data,dst=/srv,bind-propagation=rslave").unwrap();
        assert_eq!(opts(&b), ["rbind", "rw", "rslave"]);
        // CSV as Docker reads it: a field with a comma or a quote is quoted whole; keys are
        // case-insensitive; booleans as Go spells them.
        let b = parse_mount(r#"type=bind,"source=/srv/a,b",target=/data,ro=1"#).unwrap();
        assert_eq!(b.source().as_deref(), Some(Path::new("/srv/a,b")));
        assert_eq!(opts(&b), ["rbind", "rro", "rprivate"]);
        let b =
            parse_mount(r#"TYPE=bind,"Source=/srv/say ""hi""",Target=/x,readonly=false"#).unwrap();
        assert_eq!(b.source().as_deref(), Some(Path::new(r#"/srv/say "hi""#)));
        assert_eq!(b.destination(), Path::new("/x"));
        assert_eq!(opts(&b), ["rbind", "rw", "rprivate"]);
        let b =
            parse_mount("type=bind,source=/a,target=/b,readonly=True,consistency=cached").unwrap();
        assert!(is_readonly(&b));
        let t = parse_mount("type=tmpfs,dst=/scratch,tmpfs-size=1m,tmpfs-mode=700").unwrap();
        assert_eq!(
            opts(&t),
            ["nosuid", "nodev", "rw", "size=1048576", "mode=700"]
        );
        for (bad, says) in [
            ("type=volume,source=x,target=/y", "not supported"),
            ("source=/x,target=/y", "no type="),
            ("type=bind,target=/y", "needs source="),
            ("type=bind,source=x,target=/y", "not an absolute host path"),
            ("type=bind,source=/x", "no target="),
            ("type=bind,source=/x,target=/y,colour=red", "unknown field"),
            (
                "type=bind,source=/x,target=/y,readonly=maybe",
                "not a boolean",
            ),
            ("type=tmpfs,source=/x,target=/y", "takes no source"),
            (
                "type=bind,source=/x,target=/y,bind-propagation=sideways",
                "not one of rprivate",
            ),
            ("type,source=/x,target=/y", "must be a key=value pair"),
            (r#"type=bind,source="/a,b",target=/y"#, "quoted whole"),
            ("type=bind,source=/x\ntarget=/y", "more than one line"),
            ("", "empty"),
        ] {
            let e = parse_mount(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            opts(&shm_mount(1 << 20).unwrap()).last().unwrap(),
            "size=1048576"
        );
    }

    #[test]
    fn bad_mounts_are_refused_before_anything_starts() {
        let host = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let inside = state.path().join("sandbox");
        std::fs::create_dir(&inside).unwrap();
        let forbidden = [state.path().to_path_buf()];
        let h = host.path().display();
        let ok = [
            parse_volume(&format!("{h}:/srv:ro")).unwrap(),
            parse_tmpfs("/tmp").unwrap(),
            shm_mount(1 << 20).unwrap(),
            build("/proc", "proc", "proc", vec![]).unwrap(),
        ];
        check(&ok, &forbidden).unwrap();
        let refuse = |m: Mount, says: &str| {
            let e = check(&[m], &forbidden).unwrap_err();
            let text = format!("{e} {:?}", std::error::Error::source(&e));
            assert!(text.contains(says), "{text}");
        };
        refuse(
            parse_volume(&format!("{h}/missing:/srv")).unwrap(),
            "No such file",
        );
        refuse(parse_volume(&format!("{h}:srv")).unwrap(), "not absolute");
        refuse(
            parse_volume(&format!("{h}:/proc/x")).unwrap(),
            "/proc or /sys",
        );
        refuse(parse_volume(&format!("{h}:/sys")).unwrap(), "/proc or /sys");
        refuse(parse_tmpfs("/proc").unwrap(), "/proc or /sys");
        refuse(
            parse_volume(&format!("{h}:/a/../b")).unwrap(),
            ".. components",
        );
        refuse(
            parse_volume(&format!("{h}:/")).unwrap(),
            "replaces the root",
        );
        refuse(
            parse_volume(&format!("{}:/srv", inside.display())).unwrap(),
            "inside Shoji's sandbox",
        );
        refuse(
            parse_volume(&format!("{h}:/srv:rshared")).unwrap(),
            "mounts made in the guest never reach the host",
        );
        refuse(
            build("/srv", "bind", "relative", vec!["bind".into()]).unwrap(),
            "relative",
        );
        refuse(
            build("/srv", "nfs", "server:/x", vec![]).unwrap(),
            "not supported",
        );
        refuse(
            build("/srv", "tmpfs", "tmpfs", vec!["huge=always".into()]).unwrap(),
            "option \"huge=always\"",
        );
    }
}
