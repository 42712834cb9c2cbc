//! A ledger store in a PostgreSQL schema (`--state postgres://…`, schema `barge_state` unless the
//! URL names one with `?schema=`), so that a run's ledger outlives the machine that ran it and
//! several processes can share it. Each call is one transaction.

use std::sync::Mutex;

use barge_core::ledger::{
    Advance, Claim, DigestClaim, DigestItem, Holder, LedgerStore, PieceOf, QueuedRange, RangeDone, RunRecord,
    Splittable, TableLedger, WorkItem, WorkQueue,
};
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
    /// The queue's own connection (opened when first needed), whose commits do not wait for the
    /// disk (see [`PgLedger::queue_run`]).
    queue: Mutex<Option<Client>>,
    url: crate::PgUrl,
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
        let schema_literal = crate::conn::literal(&schema);
        // Under a lock: two processes creating the schema at once (a coordinator and its workers
        // starting together) would collide.
        let ddl = format!(
            "SELECT pg_advisory_xact_lock(hashtextextended('barge ledger schema ' || {schema_literal}, 0));
             CREATE SCHEMA IF NOT EXISTS {s};
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
               updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, key));
             CREATE TABLE IF NOT EXISTS {s}.work_queue (
               name text NOT NULL, source_table text NOT NULL, range_id int NOT NULL, piece int NOT NULL,
               estimated_rows bigint NOT NULL, lo text NOT NULL, hi text NOT NULL,
               state text NOT NULL DEFAULT 'pending', owner text, lease_until timestamptz,
               attempt int NOT NULL DEFAULT 0, sessions jsonb NOT NULL DEFAULT '[]', rows_done bigint NOT NULL DEFAULT 0,
               progress_at timestamptz, error text, chunks text, next_chunk int, split_chunk int,
               rows_read bigint, rows_rejected bigint, digests text, split boolean NOT NULL DEFAULT false,
               PRIMARY KEY (name, source_table, range_id, piece));
             CREATE INDEX IF NOT EXISTS work_queue_pending
               ON {s}.work_queue (name, estimated_rows DESC, source_table, range_id, piece) WHERE state = 'pending';
             CREATE INDEX IF NOT EXISTS work_queue_claimed ON {s}.work_queue (name, lease_until) WHERE state = 'claimed';
             CREATE TABLE IF NOT EXISTS {s}.digest_tasks (
               name text NOT NULL, source_table text NOT NULL, item int NOT NULL, payload text NOT NULL,
               state text NOT NULL DEFAULT 'pending', owner text, lease_until timestamptz,
               attempt int NOT NULL DEFAULT 0, result text, error text, PRIMARY KEY (name, source_table, item));"
        );
        runtime().block_on(client.batch_execute(&ddl)).map_err(pg_err("creating the ledger schema"))?;
        Ok(PgLedger {
            display: format!("{} (schema {schema})", parsed.display),
            schema,
            client: Mutex::new(client),
            queue: Mutex::new(None),
            url: parsed,
        })
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

