//! Writing Arrow record batches into SQLite: multi-row prepared INSERTs inside one transaction
//! per commit, on a single writer connection (SQLite allows one writer at a time).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};
use barge_core::{Encoded, Error, LOGICAL_JSON, Result, TableWriter, TargetColumn, WriteOptions, choose_column};
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::sql::quote;
use crate::types::{column_for_arrow, kind_of};
use crate::{ENGINE, sqlite_err};
use barge_core::arrays::{self, Get};
use barge_core::text as codec;

/// Rows per INSERT statement. Multi-row VALUES amortise per-statement overhead; 25, 100 and 400
/// measured within noise of each other (1.27–1.39 s per 1M demo orders), so 100 keeps statements
/// small. SQLite caps a statement at 32,766 parameters.
const ROWS_PER_INSERT: usize = 100;
const MAX_PARAMETERS: usize = 32_766;

pub struct SqliteTarget {
    path: PathBuf,
    display: String,
    /// Opened on first use, so that planning against a file that does not exist yet creates nothing.
    admin: Mutex<Option<Connection>>,
}

impl SqliteTarget {
    pub(crate) fn open(path: PathBuf, display: String) -> Result<Arc<Self>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(Error::Config(format!("{display}: directory {} does not exist", dir.display())));
        }
        Ok(Arc::new(SqliteTarget { path, display, admin: Mutex::new(None) }))
    }

    fn admin<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut admin = self.admin.lock().expect("admin connection lock");
        let conn = match admin.take() {
            Some(conn) => conn,
            None => connect(&self.path, &self.display)?,
        };
        let result = f(&conn);
        *admin = Some(conn);
        result
    }
}

fn connect(path: &PathBuf, display: &str) -> Result<Connection> {
    let conn =
        Connection::open(path).map_err(|e| Error::Connect { target: display.to_string(), reason: e.to_string() })?;
    conn.busy_timeout(crate::BUSY_TIMEOUT).map_err(sqlite_err("setting busy timeout"))?;
    Ok(conn)
}

impl barge_core::Target for SqliteTarget {
    fn display_name(&self) -> String {
        self.display.clone()
    }

    fn row_limit(&self) -> Result<Option<barge_core::RowLimit>> {
        // The limit is the library's, not the file's: asked of a database in memory, so that
        // planning creates no target file.
        let conn = rusqlite::Connection::open_in_memory().map_err(crate::sqlite_err("reading SQLite's limits"))?;
        let bytes = crate::length_limit(&conn);
        Ok(Some(barge_core::RowLimit {
            bytes,
            setting: format!("SQLITE_MAX_LENGTH ({bytes} in this build), a compile-time limit of SQLite"),
        }))
    }

    fn identity(&self) -> Result<Option<String>> {
        // A file that does not exist yet is no source's.
        Ok(self.path.canonicalize().ok().map(|p| format!("SQLite file {}", p.display())))
    }

    fn table_exists(&self, table: &str) -> Result<bool> {
        if !self.path.exists() {
            return Ok(false);
        }
        self.admin(|conn| table_exists_in(conn, table))
    }

    fn table_rows(&self, table: &str) -> Result<Option<u64>> {
        if !self.table_exists(table)? {
            return Ok(None);
        }
        self.admin(|conn| {
            let rows: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {}", quote(table)), [], |r| r.get(0))
                .map_err(sqlite_err("counting target rows"))?;
            Ok(Some(u64::try_from(rows).unwrap_or(0)))
        })
    }

    fn column_for(&self, table: &str, field: &Field) -> Result<TargetColumn> {
        choose_column(
            ENGINE,
            "SQLite",
            table,
            field,
            |logical, data_type| match (logical, barge_core::types::max_chars(field)) {
                (Some(LOGICAL_JSON), _) => Some("JSON".into()),
                // The subtype as SpatiaLite declares it (`POINT`), so it comes back.
                (Some(barge_core::LOGICAL_GEOMETRY), _) => Some(
                    field
                        .metadata()
                        .get(barge_core::META_GEOMETRY_TYPE)
                        .map_or("GEOMETRY".to_string(), |t| t.to_ascii_uppercase()),
                ),
                // SQLite enforces no length, but keeps the declaration (and its TEXT affinity).
                (None, Some(n)) if barge_core::types::fixed_chars(field).is_some() => Some(format!("CHAR({n})")),
                (None, Some(n)) => Some(format!("VARCHAR({n})")),
                _ => column_for_arrow(data_type).map(|c| c.native_type),
            },
            |native| kind_of(native, table, field.name()).ok().map(|k| k.arrow()),
        )
    }

