//! The default state store: one SQLite file (by default beside the pipeline file) holding run
//! ledgers, committed ranges and watermarks. Each call is one transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use barge_core::ledger::{Holder, LedgerStore, RangeDone, RunRecord, TableLedger};
use barge_core::{Error, KeyRange, Result, Scalar};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{BUSY_TIMEOUT, sqlite_err};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS barge_runs (
  name TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  finished_at TEXT
);
CREATE TABLE IF NOT EXISTS barge_tables (
  name TEXT NOT NULL,
  source_table TEXT NOT NULL,
  action TEXT NOT NULL,
  ranges TEXT NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (name, source_table)
);
CREATE TABLE IF NOT EXISTS barge_ranges_done (
  name TEXT NOT NULL,
  source_table TEXT NOT NULL,
  range_id INTEGER NOT NULL,
  rows_read INTEGER NOT NULL,
  rows_written INTEGER NOT NULL,
  rows_rejected INTEGER NOT NULL,
  digests TEXT NOT NULL,
  PRIMARY KEY (name, source_table, range_id)
);
CREATE TABLE IF NOT EXISTS barge_owners (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS barge_watermarks (
  name TEXT NOT NULL,
  source_table TEXT NOT NULL,
  value TEXT NOT NULL,
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (name, source_table)
);
CREATE TABLE IF NOT EXISTS barge_documents (
  name TEXT NOT NULL,
  key TEXT NOT NULL,
  body TEXT NOT NULL,
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (name, key)
);";

/// A ledger store in a SQLite file. A run it owns is locked by an exclusive `flock` on the file
/// `<ledger>.<run>.lock` beside it, held while the store is open: the kernel lets it go when the
/// process dies, so a dead owner's run is taken over, and no lease can go stale; other runs in
/// the file go on (the waves of a migration). (Not the ledger file itself: closing another
/// descriptor of a SQLite file drops SQLite's own POSIX locks on it.)
pub struct SqliteLedger {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The lock files of the runs this store owns.
    owned: Mutex<std::collections::HashMap<String, std::fs::File>>,
}

impl SqliteLedger {
    /// Every file a ledger at `path` may make: the database, its WAL and shared-memory files, a
    /// rollback journal, and the lock file.
    pub fn files(path: &Path) -> Vec<PathBuf> {
        let base = path.display().to_string();
        let mut files = vec![path.to_path_buf()];
        files.extend(["-wal", "-shm", "-journal"].map(|tail| PathBuf::from(format!("{base}{tail}"))));
        // The runs' lock files, as they are now.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if file.starts_with(&format!("{name}.")) && file.ends_with(".lock") {
                    files.push(path.with_file_name(file));
                }
            }
        }
        files
    }

    /// Opens (creating if needed) the state file at `path`.
    pub fn open(path: &Path) -> Result<SqliteLedger> {
        let conn = Connection::open(path)
            .map_err(|e| Error::Config(format!("cannot open the state file {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_err("setting busy timeout"))?;
        // Another process writing the file (a running `migrate start` while `migrate status`
        // opens it) can make setting the journal mode fail at once with SQLITE_BUSY, which the
        // busy timeout does not wait for: tried again for as long.
        let started = std::time::Instant::now();
        loop {
            match conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                        && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(sqlite_err("configuring the state file")(e)),
            }
        }
        conn.execute_batch(SCHEMA).map_err(|e| {
            Error::Config(format!("{} is not a barge state file (or cannot be written): {e}", path.display()))
        })?;
        Ok(SqliteLedger { path: path.to_path_buf(), conn: Mutex::new(conn), owned: Mutex::new(Default::default()) })
    }

    fn tx<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().expect("ledger lock");
        let tx = conn.transaction().map_err(sqlite_err(what))?;
        let value = f(&tx).map_err(sqlite_err(what))?;
        tx.commit().map_err(sqlite_err(what))?;
        Ok(value)
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("ledger values serialise")
}

impl LedgerStore for SqliteLedger {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn acquire(&self, name: &str, holder: &Holder) -> Result<()> {
        let mut owned = self.owned.lock().expect("ledger lock");
        if owned.contains_key(name) {
            return Ok(());
        }
        let plain: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let lock_path = PathBuf::from(format!("{}.{plain}.lock", self.path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Config(format!("cannot open the lock file {}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let other: Option<String> = self.tx("reading the ledger's owner", |tx| {
                    tx.query_row("SELECT holder FROM barge_owners WHERE name = ?1", [name], |r| r.get(0)).optional()
                })?;
                let holder = other
                    .and_then(|h| serde_json::from_str::<Holder>(&h).ok())
                    .map_or_else(|| "a process that has not said who it is yet".to_string(), |h| h.to_string());
                return Err(Error::LedgerBusy { run: name.into(), store: self.describe(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::engine(format!("locking {}", lock_path.display()), e));
            }
        }
        self.tx("recording the ledger's owner", |tx| {
            tx.execute("INSERT OR REPLACE INTO barge_owners (name, holder) VALUES (?1, ?2)", [name, &json(holder)])
                .map(|_| ())
        })?;
        owned.insert(name.to_string(), file);
        Ok(())
    }

    fn start(&self, name: &str, fingerprint: &str) -> Result<()> {
        self.tx("starting a run in the state file", |tx| {
            tx.execute("DELETE FROM barge_ranges_done WHERE name = ?1", [name])?;
            tx.execute("DELETE FROM barge_tables WHERE name = ?1", [name])?;
            tx.execute("DELETE FROM barge_runs WHERE name = ?1", [name])?;
            tx.execute("INSERT INTO barge_runs (name, fingerprint) VALUES (?1, ?2)", [name, fingerprint])?;
            Ok(())
        })
    }

    fn resume(&self, name: &str, fingerprint: &str) -> Result<RunRecord> {
        let stored: Option<String> = self.tx("reading the state file", |tx| {
            tx.query_row("SELECT fingerprint FROM barge_runs WHERE name = ?1", [name], |r| r.get(0)).optional()
        })?;
        barge_core::ledger::check_resumable(&self.describe(), name, stored.as_deref(), fingerprint)?;
        self.tx("reading the state file", |tx| {
            let mut ledger = RunRecord::default();
            let mut stmt =
                tx.prepare("SELECT source_table, action, ranges, finished FROM barge_tables WHERE name = ?1")?;
            let mut rows = stmt.query([name])?;
            while let Some(row) = rows.next()? {
                let ranges: String = row.get(2)?;
                let ranges: Vec<KeyRange> = serde_json::from_str(&ranges).unwrap_or_default();
                ledger.tables.insert(
                    row.get(0)?,
                    TableLedger { ranges, action: row.get(1)?, done: Default::default(), finished: row.get(3)? },
                );
            }
            let mut stmt = tx.prepare(
                "SELECT source_table, range_id, rows_read, rows_written, rows_rejected, digests
                 FROM barge_ranges_done WHERE name = ?1",
            )?;
            let mut rows = stmt.query([name])?;
            while let Some(row) = rows.next()? {
                let table: String = row.get(0)?;
                let range: usize = row.get::<_, i64>(1)? as usize;
                let done = RangeDone {
                    range,
                    rows_read: row.get::<_, i64>(2)? as u64,
                    rows_written: row.get::<_, i64>(3)? as u64,
                    rows_rejected: row.get::<_, i64>(4)? as u64,
                    digests: row.get(5)?,
                };
                if let Some(t) = ledger.tables.get_mut(&table) {
                    t.done.insert(range, done);
                }
            }
            Ok(ledger)
        })
    }

    fn plan_table(&self, name: &str, table: &str, action: &str, ranges: &[KeyRange]) -> Result<()> {
        self.tx("recording a plan in the state file", |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO barge_tables (name, source_table, action, ranges, finished)
                 VALUES (?1, ?2, ?3, ?4, 0)",
                params![name, table, action, json(&ranges)],
            )?;
            tx.execute("DELETE FROM barge_ranges_done WHERE name = ?1 AND source_table = ?2", [name, table])?;
            Ok(())
        })
    }

    fn ranges_done(&self, name: &str, table: &str, done: &[RangeDone]) -> Result<()> {
        self.tx("recording committed ranges in the state file", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO barge_ranges_done
                 (name, source_table, range_id, rows_read, rows_written, rows_rejected, digests)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for d in done {
                stmt.execute(params![
                    name,
                    table,
                    d.range as i64,
                    d.rows_read as i64,
                    d.rows_written as i64,
                    d.rows_rejected as i64,
                    d.digests
                ])?;
            }
            Ok(())
        })
    }

    fn table_finished(&self, name: &str, table: &str) -> Result<()> {
        self.tx("recording a finished table in the state file", |tx| {
            tx.execute("UPDATE barge_tables SET finished = 1 WHERE name = ?1 AND source_table = ?2", [name, table])
                .map(drop)
        })
    }

    fn run_state(&self, name: &str) -> Result<Option<(String, bool)>> {
        self.tx("reading the state file", |tx| {
            tx.query_row("SELECT fingerprint, finished_at IS NOT NULL FROM barge_runs WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
    }

    fn finish(&self, name: &str) -> Result<()> {
        self.tx("recording a finished run in the state file", |tx| {
            tx.execute(
                "UPDATE barge_runs SET finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
                [name],
            )
            .map(drop)
        })
    }

    fn watermark(&self, name: &str, table: &str) -> Result<Option<Scalar>> {
        let value: Option<String> = self.tx("reading a watermark", |tx| {
            tx.query_row(
                "SELECT value FROM barge_watermarks WHERE name = ?1 AND source_table = ?2",
                [name, table],
                |r| r.get(0),
            )
            .optional()
        })?;
        value.map(|v| serde_json::from_str(&v).map_err(|e| Error::engine("reading a watermark", e))).transpose()
    }

    fn set_watermark(&self, name: &str, table: &str, value: &Scalar) -> Result<()> {
        self.tx("recording a watermark", |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO barge_watermarks (name, source_table, value) VALUES (?1, ?2, ?3)",
                params![name, table, json(value)],
            )
            .map(drop)
        })
    }

    fn document(&self, name: &str, key: &str) -> Result<Option<String>> {
        self.tx("reading the state file", |tx| {
            tx.query_row("SELECT body FROM barge_documents WHERE name = ?1 AND key = ?2", [name, key], |r| r.get(0))
                .optional()
        })
    }

    fn set_document(&self, name: &str, key: &str, body: &str) -> Result<()> {
        self.tx("writing the state file", |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO barge_documents (name, key, body) VALUES (?1, ?2, ?3)",
                [name, key, body],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_opens_while_another_connection_keeps_writing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let writer = SqliteLedger::open(&path).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    writer.set_document("m", "live", &n.to_string()).unwrap();
                    n += 1;
                }
            });
            // Others open, read and close it all along (each close may checkpoint the log).
            let others: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        for _ in 0..100 {
                            let reader = SqliteLedger::open(&path).unwrap();
                            reader.document("m", "live").unwrap();
                        }
                    })
                })
                .collect();
            for other in others {
                other.join().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }

    #[test]
    fn a_ledger_survives_reopening_and_refuses_another_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let ranges = vec![
            KeyRange { id: 0, lo: None, hi: Some(vec![Scalar::Int(10)]) },
            KeyRange { id: 1, lo: Some(vec![Scalar::Int(10)]), hi: None },
        ];
        {
            let state = SqliteLedger::open(&path).unwrap();
            state.start("nightly", "f1").unwrap();
            state.plan_table("nightly", "orders", "create", &ranges).unwrap();
            let done = RangeDone { range: 1, rows_read: 5, rows_written: 4, rows_rejected: 1, digests: "[]".into() };
            state.ranges_done("nightly", "orders", &[done]).unwrap();
            state.set_watermark("nightly", "orders", &Scalar::Text("2024-01-01 00:00:00".into())).unwrap();
        }
        let state = SqliteLedger::open(&path).unwrap();
        let ledger = state.resume("nightly", "f1").unwrap();
        let orders = &ledger.tables["orders"];
        assert_eq!(orders.ranges, ranges);
        assert_eq!(orders.action, "create");
        assert_eq!(orders.done.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(orders.done[&1].rows_rejected, 1);
        assert!(!orders.finished);
        let other = state.resume("nightly", "f2").unwrap_err().to_string();
        assert!(other.contains("another pipeline or command"), "{other}");
        assert!(state.resume("weekly", "f1").unwrap_err().to_string().contains("nothing to resume"));
        // Starting afresh forgets the ranges, not the watermark.
        state.start("nightly", "f1").unwrap();
        assert!(state.resume("nightly", "f1").unwrap().tables.is_empty());
        assert_eq!(state.watermark("nightly", "orders").unwrap(), Some(Scalar::Text("2024-01-01 00:00:00".into())));
    }
}
