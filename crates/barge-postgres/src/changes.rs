//! Change capture from PostgreSQL: logical decoding with the built-in `pgoutput` plugin (protocol
//! 1, text values), read through the SQL interface, so that an ordinary connection does it.
//!
//! ```text
//!  open_stream: CREATE PUBLICATION barge_<stream> FOR TABLE …, then
//!               pg_create_logical_replication_slot('barge_<stream>', 'pgoutput')
//!  read_changes: pg_logical_slot_peek_binary_changes(slot, upto, n, proto_version 1, publication)
//!               → Begin, Relation, Insert/Update/Delete (keys), Truncate, Commit (end LSN)
//!  confirm:     pg_replication_slot_advance(slot, lsn) once the target committed up to lsn
//!  read_keys:   the rows of the changed keys, and the keys gone, in one REPEATABLE READ transaction
//! ```
//!
//! Peeking leaves the slot where it is: a change is freed only when the target has it, so a crash
//! anywhere in between reads it again. Positions are LSNs as integers.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use barge_core::{Change, ChangeBatch, ChangeKind, Error, KeyRows, Result, TableInfo};
use futures_util::StreamExt;

use crate::conn::{literal, pg_err, quote, runtime};
use crate::decode::{CopyParser, FeedError};
use crate::source::{PgSource, column_types, native_of, select_expr};

/// Slot and publication of stream `name`.
fn object_name(name: &str) -> String {
    format!("barge_{name}")
}

/// An LSN (`16/B374D848`) as an integer.
pub fn parse_lsn(text: &str) -> Result<u64> {
    let (high, low) =
        text.split_once('/').ok_or_else(|| Error::engine("reading a WAL position", format!("`{text}` is no LSN")))?;
    let part = |p: &str| {
        u64::from_str_radix(p, 16).map_err(|_| Error::engine("reading a WAL position", format!("`{text}` is no LSN")))
    };
    Ok((part(high)? << 32) | part(low)?)
}

/// An integer LSN as PostgreSQL writes it.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

impl PgSource {
    /// The table's replica identity covers the key sync applies its changes by: PostgreSQL logs
    /// a deleted (or re-keyed) row by its identity alone, and refuses UPDATE and DELETE on a
    /// published table that has none, so a table without one is refused before its publication
    /// exists.
    fn check_replica_identity(&self, table: &TableInfo) -> Result<()> {
        let qualified = self.qualified(&table.name);
        let (identity, columns): (String, Vec<String>) = self.with_client(|client| {
            let row = runtime()
                .block_on(client.query_one(
                    "SELECT c.relreplident::text,
                            coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                                        FROM pg_index i
                                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                                       WHERE i.indrelid = c.oid
                                         AND ((c.relreplident = 'd' AND i.indisprimary)
                                              OR (c.relreplident = 'i' AND i.indisreplident))), '{}')
                       FROM pg_class c WHERE c.oid = $1::text::regclass",
                    &[&qualified],
                ))
                .map_err(pg_err("reading a table's replica identity"))?;
            Ok((row.get(0), row.get(1)))
        })?;
        let key = table.key_columns();
        if identity == "f" || (!columns.is_empty() && key.iter().all(|k| columns.iter().any(|c| c == k))) {
            return Ok(());
        }
        if key.is_empty() {
            return Err(Error::Config(format!(
                "source {}: table `{}` has no primary key (nor a unique index over NOT NULL columns): sync applies \
                 changes by key; give it a primary key, or run `ALTER TABLE {qualified} REPLICA IDENTITY FULL` \
                 (PostgreSQL then logs whole rows, and sync matches rows by all their columns), or leave the \
                 table out with --exclude",
                self.url.display, table.name
            )));
        }
        let index = table
            .indexes
            .iter()
            .find(|i| i.unique && i.columns.iter().map(String::as_str).eq(key.iter().copied()))
            .map_or_else(|| "<a unique index over them>".to_string(), |i| quote(&i.name));
        let fix = format!("ALTER TABLE {qualified} REPLICA IDENTITY USING INDEX {index}");
        let key = key.join(", ");
        Err(Error::Config(if columns.is_empty() {
            format!(
                "source {}: table `{}` has no replica identity (no primary key{}): once it is published, \
                 PostgreSQL refuses its UPDATEs and DELETEs; give it a primary key, or run `{fix}` (key: {key})",
                self.url.display,
                table.name,
                if identity == "n" { ", REPLICA IDENTITY NOTHING" } else { "" }
            )
        } else {
            format!(
                "source {}: table `{}`: sync applies changes by ({key}), which its replica identity ({}) does not \
                 cover (PostgreSQL logs a deleted row by its identity): run `{fix}`, or `ALTER TABLE {qualified} \
                 REPLICA IDENTITY FULL`",
                self.url.display,
                table.name,
                columns.join(", ")
            )
        }))
    }
}

