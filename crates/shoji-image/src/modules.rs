//! Kernel modules and the initramfs. The cloud kernel package ships no `modules.dep`, so each
//! module's dependencies come from the `depends=` string in its `.modinfo` section, found by
//! scanning the module's bytes for the NUL-delimited key.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{io, ImageError};

/// What the agent needs: virtio-mmio transport, vsock over virtio, virtio-fs, virtio-net (its
/// dependencies `net_failover` and `failover` follow from its `.modinfo`). Nothing more:
/// every module costs boot time (overlay, once listed but never mounted, was a quarter of the
/// module bytes and about 40 ms of a TCG boot, issue #2).
pub const AGENT_MODULES: &[&str] = &[
    "virtio_mmio",
    "vmw_vsock_virtio_transport",
    "fuse",
    "virtiofs",
    "virtio_net",
];

fn index(dir: &Path, map: &mut HashMap<String, PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            index(&p, map);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|sfx| name.strip_suffix(sfx));
            if let Some(stem) = stem {
                map.insert(stem.replace('-', "_"), p.clone());
            }
        }
    }
}

/// A module's bytes, decompressed when the kernel package ships it as `.ko.xz`, `.ko.zst` or
/// `.ko.gz` (the agent's `finit_module` gets plain `.ko` files, so it needs no decompressor).
pub fn read_module(path: &Path) -> Result<Vec<u8>, ImageError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    if let Some(tool) = tool {
        return crate::run_tool(Command::new(tool).arg("-dc").arg(path));
    }
    let data = std::fs::read(path).map_err(io("read", path))?;
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut out)
            .map_err(io("decompress", path))?;
        return Ok(out);
    }
    Ok(data)
}

/// The `depends=` list of a module file.
pub fn depends(data: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(pos) = data
        .windows(key.len())
        .enumerate()
        .find(|(i, w)| *w == key && (*i == 0 || data[i - 1] == 0))
        .map(|(i, _)| i + key.len())
    else {
        return Vec::new();
    };
    let end = data[pos..]
        .iter()
        .position(|b| *b == 0)
        .map_or(data.len(), |e| pos + e);
    String::from_utf8_lossy(&data[pos..end])
        .split(',')
        .map(|s| s.trim().replace('-', "_"))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Modules `wanted` plus their dependencies, dependencies first.
pub fn resolve_order(
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let mut map = HashMap::new();
    index(modules_dir, &mut map);
    let mut order = Vec::new();
    let mut done = HashSet::new();
    fn visit(
        name: &str,
        map: &HashMap<String, PathBuf>,
        done: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<(), ImageError> {
        if done.contains(name) {
            return Ok(());
        }
        if depth > 32 {
            return Err(ImageError::Kernel(format!(
                "module dependency loop at {name}"
            )));
        }
        let path = map.get(name).ok_or_else(|| {
            ImageError::Kernel(format!(
                "kernel module {name} not found (built in, or another kernel?)"
            ))
        })?;
        let data = read_module(path)?;
        for dep in depends(&data) {
            visit(&dep, map, done, order, depth + 1)?;
        }
        done.insert(name.to_string());
        order.push((name.to_string(), path.clone()));
        Ok(())
    }
    for w in wanted {
        visit(w, &map, &mut done, &mut order, 0)?;
    }
    Ok(order)
}

/// Stages the initramfs tree and packs it as an uncompressed newc cpio with the `cpio` tool.
/// Uncompressed because the guest decompresses on its one vCPU, which under TCG made a gzip'd
/// image ~130 ms slower to boot (issue #2); QEMU loads the 4.8 MB into guest memory at host
/// speed.
pub fn write_initramfs(
    agent: &Path,
    modules: &[(String, PathBuf)],
    staging: &Path,
    out: &Path,
) -> Result<(), ImageError> {
    let _ = std::fs::remove_dir_all(staging);
    let moddir = staging.join("lib/modules/shoji");
    std::fs::create_dir_all(&moddir).map_err(io("create", &moddir))?;
    for d in ["dev", "proc", "sys", "run", "tmp", "etc"] {
        let p = staging.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    let init = staging.join("init");
    std::fs::copy(agent, &init).map_err(io("copy the agent to", &init))?;
    let mut list = String::new();
    for (name, path) in modules {
        let file = format!("{name}.ko");
        let dst = moddir.join(&file);
        std::fs::write(&dst, read_module(path)?).map_err(io("write", &dst))?;
        list.push_str(&file);
        list.push('\n');
    }
    std::fs::write(moddir.join("load-order"), list).map_err(io("write", &moddir))?;

    let mut files = Vec::new();
    collect(staging, staging, &mut files);
    files.sort();
    let tmp = out.with_extension("tmp");
    let outfile = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut outfile = std::io::BufWriter::new(outfile);
    let mut child = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "--owner", "0:0"])
        .current_dir(staging)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Tool {
            what: "cpio (apt-get install cpio)".into(),
            detail: e.to_string(),
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ImageError::Kernel("cpio stdin".into()))?;
    let names = files.join("\n") + "\n";
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(names.as_bytes());
    });
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ImageError::Kernel("cpio stdout".into()))?;
    std::io::copy(&mut stdout, &mut outfile).map_err(io("write", &tmp))?;
    let _ = writer.join();
    let status = child.wait().map_err(io("wait for cpio writing", &tmp))?;
    if !status.success() {
        return Err(ImageError::Tool {
            what: "cpio".into(),
            detail: status.to_string(),
        });
    }
    {
        use std::io::Write;
        outfile.flush().map_err(io("write", &tmp))?;
    }
    std::fs::rename(&tmp, out).map_err(io("rename", out))?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.display().to_string());
        }
        if p.is_dir() {
            collect(root, &p, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_modules_are_found_and_decompressed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = b"\x7fELF\0depends=\0name=a\0".to_vec();
        std::fs::write(dir.path().join("a.ko"), &plain).expect("write");
        let xz_in = dir.path().join("b.ko");
        std::fs::write(&xz_in, b"\x7fELF\0depends=a\0name=b\0").expect("write");
        let st = Command::new("xz").arg(&xz_in).status().expect("xz");
        assert!(st.success());
        let order = resolve_order(dir.path(), &["b"]).expect("resolve");
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(read_module(&order[1].1)
            .expect("read")
            .starts_with(b"\x7fELF"));
    }

    #[test]
    fn reads_depends_from_modinfo_bytes() {
        let data = b"\x7fELF....\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(depends(data), vec!["virtio", "virtio_ring"]);
        assert!(depends(b"\0depends=\0x").is_empty());
        assert!(depends(b"nothing here").is_empty());
    }

    #[test]
    fn orders_dependencies_first() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.ko"), b"\0depends=b,c\0").unwrap();
        std::fs::write(t.path().join("b.ko"), b"\0depends=c\0").unwrap();
        std::fs::write(t.path().join("c.ko"), b"\0depends=\0").unwrap();
        let order: Vec<String> = resolve_order(t.path(), &["a"])
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(order, vec!["c", "b", "a"]);
        assert!(resolve_order(t.path(), &["zz"]).is_err());
    }
}
