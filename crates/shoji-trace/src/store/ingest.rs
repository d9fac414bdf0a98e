//! Writing OTLP requests into the store: one transaction per request, idempotent per span.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{SqlContext, Store, StoreError};
use crate::model::service_name;

/// What one ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Spans newly stored.
    pub stored: u64,
    /// Spans already in the store (a client retry): not stored twice.
    pub duplicates: u64,
    /// Spans rejected for an invalid trace or span id (OTLP partial success).
    pub rejected: u64,
}

/// Bound on the in-process cache of context ids; contexts are few (one per resource/scope).
const CONTEXT_CACHE_MAX: usize = 4096;

pub(super) struct Writer {
    conn: Connection,
    /// Encoded context -> row id, only for contexts whose insert has committed.
    contexts: HashMap<Vec<u8>, i64>,
}

/// What one ingest adds to a trace's summary. Strings borrow from the request.
struct TraceDelta<'a> {
    start_ns: u64,
    end_ns: u64,
    count: u64,
    bytes: u64,
    /// (start, name, service, is_parentless)
    root: Option<(u64, &'a str, &'a str, bool)>,
    services: BTreeSet<&'a str>,
}

impl Writer {
    pub(super) fn new(conn: Connection) -> Self {
        Writer {
            conn,
            contexts: HashMap::new(),
        }
    }

    pub(super) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Store {
    /// Stores every span of `req`. Returns when the spans are committed: they survive the
    /// death of this process. Spans already stored (same trace and span id) are skipped, so
    /// a client retry does not duplicate them.
    pub fn ingest(&self, req: &ExportTraceServiceRequest) -> Result<IngestStats, StoreError> {
        self.ingest_resource_spans(&req.resource_spans)
    }

    /// [`Store::ingest`] for several requests in one transaction: all of them are stored or
    /// none. A commit costs far more than a span, so a writer with a backlog (the runtime's
    /// span pipeline) stores it this way.
    pub fn ingest_batch(
        &self,
        reqs: &[ExportTraceServiceRequest],
    ) -> Result<IngestStats, StoreError> {
        self.ingest_all(reqs.iter().flat_map(|r| &r.resource_spans))
    }

    pub fn ingest_resource_spans(
        &self,
        resource_spans: &[ResourceSpans],
    ) -> Result<IngestStats, StoreError> {
        self.ingest_all(resource_spans.iter())
    }

    fn ingest_all<'a>(
        &self,
        resource_spans: impl Iterator<Item = &'a ResourceSpans> + Clone,
    ) -> Result<IngestStats, StoreError> {
        let mut writer = self.writer();
        let Writer { conn, contexts } = &mut *writer;
        let mut stats = IngestStats::default();
        // Service names are owned here, everything else borrows from the requests: no
        // allocation per span.
        let services: Vec<String> = resource_spans.clone().map(service_name).collect();
        let mut deltas: HashMap<[u8; 16], TraceDelta<'_>> = HashMap::new();
        let mut operations: HashSet<(&str, &str, i32)> = HashSet::new();
        let mut new_contexts: Vec<(Vec<u8>, i64)> = Vec::new();

        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing("starting an ingest transaction")?;
        {
            let mut insert_span = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO spans
                     (trace_id, span_id, parent_id, name, start_ns, end_ns, context_id, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .doing("preparing the span insert")?;
            let mut body = Vec::with_capacity(1024);
            for (rs, service) in resource_spans.zip(&services) {
                let service = service.as_str();
                for ss in &rs.scope_spans {
                    let ctx = encode_context(rs, ss);
                    let ctx_id = match contexts.get(&ctx).or_else(|| {
                        new_contexts
                            .iter()
                            .find(|(c, _)| *c == ctx)
                            .map(|(_, id)| id)
                    }) {
                        Some(&id) => id,
                        None => {
                            let id = context_id(&tx, &ctx)?;
                            new_contexts.push((ctx, id));
                            id
                        }
                    };
                    for span in &ss.spans {
                        let (Ok(trace_id), Ok(span_id)) = (
                            <[u8; 16]>::try_from(span.trace_id.as_slice()),
                            <[u8; 8]>::try_from(span.span_id.as_slice()),
                        ) else {
                            stats.rejected += 1;
                            continue;
                        };
                        if trace_id == [0; 16] || span_id == [0; 8] {
                            stats.rejected += 1;
                            continue;
                        }
                        // Only a well-formed 8-byte parent counts; anything else makes a root.
                        let parent = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
                            .ok()
                            .filter(|p| *p != [0; 8]);
                        let start = span.start_time_unix_nano;
                        let end = span.end_time_unix_nano.max(start);
                        body.clear();
                        // Encoding into a Vec cannot fail: it grows as needed.
                        span.encode(&mut body).ok();
                        let inserted = insert_span
                            .execute(params![
                                &trace_id[..],
                                &span_id[..],
                                parent.as_ref().map(|p| &p[..]),
                                &span.name,
                                clamp_i64(start),
                                clamp_i64(end),
                                ctx_id,
                                &body,
                            ])
                            .doing("inserting a span")?;
                        if inserted == 0 {
                            stats.duplicates += 1;
                            continue;
                        }
                        stats.stored += 1;
                        operations.insert((service, span.name.as_str(), span.kind));
                        let d = deltas.entry(trace_id).or_insert_with(|| TraceDelta {
                            start_ns: u64::MAX,
                            end_ns: 0,
                            count: 0,
                            bytes: 0,
                            root: None,
                            services: BTreeSet::new(),
                        });
                        d.start_ns = d.start_ns.min(start);
                        d.end_ns = d.end_ns.max(end);
                        d.count += 1;
                        d.bytes += body.len() as u64;
                        d.services.insert(service);
                        let candidate = (start, parent.is_none());
                        let better = match &d.root {
                            None => true,
                            Some((s, _, _, is_root)) => {
                                (candidate.1 && !is_root) || (candidate.1 == *is_root && start < *s)
                            }
                        };
                        if better {
                            d.root = Some((start, span.name.as_str(), service, candidate.1));
                        }
                    }
                }
            }
        }
        for (trace_id, d) in &deltas {
            merge_trace(&tx, trace_id, d)?;
        }
        {
            let mut op = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO operations (service, name, kind) VALUES (?1, ?2, ?3)",
                )
                .doing("preparing the operation insert")?;
            for (service, name, kind) in &operations {
                op.execute(params![service, name, kind])
                    .doing("recording an operation")?;
            }
        }
        tx.commit().doing("committing an ingest")?;
        if contexts.len() + new_contexts.len() > CONTEXT_CACHE_MAX {
            contexts.clear();
        }
        contexts.extend(new_contexts);
        Ok(stats)
    }
}

