//! Change capture: a source's feed of committed changes, and a target applying them with the
//! position it applied up to, in the same transaction.
//!
//! A feed names the rows that changed (by key) in commit order; the runtime reads those rows'
//! current values from the source ([`ChangeFeed::read_keys`], one snapshot per batch) and writes
//! them, or deletes the keys the source no longer holds. A change replayed twice, or replayed over
//! a bulk copy that already saw it, converges to the source's rows (see `barge-exec`'s `sync`).

use arrow_array::RecordBatch;

use crate::error::Result;
use crate::model::TableInfo;

/// One committed change of one table, in the source's commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The source table's name.
    pub table: String,
    /// The position just after the change's transaction committed: every change at or before a
    /// position a target recorded for this table is applied there.
    pub position: u64,
    pub kind: ChangeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// The row with this key was inserted, updated or deleted (an update that changed the key
    /// names both keys). The values are the key columns' text in the source's own form, in the
    /// order of [`TableInfo::change_key`] (every column, for a table without a key); `None` is
    /// SQL NULL.
    Row(Vec<Option<String>>),
    /// As [`ChangeKind::Row`], and the source logged every value of the row after the change:
    /// row `image` of the table's [`ChangeBatch::images`] holds them, so the row need not be
    /// read back.
    Image { key: Vec<Option<String>>, image: u32 },
    /// Every row of the table went.
    Truncate,
    /// The table's columns as the source now describes them (PostgreSQL sends them before a
    /// table's changes): the names, in order. A list other than the planned one is DDL.
    Columns(Vec<String>),
    /// A DDL statement on the table (MySQL logs them as statements).
    Ddl(String),
}

/// Changes read from a feed: whole transactions, in commit order.
#[derive(Clone, Debug, Default)]
pub struct ChangeBatch {
    pub changes: Vec<Change>,
    /// The position after the last transaction read (`None`: nothing was read).
    pub end: Option<u64>,
    /// Source transactions the batch holds.
    pub transactions: u64,
    /// When the last transaction read committed on the source (seconds since the Unix epoch).
    pub committed_at: Option<f64>,
    /// A position the read covered entirely, when it read everything the source had (not cut
    /// short by `max` or `upto`): every transaction committed before it is in this batch or an
    /// earlier one. Lets a quiet stream move on without a change to apply.
    pub scanned: Option<u64>,
    /// Rows as changes left them, by table (in the table's schema, as [`ChangeFeed::read_keys`]
    /// returns rows), numbered across the table's batches in order: see [`ChangeKind::Image`].
    pub images: std::collections::HashMap<String, Vec<RecordBatch>>,
}

/// The rows [`ChangeFeed::read_keys`] found, and the keys it did not.
#[derive(Debug, Default)]
pub struct KeyRows {
    /// Current rows of the keys asked for, in the table's schema.
    pub rows: Vec<RecordBatch>,
    /// The keys asked for that no row holds, as batches of the key columns.
    pub absent: Vec<RecordBatch>,
}

/// Capability of a source: a stream of its committed changes (PostgreSQL logical decoding,
/// MySQL's binlog).
pub trait ChangeFeed: Send + Sync {
    /// Whether this source can feed changes of `tables`: the server settings and privileges it
    /// needs, and keys on every table. An error names what to change and how.
    fn check(&self, tables: &[TableInfo]) -> Result<()>;

    /// Creates stream `name` over `tables` (PostgreSQL: a publication and a logical replication
    /// slot), keeping every change committed from now on until [`Self::confirm`]; an existing
    /// stream is kept. Returns the position it starts at.
    fn open_stream(&self, name: &str, tables: &[TableInfo]) -> Result<u64>;

    /// The source's current position: every transaction committed so far ends at or before it.
    fn current_position(&self) -> Result<u64>;

