//! Writing into MySQL: `LOAD DATA LOCAL INFILE` fed from memory through the driver's infile
//! handler (no temporary files), several connections in parallel; multi-row INSERTs when the server
//! refuses local infile (MySQL 8 has it off by default), said once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::Field;
use barge_core::{
    BatchEncoder, Conflict, Encoded, Error, ForeignKeyInfo, LOGICAL_JSON, LOGICAL_UUID, META_ENUM, META_IDENTITY,
    META_SET, Result, TableInfo, TableWriter, TargetColumn, WriteOptions, choose_column,
};
use bytes::Bytes;
use mysql_async::prelude::Queryable;

use barge_core::types::labels;

use crate::ENGINE;
use crate::codec::{can_encode, decode_lines, encode_batch};
use crate::conn::{LocalConn, MyUrl, connect, literal, quote};
use crate::types::{column_type_for_arrow, read_back};

/// Rows per INSERT statement in the fallback…
const ROWS_PER_INSERT: usize = 500;
/// …and at most this many bytes, or half the server's `max_allowed_packet` if that is less: a
/// statement is one packet, and wide rows would otherwise make one too large mid-run.
const INSERT_BYTES: usize = 4 << 20;
/// Server errors caused by the rows themselves: bad NULL (1048), duplicate key (1062), out of range
/// (1264, 1690), truncated or incorrect values (1265, 1292, 1366, 1406), foreign keys (1216, 1452),
/// CHECK constraints (MySQL 3819, MariaDB 4025).
const ROW_ERRORS: &[u16] = &[1048, 1062, 1216, 1264, 1265, 1292, 1366, 1406, 1452, 1690, 3819, 4025];
/// Writer sessions are strict whatever the server's default, so that a value that does not fit is
/// an error rather than silently truncated or zeroed.
const STRICT_SESSION: &str = "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', \
                              CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))";
/// Server errors that mean "LOCAL INFILE is not allowed here" (MySQL 1148 and 3948, MariaDB 4166).
const LOCAL_INFILE_REFUSED: &[u16] = &[1148, 3948, 4166];

pub struct MyTarget {
    url: MyUrl,
    /// Set once a server has refused LOCAL INFILE, so that every later writer goes straight to INSERTs.
    infile_refused: Arc<AtomicBool>,
    /// The server's `max_allowed_packet`, read when the target opens (writers and the row limit).
    packet: Option<u64>,
}

/// A name in double quotes (portable SQL, read under ANSI_QUOTES).
fn ansi_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl MyTarget {
    pub fn open(url: MyUrl) -> Result<Arc<Self>> {
        let mut conn = connect(&url).map_err(|e| match e {
            Error::SourceNotFound(db) => Error::TargetNotFound(db),
            other => other,
        })?;
        warn_unless_durable(&mut conn);
        let packet = conn.max_allowed_packet()?;
        Ok(Arc::new(MyTarget { url, infile_refused: Arc::new(AtomicBool::new(false)), packet }))
    }

    /// Runs `ddl`, which quotes names in double quotes (portable SQL), under ANSI_QUOTES.
    fn ansi_quotes(&self, ddl: &str, context: &'static str) -> Result<()> {
        let mut conn = self.conn()?;
        conn.exec("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')", "configuring a session")?;
        conn.exec(ddl, context)
    }

    fn conn(&self) -> Result<LocalConn> {
        connect(&self.url)
    }
}

/// Commits are as durable as the server makes them: with `innodb_flush_log_at_trx_commit` other than
/// 1, a server crash can lose the last second of commits, which the ledger already records as done.
fn warn_unless_durable(conn: &mut LocalConn) {
    let setting =
        conn.value("SELECT @@innodb_flush_log_at_trx_commit", "reading innodb_flush_log_at_trx_commit").ok().flatten();
    if let Some(value) = setting.filter(|v| v != "1") {
        tracing::warn!(
            "target innodb_flush_log_at_trx_commit = {value}: a server crash may lose commits the ledger records as \
             done, so a --resume after it may not be exact; set it to 1 for durable commits"
        );
    }
}

/// Column types of an existing table, by name: `(name, COLUMN_TYPE)`.
fn describe(conn: &mut LocalConn, table: &str) -> Result<Vec<(String, String)>> {
    let rows = conn.rows(
        &format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            literal(table)
        ),
        "describing a target table",
    )?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let text =
                |v: &Option<Vec<u8>>| v.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (text(&r[0]), text(&r[1]))
        })
        .collect())
}

impl barge_core::Target for MyTarget {
    fn unstorable(&self) -> barge_core::values::Unstorable {
        barge_core::values::Unstorable {
            non_finite_floats: true,
            nul_in_text: false,
            days: Some(barge_core::values::MYSQL_DAYS),
            engine: "MySQL",
        }
    }

    fn display_name(&self) -> String {
        self.url.display.clone()
    }

    fn identity(&self) -> Result<Option<String>> {
        crate::conn::identity(&mut self.conn()?).map(Some)
    }

    fn table_exists(&self, table: &str) -> Result<bool> {
        Ok(!describe(&mut self.conn()?, table)?.is_empty())
    }

    fn table_rows(&self, table: &str) -> Result<Option<u64>> {
        let mut conn = self.conn()?;
        if describe(&mut conn, table)?.is_empty() {
            return Ok(None);
        }
        let rows = conn.rows(&format!("SELECT COUNT(*) FROM {}", quote(table)), "counting target rows")?;
        Ok(Some(rows[0][0].as_deref().map_or(0, |b| String::from_utf8_lossy(b).parse().unwrap_or(0))))
    }

