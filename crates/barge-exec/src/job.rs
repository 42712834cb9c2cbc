//! One table copy as the stages see it: what is copied where ([`CopyJob`]), its counters, and what
//! each range has done in the current attempt.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use arrow_schema::Field;
use barge_core::{Budget, KeyRange, Reject, RejectLog, Source, TableInfo, Target, Transform, WriteOptions};
use barge_verify::Buckets;

use crate::context::Ctx;
use crate::ledger::TableLedgerView;

/// Everything one table copy needs.
pub(crate) struct CopyJob<'a> {
    pub source: &'a dyn Source,
    pub target: &'a dyn Target,
    /// The table as read.
    pub table: &'a TableInfo,
    /// The table as written (the transform's output; `table` without one).
    pub output: &'a TableInfo,
    pub transform: Option<&'a dyn Transform>,
    pub write_options: WriteOptions,
    /// Where rejected rows go; `None` (or [`Budget::None`]) makes the first bad row fail the copy.
    pub rejects: Option<&'a RejectLog>,
    pub budget: Budget,
    /// Rows other tables of the run rejected and read, and the run's budget.
    pub run_rejects: (u64, u64, Budget),
    pub target_table: &'a str,
    pub fields: &'a [Field],
    pub ranges: &'a [KeyRange],
    pub ctx: Ctx<'a>,
    /// Times a range that failed transiently is read and written again.
    pub retries: u32,
    /// Where committed ranges are recorded, if the run keeps a ledger.
    pub ledger: Option<TableLedgerView<'a>>,
    /// Digest source rows while copying (for verification without re-reading the source).
    pub hash: bool,
    /// Digest buckets inside each range, when the key allows them.
    pub buckets: Option<&'a Buckets>,
    /// Values the target cannot store, and what to do with one.
    pub unstorable: (barge_core::values::Unstorable, barge_core::values::ValuePolicy),
    /// A distributed run's worker: the guard over the range it holds.
    pub fence: Option<&'a dyn crate::options::Fence>,
}

impl CopyJob<'_> {
    /// Before a commit or a retry: an error when a distributed worker no longer holds its range.
    pub(crate) fn still_held(&self) -> barge_core::Result<()> {
        self.fence.map_or(Ok(()), |f| f.still_held())
    }

    /// Records a new writer's session with a distributed worker's fence.
    pub(crate) fn writer_opened(&self, writer: &mut dyn barge_core::TableWriter) -> barge_core::Result<()> {
        match self.fence {
            Some(fence) => fence.writer_opened(writer.session_id()?),
            None => Ok(()),
        }
    }
}

impl CopyJob<'_> {
    pub(crate) fn isolating(&self) -> bool {
        self.write_options.isolate_rows
    }

    /// Whether writers clear each range before loading it (resuming a keyed table).
    pub(crate) fn clears_ranges(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| l.clear) && self.output.key.is_primary()
    }
}

/// Counters of one table copy.
#[derive(Default)]
pub(crate) struct CopyCounters {
    /// Busy time of each stage, summed over its threads: reading and decoding (not waiting on the
    /// channel), transforming + hashing + encoding, writing and committing.
    pub read_ns: AtomicU64,
    pub cpu_ns: AtomicU64,
    pub write_ns: AtomicU64,
    /// Arrow bytes read.
    pub bytes_read: AtomicU64,
    pub rows_read: AtomicU64,
    pub rows_written: AtomicU64,
    pub rows_rejected: AtomicU64,
    /// Range attempts that failed transiently and were done again.
    pub retries: AtomicU64,
    /// Values the target cannot store written as NULL, by column (ranges that committed).
    pub nulled: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Rows written over time.
    pub timeline: crate::report::Timeline,
}

/// What one range has done in the current attempt: taken back out of the counters if the attempt
/// fails. Its rejected rows wait here until the range commits, so a retried range does not list
/// them twice.
#[derive(Default)]
pub(crate) struct RangeTally {
    pub read: AtomicU64,
    pub written: AtomicU64,
    pub rejected: AtomicU64,
    pub rejects: Mutex<Vec<Reject>>,
    /// Values written as NULL in this attempt, by column.
    pub nulled: Mutex<std::collections::BTreeMap<String, u64>>,
}
