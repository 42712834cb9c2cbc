//! Reading PostgreSQL tables: one `COPY (SELECT … WHERE <range>) TO STDOUT (FORMAT binary)` per
//! key range, decoded straight into Arrow builders on the reader's own thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use barge_core::types::record_default;
use barge_core::{
    Error, ForeignKeyInfo, IndexInfo, Key, KeyRange, KeySpec, KeyStats, LOGICAL_JSON, LOGICAL_UUID, META_ENGINE,
    META_ENUM, META_ENUM_TYPE, META_IDENTITY, META_LOGICAL, META_NATIVE_TYPE, Native, Result, Scalar, TableInfo,
};
use futures_util::StreamExt;
use tokio_postgres::Client;

use crate::ENGINE;
use crate::conn::{LocalConn, PgUrl, connect, connect_local, literal, pg_err, quote, runtime};
use crate::decode::{CopyParser, FeedError};
use crate::types::{Codec, PgColumnType, resolve};

/// COPY data is gathered into chunks of this size, then decoded: one chunk per reader in memory.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// The physical row locator ranged over for tables without a primary key.
const CTID: &str = "ctid";

pub struct PgSource {
    pub(crate) url: PgUrl,
    pool: Mutex<Vec<Client>>,
    /// Connections of range reads that read to the end, for the next range read (on any
    /// thread): a new connection costs a new server process, which must also fault in the shared
    /// buffers it reads.
    readers: Mutex<Vec<LocalConn>>,
    /// The pinned snapshot: its id, and the session that exported it, kept idle in its
    /// transaction for as long as the source is open (the snapshot lives only that long).
    snapshot: Mutex<Option<(String, Client)>>,
    /// Partitioned tables by name (`true`), as described: their rows are their partitions', read
    /// through them. Any other table's rows are its own (`FROM ONLY`), so an inheritance parent
    /// never reads its children's rows, which are copied with the children.
    partitioned: Mutex<HashMap<String, bool>>,
}

impl PgSource {
    pub fn open(url: PgUrl) -> Result<Arc<Self>> {
        let client = connect(&url)?;
        Ok(Arc::new(PgSource {
            url,
            pool: Mutex::new(vec![client]),
            readers: Mutex::new(Vec::new()),
            snapshot: Mutex::new(None),
            partitioned: Mutex::new(HashMap::new()),
        }))
    }

    /// The statement that starts a read in the pinned snapshot (empty without one).
    fn snapshot_begin(&self) -> Option<String> {
        let snapshot = self.snapshot.lock().expect("snapshot lock");
        snapshot.as_ref().map(|(id, _)| {
            format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}", literal(id))
        })
    }

    /// Starts `sql` (a `COPY … TO STDOUT`) on a kept connection, or on a new one when there is none
    /// or the kept one fails (the server may have ended it while it sat idle: not the read's fault,
    /// so not a failure of the read).
    fn copy_out(&self, sql: &str) -> Result<(LocalConn, tokio_postgres::CopyOutStream)> {
        let begin = self.snapshot_begin();
        let start = |local: &LocalConn| {
            local.rt.block_on(async {
                if let Some(begin) = &begin {
                    local.client.batch_execute(begin).await?;
                }
                local.client.copy_out(sql).await
            })
        };
        let kept = self.readers.lock().expect("reader pool lock").pop();
        if let Some(local) = kept.filter(|local| !local.client.is_closed())
            && let Ok(stream) = start(&local)
        {
            return Ok((local, stream));
        }
        let local = connect_local(&self.url)?;
        let stream = start(&local).map_err(|e| match &begin {
            // Without its exporting session the snapshot is gone: retrying cannot bring it back.
            Some(_) if e.as_db_error().is_some_and(|d| d.message().contains("snapshot")) => Error::Engine {
                context: "reading rows in the copy's snapshot".into(),
                message: format!("{e}; the source's snapshot was lost (its session ended): run the copy again"),
            },
            _ => pg_err("reading rows")(e),
        })?;
        Ok((local, stream))
    }

    /// A connection of [`Self::readers`], or a new one: for a read outside the range reads,
    /// given back with [`Self::keep`] once it is done with.
    pub(crate) fn local(&self) -> Result<LocalConn> {
        let kept = self.readers.lock().expect("reader pool lock").pop();
        match kept {
            Some(local) if !local.client.is_closed() => Ok(local),
            _ => connect_local(&self.url),
        }
    }

    /// Keeps `local`, idle outside any transaction, for the next read.
    pub(crate) fn keep(&self, local: LocalConn) {
        self.readers.lock().expect("reader pool lock").push(local);
    }

    fn take(&self) -> Result<Client> {
        let pooled = self.pool.lock().expect("pool lock").pop();
        match pooled {
            Some(client) if !client.is_closed() => Ok(client),
            _ => connect(&self.url),
        }
    }

    fn give_back(&self, client: Client) {
        self.pool.lock().expect("pool lock").push(client);
    }

    pub(crate) fn with_client<T>(&self, f: impl FnOnce(&Client) -> Result<T>) -> Result<T> {
        let client = self.take()?;
        let result = f(&client);
        self.give_back(client);
        result
    }

    pub(crate) fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.url.schema), quote(table))
    }

    /// What a statement reads a table's rows from: `ONLY schema.table`, or the table itself
    /// when it is partitioned (its rows are its partitions').
    pub(crate) fn rows_of(&self, table: &str) -> Result<String> {
        let known = self.partitioned.lock().expect("partitioned lock").get(table).copied();
        let partitioned = match known {
            Some(p) => p,
            None => {
                let p = self.with_client(|client| {
                    let row = runtime()
                        .block_on(client.query_opt(
                            "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = $1 AND c.relname = $2",
                            &[&self.url.schema, &table],
                        ))
                        .map_err(pg_err("looking up a table"))?;
                    Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
                })?;
                self.partitioned.lock().expect("partitioned lock").insert(table.to_string(), p);
                p
            }
        };
        Ok(if partitioned { self.qualified(table) } else { format!("ONLY {}", self.qualified(table)) })
    }
}