impl barge_core::ChangeFeed for PgSource {
    fn check(&self, tables: &[TableInfo]) -> Result<()> {
        let display = self.url.display.clone();
        let (wal_level, slots_max, slots_used, super_or_replication, version): (String, i64, i64, bool, i32) = self
            .with_client(|client| {
                let row = runtime()
                    .block_on(client.query_one(
                        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int8,
                                (SELECT count(*) FROM pg_replication_slots),
                                (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),
                                current_setting('server_version_num')::int4",
                        &[],
                    ))
                    .map_err(pg_err("checking the source's replication settings"))?;
                Ok((row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
            })?;
        if version < 100_000 {
            return Err(Error::Config(format!(
                "source {display}: change capture needs PostgreSQL 10 or later (pgoutput); this server is {version}"
            )));
        }
        if wal_level != "logical" {
            return Err(Error::Config(format!(
                "source {display}: change capture needs wal_level = logical (it is `{wal_level}`): run \
                 `ALTER SYSTEM SET wal_level = logical` on the source and restart it"
            )));
        }
        if slots_max <= slots_used {
            return Err(Error::Config(format!(
                "source {display}: no free replication slot (max_replication_slots = {slots_max}, {slots_used} in \
                 use): raise max_replication_slots on the source and restart it, or drop a slot no one uses"
            )));
        }
        if !super_or_replication {
            return Err(Error::Config(format!(
                "source {display}: change capture needs the REPLICATION privilege: run `ALTER ROLE <user> \
                 REPLICATION` as a superuser"
            )));
        }
        // A table without a key is matched by its whole rows where REPLICA IDENTITY FULL logs
        // them (checked with the others' identities).
        for table in tables {
            self.check_replica_identity(table)?;
        }
        Ok(())
    }

    fn open_stream(&self, name: &str, tables: &[TableInfo]) -> Result<u64> {
        let object = object_name(name);
        let list: Vec<String> = tables.iter().map(|t| self.qualified(&t.name)).collect();
        self.with_client(|client| {
            let rt = runtime();
            // The publication first: the slot decodes every change after it is created, and each
            // change looks the publication up as the catalog was then.
            let exists: bool = rt
                .block_on(
                    client.query_one("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", &[&object]),
                )
                .map_err(pg_err("looking up a publication"))?
                .get(0);
            let publication = if exists {
                format!("ALTER PUBLICATION {} SET TABLE {}", quote(&object), list.join(", "))
            } else {
                format!("CREATE PUBLICATION {} FOR TABLE {}", quote(&object), list.join(", "))
            };
            rt.block_on(client.batch_execute(&publication)).map_err(pg_err("creating the stream's publication"))?;
            let found = rt
                .block_on(client.query_opt(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                    &[&object],
                ))
                .map_err(pg_err("looking up a replication slot"))?;
            let lsn: String = match found {
                Some(row) => row.get(0),
                None => rt
                    .block_on(client.query_one(
                        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[&object],
                    ))
                    .map_err(pg_err("creating the stream's replication slot"))?
                    .get(0),
            };
            parse_lsn(&lsn)
        })
    }

    fn current_position(&self) -> Result<u64> {
        // The flushed end of the WAL, not the inserted one: logical decoding reads up to what is
        // flushed, and a commit inserted but not yet flushed is not decoded yet.
        self.with_client(|client| {
            let row = runtime()
                .block_on(client.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]))
                .map_err(pg_err("reading the source's WAL position"))?;
            parse_lsn(&row.get::<_, String>(0))
        })
    }

