//! # barge-pipeline
//!
//! Pipeline files (`pipelines/*.toml`) and the transforms they declare:
//!
//! ```text
//!  file ──spec::Pipeline::load──▶ Pipeline (checked, ${ENV} substituted)
//!       ──Pipeline::request────▶ barge_plan::CopyRequest (per-table key, filter, conflict, budget,
//!                                 and a transform compiled against each source table)
//! ```
//!
//! [`preview`] is the preflight of a pipeline as `barge plan` prints it and `barge run` starts it.
//! [`transform`] evaluates a table's renames, drops, casts and computed columns over Arrow record
//! batches; the runtime applies it on its CPU pool before hashing, so verification compares the
//! target with the source as transformed. [`versions`] applies a pipeline's versioned target
//! schema (its `[schema]` section).

pub mod expr;
pub mod preview;
pub mod spec;
pub mod transform;
pub mod versions;

pub use spec::{Migration, Pipeline, PipelineTable, SchemaVersions, Wave};
pub use transform::{ColumnSpec, Compiled, TransformSpec};