/// Column types of a described table, from the fields' native-type metadata.
pub fn column_types(table: &TableInfo) -> Result<Vec<PgColumnType>> {
    table
        .schema
        .fields()
        .iter()
        .map(|f| {
            let native = f.metadata().get(META_NATIVE_TYPE).map_or("", String::as_str);
            resolve(native).ok_or_else(|| Error::UnsupportedType {
                table: table.name.clone(),
                column: f.name().clone(),
                type_name: native.into(),
                reason: None,
            })
        })
        .collect()
}

pub(crate) fn native_of(table: &TableInfo, column: &str) -> String {
    table
        .schema
        .field_with_name(column)
        .ok()
        .and_then(|f| f.metadata().get(META_NATIVE_TYPE).cloned())
        .unwrap_or_else(|| "text".into())
}

fn is_integer(native: &str) -> bool {
    resolve(native).is_some_and(|t| !t.array && matches!(t.codec, Codec::Int2 | Codec::Int4 | Codec::Int8))
}

/// An SQL literal of `value` for a column of type `native`.
pub(crate) fn bound_literal(value: &Scalar, native: &str) -> String {
    match value {
        Scalar::Null => "NULL".into(),
        Scalar::Int(i) => i.to_string(),
        Scalar::UInt(u) => u.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Float(x) => format!("{x:?}::float8"),
        Scalar::Text(t) => format!("{}::{native}", literal(t)),
        Scalar::Bytes(b) => format!("'\\x{}'::bytea", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

/// `cols >= lo AND cols < hi` with literals (COPY takes no parameters). Keys are compared in the
/// database's own ordering, the one their sample came from.
fn range_predicate(table: &TableInfo, range: &KeyRange) -> String {
    let columns: Vec<(String, String)> = match &table.key {
        KeySpec::Locator(_) => vec![(CTID.into(), "tid".into())],
        _ => table.range_columns().into_iter().map(|c| (quote(&c), native_of(table, &c))).collect(),
    };
    let names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
    let predicate = table.filtered(barge_core::model::range_predicate(&names, range, "true", |i, value| {
        match (&table.key, value) {
            // Block ranges over ctid: (block, 0) is the first tuple a block can hold.
            (KeySpec::Locator(_), Scalar::Int(block)) => format!("'({block},0)'::tid"),
            _ => bound_literal(value, &columns[i].1),
        }
    }));
    match &table.window {
        Some((column, from)) => {
            format!("{predicate} AND {} >= {}", quote(column), bound_literal(from, &native_of(table, column)))
        }
        None => predicate,
    }
}

/// The SELECT-list expression reading a column: types without a binary codec are cast to text.
pub(crate) fn select_expr(name: &str, column: &PgColumnType) -> String {
    match (column.codec, column.array) {
        (Codec::AsText, false) => format!("{}::text", quote(name)),
        (Codec::AsText, true) => format!("{}::text[]", quote(name)),
        _ => quote(name),
    }
}

const DESCRIBE: &str = "
SELECT a.attname,
       CASE WHEN t.typtype = 'e' THEN 'text'
            WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            WHEN et.typtype = 'e' THEN 'text[]'
            WHEN et.typtype = 'd' THEN format_type(et.typbasetype, et.typtypmod) || '[]'
            ELSE format_type(a.atttypid, a.atttypmod) END AS sql_type,
       format_type(a.atttypid, a.atttypmod) AS declared,
       a.attnotnull,
       -- int2vector subscripts start at 0: take the ordinality instead of array_position.
       coalesce((SELECT k.ord FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) WHERE k.attnum = a.attnum), 0)::int4
         AS pk_position,
       a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', false) AS generated,
       pg_get_expr(d.adbin, d.adrelid) AS default_expression,
       CASE WHEN t.typtype = 'e' THEN t.typname::text END AS enum_type,
       (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
         AS enum_labels,
       col_description(a.attrelid, a.attnum) AS comment
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum";

/// Indexes other than the primary key, with their key columns (INCLUDE columns left out) and
/// whether they are over plain columns only.
const INDEXES: &str = "
SELECT ic.relname, i.indisunique,
       array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= i.indnkeyatts ORDER BY k.ord),
       i.indexprs IS NULL AND i.indpred IS NULL AND 0 <> ALL (i.indkey::int2[]),
       array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k),
       pg_get_expr(i.indpred, i.indrelid, true), am.amname::text
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = $1 AND NOT i.indisprimary
  -- An exclusion constraint's index is the constraint's, which no other engine has.
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype = 'x')
ORDER BY ic.relname";

