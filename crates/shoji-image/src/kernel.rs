//! Debian's cloud kernel: resolve, download, unpack, and decompress `vmlinuz` to `vmlinux`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{io, run_tool, ImageError};

/// The versioned package `linux-image-cloud-amd64` points at.
pub fn resolve_package() -> Result<String, ImageError> {
    let out = run_tool(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            ImageError::Kernel(
                "apt-cache knows no linux-image-cloud-amd64; run `apt-get update` (Debian's package lists are needed)".into(),
            )
        })
}

/// Downloads the package into `cache` (once) and unpacks it (once). Returns the unpacked tree.
pub fn fetch_and_extract(
    package: &str,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ImageError> {
    let tree = cache.join(package);
    if tree.join(".complete").exists() {
        progress(&format!("kernel package {package}: cached"));
        return Ok(tree);
    }
    let deb = std::fs::read_dir(cache)
        .map_err(io("read", cache))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        });
    let deb = match deb {
        Some(d) => d,
        None => {
            progress(&format!("downloading {package} (apt-get download)"));
            run_tool(
                Command::new("apt-get")
                    .args(["download", "-q", package])
                    .current_dir(cache),
            )?;
            std::fs::read_dir(cache)
                .map_err(io("read", cache))?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.extension().is_some_and(|e| e == "deb")
                        && p.to_string_lossy().contains(package)
                })
                .ok_or_else(|| {
                    ImageError::Kernel(format!("apt-get download {package} produced no .deb"))
                })?
        }
    };
    progress(&format!("unpacking {}", deb.display()));
    let _ = std::fs::remove_dir_all(&tree);
    run_tool(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    std::fs::write(tree.join(".complete"), b"").map_err(io("write", &tree))?;
    Ok(tree)
}

pub fn modules_dir(tree: &Path) -> Result<PathBuf, ImageError> {
    let base = tree.join("lib/modules");
    std::fs::read_dir(&base)
        .map_err(io("read", &base))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or_else(|| ImageError::Kernel(format!("no kernel modules under {}", base.display())))
}

/// Offset of the LZ4 legacy-format magic (0x184C2102, little-endian) in a bzImage.
pub fn find_lz4(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == [0x02, 0x21, 0x4c, 0x18])
}

/// bzImage -> ELF vmlinux with the `lz4` tool (it understands the legacy frame the kernel uses;
/// the bytes after the payload are the bzImage's trailer, which lz4 reports and we accept once
/// the output is a complete ELF).
pub fn extract_vmlinux(
    tree: &Path,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let boot = tree.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(io("read", &boot))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| ImageError::Kernel(format!("no vmlinuz in {}", boot.display())))?;
    let data = std::fs::read(&vmlinuz).map_err(io("read", &vmlinuz))?;
    let off = find_lz4(&data).ok_or_else(|| {
        ImageError::Kernel(format!(
            "{} has no LZ4 payload (is this Debian's cloud kernel?)",
            vmlinuz.display()
        ))
    })?;
    progress(&format!(
        "decompressing {} (LZ4 payload at byte {off}) to {}",
        vmlinuz.display(),
        out.display()
    ));
    let tmp = out.with_extension("tmp");
    let outfile = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut child = Command::new("lz4")
        .args(["-dc", "-"])
        .stdin(Stdio::piped())
        .stdout(outfile)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ImageError::Tool {
            what: "lz4 -dc (apt-get install lz4)".into(),
            detail: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&data[off..]);
    }
    let _ = child.wait();
    let head = std::fs::read(&tmp).map_err(io("read", &tmp))?;
    if head.len() < 1 << 20 || &head[..4] != b"\x7fELF" {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImageError::Kernel(format!(
            "decompressing {} did not give an ELF kernel",
            vmlinuz.display()
        )));
    }
    std::fs::rename(&tmp, out).map_err(io("rename", out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_lz4_magic() {
        let mut d = vec![0u8; 100];
        d[40..44].copy_from_slice(&[0x02, 0x21, 0x4c, 0x18]);
        assert_eq!(super::find_lz4(&d), Some(40));
        assert_eq!(super::find_lz4(&[1, 2, 3]), None);
    }
}
