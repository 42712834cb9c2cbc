//! Reading: what a source describes and how it streams a key range as Arrow.

use arrow_array::RecordBatch;

use super::Native;
use crate::error::Result;
use crate::model::{Key, KeyRange, KeyStats, TableInfo};

/// When a reader closes a record batch: at `rows` rows or once it holds about `bytes` bytes of
/// values, whichever comes first (a batch holds at least one row, however large), so that memory
/// is bounded in bytes whatever the rows' width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSize {
    pub rows: usize,
    pub bytes: usize,
}

impl BatchSize {
    /// Bytes per batch unless told otherwise (`--batch-bytes`).
    pub const DEFAULT_BYTES: usize = 4 << 20;

    /// At most `rows` rows of at most [`Self::DEFAULT_BYTES`].
    pub fn rows(rows: usize) -> Self {
        BatchSize { rows: rows.max(1), bytes: Self::DEFAULT_BYTES }
    }

    /// Whether a batch of `rows` rows holding `bytes` bytes is full.
    pub fn is_full(&self, rows: usize, bytes: usize) -> bool {
        rows >= self.rows || (rows > 0 && bytes >= self.bytes)
    }
}

/// A database that rows are read from.
pub trait Source: Send + Sync {
    /// The database for messages, with any password redacted.
    fn display_name(&self) -> String;

    /// User tables, in a stable order.
    fn list_tables(&self) -> Result<Vec<String>>;

    /// Describes one table; an unknown table is [`crate::Error::UnknownTable`], an unmappable column
    /// type is [`crate::Error::UnsupportedType`].
    fn table(&self, name: &str) -> Result<TableInfo>;

    /// Row count and min/max of the range columns within `range`.
    fn key_stats(&self, table: &TableInfo, range: &KeyRange) -> Result<KeyStats>;

    /// About `target` keys drawn uniformly from `range`, in the database's ascending key order
    /// (never sorted by barge, whose ordering may differ from the database's collation).
    fn sample_keys(&self, table: &TableInfo, range: &KeyRange, target: usize) -> Result<Vec<Key>>;

