//! After a table's rows are committed: its indexes and identity generators (where the target
//! builds them, overlapping verification when readers pass), the ledger, its watermark, and the
//! comparison with the source (with `--detect-deletes`, deleting the keys the source lost).

use std::sync::atomic::Ordering;
use std::time::Instant;

use barge_core::{Error, Result, Source, TableInfo};
use barge_plan::Incremental;
use barge_verify::is_bucket_key;

use crate::copy::table::TableCopy;
use crate::digests::{RangeDigests, sum};
use crate::progress::Phase;
use crate::report::{PhaseTimeline, StageSeconds, TableReport, TableVerdict};
use crate::verify::overlap::digest_while_finishing;
use crate::verify::shared::{DigestShare, DigestTask, by_range};
use crate::verify::table::{Comparison, align};
use crate::verify::transformed::TransformedSource;

/// Rounds of deleting the keys a comparison lists as gone from the source, at most.
const MAX_DELETE_ROUNDS: usize = 1000;

/// What finishing and verifying a table came to.
pub(crate) struct Finished {
    verdict: Option<TableVerdict>,
    rows_deleted: u64,
    notices: Vec<String>,
    copy_timeline: Vec<(f64, u64)>,
    verify_timeline: Vec<(f64, u64)>,
    verify_seconds: f64,
}

