//! The traits an engine crate implements. They are deliberately small: a source describes, samples
//! and streams; a target creates tables and hands out writers. Everything else (partitioning,
//! hashing, scheduling, verification) is built on top of them once, engine-agnostically.
//!
//! All methods are blocking and are called from plain threads owned by the runtime (never from a
//! rayon worker or a tokio runtime thread). An engine with an async driver keeps its own runtime and
//! blocks on it inside these methods, doing any CPU-heavy decode on the calling thread.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field};

use crate::error::Result;
use crate::model::{Key, KeyRange, KeyStats, TableInfo};

/// Opens databases for one engine. Registered once in the CLI.
pub trait EngineFactory: Send + Sync {
    /// The engine's name, for messages (`sqlite`, `postgres`).
    fn name(&self) -> &'static str;
    /// URL schemes this engine accepts, without `://`.
    fn schemes(&self) -> &'static [&'static str];
    /// Opens an existing database for reading. A missing database is [`crate::Error::SourceNotFound`].
    fn open_source(&self, url: &str) -> Result<Arc<dyn Source>>;
    /// Opens (for file engines: creates if needed) a database for writing. Called only after the
    /// whole plan has been validated, so that bad input never leaves a file or a table behind.
    fn open_target(&self, url: &str) -> Result<Arc<dyn Target>>;
    /// Checks a URL's syntax without touching anything.
    fn check_url(&self, url: &str) -> Result<()>;
    /// Creates an empty scratch place next to the database at `url` (SQLite: a file beside it;
    /// PostgreSQL: a schema; MySQL: a database) named after `tag`, for benchmarks; returns the
    /// URL that targets it.
    fn create_scratch(&self, url: &str, tag: &str) -> Result<String>;

    /// Removes a scratch place made by [`Self::create_scratch`].
    fn drop_scratch(&self, scratch_url: &str) -> Result<()>;

    /// True when two URLs of this engine name the same database (copying a database onto itself
    /// with `--if-exists truncate` would destroy the source).
    fn same_database(&self, a: &str, b: &str) -> bool {
        a == b
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

    /// Streams the rows of `range` as record batches of at most `batch_rows` rows with the table's
    /// schema, in any order. `emit` returning an error stops the read and returns that error.
    fn read_range(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch_rows: usize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()>;

    /// The largest value of `column` among the rows `table` selects (its `filter`, not its
    /// `window`), in the engine's own representation, as incremental watermarks are kept.
    fn column_max(&self, table: &TableInfo, column: &str) -> Result<Option<crate::Scalar>>;

    /// Conversions the reads of `table` applied that a user must hear about (e.g. "column `d`: 3
    /// zero dates read as NULL"), one line each; reported with the table and logged.
    fn notices(&self, table: &str) -> Vec<crate::Notice> {
        let _ = table;
        Vec::new()
    }
}

/// Rows per DELETE statement of [`Target::delete_keys`].
pub const DELETE_CHUNK: usize = 500;

/// The values of one reported key (a JSON array, or a lone value for a one-column key).
pub fn key_values(key: &serde_json::Value) -> Vec<&serde_json::Value> {
    match key {
        serde_json::Value::Array(values) => values.iter().collect(),
        single => vec![single],
    }
}

/// How a target stores one Arrow field, and what it reads it back as.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetColumn {
    /// The column type in the target's DDL.
    pub native_type: String,
    /// The Arrow type the target's own mapping reads that column back as; comparing it with the
    /// source field's type (see [`crate::types::fidelity`]) says whether the move is exact.
    pub read_back: DataType,
}

