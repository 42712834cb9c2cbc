//! # barge-plan
//!
//! Turns what the user asked for into a validated [`Plan`] before anything is written:
//!
//! ```text
//!   CopyRequest ──plan_sources──▶ SourcePlan (tables, key ranges)      no target touched yet
//!               ──plan_targets──▶ Plan (target action, column mapping)  target opened, nothing written
//! ```
//!
//! [`preflight`] is that sequence as `copy`, `plan` and `run` all run it, from two URLs and the
//! engine registry. [`partition`] splits a table's key space into ranges; the runtime (barge-exec) executes the plan,
//! and verification (barge-verify) reuses the same ranges.

pub mod partition;
mod plan;
pub mod preflight;
pub mod risk;

pub use barge_core::Risk;
pub use plan::{
    ColumnPlan, CompileTransform, CopyRequest, IfExists, Incremental, Plan, SAMPLE_RANGES, SchemaPlan, SchemaReport,
    SourcePlan, SourceTablePlan, TableAction, TableFailure, TablePlan, TableRequest, excluded, plan_sources,
    plan_targets, sample_ranges,
};
pub use preflight::{Preflight, plan_schema, preflight};
pub use risk::{Assessment, ColumnRisk, assess};
