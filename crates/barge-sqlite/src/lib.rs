//! # barge-sqlite
//!
//! SQLite as a barge source and target: the embedded default that needs nothing installed.
//!
//! ```text
//!  source file ──(read-only connection per reader)── SELECT cols WHERE key range ──▶ Arrow builders
//!  Arrow batch ──(one writer connection)── INSERT … VALUES (…),(…) ×100 in one transaction ──▶ target file
//! ```
//!
//! URLs: `sqlite://relative/path.db` or `sqlite:///absolute/path.db`. Type mapping: [`types`].
//! Tables without a primary key are ranged over by `rowid`.

mod checks;
pub mod demo;
mod dump;
pub mod ledger;
mod source;
mod sql;
mod target;
pub mod types;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use barge_core::synthetic::Column;
use barge_core::url::{redact, split_scheme};
use barge_core::{EngineFactory, Error, Result};

pub use source::SqliteSource;
pub use target::SqliteTarget;

/// The engine's name, also written into Arrow field metadata so a SQLite target can keep a SQLite
/// source's declared types.
pub const ENGINE: &str = "sqlite";
/// How long a connection waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Registers SQLite with the CLI.
pub struct SqliteEngine;

/// The file path in a `sqlite://` URL.
pub fn parse_url(url: &str) -> Result<PathBuf> {
    let (scheme, rest) = split_scheme(url)?;
    if scheme != "sqlite" {
        return Err(Error::InvalidUrl { url: redact(url), reason: "expected sqlite://".into() });
    }
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() || path == "/" {
        return Err(Error::InvalidUrl {
            url: redact(url),
            reason: "no database file: use sqlite://relative/path.db or sqlite:///absolute/path.db".into(),
        });
    }
    Ok(PathBuf::from(path))
}

fn display(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The most bytes a value or a row may hold on this connection (SQLITE_LIMIT_LENGTH; SQLite's
/// default, 1,000,000,000, if the connection does not say).
pub(crate) fn length_limit(conn: &rusqlite::Connection) -> u64 {
    conn.limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH).map_or(1_000_000_000, |n| n.max(0) as u64)
}

/// Maps a rusqlite error to a barge error with what barge was doing. The context is a static
/// string so that the happy path, which calls this per value, allocates nothing.
pub(crate) fn sqlite_err(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::engine(context, e)
}

impl EngineFactory for SqliteEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["sqlite"]
    }

    fn in_namespace(&self, url: &str, namespace: &str) -> Result<String> {
        match namespace {
            "main" => Ok(url.to_string()),
            _ => Err(Error::Config(format!(
                "`{namespace}.…`: a SQLite database has one schema, `main`; name the table alone"
            ))),
        }
    }

    fn check_url(&self, url: &str) -> Result<()> {
        parse_url(url).map(|_| ())
    }

    fn same_database(&self, a: &str, b: &str) -> bool {
        match (parse_url(a), parse_url(b)) {
            (Ok(a), Ok(b)) => a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y),
            _ => false,
        }
    }

    fn open_source(&self, url: &str) -> Result<Arc<dyn barge_core::Source>> {
        let path = parse_url(url)?;
        let display = display(&path);
        Ok(SqliteSource::open(path, display)?)
    }

    fn open_target(&self, url: &str) -> Result<Arc<dyn barge_core::Target>> {
        let path = parse_url(url)?;
        let display = display(&path);
        Ok(SqliteTarget::open(path, display)?)
    }

    fn scratch(&self) -> Option<&dyn barge_core::ScratchSpace> {
        Some(self)
    }

    fn ledger_stores(&self) -> Option<&dyn barge_core::LedgerStores> {
        Some(self)
    }
}

impl barge_core::LedgerStores for SqliteEngine {
    fn open_ledger(&self, location: &str) -> Result<Arc<dyn barge_core::ledger::LedgerStore>> {
        Ok(Arc::new(ledger::SqliteLedger::open(&parse_url(location)?)?))
    }
}

impl barge_core::ScratchSpace for SqliteEngine {
    fn create_scratch(&self, url: &str, tag: &str) -> Result<String> {
        let path = parse_url(url)?;
        let scratch = path.with_file_name(format!("barge_scratch_{tag}.db"));
        self.drop_scratch(&display(&scratch))?;
        Ok(display(&scratch))
    }

    fn drop_scratch(&self, scratch_url: &str) -> Result<()> {
        let path = parse_url(scratch_url)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::engine(format!("removing {}", file.display()), e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn generate(&self, url: &str, table: &str, columns: &[Column], rows: u64) -> Result<()> {
        let dialect = barge_sql::synthetic::Dialect {
            types: [
                "INTEGER PRIMARY KEY",
                "INTEGER NOT NULL",
                "TEXT NOT NULL",
                "TEXT",
                "DECIMAL(12,2) NOT NULL",
                "DATETIME NOT NULL",
                "BOOLEAN NOT NULL",
            ],
            concat: |prefix, n| format!("'{prefix}' || ({n})"),
            hundredths: |n| format!("({n}) / 100.0"),
            timestamp: |seconds| format!("datetime('2024-01-01', '+' || ({seconds}) || ' seconds')"),
            quote: sql::quote,
        };
        let path = parse_url(url)?;
        let conn = rusqlite::Connection::open(&path).map_err(sqlite_err("opening the database"))?;
        let quoted = sql::quote(table);
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {quoted}; CREATE TABLE {quoted} ({});
             BEGIN; WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})
             INSERT INTO {quoted} SELECT {} FROM s; COMMIT;",
            dialect.column_defs(columns).join(", "),
            dialect.values(columns).join(", ")
        ))
        .map_err(sqlite_err("generating a table"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_limit_is_the_builds() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        assert_eq!(length_limit(&conn), 1_000_000_000);
    }

    #[test]
    fn urls_name_relative_and_absolute_files() {
        assert_eq!(parse_url("sqlite://data/a.db").unwrap(), PathBuf::from("data/a.db"));
        assert_eq!(parse_url("sqlite:///tmp/a.db").unwrap(), PathBuf::from("/tmp/a.db"));
        assert!(parse_url("sqlite://").unwrap_err().is_usage());
        assert!(parse_url("sqlite:a.db").unwrap_err().is_usage());
    }
}