/// The span's resource and scope, without spans, as protobuf: the key for `contexts`.
fn encode_context(rs: &ResourceSpans, ss: &ScopeSpans) -> Vec<u8> {
    ResourceSpans {
        resource: rs.resource.clone(),
        schema_url: rs.schema_url.clone(),
        scope_spans: vec![ScopeSpans {
            scope: ss.scope.clone(),
            spans: Vec::new(),
            schema_url: ss.schema_url.clone(),
        }],
    }
    .encode_to_vec()
}

fn context_id(tx: &rusqlite::Transaction<'_>, ctx: &[u8]) -> Result<i64, StoreError> {
    tx.prepare_cached("INSERT OR IGNORE INTO contexts (body) VALUES (?1)")
        .and_then(|mut s| s.execute([ctx]))
        .doing("inserting a resource context")?;
    tx.prepare_cached("SELECT id FROM contexts WHERE body = ?1")
        .and_then(|mut s| s.query_row([ctx], |r| r.get(0)))
        .doing("looking up a resource context")
}

/// Read-modify-write of the trace summary; safe because the transaction is IMMEDIATE (we
/// hold the database's write lock, no other process can change the row meanwhile).
fn merge_trace(
    tx: &rusqlite::Transaction<'_>,
    trace_id: &[u8; 16],
    d: &TraceDelta<'_>,
) -> Result<(), StoreError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let existing = tx
        .prepare_cached(
            "SELECT start_ns, end_ns, root_name, root_service, has_root, services
             FROM traces WHERE trace_id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&trace_id[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .optional()
        })
        .doing("reading a trace summary")?;
    let (root_start, root_name, root_service, root_is_root) = d.root.unwrap_or_default();
    match existing {
        None => {
            let services = join_services(d.services.iter().copied());
            tx.prepare_cached(
                "INSERT INTO traces (trace_id, start_ns, end_ns, span_count, bytes, root_name,
                 root_service, has_root, services, updated_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &trace_id[..],
                    clamp_i64(d.start_ns),
                    clamp_i64(d.end_ns),
                    d.count as i64,
                    d.bytes as i64,
                    root_name,
                    root_service,
                    root_is_root,
                    services,
                    now
                ])
            })
            .doing("inserting a trace summary")?;
        }
        Some((start, end, old_name, old_service, old_has_root, old_services)) => {
            let old_start = start as u64;
            // The existing root stays unless the new candidate is a real root and the old one
            // was not, or both are of the same kind and the new one starts earlier.
            let take_new = (root_is_root && !old_has_root)
                || (root_is_root == old_has_root && root_start < old_start);
            let (name, service, has_root) = if take_new {
                (root_name, root_service, root_is_root)
            } else {
                (old_name.as_str(), old_service.as_str(), old_has_root)
            };
            let mut services: BTreeSet<&str> = split_services(&old_services).collect();
            services.extend(d.services.iter().copied());
            tx.prepare_cached(
                "UPDATE traces SET start_ns = ?2, end_ns = ?3, span_count = span_count + ?4,
                 bytes = bytes + ?5, root_name = ?6, root_service = ?7, has_root = ?8,
                 services = ?9, updated_ns = ?10 WHERE trace_id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &trace_id[..],
                    start.min(clamp_i64(d.start_ns)),
                    end.max(clamp_i64(d.end_ns)),
                    d.count as i64,
                    d.bytes as i64,
                    name,
                    service,
                    has_root,
                    join_services(services.into_iter()),
                    now
                ])
            })
            .doing("updating a trace summary")?;
        }
    }
    Ok(())
}

/// Services are stored as `\x1fa\x1fb\x1f` so that `instr(services, '\x1fa\x1f')` finds one
/// exactly; the separator cannot be confused with text people put in service names.
pub(crate) const SEP: char = '\u{1f}';

fn join_services<'a>(services: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from(SEP);
    for s in services {
        out.push_str(&s.replace(SEP, " "));
        out.push(SEP);
    }
    out
}

pub(crate) fn split_services(s: &str) -> impl Iterator<Item = &str> {
    s.split(SEP).filter(|s| !s.is_empty())
}

/// Nanosecond times past 2262 do not fit SQLite's i64; they are clamped, not wrapped.
pub(crate) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
