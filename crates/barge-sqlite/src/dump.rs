//! SQLite → SQLite: the schema exactly as the file holds it (`sqlite_schema.sql`, the statements
//! as they were written), restored in steps around the rows:
//!
//! ```text
//!  Tables          every CREATE TABLE, foreign keys inline (SQLite cannot add them later; they
//!                  are not enforced while loading, as foreign_keys is off per connection)
//!  TableObjects(t) t's CREATE INDEX statements
//!  ForeignKeys     nothing more: they came with the tables
//!  Last            AUTOINCREMENT counters (sqlite_sequence) as the source has them, views, triggers
//! ```

use std::any::Any;
use std::path::PathBuf;

use barge_core::{DumpedSchema, Error, NotMigrated, RestoreStep, Result, SchemaObject};
use rusqlite::{Connection, OpenFlags};

use crate::sqlite_err;

/// One `sqlite_schema` row.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    kind: String,
    name: String,
    table: String,
    sql: String,
}

/// The schema of a SQLite source file.
pub struct SqliteDump {
    entries: Vec<Entry>,
    source: PathBuf,
}

impl std::fmt::Debug for SqliteDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQLite schema of {} ({} entries)", self.source.display(), self.entries.len())
    }
}

/// Reads the schema of the file at `path` over `conn`. `Ok(Err(reason))`: it cannot be restored
/// exactly (virtual tables, whose shadow tables a module owns).
pub fn dump(conn: &Connection, path: PathBuf) -> Result<std::result::Result<SqliteDump, String>> {
    let mut stmt = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
        )
        .map_err(sqlite_err("reading the schema"))?;
    let entries = stmt
        .query_map([], |r| Ok(Entry { kind: r.get(0)?, name: r.get(1)?, table: r.get(2)?, sql: r.get(3)? }))
        .map_err(sqlite_err("reading the schema"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sqlite_err("reading the schema"))?;
    if let Some(virtual_table) = entries.iter().find(|e| e.sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL TABLE"))
    {
        return Ok(Err(format!(
            "virtual table `{}` belongs to a module, so the schema is rebuilt by barge",
            virtual_table.name
        )));
    }
    Ok(Ok(SqliteDump { entries, source: path }))
}

impl DumpedSchema for SqliteDump {
    fn engine(&self) -> &'static str {
        crate::ENGINE
    }

    fn objects(&self) -> Vec<SchemaObject> {
        self.entries.iter().map(|e| SchemaObject { kind: e.kind.clone(), name: e.name.clone() }).collect()
    }

    fn not_migrated(&self) -> Vec<NotMigrated> {
        Vec::new()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl SqliteDump {
    /// Restores `step` over `conn`, in one transaction.
    pub fn restore(&self, conn: &Connection, step: RestoreStep<'_>) -> Result<()> {
        let statements: Vec<&str> = match step {
            RestoreStep::Tables => self.of_kind("table", None),
            RestoreStep::TableObjects(table) => self.of_kind("index", Some(table)),
            RestoreStep::ForeignKeys => return check_foreign_keys(conn),
            RestoreStep::Last => {
                let mut last = self.of_kind("view", None);
                last.extend(self.of_kind("trigger", None));
                last
            }
        };
        let mut script = String::from("BEGIN;\n");
        for sql in statements {
            script.push_str(sql);
            script.push_str(";\n");
        }
        if step == RestoreStep::Last {
            script.push_str(&self.sequences()?);
        }
        script.push_str("COMMIT;");
        conn.execute_batch(&script).map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            Error::engine(format!("restoring the source's {step}"), e)
        })
    }

    fn of_kind(&self, kind: &str, table: Option<&str>) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.kind == kind && table.is_none_or(|t| e.table == t))
            .map(|e| e.sql.as_str())
            .collect()
    }

    /// The source's AUTOINCREMENT counters now, after every row was read, as statements.
    fn sequences(&self) -> Result<String> {
        let source = Connection::open_with_flags(&self.source, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite_err("opening the source for its counters"))?;
        let has: bool = source
            .query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'", [], |r| r.get(0))
            .map_err(sqlite_err("reading AUTOINCREMENT counters"))?;
        if !has {
            return Ok(String::new());
        }
        let mut stmt = source
            .prepare("SELECT name, seq FROM sqlite_sequence")
            .map_err(sqlite_err("reading AUTOINCREMENT counters"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sqlite_err("reading AUTOINCREMENT counters"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sqlite_err("reading AUTOINCREMENT counters"))?;
        Ok(rows
            .iter()
            .map(|(name, seq)| {
                let name = format!("'{}'", name.replace('\'', "''"));
                format!("DELETE FROM sqlite_sequence WHERE name = {name}; INSERT INTO sqlite_sequence (name, seq) VALUES ({name}, {seq});\n")
            })
            .collect())
    }
}

/// Every table is in: rows whose foreign key finds no parent are an error, as adding the foreign
/// key would be in another engine.
fn check_foreign_keys(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check").map_err(sqlite_err("checking foreign keys"))?;
    let orphans = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(2)?)))
        .map_err(sqlite_err("checking foreign keys"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sqlite_err("checking foreign keys"))?;
    match orphans.first() {
        None => Ok(()),
        Some((table, parent)) => Err(Error::engine(
            "checking foreign keys",
            format!(
                "{} row(s) reference missing parents (first: `{table}` → `{parent}`), as they do in the source",
                orphans.len()
            ),
        )),
    }
}