    fn table_ddl(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> String {
        let mut defs: Vec<String> = columns
            .iter()
            .map(|(field, column)| {
                let not_null = if field.is_nullable() { "" } else { " NOT NULL" };
                let default = barge_core::types::default_sql(field, |token| {
                    use barge_core::types::{DEFAULT_NOW, DEFAULT_TODAY};
                    // SQLite has no UUID function.
                    [DEFAULT_NOW, DEFAULT_TODAY].contains(&token).then(|| token.to_string())
                })
                .map(|d| format!(" DEFAULT {d}"))
                .unwrap_or_default();
                // An enumeration is text held to its labels.
                let check = barge_core::types::enum_check(field, &quote(field.name()), |l| {
                    format!("'{}'", l.replace('\'', "''"))
                })
                .map(|c| format!(" {c}"))
                .unwrap_or_default();
                format!("{} {}{not_null}{default}{check}", quote(field.name()), column.native_type)
            })
            .collect();
        if !key.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")));
        }
        format!("CREATE TABLE {} (\n  {}\n)", quote(name), defs.join(",\n  "))
    }

    fn create_table(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> Result<()> {
        let ddl = self.table_ddl(name, columns, key);
        self.admin(|conn| conn.execute_batch(&ddl).map_err(|e| Error::engine(format!("creating table `{name}`"), e)))
    }

    fn truncate_table(&self, name: &str) -> Result<()> {
        self.admin(|conn| {
            conn.execute_batch(&format!("DELETE FROM {}", quote(name)))
                .map_err(|e| Error::engine(format!("truncating table `{name}`"), e))
        })
    }

    fn truncate_tables(&self, names: &[String]) -> Result<()> {
        // In one transaction, keys checked at its end (when every table is empty).
        self.admin(|conn| {
            let deletes: Vec<String> = names.iter().map(|n| format!("DELETE FROM {};", quote(n))).collect();
            conn.execute_batch(&format!("BEGIN; PRAGMA defer_foreign_keys = ON; {} COMMIT;", deletes.join(" ")))
                .map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    Error::engine("truncating tables", e)
                })
        })
    }

    fn drop_table(&self, name: &str) -> Result<()> {
        self.admin(|conn| {
            conn.execute_batch(&format!("DROP TABLE {}", quote(name)))
                .map_err(|e| Error::engine(format!("dropping table `{name}`"), e))
        })
    }

    fn add_index(&self, table: &str, index: &barge_core::SqlIndex) -> Result<()> {
        if let Some(method) = &index.method {
            return Err(Error::unsupported(self.display_name(), format!("build `{method}` indexes")));
        }
        self.admin(|conn| {
            conn.execute_batch(&index.create_sql(table, quote, false))
                .map_err(|e| Error::engine(format!("building index `{}` of `{table}`", index.name), e))
        })
    }

    fn add_check(&self, table: &str, check: &barge_core::CheckInfo) -> Result<()> {
        let context = || format!("adding CHECK constraint `{}` to `{table}`", check.name);
        self.admin(|conn| {
            // SQLite must know every function it calls (a prepared query proves it) and every row
            // must satisfy it (NULL passes, as in a CHECK).
            let violating: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {} WHERE NOT ({})", quote(table), check.expr), [], |r| {
                    r.get(0)
                })
                .map_err(|e| Error::engine(context(), e))?;
            if violating > 0 {
                return Err(Error::engine(context(), format!("{violating} row(s) do not satisfy it")));
            }
            append_constraints(conn, table, &[format!("CONSTRAINT {} CHECK ({})", quote(&check.name), check.expr)])
                .map(drop)
                .map_err(|e| Error::engine(context(), e))
        })
    }

    fn create_view(&self, view: &barge_core::ViewDef) -> Result<()> {
        self.admin(|conn| {
            conn.execute_batch(&view.create_sql(quote))
                .map_err(|e| Error::engine(format!("creating view `{}`", view.name), e))
        })
    }

    fn required_columns(&self, name: &str) -> Result<Vec<String>> {
        // A lone INTEGER PRIMARY KEY is the rowid, which fills itself.
        self.admin(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT name FROM pragma_table_info(?1) WHERE \"notnull\" AND dflt_value IS NULL
                       AND NOT (pk = 1 AND upper(type) = 'INTEGER'
                                AND (SELECT count(*) FROM pragma_table_info(?1) WHERE pk > 0) = 1)
                     ORDER BY cid",
                )
                .map_err(sqlite_err("describing a target table"))?;
            let names = stmt.query_map([name], |r| r.get::<_, String>(0)).map_err(sqlite_err("describing a table"))?;
            names.collect::<rusqlite::Result<Vec<_>>>().map_err(sqlite_err("describing a table"))
        })
    }

    fn table_columns(&self, name: &str) -> Result<Vec<String>> {
        self.admin(|conn| {
            let mut stmt = conn
                .prepare(&format!("PRAGMA table_info({})", quote(name)))
                .map_err(sqlite_err("describing a target table"))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(1)).map_err(sqlite_err("describing a table"))?;
            names.collect::<rusqlite::Result<Vec<_>>>().map_err(sqlite_err("describing a table"))
        })
    }

    fn max_writers(&self) -> usize {
        1
    }

    fn writer(&self, table: &str, columns: &[Field], options: &WriteOptions) -> Result<Box<dyn TableWriter>> {
        let conn = connect(&self.path, &self.display)?;
        // FULL: a commit is on disk before the runtime records its ranges in the ledger, so a
        // power loss cannot take back what the ledger holds (NORMAL may, in WAL mode). One fsync
        // per commit: the single writer commits a few times per table.
        // Foreign keys (inline in a table restored exactly) are not enforced while loading, so
        // tables load in any order; they are checked once every table is in.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF")
            .map_err(sqlite_err("configuring the writer"))?;
        let rows_per_insert = ROWS_PER_INSERT.min(MAX_PARAMETERS / columns.len().max(1)).max(1);
        let names: Vec<String> = columns.iter().map(|f| f.name().clone()).collect();
        let on_conflict = barge_sql::on_conflict_clause(options, &names, quote)?;
        Ok(Box::new(SqliteWriter {
            conn,
            table: table.to_string(),
            full_insert: insert_sql(table, &names, rows_per_insert, &on_conflict),
            columns: names,
            rows_per_insert,
            on_conflict,
            isolate: options.isolate_rows,
            in_transaction: false,
        }))
    }

    fn schema_objects(&self) -> Option<&dyn barge_core::SchemaObjects> {
        Some(self)
    }

    fn schema_restore(&self) -> Option<&dyn barge_core::SchemaRestore> {
        Some(self)
    }

    fn key_deletes(&self) -> Option<&dyn barge_core::KeyDeletes> {
        Some(self)
    }

    fn change_positions(&self) -> Option<&dyn barge_core::ChangePositions> {
        Some(self)
    }

    fn sql_scripts(&self) -> Option<&dyn barge_core::SqlScripts> {
        Some(self)
    }

    fn add_column(&self, table: &str, field: &arrow_schema::Field, column: &barge_core::TargetColumn) -> Result<()> {
        let sql = format!("ALTER TABLE {} ADD COLUMN {} {}", quote(table), quote(field.name()), column.native_type);
        self.admin(|conn| conn.execute_batch(&sql).map_err(sqlite_err("adding a column")))
    }
}

