//! The image store unpacks each layer once, with OCI whiteouts turned into overlayfs ones, and
//! every overlay made on its layers has writes of its own: never seen by another overlay nor
//! by the store (ADR 018). Needs root: whiteouts are device nodes, overlays are mounts.

use crate::common;

use std::path::{Path, PathBuf};

use common::{layer, oci_layout, Opts, E};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use shoji_images::store::Store;
use shoji_images::Image;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the image store's tests need root (overlay mounts, whiteout device nodes)"
    );
}

/// A base layer, and a second one that deletes `/etc/a`, makes `/home` opaque (hiding
/// `/home/old`) and adds `/home/new`.
fn image_with_whiteouts(dir: &Path) -> PathBuf {
    let base = layer(&[
        E::Dir("etc"),
        E::File("etc/a", b"a from layer 1\n"),
        E::File("etc/b", b"b from layer 1\n"),
        E::Dir("home"),
        E::File("home/old", b"old\n"),
        E::Dir("keep"),
        E::File("keep/x", b"x\n"),
    ]);
    let top = layer(&[
        E::File("./etc/.wh.a", b""),
        E::Dir("home"),
        E::File("home/.wh..wh..opq", b""),
        E::File("home/new", b"new in layer 2\n"),
    ]);
    oci_layout(&dir.join("img"), &[base, top], Opts::default())
}

/// An overlay of `lower` (lowest first) with its own upper layer, unmounted when dropped.
struct Overlay {
    merged: PathBuf,
    upper: PathBuf,
}