    fn column_for(&self, table: &str, field: &Field) -> Result<TargetColumn> {
        choose_column(
            ENGINE,
            "MySQL",
            table,
            field,
            |logical, data_type| match (logical, barge_core::types::max_chars(field)) {
                (Some(LOGICAL_JSON), _) => Some("json".into()),
                (Some(LOGICAL_UUID), _) => Some("char(36)".into()),
                (Some(barge_core::LOGICAL_GEOMETRY), _) => Some(
                    field
                        .metadata()
                        .get(barge_core::META_GEOMETRY_TYPE)
                        .map_or("geometry".into(), |t| t.to_ascii_lowercase()),
                ),
                // Enumerations and sets with their labels, in their order.
                _ if let Some(labels) = labels(field, META_ENUM) => Some(format!("enum({})", literals(&labels))),
                _ if let Some(members) = labels(field, META_SET) => Some(format!("set({})", literals(&members))),
                // Fixed-length text stays fixed-length (values arrive padded; MySQL strips
                // the padding it adds back).
                (None, Some(n)) if n <= 255 && barge_core::types::fixed_chars(field).is_some() => {
                    Some(format!("char({n})"))
                }
                // A declared length is kept where a utf8mb4 varchar can hold it (65,535 bytes).
                (None, Some(n)) if n <= 16_383 => Some(format!("varchar({n})")),
                // Text and blobs get the unbounded type here; `create_table` bounds key columns,
                // which MySQL can only index with a bounded type.
                _ if can_encode(data_type) => column_type_for_arrow(data_type, false),
                _ => None,
            },
            read_back,
        )
    }