impl barge_core::SqlScripts for SqliteTarget {
    fn run_scripts(&self, scripts: &[&str]) -> Result<()> {
        self.admin(|conn| {
            conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err("starting a transaction"))?;
            for script in scripts {
                if let Err(e) = conn.execute_batch(script) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(Error::engine(barge_core::script_label(script), e));
                }
            }
            conn.execute_batch("COMMIT").map_err(sqlite_err("committing the scripts"))
        })
    }

    fn query_text(&self, query: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.admin(|conn| {
            let mut statement = conn.prepare(query).map_err(sqlite_err("preparing a query"))?;
            let width = statement.column_count();
            let mut rows = statement.query([]).map_err(sqlite_err("reading a query's rows"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sqlite_err("reading a query's rows"))? {
                let mut values = Vec::with_capacity(width);
                for i in 0..width {
                    values.push(match row.get_ref(i).map_err(sqlite_err("reading a value"))? {
                        ValueRef::Null => None,
                        ValueRef::Integer(n) => Some(n.to_string()),
                        ValueRef::Real(x) => Some(x.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    });
                }
                out.push(values);
            }
            Ok(out)
        })
    }
}

impl barge_core::KeyDeletes for SqliteTarget {
    fn delete_keys(&self, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
        self.admin(|conn| delete_keys_over(conn, table, columns, keys))
    }
}

/// Deletes `keys` from `table` over `conn`; returns the rows deleted.
fn delete_keys_over(conn: &Connection, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
    let lhs = format!("({})", columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "));
    let one = format!("({})", vec!["?"; columns.len()].join(", "));
    let mut deleted = 0;
    for chunk in keys.chunks(barge_sql::DELETE_CHUNK) {
        let sql =
            format!("DELETE FROM {} WHERE {lhs} IN ({})", quote(table), vec![one.as_str(); chunk.len()].join(", "));
        let values: Vec<rusqlite::types::Value> = chunk
            .iter()
            .flat_map(|key| barge_sql::key_values(key))
            .map(|v| match v {
                serde_json::Value::Null => rusqlite::types::Value::Null,
                serde_json::Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => rusqlite::types::Value::Integer(i),
                    None => rusqlite::types::Value::Real(n.as_f64().unwrap_or(f64::NAN)),
                },
                serde_json::Value::String(s) => rusqlite::types::Value::Text(s.clone()),
                other => rusqlite::types::Value::Text(other.to_string()),
            })
            .collect();
        deleted +=
            conn.execute(&sql, rusqlite::params_from_iter(values)).map_err(sqlite_err("deleting rows by key"))? as u64;
    }
    Ok(deleted)
}

const POSITIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS barge_sync (stream TEXT NOT NULL, tbl TEXT NOT NULL, \
     position INTEGER NOT NULL, updated TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (stream, tbl))";
const RECORD_SQL: &str = "INSERT INTO barge_sync (stream, tbl, position) VALUES (?1, ?2, ?3) \
     ON CONFLICT (stream, tbl) DO UPDATE SET position = excluded.position, updated = CURRENT_TIMESTAMP";

/// Whether the target has the `barge_sync` table (reading positions creates nothing).
fn positions_exist(conn: &Connection) -> Result<bool> {
    table_exists_in(conn, barge_core::POSITIONS_TABLE)
}

/// Whether the database of `conn` has table `table`.
fn table_exists_in(conn: &Connection, table: &str) -> Result<bool> {
    conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1", [table], |r| r.get(0))
        .map_err(sqlite_err("looking up a table"))
}

impl SqliteTarget {
    /// The rows `query` reads from `barge_sync`, each through `row`, for `context`; none where the
    /// table does not exist (reading creates nothing).
    fn positions_rows<T>(
        &self,
        query: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        context: &'static str,
    ) -> Result<Vec<T>> {
        self.admin(|conn| {
            if !positions_exist(conn)? {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare(query).map_err(sqlite_err(context))?;
            let rows = stmt.query_map(params, row).map_err(sqlite_err(context))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sqlite_err(context))
        })
    }
}

impl barge_core::ChangePositions for SqliteTarget {
    fn positions(&self, stream: &str) -> Result<Vec<(String, u64)>> {
        self.positions_rows(
            "SELECT tbl, position FROM barge_sync WHERE stream = ?1",
            [stream],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
            "reading change positions",
        )
    }

    fn record(&self, stream: &str, table: &str, position: u64) -> Result<()> {
        self.admin(|conn| {
            conn.execute_batch(POSITIONS_DDL).map_err(sqlite_err("creating barge_sync"))?;
            conn.execute(RECORD_SQL, rusqlite::params![stream, table, position as i64])
                .map_err(sqlite_err("recording a change position"))?;
            Ok(())
        })
    }

    fn forget(&self, stream: &str) -> Result<()> {
        self.admin(|conn| {
            conn.execute_batch(POSITIONS_DDL).map_err(sqlite_err("creating barge_sync"))?;
            conn.execute("DELETE FROM barge_sync WHERE stream = ?1", [stream])
                .map_err(sqlite_err("forgetting change positions"))?;
            Ok(())
        })
    }

    fn streams(&self) -> Result<Vec<String>> {
        self.positions_rows(
            "SELECT DISTINCT stream FROM barge_sync ORDER BY stream",
            [],
            |r| r.get::<_, String>(0),
            "listing change streams",
        )
    }
}

impl barge_core::SchemaObjects for SqliteTarget {
    fn finish_table(&self, table: &str, source: &barge_core::TableInfo) -> Result<()> {
        // Identity needs nothing here: an INTEGER PRIMARY KEY generates after the largest rowid.
        self.admin(|conn| {
            for index in &source.indexes {
                let ddl = format!(
                    "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
                    if index.unique { "UNIQUE " } else { "" },
                    quote(&format!("{table}_{}", index.name)),
                    quote(table),
                    index.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
                );
                conn.execute_batch(&ddl).map_err(|e| Error::engine(format!("creating index on `{table}`"), e))?;
            }
            Ok(())
        })
    }

    fn add_foreign_keys(&self, table: &str, foreign_keys: &[barge_core::ForeignKeyInfo]) -> Result<()> {
        if foreign_keys.is_empty() {
            return Ok(());
        }
        let context = format!("adding the foreign keys of `{table}`");
        let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let clauses: Vec<String> = foreign_keys
            .iter()
            .map(|fk| {
                let mut clause = format!(
                    "{}FOREIGN KEY ({}) REFERENCES {} ({})",
                    fk.name.as_ref().map(|n| format!("CONSTRAINT {} ", quote(n))).unwrap_or_default(),
                    list(&fk.columns),
                    quote(&fk.ref_table),
                    list(&fk.ref_columns)
                );
                for (event, action) in [("DELETE", &fk.on_delete), ("UPDATE", &fk.on_update)] {
                    if let Some(action) = action {
                        clause.push_str(&format!(" ON {event} {action}"));
                    }
                }
                clause
            })
            .collect();
        self.admin(|conn| {
            let before = append_constraints(conn, table, &clauses).map_err(|e| Error::engine(&context, e))?;
            // The rows must have their parents, as the other engines check when a key is added:
            // otherwise the statement goes back to what it was.
            let mut stmt = conn
                .prepare("SELECT parent, count(*) FROM pragma_foreign_key_check(?1) GROUP BY parent ORDER BY parent")
                .map_err(|e| Error::engine(&context, e))?;
            let orphans: Vec<(String, i64)> = stmt
                .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| Error::engine(&context, e))?;
            if orphans.is_empty() {
                return Ok(());
            }
            replace_statement(conn, table, &before).map_err(|e| Error::engine(&context, e))?;
            let said: Vec<String> = orphans
                .iter()
                .map(|(parent, n)| {
                    let names: Vec<&str> = foreign_keys
                        .iter()
                        .filter(|fk| &fk.ref_table == parent)
                        .filter_map(|fk| fk.name.as_deref())
                        .collect();
                    format!("{n} row(s) reference no row of `{parent}` ({})", names.join(", "))
                })
                .collect();
            Err(Error::engine(&context, said.join("; ")))
        })
    }
}

