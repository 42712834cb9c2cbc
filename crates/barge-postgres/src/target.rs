//! Writing into PostgreSQL: binary `COPY … FROM STDIN` per batch, several connections in
//! parallel, each in its own transaction with `synchronous_commit = off`.

use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::Field;
use barge_core::{
    BatchEncoder, Encoded, Error, LOGICAL_JSON, LOGICAL_UUID, META_DEFAULT, META_ENGINE, META_IDENTITY, META_LOGICAL,
    META_NATIVE_TYPE, Result, TableWriter, TargetColumn,
};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use crate::ENGINE;
use crate::conn::{LocalConn, PgUrl, connect, connect_local, literal, pg_err, quote, runtime};
use crate::encode::{TargetType, encode_batch, value_writer};
use crate::types::{Codec, resolve, sql_type_for_arrow};

/// Loading sessions do not wait for WAL flushes at commit: a crash can lose the last commits, never
/// corrupt them, and a reloaded range replaces what it wrote.
const LOADING_SESSION: &str = "SET synchronous_commit = off";
/// `pg_type.oid` of `text`.
const TEXT_OID: u32 = 25;

pub struct PgTarget {
    url: PgUrl,
    admin: Mutex<Client>,
}

impl PgTarget {
    pub fn open(url: PgUrl) -> Result<Arc<Self>> {
        let client = connect(&url)?;
        Ok(Arc::new(PgTarget { url, admin: Mutex::new(client) }))
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.url.schema), quote(table))
    }

    fn admin<T>(&self, f: impl FnOnce(&Client) -> Result<T>) -> Result<T> {
        f(&self.admin.lock().expect("admin lock"))
    }

    fn exists(&self, client: &Client, table: &str) -> Result<bool> {
        let row = runtime()
            .block_on(client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.qualified(table)]))
            .map_err(pg_err("looking up a target table"))?;
        Ok(row.get(0))
    }

    /// Each column of an existing table: name, SQL type (enums as text, domains as their base) and
    /// array element OID.
    fn describe(&self, table: &str) -> Result<Vec<(String, String, u32)>> {
        let sql = "SELECT a.attname,
                          CASE WHEN t.typtype = 'e' THEN 'text'
                               WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
                               WHEN et.typtype = 'e' THEN 'text[]'
                               ELSE format_type(a.atttypid, a.atttypmod) END,
                          CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0::oid END
                   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                   LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
                   WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                   ORDER BY a.attnum";
        self.admin(|client| {
            let rows = runtime()
                .block_on(client.query(sql, &[&self.qualified(table)]))
                .map_err(pg_err("describing a target table"))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
        })
    }
}

impl barge_core::Target for PgTarget {
    fn display_name(&self) -> String {
        self.url.display.clone()
    }

