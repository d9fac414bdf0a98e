//! The OCI spec's security fields as a plan the container's init carries out: checked here, in
//! the agent, so that a bad spec fails `CreateContainer`/`ExecProcess` with an error naming the
//! field, and applied in `init` (which has no way to report a late error but its stderr).
//!
//! What is applied, in this order (as runc does): `linux.sysctl`, `linux.readonlyPaths`,
//! `linux.maskedPaths`, `root.readonly` while the root is set up; then per process
//! `oomScoreAdj`, `rlimits`, the bounding set, seccomp when `noNewPrivileges` is off (loading a
//! filter then needs `CAP_SYS_ADMIN`, so before the capabilities go), the user, the other four
//! capability sets, `noNewPrivileges`, seccomp when it is on, exec.

use std::collections::BTreeSet;
use std::str::FromStr;

use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{field}: capability {name} is not known to the guest agent")]
    Capability { field: String, name: String },
    #[error(transparent)]
    Seccomp(#[from] shoji_seccomp::SeccompError),
    #[error("a seccomp program of {bytes} bytes came with a spec that has no linux.seccomp")]
    UnexpectedProgram { bytes: usize },
    #[error("linux.sysctl[{name:?}]: {message}")]
    Sysctl { name: String, message: String },
}

/// The five capability sets, as `CAP_*` names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapSets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

/// What each process of a container gets (init and exec alike).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSecurity {
    /// `None`: no `process.capabilities` in the spec, the process keeps every capability.
    pub caps: Option<CapSets>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// The container's `linux.seccomp` as the classic BPF program the kernel loads (an array of
    /// `struct sock_filter`, native byte order), made once per container by [`seccomp_program`].
    pub seccomp: Option<Vec<u8>>,
}

/// What the container's root gets, once, when it is set up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootSecurity {
    pub sysctl: Vec<(String, String)>,
    pub readonly_paths: Vec<String>,
    pub masked_paths: Vec<String>,
    pub readonly_rootfs: bool,
}

fn cap_names(
    field: &str,
    set: &Option<oci_spec::runtime::Capabilities>,
) -> Result<Vec<String>, SecurityError> {
    let mut names = BTreeSet::new();
    for cap in set.iter().flatten() {
        // oci-spec has already refused names it does not know; its serde name is `CAP_*`.
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{cap:?}"));
        caps::Capability::from_str(&name).map_err(|_| SecurityError::Capability {
            field: field.into(),
            name: name.clone(),
        })?;
        names.insert(name);
    }
    Ok(names.into_iter().collect())
}

fn cap_sets(c: &LinuxCapabilities) -> Result<CapSets, SecurityError> {
    Ok(CapSets {
        bounding: cap_names("process.capabilities.bounding", c.bounding())?,
        effective: cap_names("process.capabilities.effective", c.effective())?,
        inheritable: cap_names("process.capabilities.inheritable", c.inheritable())?,
        permitted: cap_names("process.capabilities.permitted", c.permitted())?,
        ambient: cap_names("process.capabilities.ambient", c.ambient())?,
    })
}

/// The per-process plan of `process`, with the container's seccomp filter from [`seccomp_program`].
pub fn process_plan(
    process: &Process,
    seccomp: Option<&[u8]>,
) -> Result<ProcessSecurity, SecurityError> {
    if process
        .apparmor_profile()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        tracing::info!(
            security.ignored = "process.apparmorProfile",
            "apparmorProfile ignored: the guest kernel has no AppArmor; the VM is the boundary"
        );
    }
    if process
        .selinux_label()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        tracing::info!(
            security.ignored = "process.selinuxLabel",
            "selinuxLabel ignored: the guest kernel has no SELinux; the VM is the boundary"
        );
    }
    Ok(ProcessSecurity {
        caps: process.capabilities().as_ref().map(cap_sets).transpose()?,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
        seccomp: seccomp.map(<[u8]>::to_vec),
    })
}

