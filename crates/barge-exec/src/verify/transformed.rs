//! A source seen through a table's transform: what verification reads when it narrows a mismatch
//! of a transformed table down to keys (the copy itself applies transforms on the CPU pool).

use arrow_array::RecordBatch;
use barge_core::{Key, KeyRange, KeyStats, Result, Source, TableInfo, Transform};

/// Reads `read` (the table as stored) and delivers `output` (the table as transformed). Rows the
/// transform fails are left out, as the copy rejected them.
pub(crate) struct TransformedSource<'a> {
    pub inner: &'a dyn Source,
    pub read: &'a TableInfo,
    pub output: &'a TableInfo,
    pub transform: &'a dyn Transform,
}

impl Source for TransformedSource<'_> {
    fn display_name(&self) -> String {
        self.inner.display_name()
    }

    fn list_tables(&self) -> Result<Vec<String>> {
        Ok(vec![self.output.name.clone()])
    }

    fn table(&self, _name: &str) -> Result<TableInfo> {
        Ok(self.output.clone())
    }

    fn key_stats(&self, _table: &TableInfo, range: &KeyRange) -> Result<KeyStats> {
        self.inner.key_stats(self.read, range)
    }

    fn sample_keys(&self, _table: &TableInfo, range: &KeyRange, target: usize) -> Result<Vec<Key>> {
        self.inner.sample_keys(self.read, range, target)
    }

    fn column_max(&self, _table: &TableInfo, column: &str) -> Result<Option<barge_core::Scalar>> {
        self.inner.column_max(self.read, column)
    }

    fn read_range(
        &self,
        _table: &TableInfo,
        range: &KeyRange,
        batch: barge_core::BatchSize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.inner.read_range(self.read, range, batch, &mut |rows| emit(self.transform.apply(&rows)?.batch))
    }
}
