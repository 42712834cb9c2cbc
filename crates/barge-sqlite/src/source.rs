//! Reading SQLite tables as Arrow record batches, one key range at a time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_array::ListArray;
use arrow_array::builder::*;
use arrow_array::types::IntervalMonthDayNano;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, FieldRef};
use arrow_schema::{Field, Schema};
use barge_core::model::display_key;
use barge_core::types::record_default;
use barge_core::{
    Error, ForeignKeyInfo, IndexInfo, Key, KeyRange, KeySpec, KeyStats, LOGICAL_JSON, META_ENGINE, META_IDENTITY,
    META_LOGICAL, META_NATIVE_TYPE, Result, Scalar, TableInfo,
};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::sql::{self, quote};
use crate::types::{Kind, UTC, kind_of};
use crate::{ENGINE, sqlite_err};
use barge_core::text as codec;

/// The physical row locator ranged over for tables without a primary key.
const ROWID: &str = "rowid";

/// A SQLite database opened read-only. Each reader thread borrows its own connection from a
/// small pool; SQLite serves concurrent readers of one file well.
pub struct SqliteSource {
    path: PathBuf,
    display: String,
    pool: Mutex<Vec<Connection>>,
    /// The connection holding the copy's snapshot (see [`barge_core::SnapshotReads`]), in its
    /// transaction for as long as the source is open.
    pinned: Mutex<Option<Connection>>,
}

impl SqliteSource {
    pub(crate) fn open(path: PathBuf, display: String) -> Result<Arc<Self>> {
        if !path.is_file() {
            return Err(Error::SourceNotFound(display));
        }
        let source = SqliteSource { path, display, pool: Mutex::new(Vec::new()), pinned: Mutex::new(None) };
        let conn = source.connect()?;
        // Reading the schema is what tells a SQLite file from any other file.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| Error::Config(format!("{} is not a readable SQLite database: {e}", source.display)))?;
        source.pool.lock().expect("pool lock").push(conn);
        Ok(Arc::new(source))
    }

    fn connect(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| Error::Connect { target: self.display.clone(), reason: e.to_string() })?;
        conn.busy_timeout(crate::BUSY_TIMEOUT).map_err(sqlite_err("setting busy timeout"))?;
        Ok(conn)
    }

    /// Pins the snapshot: with a rollback journal, a read transaction (its SHARED lock lets no
    /// writer commit); in WAL mode, where readers do not stop writers, `BEGIN IMMEDIATE` on a
    /// read-write connection (no other writer can start; nothing is written).
    fn pin(&self, lock: bool) -> Result<barge_core::SnapshotInfo> {
        let not = |detail: String| Ok(barge_core::SnapshotInfo { consistent: false, detail });
        if !lock {
            return not("--no-lock: SQLite readers see the file as of their own start".into());
        }
        let mut pinned = self.pinned.lock().expect("snapshot lock");
        let mode: String = self.with_conn(|c| {
            c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(sqlite_err("reading the journal mode"))
        })?;
        let conn = if mode.eq_ignore_ascii_case("wal") {
            let flags =
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
            let Ok(conn) = Connection::open_with_flags(&self.path, flags) else {
                return not(format!("{} is in WAL mode and cannot be opened to hold off writers", self.display));
            };
            conn.busy_timeout(crate::BUSY_TIMEOUT).map_err(sqlite_err("setting busy timeout"))?;
            conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err("holding off writers for a snapshot"))?;
            conn
        } else {
            let conn = self.connect()?;
            conn.execute_batch("BEGIN").map_err(sqlite_err("starting a snapshot"))?;
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .map_err(sqlite_err("starting a snapshot"))?;
            conn
        };
        *pinned = Some(conn);
        Ok(barge_core::SnapshotInfo {
            consistent: true,
            detail: format!("{} with writers held off for the copy (journal mode {mode})", self.display),
        })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().expect("pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&conn);
        self.pool.lock().expect("pool lock").push(conn);
        result
    }
}

/// Indexes over plain columns (created indexes and UNIQUE constraints; the primary key and
/// expression indexes excluded) and foreign keys.
type Constraints = (Vec<IndexInfo>, Vec<barge_core::SqlIndex>, Vec<ForeignKeyInfo>);

