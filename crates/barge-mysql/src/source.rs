//! Reading MySQL tables: one streaming `SELECT … WHERE <range>` per key range (text protocol; rows
//! are never all buffered), decoded into Arrow builders on the reader's thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use barge_core::types::record_default;
use barge_core::{
    Error, ForeignKeyInfo, IndexInfo, Key, KeyRange, KeySpec, KeyStats, LOGICAL_JSON, META_ENGINE, META_ENUM,
    META_IDENTITY, META_LOGICAL, META_NATIVE_TYPE, META_SET, Result, Scalar, TableInfo,
};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;

use crate::ENGINE;
use crate::codec::Decoder;
use crate::conn::{LocalConn, MyUrl, connect, literal, my_err, quote};
use crate::types::{ColumnKind, Kind};

/// Rows gathered per `block_on` before decoding them outside it.
const ROWS_PER_CHUNK: usize = 4096;
/// …or fewer once they hold this many bytes, so that wide rows do not pile up before decoding.
const CHUNK_BYTES: usize = 1 << 20;
/// Field metadata: the DATA_TYPE that, with the native COLUMN_TYPE, resolves the column's kind.
const META_DATA_TYPE: &str = "barge.mysql.data_type";
/// Field metadata present when a `tinyint(1)` column is read as an integer (`?tinyint1=integer`).
const META_TINYINT1_INTEGER: &str = "barge.mysql.tinyint1_integer";

pub struct MySource {
    pub(crate) url: MyUrl,
    /// (table, column) → zero dates read as NULL, for `notices`.
    zero_dates: Mutex<HashMap<(String, String), u64>>,
    /// Connections of range reads that read to the end, for the next range read.
    readers: Mutex<Vec<LocalConn>>,
    /// Pinned to one snapshot: `readers` then holds only the sessions started in it (this many
    /// still alive), and a read waits for one of them to be free.
    alive: std::sync::atomic::AtomicUsize,
    snapshot: Mutex<bool>,
    free: std::sync::Condvar,
}

impl MySource {
    pub fn open(url: MyUrl) -> Result<Arc<Self>> {
        // Fails early and clearly if the server is unreachable; kept for the first range read.
        let first = connect(&url)?;
        Ok(Arc::new(MySource {
            url,
            zero_dates: Mutex::new(HashMap::new()),
            readers: Mutex::new(vec![first]),
            alive: std::sync::atomic::AtomicUsize::new(0),
            snapshot: Mutex::new(false),
            free: std::sync::Condvar::new(),
        }))
    }

    fn is_pinned(&self) -> bool {
        *self.snapshot.lock().expect("snapshot lock")
    }

    /// A session of the pinned snapshot, waiting for one to be free.
    fn take_snapshot_reader(&self) -> Result<LocalConn> {
        let alive = &self.alive;
        let mut readers = self.readers.lock().expect("reader pool lock");
        loop {
            if let Some(local) = readers.pop() {
                return Ok(local);
            }
            if alive.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return Err(snapshot_lost("every session of the copy's snapshot was lost"));
            }
            readers = self.free.wait(readers).expect("reader pool lock");
        }
    }

    fn give_back(&self, local: LocalConn) {
        self.readers.lock().expect("reader pool lock").push(local);
        self.free.notify_one();
    }

    /// A kept connection that still answers, else a new one (the server may have ended a kept one
    /// while it sat idle: not the read's fault, so not a failure of the read).
    fn take_reader(&self) -> Result<LocalConn> {
        if self.is_pinned() {
            return self.take_snapshot_reader();
        }
        let kept = self.readers.lock().expect("reader pool lock").pop();
        if let Some(mut local) = kept {
            let LocalConn { conn, rt } = &mut local;
            if rt.block_on(conn.ping()).is_ok() {
                return Ok(local);
            }
        }
        connect(&self.url)
    }
}

/// A failure of a snapshot session: not transient, since a new session cannot join the snapshot.
fn snapshot_lost(message: impl std::fmt::Display) -> Error {
    Error::Engine {
        context: "reading rows in the copy's snapshot".into(),
        message: format!("{message}; a new session cannot join the snapshot: run the copy again"),
    }
}