    fn read_changes(
        &self,
        name: &str,
        tables: &[TableInfo],
        after: u64,
        upto: Option<u64>,
        max: usize,
    ) -> Result<ChangeBatch> {
        // The target holds every change before `upto`: nothing to read.
        if upto.is_some_and(|u| u <= after) {
            return Ok(ChangeBatch { scanned: upto, ..ChangeBatch::default() });
        }
        let object = object_name(name);
        // The slot keeps the stream's place: it gives what was not confirmed.
        let upto = upto.map(lsn_text);
        let max = i32::try_from(max.max(1)).unwrap_or(i32::MAX);
        let local = self.local()?;
        let mut decoder = Decoder::new(&self.url.schema, tables);
        let binary_keys = decoder.binary_keys();
        let mut messages = 0usize;
        let flushed = local.rt.block_on(async {
            // Everything committed before this is decoded by the read below, which reads up to
            // the flushed end as it is when it starts.
            let row = local
                .client
                .query_one(
                    "SELECT pg_current_wal_flush_lsn()::text, current_setting('server_version_num')::int4 >= 140000",
                    &[],
                )
                .await
                .map_err(pg_err("reading the source's WAL position"))?;
            let (flushed, binary_known): (String, bool) = (row.get(0), row.get(1));
            // Values in their binary form (pgoutput's `binary`, PostgreSQL 14 on) where every key
            // reads back from it (see `KeyKind`): then rows logged whole are taken as they are
            // (`ChangeKind::Image`), not read back.
            let binary = if binary_known && binary_keys { ", 'binary', 'true'" } else { "" };
            decoder.binary = !binary.is_empty();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&object, &upto, &max, &object];
            let rows = local
                .client
                .query_raw(
                    &format!(
                        "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3, \
                         'proto_version', '1', 'publication_names', $4{binary})"
                    ),
                    params,
                )
                .await
                .map_err(pg_err("reading the source's changes"))?;
            futures_util::pin_mut!(rows);
            while let Some(row) = rows.next().await {
                let row = row.map_err(pg_err("reading the source's changes"))?;
                decoder.message(row.get::<_, &[u8]>(0))?;
                messages += 1;
            }
            Ok::<String, Error>(flushed)
        })?;
        self.keep(local);
        let images = decoder.take_images()?;
        let mut batch = decoder.batch;
        batch.images = images;
        // Fewer messages than asked for: the read was not cut short by `max`.
        if messages < max as usize {
            let flushed = parse_lsn(&flushed)?;
            batch.scanned = Some(match upto.as_deref().map(parse_lsn).transpose()? {
                Some(upto) => flushed.min(upto),
                None => flushed,
            });
        }
        Ok(batch)
    }

    fn confirm(&self, name: &str, position: u64) -> Result<()> {
        let object = object_name(name);
        self.with_client(|client| {
            // The slot cannot go back, nor past what was written: a position behind where it is
            // (a retried batch) is no move.
            runtime()
                .block_on(client.execute(
                    "SELECT pg_replication_slot_advance($1, least($2::text::pg_lsn, pg_current_wal_lsn()))
                       FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn < $2::text::pg_lsn",
                    &[&object, &lsn_text(position)],
                ))
                .map_err(pg_err("confirming applied changes to the replication slot"))?;
            Ok(())
        })
    }

    fn retained_bytes(&self, name: &str) -> Result<Option<u64>> {
        let object = object_name(name);
        self.with_client(|client| {
            let row = runtime()
                .block_on(client.query_opt(
                    "SELECT (pg_current_wal_lsn() - restart_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
                    &[&object],
                ))
                .map_err(pg_err("measuring the WAL a slot keeps"))?;
            Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|b| b.max(0) as u64))
        })
    }

    fn drop_stream(&self, name: &str) -> Result<Option<u64>> {
        let retained = self.retained_bytes(name)?;
        let object = object_name(name);
        self.with_client(|client| {
            let rt = runtime();
            if retained.is_some() {
                rt.block_on(client.execute("SELECT pg_drop_replication_slot($1)", &[&object]))
                    .map_err(pg_err("dropping the stream's replication slot"))?;
            }
            rt.block_on(client.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote(&object))))
                .map_err(pg_err("dropping the stream's publication"))?;
            Ok(())
        })?;
        Ok(retained)
    }

    fn describe_position(&self, position: u64) -> String {
        lsn_text(position)
    }

    fn read_keys(&self, table: &TableInfo, keys: &[Vec<Option<String>>]) -> Result<KeyRows> {
        let mut found = KeyRows::default();
        if keys.is_empty() {
            return Ok(found);
        }
        let key_columns = table.change_key();
        // A table without a key: rows are matched by all their columns, as their text (NULL-safe,
        // and defined for types without an equality operator, json and point among them).
        let whole_row = !table.key.is_primary();
        let natives: Vec<String> = key_columns.iter().map(|c| native_of(table, c)).collect();
        // A key value as a literal of its column's type.
        let value = |value: &Option<String>, native: &str| match value {
            Some(text) => format!("{}::{native}", literal(text)),
            None => format!("NULL::{native}"),
        };
        let values: Vec<String> = keys
            .iter()
            .map(|key| {
                let items: Vec<String> = key.iter().zip(&natives).map(|(v, native)| value(v, native)).collect();
                format!("({})", items.join(", "))
            })
            .collect();
        let aliases: Vec<String> = (0..key_columns.len()).map(|i| format!("barge_k{i}")).collect();
        let matches: Vec<String> = if whole_row {
            let row = |items: Vec<String>| format!("ROW({})::text", items.join(", "));
            vec![format!(
                "{} = {}",
                row(key_columns.iter().map(|c| format!("t.{}", quote(c))).collect()),
                row(aliases.iter().map(|a| format!("v.{a}")).collect())
            )]
        } else {
            key_columns.iter().zip(&aliases).map(|(c, a)| format!("t.{} = v.{a}", quote(c))).collect()
        };
        let keys_list = format!("(VALUES {}) AS v({})", values.join(", "), aliases.join(", "));
        let rows_of = self.rows_of(&table.name)?;
        let columns = column_types(table)?;
        let list: Vec<String> = table
            .schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| format!("t.{}", select_expr(f.name(), c)))
            .collect();
        // A pipeline's `where`: a row that left it is gone from the target too.
        let filter = table.filter.as_ref().map(|f| format!(" AND ({f})")).unwrap_or_default();
        // One key column: the keys as one array literal (20,000 keys parse in a fraction of the
        // time 20,000 cast literals take), each looked up through the key's index by a lateral
        // subquery (OFFSET 0 keeps it one: a plain join or `= ANY(…)` over that many keys may
        // hash or scan the whole table, whose statistics lag behind a stream of inserts); a
        // composite key: a semi-join against the keys.
        let from = match key_columns.as_slice() {
            [column] if !whole_row => format!(
                "unnest({}::{}[]) AS barge_keys(barge_key) CROSS JOIN LATERAL (SELECT * FROM {rows_of} AS t WHERE \
                 t.{} = barge_keys.barge_key{filter} OFFSET 0) AS t",
                literal(&array_text(keys.iter().map(|k| k[0].as_deref()))),
                natives[0],
                quote(column)
            ),
            _ => format!(
                "{rows_of} AS t WHERE EXISTS (SELECT 1 FROM {keys_list} WHERE {}){filter}",
                matches.join(" AND ")
            ),
        };
        let rows_sql = format!("COPY (SELECT {} FROM {from}) TO STDOUT (FORMAT binary)", list.join(", "));
        // The absent keys, read back in the key columns' types (as the rows' keys decode).
        let key_fields: Vec<arrow_schema::Field> =
            key_columns.iter().map(|c| table.schema.field_with_name(c).expect("key column").clone()).collect();
        let key_schema: SchemaRef = std::sync::Arc::new(Schema::new(key_fields));
        let key_table = TableInfo { schema: key_schema.clone(), ..table.clone() };
        let key_types = column_types(&key_table)?;
        let absent_list: Vec<String> = key_columns
            .iter()
            .zip(&aliases)
            .zip(&key_types)
            .map(|((c, a), t)| format!("v.{} AS {}", select_expr(a, t), quote(c)))
            .collect();
        let absent_sql = format!(
            "COPY (SELECT {} FROM {keys_list} WHERE NOT EXISTS (SELECT 1 FROM {rows_of} AS t WHERE {}{filter})) TO \
             STDOUT (FORMAT binary)",
            absent_list.join(", "),
            matches.join(" AND ")
        );
        let local = self.local()?;
        local
            .rt
            // JIT compiles a lookup of thousands of keys for longer than the lookup takes.
            .block_on(
                local.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL jit = off"),
            )
            .map_err(pg_err("reading changed rows"))?;
        found.rows = copy_batches(&local, &rows_sql, table.schema.clone(), &columns, &table.name)?;
        // Every key found (the keys asked for are distinct): none is gone, no need to ask.
        let rows: usize = found.rows.iter().map(RecordBatch::num_rows).sum();
        if rows < keys.len() || whole_row {
            found.absent = copy_batches(&local, &absent_sql, key_schema, &key_types, &table.name)?;
        }
        local.rt.block_on(local.client.batch_execute("COMMIT")).map_err(pg_err("reading changed rows"))?;
        self.keep(local);
        Ok(found)
    }
}