fn describe_constraints(conn: &Connection, table: &str) -> Result<Constraints> {
    let failed = sqlite_err("describing indexes");
    let mut list = conn.prepare(&format!("PRAGMA index_list({})", quote(table))).map_err(failed)?;
    let listed: Vec<(String, bool, String, bool)> = list
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .map_err(sqlite_err("describing indexes"))?
        .collect::<rusqlite::Result<_>>()
        .map_err(sqlite_err("describing indexes"))?;
    let mut indexes = Vec::new();
    let mut sql_indexes = Vec::new();
    for (name, unique, origin, partial) in listed {
        if origin == "pk" {
            continue;
        }
        let mut info =
            conn.prepare(&format!("PRAGMA index_info({})", quote(&name))).map_err(sqlite_err("describing indexes"))?;
        let columns: Vec<Option<String>> = info
            .query_map([], |r| r.get(2))
            .map_err(sqlite_err("describing indexes"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(sqlite_err("describing indexes"))?;
        match columns.into_iter().collect::<Option<Vec<_>>>() {
            Some(columns) if !partial => indexes.push(IndexInfo { name, columns, unique }),
            // Over expressions or partial: its keys and condition from its statement.
            _ => {
                let create: String = conn
                    .query_row("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?1", [&name], |r| {
                        r.get(0)
                    })
                    .map_err(sqlite_err("describing indexes"))?;
                let (keys, predicate) = crate::checks::index_parts(&create).ok_or_else(|| {
                    Error::engine("describing indexes", format!("index `{name}`: cannot read its keys from `{create}`"))
                })?;
                sql_indexes.push(barge_core::SqlIndex { name, unique, keys, predicate, method: None });
            }
        }
    }
    let mut fks = conn
        .prepare(&format!("PRAGMA foreign_key_list({})", quote(table)))
        .map_err(sqlite_err("describing foreign keys"))?;
    type FkRow = (i64, String, String, Option<String>, String, String);
    let rows: Vec<FkRow> = fks
        .query_map([], |r| Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .map_err(sqlite_err("describing foreign keys"))?
        .collect::<rusqlite::Result<_>>()
        .map_err(sqlite_err("describing foreign keys"))?;
    let mut foreign_keys: Vec<(i64, ForeignKeyInfo)> = Vec::new();
    for (id, ref_table, from, to, on_update, on_delete) in rows {
        // A missing `to` means the referenced table's primary key; barge needs it named.
        let Some(to) = to else {
            tracing::warn!("table `{table}`: a foreign key to `{ref_table}` names no columns and is not recreated");
            continue;
        };
        match foreign_keys.iter_mut().find(|(i, _)| *i == id) {
            Some((_, fk)) => {
                fk.columns.push(from);
                fk.ref_columns.push(to);
            }
            None => foreign_keys.push((
                id,
                ForeignKeyInfo {
                    name: None,
                    columns: vec![from],
                    ref_table,
                    ref_columns: vec![to],
                    on_delete: ForeignKeyInfo::action(&on_delete),
                    on_update: ForeignKeyInfo::action(&on_update),
                },
            )),
        }
    }
    Ok((indexes, sql_indexes, foreign_keys.into_iter().map(|(_, fk)| fk).collect()))
}

fn scalar_of(value: ValueRef<'_>) -> Scalar {
    match value {
        ValueRef::Null => Scalar::Null,
        ValueRef::Integer(i) => Scalar::Int(i),
        ValueRef::Real(x) => Scalar::Float(x),
        ValueRef::Text(t) => Scalar::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Scalar::Bytes(b.to_vec()),
    }
}

fn key_of(row: &rusqlite::Row<'_>, columns: std::ops::Range<usize>) -> Result<Key> {
    columns.map(|i| row.get_ref(i).map(scalar_of).map_err(sqlite_err("reading a key"))).collect()
}

/// `predicate` restricted to the table's window (`column >= ?`), its value appended to `params`.
fn windowed(table: &TableInfo, predicate: String, params: &mut Vec<Scalar>) -> String {
    match &table.window {
        Some((column, from)) => {
            params.push(from.clone());
            format!("{predicate} AND {} >= ?", quote(column))
        }
        None => predicate,
    }
}

fn range_columns_sql(table: &TableInfo) -> Vec<String> {
    match &table.key {
        KeySpec::Locator(_) => vec![ROWID.to_string()],
        _ => table.range_columns().iter().map(|c| quote(c)).collect(),
    }
}

impl barge_core::SnapshotReads for SqliteSource {
    fn pin_snapshot(&self, _readers: usize, lock: bool) -> Result<barge_core::SnapshotInfo> {
        self.pin(lock)
    }
}

impl barge_core::Source for SqliteSource {
    fn schema_dump(&self) -> Option<&dyn barge_core::SchemaDump> {
        Some(self)
    }

    fn other_objects(&self) -> Result<Vec<barge_core::SchemaObject>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT type, CASE type WHEN 'trigger' THEN name || ' on ' || tbl_name ELSE name END FROM sqlite_schema
                     WHERE type IN ('view', 'trigger') ORDER BY 1, 2",
                )
                .map_err(sqlite_err("listing views and triggers"))?;
            let rows = stmt
                .query_map([], |r| Ok(barge_core::SchemaObject { kind: r.get(0)?, name: r.get(1)? }))
                .map_err(sqlite_err("listing views and triggers"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sqlite_err("listing views and triggers"))
        })
    }

    fn views(&self) -> Result<Vec<barge_core::ViewDef>> {
        // The SELECT after `CREATE VIEW name [(columns)] AS`, as written.
        let statement =
            regex::Regex::new(r#"(?is)^\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[^\s(]+)\s*(?:\(([^)]*)\))?\s*AS\s+(.*)$"#)
                .expect("a valid pattern");
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'view' ORDER BY rowid")
                .map_err(sqlite_err("reading view definitions"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(sqlite_err("reading view definitions"))?;
            let mut views = Vec::new();
            for row in rows {
                let (name, sql) = row.map_err(sqlite_err("reading view definitions"))?;
                let Some(captures) = statement.captures(&sql) else { continue };
                let Some(select) = captures.get(2) else { continue };
                // `CREATE VIEW v (a, b) AS …`: the view's own column names.
                let columns = captures.get(1).map_or(Vec::new(), |list| {
                    list.as_str()
                        .split(',')
                        .map(|c| {
                            let c = c.trim();
                            match c.as_bytes().first() {
                                Some(b'"' | b'`' | b'[') => barge_core::checks::unquoted(c),
                                _ => c.to_string(),
                            }
                        })
                        .collect()
                });
                views.push(barge_core::ViewDef {
                    name,
                    columns,
                    select: select.as_str().trim().trim_end_matches(';').to_string(),
                });
            }
            Ok(views)
        })
    }

    fn snapshots(&self) -> Option<&dyn barge_core::SnapshotReads> {
        Some(self)
    }

    fn identity(&self) -> Result<Option<String>> {
        Ok(self.path.canonicalize().ok().map(|p| format!("SQLite file {}", p.display())))
    }

    fn row_cap(&self) -> Result<Option<u64>> {
        self.with_conn(|conn| Ok(Some(crate::length_limit(conn))))
    }

    fn display_name(&self) -> String {
        self.display.clone()
    }

    fn list_tables(&self) -> Result<Vec<String>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
                .map_err(sqlite_err("listing tables"))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sqlite_err("listing tables"))?;
            names.collect::<rusqlite::Result<Vec<_>>>().map_err(sqlite_err("listing tables"))
        })
    }

    fn table_bytes(&self, name: &str) -> Result<Option<u64>> {
        // The table's pages and its indexes' (the dbstat table is compiled into the bundled SQLite).
        self.with_conn(|conn| {
            conn.query_row(
                "SELECT sum(pgsize) FROM dbstat WHERE name = ?1
                    OR name IN (SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1)",
                [name],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|b| b.map(|b| b as u64))
            .or(Ok(None))
        })
    }

    fn table(&self, name: &str) -> Result<TableInfo> {
        self.with_conn(|conn| {
            let exists: bool = conn
                .query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1", [name], |r| {
                    r.get(0)
                })
                .map_err(sqlite_err("looking up a table"))?;
            if !exists {
                let kind: Option<String> = conn
                    .query_row("SELECT type FROM sqlite_schema WHERE name = ?1 AND type <> 'table'", [name], |r| {
                        r.get(0)
                    })
                    .ok();
                return Err(match kind {
                    Some(kind) => Error::NotATable { table: name.into(), kind, database: self.display.clone() },
                    None => Error::UnknownTable { table: name.into(), database: self.display.clone() },
                });
            }
            let mut stmt = conn
                .prepare(&format!("PRAGMA table_info({})", quote(name)))
                .map_err(sqlite_err("describing a table"))?;
            let columns = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .map_err(sqlite_err("describing a table"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite_err("describing a table"))?;
            let mut fields = Vec::with_capacity(columns.len());
            let mut key: Vec<(i64, usize)> = Vec::new();
            for (i, (column, declared, not_null, pk_position, default)) in columns.into_iter().enumerate() {
                let kind = kind_of(&declared, name, &column)?;
                let mut metadata =
                    HashMap::from([(META_NATIVE_TYPE.to_string(), declared), (META_ENGINE.to_string(), ENGINE.into())]);
                if metadata[META_NATIVE_TYPE].trim().eq_ignore_ascii_case("json") {
                    metadata.insert(META_LOGICAL.to_string(), LOGICAL_JSON.to_string());
                }
                if let Some(subtype) = barge_core::types::geometry_type(&metadata[META_NATIVE_TYPE]) {
                    metadata.insert(META_LOGICAL.to_string(), barge_core::LOGICAL_GEOMETRY.to_string());
                    metadata.insert(barge_core::META_GEOMETRY_TYPE.to_string(), subtype.to_string());
                }
                record_default(default.as_deref(), &mut metadata);
                // SQLite lets primary-key columns hold NULL unless declared NOT NULL; Arrow nullability
                // follows the declaration, not the key.
                fields.push(Field::new(column, kind.arrow(), !not_null).with_metadata(metadata));
                if pk_position > 0 {
                    key.push((pk_position, i));
                }
            }
            let key = KeySpec::from_key_positions(key, KeySpec::Locator(ROWID.into()));
            let (indexes, sql_indexes, foreign_keys) = describe_constraints(conn, name)?;
            // A lone INTEGER PRIMARY KEY is the rowid, which SQLite fills itself (AUTOINCREMENT
            // only keeps it from reusing numbers): a generated identity, as AUTO_INCREMENT and
            // PostgreSQL's identity columns are. A WITHOUT ROWID table has no rowid.
            let without_rowid: bool = conn
                .query_row(
                    "SELECT count(*) > 0 FROM sqlite_schema WHERE name = ?1 AND upper(sql) LIKE '%WITHOUT%ROWID%'",
                    [name],
                    |r| r.get(0),
                )
                .map_err(sqlite_err("describing a table"))?;
            if let KeySpec::Primary(cols) = &key
                && let [pk] = cols.as_slice()
                && !without_rowid
                && fields[*pk]
                    .metadata()
                    .get(META_NATIVE_TYPE)
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("integer"))
            {
                let field = fields[*pk].clone();
                let mut metadata = field.metadata().clone();
                metadata.insert(META_IDENTITY.to_string(), "true".to_string());
                fields[*pk] = field.with_metadata(metadata);
            }
            // CHECK constraints, from the table's statement: the one barge writes for an
            // enumeration (`"col" IN ('a', 'b')` on a text column) is the column's labels again.
            let create: String = conn
                .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1", [name], |r| r.get(0))
                .map_err(sqlite_err("describing a table"))?;
            let mut checks = Vec::new();
            for (n, check) in crate::checks::table_checks(&create).into_iter().enumerate() {
                if let Some(column) = &check.column
                    && let Some(i) = fields.iter().position(|f| f.name() == column)
                    && fields[i].data_type() == &arrow_schema::DataType::Utf8
                    && let Some(labels) = barge_core::checks::in_list(&check.condition, column)
                {
                    let mut metadata: HashMap<String, String> =
                        fields[i].metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    barge_core::types::record_labels(&labels, barge_core::META_ENUM, &mut metadata);
                    fields[i] = fields[i].clone().with_metadata(metadata);
                    continue;
                }
                let check_name = match (check.name, &check.column) {
                    (Some(given), _) => given,
                    (None, Some(column)) => format!("{name}_{column}_check"),
                    (None, None) => format!("{name}_check{}", n + 1),
                };
                checks.push(barge_core::CheckInfo { name: check_name, expr: check.condition });
            }
            let estimated_rows: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {}", quote(name)), [], |r| r.get(0))
                .map_err(sqlite_err("counting rows"))?;
            Ok(TableInfo {
                name: name.into(),
                schema: Arc::new(Schema::new(fields)),
                key,
                estimated_rows: u64::try_from(estimated_rows).unwrap_or(0),
                indexes,
                foreign_keys,
                checks,
                sql_indexes,
                comment: None,
                filter: None,
                window: None,
            })
        })
    }

    fn check_filter(&self, table: &TableInfo) -> Result<()> {
        let query = format!("SELECT 1 FROM {} WHERE {} LIMIT 0", quote(&table.name), table.filtered("1".into()));
        self.with_conn(|conn| conn.prepare(&query).map(drop).map_err(sqlite_err("checking the row filter")))
    }

    fn widest_row(&self, table: &TableInfo, columns: &[usize]) -> Result<Option<u64>> {
        let sum: Vec<String> = columns
            .iter()
            .map(|&i| format!("coalesce(length(CAST({} AS BLOB)), 0)", quote(table.schema.field(i).name())))
            .collect();
        let query =
            format!("SELECT max({}) FROM {} WHERE {}", sum.join(" + "), quote(&table.name), table.filtered("1".into()));
        self.with_conn(|conn| {
            let widest: Option<i64> =
                conn.query_row(&query, [], |row| row.get(0)).map_err(sqlite_err("measuring the widest row"))?;
            Ok(widest.map(|n| n.max(0) as u64))
        })
    }

    fn column_max(&self, table: &TableInfo, column: &str) -> Result<Option<Scalar>> {
        let query =
            format!("SELECT max({}) FROM {} WHERE {}", quote(column), quote(&table.name), table.filtered("1".into()));
        self.with_conn(|conn| {
            let max = conn
                .query_row(&query, [], |row| row.get_ref(0).map(scalar_of))
                .map_err(sqlite_err("reading a watermark"))?;
            Ok((max != Scalar::Null).then_some(max))
        })
    }

    fn key_stats(&self, table: &TableInfo, range: &KeyRange) -> Result<KeyStats> {
        let columns = range_columns_sql(table);
        let (predicate, mut params) = sql::range_predicate(&columns, range);
        let predicate = windowed(table, table.filtered(predicate), &mut params);
        let single = columns.len() == 1;
        let select = if single { format!("count(*), min({0}), max({0})", columns[0]) } else { "count(*)".into() };
        let query = format!("SELECT {select} FROM {} WHERE {predicate}", quote(&table.name));
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&query).map_err(sqlite_err("reading key statistics"))?;
            sql::bind(&mut stmt, &params)?;
            let mut rows = stmt.raw_query();
            let row = rows.next().map_err(sqlite_err("reading key statistics"))?.expect("an aggregate returns a row");
            let count: i64 = row.get(0).map_err(sqlite_err("reading key statistics"))?;
            let (min, max) =
                if single && count > 0 { (Some(key_of(row, 1..2)?), Some(key_of(row, 2..3)?)) } else { (None, None) };
            Ok(KeyStats { rows: u64::try_from(count).unwrap_or(0), min, max })
        })
    }

    fn sample_keys(&self, table: &TableInfo, range: &KeyRange, target: usize) -> Result<Vec<Key>> {
        let rows = self.key_stats(table, range)?.rows;
        let step = usize::try_from(rows / target.max(1) as u64).unwrap_or(usize::MAX).max(1);
        let columns = range_columns_sql(table);
        let (predicate, mut params) = sql::range_predicate(&columns, range);
        let predicate = windowed(table, table.filtered(predicate), &mut params);
        let list = columns.join(", ");
        // An ordered scan of the key index, keeping every step-th key: exact quantiles, in the
        // database's own collation, at the cost of reading the key column once.
        let query = format!("SELECT {list} FROM {} WHERE {predicate} ORDER BY {list}", quote(&table.name));
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&query).map_err(sqlite_err("sampling keys"))?;
            sql::bind(&mut stmt, &params)?;
            let mut rows = stmt.raw_query();
            let mut sample = Vec::with_capacity(target + 1);
            let mut i = 0usize;
            while let Some(row) = rows.next().map_err(sqlite_err("sampling keys"))? {
                if i % step == step / 2 {
                    sample.push(key_of(row, 0..columns.len())?);
                }
                i += 1;
            }
            Ok(sample)
        })
    }

    fn read_range(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: barge_core::BatchSize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let kinds: Vec<Kind> = table
            .schema
            .fields()
            .iter()
            .map(|f| kind_of(f.metadata().get(META_NATIVE_TYPE).map_or("", String::as_str), &table.name, f.name()))
            .collect::<Result<_>>()?;
        let list = table.schema.fields().iter().map(|f| quote(f.name())).collect::<Vec<_>>().join(", ");
        let (predicate, mut params) = sql::range_predicate(&range_columns_sql(table), range);
        let predicate = windowed(table, table.filtered(predicate), &mut params);
        let query = format!("SELECT {list} FROM {} WHERE {predicate}", quote(&table.name));
        let key_columns: Vec<usize> = match &table.key {
            KeySpec::Primary(cols) => cols.clone(),
            _ => Vec::new(),
        };
        let batch_rows = batch.rows.max(1);
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&query).map_err(sqlite_err("reading rows"))?;
            sql::bind(&mut stmt, &params)?;
            let mut rows = stmt.raw_query();
            let mut decoders: Vec<Decoder> = kinds.iter().map(|k| Decoder::new(k, batch_rows)).collect();
            let (mut pending, mut bytes) = (0, 0);
            while let Some(row) = rows.next().map_err(sqlite_err("reading rows"))? {
                for (i, decoder) in decoders.iter_mut().enumerate() {
                    let value = row.get_ref(i).map_err(sqlite_err("reading rows"))?;
                    bytes += match value {
                        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.len(),
                        _ => 8,
                    };
                    if let Err(reason) = decoder.append(value) {
                        let key = key_columns
                            .iter()
                            .map(|&k| row.get_ref(k).map(scalar_of))
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .ok()
                            .filter(|k| !k.is_empty())
                            .map(|k| display_key(&k));
                        return Err(Error::BadValue {
                            table: table.name.clone(),
                            column: table.schema.field(i).name().clone(),
                            key,
                            reason,
                        });
                    }
                }
                pending += 1;
                if batch.is_full(pending, bytes) {
                    emit(finish(&table.schema, &mut decoders)?)?;
                    (pending, bytes) = (0, 0);
                }
            }
            if pending > 0 {
                emit(finish(&table.schema, &mut decoders)?)?;
            }
            Ok(())
        })
    }
}

