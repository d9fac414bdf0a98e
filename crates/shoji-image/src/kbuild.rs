//! Shoji's own guest kernel: built from Debian's `linux-source-6.1` tarball with the patches in
//! `crates/shoji-image/kernel/patches/`, `make tinyconfig` plus the fragments in
//! `crates/shoji-image/kernel/*.config`, everything built in and no modules (ADR 014). The result
//! is cached outside the clone, keyed by the source package's version, the fragments, the
//! patches, the build settings and the toolchain, so a machine builds it once.
//!
//! Reproducible: the build's timestamp, user, host and version number are fixed, no debug info is
//! made, `LOCALVERSION` is set (so no `+` from a git tree around the source), and the kernel's
//! own `-fmacro-prefix-map` keeps the source path out of `__FILE__`: two builds in different
//! directories give the same `vmlinux` (`scripts/check-kernel-reproducible.sh`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The Debian package whose tarball is built.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";

/// The configuration fragments, applied in this order after `make tinyconfig`.
pub const FRAGMENTS: &[(&str, &str)] = &[
    ("base.config", include_str!("../kernel/base.config")),
    ("console.config", include_str!("../kernel/console.config")),
    ("virtio.config", include_str!("../kernel/virtio.config")),
    ("net.config", include_str!("../kernel/net.config")),
    ("fs.config", include_str!("../kernel/fs.config")),
    (
        "container.config",
        include_str!("../kernel/container.config"),
    ),
];

/// Patches to Debian's source, applied in this order with `patch -p1` after unpacking (as Kata
/// carries patches for its guest kernel). Each says in its hunk why a Shoji guest needs it.
pub const PATCHES: &[(&str, &str)] = &[(
    "0001-x86-mm-free-init-pages-without-poisoning.patch",
    include_str!("../kernel/patches/0001-x86-mm-free-init-pages-without-poisoning.patch"),
)];

/// What makes two builds of the same source and fragments the same: part of the cache key, so a
/// change here rebuilds.
const BUILD_ENV: &[(&str, &str)] = &[
    ("KBUILD_BUILD_TIMESTAMP", "1970-01-01 00:00:00 UTC"),
    ("KBUILD_BUILD_USER", "shoji"),
    ("KBUILD_BUILD_HOST", "shoji"),
    ("KBUILD_BUILD_VERSION", "1"),
    // Set (empty): otherwise setlocalversion appends `+` when the tree sits in a git checkout.
    ("LOCALVERSION", ""),
];

/// About how many lines `make vmlinux` prints for this configuration (one per step); only for
/// the progress estimate.
const EXPECTED_STEPS: usize = 1500;