/// Values as the text of a PostgreSQL array (`{"1","it\"s",NULL}`): each element quoted, with
/// `"` and `\` escaped, so any text the element's type reads from is kept as it is.
fn array_text<'v>(values: impl Iterator<Item = Option<&'v str>>) -> String {
    let mut out = String::from("{");
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        match value {
            None => out.push_str("NULL"),
            Some(text) => {
                out.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// A binary COPY stream held whole (header to trailer), as batches of `schema`.
fn decode_copy(
    data: &[u8],
    schema: SchemaRef,
    columns: &[crate::types::PgColumnType],
    table: &str,
) -> Result<Vec<RecordBatch>> {
    let mut parser = CopyParser::new(schema.clone(), columns, 8192);
    parser.append(data);
    parsed(parser, &schema, table)
}

/// Rows a `COPY … TO STDOUT (FORMAT binary)` sends, as batches of `schema`.
fn copy_batches(
    local: &crate::conn::LocalConn,
    sql: &str,
    schema: SchemaRef,
    columns: &[crate::types::PgColumnType],
    table: &str,
) -> Result<Vec<RecordBatch>> {
    let mut parser = CopyParser::new(schema.clone(), columns, 8192);
    local
        .rt
        .block_on(async {
            let stream = local.client.copy_out(sql).await?;
            futures_util::pin_mut!(stream);
            while let Some(data) = stream.next().await {
                parser.append(&data?);
            }
            Ok::<(), tokio_postgres::Error>(())
        })
        .map_err(pg_err("reading changed rows"))?;
    parsed(parser, &schema, table)
}

/// The batches of what `parser` was given (all of a COPY stream).
fn parsed(mut parser: CopyParser, schema: &SchemaRef, table: &str) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    let mut emit = |batch: RecordBatch, _: Option<bytes::Bytes>| {
        batches.push(batch);
        Ok(())
    };
    let decoded = parser.parse(&mut emit).and_then(|()| parser.finish(&mut emit));
    match decoded {
        Ok(()) => Ok(batches),
        Err(FeedError::Emit(e)) => Err(e),
        Err(FeedError::Decode(e)) => Err(Error::BadValue {
            table: table.into(),
            column: schema.field(e.column).name().clone(),
            key: None,
            reason: e.reason,
        }),
    }
}

/// A synced table as pgoutput described it.
struct Relation {
    table: String,
    /// Its columns, in the order of its tuples.
    columns: Vec<String>,
    /// Where the change key's columns are in its tuples, in key order.
    key: Vec<usize>,
}

/// pgoutput messages → changes, buffered per transaction until its commit gives their position.
struct Decoder {
    schema: String,
    relations: HashMap<u32, Relation>,
    pending: Vec<(String, ChangeKind)>,
    batch: ChangeBatch,
    /// Change-key column names by table (see [`TableInfo::change_key`]): the tables synced.
    key_names: HashMap<String, Vec<String>>,
    /// How each table's key columns read back from binary values (`None`: some cannot).
    key_kinds: HashMap<String, Option<Vec<KeyKind>>>,
    /// Whether the values come in binary (asked for when every key reads back from it).
    binary: bool,
    /// Tables whose whole rows are kept (keyed, no row filter, every column decoded from its
    /// binary form as a binary COPY of it would be).
    imaging: HashMap<String, Imaging>,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.data.len()).ok_or_else(truncated)?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn cstr(&mut self) -> Result<String> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|&b| b == 0).ok_or_else(truncated)?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(text)
    }
    /// A tuple: per column NULL, an unchanged TOAST value, its text or its binary form
    /// (borrowed).
    fn tuple(&mut self) -> Result<Vec<Value<'a>>> {
        let n = self.i16()?.max(0) as usize;
        (0..n)
            .map(|_| match self.u8()? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    Ok(Value::Text(self.take(len)?))
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Ok(Value::Binary(self.take(len)?))
                }
                other => Err(Error::engine("decoding a change", format!("unknown tuple value kind {other:#x}"))),
            })
            .collect()
    }
}