/// Adds `clauses` (table constraints) to loaded table `table`. SQLite adds no constraint to an
/// existing table: the table's statement in the schema gets them (as sqlite-utils adds foreign
/// keys), once a table of the new statement has been created in the temp schema, which proves it
/// valid; the schema's version moves on, so every connection reads the new statement. Returns the
/// statement it replaced.
fn append_constraints(conn: &Connection, table: &str, clauses: &[String]) -> std::result::Result<String, String> {
    let create: String = conn
        .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1", [table], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let columns_at = crate::checks::columns_start(&create).ok_or("the table's statement has no column list")?;
    let end = create.rfind(')').filter(|&e| e > columns_at).ok_or("the table's statement has no column list")?;
    let altered = format!("{}, {}{}", create[..end].trim_end(), clauses.join(", "), &create[end..]);
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE \"barge_constraint_probe\" {}; DROP TABLE temp.\"barge_constraint_probe\"",
        &altered[columns_at..]
    ))
    .map_err(|e| e.to_string())?;
    replace_statement(conn, table, &altered)?;
    Ok(create)
}

/// Sets `table`'s statement in the schema to `create` (see [`append_constraints`]).
fn replace_statement(conn: &Connection, table: &str, create: &str) -> std::result::Result<(), String> {
    let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    tx.execute_batch("PRAGMA writable_schema = ON").map_err(|e| e.to_string())?;
    let updated = tx.execute("UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = ?2", [create, table]);
    let finished = tx.execute_batch(&format!("PRAGMA schema_version = {}; PRAGMA writable_schema = OFF", version + 1));
    updated.map_err(|e| e.to_string())?;
    finished.map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

struct SqliteWriter {
    conn: Connection,
    table: String,
    columns: Vec<String>,
    rows_per_insert: usize,
    /// The statement for a full chunk of `rows_per_insert` rows, built once.
    full_insert: String,
    /// The upsert clause of the conflict mode (empty for [`barge_core::Conflict::Error`]).
    on_conflict: String,
    /// Each write inside a savepoint, so a refused batch leaves nothing behind.
    isolate: bool,
    in_transaction: bool,
}

fn insert_sql(table: &str, columns: &[String], rows: usize, on_conflict: &str) -> String {
    let list = columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    format!("INSERT INTO {} ({list}) VALUES {}{on_conflict}", quote(table), vec![row; rows].join(", "))
}

/// Errors caused by the rows themselves: constraint violations, oversized or mismatched values.
fn is_row_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, ConstraintViolation | TooBig | TypeMismatch))
}

