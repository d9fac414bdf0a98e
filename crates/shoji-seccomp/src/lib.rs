//! An OCI `linux.seccomp` profile compiled with libseccomp into the classic BPF program the
//! kernel loads, and such a program's shape checked before anything loads it.
//!
//! Both sides of the VM use it (ADR 028): the host compiles a container's profile at native
//! speed and sends the program with `CreateContainer`; the agent checks the program's shape
//! ([`check_program`]) and compiles the profile itself ([`program`]) only when a request carries
//! none.

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile asks for something libseccomp or the guest cannot do.
    #[error("{field}: {message}")]
    Profile { field: String, message: String },
    /// A program (generated here or received) that the kernel would refuse.
    #[error("linux.seccomp: the BPF program of {bytes} bytes is not loadable: {message}")]
    Program { bytes: usize, message: String },
}

/// The kernel's limit on one classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;
/// Size of one `struct sock_filter` (code u16, jt u8, jf u8, k u32; native byte order).
pub const INSTRUCTION_BYTES: usize = 8;
/// `sizeof(struct seccomp_data)`: the only memory a seccomp program may load from.
const SECCOMP_DATA_BYTES: u32 = 64;
/// Classic BPF's scratch memory slots (`BPF_MEMWORDS`).
const MEMWORDS: u32 = 16;

fn action(
    field: &str,
    a: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<ScmpAction, SeccompError> {
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
            return Err(SeccompError::Profile {
                field: field.into(),
                message: "SCMP_ACT_NOTIFY is not supported (no seccomp agent in the guest)".into(),
            })
        }
    })
}

