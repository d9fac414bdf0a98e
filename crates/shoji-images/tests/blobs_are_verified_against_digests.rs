//! Every blob is checked against its digest as it is read, and every layer against the
//! configuration's `rootfs.diff_ids` (issue 10, item 3); a mismatch names both digests.

use crate::common;

use common::{chain, layer, oci_layout, sha, Host, Opts, E};

#[test]
fn a_tampered_layer_is_refused_with_both_digests_named() {
    for gzip in [false, true] {
        let h = Host::new();
        let good = layer(&[E::File("bin/sh", b"real shell")]);
        let img = oci_layout(
            &h.image(),
            std::slice::from_ref(&good),
            Opts {
                gzip,
                diff_ids: None,
            },
        );
        let blob = common::layer_blob(&img, 0);
        let expected = format!("sha256:{}", blob.file_name().unwrap().to_string_lossy());
        let evil = layer(&[E::File("bin/sh", b"evil shell")]);
        let evil = if gzip { common::gzip(&evil) } else { evil };
        std::fs::write(&blob, &evil).unwrap();
        let e = shoji_images::unpack(&img, &h.scratch(), &h.root()).unwrap_err();
        let msg = chain(&e);
        assert!(msg.contains(&expected), "{msg}");
        assert!(msg.contains(&sha(&evil)), "{msg}");
        assert!(msg.contains("tampered"), "{msg}");
    }
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let h = Host::new();
    let l = layer(&[E::File("etc/motd", b"hi")]);
    let wrong = sha(b"some other layer");
    let img = oci_layout(
        &h.image(),
        std::slice::from_ref(&l),
        Opts {
            gzip: true,
            diff_ids: Some(vec![wrong.clone()]),
        },
    );
    let e = shoji_images::unpack(&img, &h.scratch(), &h.root()).unwrap_err();
    let msg = chain(&e);
    assert!(msg.contains("diff_ids"), "{msg}");
    assert!(msg.contains(&wrong), "{msg}");
    assert!(msg.contains(&sha(&l)), "{msg}");
}

#[test]
fn a_tampered_manifest_or_configuration_is_refused() {
    let h = Host::new();
    let img = oci_layout(&h.image(), &[layer(&[E::File("a", b"a")])], Opts::default());
    // Rewrite the configuration blob in place (a different Cmd): its digest no longer matches.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let cpath = img.join("blobs/sha256").join(&cd[7..]);
    let text = String::from_utf8(std::fs::read(&cpath).unwrap()).unwrap();
    std::fs::write(&cpath, text.replace("\"sh\"", "\"ls\"")).unwrap();
    let e = shoji_images::unpack(&img, &h.scratch(), &h.root()).unwrap_err();
    assert!(chain(&e).contains(&cd), "{}", chain(&e));
    // The manifest: one byte appended.
    let mpath = img.join("blobs/sha256").join(&md[7..]);
    let mut bytes = std::fs::read(&mpath).unwrap();
    bytes.push(b' ');
    std::fs::write(&mpath, bytes).unwrap();
    let e = shoji_images::unpack(&img, &h.scratch(), &h.root()).unwrap_err();
    assert!(chain(&e).contains(&md), "{}", chain(&e));
}

#[test]
fn a_docker_save_layer_that_does_not_match_its_diff_id_is_refused() {
    let h = Host::new();
    let l = layer(&[E::File("a", b"a")]);
    let config = common::config_json(&[sha(b"not this layer")]);
    let cd = sha(&config);
    let cname = format!("{}.json", &cd[7..]);
    let tar = common::archive(
        &h.tmp.path().join("img.tar"),
        &[
            common::Member::File(
                "manifest.json",
                &common::docker_manifest(&cname, &["l/layer.tar"]),
            ),
            common::Member::File(&cname, &config),
            common::Member::File("l/layer.tar", &l),
        ],
    );
    let e = shoji_images::unpack(&tar, &h.scratch(), &h.root()).unwrap_err();
    assert!(chain(&e).contains(&sha(&l)), "{}", chain(&e));
}

#[test]
fn good_images_unpack_from_every_format() {
    let h = Host::new();
    let l1 = layer(&[
        E::Dir("./"),
        E::File("./bin/sh", b"sh"),
        E::Symlink("./bin/ls", "sh"),
    ]);
    let l2 = layer(&[E::File("./etc/motd", b"hello")]);
    // OCI layout, gzip layers; then the same layout as a gzip-compressed OCI archive.
    let img = oci_layout(
        &h.image(),
        &[l1.clone(), l2.clone()],
        Opts {
            gzip: true,
            diff_ids: None,
        },
    );
    let cfg = shoji_images::unpack(&img, &h.scratch(), &h.root()).unwrap();
    assert_eq!(
        cfg.config().as_ref().unwrap().cmd().as_ref().unwrap(),
        &["sh"]
    );
    assert_eq!(std::fs::read(h.root().join("etc/motd")).unwrap(), b"hello");
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &img).unwrap();
    let oci_tar_gz = h.tmp.path().join("oci.tar.gz");
    std::fs::write(&oci_tar_gz, common::gzip(&b.into_inner().unwrap())).unwrap();
    let root2 = h.tmp.path().join("root2");
    shoji_images::unpack(&oci_tar_gz, &h.scratch(), &root2).unwrap();
    assert_eq!(
        std::fs::read_link(root2.join("bin/ls")).unwrap().to_str(),
        Some("sh")
    );
    // docker save (Docker 25 and later: blobs named by digest).
    let config = common::config_json(&[sha(&l1), sha(&l2)]);
    let (cd, d1, d2) = (sha(&config), sha(&l1), sha(&l2));
    let name = |d: &str| format!("blobs/sha256/{}", &d[7..]);
    let tar = common::archive(
        &h.tmp.path().join("docker.tar"),
        &[
            common::Member::File(
                "manifest.json",
                &common::docker_manifest(&name(&cd), &[&name(&d1), &name(&d2)]),
            ),
            common::Member::File(&name(&cd), &config),
            common::Member::File(&name(&d1), &l1),
            common::Member::File(&name(&d2), &l2),
        ],
    );
    let root3 = h.tmp.path().join("root3");
    shoji_images::unpack(&tar, &h.scratch(), &root3).unwrap();
    assert_eq!(std::fs::read(root3.join("bin/sh")).unwrap(), b"sh");
}