fn finish(schema: &arrow_schema::SchemaRef, decoders: &mut [Decoder]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = decoders.iter_mut().map(Decoder::finish).collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Appends SQLite values of one column to an Arrow builder, checking each value's storage class
/// against the column's declared type.
enum Decoder {
    Integer(Int64Builder),
    Real(Float64Builder),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Boolean(BooleanBuilder),
    Decimal(Decimal128Builder, u8, i8),
    NumericText(StringBuilder),
    Date(Date32Builder),
    DateTime(TimestampMicrosecondBuilder, bool),
    Time(Time64MicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    /// JSON array text; each element goes through the element's own decoder.
    List {
        field: FieldRef,
        element: Kind,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        items: Box<Decoder>,
    },
}

fn class_name(value: &ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("text is not valid UTF-8 ({e})"))
}

impl Decoder {
    fn new(kind: &Kind, capacity: usize) -> Self {
        match kind {
            Kind::Integer => Decoder::Integer(Int64Builder::with_capacity(capacity)),
            Kind::Real => Decoder::Real(Float64Builder::with_capacity(capacity)),
            Kind::Text => Decoder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Blob => Decoder::Blob(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Boolean => Decoder::Boolean(BooleanBuilder::with_capacity(capacity)),
            Kind::Decimal { precision, scale } => {
                Decoder::Decimal(Decimal128Builder::with_capacity(capacity), *precision, *scale)
            }
            Kind::NumericText => Decoder::NumericText(StringBuilder::with_capacity(capacity, capacity * 8)),
            Kind::Date => Decoder::Date(Date32Builder::with_capacity(capacity)),
            Kind::DateTime => Decoder::DateTime(TimestampMicrosecondBuilder::with_capacity(capacity), false),
            Kind::DateTimeTz => Decoder::DateTime(TimestampMicrosecondBuilder::with_capacity(capacity), true),
            Kind::Time => Decoder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Kind::Interval => Decoder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
            Kind::List(element) => {
                let DataType::List(field) = kind.arrow() else { unreachable!("lists are lists") };
                Decoder::List {
                    field,
                    element: element.as_ref().clone(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(capacity),
                    items: Box::new(Decoder::new(element, capacity)),
                }
            }
        }
    }

    fn append(&mut self, value: ValueRef<'_>) -> Result<(), String> {
        let mismatch = |expected: &str| format!("expected {expected}, found {}", class_name(&value));
        if matches!(value, ValueRef::Null) {
            self.append_null();
            return Ok(());
        }
        match (self, value) {
            (Decoder::Integer(b), ValueRef::Integer(i)) => b.append_value(i),
            (Decoder::Integer(_), _) => return Err(mismatch("an integer")),
            (Decoder::Real(b), ValueRef::Real(x)) => b.append_value(x),
            (Decoder::Real(b), ValueRef::Integer(i)) => b.append_value(i as f64),
            // How barge stores NaN, which SQLite would turn into NULL as a REAL.
            (Decoder::Real(b), ValueRef::Text(b"NaN")) => b.append_value(f64::NAN),
            (Decoder::Real(_), _) => return Err(mismatch("a real")),
            (Decoder::Text(b), ValueRef::Text(t)) => b.append_value(utf8(t)?),
            (Decoder::Text(_), _) => return Err(mismatch("text")),
            (Decoder::Blob(b), ValueRef::Blob(bytes)) => b.append_value(bytes),
            // Reading text as bytes would store it back as a BLOB: a silent change of storage class.
            (Decoder::Blob(_), _) => {
                return Err(mismatch("a blob (BLOB columns and columns without a declared type hold blobs only)"));
            }
            (Decoder::Boolean(b), ValueRef::Integer(i @ (0 | 1))) => b.append_value(i == 1),
            (Decoder::Boolean(_), ValueRef::Integer(i)) => return Err(format!("expected 0 or 1, found {i}")),
            (Decoder::Boolean(_), _) => return Err(mismatch("0 or 1")),
            (Decoder::Decimal(b, p, s), value) => b.append_value(match value {
                ValueRef::Integer(i) => codec::decimal_from_integer(i, *p, *s)?,
                ValueRef::Real(x) => codec::decimal_from_real(x, *p, *s)?,
                ValueRef::Text(t) => codec::parse_decimal(utf8(t)?, *p, *s)?,
                _ => return Err(mismatch("a decimal number")),
            }),
            (Decoder::NumericText(b), ValueRef::Integer(i)) => b.append_value(i.to_string()),
            (Decoder::NumericText(b), ValueRef::Real(x)) => b.append_value(x.to_string()),
            (Decoder::NumericText(b), ValueRef::Text(t)) => b.append_value(utf8(t)?),
            (Decoder::NumericText(_), _) => return Err(mismatch("a number or text")),
            (Decoder::Date(b), ValueRef::Text(t)) => {
                let t = utf8(t)?;
                b.append_value(codec::parse_date(t).ok_or_else(|| format!("`{t}` is not a YYYY-MM-DD date"))?);
            }
            (Decoder::Date(_), _) => return Err(mismatch("a YYYY-MM-DD text date")),
            (Decoder::DateTime(b, _), ValueRef::Text(t)) => {
                let t = utf8(t)?;
                b.append_value(codec::parse_datetime(t).ok_or_else(|| format!("`{t}` is not a timestamp"))?);
            }
            (Decoder::DateTime(b, _), ValueRef::Integer(unix_seconds)) => b.append_value(
                unix_seconds.checked_mul(1_000_000).ok_or_else(|| format!("{unix_seconds} is out of range"))?,
            ),
            (Decoder::DateTime(..), _) => return Err(mismatch("a text timestamp or Unix seconds")),
            (Decoder::Time(b), ValueRef::Text(t)) => {
                let t = utf8(t)?;
                b.append_value(codec::parse_time(t).ok_or_else(|| format!("`{t}` is not a HH:MM:SS time"))?);
            }
            (Decoder::Time(_), _) => return Err(mismatch("a HH:MM:SS text time")),
            (Decoder::Interval(b), ValueRef::Text(t)) => {
                let t = utf8(t)?;
                let (months, days, micros) = codec::parse_interval(t)
                    .ok_or_else(|| format!("`{t}` is not an `M months D days S seconds` interval"))?;
                b.append_value(IntervalMonthDayNano::new(months, days, micros * 1_000));
            }
            (Decoder::Interval(_), _) => return Err(mismatch("an interval as text")),
            (Decoder::List { element, offsets, nulls, items, .. }, ValueRef::Text(t)) => {
                let values: Vec<serde_json::Value> =
                    serde_json::from_slice(t).map_err(|e| format!("not a JSON array ({e})"))?;
                for value in &values {
                    let owned = json_element(value, element)?;
                    items.append(ValueRef::from(&owned)).map_err(|e| format!("array element: {e}"))?;
                }
                let last = *offsets.last().expect("starts with 0");
                offsets.push(last + i32::try_from(values.len()).map_err(|_| "array too long")?);
                nulls.append_non_null();
            }
            (Decoder::List { .. }, _) => return Err(mismatch("a JSON array as text")),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Decoder::Integer(b) => b.append_null(),
            Decoder::Real(b) => b.append_null(),
            Decoder::Text(b) | Decoder::NumericText(b) => b.append_null(),
            Decoder::Blob(b) => b.append_null(),
            Decoder::Boolean(b) => b.append_null(),
            Decoder::Decimal(b, ..) => b.append_null(),
            Decoder::Date(b) => b.append_null(),
            Decoder::DateTime(b, _) => b.append_null(),
            Decoder::Time(b) => b.append_null(),
            Decoder::Interval(b) => b.append_null(),
            Decoder::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("starts with 0"));
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Decoder::Integer(b) => Arc::new(b.finish()),
            Decoder::Real(b) => Arc::new(b.finish()),
            Decoder::Text(b) | Decoder::NumericText(b) => Arc::new(b.finish()),
            Decoder::Blob(b) => Arc::new(b.finish()),
            Decoder::Boolean(b) => Arc::new(b.finish()),
            Decoder::Decimal(b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(*p, *s).expect("validated by kind_of"))
            }
            Decoder::Date(b) => Arc::new(b.finish()),
            Decoder::DateTime(b, false) => Arc::new(b.finish()),
            Decoder::DateTime(b, true) => Arc::new(b.finish().with_timezone(UTC)),
            Decoder::Time(b) => Arc::new(b.finish()),
            Decoder::Interval(b) => Arc::new(b.finish()),
            Decoder::List { field, offsets, nulls, items, .. } => {
                let values = items.finish();
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(field.clone(), offsets, values, nulls.finish()))
            }
        }
    }
}

/// A JSON array element as the SQLite value its element decoder expects (see `types`: NaN and
/// infinities, and blobs as hex, travel as strings).
fn json_element(value: &serde_json::Value, element: &Kind) -> Result<Value, String> {
    use serde_json::Value as J;
    Ok(match (value, element) {
        (J::Null, _) => Value::Null,
        (J::Bool(b), _) => Value::Integer(i64::from(*b)),
        (J::Number(n), _) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or("number out of range")?),
        },
        (J::String(s), Kind::Real) => Value::Real(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => return Err(format!("`{other}` is not a number")),
        }),
        (J::String(s), Kind::Blob) => Value::Blob(hex_bytes(s).ok_or_else(|| format!("`{s}` is not hex"))?),
        (J::String(s), _) => Value::Text(s.clone()),
        (other, _) => return Err(format!("unexpected array element {other}")),
    })
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl barge_core::SchemaDump for SqliteSource {
    fn dump_schema(&self) -> Result<std::result::Result<Arc<dyn barge_core::DumpedSchema>, String>> {
        let dump = self.with_conn(|conn| crate::dump::dump(conn, self.path.clone()))?;
        Ok(dump.map(|dump| Arc::new(dump) as Arc<dyn barge_core::DumpedSchema>))
    }
}
