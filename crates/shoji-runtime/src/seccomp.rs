//! Shoji's default seccomp profile (`seccomp_default.toml`, Docker's policy in our own data) as
//! the OCI `linux.seccomp` of a spec Shoji builds, shaped by the container's capabilities; and
//! any spec's `linux.seccomp` compiled here, on the host, into the program the guest loads
//! (ADR 028: at native speed instead of the guest's emulated CPU).

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscallBuilder,
};
use serde::Deserialize;

const PROFILE: &str = include_str!("seccomp_default.toml");

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the built-in seccomp profile is invalid: {0}")]
    Profile(String),
    #[error(transparent)]
    Compile(#[from] shoji_seccomp::SeccompError),
}

/// The part of an OCI runtime spec [`program_for_guest`] reads.
#[derive(Deserialize)]
struct SpecSeccomp {
    linux: Option<LinuxSeccompOnly>,
}

#[derive(Deserialize)]
struct LinuxSeccompOnly {
    seccomp: Option<LinuxSeccomp>,
}

/// The `seccomp_program` of a `CreateContainer` request for `spec_json` (an OCI runtime spec):
/// its `linux.seccomp` compiled with libseccomp, in a `seccomp.compile` span. Empty (the agent
/// then compiles the profile itself) when the spec has no seccomp, when it is not a document
/// this can read (the agent reports what is wrong with it, with the path), and on a host that
/// is not x86-64, whose libseccomp would compile for its own architecture instead of the
/// guest's.
pub fn program_for_guest(spec_json: &[u8]) -> Result<Vec<u8>, SeccompError> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(Vec::new());
    }
    let Ok(SpecSeccomp { linux: Some(linux) }) = serde_json::from_slice(spec_json) else {
        return Ok(Vec::new());
    };
    let Some(profile) = linux.seccomp else {
        return Ok(Vec::new());
    };
    let span = tracing::info_span!(
        "seccomp.compile",
        source = "runtime",
        subsystem = "container",
        seccomp.instructions = tracing::field::Empty
    )
    .entered();
    let program = shoji_seccomp::program(&profile)?;
    span.record(
        "seccomp.instructions",
        program.len() / shoji_seccomp::INSTRUCTION_BYTES,
    );
    Ok(program)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    default_errno: u32,
    architectures: Vec<Arch>,
    rule: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    #[allow(dead_code)] // documentation for readers of the profile
    why: Option<String>,
    names: Vec<String>,
    #[serde(default)]
    errno: Option<u32>,
    #[serde(default)]
    with_cap: Option<String>,
    #[serde(default)]
    without_cap: Option<String>,
    #[serde(default)]
    args: Vec<Arg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    index: usize,
    op: String,
    value: u64,
    #[serde(default)]
    mask: Option<u64>,
}

/// The default profile for a container whose bounding set is `caps` (`CAP_*` names).
pub fn default_profile(caps: &HashSet<String>) -> Result<LinuxSeccomp, SeccompError> {
    let bad = |e: &dyn std::fmt::Display| SeccompError::Profile(e.to_string());
    let p: Profile = toml::from_str(PROFILE).map_err(|e| bad(&e))?;
    let mut syscalls = Vec::new();
    for r in p.rule {
        if r.with_cap.as_ref().is_some_and(|c| !caps.contains(c))
            || r.without_cap.as_ref().is_some_and(|c| caps.contains(c))
        {
            continue;
        }
        let mut args = Vec::new();
        for a in &r.args {
            // OCI: for masked_eq, `value` is the mask and `valueTwo` what must remain.
            let (op, value, two) = match (a.op.as_str(), a.mask) {
                ("eq", None) => (LinuxSeccompOperator::ScmpCmpEq, a.value, None),
                ("ne", None) => (LinuxSeccompOperator::ScmpCmpNe, a.value, None),
                ("masked_eq", Some(m)) => (LinuxSeccompOperator::ScmpCmpMaskedEq, m, Some(a.value)),
                (op, _) => return Err(bad(&format!("argument operator {op:?}"))),
            };
            let mut b = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(value)
                .op(op);
            if let Some(t) = two {
                b = b.value_two(t);
            }
            args.push(b.build().map_err(|e| bad(&e))?);
        }
        let mut b = LinuxSyscallBuilder::default().names(r.names);
        b = match r.errno {
            Some(e) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(e),
            None => b.action(LinuxSeccompAction::ScmpActAllow),
        };
        if !args.is_empty() {
            b = b.args(args);
        }
        syscalls.push(b.build().map_err(|e| bad(&e))?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(p.default_errno)
        .architectures(p.architectures)
        .syscalls(syscalls)
        .build()
        .map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a oci_spec::runtime::LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn namespaces_and_mounts_need_cap_sys_admin() {
        let docker: HashSet<String> = ["CAP_CHOWN", "CAP_SYS_CHROOT"].map(String::from).into();
        let s = default_profile(&docker).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert!(allowed(&s, "mount").is_empty());
        assert_eq!(allowed(&s, "chroot").len(), 1);
        let clone = allowed(&s, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!((arg.value(), arg.value_two()), (0x7E020000, Some(0)));
        assert_eq!(allowed(&s, "clone3")[0].errno_ret(), Some(38));
        assert_eq!(allowed(&s, "personality").len(), 5);

        let admin: HashSet<String> = ["CAP_SYS_ADMIN"].map(String::from).into();
        let s = default_profile(&admin).unwrap();
        assert_eq!(allowed(&s, "mount").len(), 1);
        assert!(allowed(&s, "chroot").is_empty());
        let clone = allowed(&s, "clone");
        assert!(clone.len() == 1 && clone[0].args().is_none());
        assert_eq!(
            allowed(&s, "clone3")[0].action(),
            LinuxSeccompAction::ScmpActAllow
        );
    }
}
