//! A two-layer image whose second layer has `./`-prefixed whiteouts (as `tar -C dir .` writes
//! them) runs in a VM, and the container sees the tree the OCI layer rules give (issue 10).

use crate::common;

use std::path::Path;

use common::{busybox_image, text, TestEnv};
use shoji_images::Digest;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn put(dir: &Path, data: &[u8]) -> (String, usize) {
    let d = Digest::sha256_of(data);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), data).unwrap();
    (d.to_string(), data.len())
}

/// The busybox image plus one layer: `/etc/group` whited out, `/home` made opaque with a new
/// file in it, and `/etc/motd` added.
fn image_with_whiteouts(dir: &Path) -> std::path::PathBuf {
    let base = &busybox_image().0;
    let out = dir.join("img");
    std::fs::create_dir_all(out.join("blobs/sha256")).unwrap();
    let blob = |d: &str| base.join("blobs/sha256").join(&d[7..]);
    let index = json(&base.join("index.json"));
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    let base_layer = manifest["layers"][0].clone();
    let base_blob = std::fs::read(blob(base_layer["digest"].as_str().unwrap())).unwrap();
    put(&out, &base_blob);

    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("./etc/.wh.group", &b""[..]),
        ("./home/.wh..wh..opq", b""),
        ("./home/new/f", b"hello from layer 2\n"),
        ("./etc/motd", b"motd\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let layer2 = b.into_inner().unwrap();
    let (l2d, l2s) = put(&out, &layer2);

    let mut config = config.clone();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::Value::String(l2d.clone()));
    let config = serde_json::to_vec(&config).unwrap();
    let (cd, cs) = put(&out, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [base_layer, {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l2d, "size": l2s}],
    }))
    .unwrap();
    let (md, ms) = put(&out, &manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    out
}

#[test]
fn vm_whiteouts_of_a_later_layer_show_in_the_container() {
    let env = TestEnv::new();
    let img = image_with_whiteouts(env.dir.path());
    let out = env.run(&[
        "run",
        "--rm",
        &img.display().to_string(),
        "--",
        "sh",
        "-c",
        "ls /etc; echo --; ls -A /home; echo --; cat /home/new/f",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let parts: Vec<&str> = stdout.split("--\n").collect();
    assert_eq!(parts.len(), 3, "{stdout}");
    let etc: Vec<&str> = parts[0].split_whitespace().collect();
    // `group` is whited out, `motd` added; hostname, hosts and resolv.conf are the agent's.
    assert_eq!(
        etc,
        ["hostname", "hosts", "motd", "passwd", "resolv.conf"],
        "{stdout}"
    );
    assert_eq!(parts[1].split_whitespace().collect::<Vec<_>>(), ["new"]);
    assert_eq!(parts[2], "hello from layer 2\n");
}