/// The one way targets pick a column for a source field, shared so that engines only declare their
/// choice: a source of the same `engine` keeps its native type (field metadata); otherwise
/// `choose(logical type, Arrow type)` names one from the engine's mapping; `read_back` resolves the
/// native type to the Arrow type it reads back as. No choice, or one that does not resolve, is
/// [`crate::Error::UnsupportedType`] naming the table, column and type.
pub fn choose_column(
    engine: &str,
    display_engine: &str,
    table: &str,
    field: &Field,
    choose: impl FnOnce(Option<&str>, &DataType) -> Option<String>,
    read_back: impl Fn(&str) -> Option<DataType>,
) -> Result<TargetColumn> {
    let meta = field.metadata();
    let native = match (meta.get(crate::META_ENGINE), meta.get(crate::META_NATIVE_TYPE)) {
        (Some(source_engine), Some(native)) if source_engine == engine => Some(native.clone()),
        _ => choose(logical_type(field), field.data_type()),
    };
    match native.and_then(|native| read_back(&native).map(|read_back| (native, read_back))) {
        Some((native_type, read_back)) => Ok(TargetColumn { native_type, read_back }),
        None => Err(crate::Error::UnsupportedType {
            table: table.into(),
            column: field.name().clone(),
            type_name: field.data_type().to_string(),
            reason: Some(format!("{display_engine} has no column type for it in barge's mapping")),
        }),
    }
}

/// The field's engine-independent logical type ([`crate::META_LOGICAL`]), if any.
pub fn logical_type(field: &Field) -> Option<&str> {
    field.metadata().get(crate::META_LOGICAL).map(String::as_str)
}

/// A batch ready for a writer: encoding runs on the CPU pool, the writer only does I/O.
#[derive(Debug)]
pub enum Encoded {
    /// The writer consumes Arrow directly (e.g. binding prepared-statement parameters).
    Arrow(RecordBatch),
    /// The writer streams pre-encoded bytes (e.g. a COPY or LOAD DATA payload).
    Bytes { rows: usize, bytes: Vec<u8> },
}

impl Encoded {
    /// Rows in this batch.
    pub fn rows(&self) -> usize {
        match self {
            Encoded::Arrow(b) => b.num_rows(),
            Encoded::Bytes { rows, .. } => *rows,
        }
    }
}

/// A database that rows are written to.
pub trait Target: Send + Sync {
    /// The database for messages, with any password redacted.
    fn display_name(&self) -> String;

    /// Rows in `table`, or `None` when the table does not exist.
    fn table_rows(&self, table: &str) -> Result<Option<u64>>;

    /// The target column for a source field (same-engine sources may keep their native type via
    /// field metadata). An impossible mapping is [`crate::Error::UnsupportedType`].
    fn column_for(&self, table: &str, field: &Field) -> Result<TargetColumn>;

