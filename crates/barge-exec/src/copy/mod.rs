//! A copy run, one step per phase:
//!
//! ```text
//!  prepare (ledger layout, capability checks, DDL)  ─▶  per table: table (rows through the stages,
//!  accounting)  ─▶  finish (indexes, ledger, watermark) + verify (digests, deletes)  ─▶  run: foreign
//!  keys, ledger finished, report
//! ```

pub(crate) mod finish;
pub(crate) mod prepare;
pub(crate) mod ranges;
pub(crate) mod run;
pub(crate) mod table;
