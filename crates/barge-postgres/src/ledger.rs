//! A ledger store in a PostgreSQL schema (`--state postgres://…`, schema `barge_state` unless the
//! URL names one with `?schema=`), so that a run's ledger outlives the machine that ran it and
//! several processes can share it. Each call is one transaction.

use std::sync::Mutex;

use barge_core::ledger::{Holder, LedgerStore, RangeDone, RunRecord, TableLedger};
use barge_core::{Error, KeyRange, Result, Scalar};
use tokio_postgres::Client;

use crate::conn::{connect, parse_url, pg_err, quote, runtime};

/// A ledger store in a PostgreSQL schema. A run it owns is locked by a session-level advisory lock
/// on the store's connection, held while the store is open: the server lets it go when that
/// session ends (the process died, or its connection was lost, which also fails every later write
/// of this store), so a dead owner's run is taken over.
pub struct PgLedger {
    display: String,
    schema: String,
    client: Mutex<Client>,
}

impl PgLedger {
    /// Connects and creates the schema and its tables if needed.
    pub fn open(url: &str) -> Result<PgLedger> {
        let parsed = parse_url(url)?;
        let schema = if url.contains("schema=") { parsed.schema.clone() } else { "barge_state".to_string() };
        let client = connect(&parsed).map_err(|e| match e {
            Error::SourceNotFound(db) => Error::Config(format!("the ledger's database (--state) not found: {db}")),
            other => other,
        })?;
        let s = quote(&schema);
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.runs (
               name text PRIMARY KEY, fingerprint text NOT NULL,
               started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz);
             CREATE TABLE IF NOT EXISTS {s}.tables (
               name text NOT NULL, source_table text NOT NULL, action text NOT NULL, ranges jsonb NOT NULL,
               finished boolean NOT NULL DEFAULT false, PRIMARY KEY (name, source_table));
             CREATE TABLE IF NOT EXISTS {s}.ranges_done (
               name text NOT NULL, source_table text NOT NULL, range_id int NOT NULL, rows_read bigint NOT NULL,
               rows_written bigint NOT NULL, rows_rejected bigint NOT NULL, digests text NOT NULL,
               PRIMARY KEY (name, source_table, range_id));
             CREATE TABLE IF NOT EXISTS {s}.owners (name text PRIMARY KEY, holder jsonb NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.watermarks (
               name text NOT NULL, source_table text NOT NULL, value text NOT NULL,
               updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, source_table));
             CREATE TABLE IF NOT EXISTS {s}.documents (
               name text NOT NULL, key text NOT NULL, body text NOT NULL,
               updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, key));"
        );
        // Two processes creating the schema at once can collide; the loser's tables exist then.
        runtime().block_on(client.batch_execute(&ddl)).map_err(pg_err("creating the ledger schema"))?;
        Ok(PgLedger { display: format!("{} (schema {schema})", parsed.display), schema, client: Mutex::new(client) })
    }

    /// Runs `f` in one transaction.
    fn tx<T>(
        &self,
        what: &'static str,
        f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>, &str) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let mut client = self.client.lock().expect("ledger lock");
        let schema = quote(&self.schema);
        runtime()
            .block_on(async {
                let tx = client.transaction().await?;
                let value = f(&tx, &schema).await?;
                tx.commit().await?;
                Ok(value)
            })
            .map_err(pg_err(what))
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("ledger values serialise")
}

impl LedgerStore for PgLedger {
    fn describe(&self) -> String {
        self.display.clone()
    }

