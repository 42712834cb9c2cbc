//! Comparing one table: per key range (and bucket) where the source has a primary key, as one
//! multiset of rows otherwise; mismatched ranges are narrowed down to the keys that differ.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_schema::Schema;
use barge_core::{Error, KeyRange, KeySpec, Result, Source, TableInfo};
use barge_plan::partition::plan_ranges;
use barge_verify::{Buckets, Digest, KeyDiff, is_bucket_key, narrow_range};

use crate::context::Ctx;
use crate::digests::{RangeDigests, sum};
use crate::progress::Phase;
use crate::report::TableVerdict;
use crate::verify::digest::digest_ranges;

/// One table's two sides, over the source's key ranges.
pub(crate) struct Comparison<'a> {
    pub source: &'a dyn Source,
    pub source_info: &'a TableInfo,
    pub target: &'a dyn Source,
    /// The target table as it describes itself ([`align`]ed to the source's here).
    pub target_info: TableInfo,
    pub ranges: &'a [KeyRange],
    pub buckets: Option<&'a Buckets>,
}

/// What each side's digests came to, and the keys that differ.
struct Outcome {
    source_total: Digest,
    target_total: Digest,
    matched: bool,
    diff: KeyDiff,
    /// The key ranges (or buckets) whose digests differ (keyed tables).
    mismatched: Vec<KeyRange>,
}

impl Comparison<'_> {
    /// Compares the table, without announcing the verdict (a first comparison that deletes may
    /// change). Digests already taken (the source's while copying, the target's while its key
    /// built) are used as they are; the others are read now.
    pub(crate) fn compare(
        &self,
        source_digests: Option<RangeDigests>,
        target_digests: Option<RangeDigests>,
        ctx: Ctx<'_>,
    ) -> Result<TableVerdict> {
        self.compare_ranges(source_digests, target_digests, ctx).map(|(verdict, _)| verdict)
    }

    /// [`Self::compare`], with the key ranges (or buckets) whose digests differ.
    pub(crate) fn compare_ranges(
        &self,
        source_digests: Option<RangeDigests>,
        target_digests: Option<RangeDigests>,
        ctx: Ctx<'_>,
    ) -> Result<(TableVerdict, Vec<KeyRange>)> {
        let name = self.source_info.name.as_str();
        let target_info = align(self.target_info.clone(), self.source_info)?;
        let expected =
            if source_digests.is_some() { target_info.estimated_rows } else { self.source_info.estimated_rows * 2 };
        if target_digests.is_none() {
            // (Whoever took the target's digests started the phase.)
            ctx.progress.started(name, Phase::Verify, expected);
        }
        let source_digests = match source_digests {
            Some(digests) => digests,
            None => digest_ranges(self.source, self.source_info, self.ranges, self.buckets, ctx)?,
        };
        let outcome = if self.source_info.key.is_primary() {
            self.keyed(&target_info, source_digests, target_digests, ctx)?
        } else {
            self.keyless(&target_info, source_digests, ctx)?
        };
        let verdict = TableVerdict {
            table: name.into(),
            source_rows: outcome.source_total.rows,
            target_rows: outcome.target_total.rows,
            matched: outcome.matched,
            diff: outcome.diff,
            in_flight: 0,
        };
        Ok((verdict, outcome.mismatched))
    }

    fn keyed(
        &self,
        target_info: &TableInfo,
        source_digests: RangeDigests,
        target_digests: Option<RangeDigests>,
        ctx: Ctx<'_>,
    ) -> Result<Outcome> {
        // Buckets only when the target's key reads back as an integer too, so both sides assign
        // every row alike; otherwise compare whole ranges.
        let buckets = self.buckets.filter(|b| is_bucket_key(target_info.schema.field(b.key_column).data_type()));
        let whole = |digests: RangeDigests| -> RangeDigests { digests.iter().map(|d| vec![sum(d)]).collect() };
        let source_digests = if buckets.is_some() { source_digests } else { whole(source_digests) };
        let target_digests = match (target_digests, buckets) {
            (Some(digests), Some(_)) => digests,
            (Some(digests), None) => whole(digests),
            (None, _) => digest_ranges(self.target, target_info, self.ranges, buckets, ctx)?,
        };
        let mut mismatched = Vec::new();
        for ((range, s), t) in self.ranges.iter().zip(&source_digests).zip(&target_digests) {
            for (bucket, (s, t)) in s.iter().zip(t).enumerate() {
                if s != t {
                    let key_range = buckets.map_or_else(|| range.clone(), |b| b.key_range(range, bucket));
                    mismatched.push((key_range, *s, *t));
                }
            }
        }
        Ok(Outcome {
            diff: self.narrow_in_parallel(target_info, &mismatched, ctx)?,
            matched: source_digests == target_digests,
            source_total: sum(source_digests.iter().flatten()),
            target_total: sum(target_digests.iter().flatten()),
            mismatched: mismatched.into_iter().map(|(range, _, _)| range).collect(),
        })
    }

    fn keyless(&self, target_info: &TableInfo, source_digests: RangeDigests, ctx: Ctx<'_>) -> Result<Outcome> {
        let target_ranges = plan_ranges(self.target, target_info, &KeyRange::all(), self.ranges.len())?;
        let target_digests = digest_ranges(self.target, target_info, &target_ranges, None, ctx)?;
        let (source_total, target_total) = (sum(source_digests.iter().flatten()), sum(target_digests.iter().flatten()));
        let matched = source_total == target_total;
        let diff = if matched {
            KeyDiff::default()
        } else {
            let (source, target) = ((self.source, self.source_info), (self.target, target_info));
            let all = KeyRange::all();
            narrow_range(source.0, source.1, target.0, target.1, &all, source_total, target_total, ctx.batch)?
        };
        Ok(Outcome { source_total, target_total, matched, diff, mismatched: Vec::new() })
    }

    /// Narrows mismatched ranges down to keys, up to `workers` ranges at a time, each on a plain
    /// thread of its own (narrowing reads the databases: no I/O on the CPU pool).
    fn narrow_in_parallel(
        &self,
        target_info: &TableInfo,
        mismatched: &[(KeyRange, Digest, Digest)],
        ctx: Ctx<'_>,
    ) -> Result<KeyDiff> {
        let next = AtomicUsize::new(0);
        let (source, source_info, target) = (self.source, self.source_info, self.target);
        let diffs: Vec<Result<KeyDiff>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..ctx.workers.clamp(1, mismatched.len().max(1)))
                .map(|_| {
                    scope.spawn(|| {
                        let mut diff = KeyDiff::default();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((range, s, t)) = mismatched.get(i) else { return Ok(diff) };
                            let rows = ctx.batch;
                            diff.merge(narrow_range(source, source_info, target, target_info, range, *s, *t, rows)?);
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a narrowing thread panicked")).collect()
        });
        let mut diff = KeyDiff::default();
        for part in diffs {
            diff.merge(part?);
        }
        Ok(diff)
    }
}

