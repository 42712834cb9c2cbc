//! The transform stage's contract (implemented by pipeline files' column rewrites).

use arrow_array::RecordBatch;

use crate::error::Result;

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
