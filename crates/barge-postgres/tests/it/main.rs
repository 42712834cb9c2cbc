//! PostgreSQL engine tests against the real local server. Each test creates its own uniquely
//! named database and drops it afterwards, so tests run in parallel and leave nothing behind.

mod errors;
mod keys;
mod reads;
mod types;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use barge_core::{EngineFactory, KeyRange, Source, TableInfo};
use barge_postgres::PgEngine;

/// The server every test uses (override with BARGE_TEST_PG, e.g. for another port).
pub fn server() -> String {
    std::env::var("BARGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs SQL (several statements allowed); returns the text of the first column of every row.
fn run_sql(db: &str, sql: &str) -> Vec<Option<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&format!("{}/{db}", server()), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} must be reachable: {e}", server()));
        tokio::spawn(conn);
        let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{e:?}\n{sql}"));
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                _ => None,
            })
            .collect()
    })
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("barge_t_{tag}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        // Separately: CREATE DATABASE cannot run inside a (multi-statement) transaction.
        run_sql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        run_sql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb { name }
    }

    /// The database's URL, over a plain connection.
    pub fn url(&self) -> String {
        format!("{}/{}?sslmode=disable", server(), self.name)
    }

    /// Runs SQL; returns the first column of every row it produced.
    pub fn sql(&self, sql: &str) -> Vec<Option<String>> {
        run_sql(&self.name, sql)
    }

    pub fn source(&self) -> Arc<dyn Source> {
        PgEngine.open_source(&self.url()).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        run_sql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
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
