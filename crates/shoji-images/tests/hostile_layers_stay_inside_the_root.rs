//! Layers written by an attacker: whiteouts, symlinks and hard links must act inside the root
//! and nowhere else (issue 10, items 1 and 2), and the OCI layer rules must hold.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{chain, layer, snapshot, Host, E};

#[test]
fn whiteout_through_a_symlink_leaves_host_files_alone() {
    let h = Host::new();
    let before = snapshot(&h.outside());
    let abs = h.outside().display().to_string();
    let rel = format!("../../../../../../../..{abs}");
    let l1 = layer(&[
        E::Symlink("esc", &abs),
        E::Symlink("rel", &rel),
        E::File("file", b"image file"),
    ]);
    let l2 = layer(&[
        E::File("esc/.wh.file", b""),
        E::File("esc/.wh.dir", b""),
        E::File("rel/.wh.file", b""),
    ]);
    h.unpack(&[l1, l2]).unwrap();
    assert_eq!(snapshot(&h.outside()), before, "host files changed");
    // `rel` resolves inside the root, to the root's own /<abs>, which does not exist; the
    // image's own /file is untouched by whiteouts aimed elsewhere.
    assert_eq!(std::fs::read(h.root().join("file")).unwrap(), b"image file");
    assert!(std::fs::symlink_metadata(h.root().join("esc"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn opaque_whiteout_through_a_symlink_leaves_host_directories_alone() {
    let h = Host::new();
    let before = snapshot(&h.outside());
    let abs = h.outside().join("dir").display().to_string();
    // Every escape aims at the test's own `outside/` directory: were the unpacker broken, it
    // must not be able to damage anything else on the host.
    let l1 = layer(&[E::Symlink("esc", &abs), E::Symlink("up", "../outside")]);
    let l2 = layer(&[E::File("esc/.wh..wh..opq", b"")]);
    let l3 = layer(&[E::File("keep", b"k"), E::File("up/dir/.wh..wh..opq", b"")]);
    h.unpack(&[l1, l2, l3]).unwrap();
    assert_eq!(snapshot(&h.outside()), before, "host directory emptied");
    assert!(h.root().join("keep").is_file());
}

#[test]
fn dot_slash_whiteout_removes_that_file_only() {
    let h = Host::new();
    let l1 = layer(&[
        E::Dir("./"),
        E::Dir("./etc/"),
        E::File("./etc/motd", b"motd"),
        E::File("./etc/hostname", b"h"),
        E::File("./motd", b"top-level motd"),
    ]);
    let l2 = layer(&[E::File("./etc/.wh.motd", b"")]);
    h.unpack(&[l1, l2]).unwrap();
    let r = h.root();
    assert!(!r.join("etc/motd").exists());
    assert!(r.join("etc/hostname").is_file());
    assert_eq!(std::fs::read(r.join("motd")).unwrap(), b"top-level motd");
}

#[test]
fn dot_slash_opaque_whiteout_empties_that_directory_only() {
    let h = Host::new();
    let l1 = layer(&[
        E::File("./var/cache/a", b"a"),
        E::File("./var/cache/sub/b", b"b"),
        E::File("./var/log/c", b"c"),
        E::File("./bin/x", b"x"),
    ]);
    // The layer's own entries survive its opaque whiteout, whatever their order in the tar.
    let l2 = layer(&[
        E::File("./var/cache/before", b"1"),
        E::File("./var/cache/implicit/dir/f", b"3"),
        E::File("./var/cache/.wh..wh..opq", b""),
        E::File("./var/cache/after", b"2"),
    ]);
    h.unpack(&[l1, l2]).unwrap();
    let r = h.root();
    let mut names: Vec<String> = std::fs::read_dir(r.join("var/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "before", "implicit"]);
    assert!(r.join("var/cache/implicit/dir/f").is_file());
    assert!(r.join("var/log/c").is_file());
    assert!(r.join("bin/x").is_file());
}

#[test]
fn a_later_layer_replaces_a_symlink_with_a_directory() {
    let h = Host::new();
    let before = snapshot(&h.outside());
    let abs = h.outside().join("dir").display().to_string();
    let l1 = layer(&[E::Symlink("d", &abs), E::Symlink("f", &abs)]);
    let l2 = layer(&[
        E::Dir("d/"),
        E::File("d/new", b"n"),
        E::File("f", b"file now"),
    ]);
    h.unpack(&[l1, l2]).unwrap();
    assert_eq!(snapshot(&h.outside()), before);
    let md = std::fs::symlink_metadata(h.root().join("d")).unwrap();
    assert!(md.is_dir(), "d is still a symlink");
    assert_eq!(std::fs::read(h.root().join("d/new")).unwrap(), b"n");
    assert_eq!(std::fs::read(h.root().join("f")).unwrap(), b"file now");
}

#[test]
fn a_later_layer_replaces_a_file_or_directory_with_the_other() {
    let h = Host::new();
    let l1 = layer(&[E::File("a", b"file"), E::File("b/inner", b"i")]);
    let l2 = layer(&[
        E::Dir("a/"),
        E::File("a/x", b"x"),
        E::File("b", b"now a file"),
    ]);
    h.unpack(&[l1, l2]).unwrap();
    assert!(h.root().join("a/x").is_file());
    assert_eq!(std::fs::read(h.root().join("b")).unwrap(), b"now a file");
}

#[test]
fn symlinks_are_never_written_through() {
    let h = Host::new();
    let before = snapshot(&h.outside());
    let abs_file = h.outside().join("file").display().to_string();
    let abs_dir = h.outside().join("dir").display().to_string();
    // Same layer: the symlink first, then entries under and at its name.
    let l1 = layer(&[
        E::Symlink("s", &abs_file),
        E::File("s", b"replaced"),
        E::Symlink("t", &abs_dir),
        E::File("t/a", b"through?"),
    ]);
    let r = h.unpack(&[l1]);
    assert_eq!(
        snapshot(&h.outside()),
        before,
        "wrote through a symlink: {r:?}"
    );
    assert_eq!(std::fs::read(h.root().join("s")).unwrap(), b"replaced");
}

#[test]
fn hard_link_targets_resolve_inside_the_root() {
    let h = Host::new();
    let before = snapshot(&h.outside());
    let l1 = layer(&[
        E::File("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
        E::Hardlink("usr/x", "../../etc/passwd"),
        E::Hardlink("y", "/etc/passwd"),
    ]);
    h.unpack(&[l1]).unwrap();
    let r = h.root();
    assert_eq!(
        std::fs::read(r.join("usr/x")).unwrap(),
        b"root:x:0:0::/:/bin/sh\n"
    );
    assert_eq!(std::fs::metadata(r.join("etc/passwd")).unwrap().nlink(), 3);
    // A target on the host, named through `..` or an absolute symlink, is not there.
    let host = h.outside().join("file").display().to_string();
    let l2 = layer(&[
        E::Symlink("h", &h.outside().display().to_string()),
        E::Hardlink("z", "h/file"),
    ]);
    let e = h.unpack(&[layer(&[E::Hardlink("w", &format!("../../../../..{host}"))])]);
    let msg = chain(&e.unwrap_err());
    assert!(msg.contains("hard-link target"), "{msg}");
    let msg = chain(&h.unpack(&[l2]).unwrap_err());
    assert!(msg.contains("No such file"), "{msg}");
    assert_eq!(snapshot(&h.outside()), before);
    assert_eq!(
        std::fs::metadata(h.outside().join("file")).unwrap().nlink(),
        1
    );
}

#[test]
fn modes_setuid_and_extended_attributes_are_kept() {
    let h = Host::new();
    // struct vfs_cap_data, revision 2, effective, permitted = CAP_NET_BIND_SERVICE.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&[0; 12]);
    let l1 = layer(&[
        E::Mode("bin/su", b"#!", 0o4755),
        E::Mode("bin/wall", b"#!", 0o2755),
        E::Dir("tmp/"),
        E::Xattrs(
            "bin/ping",
            b"#!",
            0o755,
            &[
                ("user.shoji", b"1"),
                ("security.capability", &cap),
                ("trusted.overlay.opaque", b"y"),
            ],
        ),
    ]);
    h.unpack(&[l1]).unwrap();
    let r = h.root();
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/su"), 0o4755);
    assert_eq!(mode("bin/wall"), 0o2755);
    let get = |name: &str| {
        let mut buf = vec![0u8; 64];
        rustix::fs::getxattr(r.join("bin/ping"), name, &mut buf).map(|n| buf[..n].to_vec())
    };
    assert_eq!(get("user.shoji").unwrap(), b"1");
    if rustix::process::geteuid().is_root() {
        assert_eq!(get("security.capability").unwrap(), cap);
        assert!(
            get("trusted.overlay.opaque").is_err(),
            "trusted.* must be dropped"
        );
    }
}