/// Builds the libseccomp filter of `s` for this process's (native) architecture plus the
/// profile's `architectures`, refusing unknown architectures and actions with the field named
/// (unknown syscall names are skipped). Loading (and when) is the caller's business.
pub fn compile(s: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let lib = |field: &str| {
        let field = field.to_string();
        move |e: libseccomp::error::SeccompError| SeccompError::Profile {
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
                return Err(SeccompError::Profile {
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

/// Compiles `s` ([`compile`]) into the program every process of the container loads (an array
/// of `struct sock_filter`, native byte order), checked with [`check_program`].
pub fn program(s: &LinuxSeccomp) -> Result<Vec<u8>, SeccompError> {
    use std::io::{Read, Seek};
    let err = |message: String| SeccompError::Profile {
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
    check_program(&bpf)?;
    Ok(bpf)
}

/// One `struct sock_filter` of `bpf` (whose length is a multiple of [`INSTRUCTION_BYTES`]).
fn instruction(c: &[u8]) -> (u16, u8, u8, u32) {
    (
        u16::from_ne_bytes([c[0], c[1]]),
        c[2],
        c[3],
        u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
    )
}

/// Checks that `bpf` is a program the kernel's seccomp would take, with the rules of its
/// `bpf_check_classic` and `seccomp_check_filter`: whole instructions, 1 to
/// [`MAX_INSTRUCTIONS`], only the opcodes seccomp allows, loads only of aligned words of
/// `struct seccomp_data`, scratch slots in range, no division by a constant zero, every jump
/// inside the program, a return last. Returns the number of instructions.
///
/// A program that passes may still be the wrong policy: this is a check of shape, made so that
/// a damaged program fails `CreateContainer` with a clear error instead of the container's init
/// failing after the fact.
pub fn check_program(bpf: &[u8]) -> Result<usize, SeccompError> {
    let err = |message: String| SeccompError::Program {
        bytes: bpf.len(),
        message,
    };
    if !bpf.len().is_multiple_of(INSTRUCTION_BYTES) {
        return Err(err(format!(
            "not a whole number of {INSTRUCTION_BYTES}-byte instructions"
        )));
    }
    let n = bpf.len() / INSTRUCTION_BYTES;
    if n == 0 || n > MAX_INSTRUCTIONS {
        return Err(err(format!(
            "{n} instructions; the kernel takes 1 to {MAX_INSTRUCTIONS}"
        )));
    }
    for (pc, c) in bpf.chunks_exact(INSTRUCTION_BYTES).enumerate() {
        let (code, jt, jf, k) = instruction(c);
        let bad = |what: &str| {
            err(format!(
                "instruction {pc} (code {code:#06x}, k {k}): {what}"
            ))
        };
        let jump_ok = |off: u32| (pc as u64 + 1 + off as u64) < n as u64;
        match code {
            // ld [k] (a word of seccomp_data)
            0x20 if k >= SECCOMP_DATA_BYTES || !k.is_multiple_of(4) => {
                return Err(bad("loads outside struct seccomp_data or unaligned"))
            }
            0x20 => {}
            // ld #len, ldx #len, ld #k, ldx #k, tax, txa, ret #k, ret a
            0x80 | 0x81 | 0x00 | 0x01 | 0x07 | 0x87 | 0x06 | 0x16 => {}
            // ld M[k], ldx M[k], st M[k], stx M[k]
            0x60 | 0x61 | 0x02 | 0x03 if k >= MEMWORDS => {
                return Err(bad("scratch memory slot out of range"))
            }
            0x60 | 0x61 | 0x02 | 0x03 => {}
            // div #0
            0x34 if k == 0 => return Err(bad("divides by a constant zero")),
            // add sub mul div or and lsh rsh xor, #k and x; neg
            0x04 | 0x0c | 0x14 | 0x1c | 0x24 | 0x2c | 0x34 | 0x3c | 0x44 | 0x4c | 0x54 | 0x5c
            | 0x64 | 0x6c | 0x74 | 0x7c | 0xa4 | 0xac | 0x84 => {}
            // ja
            0x05 if !jump_ok(k) => return Err(bad("jumps past the end")),
            0x05 => {}
            // jeq jgt jge jset, #k and x
            0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
                if !jump_ok(jt.into()) || !jump_ok(jf.into()) {
                    return Err(bad("jumps past the end"));
                }
            }
            _ => return Err(bad("an opcode seccomp does not allow")),
        }
    }
    let (last, ..) = instruction(&bpf[bpf.len() - INSTRUCTION_BYTES..]);
    if last & 0x07 != 0x06 {
        return Err(err("the last instruction is not a return".into()));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> LinuxSeccomp {
        serde_json::from_value(serde_json::json!({
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
        .unwrap()
    }

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Vec<u8> {
        let mut v = code.to_ne_bytes().to_vec();
        v.extend([jt, jf]);
        v.extend(k.to_ne_bytes());
        v
    }

    #[test]
    fn profiles_compile_and_bad_ones_name_the_field() {
        let good = good();
        let bpf = program(&good).unwrap();
        assert_eq!(check_program(&bpf).unwrap(), bpf.len() / INSTRUCTION_BYTES);
        // A syscall name libseccomp does not know (a newer kernel's) is skipped, not refused.
        let mut newer = good.clone();
        let mut rules = newer.syscalls().clone().unwrap();
        rules[1].set_names(vec!["personality".into(), "no_such_call".into()]);
        newer.set_syscalls(Some(rules));
        assert_eq!(program(&newer).unwrap(), bpf);
        let mut notify = good.clone();
        notify.set_default_action(LinuxSeccompAction::ScmpActNotify);
        let e = compile(&notify).unwrap_err().to_string();
        assert!(e.contains("linux.seccomp.defaultAction"), "{e}");
        let far: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["read"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}
            ]
        }))
        .unwrap();
        let e = program(&far).unwrap_err().to_string();
        assert_eq!(
            e,
            "linux.seccomp.syscalls[1].args[0]: index 6 is not a syscall argument (0-5)"
        );
    }

    #[test]
    fn damaged_programs_are_refused_with_the_reason() {
        let bpf = program(&good()).unwrap();
        let ret_allow = insn(0x06, 0, 0, 0x7fff_0000);
        assert_eq!(check_program(&ret_allow).unwrap(), 1);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "0 instructions"),
            (bpf[..bpf.len() - 3].to_vec(), "not a whole number"),
            (
                [&bpf[..bpf.len() - INSTRUCTION_BYTES], &insn(0x00, 0, 0, 0)].concat(),
                "not a return",
            ),
            (
                bpf[..bpf.len() - INSTRUCTION_BYTES].to_vec(),
                "past the end",
            ),
            (ret_allow.repeat(MAX_INSTRUCTIONS + 1), "4097 instructions"),
            (
                [insn(0x20, 0, 0, 64), ret_allow.clone()].concat(),
                "outside",
            ),
            (
                [insn(0x20, 0, 0, 2), ret_allow.clone()].concat(),
                "unaligned",
            ),
            ([insn(0x28, 0, 0, 0), ret_allow.clone()].concat(), "opcode"),
            ([insn(0x94, 0, 0, 3), ret_allow.clone()].concat(), "opcode"),
            ([insn(0x34, 0, 0, 0), ret_allow.clone()].concat(), "zero"),
            ([insn(0x02, 0, 0, 16), ret_allow.clone()].concat(), "slot"),
            (
                [insn(0x15, 1, 0, 0), ret_allow.clone()].concat(),
                "past the end",
            ),
            (
                [insn(0x05, 0, 0, 1), ret_allow.clone()].concat(),
                "past the end",
            ),
        ];
        for (prog, want) in cases {
            let e = check_program(&prog).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
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
}