const FOREIGN_KEYS: &str = "
SELECT rc.relname::text,
       array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
       array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o),
       c.conname::text, c.confdeltype::text, c.confupdtype::text
FROM pg_constraint c JOIN pg_class rc ON rc.oid = c.confrelid
WHERE c.conrelid = $1 AND c.contype = 'f'
ORDER BY c.conname";

/// CHECK constraints (inherited ones too: they hold for the table's own rows), as PostgreSQL
/// prints them, with the columns they name as `quote_ident` spells them.
const CHECKS: &str = "
SELECT c.conname::text, pg_get_expr(c.conbin, c.conrelid, true),
       array(SELECT quote_ident(a.attname) FROM unnest(c.conkey) AS k(n)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n)
FROM pg_constraint c
WHERE c.conrelid = $1 AND c.contype = 'c'
ORDER BY c.conname";

/// Objects of the schema besides tables and what belongs to them; extension members left out.
const OTHER_OBJECTS: &str = "
SELECT kind, name FROM (
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'sequence' END AS kind,
         c.relname::text AS name, c.oid AS oid, 'pg_class'::regclass AS catalog
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND (c.relkind IN ('v', 'm')
        OR (c.relkind = 'S' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                                            AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))))
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         p.oid::regprocedure::text, p.oid, 'pg_proc'::regclass
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
  UNION ALL
  SELECT 'trigger', t.tgname::text || ' on ' || c.relname::text, t.oid, 'pg_trigger'::regclass
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND NOT t.tgisinternal
  UNION ALL
  -- Inheritance (not partitions): another engine gets each table with all its columns and rows.
  SELECT 'inheritance', c.relname::text || ' inherits ' || p.relname::text, c.oid, 'pg_class'::regclass
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND NOT c.relispartition
  UNION ALL
  -- Generated columns (another engine gets the table without them), exclusion constraints and
  -- domains (their columns get the base type).
  SELECT 'generated column', c.relname::text || '.' || a.attname::text, c.oid, 'pg_class'::regclass
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attgenerated <> '' AND NOT a.attisdropped
  UNION ALL
  SELECT 'exclusion constraint', c.relname::text || '.' || k.conname::text, k.oid, 'pg_constraint'::regclass
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND k.contype = 'x'
  UNION ALL
  SELECT 'domain', t.typname::text, t.oid, 'pg_type'::regclass
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typtype = 'd'
) o
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.catalog AND d.objid = o.oid AND d.deptype = 'e')
ORDER BY 1, 2";

/// The table and every partition below it (not inheritance children: they are tables of their own).
const TREE: &str = "WITH RECURSIVE tree(oid) AS (
  SELECT $1::oid UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
                           JOIN pg_class p ON p.oid = i.inhrelid WHERE p.relispartition)";

impl barge_core::Source for PgSource {
    fn display_name(&self) -> String {
        self.url.display.clone()
    }

    fn schema_dump(&self) -> Option<&dyn barge_core::SchemaDump> {
        Some(self)
    }

    fn change_feed(&self) -> Option<&dyn barge_core::ChangeFeed> {
        Some(self)
    }

    fn other_objects(&self) -> Result<Vec<barge_core::SchemaObject>> {
        self.with_client(|client| {
            let rows = runtime()
                .block_on(client.query(OTHER_OBJECTS, &[&self.url.schema]))
                .map_err(pg_err("listing views, functions and triggers"))?;
            Ok(rows.iter().map(|r| barge_core::SchemaObject { kind: r.get(0), name: r.get(1) }).collect())
        })
    }

