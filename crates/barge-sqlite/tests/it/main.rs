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
        .read_range(table, range, barge_core::BatchSize::rows(1000), &mut |b| {
            batches.push(b);
            Ok(())
        })
        .unwrap();
    batches
}

#[test]
fn batches_close_at_their_byte_limit() {
    let db = Db::new();
    db.sql(
        "s.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t SELECT i, printf('%.10000c', 'x') FROM n;",
    );
    let source = db.source("s.db");
    let table = source.table("t").unwrap();
    let mut sizes = Vec::new();
    let limit = barge_core::BatchSize { rows: 1000, bytes: 50_000 };
    source
        .read_range(&table, &KeyRange::all(), limit, &mut |b| {
            sizes.push(b.num_rows());
            Ok(())
        })
        .unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(sizes.iter().all(|&n| n <= 5), "10 KB rows, 50 KB batches: {sizes:?}");
}
