//! The target's verification digests taken by other processes: a distributed run's workers claim
//! them like ranges ([`DigestTask`]), the coordinator sums what they return ([`DigestShare`]).
//!
//! A task is one span of the target table: a span of its row locator, read while the coordinator
//! builds the key (each row routed to its key range and bucket), or one key range once the key
//! is built. Digests are sums, so the spans' digests add up to the table's, whoever took them.

use barge_core::{Error, KeyRange, KeySpec, Result, Source, TableInfo};
use barge_plan::TablePlan;
use barge_verify::{Buckets, Digest, Routes};
use serde::{Deserialize, Serialize};

use crate::ExecOptions;
use crate::context::{Ctx, cpu_pool};
use crate::digests::RangeDigests;
use crate::progress::NoProgress;
use crate::verify::digest::{digest_ranges, digest_routed};
use crate::verify::table::align;

/// One span of a table's target digests, as a worker claims it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DigestTask {
    /// The table, by its source name in the plan.
    pub table: String,
    /// The span read: of the row locator (`locator`), or key range `span.id` of `ranges`.
    pub span: KeyRange,
    /// The target's row locator (`ctid`) the span is over: its rows are routed to their key range
    /// and bucket. `None`: the span is a key range, read by the key.
    pub locator: Option<String>,
    /// The table's key ranges (routing and buckets index them).
    pub ranges: Vec<KeyRange>,
    pub buckets: Option<Buckets>,
}

/// Digests per key range (one per bucket): what a task returns. A locator span gives every
/// range's (most empty); a key range only its own, at its index.
pub type SharedDigests = Vec<Vec<Digest>>;

/// Takes the target digests of a table's tasks elsewhere (a distributed run's workers) and
/// returns each task's, in task order; an error when a task failed for good.
pub trait DigestShare: Send + Sync + std::fmt::Debug {
    fn digests(&self, table: &str, tasks: Vec<DigestTask>) -> Result<Vec<SharedDigests>>;
}

/// The target table of `table` as a worker reads it for digest tasks: described once (a
/// catalog read of ~0.1 s on PostgreSQL) and kept for every task of the table.
pub fn describe_target(target: &dyn Source, table: &TablePlan) -> Result<TableInfo> {
    let source_info = if table.transform.is_some() { &table.output } else { &table.source };
    let source_info = TableInfo { window: None, ..source_info.clone() };
    align(target.table(&table.target_table)?, &source_info)
}

/// A worker's part: the digests of `task`, read from `target` (the target opened for reading;
/// `described` its table as [`describe_target`] gives it), with `options.workers` readers.
pub fn digest_task(
    target: &dyn Source,
    described: &TableInfo,
    task: &DigestTask,
    options: &ExecOptions,
) -> Result<SharedDigests> {
    let pool = cpu_pool(options.workers)?;
    let ctx = Ctx { pool: &pool, workers: options.workers, batch: options.batch(), progress: &NoProgress };
    let described = described.clone();
    match (&task.locator, &task.buckets) {
        (Some(locator), Some(buckets)) => {
            let routes = Routes::new(buckets, &task.ranges).ok_or_else(|| {
                Error::engine(format!("digests of `{}`", task.table), "the key ranges do not tile the key space")
            })?;
            let physical = TableInfo { key: KeySpec::Locator(locator.clone()), ..described };
            digest_routed(target, &physical, std::slice::from_ref(&task.span), &routes, ctx)
        }
        (Some(_), None) => Err(Error::engine(format!("digests of `{}`", task.table), "a locator span needs buckets")),
        (None, buckets) => {
            // Read as the only range (digests are indexed by range id), with its own buckets.
            let id = task.span.id;
            let buckets = match buckets {
                Some(b) => Some(Buckets {
                    key_column: b.key_column,
                    bounds: vec![b.bounds.get(id).cloned().ok_or_else(|| {
                        Error::engine(format!("digests of `{}`", task.table), format!("no buckets for range {id}"))
                    })?],
                }),
                None => None,
            };
            let span = KeyRange { id: 0, ..task.span.clone() };
            digest_ranges(target, &described, std::slice::from_ref(&span), buckets.as_ref(), ctx)
        }
    }
}

/// The tasks' digests summed per key range and bucket (locator spans).
pub(crate) fn summed(parts: Vec<SharedDigests>) -> RangeDigests {
    let mut total: RangeDigests = Vec::new();
    for part in parts {
        if total.is_empty() {
            total = part;
            continue;
        }
        for (range, digests) in total.iter_mut().zip(part) {
            for (slot, digest) in range.iter_mut().zip(digests) {
                *slot += digest;
            }
        }
    }
    total
}

/// Each key range's digests from its own task (key range spans, in range order).
pub(crate) fn by_range(parts: Vec<SharedDigests>) -> Result<RangeDigests> {
    parts
        .into_iter()
        .map(|mut part| match part.len() {
            1 => Ok(part.remove(0)),
            n => Err(Error::engine("shared digests", format!("a key range's task returned {n} ranges"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(rows: u64, sum: u128) -> Digest {
        Digest { rows, sum }
    }

    #[test]
    fn spans_add_up_per_range_and_bucket() {
        let a = vec![vec![d(1, 5), d(0, 0)], vec![d(2, 7)]];
        let b = vec![vec![d(3, 1), d(1, 1)], vec![d(0, 0)]];
        assert_eq!(summed(vec![a, b]), vec![vec![d(4, 6), d(1, 1)], vec![d(2, 7)]]);
        assert!(summed(Vec::new()).is_empty());
    }

    #[test]
    fn pieces_of_a_range_add_up_and_must_share_its_buckets() {
        let piece = |rows: u64, digests: &[Digest]| barge_core::ledger::RangeDone {
            range: 4,
            rows_read: rows,
            rows_written: rows,
            rows_rejected: 0,
            digests: serde_json::to_string(digests).unwrap(),
        };
        let whole = crate::merge_pieces(&[piece(3, &[d(2, 5), d(1, 1)]), piece(2, &[d(0, 0), d(2, 9)])]).unwrap();
        assert_eq!((whole.range, whole.rows_read, whole.rows_written), (4, 5, 5));
        let digests: Vec<Digest> = serde_json::from_str(&whole.digests).unwrap();
        assert_eq!(digests, [d(2, 5), d(3, 10)]);
        assert!(crate::merge_pieces(&[piece(1, &[d(1, 1)]), piece(1, &[d(1, 1), d(0, 0)])]).is_err());
    }

    #[test]
    fn a_key_range_task_gives_its_own_range() {
        let parts = vec![vec![vec![d(1, 1)]], vec![vec![d(2, 2), d(3, 3)]]];
        assert_eq!(by_range(parts).unwrap(), vec![vec![d(1, 1)], vec![d(2, 2), d(3, 3)]]);
        assert!(by_range(vec![vec![]]).is_err());
    }
}
