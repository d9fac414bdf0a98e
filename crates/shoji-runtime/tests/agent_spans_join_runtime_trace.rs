//! With tracing on, one `shoji run` is ONE trace: runtime, hypervisor and agent spans, one root,
//! no orphans, agent server spans under the runtime's client spans, clock-corrected so no agent
//! span lies outside its runtime parent. Read back from the embedded store as OTLP JSON.

use crate::common;
use std::collections::HashMap;

use common::{busybox_image, text, TestEnv};
use serde_json::Value;

#[derive(Debug, Clone)]
struct S {
    id: String,
    parent: String,
    trace: String,
    name: String,
    service: String,
    start: u128,
    end: u128,
    attrs: HashMap<String, String>,
}

fn spans_of(export: &str) -> Vec<S> {
    let mut out = Vec::new();
    for (service, sp) in common::otlp_json_spans(export) {
        let sp = &sp;
        let num = |k: &str| -> u128 {
            match &sp[k] {
                Value::String(s) => s.parse().unwrap_or(0),
                Value::Number(n) => n.as_u64().unwrap_or(0) as u128,
                _ => 0,
            }
        };
        let attrs = common::otlp_span_attrs(sp);
        out.push(S {
            id: sp["spanId"].as_str().unwrap_or("").into(),
            parent: sp["parentSpanId"].as_str().unwrap_or("").into(),
            trace: sp["traceId"].as_str().unwrap_or("").into(),
            name: sp["name"].as_str().unwrap_or("").into(),
            service: service.clone(),
            start: num("startTimeUnixNano"),
            end: num("endTimeUnixNano"),
            attrs,
        });
    }
    out
}

