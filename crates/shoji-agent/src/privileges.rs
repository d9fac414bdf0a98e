//! Capabilities and seccomp for a container process, in the forked container init (single
//! threaded, just before exec). Each error names the spec field it could not apply; the init
//! prints its chain once, where it reports the failure.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

use crate::security::ProcessSecurity;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("capability {name}")]
    UnknownCapability {
        name: String,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("process.capabilities.bounding: dropping {cap}")]
    DropBounding {
        cap: Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("process.capabilities.{field}: setting the set")]
    SetSet {
        field: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("process.capabilities.ambient: raising {cap}")]
    RaiseAmbient {
        cap: Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("linux.seccomp: {instructions} BPF instructions, more than a filter can hold")]
    FilterTooLong { instructions: usize },
    #[error("linux.seccomp: loading the filter")]
    LoadFilter(#[source] std::io::Error),
}

fn set_of(names: &[String]) -> Result<CapsHashSet, PrivilegeError> {
    let supported = caps::runtime::thread_all_supported();
    let mut set = CapsHashSet::new();
    for n in names {
        let cap = Capability::from_str(n).map_err(|source| PrivilegeError::UnknownCapability {
            name: n.clone(),
            source,
        })?;
        // A capability newer than the guest kernel is left out, as runc does.
        if supported.contains(&cap) {
            set.insert(cap);
        }
    }
    Ok(set)
}

/// Drops from the bounding set every capability `process.capabilities.bounding` lacks.
pub fn drop_bounding(sec: &ProcessSecurity) -> Result<(), PrivilegeError> {
    let Some(c) = &sec.caps else { return Ok(()) };
    let keep = set_of(&c.bounding)?;
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|source| PrivilegeError::DropBounding { cap, source })?;
        }
    }
    Ok(())
}

/// Keeps the permitted set across the switch to a non-root user, so that [`set_sets`] can give
/// the spec's sets to that user.
pub fn keep_caps(on: bool) {
    if on {
        // SAFETY: PR_SET_KEEPCAPS takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
}

/// Sets the effective, permitted, inheritable and ambient sets (after the user switch).
pub fn set_sets(sec: &ProcessSecurity) -> Result<(), PrivilegeError> {
    let Some(c) = &sec.caps else { return Ok(()) };
    // SAFETY: PR_SET_KEEPCAPS takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    // Effective first: it must stay within the permitted set at every step.
    for (set, names, field) in [
        (CapSet::Effective, &c.effective, "effective"),
        (CapSet::Permitted, &c.permitted, "permitted"),
        (CapSet::Inheritable, &c.inheritable, "inheritable"),
    ] {
        caps::set(None, set, &set_of(names)?)
            .map_err(|source| PrivilegeError::SetSet { field, source })?;
    }
    for cap in set_of(&c.ambient)? {
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|source| PrivilegeError::RaiseAmbient { cap, source })?;
    }
    Ok(())
}

/// Loads the container's seccomp filter (the BPF the host or the agent generated) into this process, if it
/// has one. `no_new_privs` is the caller's business, as is having `CAP_SYS_ADMIN` without it.
pub fn load_seccomp(sec: &ProcessSecurity) -> Result<(), PrivilegeError> {
    let Some(bpf) = &sec.seccomp else {
        return Ok(());
    };
    let mut filter: Vec<libc::sock_filter> = bpf
        .chunks_exact(shoji_seccomp::INSTRUCTION_BYTES)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let len = u16::try_from(filter.len()).map_err(|_| PrivilegeError::FilterTooLong {
        instructions: filter.len(),
    })?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `len` initialised instructions in `filter`, which outlives the
    // call; the kernel copies the program and checks it before installing it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(PrivilegeError::LoadFilter(std::io::Error::last_os_error()));
    }
    Ok(())
}