    fn views(&self) -> Result<Vec<barge_core::ViewDef>> {
        // Plain views not made by an extension, with the schema off the search path so that
        // their SELECT names the tables unqualified.
        let sql = "SELECT c.relname::text, pg_get_viewdef(c.oid, true)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $1 AND c.relkind = 'v'
                     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                       AND d.objid = c.oid AND d.deptype = 'e')
                   ORDER BY c.oid";
        self.with_client(|client| {
            let rt = runtime();
            rt.block_on(client.batch_execute(&format!("SET search_path = {}", quote(&self.url.schema))))
                .map_err(pg_err("reading view definitions"))?;
            let rows = rt.block_on(client.query(sql, &[&self.url.schema])).map_err(pg_err("reading view definitions"));
            rt.block_on(client.batch_execute("RESET search_path")).map_err(pg_err("reading view definitions"))?;
            Ok(rows?
                .iter()
                .map(|r| {
                    let select: String = r.get(1);
                    barge_core::ViewDef {
                        name: r.get(0),
                        columns: Vec::new(),
                        select: select.trim().trim_end_matches(';').to_string(),
                    }
                })
                .collect())
        })
    }

    fn snapshots(&self) -> Option<&dyn barge_core::SnapshotReads> {
        Some(self)
    }

    fn identity(&self) -> Result<Option<String>> {
        self.with_client(|client| crate::conn::identity(client, &self.url.schema).map(Some))
    }

    fn table_bytes(&self, name: &str) -> Result<Option<u64>> {
        // A partitioned table's bytes are its partitions'.
        // (pg_partition_tree lists nothing for a table that is not partitioned.)
        let sql = "SELECT COALESCE((SELECT sum(pg_total_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t),
                                   pg_total_relation_size(c.oid))::bigint
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $1 AND c.relname = $2";
        self.with_client(|client| {
            let row = runtime()
                .block_on(client.query_opt(sql, &[&self.url.schema, &name]))
                .map_err(pg_err("measuring a table"))?;
            Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|b| b as u64))
        })
    }

    fn namespaces_with_tables(&self) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT n.nspname::text FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid
                   WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1";
        self.with_client(|client| {
            let rows = runtime().block_on(client.query(sql, &[])).map_err(pg_err("listing schemas"))?;
            Ok(rows.iter().map(|r| format!("schema {}", r.get::<_, String>(0))).collect())
        })
    }

    fn list_tables(&self) -> Result<Vec<String>> {
        // Partitions are read through their parent, never twice; inheritance children are tables
        // of their own (each row is read from the table that holds it, `FROM ONLY`); an
        // extension's own tables (PostGIS's spatial_ref_sys) come with the extension.
        let sql = "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                       AND d.objid = c.oid AND d.deptype = 'e')
                   ORDER BY c.relname";
        self.with_client(|client| {
            let rows = runtime().block_on(client.query(sql, &[&self.url.schema])).map_err(pg_err("listing tables"))?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    fn table(&self, name: &str) -> Result<TableInfo> {
        self.with_client(|client| {
            let rt = runtime();
            let found = rt
                .block_on(client.query_opt(
                    "SELECT c.oid, CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                            WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'composite type'
                            WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'r' THEN NULL WHEN 'p' THEN NULL
                            ELSE 'relation of kind ' || c.relkind::text END, c.relkind = 'p'
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&self.url.schema, &name],
                ))
                .map_err(pg_err("looking up a table"))?;
            let Some(found) = found else {
                return Err(Error::UnknownTable { table: name.into(), database: self.url.display.clone() });
            };
            if let Some(kind) = found.get::<_, Option<String>>(1) {
                return Err(Error::NotATable { table: name.into(), kind, database: self.url.display.clone() });
            }
            let oid: u32 = found.get(0);
            self.partitioned.lock().expect("partitioned lock").insert(name.to_string(), found.get(2));
            let rows = rt.block_on(client.query(DESCRIBE, &[&oid])).map_err(pg_err("describing a table"))?;
            let mut fields = Vec::with_capacity(rows.len());
            let mut key: Vec<(i32, usize)> = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                let column: String = row.get(0);
                let sql_type: String = row.get(1);
                let declared: String = row.get(2);
                let fixed = declared.strip_prefix("character(").and_then(|n| n.strip_suffix(')')).map(str::to_string);
                let resolved = resolve(&sql_type).ok_or_else(|| Error::UnsupportedType {
                    table: name.into(),
                    column: column.clone(),
                    type_name: declared.clone(),
                    reason: Some("barge has no mapping for it; `copy --exclude` the table to copy the others".into()),
                })?;
                let mut metadata =
                    HashMap::from([(META_NATIVE_TYPE.to_string(), sql_type), (META_ENGINE.to_string(), ENGINE.into())]);
                match (resolved.array, resolved.codec) {
                    (false, Codec::Json | Codec::Jsonb) => {
                        metadata.insert(META_LOGICAL.to_string(), LOGICAL_JSON.to_string());
                    }
                    (false, Codec::Uuid) => {
                        metadata.insert(META_LOGICAL.to_string(), LOGICAL_UUID.to_string());
                    }
                    (false, Codec::Geometry) => {
                        metadata.insert(META_LOGICAL.to_string(), barge_core::LOGICAL_GEOMETRY.to_string());
                        if let Some(subtype) = crate::geometry::subtype(&declared) {
                            metadata.insert(barge_core::META_GEOMETRY_TYPE.to_string(), subtype.to_string());
                        }
                    }
                    _ => {}
                }
                if let Some(n) = fixed {
                    metadata.insert(barge_core::META_FIXED_CHARS.to_string(), n);
                }
                if let Some(comment) = row.get::<_, Option<String>>(9) {
                    metadata.insert(barge_core::META_COMMENT.to_string(), comment);
                }
                if row.get::<_, bool>(5) {
                    metadata.insert(META_IDENTITY.to_string(), "true".to_string());
                } else {
                    record_default(row.get::<_, Option<String>>(6).as_deref(), &mut metadata);
                }
                if let (Some(enum_type), Some(labels)) =
                    (row.get::<_, Option<String>>(7), row.get::<_, Option<Vec<String>>>(8))
                {
                    metadata.insert(META_ENUM_TYPE.to_string(), enum_type);
                    barge_core::types::record_labels(&labels, META_ENUM, &mut metadata);
                }
                let not_null: bool = row.get(3);
                fields.push(Field::new(column, resolved.arrow(), !not_null).with_metadata(metadata));
                let position: i32 = row.get(4);
                if position > 0 {
                    key.push((position, i));
                }
            }
            let key = KeySpec::from_key_positions(key, KeySpec::Locator(CTID.into()));
            let stats = rt
                .block_on(client.query_one(
                    &format!(
                        "{TREE} SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8,
                                bool_or(c.reltuples < 0 AND c.relkind = 'r')
                         FROM pg_class c JOIN tree USING (oid)"
                    ),
                    &[&oid],
                ))
                .map_err(pg_err("estimating rows"))?;
            let mut estimated_rows = stats.get::<_, f64>(0) as u64;
            if stats.get::<_, Option<bool>>(1).unwrap_or(false) {
                // Never analysed: the estimate is meaningless, and partitioning depends on it.
                let from = if found.get(2) { self.qualified(name) } else { format!("ONLY {}", self.qualified(name)) };
                let count = rt
                    .block_on(client.query_one(&format!("SELECT count(*) FROM {from}"), &[]))
                    .map_err(pg_err("counting rows"))?;
                estimated_rows = u64::try_from(count.get::<_, i64>(0)).unwrap_or(0);
            }
            let mut indexes = Vec::new();
            // Over expressions, partial or of another method than B-tree: in portable SQL, tried
            // on the target after the rows.
            let mut sql_indexes = Vec::new();
            for row in rt.block_on(client.query(INDEXES, &[&oid])).map_err(pg_err("describing indexes"))? {
                let index: String = row.get(0);
                let method: String = row.get(6);
                if row.get::<_, bool>(3) && method == "btree" {
                    indexes.push(IndexInfo { name: index, columns: row.get(2), unique: row.get(1) });
                } else {
                    let keys: Vec<String> = row.get(4);
                    sql_indexes.push(barge_core::SqlIndex {
                        name: index,
                        unique: row.get(1),
                        keys: keys.iter().map(|k| crate::checks::portable_condition(k)).collect(),
                        predicate: row.get::<_, Option<String>>(5).map(|p| crate::checks::portable_condition(&p)),
                        method: (method != "btree").then_some(method),
                    });
                }
            }
            let foreign_keys = rt
                .block_on(client.query(FOREIGN_KEYS, &[&oid]))
                .map_err(pg_err("describing foreign keys"))?
                .iter()
                .map(|r| ForeignKeyInfo {
                    ref_table: r.get(0),
                    columns: r.get(1),
                    ref_columns: r.get(2),
                    name: Some(r.get(3)),
                    on_delete: ForeignKeyInfo::action(r.get(4)),
                    on_update: ForeignKeyInfo::action(r.get(5)),
                })
                .collect();
            let mut checks = Vec::new();
            for row in rt.block_on(client.query(CHECKS, &[&oid])).map_err(pg_err("describing CHECK constraints"))? {
                let (check, condition, columns): (String, String, Vec<String>) = (row.get(0), row.get(1), row.get(2));
                // barge's own CHECK for a MySQL SET: the column's members, as MySQL gave them.
                if let [column] = columns.as_slice()
                    && let Some(members) = crate::checks::set_members(&condition, column)
                    && let Some(i) = fields.iter().position(|f| quote(f.name()) == *column || f.name() == column)
                {
                    let mut metadata: HashMap<String, String> =
                        fields[i].metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    barge_core::types::record_labels(&members, barge_core::META_SET, &mut metadata);
                    fields[i] = fields[i].clone().with_metadata(metadata);
                    continue;
                }
                checks.push(barge_core::CheckInfo { name: check, expr: crate::checks::portable_condition(&condition) });
            }
            Ok(TableInfo {
                name: name.into(),
                schema: Arc::new(Schema::new(fields)),
                key,
                estimated_rows,
                indexes,
                foreign_keys,
                checks,
                sql_indexes,
                comment: rt
                    .block_on(client.query_one("SELECT obj_description($1, 'pg_class')", &[&oid]))
                    .map_err(pg_err("describing a table"))?
                    .get(0),
                filter: None,
                window: None,
            })
        })
    }

    fn row_cap(&self) -> Result<Option<u64>> {
        Ok(Some(crate::MAX_MESSAGE_BYTES))
    }

    fn check_filter(&self, table: &TableInfo) -> Result<()> {
        let sql =
            format!("SELECT 1 FROM {} WHERE {} LIMIT 0", self.rows_of(&table.name)?, table.filtered("true".into()));
        self.with_client(|client| {
            runtime().block_on(client.query(&sql, &[])).map_err(pg_err("checking the row filter"))?;
            Ok(())
        })
    }

    fn widest_row(&self, table: &TableInfo, columns: &[usize]) -> Result<Option<u64>> {
        let sum: Vec<String> = columns
            .iter()
            .map(|&i| {
                let field = table.schema.field(i);
                let column = quote(field.name());
                if native_of(table, field.name()) == "bytea" {
                    format!("coalesce(octet_length({column}), 0)")
                } else {
                    format!("coalesce(octet_length({column}::text), 0)")
                }
            })
            .collect();
        let sql = format!(
            "SELECT max({})::int8 FROM {} WHERE {}",
            sum.join(" + "),
            self.rows_of(&table.name)?,
            table.filtered("true".into())
        );
        self.with_client(|client| {
            let row = runtime().block_on(client.query_one(&sql, &[])).map_err(pg_err("measuring the widest row"))?;
            Ok(row.get::<_, Option<i64>>(0).map(|n| n.max(0) as u64))
        })
    }

    fn column_max(&self, table: &TableInfo, column: &str) -> Result<Option<Scalar>> {
        let native = native_of(table, column);
        let expr = if is_integer(&native) { "max({0})::int8::text" } else { "max({0})::text" };
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            expr.replace("{0}", &quote(column)),
            self.rows_of(&table.name)?,
            table.filtered("true".into())
        );
        self.with_client(|client| {
            let row = runtime().block_on(client.query_one(&sql, &[])).map_err(pg_err("reading a watermark"))?;
            Ok(row.get::<_, Option<String>>(0).map(|v| match v.parse::<i64>() {
                Ok(i) if is_integer(&native) => Scalar::Int(i),
                _ => Scalar::Text(v),
            }))
        })
    }

    fn key_stats(&self, table: &TableInfo, range: &KeyRange) -> Result<KeyStats> {
        let predicate = range_predicate(table, range);
        let qualified = self.rows_of(&table.name)?;
        self.with_client(|client| {
            let rt = runtime();
            if let KeySpec::Locator(_) = table.key {
                // Ranges over ctid are block ranges: report blocks as if they were dense keys, so
                // the partitioner splits them arithmetically. The last range is unbounded, so a
                // table that grew since this size was read is still covered.
                let row = rt
                    .block_on(client.query_one(
                        &format!(
                            "{TREE} SELECT coalesce(max(pg_relation_size(oid) / current_setting('block_size')::int8), 0)
                             FROM tree"
                        ),
                        &[&self.oid_of(client, &table.name)?],
                    ))
                    .map_err(pg_err("measuring a table"))?;
                let blocks: i64 = row.get(0);
                return Ok(KeyStats {
                    rows: u64::try_from(blocks).unwrap_or(0),
                    min: Some(vec![Scalar::Int(0)]),
                    max: Some(vec![Scalar::Int(blocks - 1)]),
                });
            }
            let columns = table.range_columns();
            let single_integer = columns.len() == 1 && is_integer(&native_of(table, &columns[0]));
            if single_integer && table.reads_all(range) {
                // min and max come from the index at once; count(*) would scan the table.
                let row = rt
                    .block_on(client.query_one(
                        &format!("SELECT min({0})::int8, max({0})::int8 FROM {qualified}", quote(&columns[0])),
                        &[],
                    ))
                    .map_err(pg_err("reading key statistics"))?;
                if let (Some(min), Some(max)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
                    && let Some(stats) = KeyStats::dense_by_estimate(table.estimated_rows, min, max)
                {
                    return Ok(stats);
                }
            }
            let select = if single_integer {
                format!("count(*), min({0})::int8, max({0})::int8", quote(&columns[0]))
            } else {
                "count(*)".into()
            };
            let row = rt
                .block_on(client.query_one(&format!("SELECT {select} FROM {qualified} WHERE {predicate}"), &[]))
                .map_err(pg_err("reading key statistics"))?;
            let rows = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            let (min, max) = if single_integer && rows > 0 {
                (Some(vec![Scalar::Int(row.get(1))]), Some(vec![Scalar::Int(row.get(2))]))
            } else {
                (None, None)
            };
            Ok(KeyStats { rows, min, max })
        })
    }

    fn sample_keys(&self, table: &TableInfo, range: &KeyRange, target: usize) -> Result<Vec<Key>> {
        if range.lo.is_none()
            && range.hi.is_none()
            && let Some(bounds) = self.fresh_histogram(table, target)?
        {
            return Ok(bounds);
        }
        let rows = self.key_stats(table, range)?.rows;
        let columns = table.range_columns();
        let natives: Vec<String> = columns.iter().map(|c| native_of(table, c)).collect();
        // Aliased, so that ORDER BY sorts by the key column itself: an output column named like
        // the key (`k::text AS k`) would make ORDER BY k sort the text, out of the key's order.
        let select: Vec<String> = columns
            .iter()
            .zip(&natives)
            .enumerate()
            .map(|(i, (c, n))| {
                let cast = if is_integer(n) { "int8" } else { "text" };
                format!("{}::{cast} AS barge_sample_{i}", quote(c))
            })
            .collect();
        let order: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        // A Bernoulli sample (twice the target, thinned below) for large ranges; every key otherwise.
        let sampling = if rows > (target as u64) * 4 {
            format!(" TABLESAMPLE BERNOULLI ({})", (200.0 * target as f64 / rows as f64).min(100.0))
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {} FROM {}{sampling} WHERE {} ORDER BY {}",
            select.join(", "),
            self.rows_of(&table.name)?,
            range_predicate(table, range),
            order.join(", ")
        );
        self.with_client(|client| {
            let rows = runtime().block_on(client.query(&sql, &[])).map_err(pg_err("sampling keys"))?;
            let step = (rows.len() / target.max(1)).max(1);
            Ok(rows
                .iter()
                .skip(step / 2)
                .step_by(step)
                .map(|row| {
                    (0..columns.len())
                        .map(
                            |i| {
                                if is_integer(&natives[i]) { Scalar::Int(row.get(i)) } else { Scalar::Text(row.get(i)) }
                            },
                        )
                        .collect()
                })
                .collect())
        })
    }

    fn read_range(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: barge_core::BatchSize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.read(table, range, batch, None, &mut |rows, _| emit(rows))
    }

    fn read_range_native(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: barge_core::BatchSize,
        decode: bool,
        emit: &mut dyn FnMut(RecordBatch, Option<Native>) -> Result<()>,
    ) -> Result<()> {
        self.read(table, range, batch, Some(decode), &mut |rows, bytes| {
            emit(rows, bytes.map(|bytes| Native { format: crate::NATIVE_COPY, bytes }))
        })
    }
}

