//! Reading the store: trace summaries for listing, whole traces, ids by prefix or `latest`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use rusqlite::types::Value as SqlValue;
use rusqlite::OptionalExtension;

use super::ingest::{clamp_i64, split_services, SEP};
use super::{SqlContext, Store, StoreError};
use crate::model::{service_name, SpanId, SpanRecord, Trace, TraceId};

/// One line of `shoji trace ls`: kept current by every ingest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceSummary {
    #[serde(serialize_with = "hex_id")]
    pub trace_id: TraceId,
    pub start_ns: u64,
    pub end_ns: u64,
    pub span_count: u64,
    /// Name of the parentless span, or of the earliest span while the root has not arrived.
    pub root_name: String,
    pub root_service: String,
    /// False while the trace's root span has not arrived (yet).
    pub has_root: bool,
    pub services: Vec<String>,
}

impl TraceSummary {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

fn hex_id<S: serde::Serializer>(id: &TraceId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(id))
}

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("no trace matches {0:?}")]
    NotFound(String),
    #[error("{prefix:?} matches several traces ({count}); give more hex digits")]
    Ambiguous { prefix: String, count: usize },
    #[error("{0:?} is not a trace id: expected 1 to 32 hex digits (a shorter id is zero-extended, as Jaeger does: 16 digits are a 64-bit id), a prefix ending in '*' (e.g. 4bf9*), or \"latest\"")]
    Malformed(String),
    #[error("the trace store is empty")]
    Empty,
}

/// What changes whenever a trace gains spans: an answer made from a trace is still its answer
/// while its version is the same (the query server keeps encoded answers by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceVersion {
    span_count: i64,
    bytes: i64,
    updated_ns: i64,
}

impl TraceVersion {
    #[cfg(test)]
    pub(crate) fn for_tests(n: i64) -> TraceVersion {
        TraceVersion {
            span_count: n,
            bytes: n,
            updated_ns: n,
        }
    }
}

/// Conditions that the `traces` table can answer by itself (no span decoding).
#[derive(Debug, Clone, Default)]
pub struct SummaryFilter {
    pub service: Option<String>,
    /// Traces with at least one span of this name (in `service`, if given, too).
    pub operation: Option<String>,
    pub min_duration_ns: Option<u64>,
    pub max_duration_ns: Option<u64>,
    /// Traces starting at or after this time.
    pub start_min_ns: Option<u64>,
    /// Traces starting at or before this time.
    pub start_max_ns: Option<u64>,
}

