//! # barge-core
//!
//! The vocabulary every other barge crate speaks: no engine names and no SQL. (Its only I/O is the
//! reject file writer, [`rejects::RejectLog`].)
//!
//! ```text
//!   Source ──read_range──▶ RecordBatch ──▶ (transform, hash) ──▶ BatchEncoder ──▶ TableWriter::write ──▶ commit
//!     ▲                                                                                     │
//!     └── table() / key_stats() / sample_keys() feed the partitioner (barge-plan) ─────────┘
//! ```
//!
//! * [`model`]: tables, keys, key ranges, scalars.
//! * [`engine`]: the [`Source`], [`Target`] and [`EngineFactory`] traits an engine crate implements,
//!   and the optional capabilities it may offer ([`engine::SchemaObjects`], [`engine::KeyDeletes`],
//!   [`engine::RangeClearer`], [`engine::ScratchSpace`], [`engine::LedgerStores`]).
//! * [`ledger`]: what a run records so that it can be resumed, and the [`ledger::LedgerStore`] trait.
//! * [`mapping`]: the one shape in which every engine declares its native ↔ Arrow ↔ DDL mapping.
//! * [`types`]: whether moving a value of one Arrow type into another is exact, lossy or impossible.
//! * [`text`]: canonical text forms of temporal and decimal values, for engines that speak text.
//! * [`json`]: the one JSON value writer (arrays in engines without arrays, reject files).
//! * [`error`]: one error enum whose variants are failures a user can act on.
//! * [`url`]: connection-URL helpers that never let a password escape.
//!
//! Engines convert their native types to Arrow and back through a mapping table declared once per engine;
//! Arrow record batches are the only thing that crosses an engine boundary.

pub mod arrays;
pub mod checks;
pub mod engine;
pub mod error;
pub mod json;
pub mod ledger;
pub mod mapping;
pub mod model;
pub mod rejects;
pub mod synthetic;
pub mod text;
pub mod types;
pub mod url;
pub mod values;

pub use engine::{
    ArrowPassthrough, BatchEncoder, BatchSize, Change, ChangeBatch, ChangeFeed, ChangeKind, ChangePositions,
    ChangeWriter, Conflict, DumpedSchema, Encoded, EngineFactory, KeyDeletes, KeyRows, LedgerStores, Native,
    NotMigrated, POSITIONS_TABLE, RangeClearer, Registry, RestoreStep, RowLimit, SchemaDump, SchemaObject,
    SchemaObjects, SchemaRestore, ScratchSpace, SnapshotInfo, SnapshotReads, Source, SqlScripts, TableWriter, Target,
    TargetColumn, Transform, Transformed, ViewDef, WriteFreeze, WriteOptions, choose_column, keyed_for_sync,
    logical_type, script_label,
};
pub use error::{Error, Result};
pub use model::{
    CheckInfo, ForeignKeyInfo, IndexInfo, Key, KeyRange, KeySpec, KeyStats, Notice, Risk, Scalar, SqlIndex, TableInfo,
};
pub use rejects::{Budget, Reject, RejectLog};

/// Field metadata key holding the column's declared type in its source engine (e.g. `VARCHAR(100)`).
pub const META_NATIVE_TYPE: &str = "barge.native_type";
/// Field metadata key marking a column whose values the database generates (identity, serial,
/// AUTOINCREMENT): a target recreates the generator and starts it after the largest copied value.
pub const META_IDENTITY: &str = "barge.identity";
/// Field metadata key holding a column default that every engine understands: a literal as
/// [`types::portable_default`] normalises it.
pub const META_DEFAULT: &str = "barge.default";
/// Field metadata key holding a column default barge does not translate (its source expression),
/// so that the plan lists it as not migrated.
pub const META_DEFAULT_UNTRANSLATED: &str = "barge.default_untranslated";
/// Field metadata key marking a MySQL `ON UPDATE CURRENT_TIMESTAMP` column (its expression),
/// which has no column-level counterpart elsewhere: listed as not migrated.
pub const META_ON_UPDATE: &str = "barge.on_update";
/// Field metadata key holding an enumeration's labels, in their order, as a JSON array of strings
/// (PostgreSQL enum types, MySQL `ENUM`; values travel as text). Each target creates its own
/// enumeration: PostgreSQL a type, MySQL an `ENUM`, SQLite a CHECK constraint.
pub const META_ENUM: &str = "barge.enum";
/// Field metadata key naming a PostgreSQL enum column's type (`mood`, `"other"."mood"`), which a
/// PostgreSQL target keeps; from other engines it names the type `<table>_<column>`.
pub const META_ENUM_TYPE: &str = "barge.enum_type";
/// Field metadata key holding a MySQL `SET`'s members, in their order, as a JSON array of strings
/// (values travel as MySQL prints them: members joined by commas). MySQL recreates the `SET`;
/// PostgreSQL and SQLite keep text with a CHECK that every member is one of them.
pub const META_SET: &str = "barge.set";
/// Field metadata key naming what a column holds beyond its Arrow type, the same in every engine:
/// `json` for JSON documents carried as text (PostgreSQL json/jsonb, MySQL json, SQLite JSON),
/// `uuid` for UUIDs carried as text (PostgreSQL uuid).
/// Targets create their own JSON type for it, and verification hashes it as canonical JSON.
pub const META_LOGICAL: &str = "barge.logical";
/// [`META_LOGICAL`] value for JSON documents.
pub const LOGICAL_JSON: &str = "json";
/// [`META_LOGICAL`] value for UUIDs carried as their 36-character text.
pub const LOGICAL_UUID: &str = "uuid";
/// [`META_LOGICAL`] value for geometries (MySQL/MariaDB spatial types, PostGIS `geometry`),
/// carried as Arrow binary in one canonical layout, the one MySQL stores: the SRID as 4 bytes
/// little-endian, then the geometry's WKB (2-D). Sources of other layouts (PostGIS EWKB) convert
/// to it, so a geometry hashes alike in every engine.
pub const LOGICAL_GEOMETRY: &str = "geometry";
/// Field metadata key naming a geometry column's subtype, as OGC spells it (one of
/// [`types::GEOMETRY_TYPES`]): MySQL's `POINT` column, PostGIS `geometry(Point)`.
pub const META_GEOMETRY_TYPE: &str = "barge.geometry_type";
/// Field metadata key marking a fixed-length character column (PostgreSQL's `character(n)`,
/// MySQL's `char(n)`) with its length: values read padded to it, so a target of another engine
/// keeps the type with its padding semantics (SQLite, which pads nothing, sets none).
pub const META_FIXED_CHARS: &str = "barge.fixed_chars";
/// Field metadata key holding a column's comment (PostgreSQL's `COMMENT ON COLUMN`, MySQL's
/// `COMMENT '…'`).
pub const META_COMMENT: &str = "barge.comment";
/// Field metadata key naming the engine that declared [`META_NATIVE_TYPE`], so that a target of the
/// same engine can keep the native type instead of going through the Arrow mapping.
pub const META_ENGINE: &str = "barge.engine";
