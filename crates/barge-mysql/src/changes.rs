//! Change capture from MySQL and MariaDB: the row-based binlog, read from a position (file and
//! offset) with mysql_async's binlog stream in non-blocking mode, so that a read ends at the
//! binlog's end.
//!
//! ```text
//!  position: (binlog file number << 32) | offset, just after a transaction's XID (or COMMIT)
//!  read_changes: COM_BINLOG_DUMP from `after` → TABLE_MAP, WRITE/UPDATE/DELETE_ROWS (keys),
//!                XID/COMMIT (position), QUERY (TRUNCATE → truncate, other DDL on a table → Ddl)
//!  read_keys:    the changed keys' rows and the keys gone, in one consistent-snapshot transaction
//! ```
//!
//! Nothing is kept on the server for the stream: the binlog is kept by the server's own expiry
//! (`binlog_expire_logs_seconds`), so a stream stopped for longer than that cannot continue.
//! MariaDB's GTID events come to a replica that announces no GTID capability as `BEGIN`
//! statements, which is what this reader sees.

use std::collections::HashMap;

use barge_core::{Change, ChangeBatch, ChangeKind, Error, KeyRows, Result, TableInfo};
use futures_util::StreamExt;
use mysql_async::Value;
use mysql_async::binlog::events::EventData;

use crate::conn::{LocalConn, connect, literal, my_err, quote};
use crate::source::{MySource, kinds, select_list};

/// Positions: a binlog file's number in the high 32 bits, the offset in it in the low.
fn position(file: u64, offset: u64) -> u64 {
    (file << 32) | (offset & 0xFFFF_FFFF)
}

/// The number a binlog file's name ends with (`binlog.000012` → 12): digits only after the
/// last dot, else an error (never a number read from what follows the name).
fn file_number(name: &str) -> Result<u64> {
    name.rsplit_once('.')
        .filter(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| Error::engine("reading the binlog position", format!("`{name}` is no binlog file name")))
}

/// What a query event is to the reader, by its statement and whether a transaction is open.
#[derive(Debug, PartialEq, Eq)]
enum Statement {
    /// `BEGIN` (MariaDB's GTID event, as a replica without GTID capability sees it).
    Begin,
    /// `COMMIT`: the open transaction's end (non-transactional tables log no XID).
    Commit,
    /// `ROLLBACK`: the open transaction ends. The server logs one after changes to tables
    /// that cannot roll back (MyISAM), which stay: its keys are read back like a commit's (a key
    /// read back that did not change is harmless).
    Rollback,
    /// A statement inside the open transaction (`SAVEPOINT`, …), or an event the server
    /// replaced with a comment for this replica (`# Dummy event replacing …`, an Annotate_rows).
    Inside,
    /// A statement outside any transaction (DDL): it commits by itself.
    Standalone,
}

fn statement_kind(statement: &str, in_transaction: bool) -> Statement {
    let upper = statement.trim().to_ascii_uppercase();
    if upper.starts_with('#') || upper.is_empty() {
        Statement::Inside
    } else if upper == "BEGIN" {
        Statement::Begin
    } else if upper == "COMMIT" {
        Statement::Commit
    } else if upper == "ROLLBACK" {
        Statement::Rollback
    } else if in_transaction {
        Statement::Inside
    } else {
        Statement::Standalone
    }
}