impl barge_core::SnapshotReads for PgSource {
    /// `pg_export_snapshot()` in a REPEATABLE READ transaction of a session of its own, kept open;
    /// every range read imports it (`SET TRANSACTION SNAPSHOT`). No lock is taken.
    fn pin_snapshot(&self, _readers: usize, _lock: bool) -> Result<barge_core::SnapshotInfo> {
        let mut pinned = self.snapshot.lock().expect("snapshot lock");
        if let Some((id, _)) = pinned.as_ref() {
            return Ok(barge_core::SnapshotInfo { consistent: true, detail: format!("PostgreSQL snapshot {id}") });
        }
        let client = connect(&self.url)?;
        let id: String = runtime()
            .block_on(async {
                client
                    .batch_execute(
                        "SET idle_in_transaction_session_timeout = 0; \
                         BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    )
                    .await?;
                client.query_one("SELECT pg_export_snapshot()", &[]).await.map(|row| row.get(0))
            })
            .map_err(pg_err("exporting a snapshot"))?;
        *pinned = Some((id.clone(), client));
        Ok(barge_core::SnapshotInfo { consistent: true, detail: format!("PostgreSQL snapshot {id}") })
    }
}

impl PgSource {
    /// Streams `range` as batches. With `native`, each comes with its rows' binary COPY stream,
    /// and is decoded only when `native` holds true.
    fn read(
        &self,
        table: &TableInfo,
        range: &KeyRange,
        batch: barge_core::BatchSize,
        native: Option<bool>,
        emit: &mut crate::decode::Emit<'_>,
    ) -> Result<()> {
        let columns = column_types(table)?;
        let list: Vec<String> =
            table.schema.fields().iter().zip(&columns).map(|(f, c)| select_expr(f.name(), c)).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT binary)",
            list.join(", "),
            self.rows_of(&table.name)?,
            range_predicate(table, range)
        );
        // A connection of its own while it reads (see `conn::LocalConn` for why), reused by the
        // next range read only when this one read its stream to the end.
        let (local, stream) = self.copy_out(&sql)?;
        let mut stream = Box::pin(stream);
        let mut parser =
            CopyParser::new(table.schema.clone(), &columns, batch.rows.max(1)).with_batch_bytes(batch.bytes);
        if let Some(decode) = native {
            parser = parser.keeping_native(decode);
        }
        // Whether a message as large as a huge row came: the connection's read buffer grew to
        // hold it, and is better closed than kept for the next read.
        let mut huge = false;
        let outcome = loop {
            // I/O only inside block_on: gather COPY messages (one per row) into the parser's buffer…
            let ended = local.rt.block_on(async {
                while let Some(data) = stream.next().await {
                    let data = data?;
                    huge |= data.len() >= crate::decode::PENDING_KEEP_BYTES;
                    parser.append(&data);
                    if parser.buffer().len() >= COPY_CHUNK_BYTES {
                        return Ok(false);
                    }
                }
                Ok::<bool, tokio_postgres::Error>(true)
            });
            let ended = match ended {
                Ok(ended) => ended,
                Err(e) => return Err(pg_err("reading rows")(e)),
            };
            // …and decode them outside.
            if let Err(e) = parser.parse(emit) {
                break Err(e);
            }
            if ended {
                break parser.finish(emit);
            }
        };
        match outcome {
            Ok(()) => {
                drop(stream);
                let in_snapshot = self.snapshot.lock().expect("snapshot lock").is_some();
                if in_snapshot {
                    local
                        .rt
                        .block_on(local.client.batch_execute("COMMIT"))
                        .map_err(pg_err("ending a snapshot read"))?;
                }
                // A connection that carried huge rows keeps a read buffer as large: closed.
                if !huge {
                    self.readers.lock().expect("reader pool lock").push(local);
                }
                Ok(())
            }
            Err(FeedError::Emit(e)) => Err(e),
            Err(FeedError::Decode(e)) => Err(Error::BadValue {
                table: table.name.clone(),
                column: table.schema.field(e.column).name().clone(),
                key: None,
                reason: format!("{} (in range {range})", e.reason),
            }),
        }
    }
}