    fn table_rows(&self, table: &str) -> Result<Option<u64>> {
        self.admin(|client| {
            if !self.exists(client, table)? {
                return Ok(None);
            }
            let row = runtime()
                .block_on(client.query_one(&format!("SELECT count(*) FROM {}", self.qualified(table)), &[]))
                .map_err(pg_err("counting target rows"))?;
            Ok(Some(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
        })
    }

    fn column_for(&self, table: &str, field: &Field) -> Result<TargetColumn> {
        let meta = field.metadata();
        let native = match (meta.get(META_ENGINE).map(String::as_str), meta.get(META_NATIVE_TYPE)) {
            (Some(ENGINE), Some(native)) => Some(native.clone()),
            _ if meta.get(META_LOGICAL).map(String::as_str) == Some(LOGICAL_JSON) => Some("jsonb".into()),
            _ if meta.get(META_LOGICAL).map(String::as_str) == Some(LOGICAL_UUID) => Some("uuid".into()),
            _ => sql_type_for_arrow(field.data_type()),
        };
        let resolved = native.as_deref().and_then(resolve);
        match (native, resolved) {
            (Some(native_type), Some(resolved)) => Ok(TargetColumn { native_type, read_back: resolved.arrow() }),
            _ => Err(Error::UnsupportedType {
                table: table.into(),
                column: field.name().clone(),
                type_name: field.data_type().to_string(),
                reason: Some("PostgreSQL has no column type for it in barge's mapping".into()),
            }),
        }
    }

    fn create_table(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> Result<()> {
        let defs: Vec<String> = columns
            .iter()
            .map(|(f, c)| {
                // Identity columns keep generating after the load; copied values are explicit, so
                // BY DEFAULT (ALWAYS would refuse them).
                let generated = if is_identity(f, c) { " GENERATED BY DEFAULT AS IDENTITY" } else { "" };
                let not_null = if f.is_nullable() && generated.is_empty() { "" } else { " NOT NULL" };
                let default = match f.metadata().get(META_DEFAULT) {
                    Some(literal) if generated.is_empty() => format!(" DEFAULT {literal}"),
                    _ => String::new(),
                };
                format!("{} {}{generated}{not_null}{default}", quote(f.name()), c.native_type)
            })
            .collect();
        // The primary key is added by `finish_table`, after the data: building a B-tree over loaded
        // rows beats maintaining it row by row (2M rows: 2.4 s with the key during COPY, 1.6 s for
        // COPY then ADD PRIMARY KEY). `key` is the source's, which `finish_table` sees again.
        let _ = key;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {} (\n  {}\n)",
            quote(&self.url.schema),
            self.qualified(name),
            defs.join(",\n  ")
        );
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&ddl))
                .map_err(|e| Error::engine(format!("creating table `{name}`"), crate::conn::describe(&e)))
        })
    }

    fn truncate_table(&self, name: &str) -> Result<()> {
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&format!("TRUNCATE {}", self.qualified(name))))
                .map_err(|e| Error::engine(format!("truncating `{name}`"), crate::conn::describe(&e)))
        })
    }

    fn table_columns(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.describe(name)?.into_iter().map(|(n, _, _)| n).collect())
    }

    fn finish_table(&self, table: &str, source: &barge_core::TableInfo) -> Result<()> {
        let qualified = self.qualified(table);
        let key = source.key_columns();
        let primary_key = (!key.is_empty()).then(|| {
            format!(
                "ALTER TABLE {qualified} ADD PRIMARY KEY ({})",
                key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
            )
        });
        let mut ddl: Vec<String> = primary_key
            .into_iter()
            .chain(source.indexes.iter().map(|index| {
                format!(
                    "CREATE {}INDEX ON {qualified} ({})",
                    if index.unique { "UNIQUE " } else { "" },
                    index.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
                )
            }))
            .collect();
        for field in source.schema.fields() {
            let column = self.column_for(table, field)?;
            if is_identity(field, &column) {
                let name = quote(field.name());
                ddl.push(format!(
                    "SELECT setval(pg_get_serial_sequence({}, {}), coalesce(max({name}), 0) + 1, false) FROM {qualified}",
                    literal(&qualified),
                    literal(field.name())
                ));
            }
        }
        self.admin(|client| {
            for statement in &ddl {
                runtime()
                    .block_on(client.batch_execute(statement))
                    .map_err(|e| Error::engine(format!("finishing `{table}`"), crate::conn::describe(&e)))?;
            }
            Ok(())
        })
    }

    fn add_foreign_keys(&self, table: &str, foreign_keys: &[barge_core::ForeignKeyInfo]) -> Result<()> {
        let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        self.admin(|client| {
            for fk in foreign_keys {
                let ddl = format!(
                    "ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {} ({})",
                    self.qualified(table),
                    list(&fk.columns),
                    self.qualified(&fk.ref_table),
                    list(&fk.ref_columns)
                );
                runtime().block_on(client.batch_execute(&ddl)).map_err(|e| {
                    Error::engine(format!("adding a foreign key to `{table}`"), crate::conn::describe(&e))
                })?;
            }
            Ok(())
        })
    }

    fn encoder(&self, table: &str, fields: &[Field]) -> Result<Arc<dyn BatchEncoder>> {
        let described = self.describe(table)?;
        let targets = fields
            .iter()
            .map(|f| {
                let (_, sql_type, element_oid) = described
                    .iter()
                    .find(|(n, _, _)| n == f.name())
                    .ok_or_else(|| Error::UnknownColumn { table: table.into(), column: f.name().clone() })?;
                let column = resolve(sql_type).ok_or_else(|| Error::UnsupportedType {
                    table: table.into(),
                    column: f.name().clone(),
                    type_name: sql_type.clone(),
                    reason: Some("barge cannot write this target column type".into()),
                })?;
                // Text-staged arrays travel as text[] into the staging table.
                let element_oid = if column.codec == Codec::AsText { TEXT_OID } else { *element_oid };
                let target = TargetType { column, element_oid };
                // An existing column that cannot take this Arrow type fails here, before any row.
                if value_writer(arrow_array::new_empty_array(f.data_type()).as_ref(), &target).is_none() {
                    return Err(Error::UnsupportedType {
                        table: table.into(),
                        column: f.name().clone(),
                        type_name: f.data_type().to_string(),
                        reason: Some(format!("the target column is {sql_type}")),
                    });
                }
                Ok(target)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(PgEncoder {
            table: table.into(),
            names: fields.iter().map(|f| f.name().clone()).collect(),
            targets,
        }))
    }

    fn writer(&self, table: &str, fields: &[Field]) -> Result<Box<dyn TableWriter>> {
        let described = self.describe(table)?;
        let conn = connect_local(&self.url)?;
        conn.rt
            .block_on(conn.client.batch_execute(LOADING_SESSION))
            .map_err(pg_err("configuring a loading session"))?;
        let names: Vec<String> = fields.iter().map(|f| quote(f.name())).collect();
        let target_sql = |name: &str| described.iter().find(|(n, _, _)| n == name).map(|(_, t, _)| t.clone());
        // Columns without a binary codec (inet, tsvector, …) arrive as text in a staging table and
        // are cast by the server on the way in.
        let needs_staging = fields
            .iter()
            .any(|f| target_sql(f.name()).and_then(|t| resolve(&t)).is_some_and(|t| t.codec == Codec::AsText));
        let staging = needs_staging.then(|| {
            let stage = quote(&format!("barge_stage_{table}"));
            let as_text: Vec<String> = fields
                .iter()
                .map(|f| {
                    let sql_type = target_sql(f.name()).unwrap_or_default();
                    match resolve(&sql_type) {
                        Some(t) if t.codec == Codec::AsText && t.array => format!("{}::text[] AS {0}", quote(f.name())),
                        Some(t) if t.codec == Codec::AsText => format!("{}::text AS {0}", quote(f.name())),
                        _ => quote(f.name()),
                    }
                })
                .collect();
            let cast_back: Vec<String> = fields
                .iter()
                .map(|f| match target_sql(f.name()) {
                    Some(t) if resolve(&t).is_some_and(|r| r.codec == Codec::AsText) => {
                        format!("{}::{t}", quote(f.name()))
                    }
                    _ => quote(f.name()),
                })
                .collect();
            Staging {
                create: format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {} FROM {} WITH NO DATA",
                    as_text.join(", "),
                    self.qualified(table)
                ),
                copy: format!("COPY {stage} ({}) FROM STDIN (FORMAT binary)", names.join(", ")),
                apply: format!(
                    "INSERT INTO {} ({}) SELECT {} FROM {stage}; TRUNCATE {stage}",
                    self.qualified(table),
                    names.join(", "),
                    cast_back.join(", ")
                ),
            }
        });
        let copy = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", self.qualified(table), names.join(", "));
        Ok(Box::new(PgWriter { conn, table: table.into(), copy, staging, in_transaction: false }))
    }
}