impl PgLedger {
    /// Runs `f` on the queue's connection, each statement its own transaction. Its commits need
    /// not wait for the disk (`synchronous_commit = off`): a commit the store loses in a crash only
    /// moves the queue back (a claim or a completion forgotten), and that is safe: a worker whose
    /// store connection failed stops renewing and commits nothing more, and a range claimed again
    /// is cleared and loaded again.
    fn queue_run<T>(
        &self,
        what: &'static str,
        f: impl AsyncFnOnce(&Client, &str) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let mut queue = self.queue.lock().expect("queue lock");
        if queue.as_ref().is_none_or(Client::is_closed) {
            let client = connect(&self.url)?;
            runtime()
                .block_on(client.batch_execute("SET synchronous_commit = off"))
                .map_err(pg_err("opening the queue's connection"))?;
            *queue = Some(client);
        }
        let client = queue.as_ref().expect("a queue connection");
        let schema = quote(&self.schema);
        runtime().block_on(f(client, &schema)).map_err(pg_err(what))
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

    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        Some(self)
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

/// A claimed piece an idle worker may split: not split yet, with its chunks published and two or
/// more of them not started (chunks holds the boundaries: one fewer than the chunks).
const SPLITTABLE: &str = "chunks IS NOT NULL AND split_chunk IS NULL
  AND json_array_length(chunks::json) - coalesce(next_chunk, 0) >= 2";

/// The piece a statement names: `name = $1 AND source_table = $2 AND range_id = $3 AND piece = $4`.
const THE_PIECE: &str = "name = $1 AND source_table = $2 AND range_id = $3 AND piece = $4";

impl WorkQueue for PgLedger {
    fn enqueue(&self, run: &str, items: &[WorkItem]) -> Result<()> {
        self.tx("filling the run's queue", async |tx, s| {
            tx.execute(&format!("DELETE FROM {s}.work_queue WHERE name = $1"), &[&run]).await?;
            let sql = format!(
                "INSERT INTO {s}.work_queue (name, source_table, range_id, piece, estimated_rows, lo, hi)
                 VALUES ($1, $2, $3, 0, $4, $5, $6)"
            );
            for item in items {
                let (range, rows) = (item.range as i32, item.estimated_rows as i64);
                tx.execute(&sql, &[&run, &item.table, &range, &rows, &item.lo, &item.hi]).await?;
            }
            Ok(())
        })
    }

    fn claim(&self, run: &str, worker: &str, lease_seconds: f64) -> Result<Option<Claim>> {
        self.queue_run("claiming a range", async |tx, s| {
            // One statement each: the largest pending piece (by its partial index), else one whose
            // lease ran out; the old holder and its sessions as they were. A piece split while its
            // holder was lost keeps its new end (`hi`); its chunks are the new holder's to publish.
            let take = |which: &str| {
                format!(
                    "WITH pick AS (SELECT source_table, range_id, piece, owner, sessions FROM {s}.work_queue
                       WHERE name = $1 AND {which} LIMIT 1 FOR UPDATE SKIP LOCKED)
                     UPDATE {s}.work_queue q SET state = 'claimed', owner = $2,
                       lease_until = clock_timestamp() + $3 * interval '1 second', attempt = q.attempt + 1,
                       sessions = '[]', rows_done = 0, progress_at = clock_timestamp(), error = NULL,
                       chunks = NULL, next_chunk = NULL, split_chunk = NULL
                     FROM pick WHERE q.name = $1 AND q.source_table = pick.source_table
                       AND q.range_id = pick.range_id AND q.piece = pick.piece
                     RETURNING q.source_table, q.range_id, q.piece, q.attempt, pick.owner, pick.sessions::text,
                       q.lo, q.hi, q.estimated_rows"
                )
            };
            let pending = take("state = 'pending' ORDER BY estimated_rows DESC, source_table, range_id, piece");
            let expired = take("state = 'claimed' AND lease_until < clock_timestamp() ORDER BY lease_until");
            let mut row = tx.query_opt(&pending, &[&run, &worker, &lease_seconds]).await?;
            if row.is_none() {
                row = tx.query_opt(&expired, &[&run, &worker, &lease_seconds]).await?;
            }
            Ok(row.map(|row| Claim {
                table: row.get(0),
                range: row.get::<_, i32>(1) as usize,
                piece: row.get::<_, i32>(2) as usize,
                attempt: row.get::<_, i32>(3) as u32,
                earlier_owner: row.get(4),
                earlier_sessions: serde_json::from_str(row.get::<_, &str>(5)).unwrap_or_default(),
                lo: row.get(6),
                hi: row.get(7),
                estimated_rows: row.get::<_, i64>(8) as u64,
            }))
        })
    }

    fn attach(&self, run: &str, worker: &str, piece: PieceOf<'_>, session: &str) -> Result<bool> {
        self.queue_run("recording a target session", async |tx, s| {
            let sql = format!(
                "UPDATE {s}.work_queue SET sessions = sessions || to_jsonb($6::text)
                 WHERE {THE_PIECE} AND owner = $5 AND state = 'claimed'"
            );
            let (range, n) = (piece.range as i32, piece.piece as i32);
            Ok(tx.execute(&sql, &[&run, &piece.table, &range, &n, &worker, &session]).await? == 1)
        })
    }

    fn renew(&self, run: &str, worker: &str, piece: PieceOf<'_>, lease_seconds: f64, rows: u64) -> Result<bool> {
        self.queue_run("renewing a lease", async |tx, s| {
            // A lease that ran out is not renewed, even if nobody took the piece yet: another
            // worker may take it at any moment, and end this one's sessions.
            let sql = format!(
                "UPDATE {s}.work_queue SET lease_until = clock_timestamp() + $6 * interval '1 second',
                   progress_at = CASE WHEN rows_done <> $7 THEN clock_timestamp() ELSE progress_at END, rows_done = $7
                 WHERE {THE_PIECE} AND owner = $5 AND state = 'claimed' AND lease_until >= clock_timestamp()"
            );
            let (range, n, rows) = (piece.range as i32, piece.piece as i32, rows as i64);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&run, &piece.table, &range, &n, &worker, &lease_seconds, &rows];
            Ok(tx.execute(&sql, &params).await? == 1)
        })
    }