impl TableWriter for SqliteWriter {
    fn write(&mut self, batch: Encoded) -> Result<u64> {
        let Encoded::Arrow(batch) = batch else {
            return Err(Error::Config("the SQLite writer takes Arrow batches".into()));
        };
        if batch.num_columns() != self.columns.len() {
            return Err(Error::Config(format!(
                "batch for `{}` has {} columns, the writer expects {}",
                self.table,
                batch.num_columns(),
                self.columns.len()
            )));
        }
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err("starting a transaction"))?;
            self.in_transaction = true;
        }
        if !self.isolate {
            return self.insert(&batch);
        }
        self.conn.execute_batch("SAVEPOINT barge_batch").map_err(sqlite_err("setting a savepoint"))?;
        let inserted = self.insert(&batch);
        let end = if inserted.is_ok() { "RELEASE barge_batch" } else { "ROLLBACK TO barge_batch; RELEASE barge_batch" };
        self.conn.execute_batch(end).map_err(sqlite_err("ending a savepoint"))?;
        inserted.map_err(|e| match e {
            Error::BadValue { column, reason, .. } => {
                Error::RowRejected { reason: format!("column `{column}`: {reason}") }
            }
            other => other,
        })
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            let table = &self.table;
            self.conn.execute_batch("COMMIT").map_err(|e| Error::engine(format!("committing `{table}`"), e))?;
            self.in_transaction = false;
        }
        Ok(())
    }

    fn range_clearer(&mut self) -> Option<&mut dyn barge_core::RangeClearer> {
        Some(self)
    }

    fn change_writer(&mut self) -> Option<&mut dyn barge_core::ChangeWriter> {
        Some(self)
    }
}

impl SqliteWriter {
    fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err("starting a transaction"))?;
            self.in_transaction = true;
        }
        Ok(())
    }
}

impl barge_core::ChangeWriter for SqliteWriter {
    fn truncate(&mut self) -> Result<()> {
        self.begin()?;
        self.conn
            .execute_batch(&format!("DELETE FROM {}", quote(&self.table)))
            .map_err(sqlite_err("applying a TRUNCATE"))
    }

    fn delete_keys(&mut self, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
        self.begin()?;
        delete_keys_over(&self.conn, &self.table, columns, keys)
    }