    /// Streams the rows of `range` as record batches of the table's schema, each closed at `batch`
    /// ([`BatchSize::is_full`], counting the values' bytes as read), in any order. `emit`
    /// returning an error stops the read and returns that error.
    fn read_range(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: BatchSize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()>;

    /// [`Self::read_range`], each batch with its rows as this engine sent them ([`Native`]) where
    /// it has an encoding a target of the same engine loads unchanged. With `decode` false the
    /// caller needs only those rows: a batch that comes with them may have no columns, just its
    /// row count. The default has no such encoding.
    fn read_range_native(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: BatchSize,
        decode: bool,
        emit: &mut dyn FnMut(RecordBatch, Option<Native>) -> Result<()>,
    ) -> Result<()> {
        let _ = decode;
        self.read_range(table, range, batch, &mut |rows| emit(rows, None))
    }

    /// The largest value of `column` among the rows `table` selects (its `filter`, not its
    /// `window`), in the engine's own representation, as incremental watermarks are kept. The
    /// default: this source cannot serve incremental tables.
    fn column_max(&self, table: &TableInfo, column: &str) -> Result<Option<crate::Scalar>> {
        let _ = (table, column);
        Err(crate::Error::unsupported(self.display_name(), "read incremental watermarks (column maxima)"))
    }

    /// The most bytes a row of this database can hold at all (PostgreSQL: 1 GB; MySQL: its
    /// `max_allowed_packet`; SQLite: its length limit): a target whose row limit is at least this
    /// needs no scan of the data. `None`: unknown, so the data is measured.
    fn row_cap(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The bytes of the widest row of `table` over `columns` (indices into its schema; the
    /// variable-width ones): what a target with a size limit compares with its limit before
    /// anything is written. `None`: this source cannot tell without reading every row itself.
    fn widest_row(&self, table: &TableInfo, columns: &[usize]) -> Result<Option<u64>> {
        let _ = (table, columns);
        Ok(None)
    }

    /// Has the source parse and resolve `table`'s row filter (a pipeline's `where`) without
    /// reading a row (`… WHERE filter LIMIT 0`), so a filter it refuses is an error before
    /// anything runs. The default checks nothing.
    fn check_filter(&self, table: &TableInfo) -> Result<()> {
        let _ = table;
        Ok(())
    }

    /// The bytes table `name` takes in the database, its indexes included, as the engine's
    /// statistics say (for `barge tables`). `None`: this engine cannot tell cheaply.
    fn table_bytes(&self, name: &str) -> Result<Option<u64>> {
        let _ = name;
        Ok(None)
    }

    /// The other schemas (PostgreSQL) or databases (MySQL) of this server that hold tables, for the
    /// message about a source with none (a mistyped name, most often).
    fn namespaces_with_tables(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Who this database is, whatever URL reached it (PostgreSQL: the cluster's system identifier,
    /// database and schema; MySQL: the server and database; SQLite: the file's canonical path),
    /// so that a copy onto itself through another spelling of the URL is refused. `None`: unknown.
    fn identity(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The source's plain views (not materialized ones), in portable SQL, for a copy that builds
    /// the target schema itself to create after the rows (see [`super::ViewDef`]).
    fn views(&self) -> Result<Vec<super::ViewDef>> {
        Ok(Vec::new())
    }

    /// Reading every range as of one instant.
    fn snapshots(&self) -> Option<&dyn SnapshotReads> {
        None
    }

    /// Dumping the schema with the engine's own tools, for an exact same-engine copy.
    fn schema_dump(&self) -> Option<&dyn super::SchemaDump> {
        None
    }

    /// Feeding committed changes (`barge sync`).
    fn change_feed(&self) -> Option<&dyn super::ChangeFeed> {
        None
    }

    /// The objects of the source besides its tables, their indexes, keys and defaults (views,
    /// functions, procedures, triggers, events, sequences no column owns): what a copy that
    /// builds the target schema itself does not carry, and lists as not migrated.
    fn other_objects(&self) -> Result<Vec<super::SchemaObject>> {
        Ok(Vec::new())
    }

    /// Conversions the reads of `table` applied that a user must hear about (e.g. "column `d`: 3
    /// zero dates read as NULL"), one line each; reported with the table and logged.
    fn notices(&self, table: &str) -> Vec<crate::Notice> {
        let _ = table;
        Vec::new()
    }
}

/// How a copy read its source: as one snapshot or not, and which.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// Every range was read as of one instant.
    pub consistent: bool,
    /// Which snapshot (`PostgreSQL snapshot 00000003-0000001B-1`), or why there is none.
    pub detail: String,
}

/// Capability: every later read of this source (ranges, and the reads that narrow a mismatch down
/// to keys) sees the database as of one instant, for as long as the source is open.
pub trait SnapshotReads: Send + Sync {
    /// Pins the snapshot; up to `readers` reads may run at once afterwards. `lock`: whether the
    /// engine may briefly lock the database to get a consistent start (MySQL's `FLUSH TABLES WITH
    /// READ LOCK`); without it, an engine that needs one reads without a snapshot and says so.
    fn pin_snapshot(&self, readers: usize, lock: bool) -> Result<SnapshotInfo>;
}

#[cfg(test)]
mod tests {
    use super::BatchSize;

    #[test]
    fn a_batch_is_full_at_its_rows_or_its_bytes_but_never_empty() {
        let batch = BatchSize { rows: 100, bytes: 1000 };
        assert!(!batch.is_full(99, 999));
        assert!(batch.is_full(100, 0));
        assert!(batch.is_full(3, 1000));
        assert!(!batch.is_full(0, 5000), "an empty batch is never full");
        assert_eq!(BatchSize::rows(0).rows, 1);
    }
}