    /// The changes to `tables` in stream `name` after position `after` (the target holds every
    /// change up to it; a source that keeps the stream's place itself may go by that instead), of
    /// transactions that committed before `upto` (`None`: all so far), whole transactions of
    /// about `max` changes at most.
    fn read_changes(
        &self,
        name: &str,
        tables: &[TableInfo],
        after: u64,
        upto: Option<u64>,
        max: usize,
    ) -> Result<ChangeBatch>;

    /// The target applied every change up to `position`: the source may free them.
    fn confirm(&self, name: &str, position: u64) -> Result<()>;

    /// Bytes of the source's log that stream `name` keeps (`None`: it does not exist).
    fn retained_bytes(&self, name: &str) -> Result<Option<u64>>;

    /// Drops stream `name` (its slot and publication); returns the bytes it was keeping, or
    /// `None` when it did not exist.
    fn drop_stream(&self, name: &str) -> Result<Option<u64>>;

    /// A position as the source writes it (PostgreSQL: `0/16B3748`).
    fn describe_position(&self, position: u64) -> String;

    /// The current rows of `table` whose keys (as in [`ChangeKind::Row`]) are `keys` (distinct),
    /// and the keys no row holds, read in one snapshot. For a table without a key every row
    /// equal to a key is returned (each copy of it), and the absent keys as rows of the table.
    fn read_keys(&self, table: &TableInfo, keys: &[Vec<Option<String>>]) -> Result<KeyRows>;
}

/// Capability of a target: where it keeps the positions change streams applied up to (a small
/// `barge_sync` table), read here and written by [`ChangeWriter::record_position`].
pub trait ChangePositions: Send + Sync {
    /// Positions recorded for `stream`, by table (`""`: the stream itself, recorded when its bulk
    /// copy ended). Empty when nothing was recorded; creates nothing.
    fn positions(&self, stream: &str) -> Result<Vec<(String, u64)>>;

    /// Records `position` for `table` of `stream` outside any writer (the stream's own row),
    /// creating the table when it is missing (before any writer records a position in it).
    fn record(&self, stream: &str, table: &str, position: u64) -> Result<()>;

    /// Forgets every position of `stream`.
    fn forget(&self, stream: &str) -> Result<()>;

    /// The streams that recorded positions here (none when the table does not exist); creates
    /// nothing.
    fn streams(&self) -> Result<Vec<String>>;
}

/// Capability of a writer: applying changes inside its open transaction, with the position they
/// reach, so a batch is committed with its position or not at all.
pub trait ChangeWriter {
    /// Removes every row of the writer's table.
    fn truncate(&mut self) -> Result<()>;

    /// Deletes the rows whose key `columns` hold one of `keys` (JSON arrays, as
    /// [`super::KeyDeletes::delete_keys`] takes them). Returns the rows deleted.
    fn delete_keys(&mut self, columns: &[String], keys: &[serde_json::Value]) -> Result<u64>;

    /// Deletes every row equal, column by column with NULL equal to NULL, to one of `rows`
    /// (encoded by the writer's table's encoder): how a table without a key loses the rows a
    /// change replaced. Returns the rows deleted.
    fn delete_rows(&mut self, rows: crate::Encoded) -> Result<u64>;

    /// Records that `table` of `stream` holds every change up to `position`.
    fn record_position(&mut self, stream: &str, table: &str, position: u64) -> Result<()>;
}

/// The table targets keep change positions in.
pub const POSITIONS_TABLE: &str = "barge_sync";

/// Sync applies changes by key: every table needs a primary key, or a unique index over NOT NULL
/// columns that planning took as its key (an error naming the first that has neither, and what
/// to do).
pub fn keyed(tables: &[TableInfo]) -> Result<()> {
    match tables.iter().find(|t| !matches!(t.key, crate::KeySpec::Primary(_))) {
        Some(table) => Err(crate::Error::Config(format!(
            "source table `{}` has no primary key (nor a unique index over NOT NULL columns): sync applies \
             changes by key (add a primary key, or leave the table out with --exclude)",
            table.name
        ))),
        None => Ok(()),
    }
}