    fn delete_rows(&mut self, rows: Encoded) -> Result<u64> {
        let Encoded::Arrow(batch) = rows else {
            return Err(Error::Config("the SQLite writer takes Arrow batches".into()));
        };
        self.begin()?;
        // Staged in a temporary table of the table's columns (their affinities too, so a value
        // is stored there as in the table), then every row equal to one deleted (`IS`: NULL
        // equals NULL).
        let stage = format!("barge_gone_{}", self.table);
        let list = self.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        self.conn
            .execute_batch(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {list} FROM main.{} WHERE 0",
                quote(&stage),
                quote(&self.table)
            ))
            .map_err(sqlite_err("staging rows to delete"))?;
        let into = format!("temp.{}", quote(&stage));
        let full = insert_sql(&stage, &self.columns, self.rows_per_insert, "");
        self.insert_into(&batch, &stage, &full, "")?;
        let equal: Vec<String> = self.columns.iter().map(|c| format!("t.{0} IS g.{0}", quote(c))).collect();
        let deleted = self
            .conn
            .execute(
                &format!(
                    "DELETE FROM main.{} AS t WHERE EXISTS (SELECT 1 FROM {into} AS g WHERE {})",
                    quote(&self.table),
                    equal.join(" AND ")
                ),
                [],
            )
            .map_err(sqlite_err("deleting changed rows"))?;
        self.conn.execute_batch(&format!("DELETE FROM {into}")).map_err(sqlite_err("emptying the staging table"))?;
        Ok(deleted as u64)
    }

    fn record_position(&mut self, stream: &str, table: &str, position: u64) -> Result<()> {
        self.begin()?;
        self.conn
            .execute(RECORD_SQL, rusqlite::params![stream, table, position as i64])
            .map_err(sqlite_err("recording a change position"))?;
        Ok(())
    }
}

impl barge_core::RangeClearer for SqliteWriter {
    fn clear_range(&mut self, columns: &[String], range: &barge_core::KeyRange) -> Result<u64> {
        let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let (predicate, params) = crate::sql::range_predicate(&quoted, range);
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err("starting a transaction"))?;
            self.in_transaction = true;
        }
        let sql = format!("DELETE FROM {} WHERE {predicate}", quote(&self.table));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sqlite_err("clearing a range"))?;
        crate::sql::bind(&mut stmt, &params)?;
        stmt.raw_execute().map(|n| n as u64).map_err(sqlite_err("clearing a range"))
    }
}

impl SqliteWriter {
    fn insert(&mut self, batch: &RecordBatch) -> Result<u64> {
        let (into, full, on_conflict) = (self.table.clone(), self.full_insert.clone(), self.on_conflict.clone());
        self.insert_into(batch, &into, &full, &on_conflict)
    }

    /// Inserts `batch` into table `into`, full chunks with statement `full_insert`.
    fn insert_into(&mut self, batch: &RecordBatch, into: &str, full_insert: &str, on_conflict: &str) -> Result<u64> {
        let binders = binders(&self.table, batch)?;
        let (table, isolate) = (&self.table, self.isolate);
        let failed = |e: rusqlite::Error| {
            if isolate && is_row_error(&e) {
                Error::RowRejected { reason: e.to_string() }
            } else {
                Error::engine(format!("inserting into `{table}`"), e)
            }
        };
        let mut scratch = vec![String::new(); self.columns.len()];
        let tail_rows = batch.num_rows() % self.rows_per_insert;
        let tail_insert = (tail_rows > 0).then(|| insert_sql(into, &self.columns, tail_rows, on_conflict));
        let mut start = 0;
        while start < batch.num_rows() {
            let rows = self.rows_per_insert.min(batch.num_rows() - start);
            let sql = if rows == self.rows_per_insert { full_insert } else { tail_insert.as_deref().expect("tail") };
            let mut stmt = self.conn.prepare_cached(sql).map_err(failed)?;
            let mut param = 1;
            for row in start..start + rows {
                for (column, (binder, buf)) in binders.iter().zip(scratch.iter_mut()).enumerate() {
                    buf.clear();
                    let value = binder.value(row, buf).map_err(|reason| Error::BadValue {
                        table: self.table.clone(),
                        column: batch.schema_ref().field(column).name().clone(),
                        key: None,
                        reason,
                    })?;
                    stmt.raw_bind_parameter(param, ToSqlOutput::Borrowed(value)).map_err(failed)?;
                    param += 1;
                }
            }
            stmt.raw_execute().map_err(failed)?;
            start += rows;
        }
        Ok(batch.num_rows() as u64)
    }
}