impl barge_core::SnapshotReads for MySource {
    /// The consistent start mydumper uses: `FLUSH TABLES WITH READ LOCK` for the moment it takes
    /// `readers` sessions to `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then `UNLOCK TABLES`;
    /// every range read then runs in one of those sessions (InnoDB tables; MyISAM/Aria tables are
    /// not transactional and are read as they are then).
    fn pin_snapshot(&self, readers: usize, lock: bool) -> Result<barge_core::SnapshotInfo> {
        if !lock {
            return Ok(barge_core::SnapshotInfo {
                consistent: false,
                detail: "--no-lock: each MySQL range read sees the source as of its own start".into(),
            });
        }
        let mut locker = connect(&self.url)?;
        locker.exec("SET SESSION lock_wait_timeout = 60", "configuring the snapshot lock")?;
        locker.exec("FLUSH TABLES WITH READ LOCK", "locking for a consistent snapshot").map_err(|e| {
            Error::Config(format!(
                "cannot read the MySQL source as one snapshot: FLUSH TABLES WITH READ LOCK failed ({e}); grant the \
                 RELOAD privilege, or pass --no-lock to copy without a snapshot"
            ))
        })?;
        let mut sessions = Vec::with_capacity(readers.max(1));
        for _ in 0..readers.max(1) {
            let mut session = connect(&self.url)?;
            session.exec("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "starting a snapshot session")?;
            session.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", "starting a snapshot session")?;
            sessions.push(session);
        }
        let position = locker
            .rows("SHOW MASTER STATUS", "reading the binlog position")
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| Some((row.first()?.clone()?, row.get(1)?.clone()?)))
            .map(|(file, pos)| {
                format!(", binlog {}:{}", String::from_utf8_lossy(&file), String::from_utf8_lossy(&pos))
            });
        locker.exec("UNLOCK TABLES", "unlocking after the snapshot")?;
        let count = sessions.len();
        *self.readers.lock().expect("reader pool lock") = sessions;
        self.alive.store(count, std::sync::atomic::Ordering::Release);
        *self.snapshot.lock().expect("snapshot lock") = true;
        Ok(barge_core::SnapshotInfo {
            consistent: true,
            detail: format!(
                "a MySQL consistent snapshot ({count} sessions started under FLUSH TABLES WITH READ LOCK{})",
                position.unwrap_or_default()
            ),
        })
    }
}