/// Fewer modified rows than this fraction since the last ANALYZE keeps a histogram fresh.
const FRESH_MODIFIED_FRACTION: f64 = 0.1;
/// Histogram bounds per requested sample key needed to trust the histogram: partitioners ask for a
/// few hundred keys per range, so this keeps at least 4 bounds per range.
const HISTOGRAM_BOUNDS_PER_SAMPLE_KEY: f64 = 1.0 / 64.0;

impl PgSource {
    /// The key's `pg_stats` histogram as sample keys (equi-depth quantiles, in the column's order),
    /// when the key is one column of a table without children, the statistics are fresh and
    /// fine enough for `target`. Saves the sampling scan.
    fn fresh_histogram(&self, table: &TableInfo, target: usize) -> Result<Option<Vec<Key>>> {
        let columns = table.range_columns();
        let ([column], KeySpec::Primary(_)) = (columns.as_slice(), &table.key) else {
            return Ok(None);
        };
        let native = native_of(table, column);
        let integer = is_integer(&native);
        let cast = if integer { "int8" } else { "text" };
        let sql = format!(
            "SELECT b::{cast} FROM pg_stats s
               JOIN pg_stat_user_tables t ON t.schemaname = s.schemaname AND t.relname = s.tablename,
               unnest(s.histogram_bounds::text::{native}[]) WITH ORDINALITY AS u(b, o)
             WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = $3 AND NOT s.inherited
               AND coalesce(t.last_analyze, t.last_autoanalyze) IS NOT NULL
               AND t.n_mod_since_analyze <= {FRESH_MODIFIED_FRACTION} * greatest(t.n_live_tup, 1)
               AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = t.relid)
             ORDER BY o"
        );
        self.with_client(|client| {
            let rows = runtime()
                .block_on(client.query(&sql, &[&self.url.schema, &table.name, column]))
                .map_err(pg_err("reading key statistics"))?;
            if (rows.len() as f64) < target as f64 * HISTOGRAM_BOUNDS_PER_SAMPLE_KEY || rows.len() < 2 {
                return Ok(None);
            }
            Ok(Some(
                rows.iter()
                    .map(|r| vec![if integer { Scalar::Int(r.get(0)) } else { Scalar::Text(r.get(0)) }])
                    .collect(),
            ))
        })
    }

    fn oid_of(&self, client: &Client, table: &str) -> Result<u32> {
        let row = runtime()
            .block_on(client.query_one(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&self.url.schema, &table],
            ))
            .map_err(pg_err("looking up a table"))?;
        Ok(row.get(0))
    }
}

impl barge_core::SchemaDump for PgSource {
    fn dump_schema(&self) -> Result<std::result::Result<Arc<dyn barge_core::DumpedSchema>, String>> {
        Ok(crate::dump::dump(&self.url)?.map(|dump| Arc::new(dump) as Arc<dyn barge_core::DumpedSchema>))
    }
}