/// An identity the target can generate: marked by the source, and of an integer type here.
fn is_identity(field: &Field, column: &TargetColumn) -> bool {
    field.metadata().contains_key(META_IDENTITY)
        && resolve(&column.native_type)
            .is_some_and(|t| !t.array && matches!(t.codec, Codec::Int2 | Codec::Int4 | Codec::Int8))
}

struct PgEncoder {
    table: String,
    names: Vec<String>,
    targets: Vec<TargetType>,
}

impl BatchEncoder for PgEncoder {
    fn encode(&self, batch: RecordBatch) -> Result<Encoded> {
        let rows = batch.num_rows();
        let bytes = encode_batch(&batch, &self.targets).map_err(|(column, reason)| Error::BadValue {
            table: self.table.clone(),
            column: self.names.get(column).cloned().unwrap_or_default(),
            key: None,
            reason,
        })?;
        Ok(Encoded::Bytes { rows, bytes })
    }
}

struct Staging {
    create: String,
    copy: String,
    apply: String,
}

/// Owns a private connection (see `conn::LocalConn`): the writer thread drives its own socket.
struct PgWriter {
    conn: LocalConn,
    table: String,
    copy: String,
    staging: Option<Staging>,
    in_transaction: bool,
}

impl TableWriter for PgWriter {
    fn write(&mut self, batch: Encoded) -> Result<u64> {
        let Encoded::Bytes { rows, bytes } = batch else {
            return Err(Error::Config("the PostgreSQL writer takes COPY payloads".into()));
        };
        let begin = !self.in_transaction;
        self.in_transaction = true;
        let (client, staging, copy) = (&self.conn.client, &self.staging, &self.copy);
        let table = &self.table;
        let failed = |e: tokio_postgres::Error| Error::engine(format!("loading `{table}`"), crate::conn::describe(&e));
        let copied = self.conn.rt.block_on(async {
            if begin {
                client.batch_execute("BEGIN").await?;
            }
            let statement = match staging {
                Some(s) => {
                    client.batch_execute(&s.create).await?;
                    &s.copy
                }
                None => copy,
            };
            let sink = client.copy_in::<_, Bytes>(statement.as_str()).await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from(bytes)).await?;
            let copied = sink.finish().await?;
            if let Some(s) = staging {
                client.batch_execute(&s.apply).await?;
            }
            Ok::<u64, tokio_postgres::Error>(copied)
        });
        let copied = copied.map_err(failed)?;
        if copied != rows as u64 {
            return Err(Error::engine(format!("loading `{table}`"), format!("COPY stored {copied} of {rows} rows")));
        }
        Ok(copied)
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            let table = &self.table;
            self.conn
                .rt
                .block_on(self.conn.client.batch_execute("COMMIT"))
                .map_err(|e| Error::engine(format!("committing `{table}`"), crate::conn::describe(&e)))?;
            self.in_transaction = false;
        }
        Ok(())
    }
}
