//! The `shoji trace` commands read the store with no server: ids by hex, unique prefix (`*`) or
//! `latest`; `ls` filters; `show` draws the tree, colours only when asked, and escapes control
//! characters from hostile span names.

use crate::common;

use shoji_trace::cli::{ColorChoice, ExportArgs, ImportArgs, LsArgs, ShowArgs};
use shoji_trace::formats::ExportFormat;
use shoji_trace::store::{IdError, Store, StoreError};

fn ls(dir: &std::path::Path, f: impl FnOnce(&mut LsArgs)) -> String {
    let mut a = LsArgs {
        service: None,
        operation: None,
        tags: Vec::new(),
        min_duration: None,
        since: None,
        limit: 20,
        json: false,
    };
    f(&mut a);
    a.run(dir).expect("ls").text
}

fn fill(store: &Store) {
    let t0 = shoji_trace::units::now_ns() - 10_000_000_000;
    let mut root = common::span(0xa1, 1, None, "run", t0, t0 + 2_000_000_000);
    root.attributes.push(common::kv("source", "runtime"));
    let mut evil = common::span(0xa1, 2, Some(1), "boot\x1b[2J\x1b[31m", t0 + 1, t0 + 100);
    evil.attributes.push(common::kv("source", "agent"));
    store
        .ingest(&common::request("shoji-runtime", vec![root, evil]))
        .expect("ingest");
    let later = common::span(0xa2, 1, None, "exec", t0 + 5, t0 + 1_000);
    store
        .ingest(&common::request("shoji-agent", vec![later]))
        .expect("ingest");
}

#[test]
fn ids_resolve_by_full_hex_prefix_and_latest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(matches!(
        store.resolve_id("latest"),
        Err(StoreError::Id(IdError::Empty))
    ));
    fill(&store);
    assert_eq!(store.resolve_id("latest").expect("latest"), [0xa2; 16]);
    assert_eq!(store.resolve_id("A1A1*").expect("prefix"), [0xa1; 16]);
    assert_eq!(store.resolve_id("a1a1...").expect("prefix"), [0xa1; 16]);
    assert!(
        matches!(
            store.resolve_id("A1A1"),
            Err(StoreError::Id(IdError::NotFound(_)))
        ),
        "without '*' the digits are a whole (zero-extended) id, not a prefix"
    );
    assert_eq!(
        store.resolve_id(&"a1".repeat(16)).expect("full"),
        [0xa1; 16]
    );
    assert!(matches!(
        store.resolve_id("a*"),
        Err(StoreError::Id(IdError::Ambiguous { count: 2, .. }))
    ));
    assert!(matches!(
        store.resolve_id("ff*"),
        Err(StoreError::Id(IdError::NotFound(_)))
    ));
    assert!(matches!(
        store.resolve_id("xyz"),
        Err(StoreError::Id(IdError::Malformed(_)))
    ));
}

#[test]
fn ls_lists_newest_first_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(&Store::open(dir.path()).expect("open"));
    let all = ls(dir.path(), |_| {});
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[1].starts_with(&"a2".repeat(16)),
        "newest first: {all}"
    );
    let only = ls(dir.path(), |a| a.service = Some("shoji-runtime".into()));
    assert_eq!(only.lines().count(), 2);
    let slow = ls(dir.path(), |a| a.min_duration = Some("1s".into()));
    assert!(slow.contains(&"a1".repeat(16)) && !slow.contains(&"a2".repeat(16)));
    let tagged = ls(dir.path(), |a| a.tags = vec!["source=agent".into()]);
    assert_eq!(tagged.lines().count(), 2);
    let json = ls(dir.path(), |a| {
        a.json = true;
        a.operation = Some("exec".into());
    });
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("json line");
    assert_eq!(v["trace_id"], "a2".repeat(16));
    assert_eq!(v["span_count"], 1);
    let none = ls(dir.path(), |a| a.since = Some("1s".into()));
    assert_eq!(none.lines().count(), 1, "header only");
}

#[test]
fn show_draws_the_tree_and_escapes_control_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(&Store::open(dir.path()).expect("open"));
    let plain = ShowArgs {
        id: "a1*".into(),
        verbose: true,
        color: ColorChoice::Never,
    }
    .run(dir.path())
    .expect("show");
    assert!(
        !plain.contains('\x1b'),
        "no escape sequences at all: {plain:?}"
    );
    assert!(plain.contains("boot\\u{1b}[2J"), "{plain}");
    let lines: Vec<&str> = plain.lines().collect();
    assert!(lines[1].starts_with("run "), "{plain}");
    assert!(
        lines.iter().any(|l| l.starts_with("  boot")),
        "child indented: {plain}"
    );
    assert!(plain.contains("source=agent"), "-v shows attributes");
    assert!(plain.contains('█'), "timeline bar");
    let coloured = ShowArgs {
        id: "latest".into(),
        verbose: false,
        color: ColorChoice::Always,
    }
    .run(dir.path())
    .expect("show");
    assert!(coloured.contains("\x1b[32m"), "agent green legend");
}

#[test]
fn export_then_import_into_another_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(&Store::open(dir.path()).expect("open"));
    let text = ExportArgs {
        id: "latest".into(),
        format: ExportFormat::OtlpJson,
        output: None,
    }
    .run(dir.path())
    .expect("export");
    let file = dir.path().join("t.jsonl");
    std::fs::write(&file, text).expect("write");
    let other = tempfile::tempdir().expect("tempdir");
    let msg = ImportArgs { file }.run(other.path()).expect("import");
    assert!(msg.starts_with("imported 1 spans"), "{msg}");
    let store = Store::open(other.path()).expect("open");
    assert_eq!(store.resolve_id("latest").expect("latest"), [0xa2; 16]);
}

/// Issue 11: a 16-digit id is the 64-bit id zero-extended to 128 bits, as Jaeger reads it,
/// not a prefix of some other trace.
#[test]
fn a_16_digit_id_is_the_zero_extended_64_bit_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let mut short = [0u8; 16];
    short[15] = 1;
    let mut span = common::span(0, 1, None, "short-id", 10, 20);
    span.trace_id = short.to_vec();
    // A trace whose first 16 digits are 0000000000000001: the old prefix reading found it.
    let mut other = common::span(0, 2, None, "long-id", 30, 40);
    other.trace_id = hex::decode("0000000000000001ffffffffffffffff").expect("hex");
    store
        .ingest(&common::request("ids", vec![span, other]))
        .expect("ingest");
    assert_eq!(
        store.resolve_id("0000000000000001").expect("64-bit id"),
        short
    );
    assert_eq!(
        store.resolve_id("1").expect("leading zeros optional"),
        short
    );
    let shown = ShowArgs {
        id: "0000000000000001".into(),
        verbose: false,
        color: ColorChoice::Never,
    }
    .run(dir.path())
    .expect("show");
    assert!(
        shown.contains("short-id") && !shown.contains("long-id"),
        "{shown}"
    );
    // The old reading (a prefix) is still there when asked for.
    assert_eq!(
        hex::encode(store.resolve_id("0000000000000001*").expect("prefix")),
        "0000000000000001ffffffffffffffff"
    );
}
