//! One table of a copy run: its rows through the stages, then the accounting that must add up
//! (rows read = rows written + rows rejected, within the error budget), then finishing and
//! verification ([`crate::copy::finish`]), then its report.

use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow_schema::Field;
use barge_core::ledger::TableLedger;
use barge_core::{Conflict, Error, Result, TableInfo, WriteOptions};
use barge_plan::TablePlan;
use barge_verify::Buckets;

use crate::copy::prepare::Layout;
use crate::copy::ranges::copy_ranges;
use crate::copy::run::CopyRun;
use crate::digests::RangeDigests;
use crate::job::{CopyCounters, CopyJob};
use crate::ledger::TableLedgerView;
use crate::progress::Phase;
use crate::report::TableReport;
use crate::verify::buckets::bucket_layout;

/// One table's copy.
pub(crate) struct TableCopy<'a> {
    pub run: &'a CopyRun<'a>,
    pub table: &'a TablePlan,
    pub layout: &'a Layout,
    /// What an interrupted run recorded of the table (resuming).
    pub earlier: Option<&'a TableLedger>,
    /// Compare the target with the source afterwards (verification, or delete detection).
    pub compare: bool,
    pub detect_deletes: bool,
    pub buckets: Option<Buckets>,
    pub counters: CopyCounters,
    pub started: Instant,
    /// What verification found behind an incremental table's watermark (for the report).
    pub behind: std::sync::Mutex<Vec<String>>,
}

