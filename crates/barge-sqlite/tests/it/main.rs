//! SQLite engine tests against real database files: one round trip per row of the mapping table,
//! and the partitioner on real keys.

mod partition;
mod types;

use std::sync::Arc;

use arrow_array::RecordBatch;
use barge_core::{EngineFactory, KeyRange, Source, TableInfo};
use barge_sqlite::SqliteEngine;

pub struct Db {
    pub dir: tempfile::TempDir,
}

impl Default for Db {
    fn default() -> Self {
        Db { dir: tempfile::tempdir().unwrap() }
    }
}

impl Db {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn url(&self, name: &str) -> String {
        format!("sqlite://{}", self.dir.path().join(name).display())
    }

    pub fn sql(&self, name: &str, sql: &str) {
        rusqlite::Connection::open(self.dir.path().join(name)).unwrap().execute_batch(sql).unwrap();
    }

    pub fn source(&self, name: &str) -> Arc<dyn Source> {
        SqliteEngine.open_source(&self.url(name)).unwrap()
    }
}

pub fn read_all(source: &dyn Source, table: &TableInfo, range: &KeyRange) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    source
        .read_range(table, range, 1000, &mut |b| {
            batches.push(b);
            Ok(())
        })
        .unwrap();
    batches
}