    fn table_ddl(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> String {
        let mut defs: Vec<String> = columns
            .iter()
            .map(|(f, c)| {
                // MySQL cannot index unbounded TEXT/BLOB: key columns get a bounded type.
                let native = match (key.contains(f.name()), c.native_type.as_str()) {
                    (true, "longtext") => "varchar(255)".to_string(),
                    (true, "longblob") => "varbinary(255)".to_string(),
                    (_, other) => other.to_string(),
                };
                let not_null = if f.is_nullable() { "" } else { " NOT NULL" };
                let default = barge_core::types::default_sql(f, |token| mysql_default(token, &native))
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default();
                // A comment (array columns name their element type in one) goes last.
                let (native, comment) = match native.split_once(" COMMENT ") {
                    Some((native, comment)) => (native.to_string(), format!(" COMMENT {comment}")),
                    None => match f.metadata().get(barge_core::META_COMMENT) {
                        Some(comment) => (native, format!(" COMMENT {}", literal(comment))),
                        None => (native, String::new()),
                    },
                };
                format!("{} {native}{not_null}{default}{comment}", quote(f.name()))
            })
            .collect();
        if !key.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")));
        }
        // Binary collation: keys that differ only in case or accents stay distinct, as they are in
        // PostgreSQL and SQLite, and ranges compare bytes the same way on every engine.
        format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            quote(name),
            defs.join(",\n  ")
        )
    }

    fn create_table(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> Result<()> {
        self.conn()?.exec(&self.table_ddl(name, columns, key), "creating a table")
    }

    fn truncate_table(&self, name: &str) -> Result<()> {
        self.conn()?.exec(&format!("TRUNCATE TABLE {}", quote(name)), "truncating a table")
    }

    fn keeps_comments(&self) -> bool {
        true
    }

    fn comment_table(&self, name: &str, comment: &str) -> Result<()> {
        self.conn()?.exec(&format!("ALTER TABLE {} COMMENT = {}", quote(name), literal(comment)), "commenting a table")
    }

    fn truncate_tables(&self, names: &[String]) -> Result<()> {
        // MySQL refuses to truncate a table a foreign key references, even when the referencing
        // table is emptied too: checks off for this session while they all are.
        let mut conn = self.conn()?;
        conn.exec("SET SESSION foreign_key_checks = 0", "truncating tables")?;
        for name in names {
            conn.exec(&format!("TRUNCATE TABLE {}", quote(name)), "truncating tables")?;
        }
        conn.exec("SET SESSION foreign_key_checks = 1", "truncating tables")
    }

    fn drop_table(&self, name: &str) -> Result<()> {
        self.conn()?.exec(&format!("DROP TABLE {}", quote(name)), "dropping a table")
    }

    fn create_view(&self, view: &barge_core::ViewDef) -> Result<()> {
        self.ansi_quotes(&view.create_sql(ansi_quote), "creating a view")
    }

    fn add_index(&self, table: &str, index: &barge_core::SqlIndex) -> Result<()> {
        if index.predicate.is_some() {
            return Err(Error::unsupported(self.display_name(), "build partial indexes (MySQL has none)"));
        }
        if let Some(method) = &index.method {
            return Err(Error::unsupported(self.display_name(), format!("build `{method}` indexes")));
        }
        self.ansi_quotes(&index.create_sql(table, ansi_quote, false), "building an index")
    }

    fn add_check(&self, table: &str, check: &barge_core::CheckInfo) -> Result<()> {
        let ddl = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})",
            ansi_quote(table),
            ansi_quote(&check.name),
            check.expr
        );
        self.ansi_quotes(&ddl, "adding a CHECK constraint")
    }

    fn required_columns(&self, name: &str) -> Result<Vec<String>> {
        let rows = self.conn()?.rows(
            &format!(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {} AND IS_NULLABLE = 'NO'
                   AND COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%'
                   AND EXTRA NOT LIKE '%GENERATED%' AND EXTRA NOT LIKE '%VIRTUAL%' AND EXTRA NOT LIKE '%PERSISTENT%'
                 ORDER BY ORDINAL_POSITION",
                literal(name)
            ),
            "describing a target table",
        )?;
        Ok(rows
            .into_iter()
            .map(|r| String::from_utf8_lossy(r[0].as_deref().unwrap_or_default()).into_owned())
            .collect())
    }

    fn table_columns(&self, name: &str) -> Result<Vec<String>> {
        Ok(describe(&mut self.conn()?, name)?.into_iter().map(|(n, _)| n).collect())
    }

    fn encoder(&self, table: &str, fields: &[Field]) -> Result<Arc<dyn BatchEncoder>> {
        Ok(Arc::new(LoadDataEncoder { table: table.into(), names: fields.iter().map(|f| f.name().clone()).collect() }))
    }

    fn writer(&self, table: &str, fields: &[Field], options: &WriteOptions) -> Result<Box<dyn TableWriter>> {
        let mut conn = self.conn()?;
        conn.exec(STRICT_SESSION, "configuring a loading session")?;
        // Tables load in parallel, in no order: a child's rows may come before their parent's in
        // a table that already has its foreign keys (a rerun). As mysqldump loads: checks off in
        // this session; the copy's verification proves every row is the source's.
        conn.exec("SET SESSION foreign_key_checks = 0", "configuring a loading session")?;
        let types = describe(&mut conn, table)?;
        let type_of = |f: &Field| types.iter().find(|(n, _)| n == f.name()).map(|(_, t)| t.clone()).unwrap_or_default();
        let binary: Vec<bool> = fields
            .iter()
            .map(|f| {
                let t = type_of(f);
                t.contains("blob") || t.contains("binary") || crate::types::is_spatial(&crate::types::data_type_of(&t))
            })
            .collect();
        let bits: Vec<bool> = fields.iter().map(|f| type_of(f).starts_with("bit")).collect();
        let columns = fields.iter().map(|f| quote(f.name())).collect::<Vec<_>>().join(", ");
        // BIT columns take their binary digits through a variable: text would store the characters' bits.
        let load_columns: Vec<String> = fields
            .iter()
            .zip(&bits)
            .enumerate()
            .map(|(i, (f, &bit))| if bit { format!("@barge_bit_{i}") } else { quote(f.name()) })
            .collect();
        let set_bits: Vec<String> = fields
            .iter()
            .zip(&bits)
            .enumerate()
            .filter(|(_, (_, bit))| **bit)
            .map(|(i, (f, _))| format!("{} = CAST(CONV(@barge_bit_{i}, 2, 10) AS UNSIGNED)", quote(f.name())))
            .collect();
        let set_clause = if set_bits.is_empty() { String::new() } else { format!(" SET {}", set_bits.join(", ")) };
        // Conflict modes load into a temporary copy of the table, then merge it in.
        let (into, merge) = match options.conflict {
            Conflict::Error => (quote(table), None),
            conflict => {
                if options.key.is_empty() {
                    return Err(Error::Config(format!("conflict mode {conflict:?} needs the table's key columns")));
                }
                let stage = quote(&format!("barge_stage_{table}"));
                conn.exec(
                    &format!("CREATE TEMPORARY TABLE IF NOT EXISTS {stage} LIKE {}", quote(table)),
                    "creating a staging table",
                )?;
                let updates: Vec<String> = match conflict {
                    Conflict::Upsert => fields
                        .iter()
                        .filter(|f| !options.key.contains(f.name()))
                        .map(|f| format!("{0} = VALUES({0})", quote(f.name())))
                        .collect(),
                    _ => Vec::new(),
                };
                // Skip: a no-op assignment of the key keeps the target's row.
                let updates = if updates.is_empty() {
                    format!("{0}.{1} = {0}.{1}", quote(table), quote(&options.key[0]))
                } else {
                    updates.join(", ")
                };
                let merge = format!(
                    "INSERT INTO {} ({columns}) SELECT {columns} FROM {stage} ON DUPLICATE KEY UPDATE {updates}",
                    quote(table)
                );
                (stage.clone(), Some((merge, format!("DELETE FROM {stage}"))))
            }
        };
        let packet = self.packet.map_or(INSERT_BYTES * 2, |p| usize::try_from(p).unwrap_or(usize::MAX));
        let load_into = |into: &str| {
            format!(
                "LOAD DATA LOCAL INFILE 'barge' INTO TABLE {into} CHARACTER SET binary \
                 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){set_clause}",
                load_columns.join(", ")
            )
        };
        // Rows deleted whole (changes to a table without a key): staged in a copy of the table's
        // columns, then every row equal to one of them (`<=>`: NULL equals NULL) deleted.
        let gone = {
            let stage = quote(&format!("barge_gone_{table}"));
            let equal: Vec<String> = fields.iter().map(|f| format!("t.{0} <=> g.{0}", quote(f.name()))).collect();
            Gone {
                create: format!(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} AS SELECT {columns} FROM {} LIMIT 0",
                    quote(table)
                ),
                load: load_into(&stage),
                insert: format!("INSERT INTO {stage} ({columns}) VALUES "),
                delete: format!("DELETE t FROM {} AS t JOIN {stage} AS g ON {}", quote(table), equal.join(" AND ")),
                empty: format!("DELETE FROM {stage}"),
            }
        };
        Ok(Box::new(MyWriter {
            conn,
            insert_bytes: INSERT_BYTES.min(packet / 2).max(1),
            table: table.into(),
            merge,
            isolate: options.isolate_rows,
            load: load_into(&into),
            insert: format!("INSERT INTO {into} ({columns}) VALUES "),
            gone,
            binary,
            bits,
            use_infile: self.url.local_infile,
            infile_refused: self.infile_refused.clone(),
            in_transaction: false,
        }))
    }

    /// LOAD DATA and INSERT send a row in one packet: `max_allowed_packet` bounds it.
    fn row_limit(&self) -> Result<Option<barge_core::RowLimit>> {
        Ok(self.packet.map(|bytes| barge_core::RowLimit {
            bytes,
            setting: format!(
                "the target's max_allowed_packet = {bytes}: SET GLOBAL max_allowed_packet = … (up to 1 GB)"
            ),
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

    fn write_freeze(&self) -> Option<&dyn barge_core::WriteFreeze> {
        Some(self)
    }

    fn sql_scripts(&self) -> Option<&dyn barge_core::SqlScripts> {
        Some(self)
    }

    fn session_waits(&self, sessions: &[String]) -> Result<Vec<String>> {
        let ids: Vec<u64> = sessions.iter().filter_map(|s| s.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let mut conn = self.conn()?;
        let text =
            |v: &Option<Vec<u8>>| v.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        // Row locks: InnoDB's lock waits name the blocking transaction's session.
        let blockers = conn.rows(
            &format!(
                "SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id, b.trx_state,
                        TIMESTAMPDIFF(SECOND, b.trx_started, NOW()), coalesce(p.USER, '')
                 FROM information_schema.INNODB_LOCK_WAITS w
                 JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
                 JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
                 LEFT JOIN information_schema.PROCESSLIST p ON p.ID = b.trx_mysql_thread_id
                 WHERE r.trx_mysql_thread_id IN ({list})"
            ),
            "reading lock waits",
        )?;
        let waits = conn.rows(
            &format!(
                "SELECT ID, coalesce(STATE, ''), TIME FROM information_schema.PROCESSLIST
                 WHERE ID IN ({list}) AND STATE LIKE 'Waiting%' OR (ID IN ({list}) AND STATE IN ('update', 'updating'))"
            ),
            "reading what sessions wait on",
        )?;
        let mut lines = Vec::new();
        for w in &waits {
            let id = text(&w[0]);
            let by: Vec<String> = blockers
                .iter()
                .filter(|b| text(&b[0]) == id)
                .map(|b| format!("session {} ({} {} s, user {})", text(&b[1]), text(&b[2]), text(&b[3]), text(&b[4])))
                .collect();
            let by = if by.is_empty() { String::new() } else { format!(" held by {}", by.join(", ")) };
            lines.push(format!("target session {id} waits: {} for {} s{by}", text(&w[1]), text(&w[2])));
        }
        Ok(lines)
    }

    fn end_sessions(&self, sessions: &[String]) -> Result<()> {
        let ids: Vec<u64> = sessions.iter().filter_map(|s| s.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        for id in &ids {
            // A session already gone (ER_NO_SUCH_THREAD, 1094) is what was wanted.
            if let Err(e) = conn.rt.block_on(conn.conn.query_drop(format!("KILL CONNECTION {id}")))
                && !matches!(&e, mysql_async::Error::Server(s) if s.code == 1094)
            {
                return Err(crate::conn::error_of("ending an earlier worker's sessions", &e));
            }
        }
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = conn.value(
                &format!("SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID IN ({list})"),
                "waiting for ended sessions",
            )?;
            if left.as_deref() == Some("0") {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::engine("ending an earlier worker's sessions", "they are still there after 10 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn add_column(&self, table: &str, field: &arrow_schema::Field, column: &barge_core::TargetColumn) -> Result<()> {
        let sql =
            format!("ALTER TABLE {} ADD COLUMN {} {} NULL", quote(table), quote(field.name()), column.native_type);
        self.conn()?.exec(&sql, "adding a column")
    }
}

/// A key value as a MySQL literal.
fn key_literal(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => literal(s),
        serde_json::Value::Bool(b) => i32::from(*b).to_string(),
        other => other.to_string(),
    }
}

/// Deletes `keys` from `table` over `conn`; returns the rows deleted.
fn delete_keys_over(conn: &mut LocalConn, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
    let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let mut deleted = 0;
    for sql in barge_sql::delete_statements(&quote(table), &quoted, keys, |_, v| key_literal(v)) {
        conn.exec(&sql, "deleting rows by key")?;
        deleted += conn.conn.affected_rows();
    }
    Ok(deleted)
}

impl barge_core::KeyDeletes for MyTarget {
    fn delete_keys(&self, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
        delete_keys_over(&mut self.conn()?, table, columns, keys)
    }
}

const POSITIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS barge_sync (stream varchar(255) NOT NULL, \
     tbl varchar(255) NOT NULL, position bigint unsigned NOT NULL, \
     updated timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (stream, tbl)) ENGINE = InnoDB";

fn record_sql(stream: &str, table: &str, position: u64) -> String {
    format!(
        "INSERT INTO barge_sync (stream, tbl, position) VALUES ({}, {}, {position}) ON DUPLICATE KEY UPDATE \
         position = VALUES(position), updated = CURRENT_TIMESTAMP(6)",
        literal(stream),
        literal(table)
    )
}

/// Whether the target has the `barge_sync` table (reading positions creates nothing).
fn positions_exist(conn: &mut LocalConn) -> Result<bool> {
    let exists = conn.value(
        "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'barge_sync'",
        "looking up barge_sync",
    )?;
    Ok(exists.as_deref() == Some("1"))
}

impl barge_core::ChangePositions for MyTarget {
    fn positions(&self, stream: &str) -> Result<Vec<(String, u64)>> {
        let mut conn = self.conn()?;
        if !positions_exist(&mut conn)? {
            return Ok(Vec::new());
        }
        let rows = conn.rows(
            &format!("SELECT tbl, position FROM barge_sync WHERE stream = {}", literal(stream)),
            "reading change positions",
        )?;
        rows.into_iter()
            .map(|row| {
                let text = |i: usize| row.get(i).map(crate::source::text).unwrap_or_default();
                let position = text(1)
                    .parse()
                    .map_err(|_| Error::engine("reading change positions", format!("`{}` is no position", text(1))))?;
                Ok((text(0), position))
            })
            .collect()
    }

    fn record(&self, stream: &str, table: &str, position: u64) -> Result<()> {
        let mut conn = self.conn()?;
        conn.exec(POSITIONS_DDL, "creating barge_sync")?;
        conn.exec(&record_sql(stream, table, position), "recording a change position")
    }

    fn forget(&self, stream: &str) -> Result<()> {
        let mut conn = self.conn()?;
        conn.exec(POSITIONS_DDL, "creating barge_sync")?;
        conn.exec(
            &format!("DELETE FROM barge_sync WHERE stream = {}", literal(stream)),
            "forgetting change positions",
        )?;
        // The last stream gone, so is the table barge made for them.
        if conn.value("SELECT count(*) FROM barge_sync", "forgetting change positions")?.as_deref() == Some("0") {
            conn.exec("DROP TABLE IF EXISTS barge_sync", "dropping barge_sync")?;
        }
        Ok(())
    }

    fn streams(&self) -> Result<Vec<String>> {
        let mut conn = self.conn()?;
        if !positions_exist(&mut conn)? {
            return Ok(Vec::new());
        }
        let rows = conn.rows("SELECT DISTINCT stream FROM barge_sync ORDER BY stream", "listing change streams")?;
        Ok(rows.iter().map(|row| row.first().map(crate::source::text).unwrap_or_default()).collect())
    }
}

/// The server's `read_only`: it stops the writes of every user without SUPER (MariaDB: READ_ONLY
/// ADMIN), on every database of the server; barge's user needs that privilege to write through it
/// (the reverse sync of a migration).
impl barge_core::SqlScripts for MyTarget {
    /// MySQL commits each DDL statement on its own: a transaction holds only the data statements
    /// between them, so a failing script leaves the DDL before it in place.
    fn run_scripts(&self, scripts: &[&str]) -> Result<()> {
        let mut conn = self.conn()?;
        conn.exec("START TRANSACTION", "starting a transaction")?;
        for script in scripts {
            if let Err(e) = conn.rt.block_on(mysql_async::prelude::Queryable::query_drop(&mut conn.conn, *script)) {
                let _ = conn.exec("ROLLBACK", "rolling back");
                return Err(crate::conn::error_of(barge_core::script_label(script), &e));
            }
        }
        conn.exec("COMMIT", "committing the scripts")
    }

    fn query_text(&self, query: &str) -> Result<Vec<Vec<Option<String>>>> {
        let rows = self.conn()?.rows(query, "reading a query's rows")?;
        Ok(rows
            .into_iter()
            .map(|row| row.into_iter().map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned())).collect())
            .collect())
    }
}

impl barge_core::WriteFreeze for MyTarget {
    fn freeze_method(&self) -> String {
        "SET GLOBAL read_only = ON (the whole server; users with SUPER or READ_ONLY ADMIN, as barge's must be, \
         still write)"
            .into()
    }

    fn freeze(&self) -> Result<String> {
        // Waits for transactions in flight to commit; then writes of other users fail (1290).
        self.conn()?.exec("SET GLOBAL read_only = ON", "freezing writes (SET GLOBAL read_only = ON)")?;
        Ok(String::new())
    }

    fn unfreeze(&self, _token: &str) -> Result<()> {
        self.conn()?.exec("SET GLOBAL read_only = OFF", "unfreezing writes (SET GLOBAL read_only = OFF)")
    }

    fn frozen(&self) -> Result<bool> {
        Ok(self.conn()?.value("SELECT @@GLOBAL.read_only", "reading read_only")?.as_deref() == Some("1"))
    }

    fn freeze_tables(&self, tables: &[String]) -> Result<()> {
        // Row triggers refuse the writes of sessions other than barge's (which set
        // @barge_writer). Creating one waits for the metadata lock every transaction that used
        // the table holds until it ends, and new writers wait behind it: once they exist, no
        // earlier write is in flight and no later one gets through.
        let mut conn = self.conn()?;
        conn.exec(&format!("SET SESSION lock_wait_timeout = {FREEZE_LOCK_WAIT}"), "setting lock_wait_timeout")?;
        let frozen = self.frozen_tables()?;
        for table in tables.iter().filter(|t| !frozen.contains(t)) {
            for (event, letter) in [("INSERT", 'i'), ("UPDATE", 'u'), ("DELETE", 'd')] {
                let sql = format!(
                    "CREATE TRIGGER {} BEFORE {event} ON {} FOR EACH ROW IF @barge_writer IS NULL THEN \
                     SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {}; END IF",
                    quote(&frozen_trigger(letter, table)),
                    quote(table),
                    literal(&format!("table {table} is frozen by barge migrate (its wave is switching)"))
                );
                conn.exec(&sql, "freezing writes to a wave's table (CREATE TRIGGER)")?;
            }
        }
        Ok(())
    }

    fn unfreeze_tables(&self, tables: &[String]) -> Result<()> {
        let mut conn = self.conn()?;
        for (name, table) in frozen_triggers(&mut conn)? {
            if tables.contains(&table) {
                conn.exec(&format!("DROP TRIGGER IF EXISTS {}", quote(&name)), "unfreezing a table (DROP TRIGGER)")?;
            }
        }
        Ok(())
    }

    fn frozen_tables(&self) -> Result<Vec<String>> {
        let mut tables: Vec<String> = frozen_triggers(&mut self.conn()?)?.into_iter().map(|(_, t)| t).collect();
        tables.sort();
        tables.dedup();
        Ok(tables)
    }
}

/// How long freezing a table waits for the transactions that used it (seconds).
const FREEZE_LOCK_WAIT: u32 = 20;

/// The name of the trigger freezing `table`'s writes of kind `letter` (i, u, d): at most 64
/// characters, a long table name shortened with a hash of it.
fn frozen_trigger(letter: char, table: &str) -> String {
    let name = format!("barge_frozen_{letter}_{table}");
    if name.len() <= 64 {
        return name;
    }
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let head: String = table.chars().take(30).collect();
    format!("barge_frozen_{letter}_{head}_{hash:016x}")
}

/// barge's freezing triggers in the database: (trigger, table).
fn frozen_triggers(conn: &mut LocalConn) -> Result<Vec<(String, String)>> {
    let rows = conn.rows(
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS
         WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE 'barge\\_frozen\\_%'",
        "listing frozen tables",
    )?;
    let text = |v: &Option<Vec<u8>>| v.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    Ok(rows.iter().map(|r| (text(&r[0]), text(&r[1]))).collect())
}

impl barge_core::SchemaObjects for MyTarget {
    fn finish_table(&self, table: &str, source: &TableInfo) -> Result<()> {
        let mut conn = self.conn()?;
        let types = describe(&mut conn, table)?;
        let column_type = |c: &str| types.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone()).unwrap_or_default();
        // Indexes an interrupted run already built are kept (a resumed run finishes the table again).
        let existing: Vec<String> = conn
            .rows(
                &format!(
                    "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {}",
                    literal(table)
                ),
                "listing indexes",
            )?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten().map(|n| String::from_utf8_lossy(&n).into_owned()))
            .collect();
        for index in source.indexes.iter().filter(|i| !existing.contains(&i.name)) {
            // Unbounded TEXT/BLOB columns can only be indexed by a prefix.
            let columns: Vec<String> = index
                .columns
                .iter()
                .map(|c| {
                    let t = column_type(c);
                    if t.ends_with("text") || t.ends_with("blob") { format!("{}(255)", quote(c)) } else { quote(c) }
                })
                .collect();
            conn.exec(
                &format!(
                    "CREATE {}INDEX {} ON {} ({})",
                    if index.unique { "UNIQUE " } else { "" },
                    quote(&index.name),
                    quote(table),
                    columns.join(", ")
                ),
                "creating an index",
            )?;
        }
        for field in source.schema.fields() {
            let t = column_type(field.name());
            let integer = t.contains("int");
            if field.metadata().contains_key(META_IDENTITY)
                && integer
                && source.key_columns().contains(&field.name().as_str())
            {
                // AUTO_INCREMENT continues after the largest value already in the column.
                conn.exec(
                    &format!("ALTER TABLE {} MODIFY {} {t} NOT NULL AUTO_INCREMENT", quote(table), quote(field.name())),
                    "continuing an identity",
                )?;
            }
        }
        Ok(())
    }

    fn add_foreign_keys(&self, table: &str, foreign_keys: &[ForeignKeyInfo]) -> Result<()> {
        let mut conn = self.conn()?;
        for fk in foreign_keys {
            conn.exec(
                &barge_sql::add_foreign_key(&quote(table), &quote(&fk.ref_table), fk, quote),
                "adding a foreign key",
            )?;
        }
        Ok(())
    }
}

struct LoadDataEncoder {
    table: String,
    names: Vec<String>,
}

impl BatchEncoder for LoadDataEncoder {
    fn encode(&self, batch: RecordBatch) -> Result<Encoded> {
        let rows = batch.num_rows();
        let bytes = encode_batch(&batch).map_err(|(column, reason)| Error::BadValue {
            table: self.table.clone(),
            column: self.names.get(column).cloned().unwrap_or_default(),
            key: None,
            reason,
        })?;
        Ok(Encoded::Bytes { rows, bytes: bytes.into() })
    }
}

/// The statements deleting rows whole: a staging table's, its loads, the delete, emptying it.
struct Gone {
    create: String,
    load: String,
    insert: String,
    delete: String,
    empty: String,
}

struct MyWriter {
    conn: LocalConn,
    table: String,
    gone: Gone,
    /// Conflict modes: the statements merging the staging table into the table, then emptying it.
    merge: Option<(String, String)>,
    /// Each write inside a savepoint, so a refused batch leaves nothing behind.
    isolate: bool,
    load: String,
    insert: String,
    /// Binary target columns: the INSERT fallback sends them as hex literals.
    binary: Vec<bool>,
    /// BIT target columns: the INSERT fallback sends them as `b'…'` literals.
    bits: Vec<bool>,
    use_infile: bool,
    infile_refused: Arc<AtomicBool>,
    in_transaction: bool,
    /// At most this many bytes per INSERT statement (see [`INSERT_BYTES`]).
    insert_bytes: usize,
}

impl MyWriter {
    fn load_data(&mut self, data: Bytes, load: &str) -> std::result::Result<u64, mysql_async::Error> {
        let LocalConn { conn, rt } = &mut self.conn;
        // In pieces of at most half a packet: the client sends each piece as a packet, and a
        // payload of wide rows (a sync batch of large values) may pass `max_allowed_packet`; the
        // server joins the pieces, wherever they cut the rows.
        let piece = self.insert_bytes;
        let pieces: Vec<std::io::Result<Bytes>> =
            (0..data.len()).step_by(piece).map(|start| Ok(data.slice(start..data.len().min(start + piece)))).collect();
        conn.set_infile_handler(
            async move { Ok(Box::pin(futures_util::stream::iter(pieces)) as mysql_async::InfileData) },
        );
        rt.block_on(conn.query_drop(load))?;
        Ok(conn.affected_rows())
    }

    fn insert_rows(&mut self, bytes: &[u8], insert: &str) -> std::result::Result<u64, mysql_async::Error> {
        let rows = decode_lines(bytes);
        let mut written = 0;
        let mut start = 0;
        while start < rows.len() {
            // As many rows as fit: ROWS_PER_INSERT, and `insert_bytes` (one row at least).
            let mut end = start;
            let mut size = 0;
            while end < rows.len() && end - start < ROWS_PER_INSERT {
                let row_bytes: usize = rows[end].iter().map(|f| f.as_ref().map_or(4, |b| b.len() * 2 + 3)).sum();
                if end > start && size + row_bytes > self.insert_bytes {
                    break;
                }
                size += row_bytes;
                end += 1;
            }
            let chunk = &rows[start..end];
            start = end;
            let values: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let fields: Vec<String> = row
                        .iter()
                        .zip(self.binary.iter().zip(&self.bits))
                        .map(|(field, (&binary, &bit))| match field {
                            None => "NULL".into(),
                            Some(b) if binary => {
                                format!("X'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
                            }
                            Some(b) if bit && b.iter().all(|d| matches!(d, b'0' | b'1')) => {
                                format!("b'{}'", String::from_utf8_lossy(b))
                            }
                            Some(b) => literal(&String::from_utf8_lossy(b)),
                        })
                        .collect();
                    format!("({})", fields.join(", "))
                })
                .collect();
            let sql = format!("{insert}{}", values.join(", "));
            let LocalConn { conn, rt } = &mut self.conn;
            rt.block_on(conn.query_drop(sql))?;
            written += conn.affected_rows();
        }
        Ok(written)
    }

    /// A server error as barge reports it: the rows' fault ([`Error::RowRejected`]) when isolating.
    fn failure(&self, e: mysql_async::Error) -> Error {
        match &e {
            mysql_async::Error::Server(server) if self.isolate && ROW_ERRORS.contains(&server.code) => {
                Error::RowRejected { reason: server.message.clone() }
            }
            _ => crate::conn::error_of(format!("loading `{}`", self.table), &e),
        }
    }

    /// LOAD DATA LOCAL turns data errors into warnings (values truncated, rows violating a CHECK or
    /// a unique key skipped) whatever the sql_mode: any warning fails the batch.
    fn check_warnings(&mut self) -> Result<()> {
        if self.conn.conn.get_warnings() == 0 {
            return Ok(());
        }
        let warnings = self.conn.rows("SHOW WARNINGS", "reading warnings")?;
        let messages: Vec<String> = warnings
            .iter()
            .filter(|w| matches!(w.first(), Some(Some(level)) if level.as_slice() != b"Note"))
            .map(|w| String::from_utf8_lossy(w.get(2).cloned().flatten().as_deref().unwrap_or_default()).into_owned())
            .collect();
        if messages.is_empty() {
            return Ok(());
        }
        let reason = messages.join("; ");
        Err(if self.isolate {
            Error::RowRejected { reason }
        } else {
            Error::engine(format!("loading `{}`", self.table), reason)
        })
    }

    /// Loads one payload into the table (or the staging table, then merges it).
    fn load(&mut self, rows: usize, bytes: Bytes) -> Result<u64> {
        let (load, insert) = (self.load.clone(), self.insert.clone());
        let written = self.load_with(rows, bytes, &load, &insert)?;
        if let Some((merge, empty)) = self.merge.clone() {
            let LocalConn { conn, rt } = &mut self.conn;
            let merged = rt.block_on(conn.query_drop(&merge));
            merged.map_err(|e| self.failure(e))?;
            self.check_warnings()?;
            self.conn.exec(&empty, "emptying the staging table")?;
        }
        Ok(written)
    }

    /// Loads one payload with `load` (LOAD DATA), or `insert` where the server refuses it.
    fn load_with(&mut self, rows: usize, bytes: Bytes, load: &str, insert: &str) -> Result<u64> {
        let written = if self.use_infile && !self.infile_refused.load(Ordering::Relaxed) {
            match self.load_data(bytes.clone(), load) {
                Ok(n) => n,
                Err(mysql_async::Error::Server(e)) if LOCAL_INFILE_REFUSED.contains(&e.code) => {
                    if !self.infile_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the server refuses LOAD DATA LOCAL INFILE ({}); loading with INSERTs",
                            e.message
                        );
                    }
                    self.insert_rows(&bytes, insert).map_err(|e| self.failure(e))?
                }
                Err(e) => return Err(self.failure(e)),
            }
        } else {
            self.insert_rows(&bytes, insert).map_err(|e| self.failure(e))?
        };
        self.check_warnings()?;
        if written != rows as u64 {
            let reason = format!("the server stored {written} of {rows} rows");
            return Err(if self.isolate {
                Error::RowRejected { reason }
            } else {
                Error::engine(format!("loading `{}`", self.table), reason)
            });
        }
        Ok(written)
    }
}

