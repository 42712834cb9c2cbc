//! Writing: creating tables and handing out writers, plus the target-side capabilities.

use arrow_schema::Field;

use super::{ArrowPassthrough, BatchEncoder, Encoded, TargetColumn};
use crate::error::Result;
use crate::model::{ForeignKeyInfo, KeyRange, TableInfo};
use std::sync::Arc;

/// A database that rows are written to.
pub trait Target: Send + Sync {
    /// The database for messages, with any password redacted.
    fn display_name(&self) -> String;

    /// Rows in `table`, or `None` when the table does not exist.
    fn table_rows(&self, table: &str) -> Result<Option<u64>>;

    /// Whether `table` exists (without counting its rows, where the engine can tell).
    fn table_exists(&self, table: &str) -> Result<bool> {
        Ok(self.table_rows(table)?.is_some())
    }

    /// Column names of an existing table, in order.
    fn table_columns(&self, name: &str) -> Result<Vec<String>>;

    /// The target column for a source field (same-engine sources may keep their native type via
    /// field metadata). An impossible mapping is [`crate::Error::UnsupportedType`].
    fn column_for(&self, table: &str, field: &Field) -> Result<TargetColumn>;

    /// The statement(s) [`Self::create_table`] runs, for plans to show.
    fn table_ddl(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> String;

    /// Creates `name` with the given columns; `key` names the primary-key columns.
    fn create_table(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> Result<()>;

    /// Whether tables this target creates keep comments: columns' from their fields'
    /// [`crate::META_COMMENT`] (in [`Self::table_ddl`]) and the table's by [`Self::comment_table`].
    /// The plan lists the comments of a target that does not.
    fn keeps_comments(&self) -> bool {
        false
    }

    /// Sets the comment of table `name`, which this run created.
    fn comment_table(&self, name: &str, comment: &str) -> Result<()> {
        let _ = (name, comment);
        Err(crate::Error::unsupported(self.display_name(), "keep comments"))
    }

    /// Removes every row of `name`.
    fn truncate_table(&self, name: &str) -> Result<()>;

    /// Adds a nullable column without a default to existing table `table` (a column the source
    /// added while `sync` runs). The default cannot.
    fn add_column(&self, table: &str, field: &Field, column: &TargetColumn) -> Result<()> {
        let _ = (table, field, column);
        Err(crate::Error::unsupported(self.display_name(), "add columns"))
    }

    /// Removes every row of all of `names` at once, so that foreign keys between them (which
    /// the copy adds again) do not refuse it. The default empties them one by one.
    fn truncate_tables(&self, names: &[String]) -> Result<()> {
        names.iter().try_for_each(|name| self.truncate_table(name))
    }

    /// A writer with its own connection and transaction, loading `columns` of `table`.
    fn writer(&self, table: &str, columns: &[Field], options: &WriteOptions) -> Result<Box<dyn TableWriter>>;

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

    /// Who this database is (see [`crate::Source::identity`]); `None`: unknown, or it does not
    /// exist yet.
    fn identity(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The columns of existing table `name` that an INSERT must fill: NOT NULL, without a
    /// default, not generated (identity, auto-increment, a SQLite rowid alias fill themselves).
    fn required_columns(&self, name: &str) -> Result<Vec<String>> {
        let _ = name;
        Ok(Vec::new())
    }

    /// Drops table `name`, which this run created and could not fill (a failed table, so that a
    /// rerun starts clean). The default cannot.
    fn drop_table(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(crate::Error::unsupported(self.display_name(), "drop tables"))
    }

    /// Creates `view` (portable SQL from another engine, see [`super::ViewDef`]); an error when
    /// the target refuses it. The default creates none.
    fn create_view(&self, view: &super::ViewDef) -> Result<()> {
        let _ = view;
        Err(crate::Error::unsupported(self.display_name(), "create views"))
    }

    /// Builds `index` (portable SQL from another engine) on loaded table `table`; an error when
    /// the target refuses it. The default builds none.
    fn add_index(&self, table: &str, index: &crate::SqlIndex) -> Result<()> {
        let _ = (table, index);
        Err(crate::Error::unsupported(self.display_name(), "build indexes over expressions or with a predicate"))
    }

    /// Adds `check` (portable SQL from another engine) to loaded table `table`, which proves its
    /// rows satisfy it; an error when the target refuses it. The default adds none.
    fn add_check(&self, table: &str, check: &crate::CheckInfo) -> Result<()> {
        let _ = (table, check);
        Err(crate::Error::unsupported(self.display_name(), "add CHECK constraints"))
    }

    /// Values this target refuses in any column of a kind (MySQL: NaN and infinities;
    /// PostgreSQL: NUL in text), which a copy finds before writing and handles by its
    /// [`crate::values::ValuePolicy`]. The default refuses nothing.
    fn unstorable(&self) -> crate::values::Unstorable {
        crate::values::Unstorable::default()
    }

    /// The most bytes one row may hold in this target, and the setting that raises it (MySQL:
    /// `max_allowed_packet`), where that is less than its types could hold.
    fn row_limit(&self) -> Result<Option<RowLimit>> {
        Ok(None)
    }

    /// Secondary objects of created tables: indexes, identity generators, foreign keys.
    fn schema_objects(&self) -> Option<&dyn SchemaObjects> {
        None
    }

    /// Restoring a same-engine source's schema dump exactly.
    fn schema_restore(&self) -> Option<&dyn super::SchemaRestore> {
        None
    }

    /// Deleting rows by key (incremental tables' `--detect-deletes`).
    fn key_deletes(&self) -> Option<&dyn KeyDeletes> {
        None
    }

    /// Keeping the positions change streams applied up to (`barge sync`).
    fn change_positions(&self) -> Option<&dyn super::ChangePositions> {
        None
    }

    /// Stopping the application's writes to the database (`barge migrate`'s switchover).
    fn write_freeze(&self) -> Option<&dyn WriteFreeze> {
        None
    }

    /// Running SQL scripts: a pipeline's versioned schema files.
    fn sql_scripts(&self) -> Option<&dyn SqlScripts> {
        None
    }

    /// Ends the sessions [`TableWriter::session_id`] named (a distributed run's worker that lost
    /// its lease: its open transaction rolls back, and it cannot commit), and waits until they
    /// are gone. Sessions already gone are no error. The default cannot (an embedded engine).
    fn end_sessions(&self, sessions: &[String]) -> Result<()> {
        let _ = sessions;
        Err(crate::Error::unsupported(self.display_name(), "end another process's sessions (distributed runs)"))
    }

    /// What each of `sessions` (ids as [`TableWriter::session_id`] gives them) waits on now, as
    /// the server says, and who holds what it waits for: one line per session that waits, e.g.
    /// `target session 4412 waits on Lock/relation held by pid 4398 (idle in transaction 540 s,
    /// user app)`. For the stall reports of long runs. The default knows nothing.
    fn session_waits(&self, sessions: &[String]) -> Result<Vec<String>> {
        let _ = sessions;
        Ok(Vec::new())
    }
}

/// Capability: running SQL written for this engine (a pipeline's versioned schema files, applied
/// in order with a history table) and reading a query's rows back as text.
pub trait SqlScripts: Send + Sync {
    /// Runs `scripts` in order, each holding one or more statements, in one transaction where the
    /// engine's DDL is transactional (PostgreSQL, SQLite; MySQL commits each DDL statement). A
    /// failure rolls back what it can and names the failing script's first line.
    fn run_scripts(&self, scripts: &[&str]) -> Result<()>;

    /// The rows of `query`, every value as text (`None`: NULL).
    fn query_text(&self, query: &str) -> Result<Vec<Vec<Option<String>>>>;
}

/// What a script was, for an error about it: `running `ALTER TABLE …``, its first line that is
/// not a comment, cut at 80 characters.
pub fn script_label(script: &str) -> String {
    let line = script.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("--")).unwrap_or("");
    format!("running `{}`", line.chars().take(80).collect::<String>())
}

/// Capability: the database made read-only to every session but barge's own, and writable again
/// (the write freeze of `barge migrate switchover` and `rollback`).
pub trait WriteFreeze: Send + Sync {
    /// How the freeze is made, for messages (`default_transaction_read_only on database app, …`).
    fn freeze_method(&self) -> String;

    /// Stops writes: once it returns, no transaction of another session commits on this database
    /// until [`Self::unfreeze`] (a session that was writing is ended or waited for). Returns a
    /// token to give [`Self::unfreeze`] (it may run in another process). Freezing a frozen
    /// database is harmless.
    fn freeze(&self) -> Result<String>;

    /// Lets writes through again; `token` is what [`Self::freeze`] returned (empty when lost).
    fn unfreeze(&self, token: &str) -> Result<()>;

    /// Whether the database is frozen now.
    fn frozen(&self) -> Result<bool>;

    /// Stops writes to `tables` only (an incremental migration's wave): once it returns, every
    /// transaction of another session that wrote to them has committed or rolled back, and no
    /// other session's write to them succeeds until [`Self::unfreeze_tables`]. barge's own
    /// sessions still write. Freezing a frozen table is harmless. The default cannot.
    fn freeze_tables(&self, tables: &[String]) -> Result<()> {
        let _ = tables;
        Err(crate::Error::unsupported("this database", "freeze writes to single tables"))
    }

    /// Lets writes to `tables` through again.
    fn unfreeze_tables(&self, tables: &[String]) -> Result<()> {
        let _ = tables;
        Err(crate::Error::unsupported("this database", "freeze writes to single tables"))
    }

    /// The tables [`Self::freeze_tables`] froze, now.
    fn frozen_tables(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A target's limit on the bytes of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowLimit {
    pub bytes: u64,
    /// What to change to raise it (`max_allowed_packet = 16777216 on the target server`).
    pub setting: String,
}

/// Capability: what a created table gets once its rows are loaded.
pub trait SchemaObjects: Send + Sync {
    /// After a table barge created has been loaded: builds its secondary and unique indexes (faster
    /// than maintaining them row by row) and starts identity generators after the largest value.
    fn finish_table(&self, table: &str, source: &TableInfo) -> Result<()>;

    /// Whether a table can be read while [`Self::finish_table`] builds its keys and indexes (the
    /// build takes only locks that let readers through), so verification can overlap the build.
    /// Read then, the table has no primary key yet: it is ranged over by its row locator.
    fn readable_while_finishing(&self) -> bool {
        false
    }

    /// Whether [`Self::add_foreign_keys`] can add foreign keys to a loaded table (SQLite cannot:
    /// the runtime then lists them as not migrated).
    fn adds_foreign_keys(&self) -> bool {
        true
    }

    /// Adds foreign keys once every table is loaded (so load order does not matter).
    fn add_foreign_keys(&self, table: &str, foreign_keys: &[ForeignKeyInfo]) -> Result<()>;

    /// Moves `table`'s identity generators forward past the largest value its rows hold, never
    /// back: rows written with their keys (as `sync` writes them) do not move a PostgreSQL
    /// sequence. Nothing by default: MySQL's AUTO_INCREMENT and SQLite's rowid follow the keys
    /// written.
    fn continue_identities(&self, _table: &str) -> Result<()> {
        Ok(())
    }
}

/// Capability: deleting rows by key.
pub trait KeyDeletes: Send + Sync {
    /// Deletes the rows whose key `columns` hold one of `keys` (each a JSON array of the key's
    /// values, as verification reports keys): rows gone from the source of an incremental table.
    /// Returns the rows deleted.
    fn delete_keys(&self, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64>;
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

/// Loads batches into one table over one connection. Rows become visible only at [`Self::commit`].
pub trait TableWriter: Send {
    /// Writes one batch, returning the rows written (rows skipped under [`Conflict::Skip`] count as
    /// written: the target holds a row with their key).
    fn write(&mut self, batch: Encoded) -> Result<u64>;
    /// Makes everything written so far durable and visible, and starts a new transaction.
    fn commit(&mut self) -> Result<()>;

    /// The server's id of this writer's session, which [`Target::end_sessions`] takes; `None`
    /// where there is none (an embedded engine).
    fn session_id(&mut self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Clearing key ranges inside the open transaction (resuming a run).
    fn range_clearer(&mut self) -> Option<&mut dyn RangeClearer> {
        None
    }

    /// Applying changes with their position inside the writer's transaction (`barge sync`).
    fn change_writer(&mut self) -> Option<&mut dyn super::ChangeWriter> {
        None
    }
}

/// Capability of a writer: clearing a key range in its own transaction.
pub trait RangeClearer {
    /// Deletes the rows of `range` over `columns` (the table's key columns) inside the writer's
    /// open transaction, so that a range a dead run may have left behind, whole or not at all, is
    /// loaded again exactly once (resume). Returns the rows deleted.
    fn clear_range(&mut self, columns: &[String], range: &KeyRange) -> Result<u64>;
}