fn text_of(row: &[Option<Vec<u8>>], i: usize) -> String {
    row.get(i).cloned().flatten().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

impl MySource {
    /// `SHOW BINLOG STATUS` (MariaDB 10.5.2+) or `SHOW MASTER STATUS`: the file and offset.
    fn binlog_status(&self, conn: &mut LocalConn) -> Result<Option<(String, u64)>> {
        let rows = match conn.rows("SHOW BINLOG STATUS", "reading the binlog position") {
            Ok(rows) => rows,
            Err(_) => conn.rows("SHOW MASTER STATUS", "reading the binlog position")?,
        };
        Ok(rows.first().map(|row| (text_of(row, 0), text_of(row, 1).parse().unwrap_or(4))))
    }

    /// The binlog files the server keeps, by number.
    fn binlog_files(&self, conn: &mut LocalConn) -> Result<HashMap<u64, String>> {
        let rows = conn.rows("SHOW BINARY LOGS", "listing the binlog files")?;
        rows.iter().map(|row| text_of(row, 0)).map(|name| Ok((file_number(&name)?, name))).collect()
    }

    /// Ordinal positions (from 0) of each table's key columns, in key order, as binlog rows
    /// hold every column in the table's order.
    fn key_ordinals(&self, conn: &mut LocalConn, tables: &[TableInfo]) -> Result<HashMap<String, Vec<usize>>> {
        let mut out = HashMap::new();
        for table in tables {
            let rows = conn.rows(
                &format!(
                    "SELECT COLUMN_NAME, ORDINAL_POSITION FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {}",
                    literal(&table.name)
                ),
                "listing a table's columns",
            )?;
            let ordinal: HashMap<String, usize> = rows
                .iter()
                .map(|row| (text_of(row, 0), text_of(row, 1).parse::<usize>().unwrap_or(1).saturating_sub(1)))
                .collect();
            let key = table
                .key_columns()
                .iter()
                .map(|k| {
                    ordinal.get(*k).copied().ok_or_else(|| {
                        Error::engine("reading changes", format!("key column `{k}` of `{}` is gone", table.name))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.insert(table.name.clone(), key);
        }
        Ok(out)
    }
}

/// A key value from a binlog row as text in MySQL's own form, read as the column's type
/// (`native`: unsigned integers come signed from the binlog).
fn key_text(value: Option<&mysql_async::binlog::value::BinlogValue<'_>>, native: &str) -> Result<Option<String>> {
    use mysql_async::binlog::value::BinlogValue;
    let Some(BinlogValue::Value(value)) = value else {
        return match value {
            None => Ok(None),
            Some(_) => Err(Error::engine("reading changes", "a JSON key column")),
        };
    };
    let native = native.to_ascii_lowercase();
    Ok(match value {
        Value::NULL => None,
        Value::Int(i) if *i < 0 && native.contains("unsigned") => {
            let bits = if native.starts_with("tinyint") {
                8
            } else if native.starts_with("smallint") {
                16
            } else if native.starts_with("mediumint") {
                24
            } else if native.starts_with("bigint") {
                64
            } else {
                32
            };
            Some(if bits == 64 { (*i as u64).to_string() } else { (*i + (1i64 << bits)).to_string() })
        }
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Date(y, m, d, h, mi, s, us) => Some(format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")),
        Value::Time(negative, days, h, mi, s, us) => Some(format!(
            "{}{}:{mi:02}:{s:02}.{us:06}",
            if *negative { "-" } else { "" },
            u64::from(*days) * 24 + u64::from(*h)
        )),
    })
}

/// The table a DDL statement acts on, when it is one of `tables` (names compared without quotes
/// and without a database before them), and whether it is a TRUNCATE.
fn ddl_target<'t>(statement: &str, tables: &'t [TableInfo]) -> Option<(&'t str, bool)> {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .map(|w| w.rsplit('.').next().unwrap_or(w).trim_matches('`').to_string())
        .collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let skip = ["table", "tables", "online", "ignore", "temporary", "if", "exists", "not", "offline"];
    // The words that name tables: after the leading keywords (every one for DROP and RENAME,
    // which take lists), or after ON for CREATE/DROP INDEX.
    let names: Vec<&String> = match lower.first().map(String::as_str)? {
        "truncate" | "alter" | "optimize" | "repair" | "analyze" => words
            .iter()
            .zip(&lower)
            .skip(1)
            .find(|(_, l)| !skip.contains(&l.as_str()))
            .map(|(w, _)| w)
            .into_iter()
            .collect(),
        "drop" | "create" if lower.get(1).is_some_and(|w| w == "index" || w == "unique" || w == "fulltext") => {
            lower.iter().position(|w| w == "on").and_then(|i| words.get(i + 1)).into_iter().collect()
        }
        "drop" | "rename" => words
            .iter()
            .zip(&lower)
            .skip(1)
            .filter(|(_, l)| !skip.contains(&l.as_str()) && *l != "to" && *l != "restrict" && *l != "cascade")
            .map(|(w, _)| w)
            .collect(),
        _ => return None,
    };
    let table = tables.iter().find(|t| names.iter().any(|n| **n == t.name))?;
    Some((table.name.as_str(), lower[0] == "truncate"))
}

impl barge_core::ChangeFeed for MySource {
    fn check(&self, tables: &[TableInfo]) -> Result<()> {
        let display = self.url.display.clone();
        let mut conn = connect(&self.url)?;
        let rows = conn.rows(
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id",
            "checking the source's binlog settings",
        )?;
        let row = rows.first().cloned().unwrap_or_default();
        let (log_bin, format, image, server_id) =
            (text_of(&row, 0), text_of(&row, 1), text_of(&row, 2), text_of(&row, 3));
        let fix = |what: &str| Err(Error::Config(format!("source {display}: change capture needs {what}")));
        if log_bin != "1" {
            return fix("a binary log (log_bin is off): start the server with --log-bin and restart it");
        }
        if !format.eq_ignore_ascii_case("ROW") {
            return fix(&format!(
                "binlog_format = ROW (it is {format}): SET GLOBAL binlog_format = 'ROW', and set it in the server's \
                 configuration"
            ));
        }
        if !image.eq_ignore_ascii_case("FULL") {
            return fix(&format!(
                "binlog_row_image = FULL (it is {image}): SET GLOBAL binlog_row_image = 'FULL', and set it in the \
                 server's configuration"
            ));
        }
        if server_id == "0" {
            return fix("a server_id other than 0: set server_id in the server's configuration and restart it");
        }
        if self.binlog_status(&mut conn).is_err() || self.binlog_files(&mut conn).is_err() {
            return fix(
                "the privileges to read the binlog: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the user \
                 (MariaDB: REPLICATION REPLICA, BINLOG MONITOR)",
            );
        }
        barge_core::keyed_for_sync(tables)?;
        for table in tables {
            for column in table.key_columns() {
                let native = table
                    .schema
                    .field_with_name(column)
                    .ok()
                    .and_then(|f| f.metadata().get(barge_core::META_NATIVE_TYPE).cloned())
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if native.contains("binary") || native.contains("blob") || native.contains("bit") {
                    return Err(Error::Config(format!(
                        "source table `{}`: sync does not take a {native} key column (`{column}`) yet: leave the \
                         table out with --exclude",
                        table.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn open_stream(&self, _name: &str, _tables: &[TableInfo]) -> Result<u64> {
        self.current_position()
    }

    fn current_position(&self) -> Result<u64> {
        let mut conn = connect(&self.url)?;
        let (file, offset) = self
            .binlog_status(&mut conn)?
            .ok_or_else(|| Error::Config(format!("source {}: the server writes no binlog", self.url.display)))?;
        Ok(position(file_number(&file)?, offset))
    }

    fn read_changes(
        &self,
        name: &str,
        tables: &[TableInfo],
        after: u64,
        upto: Option<u64>,
        max: usize,
    ) -> Result<ChangeBatch> {
        let mut conn = connect(&self.url)?;
        let files = self.binlog_files(&mut conn)?;
        let keys = self.key_ordinals(&mut conn, tables)?;
        let (start_file, start_offset) = (after >> 32, after & 0xFFFF_FFFF);
        let file_name = files.get(&start_file).cloned().ok_or_else(|| {
            Error::Config(format!(
                "source {}: binlog file number {start_file}, where stream `{name}` stopped, is no longer on the \
                 server (binlog expiry removed it): copy the tables again (`barge sync --drop`, then sync)",
                self.url.display
            ))
        })?;
        let natives: HashMap<&str, Vec<String>> = tables
            .iter()
            .map(|t| {
                let natives = t
                    .key_columns()
                    .iter()
                    .map(|k| {
                        t.schema
                            .field_with_name(k)
                            .ok()
                            .and_then(|f| f.metadata().get(barge_core::META_NATIVE_TYPE).cloned())
                            .unwrap_or_default()
                    })
                    .collect();
                (t.name.as_str(), natives)
            })
            .collect();
        let database = self.url.database.clone();
        // A server id of its own for the dump (a second replica with the same id would end the
        // first's connection): one per dump, as several streams read at once (the waves of a
        // migration).
        static DUMPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dump = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xFFF;
        let server_id = 0x4000_0000 | ((std::process::id() & 0xFFFF) << 12) | dump;
        let LocalConn { conn, rt } = conn;
        let mut batch = ChangeBatch::default();
        rt.block_on(async {
            let request = mysql_async::BinlogStreamRequest::new(server_id)
                .with_filename(file_name.as_bytes())
                .with_pos(start_offset.max(4))
                .with_non_blocking();
            let mut stream = conn.get_binlog_stream(request).await.map_err(my_err("reading the binlog"))?;
            let mut file = start_file;
            let mut pending: Vec<(String, ChangeKind)> = Vec::new();
            let mut read = 0usize;
            // The server opens a dump with a made-up Rotate event naming the file asked for; it
            // comes before the format description, so its name still ends with the event's
            // checksum, which may begin with a digit (`binlog.000001` + `2…`). The file is known:
            // only rotations after a format description move it.
            let mut described = false;
            let mut in_transaction = false;
            // The end of the last event read outside a transaction, and whether the read went
            // to the binlog's end (not cut short by `max` or `upto`).
            let mut boundary = None;
            let mut to_the_end = true;
            while let Some(event) = stream.next().await {
                let event = event.map_err(my_err("reading the binlog"))?;
                let offset = u64::from(event.header().log_pos());
                let committed_at = f64::from(event.header().timestamp());
                let at = position(file, offset);
                let data = event.read_data().map_err(|e| Error::engine("decoding a binlog event", e))?;
                let commit = match data {
                    Some(EventData::FormatDescriptionEvent(_)) => {
                        described = true;
                        false
                    }
                    Some(EventData::RotateEvent(rotate)) => {
                        if described {
                            file = file_number(&rotate.name())?;
                            boundary = None;
                        }
                        false
                    }
                    Some(EventData::XidEvent(_)) => {
                        in_transaction = false;
                        true
                    }
                    Some(EventData::QueryEvent(query)) => {
                        let statement = query.query().trim().to_string();
                        match statement_kind(&statement, in_transaction) {
                            Statement::Begin => {
                                pending.clear();
                                in_transaction = true;
                                false
                            }
                            Statement::Commit | Statement::Rollback => {
                                in_transaction = false;
                                true
                            }
                            Statement::Inside => false,
                            Statement::Standalone => {
                                // DDL commits by itself: a transaction of its own.
                                let ours =
                                    query.schema() == database.as_str() || statement.contains(&format!("{database}."));
                                match ddl_target(&statement, tables).filter(|_| ours) {
                                    Some((table, true)) => pending.push((table.into(), ChangeKind::Truncate)),
                                    Some((table, false)) => pending.push((table.into(), ChangeKind::Ddl(statement))),
                                    None => {}
                                }
                                true
                            }
                        }
                    }
                    Some(EventData::RowsEvent(rows)) => {
                        let Some(tme) = stream.get_tme(rows.table_id()) else { continue };
                        let table = tme.table_name().into_owned();
                        if tme.database_name() != database.as_str() {
                            continue;
                        }
                        let (Some(key), Some(native)) = (keys.get(&table), natives.get(table.as_str())) else {
                            continue;
                        };
                        for row in rows.rows(tme) {
                            let (before, after) = row.map_err(|e| Error::engine("decoding binlog rows", e))?;
                            for image in [before, after].into_iter().flatten() {
                                let values = key
                                    .iter()
                                    .zip(native)
                                    .map(|(&i, native)| key_text(image.as_ref(i), native))
                                    .collect::<Result<Vec<_>>>()?;
                                pending.push((table.clone(), ChangeKind::Row(values)));
                            }
                        }
                        false
                    }
                    _ => false,
                };
                if !in_transaction && offset != 0 {
                    boundary = Some(position(file, offset));
                }
                if !commit || offset == 0 {
                    continue;
                }
                if upto.is_some_and(|upto| at > upto) {
                    to_the_end = false;
                    break;
                }
                read += pending.len();
                batch.changes.extend(pending.drain(..).map(|(table, kind)| Change { table, position: at, kind }));
                batch.end = Some(at);
                batch.committed_at = Some(committed_at);
                batch.transactions += 1;
                if read >= max {
                    to_the_end = false;
                    break;
                }
            }
            if to_the_end && !in_transaction {
                batch.scanned = boundary.filter(|&b| b >= after);
            }
            // The dump connection is dropped, not reused.
            drop(stream);
            Ok::<(), Error>(())
        })?;
        Ok(batch)
    }

    fn confirm(&self, _name: &str, _position: u64) -> Result<()> {
        Ok(())
    }

    fn retained_bytes(&self, _name: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    fn drop_stream(&self, _name: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    fn describe_position(&self, position: u64) -> String {
        format!("binlog file {}, offset {}", position >> 32, position & 0xFFFF_FFFF)
    }

    fn read_keys(&self, table: &TableInfo, keys: &[Vec<Option<String>>]) -> Result<KeyRows> {
        let mut found = KeyRows::default();
        if keys.is_empty() {
            return Ok(found);
        }
        let key_columns = table.key_columns();
        let lit = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), literal);
        let filter = table.filter.as_ref().map(|f| format!(" AND ({f})")).unwrap_or_default();
        let lhs = format!("({})", key_columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "));
        let tuples: Vec<String> =
            keys.iter().map(|k| format!("({})", k.iter().map(lit).collect::<Vec<_>>().join(", "))).collect();
        let kinds_all = kinds(table)?;
        let rows_sql = format!(
            "SELECT {} FROM {} WHERE {lhs} IN ({}){filter}",
            select_list(table, &kinds_all),
            quote(&table.name),
            tuples.join(", ")
        );
        // The keys gone, as a derived table of literals read back in the key columns' types.
        let derived: Vec<String> = keys
            .iter()
            .map(|k| {
                let items: Vec<String> =
                    k.iter().enumerate().map(|(i, v)| format!("{} AS barge_k{i}", lit(v))).collect();
                format!("SELECT {}", items.join(", "))
            })
            .collect();
        let matches: Vec<String> =
            key_columns.iter().enumerate().map(|(i, c)| format!("t.{} = v.barge_k{i}", quote(c))).collect();
        let outputs: Vec<String> =
            key_columns.iter().enumerate().map(|(i, c)| format!("v.barge_k{i} AS {}", quote(c))).collect();
        let absent_sql = format!(
            "SELECT {} FROM ({}) AS v WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {}{filter})",
            outputs.join(", "),
            derived.join(" UNION ALL "),
            quote(&table.name),
            matches.join(" AND ")
        );
        let key_fields: Vec<arrow_schema::Field> =
            key_columns.iter().map(|c| table.schema.field_with_name(c).expect("key column").clone()).collect();
        let key_table =
            TableInfo { schema: std::sync::Arc::new(arrow_schema::Schema::new(key_fields)), ..table.clone() };
        let key_kinds = kinds(&key_table)?;
        let mut local = connect(&self.url)?;
        local.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", "reading changed rows")?;
        let size = barge_core::BatchSize::rows(8192);
        let rows = &mut found.rows;
        self.read_range_on(&mut local, table, size, &rows_sql, &kinds_all, &mut |b| {
            rows.push(b);
            Ok(())
        })?;
        // Every key found (the keys asked for are distinct): none is gone, no need to ask.
        let read: usize = found.rows.iter().map(arrow_array::RecordBatch::num_rows).sum();
        if read < keys.len() {
            let absent = &mut found.absent;
            self.read_range_on(&mut local, &key_table, size, &absent_sql, &key_kinds, &mut |b| {
                absent.push(b);
                Ok(())
            })?;
        }
        local.exec("COMMIT", "reading changed rows")?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_across_files() {
        assert!(position(2, 4) > position(1, 0xFFFF_FFF0));
        assert_eq!(file_number("binlog.000012").unwrap(), 12);
        assert!(file_number("binlog").is_err());
        // A name with checksum bytes after it is refused, never read as another file.
        assert!(file_number("binlog.0000012\u{d6}w\u{f3}").is_err());
    }

    #[test]
    fn only_begin_commit_and_statements_outside_a_transaction_delimit_one() {
        assert_eq!(statement_kind("BEGIN", false), Statement::Begin);
        assert_eq!(statement_kind("COMMIT", true), Statement::Commit);
        assert_eq!(statement_kind("ROLLBACK", true), Statement::Rollback);
        // MariaDB replaces an Annotate_rows event with a comment for a replica that did not
        // ask for them: inside its transaction, it commits nothing.
        assert_eq!(statement_kind("# Dummy event replacing event type 160", true), Statement::Inside);
        assert_eq!(statement_kind("# Dummy event replacing event type 160", false), Statement::Inside);
        assert_eq!(statement_kind("SAVEPOINT `a`", true), Statement::Inside);
        assert_eq!(statement_kind("ALTER TABLE t ADD c int", false), Statement::Standalone);
    }

    #[test]
    fn ddl_is_found_by_table_name() {
        let table = |name: &str| TableInfo {
            name: name.into(),
            schema: std::sync::Arc::new(arrow_schema::Schema::empty()),
            key: barge_core::KeySpec::None,
            estimated_rows: 0,
            indexes: vec![],
            foreign_keys: vec![],
            checks: vec![],
            sql_indexes: vec![],
            comment: None,
            filter: None,
            window: None,
        };
        let tables = [table("items"), table("pairs")];
        assert_eq!(ddl_target("TRUNCATE TABLE `items`", &tables), Some(("items", true)));
        assert_eq!(ddl_target("truncate db.items", &tables), Some(("items", true)));
        assert_eq!(ddl_target("ALTER TABLE pairs ADD COLUMN x int", &tables), Some(("pairs", false)));
        assert_eq!(ddl_target("ALTER TABLE other ADD COLUMN items int", &tables), None);
        assert_eq!(ddl_target("DROP TABLE IF EXISTS a, `db`.`pairs`", &tables), Some(("pairs", false)));
        assert_eq!(ddl_target("RENAME TABLE items TO old_items", &tables), Some(("items", false)));
        assert_eq!(ddl_target("CREATE INDEX i ON items (a)", &tables), Some(("items", false)));
        assert_eq!(ddl_target("INSERT INTO items VALUES (1)", &tables), None);
        assert_eq!(ddl_target("CREATE TABLE unrelated (a int)", &tables), None);
    }
}
