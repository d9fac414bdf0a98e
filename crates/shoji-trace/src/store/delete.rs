//! Removing whole traces: retention by age and size.

use rusqlite::{params, TransactionBehavior};

use super::ingest::clamp_i64;
use super::{SqlContext, Store, StoreError};
use crate::retention::{RetentionPolicy, RetentionReport};
use crate::units::now_ns;

/// Traces deleted per transaction: keeps each write lock short so ingest (ours or another
/// process's) is never held up for long.
const BATCH: usize = 200;

impl Store {
    /// Removes whole traces, oldest first: those that ended before `max_age` ago, then more
    /// until stored span bytes are within `max_bytes`.
    pub fn enforce_retention(
        &self,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        if let Some(age) = policy.max_age {
            let cutoff = now_ns().saturating_sub(age.as_nanos().min(u64::MAX as u128) as u64);
            loop {
                let ids = self.ids_where("end_ns < ?1 ORDER BY start_ns", clamp_i64(cutoff))?;
                if ids.is_empty() {
                    break;
                }
                let r = self.delete_traces(&ids)?;
                report.traces += r.traces;
                report.spans += r.spans;
            }
        }
        if let Some(max) = policy.max_bytes {
            loop {
                let (_, bytes) = self.totals()?;
                if bytes <= max {
                    break;
                }
                // Oldest first; one batch at a time, re-checking the total between batches.
                let excess = bytes - max;
                let ids = self.oldest_covering(excess)?;
                if ids.is_empty() {
                    break;
                }
                let r = self.delete_traces(&ids)?;
                report.traces += r.traces;
                report.spans += r.spans;
            }
        }
        if report.traces > 0 {
            // Give freed pages back to the file system (auto_vacuum=INCREMENTAL).
            let mut w = self.writer("retention")?;
            w.conn()
                .execute_batch("PRAGMA incremental_vacuum;")
                .doing("vacuuming after retention")?;
        }
        Ok(report)
    }

    fn ids_where(&self, cond: &str, arg: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT trace_id FROM traces WHERE {cond} LIMIT {BATCH}"
            ))
            .doing("preparing the retention scan")?;
        let ids = stmt
            .query_map([arg], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .doing("scanning for old traces")?;
        Ok(ids)
    }

    fn oldest_covering(&self, excess: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT trace_id, bytes FROM traces ORDER BY start_ns LIMIT {BATCH}"
            ))
            .doing("preparing the size scan")?;
        let mut rows = stmt.query([]).doing("scanning for the oldest traces")?;
        let mut ids = Vec::new();
        let mut freed = 0u64;
        while let Some(r) = rows.next().doing("scanning for the oldest traces")? {
            ids.push(r.get(0).doing("reading a trace id")?);
            freed += r.get::<_, i64>(1).doing("reading a trace size")?.max(0) as u64;
            if freed >= excess {
                break;
            }
        }
        Ok(ids)
    }

    /// Deletes traces (spans and summary) in one transaction: a trace goes whole or not at all.
    pub fn delete_traces(&self, ids: &[Vec<u8>]) -> Result<RetentionReport, StoreError> {
        let mut w = self.writer("deleting traces")?;
        let tx = w
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing("starting a delete transaction")?;
        let mut report = RetentionReport::default();
        {
            let mut count = tx
                .prepare_cached(
                    "SELECT coalesce(sum(span_count), 0) FROM chunks WHERE trace_id = ?1",
                )
                .doing("preparing the span count")?;
            let mut del_spans = tx
                .prepare_cached("DELETE FROM chunks WHERE trace_id = ?1")
                .doing("preparing the span delete")?;
            let mut del_trace = tx
                .prepare_cached("DELETE FROM traces WHERE trace_id = ?1")
                .doing("preparing the trace delete")?;
            for id in ids {
                let n: i64 = count
                    .query_row(params![id], |r| r.get(0))
                    .doing("counting spans")?;
                del_spans.execute(params![id]).doing("deleting spans")?;
                report.spans += n.max(0) as u64;
                report.traces += del_trace.execute(params![id]).doing("deleting a trace")? as u64;
            }
        }
        tx.commit().doing("committing a delete")?;
        Ok(report)
    }
}