    fn acquire(&self, name: &str, holder: &Holder) -> Result<()> {
        let key = format!("barge ledger {} {name}", self.schema);
        let holder_json = json(holder);
        let taken: std::result::Result<bool, Option<String>> =
            self.tx("taking the run in the ledger", async |tx, s| {
                let row = tx.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key]).await?;
                if row.get::<_, bool>(0) {
                    let sql = format!(
                        "INSERT INTO {s}.owners (name, holder) VALUES ($1, $2::text::jsonb)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder"
                    );
                    tx.execute(&sql, &[&name, &holder_json]).await?;
                    return Ok(Ok(true));
                }
                let sql = format!("SELECT holder::text FROM {s}.owners WHERE name = $1");
                Ok(Err(tx.query_opt(&sql, &[&name]).await?.map(|r| r.get(0))))
            })?;
        match taken {
            Ok(_) => Ok(()),
            Err(other) => Err(Error::LedgerBusy {
                run: name.into(),
                store: self.describe(),
                holder: other
                    .and_then(|h| serde_json::from_str::<Holder>(&h).ok())
                    .map_or_else(|| "a process that has not said who it is yet".to_string(), |h| h.to_string()),
            }),
        }
    }

    fn start(&self, name: &str, fingerprint: &str) -> Result<()> {
        self.tx("starting a run in the ledger", async |tx, s| {
            tx.execute(&format!("DELETE FROM {s}.ranges_done WHERE name = $1"), &[&name]).await?;
            tx.execute(&format!("DELETE FROM {s}.tables WHERE name = $1"), &[&name]).await?;
            tx.execute(&format!("DELETE FROM {s}.runs WHERE name = $1"), &[&name]).await?;
            tx.execute(&format!("INSERT INTO {s}.runs (name, fingerprint) VALUES ($1, $2)"), &[&name, &fingerprint])
                .await?;
            Ok(())
        })
    }

    fn resume(&self, name: &str, fingerprint: &str) -> Result<RunRecord> {
        let stored: Option<String> = self.tx("reading the ledger", async |tx, s| {
            let row = tx.query_opt(&format!("SELECT fingerprint FROM {s}.runs WHERE name = $1"), &[&name]).await?;
            Ok(row.map(|r| r.get(0)))
        })?;
        barge_core::ledger::check_resumable(&self.describe(), name, stored.as_deref(), fingerprint)?;
        self.tx("reading the ledger", async |tx, s| {
            let mut ledger = RunRecord::default();
            let sql = format!("SELECT source_table, action, ranges::text, finished FROM {s}.tables WHERE name = $1");
            for row in tx.query(&sql, &[&name]).await? {
                let ranges: Vec<KeyRange> = serde_json::from_str(row.get::<_, &str>(2)).unwrap_or_default();
                ledger.tables.insert(
                    row.get(0),
                    TableLedger { ranges, action: row.get(1), done: Default::default(), finished: row.get(3) },
                );
            }
            let sql = format!(
                "SELECT source_table, range_id, rows_read, rows_written, rows_rejected, digests
                 FROM {s}.ranges_done WHERE name = $1"
            );
            for row in tx.query(&sql, &[&name]).await? {
                let table: String = row.get(0);
                let range = row.get::<_, i32>(1) as usize;
                let done = RangeDone {
                    range,
                    rows_read: row.get::<_, i64>(2) as u64,
                    rows_written: row.get::<_, i64>(3) as u64,
                    rows_rejected: row.get::<_, i64>(4) as u64,
                    digests: row.get(5),
                };
                if let Some(t) = ledger.tables.get_mut(&table) {
                    t.done.insert(range, done);
                }
            }
            Ok(ledger)
        })
    }

    fn plan_table(&self, name: &str, table: &str, action: &str, ranges: &[KeyRange]) -> Result<()> {
        let ranges = json(&ranges);
        self.tx("recording a plan in the ledger", async |tx, s| {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.tables (name, source_table, action, ranges) VALUES ($1, $2, $3, $4::text::jsonb)
                     ON CONFLICT (name, source_table) DO UPDATE
                     SET action = EXCLUDED.action, ranges = EXCLUDED.ranges, finished = false"
                ),
                &[&name, &table, &action, &ranges],
            )
            .await?;
            tx.execute(&format!("DELETE FROM {s}.ranges_done WHERE name = $1 AND source_table = $2"), &[&name, &table])
                .await?;
            Ok(())
        })
    }

    fn ranges_done(&self, name: &str, table: &str, done: &[RangeDone]) -> Result<()> {
        self.tx("recording committed ranges in the ledger", async |tx, s| {
            let sql = format!(
                "INSERT INTO {s}.ranges_done
                 (name, source_table, range_id, rows_read, rows_written, rows_rejected, digests)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name, source_table, range_id) DO UPDATE SET rows_read = EXCLUDED.rows_read,
                   rows_written = EXCLUDED.rows_written, rows_rejected = EXCLUDED.rows_rejected,
                   digests = EXCLUDED.digests"
            );
            for d in done {
                let (range, read, written, rejected) =
                    (d.range as i32, d.rows_read as i64, d.rows_written as i64, d.rows_rejected as i64);
                tx.execute(&sql, &[&name, &table, &range, &read, &written, &rejected, &d.digests]).await?;
            }
            Ok(())
        })
    }

    fn table_finished(&self, name: &str, table: &str) -> Result<()> {
        self.tx("recording a finished table in the ledger", async |tx, s| {
            tx.execute(
                &format!("UPDATE {s}.tables SET finished = true WHERE name = $1 AND source_table = $2"),
                &[&name, &table],
            )
            .await
            .map(drop)
        })
    }

    fn run_state(&self, name: &str) -> Result<Option<(String, bool)>> {
        self.tx("reading the ledger", async |tx, s| {
            let sql = format!("SELECT fingerprint, finished_at IS NOT NULL FROM {s}.runs WHERE name = $1");
            Ok(tx.query_opt(&sql, &[&name]).await?.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn finish(&self, name: &str) -> Result<()> {
        self.tx("recording a finished run in the ledger", async |tx, s| {
            tx.execute(&format!("UPDATE {s}.runs SET finished_at = now() WHERE name = $1"), &[&name]).await.map(drop)
        })
    }

    fn watermark(&self, name: &str, table: &str) -> Result<Option<Scalar>> {
        let value: Option<String> = self.tx("reading a watermark", async |tx, s| {
            let sql = format!("SELECT value FROM {s}.watermarks WHERE name = $1 AND source_table = $2");
            Ok(tx.query_opt(&sql, &[&name, &table]).await?.map(|r| r.get(0)))
        })?;
        value.map(|v| serde_json::from_str(&v).map_err(|e| Error::engine("reading a watermark", e))).transpose()
    }

    fn set_watermark(&self, name: &str, table: &str, value: &Scalar) -> Result<()> {
        let value = json(value);
        self.tx("recording a watermark", async |tx, s| {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.watermarks (name, source_table, value) VALUES ($1, $2, $3)
                     ON CONFLICT (name, source_table) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
                ),
                &[&name, &table, &value],
            )
            .await
            .map(drop)
        })
    }

    fn document(&self, name: &str, key: &str) -> Result<Option<String>> {
        self.tx("reading the ledger", async |tx, s| {
            let sql = format!("SELECT body FROM {s}.documents WHERE name = $1 AND key = $2");
            Ok(tx.query_opt(&sql, &[&name, &key]).await?.map(|r| r.get(0)))
        })
    }

    fn set_document(&self, name: &str, key: &str, body: &str) -> Result<()> {
        self.tx("writing the ledger", async |tx, s| {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.documents (name, key, body) VALUES ($1, $2, $3)
                     ON CONFLICT (name, key) DO UPDATE SET body = EXCLUDED.body, updated_at = now()"
                ),
                &[&name, &key, &body],
            )
            .await
            .map(drop)
        })
    }
}
