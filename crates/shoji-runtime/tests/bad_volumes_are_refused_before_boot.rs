//! Issue 13, volumes: a bad `-v`, `--mount`, `--tmpfs` or bundle mount is refused with its reason
//! before any VM boots, by `run` and by `create`, and leaves nothing behind: no sandbox
//! directory, no process, no mount (`/proc/self/mountinfo`).

use crate::common;
use common::{busybox_image, mounts_naming, processes_naming, text, TestEnv};

/// A directory of Shoji's own that a test names as a volume: the only entry allowed to stay in
/// the sandbox root.
const SOMEONE_ELSES: &str = "someone-else";

fn fails_with(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let out = env.cmd().args(args).output().expect("running shoji");
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "should fail: shoji {args:?}");
    for n in needles {
        assert!(err.contains(n), "shoji {args:?}: stderr lacks {n:?}: {err}");
    }
    let root = env.sandbox_root();
    let left: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "accel-probe" && n != SOMEONE_ELSES)
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        root.display()
    );
    let procs = processes_naming(&root);
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    let mounts = mounts_naming(env.dir.path());
    assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    assert!(!err.contains("guest console"), "a VM was booted: {err}");
}

#[test]
fn bad_volumes_are_refused_before_boot_and_leave_nothing() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let host = env.dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let h = host.display().to_string();
    // A directory of Shoji's own: another sandbox's files, or a container's state.
    let inside = env.sandbox_root().join(SOMEONE_ELSES);
    std::fs::create_dir_all(&inside).unwrap();
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec!["-v".into(), format!("{h}/missing:/data")],
            vec![
                "mount on /data",
                "host/missing cannot be used",
                "No such file",
            ],
        ),
        (
            vec!["-v".into(), "relative/dir:/data".into()],
            vec!["invalid -v", "is not absolute"],
        ),
        (
            vec!["-v".into(), format!("{h}:/proc/sys")],
            vec!["mount on /proc/sys", "/proc or /sys"],
        ),
        (
            vec![
                "--mount".into(),
                format!("type=bind,source={h},target=/sys"),
            ],
            vec!["mount on /sys", "/proc or /sys"],
        ),
        (
            vec!["--tmpfs".into(), "/proc".into()],
            vec!["mount on /proc", "/proc or /sys"],
        ),
        (
            vec!["-v".into(), format!("{}:/data", inside.display())],
            vec!["inside Shoji's sandbox and state directories"],
        ),
        (
            vec!["-v".into(), format!("{h}:/data:rshared")],
            vec!["propagation \"rshared\" is refused", "never reach the host"],
        ),
        (
            vec!["--mount".into(), "type=volume,source=x,target=/data".into()],
            vec!["invalid --mount", "type \"volume\" is not supported"],
        ),
        (
            vec!["--tmpfs".into(), "/t:size=lots".into()],
            vec!["invalid --tmpfs", "size \"lots\""],
        ),
    ];
    for (flags, needles) in &cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut run = vec!["run"];
        run.extend(&flags);
        run.extend([image.as_str(), "--", "true"]);
        fails_with(&env, &run, needles);
    }
    // `create` refuses the same way, before it makes the container's directory.
    let (flags, needles) = &cases[0];
    let mut create = vec!["create"];
    create.extend(flags.iter().map(String::as_str));
    create.extend([image.as_str(), "vol1", "--", "true"]);
    fails_with(&env, &create, needles);
    std::fs::remove_dir(&inside).unwrap();
}

#[test]
fn a_bundles_bind_of_a_missing_host_path_is_refused_before_boot() {
    let env = TestEnv::new();
    let b = common::bundle_with_mounts(
        env.dir.path(),
        serde_json::json!([
            {"destination": "/data", "type": "bind", "source": "/nonexistent/shoji-test", "options": ["rbind"]}
        ]),
    );
    for args in [
        vec!["run", "--bundle", &b],
        vec!["create", "--bundle", &b, "vol2"],
    ] {
        fails_with(
            &env,
            &args,
            &["mount on /data", "/nonexistent/shoji-test cannot be used"],
        );
    }
}