/// How often a long build reports.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KernelBuildError {
    #[error("Debian's {package} is not installed ({tarball} is missing); install it with `apt-get install {package}` (scripts/setup.sh does), or use `--kernel debian`")]
    NoSource {
        package: &'static str,
        tarball: PathBuf,
    },
    #[error("cannot run `{command}`; scripts/setup.sh installs the kernel build tools (make, gcc, bc, bison, flex, libelf-dev)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed ({status}); the end of {log}:\n{tail}")]
    Step {
        step: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the kernel configuration {config} lacks what the fragments ask for: {}; add the missing dependency to crates/shoji-image/kernel/*.config", missing.join(", "))]
    MissingOptions {
        config: PathBuf,
        missing: Vec<String>,
    },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KernelBuildError {
    let path = path.to_path_buf();
    move |source| KernelBuildError::Io { what, path, source }
}

/// A built kernel in the cache.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    pub vmlinux: PathBuf,
    /// `uname -r` in the guest, e.g. `6.1.192-shoji`.
    pub release: String,
    /// The cache key: source version + fragments + build settings + toolchain.
    pub key: String,
    /// The source package's version, e.g. `6.1.192-1`.
    pub source_version: String,
    /// Whether this call built it (false: it was in the cache).
    pub built: bool,
}

/// `$XDG_CACHE_HOME/shoji/kernel`, else `~/.cache/shoji/kernel`.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("shoji/kernel");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/shoji/kernel")
}

/// One option a fragment asks for: `CONFIG_X=v`, or `# CONFIG_X is not set` (`value` None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub value: Option<String>,
}

/// The options in a fragment's text; other lines (comments, blanks) are skipped.
pub fn parse_fragment(text: &str) -> Vec<Wanted> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix("# ") {
                let name = rest.strip_suffix(" is not set")?;
                return name.starts_with("CONFIG_").then(|| Wanted {
                    name: name.to_string(),
                    value: None,
                });
            }
            let (name, value) = l.split_once('=')?;
            name.starts_with("CONFIG_").then(|| Wanted {
                name: name.to_string(),
                value: Some(value.to_string()),
            })
        })
        .collect()
}

/// The options of `wanted` that the final `.config` text does not have as asked, each as the
/// fragment line it came from.
pub fn missing_options(config: &str, wanted: &[Wanted]) -> Vec<String> {
    let set: std::collections::HashMap<&str, &str> = config
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(n, _)| n.starts_with("CONFIG_"))
        .collect();
    wanted
        .iter()
        .filter(|w| match &w.value {
            Some(v) => set.get(w.name.as_str()) != Some(&v.as_str()),
            None => set.get(w.name.as_str()).is_some_and(|v| *v != "n"),
        })
        .map(|w| match &w.value {
            Some(v) => format!("{}={v}", w.name),
            None => format!("# {} is not set", w.name),
        })
        .collect()
}

/// The cache key: a hash of the source version, the fragments, the patches, the build settings
/// and the toolchain ([`toolchain`]), everything that decides the bytes of `vmlinux`.
pub fn cache_key(source_version: &str, toolchain: &str) -> String {
    key_of(source_version, toolchain, FRAGMENTS, PATCHES)
}

fn key_of(
    source_version: &str,
    toolchain: &str,
    fragments: &[(&str, &str)],
    patches: &[(&str, &str)],
) -> String {
    let mut h = Sha256::new();
    h.update(b"shoji-kernel-2\0");
    h.update(SOURCE_PACKAGE.as_bytes());
    h.update(b"\0");
    h.update(source_version.as_bytes());
    h.update(b"\0");
    h.update(toolchain.as_bytes());
    for (kind, files) in [("fragment", fragments), ("patch", patches)] {
        for (name, text) in files {
            h.update(format!("\0{kind}\0{name}\0{text}").as_bytes());
        }
    }
    for (k, v) in BUILD_ENV {
        h.update(format!("\0{k}={v}").as_bytes());
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// The compiler, linker and make that build the kernel, as their `--version` first lines
/// (e.g. `gcc (Debian 12.2.0-14) 12.2.0; GNU ld (GNU Binutils for Debian) 2.40; GNU Make 4.3`):
/// another compiler gives another `vmlinux`, so it is part of the cache key.
pub fn toolchain() -> Result<String, KernelBuildError> {
    let mut parts = Vec::new();
    for tool in ["gcc", "ld", "make"] {
        let out = Command::new(tool)
            .arg("--version")
            .output()
            .map_err(|source| KernelBuildError::Spawn {
                command: format!("{tool} --version"),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        parts.push(text.lines().next().unwrap_or_default().trim().to_string());
    }
    Ok(parts.join("; "))
}

fn tarball() -> PathBuf {
    PathBuf::from(format!("/usr/src/{SOURCE_PACKAGE}.tar.xz"))
}

/// The installed source package's version (`dpkg-query`).
pub fn source_version() -> Result<String, KernelBuildError> {
    let tarball = tarball();
    let no_source = || KernelBuildError::NoSource {
        package: SOURCE_PACKAGE,
        tarball: tarball.clone(),
    };
    if !tarball.is_file() {
        return Err(no_source());
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", SOURCE_PACKAGE])
        .output()
        .map_err(|source| KernelBuildError::Spawn {
            command: format!("dpkg-query -W {SOURCE_PACKAGE}"),
            source,
        })?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || v.is_empty() {
        return Err(no_source());
    }
    Ok(v)
}

/// The kernel for `source_version` and `toolchain` in `cache`, if it was built.
pub fn cached(cache: &Path, source_version: &str, toolchain: &str) -> Option<BuiltKernel> {
    let key = cache_key(source_version, toolchain);
    let dir = cache.join(&key);
    let vmlinux = dir.join("vmlinux");
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    vmlinux.is_file().then(|| BuiltKernel {
        vmlinux,
        release: release.trim().to_string(),
        key,
        source_version: source_version.to_string(),
        built: false,
    })
}

/// Builds the kernel into `cache/<key>/` unless it is there (or `force`). `progress` gets one
/// line per step and, while compiling, one every half minute.
pub fn build_kernel(
    cache: &Path,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<BuiltKernel, KernelBuildError> {
    let version = source_version()?;
    let tools = toolchain()?;
    if !force {
        if let Some(k) = cached(cache, &version, &tools) {
            progress(&format!(
                "Shoji's kernel {} ({SOURCE_PACKAGE} {version}): cached in {}",
                k.release,
                k.vmlinux.display()
            ));
            return Ok(k);
        }
    }
    let key = cache_key(&version, &tools);
    let start = Instant::now();
    // A directory of this process's own: an interrupted build leaves only a `.build-*` or
    // `.tmp-*` directory, never a `<key>` one that a later run would trust.
    let pid = std::process::id();
    let work = cache.join(format!("{key}.build-{pid}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("create", &work))?;
    // The log stays beside the cache when the build fails (the error names it).
    let log = cache.join(format!("{key}.build-{pid}.log"));
    let _ = std::fs::remove_file(&log);
    let result = build_in(&work, &log, cache, &key, &version, start, progress);
    let _ = std::fs::remove_dir_all(&work);
    if result.is_ok() {
        let _ = std::fs::remove_file(&log);
    }
    result
}

fn build_in(
    work: &Path,
    log: &Path,
    cache: &Path,
    key: &str,
    version: &str,
    start: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<BuiltKernel, KernelBuildError> {
    progress(&format!(
        "building Shoji's kernel from {SOURCE_PACKAGE} {version} (once per machine: several minutes; log {})",
        log.display()
    ));
    progress(&format!("unpacking {}", tarball().display()));
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(tarball()).arg("-C").arg(work);
    step("unpacking the kernel source", &mut tar, log)?;
    let src = work.join(SOURCE_PACKAGE);
    for (name, text) in PATCHES {
        progress(&format!("patching: {name}"));
        let file = work.join(name);
        std::fs::write(&file, text).map_err(io("write", &file))?;
        let mut patch = Command::new("patch");
        patch
            .args(["-p1", "--batch", "--forward", "-i"])
            .arg(&file)
            .current_dir(&src);
        step(
            "patch -p1 (crates/shoji-image/kernel/patches)",
            &mut patch,
            log,
        )?;
    }

    progress("configuring: make tinyconfig + crates/shoji-image/kernel/*.config");
    step("make tinyconfig", make(&src).arg("tinyconfig"), log)?;
    let config = src.join(".config");
    let mut text = std::fs::read_to_string(&config).map_err(io("read", &config))?;
    let mut wanted = Vec::new();
    for (name, fragment) in FRAGMENTS {
        text.push_str(&format!("\n# {name}\n{fragment}"));
        wanted.extend(parse_fragment(fragment));
    }
    std::fs::write(&config, text).map_err(io("write", &config))?;
    step("make olddefconfig", make(&src).arg("olddefconfig"), log)?;
    let final_config = std::fs::read_to_string(&config).map_err(io("read", &config))?;
    let missing = missing_options(&final_config, &wanted);
    if !missing.is_empty() {
        let kept = cache.join(format!("{key}.rejected.config"));
        let _ = std::fs::copy(&config, &kept);
        return Err(KernelBuildError::MissingOptions {
            config: kept,
            missing,
        });
    }

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!("compiling vmlinux (make -j{jobs}, niced)"));
    compile(&src, jobs, log, start, progress)?;

    let release = String::from_utf8_lossy(
        &make(&src)
            .args(["-s", "kernelrelease"])
            .output()
            .map_err(|source| KernelBuildError::Spawn {
                command: "make kernelrelease".into(),
                source,
            })?
            .stdout,
    )
    .trim()
    .to_string();

    // Assemble the result beside the cache entry and rename it into place in one step.
    let tmp = cache.join(format!("{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    for (from, to) in [
        (src.join("vmlinux"), "vmlinux"),
        (config.clone(), "config"),
        (log.to_path_buf(), "build.log"),
    ] {
        let dst = tmp.join(to);
        std::fs::copy(&from, &dst).map_err(io("copy", &from))?;
    }
    let rel = tmp.join("release");
    std::fs::write(&rel, format!("{release}\n")).map_err(io("write", &rel))?;
    let dir = cache.join(key);
    if dir.exists() {
        // Forced, or another build finished first: the new one replaces it.
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::rename(&tmp, &dir).map_err(io("rename", &tmp))?;
    let vmlinux = dir.join("vmlinux");
    let size = std::fs::metadata(&vmlinux).map_or(0, |m| m.len());
    progress(&format!(
        "built Shoji's kernel {release} in {} ({} KiB): {}",
        minutes(start.elapsed()),
        size / 1024,
        vmlinux.display()
    ));
    Ok(BuiltKernel {
        vmlinux,
        release,
        key: key.to_string(),
        source_version: version.to_string(),
        built: true,
    })
}

fn make(src: &Path) -> Command {
    let mut c = Command::new("make");
    c.current_dir(src).envs(BUILD_ENV.iter().copied());
    c
}

/// Runs `cmd` with its output appended to `log`; a failure quotes the log's end.
fn step(what: &'static str, cmd: &mut Command, log: &Path) -> Result<(), KernelBuildError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("open", log))?;
    let err = out.try_clone().map_err(io("open", log))?;
    let status =
        cmd.stdout(out)
            .stderr(err)
            .status()
            .map_err(|source| KernelBuildError::Spawn {
                command: format!("{cmd:?}"),
                source,
            })?;
    if !status.success() {
        return Err(step_failed(what, status.to_string(), log));
    }
    Ok(())
}

fn step_failed(step: &'static str, status: String, log: &Path) -> KernelBuildError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    KernelBuildError::Step {
        step,
        status,
        log: log.to_path_buf(),
        tail,
    }
}

/// `nice make -jN vmlinux`, its lines into `log`, a progress line every [`PROGRESS_EVERY`].
fn compile(
    src: &Path,
    jobs: usize,
    log: &Path,
    start: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<(), KernelBuildError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("open", log))?;
    let err = file.try_clone().map_err(io("open", log))?;
    let parallel = format!("-j{jobs}");
    let mut child = Command::new("nice")
        .args(["-n", "10", "make", parallel.as_str(), "vmlinux"])
        .current_dir(src)
        .envs(BUILD_ENV.iter().copied())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|source| KernelBuildError::Spawn {
            command: format!("nice make -j{jobs} vmlinux"),
            source,
        })?;
    let compiling = Instant::now();
    let mut last = Instant::now();
    let mut steps = 0usize;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if line.starts_with("  ") {
                steps += 1;
            }
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                progress(&format!(
                    "compiling: {steps} steps (~{}%), {} so far",
                    (steps * 100 / EXPECTED_STEPS).min(99),
                    minutes(compiling.elapsed())
                ));
            }
        }
    }
    let status = child.wait().map_err(io("wait for make in", src))?;
    if !status.success() {
        return Err(step_failed("make vmlinux", status.to_string(), log));
    }
    progress(&format!(
        "compiled in {} ({steps} steps; {} since the build began)",
        minutes(compiling.elapsed()),
        minutes(start.elapsed())
    ));
    Ok(())
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_parse_both_forms_and_skip_comments() {
        let w =
            parse_fragment("# a comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C=\"-x\"\n");
        assert_eq!(
            w,
            vec![
                Wanted {
                    name: "CONFIG_A".into(),
                    value: Some("y".into())
                },
                Wanted {
                    name: "CONFIG_B".into(),
                    value: None
                },
                Wanted {
                    name: "CONFIG_C".into(),
                    value: Some("\"-x\"".into())
                },
            ]
        );
    }

    #[test]
    fn missing_options_names_what_the_config_lacks_or_sets_against_the_fragment() {
        let wanted = parse_fragment(
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=64\n",
        );
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_E=32\n";
        assert_eq!(
            missing_options(config, &wanted),
            vec!["CONFIG_B=y", "# CONFIG_C is not set", "CONFIG_E=64"]
        );
        let ok = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_E=64\n";
        assert!(missing_options(ok, &wanted).is_empty());
    }

    /// What a Shoji guest needs is asked for by some fragment (ADR 014): dropping one of these
    /// from the fragments is a decision, not an accident.
    #[test]
    fn fragments_ask_for_what_a_shoji_guest_needs() {
        let all: Vec<Wanted> = FRAGMENTS
            .iter()
            .flat_map(|(_, t)| parse_fragment(t))
            .collect();
        let on = |n: &str| {
            all.iter()
                .any(|w| w.name == format!("CONFIG_{n}") && w.value.as_deref() == Some("y"))
        };
        for n in [
            "64BIT",
            "SMP",
            "PVH",
            "KVM_GUEST",
            "SERIAL_8250_CONSOLE",
            "BLK_DEV_INITRD",
            "VIRTIO_MMIO",
            "VIRTIO_MMIO_CMDLINE_DEVICES",
            "VSOCKETS",
            "VIRTIO_VSOCKETS",
            "FUSE_FS",
            "VIRTIO_FS",
            "OVERLAY_FS",
            "VIRTIO_NET",
            "INET",
            "IPV6",
            "UNIX",
            "MEMCG",
            "CGROUP_SCHED",
            "CGROUP_PIDS",
            "CPUSETS",
            "BLK_CGROUP",
            "BLK_DEV_THROTTLING",
            "PID_NS",
            "NET_NS",
            "IPC_NS",
            "UTS_NS",
            "USER_NS",
            "SECCOMP_FILTER",
            "RTC_DRV_CMOS",
            "DEVTMPFS",
            "TMPFS",
            "UNIX98_PTYS",
            "POSIX_MQUEUE",
            "SYSVIPC",
            "PROC_SYSCTL",
            "SECCOMP",
            "FUTEX",
            "EPOLL",
            "EVENTFD",
            "TIMERFD",
            "SIGNALFD",
            "INOTIFY_USER",
            "FHANDLE",
            "MULTIUSER",
            "PRINTK",
            "RANDOM_TRUST_CPU",
        ] {
            assert!(on(n), "no fragment sets CONFIG_{n}=y");
        }
        // ACPI off is what makes the runtime boot this kernel with `acpi=off`
        // (`kernel_uses_acpi`); IPV6_SIT off keeps `sit0` out of every container.
        for n in ["MODULES", "PCI", "ACPI", "IPV6_SIT"] {
            assert!(
                all.iter()
                    .any(|w| w.name == format!("CONFIG_{n}") && w.value.is_none()),
                "no fragment turns CONFIG_{n} off"
            );
        }
        assert!(on("DEBUG_INFO_NONE"));
    }

    #[test]
    fn the_cache_key_follows_the_source_version_and_the_toolchain() {
        let gcc12 = "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40; GNU Make 4.3";
        let gcc13 = "gcc (Debian 13.2.0-1) 13.2.0; GNU ld 2.40; GNU Make 4.3";
        assert_eq!(cache_key("6.1.192-1", gcc12), cache_key("6.1.192-1", gcc12));
        assert_ne!(cache_key("6.1.192-1", gcc12), cache_key("6.1.193-1", gcc12));
        assert_ne!(cache_key("6.1.192-1", gcc12), cache_key("6.1.192-1", gcc13));
        assert_eq!(cache_key("x", "y").len(), 16);
    }

    #[test]
    fn the_cache_key_follows_the_patches() {
        let patched = key_of("6.1.192-1", "gcc", FRAGMENTS, PATCHES);
        assert_eq!(patched, cache_key("6.1.192-1", "gcc"));
        assert_ne!(patched, key_of("6.1.192-1", "gcc", FRAGMENTS, &[]));
        let changed = [(PATCHES[0].0, "--- a/x\n+++ b/x\n")];
        assert_ne!(patched, key_of("6.1.192-1", "gcc", FRAGMENTS, &changed));
    }

    #[test]
    fn patches_are_unified_diffs_of_the_source_tree() {
        for (name, text) in PATCHES {
            let mut lines = text.lines();
            let (old, new) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
            assert!(old.starts_with("--- a/"), "{name}: {old}");
            assert!(new.starts_with("+++ b/"), "{name}: {new}");
            assert_eq!(old[6..], new[6..], "{name}: one file per header");
            assert!(text.contains("\n@@ "), "{name} has no hunk");
        }
    }
}
