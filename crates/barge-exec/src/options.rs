//! How a run executes: parallelism, batch size, verification, rejects, retries, the ledger.

use std::sync::Arc;

use barge_core::{Budget, RejectLog};

use crate::ledger::Ledger;
use crate::retry::DEFAULT_RETRIES;

/// How a run executes.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Readers and writers per table, and threads in the CPU pool.
    pub workers: usize,
    /// Rows per record batch.
    pub batch_rows: usize,
    /// Bytes per record batch: a batch closes at `batch_rows` rows or this many bytes.
    pub batch_bytes: usize,
    /// Verify each table after copying it.
    pub verify: bool,
    /// Add the source's foreign keys to created tables once every table is loaded.
    pub foreign_keys: bool,
    /// Where rejected rows go (required for tables with an error budget).
    pub rejects: Option<Arc<RejectLog>>,
    /// The whole run's budget of rejected rows.
    pub run_budget: Budget,
    /// Times a range that fails transiently is copied again.
    pub retries: u32,
    /// Where the run keeps its ledger (`--state`, for `--resume`), if anywhere.
    pub ledger: Option<Ledger>,
    /// Let the source lock the database briefly to read as one snapshot (MySQL's FTWRL);
    /// `--no-lock` clears it.
    pub snapshot_lock: bool,
    /// Stop the run at the first table that fails (`--fail-fast`), instead of reporting it and
    /// going on with the others.
    pub fail_fast: bool,
    /// What to do with a value the target cannot store in any column (NaN into MySQL, NUL in text
    /// into PostgreSQL): stop the table, write NULL, or reject the row.
    pub unrepresentable: barge_core::values::ValuePolicy,
    /// Create and empty the target tables and record the plan in the ledger, then stop: the
    /// coordinator of a distributed run, whose workers copy the ranges.
    pub prepare_only: bool,
    /// A distributed run's worker: the guard over the range it holds.
    pub fence: Option<Arc<dyn Fence>>,
    /// A distributed run's coordinator: the target's verification digests are taken by the
    /// workers, claimed like ranges.
    pub digests: Option<Arc<dyn crate::DigestShare>>,
}

/// The guard a distributed run's worker keeps over the range it holds: its writers' sessions are
/// recorded before they write (so that a worker taking the range over can end them), and before
/// each commit and each retry the range must still be its.
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// A writer opened a session (its id, where the target has one).
    fn writer_opened(&self, session: Option<String>) -> barge_core::Result<()>;
    /// An error when the range is no longer this worker's.
    fn still_held(&self) -> barge_core::Result<()>;
}

impl ExecOptions {
    /// When readers close a batch.
    pub fn batch(&self) -> barge_core::BatchSize {
        barge_core::BatchSize { rows: self.batch_rows.max(1), bytes: self.batch_bytes.max(1) }
    }

    /// Options with no reject handling: the first bad row stops the copy.
    pub fn new(workers: usize, batch_rows: usize, verify: bool) -> Self {
        ExecOptions {
            workers,
            batch_rows,
            batch_bytes: barge_core::BatchSize::DEFAULT_BYTES,
            verify,
            foreign_keys: false,
            rejects: None,
            run_budget: Budget::None,
            retries: DEFAULT_RETRIES,
            ledger: None,
            snapshot_lock: true,
            fail_fast: false,
            unrepresentable: Default::default(),
            prepare_only: false,
            fence: None,
            digests: None,
        }
    }
}
