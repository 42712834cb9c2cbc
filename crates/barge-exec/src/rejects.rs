//! Rejected rows: recorded against the table's and the run's error budgets, held per range until
//! the range commits, then written to the reject file (so a retried range lists them once).

use std::sync::atomic::Ordering;

use arrow_array::RecordBatch;
use barge_core::rejects::{columns_json, key_shown, row_json};
use barge_core::{Budget, Error, KeySpec, Reject, Result, TableInfo};

use crate::job::{CopyCounters, CopyJob, RangeTally};

/// Why a row was rejected, and at which stage (`transform` or `write`).
pub(crate) struct RowFailure {
    pub column: Option<String>,
    pub reason: String,
    pub stage: &'static str,
}

/// Indices of the key columns (all columns for a table without a key).
pub(crate) fn key_columns(table: &TableInfo) -> &[usize] {
    match &table.key {
        KeySpec::Primary(columns) => columns,
        _ => &[],
    }
}

impl CopyJob<'_> {
    /// Records one rejected row (row `row` of `batch`, whose key columns are `key`) of a range, and
    /// enforces the table's and the run's budgets. Without a budget the reject is the copy's error.
    pub(crate) fn reject(
        &self,
        counters: &CopyCounters,
        tally: &RangeTally,
        (batch, row, key): (&RecordBatch, usize, &[usize]),
        failure: RowFailure,
    ) -> Result<()> {
        let RowFailure { column, reason, stage } = failure;
        let (Some(log), true) =
            (self.rejects, self.budget.tolerates_rejects() || self.run_rejects.2.tolerates_rejects())
        else {
            return Err(Error::BadValue {
                table: self.table.name.clone(),
                column: column.unwrap_or_else(|| "-".into()),
                key: key_shown(batch, row, key),
                reason: format!("{reason} (no error_budget: the first bad row stops the copy)"),
            });
        };
        let key_json = columns_json(batch, row, key.iter().copied());
        let reject = Reject { key: key_json, column, reason, stage: stage.into(), row: row_json(batch, row) };
        tally.rejects.lock().expect("rejects lock").push(reject);
        tally.rejected.fetch_add(1, Ordering::Relaxed);
        let rejected = counters.rows_rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let read = counters.rows_read.load(Ordering::Relaxed).max(self.table.estimated_rows);
        if self.budget.exceeded(rejected, read) {
            return Err(Error::BudgetExceeded {
                scope: format!("table `{}`", self.table.name),
                rejected,
                budget: self.budget.to_string(),
                file: log.path(&self.table.name).display().to_string(),
            });
        }
        // The run's budget against the run's rows: this table's and those of the tables before it.
        let (earlier, earlier_read, run_budget) = self.run_rejects;
        if run_budget != Budget::None && run_budget.exceeded(earlier + rejected, earlier_read + read) {
            return Err(Error::BudgetExceeded {
                scope: "the run".into(),
                rejected: earlier + rejected,
                budget: run_budget.to_string(),
                file: log.dir().display().to_string(),
            });
        }
        Ok(())
    }

    /// Writes the waiting rejects of `ranges` to the reject file.
    pub(crate) fn flush_rejects(&self, tallies: &[RangeTally], ranges: impl IntoIterator<Item = usize>) -> Result<()> {
        let Some(log) = self.rejects else { return Ok(()) };
        for range in ranges {
            for reject in std::mem::take(&mut *tallies[range].rejects.lock().expect("rejects lock")) {
                log.record(&self.table.name, &reject)?;
            }
        }
        Ok(())
    }
}
