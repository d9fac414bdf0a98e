//! Writing OTLP requests into the store: one transaction per request (or per backlog). The
//! spans of one trace with one resource and scope go into one row (a chunk); a re-sent
//! request is recognised by its chunks' span ids and stored once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{SqlContext, Store, StoreError};

type Fast = foldhash::fast::RandomState;
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
/// Bound on the in-process cache of known operations.
const OPERATION_CACHE_MAX: usize = 16 * 1024;

pub(super) struct Writer {
    conn: Connection,
    /// Encoded context -> row id, only for contexts whose insert has committed.
    contexts: HashMap<Vec<u8>, i64>,
    /// Operations known to be in the `operations` table (committed), so that a steady stream
    /// of the same span names costs no insert.
    operations: HashSet<(String, String, i32)>,
}

/// What one ingest adds to a trace's summary. Strings borrow from the request.
#[derive(Clone)]
struct TraceDelta<'a> {
    start_ns: u64,
    end_ns: u64,
    count: u64,
    bytes: u64,
    /// (start, name, service, is_parentless)
    root: Option<(u64, &'a str, &'a str, bool)>,
    /// Distinct, few (one per resource).
    services: Vec<&'a str>,
}

impl Default for TraceDelta<'_> {
    fn default() -> Self {
        TraceDelta {
            start_ns: u64::MAX,
            end_ns: 0,
            count: 0,
            bytes: 0,
            root: None,
            services: Vec::new(),
        }
    }
}