    fn advance(&self, run: &str, worker: &str, piece: PieceOf<'_>, chunks: &str, chunk: usize) -> Result<Advance> {
        self.queue_run("starting a chunk", async |client, s| {
            // Under the piece's row lock: a split (which needs next_chunk unchanged) happens
            // either before this (and is returned) or after (and starts past this chunk).
            let sql = format!(
                "UPDATE {s}.work_queue SET next_chunk = $7, chunks = coalesce(chunks, $6)
                 WHERE {THE_PIECE} AND owner = $5 AND state = 'claimed' AND lease_until >= clock_timestamp()
                 RETURNING split_chunk"
            );
            let (range, n, chunk) = (piece.range as i32, piece.piece as i32, chunk as i32);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&run, &piece.table, &range, &n, &worker, &chunks, &chunk];
            Ok(match client.query_opt(&sql, &params).await? {
                None => Advance::Lost,
                Some(row) => match row.get::<_, Option<i32>>(0) {
                    Some(at) if chunk >= at => Advance::StopAt(at as usize),
                    _ => Advance::Go,
                },
            })
        })
    }

    fn has_work(&self, run: &str) -> Result<bool> {
        self.queue_run("looking for work", async |client, s| {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.work_queue WHERE name = $1 AND state = 'pending')
                   OR EXISTS (SELECT 1 FROM {s}.work_queue WHERE name = $1 AND state = 'claimed'
                     AND (lease_until < clock_timestamp() OR ({SPLITTABLE})))
                   OR EXISTS (SELECT 1 FROM {s}.digest_tasks WHERE name = $1
                     AND (state = 'pending' OR (state = 'claimed' AND lease_until < clock_timestamp())))"
            );
            Ok(client.query_one(&sql, &[&run]).await?.get(0))
        })
    }

    fn splittable(&self, run: &str) -> Result<Vec<Splittable>> {
        self.queue_run("reading splittable pieces", async |client, s| {
            let sql = format!(
                "SELECT source_table, range_id, piece, chunks, next_chunk, estimated_rows, owner
                 FROM {s}.work_queue
                 WHERE name = $1 AND state = 'claimed' AND lease_until >= clock_timestamp() AND {SPLITTABLE}
                 ORDER BY estimated_rows DESC"
            );
            Ok(client
                .query(&sql, &[&run])
                .await?
                .iter()
                .map(|r| Splittable {
                    table: r.get(0),
                    range: r.get::<_, i32>(1) as usize,
                    piece: r.get::<_, i32>(2) as usize,
                    chunks: r.get(3),
                    next_chunk: r.get::<_, Option<i32>>(4).unwrap_or(0) as usize,
                    estimated_rows: r.get::<_, i64>(5) as u64,
                    owner: r.get(6),
                })
                .collect())
        })
    }

    fn split(
        &self,
        run: &str,
        piece: PieceOf<'_>,
        next_chunk: usize,
        at: usize,
        key: &str,
        estimated_rows: u64,
    ) -> Result<bool> {
        self.queue_run("splitting a piece", async |client, s| {
            // One statement: the piece ends at `key` (while its holder is still on `next_chunk`),
            // and the remainder is a new pending piece of the same range.
            let sql = format!(
                "WITH cut AS (
                   UPDATE {s}.work_queue SET split_chunk = $6, hi = $7, split = true,
                     estimated_rows = greatest(estimated_rows - $8, 0)
                   WHERE {THE_PIECE} AND state = 'claimed' AND split_chunk IS NULL AND next_chunk = $5
                     AND $6 > $5
                   RETURNING (SELECT hi FROM {s}.work_queue WHERE {THE_PIECE}) AS old_hi)
                 INSERT INTO {s}.work_queue (name, source_table, range_id, piece, estimated_rows, lo, hi, split)
                 SELECT $1, $2, $3,
                   (SELECT max(piece) + 1 FROM {s}.work_queue WHERE name = $1 AND source_table = $2 AND range_id = $3),
                   $8, $7, old_hi, true FROM cut"
            );
            let (range, n, next, at, rows) =
                (piece.range as i32, piece.piece as i32, next_chunk as i32, at as i32, estimated_rows as i64);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                [&run, &piece.table, &range, &n, &next, &at, &key, &rows];
            Ok(client.execute(&sql, &params).await? == 1)
        })
    }

    fn complete(
        &self,
        run: &str,
        worker: &str,
        piece: PieceOf<'_>,
        done: &RangeDone,
        merge: &dyn Fn(&[RangeDone]) -> Result<RangeDone>,
    ) -> Result<bool> {
        let (range, n) = (piece.range as i32, piece.piece as i32);
        let (read, written, rejected) = (done.rows_read as i64, done.rows_written as i64, done.rows_rejected as i64);
        // The common case in one statement: a range never split (one piece: `split` is set on
        // every piece of a range that was), marked done and recorded.
        let alone = self.queue_run("completing a range", async |client, s| {
            let sql = format!(
                "WITH mark AS (
                   UPDATE {s}.work_queue SET state = 'done', lease_until = NULL, rows_done = $6, rows_read = $7,
                     rows_rejected = $8, digests = $9, progress_at = clock_timestamp()
                   WHERE {THE_PIECE} AND owner = $5 AND state = 'claimed'
                     AND NOT split
                   RETURNING 1),
                 record AS (
                   INSERT INTO {s}.ranges_done
                     (name, source_table, range_id, rows_read, rows_written, rows_rejected, digests)
                   SELECT $1, $2, $3, $7, $6, $8, $9 FROM mark
                   ON CONFLICT (name, source_table, range_id) DO UPDATE SET rows_read = EXCLUDED.rows_read,
                     rows_written = EXCLUDED.rows_written, rows_rejected = EXCLUDED.rows_rejected,
                     digests = EXCLUDED.digests
                   RETURNING 1)
                 SELECT count(*) FROM record"
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
                [&run, &piece.table, &range, &n, &worker, &written, &read, &rejected, &done.digests];
            Ok(client.query_one(&sql, &params).await?.get::<_, i64>(0) == 1)
        })?;
        if alone {
            return Ok(true);
        }
        // Not held any more, or a range of several pieces: in one transaction, the piece marked
        // done and, once every piece is, the range recorded as `merge` adds them up.
        let mut merged: Option<Result<RangeDone>> = None;
        let held = self.queue_run("completing a range", async |client, s| {
            client.batch_execute("BEGIN").await?;
            let mark = format!(
                "UPDATE {s}.work_queue SET state = 'done', lease_until = NULL, rows_done = $6, rows_read = $7,
                   rows_rejected = $8, digests = $9, progress_at = clock_timestamp()
                 WHERE {THE_PIECE} AND owner = $5 AND state = 'claimed'"
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
                [&run, &piece.table, &range, &n, &worker, &written, &read, &rejected, &done.digests];
            if client.execute(&mark, &params).await? != 1 {
                client.batch_execute("ROLLBACK").await?;
                return Ok(false);
            }
            // Every piece of the range, locked: the last one done records the range.
            let pieces = format!(
                "SELECT state, rows_read, rows_done, rows_rejected, digests FROM {s}.work_queue
                 WHERE name = $1 AND source_table = $2 AND range_id = $3 ORDER BY piece FOR UPDATE"
            );
            let rows = client.query(&pieces, &[&run, &piece.table, &range]).await?;
            if rows.iter().any(|r| r.get::<_, &str>(0) != "done") {
                client.batch_execute("COMMIT").await?;
                return Ok(true);
            }
            let parts: Vec<RangeDone> = rows
                .iter()
                .map(|r| RangeDone {
                    range: piece.range,
                    rows_read: r.get::<_, Option<i64>>(1).unwrap_or(0) as u64,
                    rows_written: r.get::<_, i64>(2) as u64,
                    rows_rejected: r.get::<_, Option<i64>>(3).unwrap_or(0) as u64,
                    digests: r.get::<_, Option<String>>(4).unwrap_or_default(),
                })
                .collect();
            let whole = match merge(&parts) {
                Ok(whole) => whole,
                Err(error) => {
                    client.batch_execute("ROLLBACK").await?;
                    merged = Some(Err(error));
                    return Ok(false);
                }
            };
            let record = format!(
                "INSERT INTO {s}.ranges_done (name, source_table, range_id, rows_read, rows_written, rows_rejected, digests)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name, source_table, range_id) DO UPDATE SET rows_read = EXCLUDED.rows_read,
                   rows_written = EXCLUDED.rows_written, rows_rejected = EXCLUDED.rows_rejected,
                   digests = EXCLUDED.digests"
            );
            let (r, w, j) = (whole.rows_read as i64, whole.rows_written as i64, whole.rows_rejected as i64);
            client.execute(&record, &[&run, &piece.table, &range, &r, &w, &j, &whole.digests]).await?;
            client.batch_execute("COMMIT").await?;
            Ok(true)
        });
        match (held, merged) {
            (_, Some(Err(error))) => Err(error),
            (held, _) => held,
        }
    }

    fn release(&self, run: &str, worker: &str, piece: PieceOf<'_>, error: &str, max_attempts: u32) -> Result<()> {
        self.queue_run("giving a range back", async |tx, s| {
            let sql = format!(
                "UPDATE {s}.work_queue SET state = CASE WHEN attempt >= $7 THEN 'failed' ELSE 'pending' END,
                   owner = NULL, lease_until = NULL, error = $6
                 WHERE {THE_PIECE} AND owner = $5 AND state = 'claimed'"
            );
            let (range, n, max) = (piece.range as i32, piece.piece as i32, max_attempts as i32);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&run, &piece.table, &range, &n, &worker, &error, &max];
            tx.execute(&sql, &params).await.map(drop)
        })
    }

    fn queue(&self, run: &str) -> Result<Vec<QueuedRange>> {
        self.tx("reading the run's queue", async |tx, s| {
            let sql = format!(
                "SELECT source_table, range_id, piece, estimated_rows, state, owner, attempt, rows_done,
                   coalesce(extract(epoch FROM clock_timestamp() - progress_at), 0)::float8,
                   coalesce(extract(epoch FROM lease_until - clock_timestamp()), 0)::float8, error, sessions::text
                 FROM {s}.work_queue WHERE name = $1 ORDER BY source_table, range_id, piece"
            );
            Ok(tx
                .query(&sql, &[&run])
                .await?
                .iter()
                .map(|r| QueuedRange {
                    table: r.get(0),
                    range: r.get::<_, i32>(1) as usize,
                    piece: r.get::<_, i32>(2) as usize,
                    estimated_rows: r.get::<_, i64>(3) as u64,
                    state: r.get(4),
                    owner: r.get(5),
                    attempt: r.get::<_, i32>(6) as u32,
                    rows_done: r.get::<_, i64>(7) as u64,
                    idle_seconds: r.get(8),
                    lease_left_seconds: r.get(9),
                    error: r.get(10),
                    sessions: serde_json::from_str(r.get::<_, &str>(11)).unwrap_or_default(),
                })
                .collect())
        })
    }

    fn queued_runs(&self) -> Result<Vec<String>> {
        self.tx("reading the queues", async |tx, s| {
            // The distinct names by a walk of the primary key's index (one probe per run), not a
            // scan of every queued range: idle workers ask this often.
            let sql = format!(
                "WITH RECURSIVE runs AS (
                   (SELECT name FROM {s}.work_queue ORDER BY name LIMIT 1)
                   UNION ALL
                   SELECT (SELECT q.name FROM {s}.work_queue q WHERE q.name > runs.name ORDER BY q.name LIMIT 1)
                   FROM runs WHERE runs.name IS NOT NULL)
                 SELECT name FROM runs WHERE name IS NOT NULL"
            );
            Ok(tx.query(&sql, &[]).await?.iter().map(|r| r.get(0)).collect())
        })
    }

    fn drop_queue(&self, run: &str) -> Result<()> {
        self.tx("removing the run's queue", async |tx, s| {
            tx.execute(&format!("DELETE FROM {s}.work_queue WHERE name = $1"), &[&run]).await?;
            tx.execute(&format!("DELETE FROM {s}.digest_tasks WHERE name = $1"), &[&run]).await.map(drop)
        })
    }

    fn enqueue_digests(&self, run: &str, table: &str, payloads: &[String]) -> Result<()> {
        self.tx("queueing digest tasks", async |tx, s| {
            tx.execute(&format!("DELETE FROM {s}.digest_tasks WHERE name = $1 AND source_table = $2"), &[&run, &table])
                .await?;
            let sql =
                format!("INSERT INTO {s}.digest_tasks (name, source_table, item, payload) VALUES ($1, $2, $3, $4)");
            for (item, payload) in payloads.iter().enumerate() {
                tx.execute(&sql, &[&run, &table, &(item as i32), payload]).await?;
            }
            Ok(())
        })
    }

    fn claim_digest(&self, run: &str, worker: &str, lease_seconds: f64) -> Result<Option<DigestClaim>> {
        self.queue_run("claiming a digest task", async |client, s| {
            let sql = format!(
                "WITH pick AS (SELECT source_table, item FROM {s}.digest_tasks
                   WHERE name = $1 AND (state = 'pending' OR (state = 'claimed' AND lease_until < clock_timestamp()))
                   ORDER BY state DESC, source_table, item LIMIT 1 FOR UPDATE SKIP LOCKED)
                 UPDATE {s}.digest_tasks t SET state = 'claimed', owner = $2,
                   lease_until = clock_timestamp() + $3 * interval '1 second', attempt = t.attempt + 1, error = NULL
                 FROM pick WHERE t.name = $1 AND t.source_table = pick.source_table AND t.item = pick.item
                 RETURNING t.source_table, t.item, t.payload, t.attempt"
            );
            Ok(client.query_opt(&sql, &[&run, &worker, &lease_seconds]).await?.map(|row| DigestClaim {
                table: row.get(0),
                item: row.get::<_, i32>(1) as usize,
                payload: row.get(2),
                attempt: row.get::<_, i32>(3) as u32,
            }))
        })
    }

    fn renew_digest(&self, run: &str, worker: &str, table: &str, item: usize, lease_seconds: f64) -> Result<bool> {
        self.queue_run("renewing a digest task", async |client, s| {
            let sql = format!(
                "UPDATE {s}.digest_tasks SET lease_until = clock_timestamp() + $5 * interval '1 second'
                 WHERE name = $1 AND source_table = $2 AND item = $3 AND owner = $4 AND state = 'claimed'
                   AND lease_until >= clock_timestamp()"
            );
            Ok(client.execute(&sql, &[&run, &table, &(item as i32), &worker, &lease_seconds]).await? == 1)
        })
    }

    fn complete_digest(&self, run: &str, worker: &str, table: &str, item: usize, result: &str) -> Result<bool> {
        self.queue_run("recording a digest task", async |client, s| {
            let sql = format!(
                "UPDATE {s}.digest_tasks SET state = 'done', lease_until = NULL, result = $5
                 WHERE name = $1 AND source_table = $2 AND item = $3 AND owner = $4 AND state = 'claimed'"
            );
            Ok(client.execute(&sql, &[&run, &table, &(item as i32), &worker, &result]).await? == 1)
        })
    }

    fn release_digest(
        &self,
        run: &str,
        worker: &str,
        table: &str,
        item: usize,
        error: &str,
        max_attempts: u32,
    ) -> Result<()> {
        self.queue_run("giving a digest task back", async |client, s| {
            let sql = format!(
                "UPDATE {s}.digest_tasks SET state = CASE WHEN attempt >= $6 THEN 'failed' ELSE 'pending' END,
                   owner = NULL, lease_until = NULL, error = $5
                 WHERE name = $1 AND source_table = $2 AND item = $3 AND owner = $4 AND state = 'claimed'"
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&run, &table, &(item as i32), &worker, &error, &(max_attempts as i32)];
            client.execute(&sql, &params).await.map(drop)
        })
    }

    fn digest_items(&self, run: &str, table: &str, results: bool) -> Result<Vec<DigestItem>> {
        self.queue_run("reading digest tasks", async |client, s| {
            let result = if results { "result" } else { "NULL::text" };
            let sql = format!(
                "SELECT item, state, owner, attempt, {result}, error FROM {s}.digest_tasks
                 WHERE name = $1 AND source_table = $2 ORDER BY item"
            );
            Ok(client
                .query(&sql, &[&run, &table])
                .await?
                .iter()
                .map(|r| DigestItem {
                    item: r.get::<_, i32>(0) as usize,
                    state: r.get(1),
                    owner: r.get(2),
                    attempt: r.get::<_, i32>(3) as u32,
                    result: r.get(4),
                    error: r.get(5),
                })
                .collect())
        })
    }
}
