//! An image archive whose blobs are symlinks to host files, or FIFOs, is refused, quickly and
//! without reading anything outside the archive (issue 10, item 4).

use crate::common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use common::{layer, sha, Host, Member, E};

/// Runs the unpack on a thread with a deadline: a FIFO that is opened blocks forever.
fn unpack_within(img: PathBuf, h: &Host) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let (scratch, root) = (h.scratch(), h.root());
    std::thread::spawn(move || {
        let r = shoji_images::unpack(&img, &scratch, &root).map(|_| ());
        let _ = tx.send(r.map_err(|e| {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            s
        }));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the unpack hung")
}

fn docker_archive(h: &Host, layer_member: Member) -> PathBuf {
    let config = common::config_json(&[sha(&host_layer())]);
    let cname = format!("{}.json", &sha(&config)[7..]);
    common::archive(
        &h.tmp.path().join("img.tar"),
        &[
            Member::File(
                "manifest.json",
                &common::docker_manifest(&cname, &["l/layer.tar"]),
            ),
            Member::File(&cname, &config),
            layer_member,
        ],
    )
}

/// A valid layer, stored on the host outside the archive: what a symlink member points at.
fn host_layer() -> Vec<u8> {
    layer(&[E::File("secret", b"host secret")])
}

#[test]
fn a_layer_member_that_is_a_symlink_to_a_host_file_is_refused() {
    let h = Host::new();
    let host_file = h.outside().join("layer.tar");
    std::fs::write(&host_file, host_layer()).unwrap();
    let target = host_file.display().to_string();
    let img = docker_archive(&h, Member::Symlink("l/layer.tar", &target));
    let e = unpack_within(img, &h).unwrap_err();
    assert!(
        e.contains("\"l/layer.tar\"") && e.contains("symlink"),
        "{e}"
    );
    assert!(
        !h.root().join("secret").exists(),
        "the host file was unpacked"
    );
}

#[test]
fn a_layer_member_that_is_a_fifo_is_refused_without_hanging() {
    let h = Host::new();
    let img = docker_archive(&h, Member::Fifo("l/layer.tar"));
    let e = unpack_within(img, &h).unwrap_err();
    assert!(e.contains("FIFO"), "{e}");
}

#[test]
fn a_manifest_member_that_is_a_symlink_is_refused() {
    let h = Host::new();
    std::fs::write(h.outside().join("m.json"), b"[]").unwrap();
    let target = h.outside().join("m.json").display().to_string();
    let img = common::archive(
        &h.tmp.path().join("img.tar"),
        &[Member::Symlink("manifest.json", &target)],
    );
    let e = unpack_within(img, &h).unwrap_err();
    assert!(e.contains("symlink"), "{e}");
}

#[test]
fn a_layout_directory_blob_that_is_a_fifo_or_leads_outside_is_refused() {
    let h = Host::new();
    let img = common::oci_layout(
        &h.image(),
        &[layer(&[E::File("a", b"a")])],
        Default::default(),
    );
    let blob = common::layer_blob(&img, 0);
    std::fs::remove_file(&blob).unwrap();
    nix::unistd::mkfifo(&blob, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = unpack_within(img.clone(), &h).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    // A symlink to a host copy of the blob resolves inside the layout directory: not found.
    std::fs::remove_file(&blob).unwrap();
    let host_copy = h.outside().join("blob");
    std::fs::write(&host_copy, layer(&[E::File("a", b"a")])).unwrap();
    std::os::unix::fs::symlink(&host_copy, &blob).unwrap();
    let e = unpack_within(img, &h).unwrap_err();
    assert!(e.contains("No such file"), "{e}");
}