impl Writer {
    pub(super) fn new(conn: Connection) -> Self {
        Writer {
            conn,
            contexts: HashMap::new(),
            operations: HashSet::new(),
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
        let mut writer = self.writer("storing spans")?;
        let Writer {
            conn,
            contexts,
            operations: known_ops,
        } = &mut *writer;
        let mut stats = IngestStats::default();
        // Service names are owned here, everything else borrows from the requests: no
        // allocation per span.
        let services: Vec<String> = resource_spans.clone().map(service_name).collect();
        let mut chunks: Vec<Chunk<'_>> = Vec::new();
        // foldhash: a few times cheaper than SipHash per span, still seeded per process, so a
        // sender cannot choose ids that collide.
        let mut chunk_of: HashMap<([u8; 16], i64), usize, Fast> = HashMap::default();
        let total: usize = resource_spans
            .clone()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        let mut seen: HashSet<([u8; 16], [u8; 8]), Fast> =
            HashSet::with_capacity_and_hasher(total, Fast::default());
        let mut operations: HashSet<(&str, &str, i32)> = HashSet::new();
        let mut new_contexts: Vec<(Vec<u8>, i64)> = Vec::new();

        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing("starting an ingest transaction")?;
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
                // Spans of one trace usually come together: remember the last chunk.
                let mut last: Option<([u8; 16], usize)> = None;
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
                    if !seen.insert((trace_id, span_id)) {
                        stats.duplicates += 1;
                        continue;
                    }
                    let i = match last {
                        Some((t, i)) if t == trace_id => i,
                        _ => {
                            let i = *chunk_of.entry((trace_id, ctx_id)).or_insert_with(|| {
                                chunks.push(Chunk::new(trace_id, ctx_id));
                                chunks.len() - 1
                            });
                            last = Some((trace_id, i));
                            i
                        }
                    };
                    if chunks[i].add(span, service) {
                        operations.insert((service, span.name.as_str(), span.kind));
                    }
                }
            }
        }
        let mut deltas: HashMap<[u8; 16], TraceDelta<'_>> = HashMap::new();
        {
            let mut insert_chunk = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks
                     (trace_id, digest, context_id, span_count, names, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .doing("preparing the chunk insert")?;
            for c in &chunks {
                let inserted = insert_chunk
                    .execute(params![
                        &c.trace_id[..],
                        c.digest.value() as i64,
                        c.ctx_id,
                        c.delta.count as i64,
                        // Stored like services, for the operation filter.
                        join_services(
                            c.ops
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<BTreeSet<_>>()
                                .into_iter()
                        ),
                        &c.body,
                    ])
                    .doing("inserting spans")?;
                if inserted == 0 {
                    // The same spans of this trace are stored already: a client's retry.
                    stats.duplicates += c.delta.count;
                    continue;
                }
                stats.stored += c.delta.count;
                match deltas.entry(c.trace_id) {
                    Entry::Occupied(mut d) => d.get_mut().merge(&c.delta),
                    Entry::Vacant(v) => {
                        v.insert(c.delta.clone());
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
            for &(service, name, kind) in &operations {
                // Distinct operations of one ingest are few: an owned key per lookup is cheap.
                if known_ops.contains(&(service.to_string(), name.to_string(), kind)) {
                    continue;
                }
                op.execute(params![service, name, kind])
                    .doing("recording an operation")?;
            }
        }
        tx.commit().doing("committing an ingest")?;
        if contexts.len() + new_contexts.len() > CONTEXT_CACHE_MAX {
            contexts.clear();
        }
        contexts.extend(new_contexts);
        if known_ops.len() + operations.len() > OPERATION_CACHE_MAX {
            known_ops.clear();
        }
        known_ops.extend(
            operations
                .into_iter()
                .map(|(s, n, k)| (s.to_string(), n.to_string(), k)),
        );
        Ok(stats)
    }
}

/// The spans of one trace with one resource and scope, from one ingest: stored as one row.
/// The body is the protobuf of a `ScopeSpans` holding only the spans (field 2, repeated), so it
/// decodes with prost as it is.
struct Chunk<'a> {
    trace_id: [u8; 16],
    ctx_id: i64,
    body: Vec<u8>,
    /// Of the span ids in order: a re-sent request gives the same chunk and digest.
    digest: Digest,
    /// Distinct (name, kind) of its spans.
    ops: Vec<(&'a str, i32)>,
    delta: TraceDelta<'a>,
}

impl<'a> Chunk<'a> {
    fn new(trace_id: [u8; 16], ctx_id: i64) -> Self {
        Chunk {
            trace_id,
            ctx_id,
            body: Vec::with_capacity(16 * 1024),
            digest: Digest::default(),
            ops: Vec::new(),
            delta: TraceDelta::default(),
        }
    }

    /// Adds a span (ids already checked); true if its (name, kind) is new to this chunk, i.e.
    /// the operation must be recorded.
    fn add(&mut self, span: &'a Span, service: &'a str) -> bool {
        prost::encoding::message::encode(SCOPE_SPANS_SPANS, span, &mut self.body);
        self.digest.add(&span.span_id);
        let start = span.start_time_unix_nano;
        let end = span.end_time_unix_nano.max(start);
        let is_root =
            <[u8; 8]>::try_from(span.parent_span_id.as_slice()).map_or(true, |p| p == [0; 8]);
        self.delta
            .add(start, end, span.name.as_str(), service, is_root);
        self.delta.bytes = self.body.len() as u64;
        let op = (span.name.as_str(), span.kind);
        let new_op = !self.ops.contains(&op);
        if new_op {
            self.ops.push(op);
        }
        new_op
    }
}

/// Field number of `spans` in `opentelemetry.proto.trace.v1.ScopeSpans`.
const SCOPE_SPANS_SPANS: u32 = 2;

/// Appends one already-encoded span to a chunk body, as `Chunk::add` would have encoded it.
pub(super) fn append_encoded_span(body: &mut Vec<u8>, span: &[u8]) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    encode_key(SCOPE_SPANS_SPANS, WireType::LengthDelimited, body);
    encode_varint(span.len() as u64, body);
    body.extend_from_slice(span);
}

/// 64-bit FNV-1a over the span ids of a chunk, in order. Stable across builds and versions
/// (it is stored), cheap, and only compared for equality within one trace: a collision would
/// need two different id sequences of one trace to hash alike.
#[derive(Debug, Clone, Copy)]
pub(super) struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub(super) fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(super) fn value(self) -> u64 {
        self.0
    }
}

impl<'a> TraceDelta<'a> {
    fn add(&mut self, start: u64, end: u64, name: &'a str, service: &'a str, is_root: bool) {
        self.start_ns = self.start_ns.min(start);
        self.end_ns = self.end_ns.max(end);
        self.count += 1;
        if self.services.last() != Some(&service) && !self.services.contains(&service) {
            self.services.push(service);
        }
        self.offer_root((start, name, service, is_root));
    }

    /// A real root beats a stand-in; among equals, the earlier start wins.
    fn offer_root(&mut self, c: (u64, &'a str, &'a str, bool)) {
        let better = match &self.root {
            None => true,
            Some((s, _, _, is_root)) => (c.3 && !is_root) || (c.3 == *is_root && c.0 < *s),
        };
        if better {
            self.root = Some(c);
        }
    }

    fn merge(&mut self, o: &TraceDelta<'a>) {
        self.start_ns = self.start_ns.min(o.start_ns);
        self.end_ns = self.end_ns.max(o.end_ns);
        self.count += o.count;
        self.bytes += o.bytes;
        for s in &o.services {
            if !self.services.contains(s) {
                self.services.push(s);
            }
        }
        if let Some(r) = o.root {
            self.offer_root(r);
        }
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
            let services = join_services(
                d.services
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter(),
            );
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

pub(super) fn join_services<'a>(services: impl Iterator<Item = &'a str>) -> String {
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