impl TableWriter for MyWriter {
    fn write(&mut self, batch: Encoded) -> Result<u64> {
        let Encoded::Bytes { rows, bytes } = batch else {
            return Err(Error::Config("the MySQL writer takes LOAD DATA payloads".into()));
        };
        if !self.in_transaction {
            self.conn.exec("START TRANSACTION", "starting a transaction")?;
            self.in_transaction = true;
        }
        if self.isolate {
            self.conn.exec("SAVEPOINT barge_batch", "setting a savepoint")?;
        }
        let loaded = self.load(rows, bytes);
        if self.isolate {
            let end =
                if loaded.is_ok() { "RELEASE SAVEPOINT barge_batch" } else { "ROLLBACK TO SAVEPOINT barge_batch" };
            self.conn.exec(end, "ending a savepoint")?;
        }
        loaded
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            self.conn.exec("COMMIT", "committing")?;
            self.in_transaction = false;
        }
        Ok(())
    }

    fn session_id(&mut self) -> Result<Option<String>> {
        Ok(Some(self.conn.conn.id().to_string()))
    }

    fn range_clearer(&mut self) -> Option<&mut dyn barge_core::RangeClearer> {
        Some(self)
    }

    fn change_writer(&mut self) -> Option<&mut dyn barge_core::ChangeWriter> {
        Some(self)
    }
}