/// Whether `name` is a kernel parameter this guest has (`net.ipv4.ip_forward` or
/// `net/ipv4/ip_forward`); returns its path under `/proc/sys`.
pub fn sysctl_path(name: &str) -> Result<String, SecurityError> {
    let err = |message: &str| SecurityError::Sysctl {
        name: name.into(),
        message: message.into(),
    };
    let rel = name.replace('.', "/");
    let ok = !rel.is_empty()
        && rel.split('/').all(|c| {
            !c.is_empty()
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !ok {
        return Err(err(
            "not a kernel parameter name (expected e.g. net.ipv4.ip_forward)",
        ));
    }
    let path = format!("/proc/sys/{rel}");
    if !std::path::Path::new(&path).is_file() {
        return Err(err("no such kernel parameter in the guest"));
    }
    Ok(path)
}

/// The root plan of `spec`.
pub fn root_plan(spec: &Spec) -> Result<RootSecurity, SecurityError> {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut sysctl = Vec::new();
    for (k, v) in linux.sysctl().iter().flatten() {
        sysctl_path(k)?;
        sysctl.push((k.clone(), v.clone()));
    }
    sysctl.sort();
    Ok(RootSecurity {
        sysctl,
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_rootfs: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
    })
}

/// The program every process of a container loads for the spec's `linux.seccomp`: the one the
/// host compiled and sent (`precompiled`, checked for shape), or, when the request carries
/// none, the profile compiled here. `None` when the spec has no seccomp; a program for a spec
/// without `linux.seccomp` is refused (the two must agree).
pub fn seccomp_program(
    profile: Option<&LinuxSeccomp>,
    precompiled: &[u8],
) -> Result<Option<Vec<u8>>, SecurityError> {
    match (profile, precompiled.is_empty()) {
        (None, true) => Ok(None),
        (None, false) => Err(SecurityError::UnexpectedProgram {
            bytes: precompiled.len(),
        }),
        (Some(_), false) => {
            shoji_seccomp::check_program(precompiled)?;
            Ok(Some(precompiled.to_vec()))
        }
        (Some(p), true) => Ok(Some(shoji_seccomp::program(p)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn capabilities_become_five_sorted_sets() {
        let p: Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]},
            "noNewPrivileges": true, "oomScoreAdj": 100
        }))
        .unwrap();
        let plan = process_plan(&p, None).unwrap();
        let caps = plan.caps.unwrap();
        assert_eq!(caps.bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(caps.effective, ["CAP_KILL"]);
        assert!(caps.ambient.is_empty() && caps.permitted.is_empty());
        assert!(plan.no_new_privileges);
        assert_eq!(plan.oom_score_adj, Some(100));
    }

    #[test]
    fn the_hosts_program_is_checked_and_must_match_the_spec() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap();
        let compiled = seccomp_program(Some(&profile), &[]).unwrap().unwrap();
        // The host's program is taken as it is (not compiled again) once its shape is checked.
        assert_eq!(
            seccomp_program(Some(&profile), &compiled).unwrap(),
            Some(compiled.clone())
        );
        let e = seccomp_program(Some(&profile), &compiled[1..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a whole number"), "{e}");
        let e = seccomp_program(None, &compiled).unwrap_err().to_string();
        assert!(e.contains("has no linux.seccomp"), "{e}");
        assert_eq!(seccomp_program(None, &[]).unwrap(), None);
    }

    #[test]
    fn root_plan_takes_paths_and_checks_sysctl_names() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "linux": {"maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}
        }));
        let plan = root_plan(&s).unwrap();
        assert!(plan.readonly_rootfs);
        assert_eq!(plan.masked_paths, ["/proc/kcore"]);
        assert_eq!(plan.readonly_paths, ["/proc/sys"]);
        for bad in ["../../etc/passwd", "kernel/../x", "", "a b"] {
            let e = sysctl_path(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("linux.sysctl[{bad:?}]")), "{e}");
        }
        // The test host's /proc/sys stands in for the guest's.
        assert_eq!(
            sysctl_path("kernel.ostype").unwrap(),
            "/proc/sys/kernel/ostype"
        );
        let e = sysctl_path("kernel.no_such_knob").unwrap_err().to_string();
        assert!(e.contains("no such kernel parameter"), "{e}");
    }
}