/// Reports a table's verdict to progress (the line a user sees per table).
pub(crate) fn announce(verdict: &TableVerdict, ctx: Ctx<'_>) {
    let summary = if verdict.matched {
        format!("{} rows match", barge_core::text::count(verdict.source_rows))
    } else {
        let diff = &verdict.diff;
        let duplicated =
            if diff.duplicated_total > 0 { format!(", {} duplicated", diff.duplicated_total) } else { String::new() };
        format!(
            "MISMATCH: {} missing, {} extra, {} changed{duplicated}",
            diff.missing_total, diff.extra_total, diff.changed_total
        )
    };
    ctx.progress.finished(&verdict.table, Phase::Verify, &summary);
}

/// Describes the target table the way the source is described: the source's columns in the
/// source's order (so rows encode identically) and the source's key columns.
pub(crate) fn align(target: TableInfo, source: &TableInfo) -> Result<TableInfo> {
    let fields = source
        .schema
        .fields()
        .iter()
        .map(|f| {
            target.schema.field_with_name(f.name()).cloned().map_err(|_| Error::UnknownColumn {
                side: "target",
                table: target.name.clone(),
                column: f.name().clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let key = match (&source.key, target.key) {
        (KeySpec::Primary(columns), _) => KeySpec::Primary(columns.clone()),
        // Without a source key, rows are compared as a multiset; the target is ranged over by its
        // own locator where it has one.
        (_, KeySpec::Locator(locator)) => KeySpec::Locator(locator),
        _ => KeySpec::None,
    };
    Ok(TableInfo {
        name: target.name,
        schema: Arc::new(Schema::new(fields)),
        key,
        estimated_rows: target.estimated_rows,
        indexes: Vec::new(),
        foreign_keys: Vec::new(),
        checks: Vec::new(),
        sql_indexes: Vec::new(),
        comment: None,
        filter: None,
        window: None,
    })
}
