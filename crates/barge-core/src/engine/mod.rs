//! The contract between the runtime and an engine: a few required methods every engine has, and
//! optional capabilities an engine opts into, which the runtime asks for before it needs them.
//!
//! ```text
//!            required                                   optional (the runtime asks; None = lacks it)
//!  EngineFactory  name, schemes, check_url,             scratch()        → ScratchSpace   (bench)
//!                 open_source, open_target              ledger_stores()  → LedgerStores   (--state)
//!  Source         display_name, list_tables, table,     read_range_native, column_max, notices
//!                 key_stats, sample_keys, read_range        (provided defaults);
//!                                                       snapshots()      → SnapshotReads  (one instant)
//!                                                       schema_dump()    → SchemaDump     (exact schema)
//!                                                       change_feed()    → ChangeFeed     (sync)
//!  Target         display_name, table_rows,             schema_objects() → SchemaObjects  (indexes,
//!                 table_columns, column_for, table_ddl,                     identity, foreign keys)
//!                 create_table, truncate_table, writer  key_deletes()    → KeyDeletes     (--detect-deletes)
//!                                                       schema_restore() → SchemaRestore  (exact schema)
//!                                                       change_positions() → ChangePositions (sync)
//!                                                       write_freeze()   → WriteFreeze    (migrate)
//!                                                       sql_scripts()    → SqlScripts     (schema files)
//!  TableWriter    write, commit                         range_clearer()  → RangeClearer   (--resume)
//!                                                       change_writer()  → ChangeWriter   (sync)
//! ```
//!
//! The data path these traits serve: `Source::read_range` → Arrow batch → (transform, hash on the
//! CPU pool) → [`BatchEncoder::encode`] → [`TableWriter::write`] → [`TableWriter::commit`].
//! Adding an engine is one crate implementing the required traits plus the capabilities it has,
//! and one registration line in the CLI; a capability it lacks is a clear
//! [`crate::Error::Unsupported`] when a run needs it, never a fake implementation.
//!
//! All methods are blocking and are called from plain threads owned by the runtime (never from a
//! rayon worker or a tokio runtime thread). An engine with an async driver keeps its own runtime and
//! blocks on it inside these methods, doing any CPU-heavy decode on the calling thread.
//! No SQL is built here: SQL engines share their dialect helpers through `barge-sql`.

mod changes;
mod encode;
mod factory;
mod schema;
mod source;
mod target;
mod transform;

pub use changes::{
    Change, ChangeBatch, ChangeFeed, ChangeKind, ChangePositions, ChangeWriter, KeyRows, POSITIONS_TABLE,
    keyed as keyed_for_sync,
};
pub use encode::{ArrowPassthrough, BatchEncoder, Encoded, Native, TargetColumn, choose_column, logical_type};
pub use factory::{EngineFactory, LedgerStores, Registry, ScratchSpace};
pub use schema::{DumpedSchema, NotMigrated, RestoreStep, SchemaDump, SchemaObject, SchemaRestore, ViewDef};
pub use source::{BatchSize, SnapshotInfo, SnapshotReads, Source};
pub use target::{
    Conflict, KeyDeletes, RangeClearer, RowLimit, SchemaObjects, SqlScripts, TableWriter, Target, WriteFreeze,
    WriteOptions, script_label,
};
pub use transform::{Transform, Transformed};
