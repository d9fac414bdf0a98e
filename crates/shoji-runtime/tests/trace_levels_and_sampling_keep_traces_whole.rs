//! `[tracing]` levels and head sampling on real traced runs, read back from the embedded store:
//! a level leaves spans out without orphaning any (a span whose parent was left out hangs from
//! its nearest kept ancestor, on the host and in the guest), `off` sends nothing from that
//! source, and the sampling decision at the root holds for the whole sandbox, host and guest.

use crate::common;
use std::collections::HashSet;

use common::{busybox_image, stored_spans, text, StoredSpan as S, TestEnv};

/// A traced `shoji run` of `echo hi` under `env`, with `vars` in its environment.
fn traced_run(env: &TestEnv, vars: &[(&str, &str)]) -> String {
    let image = busybox_image().0.display().to_string();
    let out = env
        .cmd()
        .args(["run", "--rm", "--trace", &image, "--", "echo", "hi"])
        .envs(vars.iter().copied())
        .output()
        .expect("running shoji");
    env.assert_nothing_left();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    text(&out.stderr)
}

/// One trace, one root `run`, every parent present; returns the root.
fn assert_whole(spans: &[S]) -> &S {
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace: {traces:?}");
    let ids: HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    for s in spans {
        assert!(
            s.parent.is_empty() || ids.contains(s.parent.as_str()),
            "orphan: {} ({}) names parent {} that is not in the trace",
            s.name,
            s.service,
            s.parent
        );
    }
    let roots: Vec<&S> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(
        roots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["run"],
        "one root"
    );
    roots[0]
}

fn names(spans: &[S]) -> HashSet<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn parent_name<'a>(spans: &'a [S], name: &str) -> &'a str {
    let s = spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span"));
    spans
        .iter()
        .find(|p| p.id == s.parent)
        .map_or("", |p| p.name.as_str())
}

fn count(root: &S, key: &str) -> u64 {
    root.attrs
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the root has no {key}: {:?}", root.attrs))
}

#[test]
fn vm_level_boot_exports_only_boot_spans_without_orphans() {
    let env = TestEnv::with_config(
        "[tracing]\nruntime = \"boot\"\nhypervisor = \"boot\"\nagent = \"boot\"\n",
    );
    traced_run(&env, &[]);
    let spans = stored_spans(&env);
    let root = assert_whole(&spans);
    let boot: HashSet<&str> = [
        "run",
        "vm.start",
        "helper.start",
        "qemu.launch",
        "guest.boot",
        "vm.firmware",
        "clock.sync",
        "agent.boot",
        "kernel.boot",
        "agent.setup",
        "modules.load",
        "agent.start",
    ]
    .into();
    assert_eq!(names(&spans), boot, "exactly the boot spans");
    // The agent's boot spans still hang from the runtime's `guest.boot`, across the VM.
    assert_eq!(parent_name(&spans, "agent.boot"), "guest.boot");
    assert_eq!(parent_name(&spans, "kernel.boot"), "agent.boot");
    // What the levels left out is counted on the root, per side: on the host at least the
    // container spans and the RPC client spans, in the guest at least the server spans.
    assert!(
        count(root, "shoji.level_dropped_spans") >= 6,
        "{:?}",
        root.attrs
    );
    assert!(
        count(root, "shoji.agent_level_dropped_spans") >= 4,
        "{:?}",
        root.attrs
    );
}

#[test]
fn vm_agent_off_under_a_runtime_at_debug_is_whole_with_no_agent_span() {
    let env = TestEnv::with_config("[tracing]\nagent = \"off\"\n");
    traced_run(&env, &[]);
    let spans = stored_spans(&env);
    let root = assert_whole(&spans);
    let agent: Vec<&str> = spans
        .iter()
        .filter(|s| {
            s.service == "shoji-agent" || s.attrs.get("source").is_some_and(|v| v == "agent")
        })
        .map(|s| s.name.as_str())
        .collect();
    assert!(agent.is_empty(), "agent spans: {agent:?}");
    // The runtime's side is all there: boot, lifecycle, its RPC client spans and the pings.
    for name in [
        "vm.start",
        "guest.boot",
        "container.create",
        "vm.stop",
        "shoji.agent.v1.AgentService/CreateContainer",
        "shoji.agent.v1.AgentService/Ping",
    ] {
        assert!(names(&spans).contains(name), "no {name}");
    }
    assert_eq!(count(root, "shoji.level_dropped_spans"), 0);
}

#[test]
fn vm_sampling_ratio_zero_exports_nothing_and_ratio_one_everything() {
    // Ratio 0 from the configuration: no span from the host or the guest reaches the store.
    let env = TestEnv::with_config("[tracing]\nsample_ratio = 0.0\n");
    let stderr = traced_run(&env, &[("SHOJI_LOG", "info")]);
    assert!(
        stderr.contains("trace not sampled: nothing of this sandbox is exported"),
        "{stderr}"
    );
    let spans = stored_spans(&env);
    assert!(
        spans.is_empty(),
        "sampled out, yet stored: {:?}",
        names(&spans)
    );

    // Ratio 1 from the standard variables: the whole trace, host and guest.
    let env = TestEnv::new();
    traced_run(
        &env,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1"),
        ],
    );
    let spans = stored_spans(&env);
    assert_whole(&spans);
    let sources: HashSet<&str> = spans
        .iter()
        .filter_map(|s| s.attrs.get("source").map(String::as_str))
        .collect();
    assert_eq!(sources, ["runtime", "hypervisor", "agent"].into());
    for name in ["agent.boot", "container.create", "process.wait", "vm.stop"] {
        assert!(names(&spans).contains(name), "no {name}");
    }
}
