//! Issue #3: log records at `trace_log_level` (default info) become span events of the current
//! span, in the runtime and in the agent, and every log line carries the `trace_id` and
//! `span_id` that lead to that span: the runtime's lines on stderr, the agent's on the guest
//! console. Checked on a real traced run, against the trace read back from the store.

use crate::common;
use std::collections::HashMap;

use common::{busybox_image, text, TestEnv};

struct S {
    id: String,
    trace: String,
    name: String,
    service: String,
    events: Vec<String>,
}

fn spans_of(export: &str) -> Vec<S> {
    let mut out = Vec::new();
    for (service, sp) in common::otlp_json_spans(export) {
        let sp = &sp;
        out.push(S {
            id: sp["spanId"].as_str().unwrap_or("").into(),
            trace: sp["traceId"].as_str().unwrap_or("").into(),
            name: sp["name"].as_str().unwrap_or("").into(),
            service: service.clone(),
            events: sp["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].as_str().unwrap_or("").to_string())
                .collect(),
        });
    }
    out
}

/// `key=value` words of a log line.
fn ids(line: &str) -> (Option<&str>, Option<&str>) {
    let get = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|w| w.strip_prefix('=')))
    };
    (get("trace_id"), get("span_id"))
}

/// The span that carries an event named `event`, from `service`.
fn span_with_event<'a>(spans: &'a [S], service: &str, event: &str) -> &'a S {
    spans
        .iter()
        .find(|s| s.service == service && s.events.iter().any(|e| e == event))
        .unwrap_or_else(|| panic!("no {service} span has the event {event:?}"))
}

#[test]
fn vm_log_records_become_span_events_and_every_log_line_names_its_span() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    // The sandbox directory (and with it the guest console) is kept so that the agent's lines
    // can be read after the run; it is removed below.
    let out = env
        .cmd()
        .args(["run", "--rm", "--trace", &image, "--", "true"])
        .env("SHOJI_LOG", "info")
        .env("SHOJI_KEEP_SANDBOX", "1")
        .output()
        .expect("running shoji");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let sandboxes: Vec<_> = std::fs::read_dir(env.sandbox_root())
        .expect("sandbox root")
        .flatten()
        .filter(|e| e.file_name() != "accel-probe")
        .map(|e| e.path())
        .collect();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let console = std::fs::read_to_string(sandboxes[0].join("console.log")).expect("console.log");
    std::fs::remove_dir_all(&sandboxes[0]).expect("remove the kept sandbox");
    env.assert_nothing_left();

    let export = env.run(&["trace", "export", "latest", "--format", "otlp-json"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let spans = spans_of(&text(&export.stdout));
    let trace = spans.first().expect("spans").trace.clone();
    let by_name: HashMap<&str, &S> = spans.iter().map(|s| (s.name.as_str(), s)).collect();

    // Span events from log records, on both sides.
    let run = span_with_event(&spans, "shoji-runtime", "guest clock measured");
    assert_eq!(run.name, "run");
    assert!(run.events.iter().any(|e| e == "accelerator chosen"));
    let created = span_with_event(&spans, "shoji-agent", "container created");
    assert_eq!(created.name, "shoji.agent.v1.AgentService/CreateContainer");
    let exited = span_with_event(&spans, "shoji-agent", "process exited");
    assert_eq!(exited.name, "shoji.agent.v1.AgentService/WaitProcess");

    // The runtime's log lines name the span the record is an event of.
    let line = stderr
        .lines()
        .find(|l| l.starts_with("shoji: info: guest clock measured"))
        .unwrap_or_else(|| panic!("no clock line on stderr: {stderr}"));
    assert_eq!(
        ids(line),
        (Some(trace.as_str()), Some(run.id.as_str())),
        "{line}"
    );

    // The agent's console lines too; a line logged outside any span names the runtime's
    // `guest.boot`, the parent of the agent's boot spans.
    let agent_lines: Vec<&str> = console
        .lines()
        .filter(|l| {
            ["trace", "debug", "info", "warn", "error"]
                .iter()
                .any(|lvl| l.starts_with(&format!("shoji-agent: {lvl}")))
        })
        .collect();
    assert!(agent_lines.len() >= 3, "agent log lines: {console}");
    for l in &agent_lines {
        assert_eq!(
            ids(l).0,
            Some(trace.as_str()),
            "console line without the trace id: {l}"
        );
        assert!(ids(l).1.is_some(), "console line without a span id: {l}");
    }
    let line_of = |what: &str| {
        *agent_lines
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line on the console: {console}"))
    };
    assert_eq!(
        ids(line_of("container created")).1,
        Some(created.id.as_str())
    );
    assert_eq!(ids(line_of("process exited")).1, Some(exited.id.as_str()));
    assert_eq!(
        ids(line_of("serving on")).1,
        Some(by_name["guest.boot"].id.as_str())
    );
}