impl Store {
    /// Trace summaries, newest first, that match `f`.
    pub fn summaries(
        &self,
        f: &SummaryFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<TraceSummary>, StoreError> {
        let mut sql = String::from(
            "SELECT trace_id, start_ns, end_ns, span_count, root_name, root_service, has_root,
             services FROM traces t WHERE 1",
        );
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(s) = &f.service {
            sql.push_str(" AND instr(services, ?) > 0");
            args.push(SqlValue::Text(format!("{SEP}{s}{SEP}")));
        }
        if let Some(op) = &f.operation {
            // Span names are not indexed on their own; the summaries are scanned newest first
            // and each candidate's chunks (their name lists, not their bodies) checked, which
            // stops at the limit. Good enough for interactive use; see docs/benchmarks.md.
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM chunks c WHERE c.trace_id = t.trace_id
                  AND instr(c.names, ?) > 0)",
            );
            args.push(SqlValue::Text(format!("{SEP}{op}{SEP}")));
        }
        if let Some(d) = f.min_duration_ns {
            sql.push_str(" AND end_ns - start_ns >= ?");
            args.push(SqlValue::Integer(clamp_i64(d)));
        }
        if let Some(d) = f.max_duration_ns {
            sql.push_str(" AND end_ns - start_ns <= ?");
            args.push(SqlValue::Integer(clamp_i64(d)));
        }
        if let Some(t) = f.start_min_ns {
            sql.push_str(" AND start_ns >= ?");
            args.push(SqlValue::Integer(clamp_i64(t)));
        }
        if let Some(t) = f.start_max_ns {
            sql.push_str(" AND start_ns <= ?");
            args.push(SqlValue::Integer(clamp_i64(t)));
        }
        sql.push_str(" ORDER BY start_ns DESC, trace_id LIMIT ? OFFSET ?");
        args.push(SqlValue::Integer(limit.min(i64::MAX as usize) as i64));
        args.push(SqlValue::Integer(offset.min(i64::MAX as usize) as i64));
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&sql)
            .doing("preparing the trace listing")?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(TraceSummary {
                    trace_id: id.as_slice().try_into().unwrap_or([0; 16]),
                    start_ns: r.get::<_, i64>(1)?.max(0) as u64,
                    end_ns: r.get::<_, i64>(2)?.max(0) as u64,
                    span_count: r.get::<_, i64>(3)?.max(0) as u64,
                    root_name: r.get(4)?,
                    root_service: r.get(5)?,
                    has_root: r.get(6)?,
                    services: split_services(&r.get::<_, String>(7)?)
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .doing("listing traces")?;
        rows.collect::<Result<Vec<_>, _>>().doing("listing traces")
    }

    /// The summary of one trace.
    pub fn summary(&self, id: &TraceId) -> Result<Option<TraceSummary>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT start_ns, end_ns, span_count, root_name, root_service, has_root, services
                 FROM traces WHERE trace_id = ?1",
            )
            .doing("preparing a trace summary lookup")?;
        stmt.query_row([&id[..]], |r| {
            Ok(TraceSummary {
                trace_id: *id,
                start_ns: r.get::<_, i64>(0)?.max(0) as u64,
                end_ns: r.get::<_, i64>(1)?.max(0) as u64,
                span_count: r.get::<_, i64>(2)?.max(0) as u64,
                root_name: r.get(3)?,
                root_service: r.get(4)?,
                has_root: r.get(5)?,
                services: split_services(&r.get::<_, String>(6)?)
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .optional()
        .doing("looking up a trace summary")
    }

    /// The trace's version, or `None` if the store has no such trace. Read it before the
    /// trace: spans that arrive in between then make the next version, never a stale answer
    /// under a new one.
    pub fn version(&self, id: &TraceId) -> Result<Option<TraceVersion>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT span_count, bytes, updated_ns FROM traces WHERE trace_id = ?1")
            .doing("preparing a trace version lookup")?;
        stmt.query_row([&id[..]], |r| {
            Ok(TraceVersion {
                span_count: r.get(0)?,
                bytes: r.get(1)?,
                updated_ns: r.get(2)?,
            })
        })
        .optional()
        .doing("looking up a trace version")
    }

    /// Every stored span of a trace, or `None` if the store has none. A span stored twice
    /// (re-sent in a different grouping) is returned once.
    pub fn trace(&self, id: &TraceId) -> Result<Option<Trace>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.id, c.body, c.context_id, x.body
                 FROM chunks c JOIN contexts x ON x.id = c.context_id
                 WHERE c.trace_id = ?1 ORDER BY c.id",
            )
            .doing("preparing a trace lookup")?;
        let mut rows = stmt.query([&id[..]]).doing("loading a trace")?;
        let mut contexts: HashMap<i64, (Arc<ResourceSpans>, String)> = HashMap::new();
        let mut seen: HashSet<SpanId> = HashSet::new();
        let mut spans = Vec::new();
        while let Some(r) = rows.next().doing("loading a trace")? {
            let chunk: i64 = r.get(0).doing("reading a chunk id")?;
            let corrupt = |source| StoreError::Corrupt {
                trace_id: hex::encode(id),
                what: format!("chunk {chunk}"),
                source,
            };
            let body = r.get_ref(1).and_then(|v| v.as_blob().map_err(Into::into));
            let chunk_spans = ScopeSpans::decode(body.doing("reading spans")?)
                .map_err(corrupt)?
                .spans;
            let ctx_id: i64 = r.get(2).doing("reading a span context id")?;
            let (context, service) = match contexts.get(&ctx_id) {
                Some(c) => c.clone(),
                None => {
                    let blob = r.get_ref(3).and_then(|v| v.as_blob().map_err(Into::into));
                    let rs =
                        ResourceSpans::decode(blob.doing("reading a context")?).map_err(corrupt)?;
                    let service = service_name(&rs);
                    let c = (Arc::new(rs), service);
                    contexts.insert(ctx_id, c.clone());
                    c
                }
            };
            spans.reserve(chunk_spans.len());
            for span in chunk_spans {
                // Ids were checked at ingest.
                let Ok(span_id) = SpanId::try_from(span.span_id.as_slice()) else {
                    continue;
                };
                if !seen.insert(span_id) {
                    continue;
                }
                let start_ns = span.start_time_unix_nano;
                let end_ns = span.end_time_unix_nano.max(start_ns);
                spans.push(SpanRecord {
                    trace_id: *id,
                    span_id,
                    parent_id: span
                        .parent_span_id
                        .as_slice()
                        .try_into()
                        .ok()
                        .filter(|p| *p != [0u8; 8]),
                    service: service.clone(),
                    start_ns,
                    end_ns,
                    span,
                    context: context.clone(),
                });
            }
        }
        if spans.is_empty() {
            return Ok(None);
        }
        Ok(Some(Trace::new(*id, spans)))
    }

    /// Resolves `latest`, a hex id (1 to 32 digits, zero-extended: Jaeger's reading of a 64-bit
    /// id) or a unique hex prefix ending in `*` (or `...`/`…`) to a stored trace id.
    pub fn resolve_id(&self, text: &str) -> Result<TraceId, StoreError> {
        let text = text.trim();
        if text == "latest" {
            let conn = self.reader();
            let id: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT trace_id FROM traces ORDER BY start_ns DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .doing("finding the latest trace")?;
            return id
                .and_then(|id| id.as_slice().try_into().ok())
                .ok_or(StoreError::Id(IdError::Empty));
        }
        // A prefix only when asked for: Jaeger reads 16 digits as the 64-bit id, and so do we.
        let (digits, prefix) = match text
            .strip_suffix('*')
            .or_else(|| text.strip_suffix('\u{2026}'))
            .or_else(|| text.strip_suffix("..."))
        {
            Some(d) => (d, true),
            None => (text, false),
        };
        let lower = digits.to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 32 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::Malformed(text.to_string()).into());
        }
        if !prefix {
            let id: TraceId = hex::decode(format!("{lower:0>32}"))
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| IdError::Malformed(text.into()))?;
            let conn = self.reader();
            let found: Option<i64> = conn
                .query_row("SELECT 1 FROM traces WHERE trace_id = ?1", [&id[..]], |r| {
                    r.get(0)
                })
                .optional()
                .doing("looking up a trace id")?;
            return match found {
                Some(_) => Ok(id),
                None => Err(IdError::NotFound(text.to_string()).into()),
            };
        }
        // Range scan on the primary key: [prefix padded with 0, prefix padded with f].
        let lo =
            hex::decode(format!("{lower:0<32}")).map_err(|_| IdError::Malformed(text.into()))?;
        let hi =
            hex::decode(format!("{lower:f<32}")).map_err(|_| IdError::Malformed(text.into()))?;
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT trace_id FROM traces WHERE trace_id >= ?1 AND trace_id <= ?2 LIMIT 2",
            )
            .doing("preparing an id lookup")?;
        let ids: Vec<Vec<u8>> = stmt
            .query_map([&lo, &hi], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .doing("looking up a trace id")?;
        match ids.as_slice() {
            [one] => Ok(one.as_slice().try_into().unwrap_or([0; 16])),
            [] => Err(IdError::NotFound(text.to_string()).into()),
            _ => {
                let count: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM traces WHERE trace_id >= ?1 AND trace_id <= ?2",
                        [&lo, &hi],
                        |r| r.get(0),
                    )
                    .doing("counting matching trace ids")?;
                Err(IdError::Ambiguous {
                    prefix: text.to_string(),
                    count: count.max(0) as usize,
                }
                .into())
            }
        }
    }

    /// Services that have sent spans, sorted.
    pub fn services(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT service FROM operations ORDER BY service")
            .doing("preparing the service listing")?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .doing("listing services")?;
        Ok(rows)
    }

    /// Operations (span name, OTLP span kind) of a service, sorted by name.
    pub fn operations(&self, service: &str) -> Result<Vec<(String, i32)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, kind FROM operations WHERE service = ?1 ORDER BY name, kind",
            )
            .doing("preparing the operation listing")?;
        let rows = stmt
            .query_map([service], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .doing("listing operations")?;
        Ok(rows)
    }

    /// Total stored span count and encoded span bytes (what retention's size limit counts).
    pub fn totals(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.reader();
        let (n, b): (i64, i64) = conn
            .query_row(
                "SELECT coalesce(sum(span_count), 0), coalesce(sum(bytes), 0) FROM traces",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .doing("summing the store's size")?;
        Ok((n.max(0) as u64, b.max(0) as u64))
    }
}