    /// The statement(s) [`Self::create_table`] runs, for plans to show.
    fn table_ddl(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> String;

    /// Creates `name` with the given columns; `key` names the primary-key columns.
    fn create_table(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> Result<()>;

    /// Removes every row of `name`.
    fn truncate_table(&self, name: &str) -> Result<()>;

    /// Column names of an existing table, in order.
    fn table_columns(&self, name: &str) -> Result<Vec<String>>;

    /// At most how many writers may load one table at once (1 for an engine with a single writer).
    fn max_writers(&self) -> usize {
        usize::MAX
    }

    /// The encoder for batches bound for `table` (whose columns are `fields`, in order), built once
    /// per table copy: it can resolve each column's target type up front. The default hands Arrow
    /// batches to the writer unchanged.
    fn encoder(&self, table: &str, fields: &[Field]) -> Result<Arc<dyn BatchEncoder>> {
        let _ = (table, fields);
        Ok(Arc::new(ArrowPassthrough))
    }

    /// After a table barge created has been loaded: builds its secondary and unique indexes (faster
    /// than maintaining them row by row) and starts identity generators after the largest value.
    fn finish_table(&self, table: &str, source: &TableInfo) -> Result<()>;

    /// Deletes the rows whose key `columns` hold one of `keys` (each a JSON array of the key's
    /// values, as verification reports keys): rows gone from the source of an incremental table.
    /// Returns the rows deleted.
    fn delete_keys(&self, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64>;

    /// Adds foreign keys once every table is loaded (so load order does not matter).
    fn add_foreign_keys(&self, table: &str, foreign_keys: &[crate::ForeignKeyInfo]) -> Result<()>;

    /// A writer with its own connection and transaction, loading `columns` of `table`.
    fn writer(&self, table: &str, columns: &[Field], options: &WriteOptions) -> Result<Box<dyn TableWriter>>;
}

/// What a writer does when a row's key already exists in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// The row is refused (a duplicate key is a row failure).
    #[default]
    Error,
    /// The target's row is kept, the incoming one skipped.
    Skip,
    /// The target's row is updated with the incoming values.
    Upsert,
}

/// How a writer loads rows.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub conflict: Conflict,
    /// The target's key columns (needed by `Skip` and `Upsert`).
    pub key: Vec<String>,
    /// Make every [`TableWriter::write`] atomic: a batch the target refuses for its data fails with
    /// [`crate::Error::RowRejected`] and leaves nothing behind, the transaction still usable, so the
    /// runtime can split the batch to find the failing rows.
    pub isolate_rows: bool,
}

impl WriteOptions {
    /// The standard SQL `ON CONFLICT (key) DO NOTHING | DO UPDATE SET c = excluded.c` clause of the
    /// conflict mode, for engines that speak it (empty for [`Conflict::Error`]). `columns` are the
    /// columns written, `quote` quotes an identifier.
    pub fn on_conflict_clause(&self, columns: &[String], quote: impl Fn(&str) -> String) -> Result<String> {
        if self.conflict == Conflict::Error {
            return Ok(String::new());
        }
        if self.key.is_empty() {
            return Err(crate::Error::Config(format!(
                "conflict mode {:?} needs the table's key columns",
                self.conflict
            )));
        }
        let key = self.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let updates: Vec<String> =
            columns.iter().filter(|c| !self.key.contains(c)).map(|c| format!("{0} = excluded.{0}", quote(c))).collect();
        Ok(match self.conflict {
            Conflict::Upsert if !updates.is_empty() => {
                format!(" ON CONFLICT ({key}) DO UPDATE SET {}", updates.join(", "))
            }
            _ => format!(" ON CONFLICT ({key}) DO NOTHING"),
        })
    }
}

/// A vectorised rewrite of a table's record batches (a pipeline's renames, drops, casts and
/// computed columns), applied on the CPU pool before rows are hashed and encoded.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// The schema of the batches [`Self::apply`] returns.
    fn output_schema(&self) -> arrow_schema::SchemaRef;
    /// Where source column `index` lands in the output unchanged (kept or renamed), if it does.
    fn passthrough(&self, index: usize) -> Option<usize>;
    /// Rewrites one batch. Rows that cannot be transformed are left out of the output and listed.
    fn apply(&self, batch: &RecordBatch) -> Result<Transformed>;
}

/// The output of a [`Transform`]: the rows that succeeded, and the rows that did not.
#[derive(Debug)]
pub struct Transformed {
    pub batch: RecordBatch,
    /// `(row index in the input batch, column, reason)`, in row order.
    pub failures: Vec<(usize, String, String)>,
}

/// Turns record batches into what a target's writers consume. Runs on the CPU pool, so it is where
/// per-value encoding work belongs (never on a writer's I/O thread or an async runtime).
pub trait BatchEncoder: Send + Sync {
    fn encode(&self, batch: RecordBatch) -> Result<Encoded>;
}

/// Hands batches over as Arrow (targets whose writers bind Arrow values directly).
#[derive(Debug)]
pub struct ArrowPassthrough;

impl BatchEncoder for ArrowPassthrough {
    fn encode(&self, batch: RecordBatch) -> Result<Encoded> {
        Ok(Encoded::Arrow(batch))
    }
}

/// Loads batches into one table over one connection. Rows become visible only at [`Self::commit`].
pub trait TableWriter: Send {
    /// Writes one batch, returning the rows written (rows skipped under [`Conflict::Skip`] count as
    /// written: the target holds a row with their key).
    fn write(&mut self, batch: Encoded) -> Result<u64>;
    /// Makes everything written so far durable and visible, and starts a new transaction.
    fn commit(&mut self) -> Result<()>;

    /// Deletes the rows of `range` over `columns` (the table's key columns) inside the writer's
    /// open transaction, so that a range a dead run may have left behind, whole or not at all, is
    /// loaded again exactly once (resume). Returns the rows deleted.
    fn clear_range(&mut self, columns: &[String], range: &crate::KeyRange) -> Result<u64>;
}