enum Value<'a> {
    Null,
    Unchanged,
    Text(&'a [u8]),
    /// The type's binary form (its send function's, as binary COPY has it).
    Binary(&'a [u8]),
}

/// How a key column's binary value is read back as the text its type takes in: the key types
/// sync reads changes in binary for (any other key keeps the read in text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Int2,
    Int4,
    Int8,
    /// text, varchar, char, name, an enum's label: UTF-8 bytes both ways.
    Text,
    Uuid,
}

impl KeyKind {
    /// The kind of a column of native (declared) type `native`.
    fn of(native: &str) -> Option<KeyKind> {
        let base = native.split('(').next().unwrap_or(native).trim();
        Some(match base {
            "smallint" => KeyKind::Int2,
            "integer" => KeyKind::Int4,
            "bigint" => KeyKind::Int8,
            "text" | "character varying" | "character" | "name" => KeyKind::Text,
            "uuid" => KeyKind::Uuid,
            _ => return None,
        })
    }

    /// `bytes` (a binary value of this kind) as text.
    fn text(self, bytes: &[u8]) -> Option<String> {
        Some(match self {
            KeyKind::Int2 => i16::from_be_bytes(bytes.try_into().ok()?).to_string(),
            KeyKind::Int4 => i32::from_be_bytes(bytes.try_into().ok()?).to_string(),
            KeyKind::Int8 => i64::from_be_bytes(bytes.try_into().ok()?).to_string(),
            KeyKind::Text => String::from_utf8(bytes.to_vec()).ok()?,
            KeyKind::Uuid => {
                let hex: String = <[u8; 16]>::try_from(bytes).ok()?.iter().map(|b| format!("{b:02x}")).collect();
                format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
            }
        })
    }
}