/// The rows decoded so far as a batch; the decoders start over.
fn finish(schema: &arrow_schema::SchemaRef, decoders: &mut [Decoder]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = decoders.iter_mut().map(Decoder::finish).collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A text-protocol value as text (NULL: empty).
pub(crate) fn text(v: &Option<Vec<u8>>) -> String {
    v.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

/// The columns of `table` as a SELECT reads them. The text protocol prints a FLOAT with 6
/// significant digits (0.123457): as a DOUBLE it comes with every digit, and reads back as the
/// same f32.
pub(crate) fn select_list(table: &TableInfo, kinds: &[ColumnKind]) -> String {
    table
        .schema
        .fields()
        .iter()
        .zip(kinds)
        .map(|(f, kind)| match *kind == ColumnKind::scalar(Kind::Float) {
            true => format!("CAST({0} AS DOUBLE) AS {0}", quote(f.name())),
            false => quote(f.name()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kind of each column, from its metadata.
pub fn kinds(table: &TableInfo) -> Result<Vec<ColumnKind>> {
    table
        .schema
        .fields()
        .iter()
        .map(|f| {
            let meta = f.metadata();
            let (data_type, column_type) = (meta.get(META_DATA_TYPE), meta.get(META_NATIVE_TYPE));
            let as_bool = !meta.contains_key(META_TINYINT1_INTEGER);
            data_type.zip(column_type).and_then(|(d, c)| ColumnKind::resolve(d, c, as_bool)).ok_or_else(|| {
                Error::UnsupportedType {
                    table: table.name.clone(),
                    column: f.name().clone(),
                    type_name: column_type.cloned().unwrap_or_default(),
                    reason: None,
                }
            })
        })
        .collect()
}

fn is_integer(table: &TableInfo, column: &str) -> bool {
    table.schema.field_with_name(column).is_ok_and(|f| {
        matches!(
            f.data_type(),
            arrow_schema::DataType::Int8
                | arrow_schema::DataType::Int16
                | arrow_schema::DataType::Int32
                | arrow_schema::DataType::Int64
                | arrow_schema::DataType::UInt8
                | arrow_schema::DataType::UInt16
                | arrow_schema::DataType::UInt32
        )
    })
}

pub(crate) fn bound(value: &Scalar) -> String {
    match value {
        Scalar::Null => "NULL".into(),
        Scalar::Int(i) => i.to_string(),
        Scalar::UInt(u) => u.to_string(),
        Scalar::Bool(b) => i32::from(*b).to_string(),
        Scalar::Float(x) => format!("{x:?}"),
        Scalar::Text(t) => literal(t),
        Scalar::Bytes(b) => format!("X'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

/// `cols >= lo AND cols < hi`, row values for composite keys, in the columns' own collation.
fn range_predicate(table: &TableInfo, range: &KeyRange) -> String {
    let columns: Vec<String> = table.range_columns().iter().map(|c| quote(c)).collect();
    let predicate = table.filtered(barge_core::model::range_predicate(&columns, range, "1", |_, value| bound(value)));
    match &table.window {
        Some((column, from)) => format!("{predicate} AND {} >= {}", quote(column), bound(from)),
        None => predicate,
    }
}

fn scalar_of(table: &TableInfo, column: &str, value: &Option<Vec<u8>>) -> Scalar {
    match value {
        None => Scalar::Null,
        Some(b) => {
            let t = String::from_utf8_lossy(b).into_owned();
            if is_integer(table, column) {
                t.parse().map(Scalar::Int).unwrap_or(Scalar::Text(t))
            } else {
                Scalar::Text(t)
            }
        }
    }
}

impl MySource {
    fn describe(&self, conn: &mut LocalConn, name: &str) -> Result<TableInfo> {
        let table = literal(name);
        let exists = conn.rows(
            &format!(
                "SELECT COUNT(*), MAX(TABLE_ROWS) FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table} AND TABLE_TYPE = 'BASE TABLE'"
            ),
            "looking up a table",
        )?;
        if text(&exists[0][0]) == "0" {
            let other = conn.rows(
                &format!(
                    "SELECT LOWER(TABLE_TYPE) FROM information_schema.TABLES
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table}"
                ),
                "looking up a table",
            )?;
            return Err(match other.first().map(|row| text(&row[0])) {
                Some(kind) => Error::NotATable { table: name.into(), kind, database: self.url.display.clone() },
                None => Error::UnknownTable { table: name.into(), database: self.url.display.clone() },
            });
        }
        let estimated: u64 = text(&exists[0][1]).parse().unwrap_or(0);
        let columns = conn.rows(
            &format!(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, EXTRA, COLUMN_DEFAULT, COLUMN_COMMENT
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table}
                   AND EXTRA NOT LIKE '%VIRTUAL GENERATED%' AND EXTRA NOT LIKE '%STORED GENERATED%'
                 ORDER BY ORDINAL_POSITION"
            ),
            "describing a table",
        )?;
        // MariaDB's JSON is LONGTEXT with a json_valid check; MySQL's is its own type.
        let json_checked: Vec<String> = conn
            .rows(
                &format!(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
                     WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = {table}"
                ),
                "describing checks",
            )
            .unwrap_or_default()
            .iter()
            .map(|r| text(&r[0]))
            .collect();
        let mut fields = Vec::with_capacity(columns.len());
        for row in &columns {
            let (column, mut data_type, mut column_type) = (text(&row[0]), text(&row[1]), text(&row[2]));
            let is_json =
                data_type == "longtext" && json_checked.iter().any(|c| c.contains(&format!("json_valid(`{column}`)")));
            if is_json {
                (data_type, column_type) = ("json".into(), "json".into());
            }
            // A JSON column barge created for arrays names their element type in its comment.
            let comment = text(&row[6]);
            let array = comment.starts_with(crate::types::ARRAY_COMMENT) && data_type == "json";
            if array {
                column_type = format!("json COMMENT '{comment}'");
            }
            let kind = ColumnKind::resolve(&data_type, &column_type, self.url.tinyint1_as_bool).ok_or_else(|| {
                Error::UnsupportedType {
                    table: name.into(),
                    column: column.clone(),
                    type_name: column_type.clone(),
                    reason: Some(
                        "barge has no mapping for it yet; `copy --exclude` the table to copy the others".into(),
                    ),
                }
            })?;
            let spatial = crate::types::is_spatial(&data_type);
            let mut metadata = HashMap::from([
                (META_NATIVE_TYPE.to_string(), column_type.clone()),
                (META_DATA_TYPE.to_string(), data_type),
                (META_ENGINE.to_string(), ENGINE.to_string()),
            ]);
            if !array && !comment.is_empty() {
                metadata.insert(barge_core::META_COMMENT.to_string(), comment.clone());
            }
            if let Some(n) = column_type.to_ascii_lowercase().strip_prefix("char(").and_then(|n| n.strip_suffix(')')) {
                metadata.insert(barge_core::META_FIXED_CHARS.to_string(), n.to_string());
            }
            if spatial {
                metadata.insert(META_LOGICAL.to_string(), barge_core::LOGICAL_GEOMETRY.to_string());
                if let Some(subtype) = barge_core::types::geometry_type(&column_type) {
                    metadata.insert(barge_core::META_GEOMETRY_TYPE.to_string(), subtype.to_string());
                }
            }
            if kind == ColumnKind::scalar(Kind::Json) {
                metadata.insert(META_LOGICAL.to_string(), LOGICAL_JSON.to_string());
            }
            if let Some(labels) = crate::types::labels_of(&column_type) {
                let key = if column_type.to_ascii_lowercase().starts_with("set(") { META_SET } else { META_ENUM };
                barge_core::types::record_labels(&labels, key, &mut metadata);
            }
            if !self.url.tinyint1_as_bool {
                metadata.insert(META_TINYINT1_INTEGER.to_string(), "true".to_string());
            }
            if text(&row[4]).contains("auto_increment") {
                metadata.insert(META_IDENTITY.to_string(), "true".to_string());
            } else {
                let default = row[5].as_ref().map(|d| String::from_utf8_lossy(d).into_owned());
                record_default(default.as_deref(), &mut metadata);
            }
            if let Some(on_update) = text(&row[4]).to_ascii_lowercase().split_once("on update ") {
                metadata.insert(barge_core::META_ON_UPDATE.to_string(), on_update.1.trim().to_string());
            }
            fields.push(Field::new(column, kind.arrow(), text(&row[3]) == "YES").with_metadata(metadata));
        }
        let schema = Schema::new(fields);
        let key_columns = conn.rows(
            &format!(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table} AND CONSTRAINT_NAME = 'PRIMARY'
                 ORDER BY ORDINAL_POSITION"
            ),
            "describing the primary key",
        )?;
        let key = if key_columns.is_empty() {
            tracing::debug!("table `{name}` has no primary key");
            KeySpec::None
        } else {
            KeySpec::Primary(
                key_columns
                    .iter()
                    .map(|r| schema.index_of(&text(&r[0])).map_err(Error::from))
                    .collect::<Result<_>>()?,
            )
        };
        let mut indexes: Vec<IndexInfo> = Vec::new();
        for row in conn.rows(
            &format!(
                "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table} AND INDEX_NAME <> 'PRIMARY'
                 ORDER BY INDEX_NAME, SEQ_IN_INDEX"
            ),
            "describing indexes",
        )? {
            let (index, column) = (text(&row[0]), text(&row[2]));
            match indexes.iter_mut().find(|i| i.name == index) {
                Some(existing) => existing.columns.push(column),
                None => indexes.push(IndexInfo { name: index, columns: vec![column], unique: text(&row[1]) == "0" }),
            }
        }
        // Two plain lookups, not a join of two information_schema tables: MariaDB 10.11 has been
        // seen to crash (signal 11, in the cleanup of a failed information_schema temporary table)
        // on that join while other sessions dropped databases.
        let key_columns = conn.rows(
            &format!(
                "SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME
                 FROM information_schema.KEY_COLUMN_USAGE
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table} AND REFERENCED_TABLE_NAME IS NOT NULL
                 ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION"
            ),
            "describing foreign keys",
        )?;
        let rules: Vec<(String, String, String)> = if key_columns.is_empty() {
            Vec::new()
        } else {
            conn.rows(
                &format!(
                    "SELECT CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS
                     WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = {table}"
                ),
                "describing foreign keys",
            )?
            .iter()
            .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
            .collect()
        };
        let rule = |constraint: &str| {
            rules.iter().find(|(c, _, _)| c == constraint).map_or(("", ""), |(_, d, u)| (d.as_str(), u.as_str()))
        };
        let mut foreign_keys: Vec<(String, ForeignKeyInfo)> = Vec::new();
        for row in key_columns {
            let constraint = text(&row[0]);
            match foreign_keys.iter_mut().find(|(c, _)| *c == constraint) {
                Some((_, fk)) => {
                    fk.columns.push(text(&row[1]));
                    fk.ref_columns.push(text(&row[3]));
                }
                None => {
                    let (on_delete, on_update) = rule(&constraint);
                    foreign_keys.push((
                        constraint.clone(),
                        ForeignKeyInfo {
                            name: Some(constraint),
                            columns: vec![text(&row[1])],
                            ref_table: text(&row[2]),
                            ref_columns: vec![text(&row[3])],
                            on_delete: ForeignKeyInfo::action(on_delete),
                            on_update: ForeignKeyInfo::action(on_update),
                        },
                    ))
                }
            }
        }
        let checks = checks(conn, name, &table, &schema)?;
        let table_comment = conn
            .rows(
                &format!(
                    "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {table}"
                ),
                "describing a table",
            )?
            .first()
            .map(|r| text(&r[0]))
            .filter(|c| !c.is_empty());
        Ok(TableInfo {
            name: name.into(),
            schema: Arc::new(schema),
            key,
            estimated_rows: estimated,
            indexes,
            foreign_keys: foreign_keys.into_iter().map(|(_, fk)| fk).collect(),
            checks,
            sql_indexes: Vec::new(),
            comment: table_comment,
            filter: None,
            window: None,
        })
    }
}

/// The table's CHECK constraints, conditions in portable SQL (names in double quotes). A column's
/// own check is named `<table>_<column>_check` (MariaDB names it after the column); the
/// `json_valid()` check MariaDB gives a JSON column is the column's type, not a constraint.
/// MySQL 8, whose catalog lists checks differently, gives none.
fn checks(conn: &mut LocalConn, name: &str, table: &str, schema: &Schema) -> Result<Vec<barge_core::CheckInfo>> {
    let rows = conn.rows(
        &format!(
            "SELECT CONSTRAINT_NAME, LEVEL, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = {table} ORDER BY CONSTRAINT_NAME"
        ),
        "describing CHECK constraints",
    );
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!("table `{name}`: CHECK constraints not read: {error}");
            return Ok(Vec::new());
        }
    };
    let mut checks = Vec::new();
    for row in rows {
        let (constraint, level, clause) = (text(&row[0]), text(&row[1]), text(&row[2]));
        let json = schema.field_with_name(&constraint).is_ok_and(|f| {
            f.metadata().get(META_LOGICAL).is_some_and(|l| l == LOGICAL_JSON)
                && clause.replace(' ', "") == format!("json_valid(`{}`)", constraint.replace('`', "``"))
        });
        if level == "Column" && json {
            continue;
        }
        let check_name = if level == "Column" { format!("{name}_{constraint}_check") } else { constraint };
        checks.push(barge_core::CheckInfo { name: check_name, expr: crate::types::portable_select(&clause, "") });
    }
    Ok(checks)
}

impl barge_core::Source for MySource {
    fn display_name(&self) -> String {
        self.url.display.clone()
    }

    fn list_tables(&self) -> Result<Vec<String>> {
        let mut conn = connect(&self.url)?;
        let rows = conn.rows(
            "SELECT TABLE_NAME FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            "listing tables",
        )?;
        Ok(rows.iter().map(|r| text(&r[0])).collect())
    }

    fn table(&self, name: &str) -> Result<TableInfo> {
        let mut conn = connect(&self.url)?;
        let mut table = self.describe(&mut conn, name)?;
        if table.estimated_rows < 100_000 {
            // InnoDB's estimate is rough; small tables are counted, since partitioning relies on it.
            let count = conn.rows(&format!("SELECT COUNT(*) FROM {}", quote(name)), "counting rows")?;
            table.estimated_rows = text(&count[0][0]).parse().unwrap_or(0);
        }
        Ok(table)
    }

    /// A row cannot be larger than the packet the server sends it in.
    fn row_cap(&self) -> Result<Option<u64>> {
        connect(&self.url)?.max_allowed_packet()
    }

    fn check_filter(&self, table: &TableInfo) -> Result<()> {
        let sql = format!("SELECT 1 FROM {} WHERE {} LIMIT 0", quote(&table.name), table.filtered("1".into()));
        connect(&self.url)?.rows(&sql, "checking the row filter").map(drop)
    }

    fn widest_row(&self, table: &TableInfo, columns: &[usize]) -> Result<Option<u64>> {
        let sum: Vec<String> =
            columns.iter().map(|&i| format!("coalesce(length({}), 0)", quote(table.schema.field(i).name()))).collect();
        let sql =
            format!("SELECT max({}) FROM {} WHERE {}", sum.join(" + "), quote(&table.name), table.filtered("1".into()));
        Ok(connect(&self.url)?.value(&sql, "measuring the widest row")?.and_then(|v| v.parse().ok()))
    }

    fn column_max(&self, table: &TableInfo, column: &str) -> Result<Option<Scalar>> {
        let mut conn = connect(&self.url)?;
        let sql =
            format!("SELECT MAX({}) FROM {} WHERE {}", quote(column), quote(&table.name), table.filtered("1".into()));
        let rows = conn.rows(&sql, "reading a watermark")?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten()
            .map(|v| scalar_of(table, column, &Some(v))))
    }

    fn key_stats(&self, table: &TableInfo, range: &KeyRange) -> Result<KeyStats> {
        let columns = table.range_columns();
        let single_integer = columns.len() == 1 && is_integer(table, &columns[0]);
        let mut conn = connect(&self.url)?;
        if single_integer && table.reads_all(range) {
            // MIN and MAX come from the index at once; COUNT(*) would scan the table.
            let rows = conn.rows(
                &format!("SELECT MIN({0}), MAX({0}) FROM {1}", quote(&columns[0]), quote(&table.name)),
                "reading key statistics",
            )?;
            let bound = |v: &Option<Vec<u8>>| match scalar_of(table, &columns[0], v) {
                Scalar::Int(i) => Some(i),
                _ => None,
            };
            if let (Some(min), Some(max)) = (bound(&rows[0][0]), bound(&rows[0][1]))
                && let Some(stats) = KeyStats::dense_by_estimate(table.estimated_rows, min, max)
            {
                return Ok(stats);
            }
        }
        let select = if single_integer {
            format!("COUNT(*), MIN({0}), MAX({0})", quote(&columns[0]))
        } else {
            "COUNT(*)".into()
        };
        let rows = conn.rows(
            &format!("SELECT {select} FROM {} WHERE {}", quote(&table.name), range_predicate(table, range)),
            "reading key statistics",
        )?;
        let count: u64 = text(&rows[0][0]).parse().unwrap_or(0);
        let (min, max) = if single_integer && count > 0 {
            (
                Some(vec![scalar_of(table, &columns[0], &rows[0][1])]),
                Some(vec![scalar_of(table, &columns[0], &rows[0][2])]),
            )
        } else {
            (None, None)
        };
        Ok(KeyStats { rows: count, min, max })
    }

    fn sample_keys(&self, table: &TableInfo, range: &KeyRange, target: usize) -> Result<Vec<Key>> {
        let rows = self.key_stats(table, range)?.rows;
        let step = (rows / target.max(1) as u64).max(1);
        let columns = table.range_columns();
        let list = columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        // Every step-th key in the columns' own order, numbered on the server: exact quantiles,
        // and only the sample crosses the network.
        let sql = format!(
            "SELECT {list} FROM (SELECT {list}, ROW_NUMBER() OVER (ORDER BY {list}) AS barge_rn FROM {} WHERE {}) s
             WHERE MOD(barge_rn - 1, {step}) = {} ORDER BY {list}",
            quote(&table.name),
            range_predicate(table, range),
            step / 2
        );
        let mut conn = connect(&self.url)?;
        let rows = conn.rows(&sql, "sampling keys")?;
        Ok(rows.iter().map(|r| columns.iter().zip(r).map(|(c, v)| scalar_of(table, c, v)).collect()).collect())
    }

    fn read_range(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: barge_core::BatchSize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let kinds = kinds(table)?;
        let list = select_list(table, &kinds);
        let sql = format!("SELECT {list} FROM {} WHERE {}", quote(&table.name), range_predicate(table, range));
        // A connection of its own while it reads, reused by the next range read only when this
        // one read its rows to the end (pinned: a session of the snapshot, given back).
        let mut local = self.take_reader()?;
        let read = self.read_range_on(&mut local, table, batch, &sql, &kinds, emit);
        match read {
            Ok(zero_dates) => {
                self.give_back(local);
                let mut counts = self.zero_dates.lock().expect("zero-date counts");
                for (i, n) in zero_dates.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                    *counts.entry((table.name.clone(), table.schema.field(i).name().clone())).or_default() += n;
                }
                Ok(())
            }
            Err(error) if self.is_pinned() => {
                drop(local);
                self.alive.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                self.free.notify_all();
                Err(if error.is_transient() { snapshot_lost(error) } else { error })
            }
            Err(error) => Err(error),
        }
    }

    fn schema_dump(&self) -> Option<&dyn barge_core::SchemaDump> {
        Some(self)
    }

    fn change_feed(&self) -> Option<&dyn barge_core::ChangeFeed> {
        Some(self)
    }

    fn other_objects(&self) -> Result<Vec<barge_core::SchemaObject>> {
        let mut conn = connect(&self.url)?;
        let rows = conn.rows(
            "SELECT 'view', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()
             UNION ALL SELECT lower(ROUTINE_TYPE), ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()
             UNION ALL SELECT 'trigger', concat(TRIGGER_NAME, ' on ', EVENT_OBJECT_TABLE) FROM information_schema.TRIGGERS
                       WHERE TRIGGER_SCHEMA = DATABASE()
             UNION ALL SELECT 'event', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()
             ORDER BY 1, 2",
            "listing views, routines and triggers",
        )?;
        Ok(rows.iter().map(|r| barge_core::SchemaObject { kind: text(&r[0]), name: text(&r[1]) }).collect())
    }

    fn views(&self) -> Result<Vec<barge_core::ViewDef>> {
        let mut conn = connect(&self.url)?;
        let rows = conn.rows(
            "SELECT TABLE_NAME, VIEW_DEFINITION, DATABASE() FROM information_schema.VIEWS
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
            "reading view definitions",
        )?;
        Ok(rows
            .iter()
            .map(|r| barge_core::ViewDef {
                name: text(&r[0]),
                columns: Vec::new(),
                select: crate::types::portable_select(&text(&r[1]), &text(&r[2])),
            })
            .collect())
    }

    fn snapshots(&self) -> Option<&dyn barge_core::SnapshotReads> {
        Some(self)
    }

    fn identity(&self) -> Result<Option<String>> {
        crate::conn::identity(&mut connect(&self.url)?).map(Some)
    }

    fn table_bytes(&self, name: &str) -> Result<Option<u64>> {
        let rows = connect(&self.url)?.rows(
            &format!(
                "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {}",
                literal(name)
            ),
            "measuring a table",
        )?;
        Ok(rows.first().and_then(|r| text(&r[0]).parse().ok()))
    }

    fn namespaces_with_tables(&self) -> Result<Vec<String>> {
        let rows = connect(&self.url)?.rows(
            "SELECT DISTINCT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'
               AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1",
            "listing databases",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .map(|v| format!("database {}", String::from_utf8_lossy(&v)))
            .collect())
    }

    fn notices(&self, table: &str) -> Vec<barge_core::Notice> {
        let counts = self.zero_dates.lock().expect("zero-date counts");
        let mut notices: Vec<barge_core::Notice> = counts
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, column), n)| barge_core::Notice {
                column: column.clone(),
                risk: barge_core::Risk::ZeroDate,
                values: *n,
                message: format!("{n} zero date(s) read as NULL"),
            })
            .collect();
        notices.sort_by(|a, b| a.column.cmp(&b.column));
        notices
    }
}