impl MyWriter {
    fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.conn.exec("START TRANSACTION", "starting a transaction")?;
            self.in_transaction = true;
        }
        Ok(())
    }
}

impl barge_core::ChangeWriter for MyWriter {
    fn truncate(&mut self) -> Result<()> {
        // DELETE, as TRUNCATE would commit the transaction.
        self.begin()?;
        self.conn.exec(&format!("DELETE FROM {}", quote(&self.table)), "applying a TRUNCATE")
    }

    fn delete_keys(&mut self, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
        self.begin()?;
        delete_keys_over(&mut self.conn, &self.table, columns, keys)
    }

    fn delete_rows(&mut self, rows: Encoded) -> Result<u64> {
        let Encoded::Bytes { rows, bytes } = rows else {
            return Err(Error::Config("the MySQL writer takes LOAD DATA payloads".into()));
        };
        self.begin()?;
        let Gone { create, load, insert, delete, empty } = &self.gone;
        let (create, load, insert, delete, empty) =
            (create.clone(), load.clone(), insert.clone(), delete.clone(), empty.clone());
        self.conn.exec(&create, "staging rows to delete")?;
        self.load_with(rows, bytes, &load, &insert)?;
        self.conn.exec(&delete, "deleting changed rows")?;
        let deleted = self.conn.conn.affected_rows();
        self.conn.exec(&empty, "emptying the staging table")?;
        Ok(deleted)
    }