impl TableCopy<'_> {
    /// Builds the table's indexes (created tables) and marks it finished in the ledger. A build
    /// that fails transiently (its connection lost) is done again like any range, after a
    /// backoff: engines build idempotently (what an earlier attempt built is kept).
    fn finish(&self) -> Result<()> {
        let started = Instant::now();
        self.build()?;
        if self.needs_finishing() {
            tracing::info!(
                "table `{}`: key, indexes and constraints built in {:.2}s",
                self.name(),
                started.elapsed().as_secs_f64()
            );
        }
        match &self.run.options.ledger {
            Some(ledger) => ledger.table_finished(self.name()),
            None => Ok(()),
        }
    }

    /// The objects of a created table built after its rows: the source's own (exact schema), or
    /// barge's (key, indexes).
    fn build(&self) -> Result<()> {
        if self.needs_finishing()
            && let Some(dump) = self.run.schema
        {
            let restorer = crate::copy::prepare::restorer(self.run.target)?;
            restorer.restore(dump, barge_core::RestoreStep::TableObjects(&self.table.target_table))?;
        } else if self.needs_finishing()
            && let Some(objects) = self.run.target.schema_objects()
        {
            crate::retry::retrying(self.run.options.retries, self.name(), "building its key and indexes", || {
                objects.finish_table(&self.table.target_table, &self.table.output)
            })?;
        }
        Ok(())
    }

    /// A table barge created whose indexes an interrupted run did not build yet. Indexes are
    /// recreated over the columns as copied: a transformed table has none to copy.
    fn needs_finishing(&self) -> bool {
        self.layout.created && !self.earlier.is_some_and(|e| e.finished)
    }

    /// Whether verification reads the target while its key and indexes build.
    fn overlaps(&self) -> bool {
        self.needs_finishing()
            && self.run.schema.is_none()
            && self.compare
            && self.table.incremental.is_none()
            && self.buckets.is_some()
            && self.run.target.schema_objects().is_some_and(|o| o.readable_while_finishing())
    }

    pub(crate) fn finish_and_verify(&self, digests: RangeDigests) -> Result<Finished> {
        let (name, progress) = (self.name(), self.run.ctx.progress);
        let overlap = self.overlaps();
        if !overlap {
            self.finish()?;
        }
        let mut notices: Vec<String> = self.run.source.notices(name).iter().map(ToString::to_string).collect();
        let engine = self.run.target.unstorable().engine;
        for (column, values) in self.counters.nulled.lock().expect("nulled lock").iter() {
            notices.push(format!(
                "column `{column}`: {} value(s) {engine} cannot store written as NULL (--unrepresentable null)",
                barge_core::text::count(*values)
            ));
        }
        for notice in &notices {
            tracing::warn!("table `{name}`: {notice}");
        }
        let (_, rows_written, rows_rejected) = self.rows();
        let copy_seconds = self.started.elapsed().as_secs_f64();
        let copy_timeline = self.counters.timeline.finish(rows_written);
        let count = barge_core::text::count;
        let rejected_note =
            if rows_rejected > 0 { format!(", {} rejected", count(rows_rejected)) } else { String::new() };
        progress.finished(
            name,
            Phase::Copy,
            &format!("{} rows{rejected_note} in {copy_seconds:.2}s", count(rows_written)),
        );
        // An incremental table's watermark is recorded once its rows are committed.
        if let (Some(ledger), Some(Incremental { until: Some(until), .. })) =
            (&self.run.options.ledger, &self.table.incremental)
        {
            ledger.set_watermark(name, until)?;
        }
        let verify_started = Instant::now();
        let verify_progress = PhaseTimeline::new(progress, Phase::Verify);
        let (verdict, rows_deleted) = if self.compare {
            if sum(digests.iter().flatten()).rows != rows_written {
                return Err(Error::engine(
                    format!("verifying `{name}`"),
                    "source digest does not cover every row read",
                ));
            }
            let verified = self.verify(digests, overlap, &verify_progress)?;
            let outcome = match &verified.0 {
                Some(v) if v.matched => "target equals source",
                Some(_) => "MISMATCH",
                None => "not compared",
            };
            tracing::info!("table `{name}`: verified in {:.2}s: {outcome}", verify_started.elapsed().as_secs_f64());
            verified
        } else {
            (None, 0)
        };
        Ok(Finished {
            verdict,
            rows_deleted,
            notices,
            copy_timeline,
            verify_timeline: if self.compare { verify_progress.finish() } else { Vec::new() },
            verify_seconds: if self.compare { verify_started.elapsed().as_secs_f64() } else { 0.0 },
        })
    }

    /// Compares the target with the source (as transformed); with delete detection, deletes the
    /// target keys the source no longer has and compares again. Returns the verdict (when
    /// verifying) and the rows deleted.
    fn verify(
        &self,
        digests: RangeDigests,
        overlap: bool,
        progress: &PhaseTimeline<'_>,
    ) -> Result<(Option<TableVerdict>, u64)> {
        let table = self.table;
        let ctx = self.run.ctx.with_progress(progress);
        let reader = self.run.reader()?;
        // An incremental run read a window of the table; the comparison covers all of it.
        let whole = TableInfo { window: None, ..table.source.clone() };
        let transformed = table.transform.as_deref().map(|transform| TransformedSource {
            inner: self.run.source,
            read: &whole,
            output: &table.output,
            transform,
        });
        let (source, source_info): (&dyn Source, &TableInfo) = match &transformed {
            Some(t) => (t, &table.output),
            None => (self.run.source, &whole),
        };
        let comparison = Comparison {
            source,
            source_info,
            target: reader.as_ref(),
            target_info: reader.table(&table.target_table)?,
            ranges: &self.layout.ranges,
            buckets: self.buckets.as_ref(),
        };
        // A distributed run's workers take the target's digests (not of an incremental table,
        // compared whole).
        let share = self.run.options.digests.as_deref().filter(|_| table.incremental.is_none());
        let target_digests = match (self.buckets.as_ref().filter(|_| overlap), share) {
            (Some(buckets), share) => {
                let finish = || self.finish();
                let spans = (comparison.ranges, buckets);
                let share = share.map(|s| (s, self.name()));
                let info = &comparison.target_info;
                digest_while_finishing(reader.as_ref(), info, source_info, spans, &finish, share, ctx)?
            }
            (None, Some(share)) if table.source.key.is_primary() => {
                Some(self.shared_by_range(share, &comparison, source_info)?)
            }
            (None, _) => None,
        };
        let source_digests = table.incremental.is_none().then_some(digests);
        let (mut verdict, mismatched) = comparison.compare_ranges(source_digests, target_digests, ctx)?;
        // (Ranges of a transformed table are over its output's key, which reads cannot take.)
        if let Some(incremental) = &table.incremental
            && table.transform.is_none()
            && verdict.diff.missing_total + verdict.diff.changed_total > 0
            && !mismatched.is_empty()
        {
            let behind = verdict.diff.missing_total + verdict.diff.changed_total;
            let copied = self.copy_behind_watermark(&whole, mismatched)?;
            let notice = format!(
                "column `{}`: {behind} row(s) changed without moving past the last mark less lookback, so the \
                 watermark missed them; verification found them and {copied} row(s) of their ranges were copied \
                 again now. Raise `lookback` if this recurs",
                incremental.column
            );
            tracing::warn!("table `{}`: {notice}", self.name());
            self.behind.lock().expect("notices lock").push(notice);
            verdict = comparison.compare(None, None, ctx)?;
        }
        // With delete detection the first comparison lists what to delete: the verdict announced
        // is the one after the deletes.
        let rows_deleted = if self.detect_deletes { self.delete_missing(&comparison, &mut verdict, ctx)? } else { 0 };
        if rows_deleted > 0 {
            tracing::info!("table `{}`: deleted {rows_deleted} row(s) whose key is gone from the source", self.name());
        }
        crate::verify::table::announce(&verdict, ctx);
        Ok((self.run.options.verify.then_some(verdict), rows_deleted))
    }

    /// The target's digests per key range, each range read by a distributed run's worker (the
    /// key is built: the table is not read while it builds).
    fn shared_by_range(
        &self,
        share: &dyn DigestShare,
        comparison: &Comparison<'_>,
        source_info: &TableInfo,
    ) -> Result<RangeDigests> {
        let target_info = align(comparison.target_info.clone(), source_info)?;
        // Buckets only where the target's key reads back as an integer (as the comparison does).
        let buckets = self
            .buckets
            .as_ref()
            .filter(|b| is_bucket_key(target_info.schema.field(b.key_column).data_type()))
            .cloned();
        let tasks = comparison
            .ranges
            .iter()
            .map(|range| DigestTask {
                table: self.name().to_string(),
                span: range.clone(),
                locator: None,
                ranges: comparison.ranges.to_vec(),
                buckets: buckets.clone(),
            })
            .collect();
        by_range(share.digests(self.name(), tasks)?)
    }

    /// Copies `ranges` of the whole table again, upserting: an incremental table's rows the
    /// watermark missed. Returns the rows written.
    fn copy_behind_watermark(&self, whole: &TableInfo, ranges: Vec<barge_core::KeyRange>) -> Result<u64> {
        let ranges: Vec<barge_core::KeyRange> =
            ranges.into_iter().enumerate().map(|(id, range)| barge_core::KeyRange { id, ..range }).collect();
        let fields = self.fields();
        let job = self.job(whole, &fields, &ranges, barge_core::Conflict::Upsert);
        let counters = crate::job::CopyCounters::default();
        crate::copy::ranges::copy_ranges(&job, &counters, None)?;
        let written = counters.rows_written.load(Ordering::Relaxed);
        for (total, part) in
            [(&self.counters.rows_read, &counters.rows_read), (&self.counters.rows_written, &counters.rows_written)]
        {
            total.fetch_add(part.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(written)
    }

    /// Deletes the keys in the target that the source no longer has, then compares again (a
    /// verdict lists a bounded number of keys at a time). Returns the rows deleted.
    fn delete_missing(
        &self,
        comparison: &Comparison<'_>,
        verdict: &mut TableVerdict,
        ctx: crate::context::Ctx<'_>,
    ) -> Result<u64> {
        let deletes = self.run.target.key_deletes().ok_or_else(|| {
            Error::unsupported(self.run.target.display_name(), "delete rows by key (--detect-deletes)")
        })?;
        let key: Vec<String> = self.table.output.key_columns().into_iter().map(str::to_string).collect();
        let (mut rows_deleted, mut rounds) = (0, 0);
        while verdict.diff.extra_total > 0 && rounds < MAX_DELETE_ROUNDS {
            let deleted = deletes.delete_keys(&self.table.target_table, &key, &verdict.diff.extra)?;
            if deleted == 0 {
                break;
            }
            rows_deleted += deleted;
            rounds += 1;
            *verdict = comparison.compare(None, None, ctx)?;
        }
        Ok(rows_deleted)
    }

    pub(crate) fn report(&self, finished: Finished) -> TableReport {
        let (rows_read, rows_written, rows_rejected) = self.rows();
        let (c, options, name) = (&self.counters, self.run.options, self.name());
        let seconds = |ns: &std::sync::atomic::AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e9;
        TableReport {
            table: name.into(),
            target_table: self.table.target_table.clone(),
            status: "copied".into(),
            error: None,
            rows_read,
            rows_written,
            rows_rejected,
            partitions: self.layout.ranges.len(),
            seconds: self.started.elapsed().as_secs_f64(),
            verified: finished.verdict.as_ref().map(|v| v.matched),
            diff: finished.verdict.filter(|v| !v.matched).map(|v| v.diff),
            notices: finished.notices.into_iter().chain(self.behind.lock().expect("notices lock").drain(..)).collect(),
            transformed: self.table.transform.is_some(),
            retries: c.retries.load(Ordering::Relaxed),
            ranges_resumed: self.earlier.map_or(0, |e| e.done.len()),
            rows_deleted: finished.rows_deleted,
            watermark: self.table.incremental.as_ref().and_then(|i| i.until.clone()),
            stages: StageSeconds {
                read: seconds(&c.read_ns),
                cpu: seconds(&c.cpu_ns),
                write: seconds(&c.write_ns),
                verify: finished.verify_seconds,
            },
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            timeline: finished.copy_timeline,
            verify_timeline: finished.verify_timeline,
            rejects_file: options
                .rejects
                .as_ref()
                .filter(|_| rows_rejected > 0)
                .map(|log| log.path(name).display().to_string()),
        }
    }
}