impl MySource {
    /// Reads `range` on `local`; returns the zero dates read as NULL per column.
    pub(crate) fn read_range_on(
        &self,
        local: &mut LocalConn,
        table: &TableInfo,
        batch: barge_core::BatchSize,
        sql: &str,
        kinds: &[ColumnKind],
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<Vec<u64>> {
        let LocalConn { conn, rt } = local;
        let mut result = rt.block_on(conn.query_iter(sql.to_string())).map_err(my_err("reading rows"))?;
        let mut stream = rt
            .block_on(result.stream::<mysql_async::Row>())
            .map_err(my_err("reading rows"))?
            .ok_or_else(|| Error::engine("reading rows", "the query returned no result set"))?;
        let batch_rows = batch.rows.max(1);
        let mut decoders: Vec<Decoder> = kinds.iter().map(|k| Decoder::column(*k, batch_rows)).collect();
        let (mut pending, mut bytes) = (0, 0);
        let mut zero_dates = vec![0u64; decoders.len()];
        let mut chunk: Vec<mysql_async::Row> = Vec::with_capacity(ROWS_PER_CHUNK);
        loop {
            chunk.clear();
            // I/O inside block_on: gather rows…
            let ended = rt.block_on(async {
                let mut chunk_bytes = 0;
                while let Some(row) = stream.next().await {
                    let row = row?;
                    chunk_bytes += (0..row.len())
                        .map(|i| match row.as_ref(i) {
                            Some(mysql_async::Value::Bytes(b)) => b.len(),
                            _ => 8,
                        })
                        .sum::<usize>();
                    chunk.push(row);
                    if chunk.len() == ROWS_PER_CHUNK || chunk_bytes >= CHUNK_BYTES {
                        return Ok(false);
                    }
                }
                Ok::<bool, mysql_async::Error>(true)
            });
            let ended = ended.map_err(my_err("reading rows"))?;
            // …decode outside.
            for row in chunk.drain(..) {
                for (i, decoder) in decoders.iter_mut().enumerate() {
                    let value = match row.as_ref(i) {
                        None | Some(mysql_async::Value::NULL) => None,
                        Some(mysql_async::Value::Bytes(b)) => Some(b.as_slice()),
                        Some(other) => {
                            return Err(Error::engine("reading rows", format!("unexpected binary value {other:?}")));
                        }
                    };
                    bytes += value.map_or(1, <[u8]>::len);
                    let appended = decoder.append(value, self.url.zero_dates_as_null);
                    if let Ok(true) = appended {
                        zero_dates[i] += 1;
                    }
                    if let Err(reason) = appended {
                        let key = match &table.key {
                            KeySpec::Primary(cols) => Some(
                                cols.iter()
                                    .map(|&k| match row.as_ref(k) {
                                        Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                                        _ => "NULL".into(),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ),
                            _ => None,
                        };
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
            if ended {
                break;
            }
        }
        if pending > 0 {
            emit(finish(&table.schema, &mut decoders)?)?;
        }
        drop(stream);
        drop(result);
        Ok(zero_dates)
    }
}

impl barge_core::SchemaDump for MySource {
    fn dump_schema(&self) -> Result<std::result::Result<Arc<dyn barge_core::DumpedSchema>, String>> {
        Ok(Ok(Arc::new(crate::dump::dump(&self.url)?)))
    }
}