impl Overlay {
    fn mount(dir: &Path, name: &str, lower: &[PathBuf]) -> Self {
        let (merged, upper, work) = (
            dir.join(name).join("merged"),
            dir.join(name).join("upper"),
            dir.join(name).join("work"),
        );
        for d in [&merged, &upper, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        let lowers: Vec<String> = lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .unwrap();
        Self { merged, upper }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn whiteouts_hide_lower_files_and_each_overlay_keeps_its_writes() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let img_dir = image_with_whiteouts(t.path());
    let store = Store::open(&t.path().join("store")).unwrap();
    let img = Image::open(&img_dir, &t.path().join("scratch")).unwrap();

    let first = store.prepare(&img).unwrap();
    assert_eq!(first.unpacked, 2, "both layers unpacked on first use");
    // The second layer holds overlayfs markers, not the OCI names.
    let top = &first.layers[1];
    assert!(!top.join("etc/.wh.a").exists());
    let wh = std::fs::symlink_metadata(top.join("etc/a")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr(&top.join("home"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );

    let again = store.prepare(&img).unwrap();
    assert_eq!(again.unpacked, 0, "a stored layer is not unpacked again");
    assert_eq!(again.layers, first.layers);

    let a = Overlay::mount(t.path(), "a", &first.layers);
    let b = Overlay::mount(t.path(), "b", &again.layers);
    for o in [&a, &b] {
        assert!(!o.merged.join("etc/a").exists(), "etc/a whited out");
        assert_eq!(read(&o.merged.join("etc/b")), "b from layer 1\n");
        assert!(!o.merged.join("home/old").exists(), "home made opaque");
        assert_eq!(read(&o.merged.join("home/new")), "new in layer 2\n");
        assert_eq!(read(&o.merged.join("keep/x")), "x\n");
    }

    // Writes in one container: a changed file, a new one, a removed one.
    std::fs::write(a.merged.join("etc/b"), "changed in a\n").unwrap();
    std::fs::write(a.merged.join("created-in-a"), "a\n").unwrap();
    std::fs::remove_file(a.merged.join("keep/x")).unwrap();
    assert_eq!(read(&a.merged.join("etc/b")), "changed in a\n");
    assert!(
        a.upper.join("created-in-a").exists(),
        "writes land in a's upper layer"
    );

    assert_eq!(read(&b.merged.join("etc/b")), "b from layer 1\n");
    assert!(!b.merged.join("created-in-a").exists());
    assert_eq!(read(&b.merged.join("keep/x")), "x\n");
    assert_eq!(read(&first.layers[0].join("etc/b")), "b from layer 1\n");
    assert_eq!(read(&first.layers[0].join("keep/x")), "x\n");
    assert!(!first.layers[1].join("created-in-a").exists());
    assert!(!first.layers[0].join("created-in-a").exists());
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(p, name, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
fn a_corrupted_layer_is_refused_and_nothing_is_stored() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let good = layer(&[E::File("ok", b"fine\n")]);
    let bad = layer(&[E::File("payload", b"not what the configuration promised\n")]);
    let img_dir = oci_layout(
        &t.path().join("img"),
        &[good.clone(), bad],
        Opts {
            diff_ids: Some(vec![common::sha(&good), common::sha(b"something else")]),
            ..Opts::default()
        },
    );
    let store = Store::open(&t.path().join("store")).unwrap();
    let img = Image::open(&img_dir, &t.path().join("scratch")).unwrap();
    let err = store.prepare(&img).unwrap_err();
    let chain = common::chain(&err);
    assert!(chain.contains("tampered with or corrupted"), "{chain}");
    let names = |d: &str| -> Vec<String> {
        std::fs::read_dir(t.path().join("store").join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // The good layer is stored (it was verified); the bad one nowhere, not even in tmp/.
    assert_eq!(
        names("layers"),
        vec![format!("sha256-{}", &common::sha(&good)[7..])]
    );
    assert!(names("tmp").is_empty(), "{:?}", names("tmp"));
    assert!(names("images").is_empty());
}

#[test]
fn concurrent_first_uses_unpack_each_layer_once() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..400)
        .map(|i| (format!("f{i}"), vec![b'x'; 8192]))
        .collect();
    let entries: Vec<E> = files.iter().map(|(n, d)| E::File(n, d)).collect();
    let l1 = layer(&entries);
    let l2 = layer(&[E::File("top", b"top\n")]);
    let img_dir = oci_layout(&t.path().join("img"), &[l1, l2], Opts::default());
    let root = t.path().join("store");
    let unpacked: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (root, img_dir, scratch) =
                    (&root, &img_dir, t.path().join(format!("scratch{i}")));
                s.spawn(move || {
                    let store = Store::open(root).unwrap();
                    let img = Image::open(img_dir, &scratch).unwrap();
                    let p = store.prepare(&img).unwrap();
                    assert_eq!(std::fs::read(p.layers[0].join("f399")).unwrap().len(), 8192);
                    p.unpacked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(
        unpacked, 2,
        "two layers, each unpacked by exactly one of four users"
    );
}

#[test]
fn in_use_layers_are_not_removed_and_prune_clears_the_rest() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let shared = layer(&[E::File("shared", b"s\n")]);
    let one = oci_layout(
        &t.path().join("one"),
        &[shared.clone(), layer(&[E::File("one", b"1\n")])],
        Opts::default(),
    );
    let two = oci_layout(
        &t.path().join("two"),
        &[shared, layer(&[E::File("two", b"2\n")])],
        Opts::default(),
    );
    let store = Store::open(&t.path().join("store")).unwrap();
    let img1 = Image::open(&one, &t.path().join("s")).unwrap();
    let img2 = Image::open(&two, &t.path().join("s")).unwrap();
    let running = store.prepare(&img1).unwrap();
    drop(store.prepare(&img2).unwrap());
    assert_eq!(store.layers().unwrap().len(), 3);

    let id1 = img1.config_digest().hex()[..12].to_string();
    let err = store.remove_image(&id1).unwrap_err();
    assert!(
        err.to_string().contains("is in use") && err.to_string().contains("nothing was removed"),
        "{err}"
    );
    assert_eq!(
        store.images().unwrap().len(),
        2,
        "a refused rm removes nothing"
    );

    // Image two: its own layer goes, the shared one stays for image one.
    let r = store.remove_image(two.to_str().unwrap()).unwrap();
    assert_eq!((r.images, r.layers), (1, 1));
    assert_eq!(store.layers().unwrap().len(), 2);

    let r = store.prune(true).unwrap();
    assert_eq!((r.images, r.layers, r.kept_in_use), (0, 0, 1));
    drop(running);
    let r = store.prune(true).unwrap();
    assert_eq!((r.images, r.layers), (1, 2));
    assert!(store.layers().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
}