    fn record_position(&mut self, stream: &str, table: &str, position: u64) -> Result<()> {
        self.begin()?;
        self.conn.exec(&record_sql(stream, table, position), "recording a change position")
    }
}

impl barge_core::RangeClearer for MyWriter {
    fn clear_range(&mut self, columns: &[String], range: &barge_core::KeyRange) -> Result<u64> {
        let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let predicate = barge_core::model::range_predicate(&quoted, range, "1", |_, v| crate::source::bound(v));
        if !self.in_transaction {
            self.conn.exec("START TRANSACTION", "starting a transaction")?;
            self.in_transaction = true;
        }
        self.conn.exec(&format!("DELETE FROM {} WHERE {predicate}", quote(&self.table)), "clearing a range")?;
        Ok(self.conn.conn.affected_rows())
    }
}

/// Labels as MySQL string literals, comma-separated.
fn literals(labels: &[String]) -> String {
    labels.iter().map(|l| literal(l)).collect::<Vec<_>>().join(",")
}

/// MySQL's spelling of a portable default function for a column of type `native`, where the
/// column can have it (`CURRENT_TIMESTAMP` only on datetime and timestamp columns, at their
/// fractional precision).
fn mysql_default(token: &str, native: &str) -> Option<String> {
    use barge_core::types::{DEFAULT_NOW, DEFAULT_TODAY, DEFAULT_UUID};
    let native = native.to_ascii_lowercase();
    let precision = native.split_once('(').map(|(_, p)| format!("({}", p.split_once(')').map_or(p, |(p, _)| p)));
    match token {
        DEFAULT_NOW if native.starts_with("datetime") || native.starts_with("timestamp") => {
            Some(format!("CURRENT_TIMESTAMP{}", precision.map(|p| format!("{p})")).unwrap_or_default()))
        }
        DEFAULT_TODAY if native == "date" => Some("(curdate())".into()),
        DEFAULT_UUID if native.contains("char") || native.contains("text") => Some("(uuid())".into()),
        _ => None,
    }
}

impl barge_core::SchemaRestore for MyTarget {
    fn check_restore(&self, dump: &dyn barge_core::DumpedSchema) -> Result<std::result::Result<(), String>> {
        dump.downcast::<crate::dump::MyDump>().map(|_| Ok(()))
    }

    fn restore(&self, dump: &dyn barge_core::DumpedSchema, step: barge_core::RestoreStep<'_>) -> Result<()> {
        dump.downcast::<crate::dump::MyDump>()?.restore(&mut self.conn()?, step)
    }
}
