//! ENOSPC during an unpack names the file and says the device is full (issue 10: "ENOSPC shown
//! when an unpack fails"). The root is a 256 KiB tmpfs mounted in a mount namespace of this
//! test's own thread, so nothing is left mounted whatever happens. Needs root (CI runs as root).

use crate::common;

use common::{layer, Host, E};

#[test]
fn an_unpack_that_fills_the_disk_names_the_file() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a small tmpfs and must run as root"
    );
    let h = Host::new();
    let img = common::oci_layout(
        &h.image(),
        &[layer(&[
            E::File("small", b"fits"),
            E::File("usr/lib/big", &vec![7u8; 1 << 20]),
        ])],
        Default::default(),
    );
    let root = h.root();
    std::fs::create_dir(&root).unwrap();
    let scratch = h.scratch();
    // A new thread: the mount namespace goes away with it.
    let msg = std::thread::spawn(move || {
        use nix::mount::{mount, MsFlags};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=256k"),
        )
        .expect("mount a small tmpfs");
        let e = shoji_images::unpack(&img, &scratch, &root).unwrap_err();
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    })
    .join()
    .unwrap();
    assert!(msg.contains("no space left on device"), "{msg}");
    assert!(msg.contains("/usr/lib/big"), "{msg}");
}
