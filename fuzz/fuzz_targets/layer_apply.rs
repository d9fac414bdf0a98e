//! A layer from a hostile image: a tar of arbitrary entries (names with `..`, `./`, whiteouts,
//! opaque whiteouts, symlinks and hard links anywhere) applied with `shoji_images::apply` onto a
//! rootfs in a temporary directory, over a first layer that plants symlinks pointing out of it
//! (absolute, to a host directory beside it, and relative, `..`). Nothing outside the rootfs may
//! change: every file, directory and symlink there keeps its content, mode and link count.
//!
//! Were the unpacker broken, the fuzzer must not damage the machine it runs on: the rootfs is
//! nested four levels down in the temporary directory and entry names have at most four
//! components, and when run as root the process first moves into a private mount namespace
//! with a fresh tmpfs over `/tmp`, so escapes that climb out of the temporary directory reach
//! that tmpfs, not the host's `/tmp`.
#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use shoji_images::apply::{apply_layer, ApplyOptions};
use shoji_images::Root;

const WORDS: &[&str] = &[
    "..", ".", "", "a", "b", "esc", "up", "lnk", "outside", "file", "dir", ".wh.a", ".wh.esc",
    ".wh.file", ".wh.dir", ".wh..wh..opq", ".wh..wh.plnk", "etc", "passwd",
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A path of up to four words, maybe with a leading `./` or `/`.
    fn path(&mut self, outside: &str) -> Option<String> {
        let b = self.byte()?;
        let mut s = match b & 3 {
            0 => String::new(),
            1 => "./".into(),
            2 => "/".into(),
            _ => format!("{outside}/"),
        };
        for i in 0..=((b >> 2) & 3) {
            if i > 0 {
                s.push('/');
            }
            s.push_str(WORDS[usize::from(self.byte()?) % WORDS.len()]);
        }
        Some(s)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Builds a tar from the fuzz input; names too long for the header are skipped.
fn build_layer(data: &[u8], outside: &str) -> Vec<u8> {
    let mut input = Bytes(data);
    let mut b = tar::Builder::new(Vec::new());
    while let Some(kind) = input.byte() {
        let Some(path) = input.path(outside) else { break };
        let mode = 0o600 | (u32::from(kind >> 3) << 9);
        let set_name = |h: &mut tar::Header| -> bool {
            let raw = &mut h.as_old_mut().name;
            if path.len() >= raw.len() {
                return false;
            }
            raw.fill(0);
            raw[..path.len()].copy_from_slice(path.as_bytes());
            true
        };
        match kind & 7 {
            0 | 1 => {
                let data = [kind; 3];
                let mut h = header(tar::EntryType::Regular, mode, 3);
                if set_name(&mut h) {
                    h.set_cksum();
                    let _ = b.append(&h, &data[..]);
                }
            }
            2 => {
                let mut h = header(tar::EntryType::Directory, 0o755 | mode, 0);
                if set_name(&mut h) {
                    h.set_cksum();
                    let _ = b.append(&h, &[][..]);
                }
            }
            3 | 4 => {
                let Some(target) = input.path(outside) else { break };
                let t = if kind & 7 == 3 { tar::EntryType::Symlink } else { tar::EntryType::Link };
                let mut h = header(t, 0o777, 0);
                if set_name(&mut h) && h.set_link_name(&target).is_ok() {
                    h.set_cksum();
                    let _ = b.append(&h, &[][..]);
                }
            }
            5 => {
                let mut h = header(tar::EntryType::Fifo, mode, 0);
                if set_name(&mut h) {
                    h.set_cksum();
                    let _ = b.append(&h, &[][..]);
                }
            }
            _ => {
                // A whiteout of a random word in a random directory.
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                if set_name(&mut h) {
                    h.set_cksum();
                    let _ = b.append(&h, &[][..]);
                }
            }
        }
    }
    b.into_inner().unwrap_or_default()
}

type Snapshot = Vec<(PathBuf, Vec<u8>, u32, u64)>;

/// Everything under `dir` except `skip`: path, content (or link target), mode, link count.
fn snapshot(dir: &Path, skip: &Path) -> Snapshot {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            let content = if md.is_file() {
                std::fs::read(&p).unwrap_or_default()
            } else if md.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, content, md.mode(), md.nlink()));
        }
    }
    out.sort();
    out
}

/// A private mount namespace with a tmpfs over /tmp (root only; otherwise nothing).
fn private_tmp() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::mount::{mount, MsFlags};
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .expect("make / private");
        mount(Some("tmpfs"), "/tmp", Some("tmpfs"), MsFlags::empty(), Some("size=512m"))
            .expect("tmpfs over /tmp");
        std::env::set_var("TMPDIR", "/tmp");
    });
}

fuzz_target!(|data: &[u8]| {
    private_tmp();
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let outside = top.join("outside");
    let root = top.join("n1/n2/n3/root");
    std::fs::create_dir_all(outside.join("dir")).expect("mkdir");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(outside.join("file"), b"host").expect("write");
    std::fs::write(outside.join("dir/a"), b"host a").expect("write");
    std::fs::write(outside.join("passwd"), b"host passwd").expect("write");
    std::os::unix::fs::symlink(&outside, root.join("esc")).expect("symlink");
    std::os::unix::fs::symlink("../../../../outside", root.join("up")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("file"), root.join("lnk")).expect("symlink");
    std::fs::create_dir(root.join("a")).expect("mkdir");
    std::fs::write(root.join("a/file"), b"image").expect("write");
    let before = snapshot(top, &root);

    let outside_str = outside.to_string_lossy().into_owned();
    let layer = build_layer(data, &outside_str);
    let r = Root::open(&root).expect("open root");
    let _ = apply_layer(&r, &layer[..], ApplyOptions::default());

    let after = snapshot(top, &root);
    assert_eq!(before, after, "something outside the rootfs changed");
});
