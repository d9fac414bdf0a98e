//! `PATH:TAG` picks the `index.json` entry whose `org.opencontainers.image.ref.name` is TAG (as
//! `skopeo copy ... oci:DIR:TAG` names them); an absent tag is refused listing the tags
//! present; a path that exists is taken whole, `:` included (ADR 021). No VM is booted.

use crate::common;

use common::{busybox_image, text, TestEnv};

#[test]
fn a_tag_after_the_path_picks_its_entry_and_a_missing_one_lists_the_tags() {
    let env = TestEnv::new();
    let layout = busybox_image().0.display().to_string();
    let out = env.ok(&["image", "load", &format!("{layout}:busybox:latest")]);
    assert!(
        text(&out.stdout).contains("1 layers"),
        "{}",
        text(&out.stdout)
    );

    let out = env
        .cmd()
        .args(["image", "load", &format!("{layout}:nope")])
        .output()
        .expect("running shoji");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"no image tagged "nope""#) && err.contains("tags present: busybox:latest"),
        "{err}"
    );

    // A directory whose own name has a `:` is a path, not a tag.
    let colon = env.dir.path().join("busybox:v1");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&layout)
        .arg(&colon)
        .status()
        .expect("cp");
    assert!(st.success());
    env.ok(&["image", "load", colon.to_str().expect("utf-8 path")]);
}