/// A table whose changed rows, when logged whole in binary, are kept as rows of its schema.
struct Imaging {
    schema: SchemaRef,
    types: Vec<crate::types::PgColumnType>,
    /// Its columns, as its relation must list them.
    columns: Vec<String>,
    /// The rows as binary COPY tuples, and how many.
    body: Vec<u8>,
    rows: u32,
}

fn truncated() -> Error {
    Error::engine("decoding a change", "a pgoutput message ended early")
}

impl Decoder {
    fn new(schema: &str, tables: &[TableInfo]) -> Self {
        let key_names =
            tables.iter().map(|t| (t.name.clone(), t.change_key().into_iter().map(str::to_string).collect())).collect();
        // A table without a key is matched by the text of all its columns: no binary values.
        let key_kinds = tables
            .iter()
            .map(|t| {
                let kinds = t
                    .key
                    .is_primary()
                    .then(|| t.key_columns().iter().map(|c| KeyKind::of(&native_of(t, c))).collect::<Option<Vec<_>>>());
                (t.name.clone(), kinds.flatten())
            })
            .collect();
        let imaging = tables
            .iter()
            .filter(|t| t.key.is_primary() && t.filter.is_none())
            .filter_map(|t| {
                let types = column_types(t).ok()?;
                // A column read as text (cast in the copy's SELECT) has no binary COPY form here.
                let plain =
                    t.schema.fields().iter().zip(&types).all(|(f, c)| select_expr(f.name(), c) == quote(f.name()));
                plain.then(|| {
                    let columns = t.schema.fields().iter().map(|f| f.name().clone()).collect();
                    (t.name.clone(), Imaging { schema: t.schema.clone(), types, columns, body: Vec::new(), rows: 0 })
                })
            })
            .collect();
        Decoder {
            key_names,
            key_kinds,
            binary: false,
            imaging,
            schema: schema.into(),
            relations: HashMap::new(),
            pending: Vec::new(),
            batch: ChangeBatch::default(),
        }
    }

