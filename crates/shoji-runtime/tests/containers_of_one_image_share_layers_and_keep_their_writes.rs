//! Two runs of one image use the same stored layers (unpacked once), and what the first
//! container writes (a changed file, a new one, a removed one) is neither in the store nor
//! seen by the second (ADR 018).

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{busybox_image, text, TestEnv};

fn layer_dirs(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store.join("layers"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn vm_a_containers_writes_stay_in_its_own_layer() {
    let env = TestEnv::new();
    let img = busybox_image().0.display().to_string();
    let store = env.dir.path().join("data/images");

    let first = env.run(&[
        "run",
        "--rm",
        &img,
        "--",
        "sh",
        "-c",
        "echo changed > /etc/passwd && echo one > /made-by-one && rm /etc/group && \
         cat /etc/passwd /made-by-one",
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout), "changed\none\n");
    let layers = layer_dirs(&store);
    assert_eq!(layers.len(), 1, "busybox's one layer is stored");
    let fs = layers[0].join("fs");
    let passwd = std::fs::read_to_string(fs.join("etc/passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:"),
        "the store is unchanged: {passwd}"
    );
    assert!(fs.join("etc/group").is_file());
    assert!(!fs.join("made-by-one").exists());
    let inode = std::fs::metadata(&layers[0]).unwrap().ino();

    let second = env.run(&[
        "run",
        "--rm",
        &img,
        "--",
        "sh",
        "-c",
        "head -c 11 /etc/passwd; echo; test -e /made-by-one && echo leaked; \
         test -f /etc/group && echo group-present",
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), "root:x:0:0:\ngroup-present\n");
    let again = layer_dirs(&store);
    assert_eq!(again, layers, "no new layer");
    assert_eq!(
        std::fs::metadata(&again[0]).unwrap().ino(),
        inode,
        "the layer was not unpacked again"
    );
    let ls = env.ok(&["image", "ls"]);
    assert!(text(&ls.stdout).contains(&img), "{}", text(&ls.stdout));
}