/// How one Arrow column becomes SQLite values, decided once per batch.
enum Binder<'a> {
    Int(&'a dyn Array, Get<'a, i64>),
    UInt64(&'a arrow_array::UInt64Array),
    Float(&'a dyn Array, Get<'a, f64>),
    Bool(&'a BooleanArray),
    Text(&'a dyn Array, Get<'a, &'a str>),
    Bytes(&'a dyn Array, Get<'a, &'a [u8]>),
    /// Decimals are bound as text: exact, and converted by the column's affinity.
    Decimal(&'a dyn Array, Get<'a, i128>, i8),
    Date(&'a dyn Array, Get<'a, i32>),
    Timestamp(&'a dyn Array, Get<'a, Option<i64>>, bool),
    Time(&'a dyn Array, Get<'a, Option<i64>>),
    Interval(&'a dyn Array, Get<'a, (i32, i32, i64)>),
    /// Bound as JSON array text; elements through the element's binder.
    List {
        array: &'a dyn Array,
        offsets: &'a [i32],
        values: &'a dyn Array,
        item: Box<Binder<'a>>,
    },
}

macro_rules! get {
    ($array:expr, $t:ty, $conv:expr) => {{
        let a = $array.as_primitive::<$t>();
        Box::new(move |i| $conv(a.value(i)))
    }};
}

fn micros(value: i64, unit: &TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => value.checked_mul(1_000_000),
        TimeUnit::Millisecond => value.checked_mul(1_000),
        TimeUnit::Microsecond => Some(value),
        TimeUnit::Nanosecond => (value % 1_000 == 0).then_some(value / 1_000),
    }
}

fn binders<'a>(table: &str, batch: &'a RecordBatch) -> Result<Vec<Binder<'a>>> {
    batch
        .columns()
        .iter()
        .zip(batch.schema_ref().fields())
        .map(|(array, field)| {
            binder(array.as_ref()).ok_or_else(|| Error::UnsupportedType {
                table: table.into(),
                column: field.name().clone(),
                type_name: array.data_type().to_string(),
                reason: Some("the SQLite writer cannot bind it".into()),
            })
        })
        .collect()
}

fn binder<'a>(a: &'a dyn Array) -> Option<Binder<'a>> {
    Some(match a.data_type() {
        DataType::Int8 => Binder::Int(a, get!(a, Int8Type, i64::from)),
        DataType::Int16 => Binder::Int(a, get!(a, Int16Type, i64::from)),
        DataType::Int32 => Binder::Int(a, get!(a, Int32Type, i64::from)),
        DataType::Int64 => Binder::Int(a, get!(a, Int64Type, |v| v)),
        DataType::UInt8 => Binder::Int(a, get!(a, UInt8Type, i64::from)),
        DataType::UInt16 => Binder::Int(a, get!(a, UInt16Type, i64::from)),
        DataType::UInt32 => Binder::Int(a, get!(a, UInt32Type, i64::from)),
        DataType::UInt64 => Binder::UInt64(a.as_primitive::<UInt64Type>()),
        DataType::Float32 => Binder::Float(a, get!(a, Float32Type, f64::from)),
        DataType::Float64 => Binder::Float(a, get!(a, Float64Type, |v| v)),
        DataType::Boolean => Binder::Bool(a.as_boolean()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Binder::Text(a, arrays::strings(a)?),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            Binder::Bytes(a, arrays::bytes(a)?)
        }
        DataType::Decimal32(_, s) => Binder::Decimal(a, get!(a, Decimal32Type, i128::from), *s),
        DataType::Decimal64(_, s) => Binder::Decimal(a, get!(a, Decimal64Type, i128::from), *s),
        DataType::Decimal128(_, s) => Binder::Decimal(a, get!(a, Decimal128Type, |v| v), *s),
        DataType::Date32 => Binder::Date(a, get!(a, Date32Type, |v| v)),
        DataType::Date64 => {
            Binder::Date(a, get!(a, Date64Type, |v: i64| i32::try_from(v.div_euclid(86_400_000)).unwrap_or(i32::MAX)))
        }
        DataType::Timestamp(unit, tz) => {
            let unit = *unit;
            let get: Get<'a, Option<i64>> = match unit {
                TimeUnit::Second => get!(a, TimestampSecondType, move |v| micros(v, &unit)),
                TimeUnit::Millisecond => get!(a, TimestampMillisecondType, move |v| micros(v, &unit)),
                TimeUnit::Microsecond => get!(a, TimestampMicrosecondType, Some),
                TimeUnit::Nanosecond => get!(a, TimestampNanosecondType, move |v| micros(v, &unit)),
            };
            Binder::Timestamp(a, get, tz.is_some())
        }
        DataType::Time32(unit) => {
            let unit = *unit;
            let get: Get<'a, Option<i64>> = match unit {
                TimeUnit::Second => get!(a, Time32SecondType, move |v| micros(i64::from(v), &unit)),
                _ => get!(a, Time32MillisecondType, move |v| micros(i64::from(v), &unit)),
            };
            Binder::Time(a, get)
        }
        DataType::Time64(unit) => {
            let unit = *unit;
            let get: Get<'a, Option<i64>> = match unit {
                TimeUnit::Nanosecond => get!(a, Time64NanosecondType, move |v| micros(v, &unit)),
                _ => get!(a, Time64MicrosecondType, Some),
            };
            Binder::Time(a, get)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let p = a.as_primitive::<IntervalMonthDayNanoType>();
            Binder::Interval(
                a,
                Box::new(move |i| {
                    let v = p.value(i);
                    (v.months, v.days, v.nanoseconds)
                }),
            )
        }
        DataType::List(_) => {
            let list = a.as_list::<i32>();
            let values: &'a dyn Array = list.values().as_ref();
            Binder::List { array: a, offsets: list.value_offsets(), values, item: Box::new(binder(values)?) }
        }
        _ => return None,
    })
}