    /// Whether every table's key reads back from binary values (see [`KeyKind`]).
    fn binary_keys(&self) -> bool {
        self.key_kinds.values().all(Option::is_some)
    }

    /// The rows kept, by table, as batches of its schema (numbered in order).
    fn take_images(&mut self) -> Result<HashMap<String, Vec<RecordBatch>>> {
        let mut images = HashMap::new();
        for (table, imaging) in &mut self.imaging {
            if imaging.rows == 0 {
                continue;
            }
            let mut copy = Vec::with_capacity(imaging.body.len() + 21);
            copy.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            copy.extend_from_slice(&[0; 8]);
            copy.append(&mut imaging.body);
            copy.extend_from_slice(&(-1i16).to_be_bytes());
            imaging.rows = 0;
            let batches = decode_copy(&copy, imaging.schema.clone(), &imaging.types, table)?;
            images.insert(table.clone(), batches);
        }
        Ok(images)
    }

    fn message(&mut self, data: &[u8]) -> Result<()> {
        let mut r = Reader { data, at: 0 };
        match r.u8()? {
            b'B' => self.pending.clear(),
            b'C' => {
                let (_flags, _commit, end, micros) = (r.u8()?, r.u64()?, r.u64()?, r.u64()? as i64);
                self.batch.committed_at = Some(micros as f64 / 1e6 + crate::wire::PG_EPOCH_MICROS as f64 / 1e6);
                self.batch.changes.extend(self.pending.drain(..).map(|(table, kind)| Change {
                    table,
                    position: end,
                    kind,
                }));
                self.batch.end = Some(end);
                self.batch.transactions += 1;
            }
            b'R' => {
                let id = r.u32()?;
                let (namespace, name) = (r.cstr()?, r.cstr()?);
                let _identity = r.u8()?;
                let n = r.i16()?.max(0) as usize;
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let _flags = r.u8()?;
                    columns.push(r.cstr()?);
                    let (_type, _modifier) = (r.u32()?, r.u32()?);
                }
                if let Some(names) = self.key_names.get(&name).filter(|_| namespace == self.schema) {
                    let key = names.iter().filter_map(|k| columns.iter().position(|c| c == k)).collect();
                    self.pending.push((name.clone(), ChangeKind::Columns(columns.clone())));
                    self.relations.insert(id, Relation { table: name, columns, key });
                }
            }
            b'I' => {
                let id = r.u32()?;
                let _new = r.u8()?;
                let tuple = r.tuple()?;
                self.row(id, &tuple, true)?;
            }
            b'U' => {
                let id = r.u32()?;
                let mut kind = r.u8()?;
                let mut old = None;
                if kind == b'K' || kind == b'O' {
                    let tuple = r.tuple()?;
                    self.row(id, &tuple, false)?;
                    old = Some(tuple);
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err(Error::engine("decoding a change", "an update without its new row"));
                }
                let mut new = r.tuple()?;
                // An unchanged TOAST value is the old row's (REPLICA IDENTITY FULL logs it whole):
                // a whole-row key needs it.
                if let Some(old) = old.filter(|o| o.len() == new.len()) {
                    for (value, before) in new.iter_mut().zip(old) {
                        if matches!(value, Value::Unchanged) {
                            *value = before;
                        }
                    }
                }
                self.row(id, &new, true)?;
            }
            b'D' => {
                let id = r.u32()?;
                let _old = r.u8()?;
                let old = r.tuple()?;
                self.row(id, &old, false)?;
            }
            b'T' => {
                let n = r.u32()? as usize;
                let _options = r.u8()?;
                for _ in 0..n {
                    let id = r.u32()?;
                    if let Some(relation) = self.relations.get(&id) {
                        self.pending.push((relation.table.clone(), ChangeKind::Truncate));
                    }
                }
            }
            // Type, origin and logical messages carry no row.
            _ => {}
        }
        Ok(())
    }

    /// The key of a row change (the relation's flags mark the replica identity, which may be
    /// every column: the key is found by the change key's names); `after`: the tuple is the row
    /// after the change, kept whole where it can be (see [`Imaging`]).
    fn row(&mut self, id: u32, tuple: &[Value<'_>], after: bool) -> Result<()> {
        let Some(relation) = self.relations.get(&id) else {
            return Ok(());
        };
        let kinds = self.key_kinds.get(&relation.table).cloned().flatten();
        let values: Vec<Option<String>> = relation
            .key
            .iter()
            .enumerate()
            .map(|(k, &i)| match tuple.get(i) {
                Some(Value::Text(text)) => Ok(Some(String::from_utf8_lossy(text).into_owned())),
                Some(Value::Binary(bytes)) => {
                    kinds.as_ref().and_then(|kinds| kinds.get(k)?.text(bytes)).map(Some).ok_or_else(|| {
                        Error::engine(
                            "decoding a change",
                            format!("a key column of `{}` came in a binary form barge does not read", relation.table),
                        )
                    })
                }
                Some(Value::Null) | None => Ok(None),
                Some(Value::Unchanged) => Err(Error::engine(
                    "decoding a change",
                    format!("a key column of `{}` came as unchanged", relation.table),
                )),
            })
            .collect::<Result<_>>()?;
        let whole = tuple.iter().all(|v| matches!(v, Value::Binary(_) | Value::Null));
        let kind = match self.imaging.get_mut(&relation.table) {
            Some(imaging) if after && self.binary && whole && imaging.columns == relation.columns => {
                imaging.body.extend_from_slice(&(tuple.len() as i16).to_be_bytes());
                for value in tuple {
                    match value {
                        Value::Binary(bytes) => {
                            imaging.body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                            imaging.body.extend_from_slice(bytes);
                        }
                        _ => imaging.body.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                }
                imaging.rows += 1;
                ChangeKind::Image { key: values, image: imaging.rows - 1 }
            }
            _ => ChangeKind::Row(values),
        };
        self.pending.push((relation.table.clone(), kind));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_keys_read_back_as_the_text_their_types_take_in() {
        assert_eq!(KeyKind::of("integer"), Some(KeyKind::Int4));
        assert_eq!(KeyKind::of("character varying(20)"), Some(KeyKind::Text));
        assert_eq!(KeyKind::of("numeric(10,2)"), None, "no binary read for other key types");
        assert_eq!(KeyKind::Int2.text(&(-7i16).to_be_bytes()).as_deref(), Some("-7"));
        assert_eq!(KeyKind::Int4.text(&i32::MIN.to_be_bytes()).as_deref(), Some("-2147483648"));
        assert_eq!(KeyKind::Int8.text(&i64::MAX.to_be_bytes()).as_deref(), Some("9223372036854775807"));
        assert_eq!(KeyKind::Int4.text(&[0, 1]), None, "a value of the wrong width");
        assert_eq!(KeyKind::Text.text("é x".as_bytes()).as_deref(), Some("é x"));
        let uuid = [0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11];
        assert_eq!(KeyKind::Uuid.text(&uuid).as_deref(), Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    }

    #[test]
    fn array_text_quotes_every_element_and_escapes_quotes_and_backslashes() {
        let values = [Some("1"), Some(r#"it"s"#), Some(r"back\slash"), None, Some("{a,b}"), Some("")];
        assert_eq!(array_text(values.into_iter()), r#"{"1","it\"s","back\\slash",NULL,"{a,b}",""}"#);
        assert_eq!(array_text(std::iter::empty()), "{}");
    }
}