impl<'a> TableCopy<'a> {
    pub(crate) fn new(run: &'a CopyRun<'a>, table: &'a TablePlan, layout: &'a Layout) -> Self {
        let detect_deletes = table.incremental.as_ref().is_some_and(|i| i.detect_deletes);
        TableCopy {
            run,
            table,
            layout,
            earlier: run.options.ledger.as_ref().and_then(|l| l.earlier(&table.source.name)),
            compare: run.options.verify || detect_deletes,
            detect_deletes,
            buckets: None,
            counters: CopyCounters::default(),
            started: Instant::now(),
            behind: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn name(&self) -> &'a str {
        &self.table.source.name
    }

    /// Copies, checks, finishes and verifies the table.
    pub(crate) fn run(&mut self) -> Result<TableReport> {
        self.run.ctx.progress.started(self.name(), Phase::Copy, self.table.source.estimated_rows);
        if self.compare {
            let (source, table) = (self.run.source, self.table);
            self.buckets = bucket_layout(source, &table.source, &table.output, &self.layout.ranges)?;
        }
        let copying = std::time::Instant::now();
        let digests = self.copy_rows()?;
        self.check_accounting()?;
        let (read, written, rejected) = self.rows();
        tracing::info!(
            "table `{}`: {} rows read, {} written, {} rejected in {:.2}s",
            self.name(),
            barge_core::text::count(read),
            barge_core::text::count(written),
            barge_core::text::count(rejected),
            copying.elapsed().as_secs_f64()
        );
        let finished = self.finish_and_verify(digests)?;
        Ok(self.report(finished))
    }

    /// The report of a table that failed with `error`: what it did, and the target's condition.
    /// A table barge's own DDL created in a run without a ledger is dropped here first, so that
    /// the condition reported is the one the target is left in.
    pub(crate) fn failed(&self, error: &Error) -> TableReport {
        let (rows_read, rows_written, rows_rejected) = self.rows();
        let target = match (&self.run.options.ledger, self.layout.created) {
            (Some(_), _) => {
                "its committed ranges are in the ledger: fix the cause and --resume to finish it".to_string()
            }
            // Made by barge's own DDL in this run, with no ledger to resume it: dropped again, so
            // a rerun starts clean (a table restored from the source's dump may have dependants).
            (None, true) if self.run.schema.is_none() => match self.run.target.drop_table(&self.table.target_table) {
                Ok(()) => format!("barge created `{}` and dropped it again: rerun once fixed", self.table.target_table),
                Err(drop) => format!(
                    "barge created `{}` and it holds {rows_written} row(s) (dropping it failed: {drop}): drop it, \
                     or rerun with --if-exists truncate",
                    self.table.target_table
                ),
            },
            (None, true) => format!(
                "barge created `{}` and it holds {rows_written} row(s): drop it, or rerun with --if-exists truncate",
                self.table.target_table
            ),
            (None, false) => {
                format!("`{}` holds the {rows_written} row(s) committed before the failure", self.table.target_table)
            }
        };
        TableReport {
            table: self.name().into(),
            target_table: self.table.target_table.clone(),
            status: "failed".into(),
            error: Some(crate::report::TableError {
                kind: error.kind().into(),
                message: error.to_string(),
                column: error.table_column().1.map(str::to_string),
                target,
                usage: error.is_usage(),
            }),
            rows_read,
            rows_written,
            rows_rejected,
            partitions: self.layout.ranges.len(),
            seconds: self.started.elapsed().as_secs_f64(),
            verified: None,
            diff: None,
            notices: Vec::new(),
            transformed: self.table.transform.is_some(),
            retries: self.counters.retries.load(Ordering::Relaxed),
            ranges_resumed: self.earlier.map_or(0, |e| e.done.len()),
            rows_deleted: 0,
            watermark: None,
            stages: Default::default(),
            bytes_read: self.counters.bytes_read.load(Ordering::Relaxed),
            timeline: Vec::new(),
            verify_timeline: Vec::new(),
            rejects_file: None,
        }
    }

    /// The rows of every range through the stages; the source digests of each range.
    fn copy_rows(&self) -> Result<RangeDigests> {
        let (table, options) = (self.table, self.run.options);
        let tolerant = table.budget.tolerates_rejects() || options.run_budget.tolerates_rejects();
        if tolerant && options.rejects.is_none() {
            return Err(Error::Config(format!("table `{}` has an error budget but no reject directory", self.name())));
        }
        if let Some(log) = &options.rejects {
            log.start(self.name())?;
        }
        let fields = self.fields();
        // A table barge created holds only this run's rows, whose keys are unique: no conflicts
        // (and PostgreSQL builds the key only after the load).
        let conflict = if self.layout.created { Conflict::Error } else { table.conflict };
        let mut job = self.job(&table.source, &fields, &self.layout.ranges, conflict);
        job.ledger = options.ledger.as_ref().map(|ledger| TableLedgerView {
            ledger,
            done: self.earlier.map(|e| &e.done),
            // Ranges an earlier attempt may have committed without recording: cleared first.
            clear: self.earlier.is_some(),
        });
        job.hash = self.compare;
        job.buckets = self.buckets.as_ref();
        let copied = copy_ranges(&job, &self.counters, None);
        if let Some(log) = &options.rejects {
            log.flush()?;
        }
        copied
    }

    /// The columns as written.
    pub(crate) fn fields(&self) -> Vec<Field> {
        self.table.columns.iter().map(|c| c.field.clone()).collect()
    }

    /// A copy of `ranges` of `read` (the table as stored) into the target with `conflict`: no
    /// ledger, no hashing, rejects as the table's.
    pub(crate) fn job<'b>(
        &'b self,
        read: &'b TableInfo,
        fields: &'b [Field],
        ranges: &'b [barge_core::KeyRange],
        conflict: Conflict,
    ) -> CopyJob<'b> {
        let (table, options) = (self.table, self.run.options);
        CopyJob {
            source: self.run.source,
            target: self.run.target,
            table: read,
            output: &table.output,
            transform: table.transform.as_deref(),
            write_options: WriteOptions {
                conflict,
                key: table.output.key_columns().into_iter().map(str::to_string).collect(),
                isolate_rows: table.budget.tolerates_rejects() || options.run_budget.tolerates_rejects(),
            },
            rejects: options.rejects.as_deref(),
            budget: table.budget,
            run_rejects: (
                self.run.run_rejected.load(Ordering::Relaxed),
                self.run.run_read.load(Ordering::Relaxed),
                options.run_budget,
            ),
            target_table: &table.target_table,
            fields,
            ranges,
            ctx: self.run.ctx,
            retries: options.retries,
            ledger: None,
            hash: false,
            buckets: None,
            unstorable: (self.run.target.unstorable(), options.unrepresentable),
            fence: options.fence.as_deref(),
        }
    }

    /// Rows read = rows written + rows rejected, and the rejects within the table's budget (checked
    /// against the rows read so far while copying; once more exactly).
    fn check_accounting(&self) -> Result<()> {
        let (read, written, rejected) = self.rows();
        self.run.run_rejected.fetch_add(rejected, Ordering::Relaxed);
        self.run.run_read.fetch_add(read, Ordering::Relaxed);
        if self.table.budget.exceeded(rejected, read) && rejected > 0 {
            let log = self.run.options.rejects.as_ref().expect("rejects need a reject log");
            return Err(Error::BudgetExceeded {
                scope: format!("table `{}`", self.name()),
                rejected,
                budget: self.table.budget.to_string(),
                file: log.path(self.name()).display().to_string(),
            });
        }
        if read != written + rejected {
            return Err(Error::RowsLost { table: self.name().into(), read, written, rejected });
        }
        Ok(())
    }

    /// (rows read, written, rejected).
    pub(crate) fn rows(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (
            c.rows_read.load(Ordering::Relaxed),
            c.rows_written.load(Ordering::Relaxed),
            c.rows_rejected.load(Ordering::Relaxed),
        )
    }
}
