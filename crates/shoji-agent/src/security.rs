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

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Process, Spec,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{field}: capability {name} is not known to the guest agent")]
    Capability { field: String, name: String },
    #[error("{field}: {message}")]
    Seccomp { field: String, message: String },
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
    /// `struct sock_filter`, native byte order), made once per container by [`seccomp_bpf`].
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

/// The per-process plan of `process`, with the container's seccomp filter from [`seccomp_bpf`].
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

fn action(
    field: &str,
    a: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<ScmpAction, SecurityError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SecurityError::Seccomp {
                field: field.into(),
                message: "SCMP_ACT_NOTIFY is not supported (no seccomp agent in the guest)".into(),
            })
        }
    })
}

/// The kernel's limit on one classic BPF program (`BPF_MAXINSNS`).
const MAX_BPF_INSTRUCTIONS: usize = 4096;
/// Size of one `struct sock_filter`.
pub const BPF_INSTRUCTION_BYTES: usize = 8;

/// Compiles `s` once, in the agent, into the BPF program every process of the container loads
/// (libseccomp's code generation costs about 100 ms for Docker's profile under TCG; the init
/// then only hands the bytes to the kernel).
pub fn seccomp_bpf(s: &LinuxSeccomp) -> Result<Vec<u8>, SecurityError> {
    use std::io::{Read, Seek};
    let err = |message: String| SecurityError::Seccomp {
        field: "linux.seccomp".into(),
        message,
    };
    let ctx = compile(s)?;
    let fd = nix::sys::memfd::memfd_create(c"seccomp-bpf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| err(format!("memfd_create: {e}")))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&mut file)
        .map_err(|e| err(format!("generating the filter: {e}")))?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|e| err(format!("reading the generated filter: {e}")))?;
    let n = bpf.len() / BPF_INSTRUCTION_BYTES;
    if bpf.is_empty() || bpf.len() % BPF_INSTRUCTION_BYTES != 0 || n > MAX_BPF_INSTRUCTIONS {
        return Err(err(format!(
            "the filter is {} bytes ({n} instructions); the kernel takes 1 to {MAX_BPF_INSTRUCTIONS}",
            bpf.len()
        )));
    }
    Ok(bpf)
}

/// Builds the libseccomp filter of `s`, refusing unknown architectures and actions with the
/// field named (unknown syscall names are skipped). Loading (and when) is the caller's business.
pub fn compile(s: &LinuxSeccomp) -> Result<ScmpFilterContext, SecurityError> {
    let lib = |field: &str| {
        let field = field.to_string();
        move |e: libseccomp::error::SeccompError| SecurityError::Seccomp {
            field: field.clone(),
            message: e.to_string(),
        }
    };
    let default = action(
        "linux.seccomp.defaultAction",
        s.default_action(),
        s.default_errno_ret(),
    )?;
    let mut ctx = ScmpFilterContext::new_filter(default).map_err(lib("linux.seccomp"))?;
    // The caller sets no_new_privs itself when the spec asks for it; libseccomp would set it
    // on every load.
    ctx.set_ctl_nnp(false).map_err(lib("linux.seccomp"))?;
    for (i, arch) in s.architectures().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.architectures[{i}]");
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let a = ScmpArch::from_str(&name).map_err(lib(&field))?;
        ctx.add_arch(a).map_err(lib(&field))?;
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(&format!("{field}.action"), rule.action(), rule.errno_ret())?;
        let mut conds = Vec::new();
        for (j, arg) in rule.args().iter().flatten().enumerate() {
            let afield = format!("{field}.args[{j}]");
            if arg.index() > 5 {
                return Err(SecurityError::Seccomp {
                    field: afield,
                    message: format!("index {} is not a syscall argument (0-5)", arg.index()),
                });
            }
            let (op, datum) = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
                LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
                LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
                LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
                LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
                LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
                // OCI: `value` is the mask, `valueTwo` what the masked argument must equal.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    ScmpCompareOp::MaskedEqual(arg.value()),
                    arg.value_two().unwrap_or(0),
                ),
            };
            conds.push(ScmpArgCompare::new(arg.index() as u32, op, datum));
        }
        for name in rule.names() {
            // A name this libseccomp does not know is skipped, as runc skips it: profiles such
            // as containerd's default list syscalls newer than the guest's libseccomp (and
            // kernel), and a call the kernel lacks cannot be made anyway.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                tracing::debug!(field = %field, syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            // A rule whose action is the default one is what libseccomp refuses as redundant.
            if act == default {
                continue;
            }
            let r = if conds.is_empty() {
                ctx.add_rule(act, sc)
            } else {
                ctx.add_rule_conditional(act, sc, &conds)
            };
            r.map_err(lib(&format!("{field} ({name})")))?;
        }
    }
    Ok(ctx)
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
    fn seccomp_profiles_compile_and_bad_ones_name_the_field() {
        let good: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}
            ]
        }))
        .unwrap();
        compile(&good).unwrap();
        // The program handed to the init: whole instructions, ending in a return.
        let bpf = seccomp_bpf(&good).unwrap();
        assert_eq!(bpf.len() % BPF_INSTRUCTION_BYTES, 0);
        let last = &bpf[bpf.len() - BPF_INSTRUCTION_BYTES..];
        assert_eq!(
            u16::from_ne_bytes([last[0], last[1]]) & 0x07,
            0x06,
            "BPF_RET class"
        );
        // A syscall name libseccomp does not know (a newer kernel's) is skipped, not refused.
        let mut newer = good.clone();
        let mut rules = newer.syscalls().clone().unwrap();
        rules[1].set_names(vec!["personality".into(), "no_such_call".into()]);
        newer.set_syscalls(Some(rules));
        assert_eq!(seccomp_bpf(&newer).unwrap(), bpf);
        let mut notify = good.clone();
        notify.set_default_action(LinuxSeccompAction::ScmpActNotify);
        let e = compile(&notify).unwrap_err().to_string();
        assert!(e.contains("linux.seccomp.defaultAction"), "{e}");
    }

    #[test]
    fn every_syscall_of_shojis_default_profile_is_known_to_libseccomp() {
        // The runtime writes this profile into the specs it builds; an unknown name there
        // would make every such container fail to start.
        let profile: toml::Value =
            toml::from_str(include_str!("../../shoji-runtime/src/seccomp_default.toml")).unwrap();
        let rules = profile["rule"].as_array().unwrap();
        let mut n = 0;
        for rule in rules {
            for name in rule["names"].as_array().unwrap() {
                let name = name.as_str().unwrap();
                assert!(
                    ScmpSyscall::from_name(name).is_ok(),
                    "unknown syscall {name}"
                );
                n += 1;
            }
        }
        assert!(n > 300, "only {n} syscall names");
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
