//! Finding the agent binary and making sure it can run as `/init`: the initramfs holds no
//! libraries, so a dynamically linked agent fails with "Failed to execute /init (error -2)" and a
//! kernel panic. Checked here, before the build, by looking for an ELF `PT_INTERP` header.
//!
//! Why the lookup has a second place: any plain `cargo build`/`cargo test` of the workspace
//! writes a dynamically linked `target/debug/shoji-agent` over the static copy that
//! `scripts/build-agent.sh` put next to `shoji`, while the static build itself stays in
//! `target/x86_64-unknown-linux-gnu/agent/`.

use std::path::{Path, PathBuf};

use crate::{io, ImageError};

const PT_INTERP: u32 = 3;

/// Whether `path` is an x86-64 ELF executable without a program interpreter (static or
/// static-pie).
pub fn is_static_elf(path: &Path) -> Result<bool, ImageError> {
    let data = std::fs::read(path).map_err(io("read", path))?;
    Ok(elf64_has_no_interp(&data).unwrap_or(false))
}

/// `None` when `data` is not a well-formed little-endian ELF64 file.
fn elf64_has_no_interp(data: &[u8]) -> Option<bool> {
    if data.get(..4)? != b"\x7fELF" || *data.get(4)? != 2 || *data.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(off)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// The default agent for `shoji image build`: a static `shoji-agent` next to the `shoji`
/// executable `exe`, else the static build output `../x86_64-unknown-linux-gnu/agent/shoji-agent`
/// (relative to `exe`'s directory, i.e. inside cargo's `target/`).
pub fn default_agent(exe: &Path) -> Result<PathBuf, ImageError> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("shoji-agent"),
        dir.join("../x86_64-unknown-linux-gnu/agent/shoji-agent"),
    ];
    let mut dynamic = None;
    for c in &candidates {
        if c.is_file() {
            if is_static_elf(c)? {
                return Ok(c.clone());
            }
            dynamic.get_or_insert_with(|| c.clone());
        }
    }
    match dynamic {
        Some(path) => Err(ImageError::NotStatic { path }),
        None => Err(ImageError::NoAgent {
            path: candidates[0].clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic_and_garbage_is_not_static() {
        let me = std::env::current_exe().expect("test binary path");
        assert!(!is_static_elf(&me).expect("readable"));
        assert_eq!(elf64_has_no_interp(b"\x7fELF\x02\x01"), None);
        assert_eq!(elf64_has_no_interp(b"not an elf at all"), None);
    }

    #[test]
    fn missing_agent_error_names_the_build_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = default_agent(&dir.path().join("shoji")).expect_err("nothing there");
        assert!(err.to_string().contains("scripts/build-agent.sh"), "{err}");
    }

    #[test]
    fn dynamic_agent_next_to_shoji_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = std::env::current_exe().expect("test binary path");
        std::fs::copy(&me, dir.path().join("shoji-agent")).expect("copy");
        let err = default_agent(&dir.path().join("shoji")).expect_err("dynamic");
        assert!(matches!(err, ImageError::NotStatic { .. }), "{err}");
    }
}