#[test]
fn vm_traced_run_is_one_trace_with_agent_spans_nested_in_runtime_spans() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let out = env.run(&[
        "run",
        "--rm",
        "--trace",
        &image,
        "--",
        "sh",
        "-c",
        "echo traced",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "traced\n");

    let ls = env.run(&["trace", "ls", "--json"]);
    // One JSON object per trace, one per line.
    let listed: Vec<Value> = text(&ls.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("trace ls --json line"))
        .collect();
    assert_eq!(
        listed.len(),
        1,
        "exactly one trace expected: {}",
        text(&ls.stdout)
    );
    assert_eq!(listed[0]["root_name"], "run");

    let export = env.run(&["trace", "export", "latest", "--format", "otlp-json"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let spans = spans_of(&text(&export.stdout));
    let by_id: HashMap<&str, &S> = spans.iter().map(|s| (s.id.as_str(), s)).collect();

    let traces: std::collections::HashSet<&str> = spans.iter().map(|s| s.trace.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace id");
    let roots: Vec<&S> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(
        roots.len(),
        1,
        "one root: {:?}",
        roots.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(roots[0].name, "run");
    for s in &spans {
        assert!(
            s.parent.is_empty() || by_id.contains_key(s.parent.as_str()),
            "orphan span {}",
            s.name
        );
        for key in ["source", "sandbox_id"] {
            assert!(s.attrs.contains_key(key), "span {} lacks {key}", s.name);
        }
    }
    let sources: std::collections::HashSet<&str> = spans
        .iter()
        .filter_map(|s| s.attrs.get("source").map(String::as_str))
        .collect();
    for src in ["runtime", "hypervisor", "agent"] {
        assert!(sources.contains(src), "no {src} spans: {sources:?}");
    }
    for name in [
        "vm.start",
        "guest.boot",
        "agent.boot",
        "kernel.boot",
        "container.create",
        "process.wait",
    ] {
        assert!(spans.iter().any(|s| s.name == name), "no {name} span");
    }

    // The image's seccomp profile is compiled on the host under the runtime's container.create
    // and the agent takes that program instead of compiling it (ADR 028).
    let compile = spans
        .iter()
        .find(|s| s.name == "seccomp.compile")
        .expect("a seccomp.compile span");
    let create = by_id[compile.parent.as_str()];
    assert_eq!(
        (create.name.as_str(), create.service.as_str()),
        ("container.create", "shoji-runtime")
    );
    assert!(
        compile.attrs["seccomp.instructions"]
            .parse::<u32>()
            .unwrap()
            > 100
    );
    let check = spans
        .iter()
        .find(|s| s.name == "security.check")
        .expect("a security.check span");
    assert_eq!(check.attrs["seccomp.compiled_by"], "host");
    assert_eq!(
        check.attrs["seccomp.instructions"],
        compile.attrs["seccomp.instructions"]
    );

    // Every agent server span is the child of the runtime's client span for the same call, and
    // no agent span lies outside a runtime parent (clock correction).
    let mut server_spans = 0;
    for s in spans.iter().filter(|s| s.service == "shoji-agent") {
        let p = by_id[s.parent.as_str()];
        if s.name.starts_with("shoji.agent.v1.AgentService/") {
            server_spans += 1;
            assert_eq!(p.name, s.name, "server span's parent is the client span");
            assert_eq!(p.service, "shoji-runtime");
        }
        if p.service == "shoji-runtime" {
            assert!(
                s.start >= p.start,
                "{} starts {} ns before its parent {}",
                s.name,
                p.start - s.start,
                p.name
            );
            assert!(
                s.end <= p.end,
                "{} ends {} ns after its parent {}",
                s.name,
                s.end - p.end,
                p.name
            );
            assert!(
                s.attrs.contains_key("shoji.clock_offset_ns"),
                "{} lacks the applied offset",
                s.name
            );
        }
    }
    assert!(server_spans >= 5, "only {server_spans} agent server spans");

    // The guest boot is labelled end to end: `vm.firmware` (QEMU's launch until the kernel's
    // entry, timed by the runtime) then `agent.boot` (kernel entry until the agent serves), both
    // children of `guest.boot`, meeting at the kernel's entry: the same guest instant, corrected
    // by the same offset on both sides.
    let one = |name: &str| -> &S {
        let found: Vec<&S> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span");
        found[0]
    };
    let (boot, firmware, agent_boot) = (one("guest.boot"), one("vm.firmware"), one("agent.boot"));
    let launch = one("qemu.launch");
    assert_eq!(
        firmware.parent, boot.id,
        "vm.firmware is a child of guest.boot"
    );
    assert_eq!(
        agent_boot.parent, boot.id,
        "agent.boot is a child of guest.boot"
    );
    assert_eq!(firmware.attrs["source"], "hypervisor");
    assert!(
        firmware.start >= launch.start && firmware.start <= launch.end,
        "vm.firmware starts while QEMU is launched"
    );
    assert!(firmware.end > firmware.start, "vm.firmware has a length");
    assert!(
        firmware.end.abs_diff(agent_boot.start) < 1_000,
        "vm.firmware ends where agent.boot begins: {} vs {}",
        firmware.end,
        agent_boot.start
    );
    // `/init`'s first steps (mounts, console, telemetry) are `agent.setup`, and `modules.load`
    // follows it. Shoji's kernel has everything built in and its image no module list:
    // `modules.load` is still there, so traces of both kernels have the same shape.
    let setup = one("agent.setup");
    let modules = one("modules.load");
    assert_eq!(setup.parent, agent_boot.id);
    assert_eq!(modules.parent, agent_boot.id);
    assert_eq!(
        setup.end, modules.start,
        "modules.load starts where agent.setup ends"
    );
}

/// Runs `true` with `config`, returns the one trace's spans (asserting there is exactly one,
/// with one root and no orphans).
fn one_trace(config: &str) -> Vec<S> {
    let env = TestEnv::with_config(config);
    let image = busybox_image().0.display().to_string();
    let out = env.run(&["run", "--rm", &image, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ls = env.run(&["trace", "ls", "--json"]);
    assert_eq!(
        text(&ls.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count(),
        1,
        "one trace: {}",
        text(&ls.stdout)
    );
    let spans = spans_of(&text(
        &env.run(&["trace", "export", "latest", "--format", "otlp-json"])
            .stdout,
    ));
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        spans.iter().filter(|s| s.parent.is_empty()).count(),
        1,
        "one root"
    );
    for s in &spans {
        assert!(
            s.parent.is_empty() || ids.contains(s.parent.as_str()),
            "orphan {}",
            s.name
        );
    }
    spans
}

#[test]
fn vm_runtime_only_tracing_holds_runtime_and_hypervisor_spans() {
    let spans = one_trace("[runtime]\nenable_tracing = true\n");
    assert!(
        spans.iter().all(|s| s.service == "shoji-runtime"),
        "agent spans in a runtime-only trace"
    );
    assert!(spans
        .iter()
        .any(|s| s.attrs.get("source").map(String::as_str) == Some("hypervisor")));
    assert_eq!(
        spans
            .iter()
            .find(|s| s.parent.is_empty())
            .map(|s| s.name.as_str()),
        Some("run")
    );
}

#[test]
fn vm_agent_only_tracing_is_rooted_in_the_agent() {
    let spans = one_trace("[agent.shoji]\nenable_tracing = true\n");
    assert!(
        spans.iter().all(|s| s.service == "shoji-agent"),
        "runtime spans in an agent-only trace"
    );
    assert_eq!(
        spans
            .iter()
            .find(|s| s.parent.is_empty())
            .map(|s| s.name.as_str()),
        Some("agent")
    );
    for name in [
        "agent.boot",
        "shoji.agent.v1.AgentService/CreateContainer",
        "process.wait",
    ] {
        assert!(spans.iter().any(|s| s.name == name), "no {name}");
    }
}
