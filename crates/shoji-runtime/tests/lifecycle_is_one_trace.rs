//! With tracing on, a container's whole life, `shoji create --trace` to `shoji delete`, is ONE
//! trace: one root `sandbox`, the boot as in `shoji run`, one span per control request in the
//! order they came, the agent's spans under the runtime's, and nothing orphaned. While the
//! sandbox lives the trace is already readable (its spans are exported as they end). Read
//! straight from the embedded store in the test's data directory.

use crate::common;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{busybox_image, text, TestEnv};
use shoji_trace::model::{SpanRecord, Trace};
use shoji_trace::store::{Store, SummaryFilter};

fn state(env: &TestEnv, id: &str) -> serde_json::Value {
    serde_json::from_slice(&env.ok(&["state", id]).stdout).expect("state is JSON")
}

/// Deletes `id` even if the test failed half-way, so that no VM outlives the test.
struct Cleanup<'a>(&'a TestEnv, &'a str);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["delete", "--force", self.1]).output();
    }
}

fn store(env: &TestEnv) -> Store {
    Store::open(&env.dir.path().join("data")).expect("opening the test's trace store")
}

/// The stored spans of `trace_id`, once every span named in `want` is among them (the store
/// is written by another process: poll, bounded).
fn trace_with(env: &TestEnv, trace_id: &str, want: &[&str]) -> Trace {
    let id: [u8; 16] = hex::decode(trace_id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .unwrap_or_else(|| panic!("{trace_id:?} is not a trace id"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let trace = store(env).trace(&id).expect("reading the store");
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|w| !trace.iter().flat_map(|t| &t.spans).any(|s| s.name() == *w))
            .collect();
        if missing.is_empty() {
            return trace.expect("a trace with every wanted span");
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} lacks {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn attr(s: &SpanRecord, key: &str) -> String {
    s.attr(key).unwrap_or_default()
}

#[test]
fn vm_create_to_delete_is_one_trace_readable_while_the_sandbox_lives() {
    let env = TestEnv::new();
    let id = "traced-1";
    let _cleanup = Cleanup(&env, id);
    let image = busybox_image().0.display().to_string();
    env.ok(&[
        "create",
        "--trace",
        &image,
        id,
        "--",
        "sh",
        "-c",
        "trap 'exit 42' TERM; while :; do sleep 1; done",
    ]);
    let trace_id = state(&env, id)["annotations"]["shoji.trace_id"]
        .as_str()
        .expect("shoji.trace_id annotation")
        .to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    env.ok(&["start", id]);

    // Mid-life: the boot and the requests so far are in the store, agent spans included; the
    // root is not (it ends at delete).
    let live = trace_with(
        &env,
        &trace_id,
        &[
            "vm.start",
            "guest.boot",
            "agent.boot",
            "kernel.boot",
            "clock.sync",
            "container.create",
            "container.start",
            "shoji.agent.v1.AgentService/StartContainer",
        ],
    );
    assert!(
        !live.spans.iter().any(|s| s.name() == "sandbox"),
        "the root arrived before delete"
    );
    let summaries = store(&env)
        .summaries(&SummaryFilter::default(), 10, 0)
        .expect("listing traces");
    assert_eq!(summaries.len(), 1, "one trace while the sandbox lives");
    assert!(!summaries[0].has_root);

    let out = env
        .cmd()
        .args(["exec", id, "--", "sh", "-c", "echo exec-out; exit 3"])
        .output()
        .expect("running shoji exec");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "exec-out\n");
    env.ok(&["kill", id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&env, id)["status"] != "stopped" {
        assert!(Instant::now() < deadline, "the init never stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    env.ok(&["delete", id]);
    env.assert_nothing_left();

    // `delete` returned: the whole trace is in the store, nothing waits to be polled for.
    let summaries = store(&env)
        .summaries(&SummaryFilter::default(), 10, 0)
        .expect("listing traces");
    assert_eq!(
        summaries.len(),
        1,
        "one trace for the sandbox's whole life: {summaries:?}"
    );
    assert_eq!(hex::encode(summaries[0].trace_id), trace_id);
    assert!(summaries[0].has_root);
    // One root, `sandbox`, no orphans; the root spans the whole life.
    let (trace, root) = one_rooted_tree(&env, &trace_id);
    let spans = &trace.spans;
    let tree = trace.tree();
    let by_id: HashMap<[u8; 8], &SpanRecord> = spans.iter().map(|s| (s.span_id, s)).collect();
    let root = &spans[root];
    for s in spans {
        for key in ["source", "sandbox_id"] {
            assert!(s.attr(key).is_some(), "span {} lacks {key}", s.name());
        }
        assert_eq!(attr(s, "sandbox_id"), id, "span {}", s.name());
    }
    assert_eq!(root.service, "shoji-runtime");
    assert_eq!(attr(root, "source"), "runtime");
    assert_eq!(attr(root, "container_id"), id);
    assert_eq!(attr(root, "container.id"), id);
    assert_eq!(attr(root, "process.exit_code"), "42");
    assert!(root.attr("shoji.clock_offset_ns").is_some());
    assert_eq!(attr(root, "shoji.dropped_spans"), "0");

    // Agent spans are there, each under a runtime span or another agent span, and the agent's
    // server spans are children of the runtime's client spans for the same call.
    let agent: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.service == "shoji-agent")
        .collect();
    assert!(agent.len() >= 10, "only {} agent spans", agent.len());
    for s in &agent {
        assert_eq!(attr(s, "source"), "agent", "{}", s.name());
        let p = by_id[&s.parent_id.expect("agent spans have a parent")];
        if s.name().starts_with("shoji.agent.v1.AgentService/") {
            assert_eq!(
                p.name(),
                s.name(),
                "server span's parent is the client span"
            );
            assert_eq!(p.service, "shoji-runtime");
        }
        // Clock correction holds over the sandbox's life, not just after boot: with the guest
        // on its TSC (tsc=reliable), the offset measured once stays right (before, the guest ran
        // on jiffies and fell behind under load, tens of ms within seconds).
        if p.service == "shoji-runtime" {
            assert!(
                s.start_ns >= p.start_ns && s.end_ns <= p.end_ns,
                "{} [{}, {}] lies outside its runtime parent {} [{}, {}]",
                s.name(),
                s.start_ns,
                s.end_ns,
                p.name(),
                p.start_ns,
                p.end_ns
            );
        }
    }

    // The root's children: the boot as in `shoji run`, then one span per request, in order.
    let children: Vec<&SpanRecord> = tree.children[tree.roots[0]]
        .iter()
        .map(|&i| &spans[i])
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name()).collect();
    for name in ["image.unpack", "vm.start", "clock.sync", "container.wait"] {
        assert!(names.contains(&name), "no {name} under the root: {names:?}");
    }
    let requests: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            [
                "container.create",
                "container.start",
                "container.exec",
                "container.kill",
                "container.delete",
            ]
            .contains(n)
        })
        .collect();
    assert_eq!(
        requests,
        [
            "container.create",
            "container.start",
            "container.exec",
            "container.kill",
            "container.delete"
        ],
        "one span per request, in start order"
    );
    let child = |name: &str| {
        *children
            .iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let under = |parent: &SpanRecord| -> Vec<&str> {
        spans
            .iter()
            .filter(|s| s.parent_id == Some(parent.span_id))
            .map(|s| s.name())
            .collect()
    };
    // The agent's boot spans hang under guest.boot, as in `shoji run`.
    let boot = spans
        .iter()
        .find(|s| s.name() == "guest.boot")
        .expect("guest.boot");
    assert!(under(boot).contains(&"agent.boot"), "{:?}", under(boot));
    let exec = child("container.exec");
    assert_eq!(attr(exec, "process.exit_code"), "3");
    assert_eq!(attr(exec, "process.command"), "sh");
    for call in ["ExecProcess", "WaitProcess"] {
        let name = format!("shoji.agent.v1.AgentService/{call}");
        let client = spans
            .iter()
            .find(|s| s.parent_id == Some(exec.span_id) && s.name() == name)
            .unwrap_or_else(|| panic!("no {name} client span under container.exec"));
        assert!(
            under(client).contains(&name.as_str()),
            "no agent {name} server span"
        );
    }
    assert_eq!(attr(child("container.kill"), "signal"), "15");
    assert!(under(child("container.kill")).contains(&"shoji.agent.v1.AgentService/SignalProcess"));
    assert_eq!(attr(child("container.wait"), "process.exit_code"), "42");
    let delete = under(child("container.delete"));
    for name in ["vm.stop", "sandbox.cleanup"] {
        assert!(delete.contains(&name), "no {name} under container.delete");
    }
    let stop = spans
        .iter()
        .find(|s| s.name() == "vm.stop")
        .expect("vm.stop");
    assert!(under(stop).contains(&"shoji.agent.v1.AgentService/Shutdown"));
    // `state` is polled: it makes no spans.
    assert!(!spans.iter().any(|s| s.name().contains("state")));
}

/// Whether `pid` still runs as the process that started at `start_time` (clock ticks since
/// boot, `/proc/<pid>/stat` field 22); a zombie does not run.
fn runs(pid: u64, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let rest = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[0] != "Z" && fields[0] != "X" && fields[19].parse::<u64>().ok() == Some(start_time)
}

/// The one span of `trace` without a parent, which must be the root `sandbox`.
fn the_root(trace: &Trace) -> &SpanRecord {
    let roots: Vec<&SpanRecord> = trace
        .spans
        .iter()
        .filter(|s| s.parent_id.is_none())
        .collect();
    assert_eq!(
        roots.iter().map(|s| s.name()).collect::<Vec<_>>(),
        ["sandbox"],
        "one root"
    );
    roots[0]
}

/// The trace of `trace_id` once its root has arrived: one root, `sandbox`, every parent
/// present, every span within the root's time. Returns the trace and the root's index.
fn one_rooted_tree(env: &TestEnv, trace_id: &str) -> (Trace, usize) {
    let trace = trace_with(env, trace_id, &["sandbox"]);
    let root = the_root(&trace);
    let by_id: HashMap<[u8; 8], &SpanRecord> = trace.spans.iter().map(|s| (s.span_id, s)).collect();
    for s in &trace.spans {
        if let Some(p) = s.parent_id {
            assert!(
                by_id.contains_key(&p),
                "orphan span {} (parent {})",
                s.name(),
                hex::encode(p)
            );
        }
        assert!(s.start_ns >= root.start_ns, "{} before the root", s.name());
        assert!(s.end_ns <= root.end_ns, "{} after the root", s.name());
    }
    let tree = trace.tree();
    assert_eq!(tree.roots.len(), 1);
    let index = tree.roots[0];
    (trace, index)
}

/// Regression: the root `sandbox` only ever came from the sandbox process, so a SIGKILLed one
/// left its trace without a root. Now QEMU and the helpers die with it (parent-death signal),
/// `state` says stopped, `delete` (no --force: the container is stopped) removes the rest, and
/// ends the root in its place: the recorded id and start, status error, the identity of the
/// normal root, one rooted tree.
#[test]
fn vm_a_killed_sandbox_process_leaves_nothing_and_delete_ends_its_root() {
    let env = TestEnv::new();
    let id = "killed-1";
    let _cleanup = Cleanup(&env, id);
    let image = busybox_image().0.display().to_string();
    env.ok(&["create", "--trace", &image, id, "--", "sleep", "1000"]);
    env.ok(&["start", id]);
    let st = state(&env, id);
    let trace_id = st["annotations"]["shoji.trace_id"]
        .as_str()
        .expect("shoji.trace_id annotation")
        .to_string();
    let root_span_id = st["annotations"]["shoji.root_span_id"]
        .as_str()
        .expect("shoji.root_span_id annotation")
        .to_string();
    let pid = st["pid"].as_u64().expect("pid");
    // What the sandbox process started, as it recorded them for cleanup.
    let dir = env.sandbox_root().join(id);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let children: Vec<(String, u64, u64)> = file["processes"]
        .as_array()
        .expect("processes in state.json")
        .iter()
        .map(|p| {
            (
                p["what"].as_str().unwrap().to_string(),
                p["pid"].as_u64().unwrap(),
                p["startTime"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut names: Vec<&str> = children.iter().map(|c| c.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["qemu", "vhost-device-vsock", "virtiofsd"]);
    for (what, p, start) in &children {
        assert!(runs(*p, *start), "{what} is not running before the kill");
    }
    assert!(!common::processes_naming(&dir).is_empty());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Nobody cleans up yet: they go by themselves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<&str> = children
            .iter()
            .filter(|(_, p, start)| runs(*p, *start))
            .map(|c| c.0.as_str())
            .collect();
        let named = common::processes_naming(&dir);
        if running.is_empty() && named.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after the sandbox process was killed: {running:?} {named:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let st = state(&env, id);
    assert_eq!(st["status"], "stopped", "{st}");
    assert!(st.get("pid").is_none(), "{st}");
    let error = st["annotations"]["shoji.error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("sandbox process"), "{st}");
    let list: serde_json::Value =
        serde_json::from_slice(&env.ok(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["status"], "stopped");
    // Until `delete`, the trace has no root.
    let summaries = store(&env)
        .summaries(&SummaryFilter::default(), 10, 0)
        .expect("listing traces");
    assert_eq!(summaries.len(), 1);
    assert!(!summaries[0].has_root);

    env.ok(&["delete", id]);
    env.assert_nothing_left();

    let (trace, root) = one_rooted_tree(&env, &trace_id);
    let root = &trace.spans[root];
    assert_eq!(hex::encode(root.span_id), root_span_id);
    let accel = st["annotations"]["shoji.accel"]
        .as_str()
        .expect("shoji.accel");
    let status = root.span.status.clone().expect("a status");
    assert_eq!(status.code, 2, "status error: {status:?}");
    assert!(
        status
            .message
            .contains("sandbox process exited unexpectedly"),
        "{status:?}"
    );
    assert_eq!(root.service, "shoji-runtime");
    for (key, want) in [
        ("source", "runtime"),
        ("package", "shoji_cli"),
        ("subsystem", "runtime"),
        ("sandbox_id", id),
        ("container_id", id),
        ("container.id", id),
        ("vm.accel", accel),
        ("shoji.root_ended_by", "shoji delete"),
    ] {
        assert_eq!(attr(root, key), want, "root's {key}");
    }
    assert!(root.attr("shoji.clock_offset_ns").is_some());
    // What was exported before the kill hangs under it: the boot, the create, the start, and
    // the agent's spans under the runtime's.
    let children: Vec<&str> = trace
        .spans
        .iter()
        .filter(|s| s.parent_id == Some(root.span_id))
        .map(|s| s.name())
        .collect();
    for name in [
        "image.unpack",
        "vm.start",
        "container.create",
        "container.start",
    ] {
        assert!(
            children.contains(&name),
            "no {name} under the root: {children:?}"
        );
    }
    assert!(trace.spans.iter().any(|s| s.service == "shoji-agent"));
    let summaries = store(&env)
        .summaries(&SummaryFilter::default(), 10, 0)
        .expect("listing traces");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(summaries[0].has_root);
}

/// A `create` interrupted while the VM boots kills its sandbox process, which cannot end its
/// root: `create` ends it in its place, with why, and leaves nothing. Spans still open at the
/// kill are lost (here `vm.start`, which lasts as long as the boot), so the spans that ended
/// under them stay without a parent; the root is still the only span without one.
#[test]
fn vm_an_interrupted_traced_create_ends_its_root_and_leaves_nothing() {
    let (_t, env) = common::env_that_never_boots();
    let id = "halfway";
    let image = busybox_image().0.display().to_string();
    let mut ids = None;
    common::interrupt_create_while_booting(&env, &["--trace", &image], id, || {
        let st = state(&env, id);
        assert_eq!(st["status"], "creating");
        let note = |key: &str| {
            st["annotations"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} while creating: {st}"))
                .to_string()
        };
        let trace_id = note("shoji.trace_id");
        // QEMU's launch is exported; the root is not.
        trace_with(&env, &trace_id, &["image.unpack", "qemu.launch"]);
        ids = Some((trace_id, note("shoji.root_span_id")));
    });
    env.assert_nothing_left();
    let (trace_id, root_span_id) = ids.expect("the ids, read while creating");

    let trace = trace_with(&env, &trace_id, &["sandbox"]);
    let root = the_root(&trace);
    assert_eq!(hex::encode(root.span_id), root_span_id);
    let status = root.span.status.clone().expect("a status");
    assert_eq!(status.code, 2, "{status:?}");
    assert!(
        status.message.contains("interrupted (SIGINT)"),
        "{status:?}"
    );
    assert_eq!(attr(root, "shoji.root_ended_by"), "shoji create");
    assert_eq!(attr(root, "sandbox_id"), id);
    let unpack = trace
        .spans
        .iter()
        .find(|s| s.name() == "image.unpack")
        .expect("image.unpack");
    assert_eq!(unpack.parent_id, Some(root.span_id));
    for s in &trace.spans {
        assert!(s.start_ns >= root.start_ns, "{} before the root", s.name());
    }
}