impl<'a> Binder<'a> {
    fn array(&self) -> &'a dyn Array {
        match self {
            Binder::UInt64(a) => *a,
            Binder::Bool(a) => *a,
            Binder::Int(a, _)
            | Binder::Float(a, _)
            | Binder::Text(a, _)
            | Binder::Bytes(a, _)
            | Binder::Decimal(a, ..)
            | Binder::Date(a, _)
            | Binder::Timestamp(a, ..)
            | Binder::Time(a, _)
            | Binder::Interval(a, _) => *a,
            Binder::List { array, .. } => *array,
        }
    }

    /// The value of `row`; text that must be formatted is written into `buf`, which outlives the bind.
    fn value<'b>(&'b self, row: usize, buf: &'b mut String) -> Result<ValueRef<'b>, String> {
        if self.array().is_null(row) {
            return Ok(ValueRef::Null);
        }
        Ok(match self {
            Binder::Int(_, get) => ValueRef::Integer(get(row)),
            // Above 2^63 the value goes as exact decimal text (UInt64 columns are DECIMAL_TEXT(20,0)).
            Binder::UInt64(a) => match i64::try_from(a.value(row)) {
                Ok(v) => ValueRef::Integer(v),
                Err(_) => {
                    buf.push_str(&a.value(row).to_string());
                    ValueRef::Text(buf.as_bytes())
                }
            },
            // SQLite stores a bound NaN as NULL; the text 'NaN' survives in a REAL column.
            Binder::Float(_, get) if get(row).is_nan() => ValueRef::Text(b"NaN"),
            Binder::Float(_, get) => ValueRef::Real(get(row)),
            Binder::Bool(a) => ValueRef::Integer(i64::from(a.value(row))),
            Binder::Text(_, get) => ValueRef::Text(get(row).as_bytes()),
            Binder::Bytes(_, get) => ValueRef::Blob(get(row)),
            Binder::Decimal(_, get, scale) => {
                codec::format_decimal(get(row), *scale, buf);
                ValueRef::Text(buf.as_bytes())
            }
            Binder::Date(_, get) => {
                codec::format_date(get(row), buf);
                ValueRef::Text(buf.as_bytes())
            }
            Binder::Timestamp(_, get, zoned) => {
                let micros = get(row).ok_or("timestamp has sub-microsecond precision or is out of range")?;
                codec::format_datetime(micros, *zoned, buf);
                ValueRef::Text(buf.as_bytes())
            }
            Binder::Time(_, get) => {
                let micros = get(row).ok_or("time has sub-microsecond precision")?;
                codec::format_time(micros, buf);
                ValueRef::Text(buf.as_bytes())
            }
            Binder::Interval(_, get) => {
                let (months, days, nanos) = get(row);
                if nanos % 1_000 != 0 {
                    return Err("interval has sub-microsecond precision".into());
                }
                codec::format_interval(months, days, nanos / 1_000, buf);
                ValueRef::Text(buf.as_bytes())
            }
            Binder::List { offsets, values, item, .. } => {
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let mut element = String::new();
                buf.push('[');
                for j in start..end {
                    if j > start {
                        buf.push(',');
                    }
                    if values.is_null(j) {
                        buf.push_str("null");
                        continue;
                    }
                    element.clear();
                    push_json(item.value(j, &mut element)?, buf);
                }
                buf.push(']');
                ValueRef::Text(buf.as_bytes())
            }
        })
    }
}

/// One array element as JSON ([`barge_core::json`]: NaN and infinities, which JSON lacks, and
/// blobs as strings).
fn push_json(value: ValueRef<'_>, out: &mut String) {
    use barge_core::json;
    match value {
        ValueRef::Null => out.push_str("null"),
        ValueRef::Integer(i) => out.push_str(&i.to_string()),
        ValueRef::Real(x) => json::push_float(x, out),
        ValueRef::Text(t) => json::push_string(&String::from_utf8_lossy(t), out),
        ValueRef::Blob(b) => json::push_hex(b, out),
    }
}

impl barge_core::SchemaRestore for SqliteTarget {
    fn check_restore(&self, dump: &dyn barge_core::DumpedSchema) -> Result<std::result::Result<(), String>> {
        dump.downcast::<crate::dump::SqliteDump>().map(|_| Ok(()))
    }

    fn restore(&self, dump: &dyn barge_core::DumpedSchema, step: barge_core::RestoreStep<'_>) -> Result<()> {
        let dump = dump.downcast::<crate::dump::SqliteDump>()?;
        self.admin(|conn| dump.restore(conn, step))
    }
}
