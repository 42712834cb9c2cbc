//! Writing into PostgreSQL: binary `COPY … FROM STDIN` per batch, several connections in
//! parallel, each in its own transaction, committed durably (`synchronous_commit = on`) before the
//! runtime records its ranges in the ledger.

use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field};
use barge_core::types::labels;
use barge_core::{
    BatchEncoder, Conflict, Encoded, Error, LOGICAL_GEOMETRY, LOGICAL_JSON, LOGICAL_UUID, META_ENGINE, META_ENUM,
    META_ENUM_TYPE, META_IDENTITY, META_NATIVE_TYPE, META_SET, Native, Result, TableWriter, TargetColumn, WriteOptions,
    choose_column,
};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use crate::ENGINE;
use crate::conn::{LocalConn, PgUrl, connect, connect_local, literal, pg_err, quote, runtime};
use crate::encode::{TargetType, encode_batch, value_writer};
use crate::types::{Codec, resolve, sql_type_for_arrow};

/// A commit returns only once its WAL is flushed, whatever the server's default: the runtime records
/// a range as done right after its commit, and a server crash must not lose what the ledger holds
/// (with `off`, 5 of 8 crash runs lost committed ranges). One flush per group commit (a few per
/// table) costs nothing measurable: the data's WAL is written during the load either way.
/// Tables load in parallel, in no order: a superuser's loading session skips foreign-key checks
/// and triggers (`session_replication_role = replica`, as pgcopydb loads), so a child's rows may
/// come before their parent's in tables that already have their keys (a rerun); the copy's
/// verification proves every row is the source's. Another user's session checks them.
const LOADING_SESSION: &str = "SET synchronous_commit = on;
    DO $$ BEGIN
      IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        SET session_replication_role = replica;
      END IF;
    END $$";
/// The largest COPY data message a writer sends.
const COPY_IN_PIECE_BYTES: usize = 1 << 20;
/// `pg_type.oid` of `text`.
const TEXT_OID: u32 = 25;

pub struct PgTarget {
    url: PgUrl,
    admin: Mutex<Client>,
    /// Loading sessions of writers that finished cleanly, for the next writers (a distributed
    /// run's worker opens writers range after range).
    writers: Arc<Mutex<Vec<LocalConn>>>,
    /// Whether PostGIS is available, once asked.
    postgis: Mutex<Option<bool>>,
}

impl PgTarget {
    pub fn open(url: PgUrl) -> Result<Arc<Self>> {
        let client = connect(&url).map_err(|e| match e {
            Error::SourceNotFound(db) => Error::TargetNotFound(db),
            other => other,
        })?;
        Ok(Arc::new(PgTarget { url, admin: Mutex::new(client), writers: Arc::default(), postgis: Mutex::new(None) }))
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.url.schema), quote(table))
    }

    /// What a statement that counts or removes a table's rows names: `ONLY schema.table`, so an
    /// inheritance parent's statement leaves its children's rows alone, or the table itself when
    /// it is partitioned (its rows are its partitions').
    fn rows_of(&self, client: &Client, table: &str) -> Result<String> {
        let row =
            runtime()
                .block_on(client.query_opt(
                    "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)",
                    &[&self.qualified(table)],
                ))
                .map_err(pg_err("looking up a target table"))?;
        Ok(match row {
            Some(r) if r.get::<_, bool>(0) => self.qualified(table),
            _ => format!("ONLY {}", self.qualified(table)),
        })
    }

    /// Runs `ddl` (names unqualified) in one transaction with the target's schema first on the
    /// search path.
    fn in_schema(&self, ddl: &str, context: impl FnOnce() -> String) -> Result<()> {
        let sql = format!("BEGIN; SET LOCAL search_path = {}; {ddl}; COMMIT", crate::conn::quote(&self.url.schema));
        self.admin(|client| {
            let rt = runtime();
            rt.block_on(client.batch_execute(&sql)).map_err(|e| {
                let _ = rt.block_on(client.batch_execute("ROLLBACK"));
                Error::engine(context(), crate::conn::describe(&e))
            })
        })
    }

    /// Runs `f` on the admin connection, reconnecting first when the server closed it (a restart:
    /// the retried ranges of a run need a live connection to describe the table again).
    fn admin<T>(&self, f: impl FnOnce(&Client) -> Result<T>) -> Result<T> {
        let mut admin = self.admin.lock().expect("admin lock");
        if admin.is_closed() {
            *admin = connect(&self.url)?;
        }
        f(&admin)
    }

    fn exists(&self, client: &Client, table: &str) -> Result<bool> {
        let row = runtime()
            .block_on(client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.qualified(table)]))
            .map_err(pg_err("looking up a target table"))?;
        Ok(row.get(0))
    }

    /// Whether the target has PostGIS, or can create it (`CREATE EXTENSION` in the table's DDL).
    fn postgis(&self) -> Result<bool> {
        if let Some(known) = *self.postgis.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(known);
        }
        let available = self.admin(|client| {
            let row = runtime()
                .block_on(
                    client
                        // Installed in the database, or installable by this user: PostGIS is not a
                        // trusted extension, so only a superuser can create it.
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis')
                                 OR EXISTS (SELECT 1 FROM pg_available_extension_versions
                                            WHERE name = 'postgis'
                                              AND (trusted OR (SELECT rolsuper FROM pg_roles
                                                               WHERE rolname = current_user)))",
                            &[],
                        ),
                )
                .map_err(pg_err("looking for PostGIS"))?;
            Ok(row.get::<_, bool>(0))
        })?;
        *self.postgis.lock().unwrap_or_else(|e| e.into_inner()) = Some(available);
        Ok(available)
    }

    /// The enumeration type of a column with [`META_ENUM`] labels, in the target's schema: the
    /// source's own type name, or `<table>_<column>`.
    fn enum_type(&self, table: &str, field: &Field) -> String {
        let name = match field.metadata().get(META_ENUM_TYPE) {
            Some(name) => name.clone(),
            None => format!("{table}_{}", field.name()),
        };
        format!("{}.{}", quote(&self.url.schema), quote(&name))
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
    fn unstorable(&self) -> barge_core::values::Unstorable {
        barge_core::values::Unstorable { non_finite_floats: false, nul_in_text: true, days: None, engine: "PostgreSQL" }
    }

    fn display_name(&self) -> String {
        self.url.display.clone()
    }

    fn row_limit(&self) -> Result<Option<barge_core::RowLimit>> {
        Ok(Some(barge_core::RowLimit {
            bytes: crate::MAX_MESSAGE_BYTES,
            setting: "PostgreSQL's 1 GB limit on one message, which no setting raises".into(),
        }))
    }

    fn identity(&self) -> Result<Option<String>> {
        self.admin(|client| crate::conn::identity(client, &self.url.schema).map(Some))
    }

    fn table_exists(&self, table: &str) -> Result<bool> {
        self.admin(|client| self.exists(client, table))
    }

    fn table_rows(&self, table: &str) -> Result<Option<u64>> {
        self.admin(|client| {
            if !self.exists(client, table)? {
                return Ok(None);
            }
            let row = runtime()
                .block_on(client.query_one(&format!("SELECT count(*) FROM {}", self.rows_of(client, table)?), &[]))
                .map_err(pg_err("counting target rows"))?;
            Ok(Some(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
        })
    }

    fn column_for(&self, table: &str, field: &Field) -> Result<TargetColumn> {
        if labels(field, META_ENUM).is_some() {
            return Ok(TargetColumn {
                native_type: self.enum_type(table, field),
                read_back: DataType::Utf8,
                note: None,
            });
        }
        if barge_core::logical_type(field) == Some(LOGICAL_GEOMETRY) && !self.postgis()? {
            return Ok(TargetColumn {
                native_type: "bytea".into(),
                read_back: DataType::Binary,
                note: Some(
                    "PostGIS is not available on the target (not installed, and this user cannot create it): kept \
                     as bytea, a 4-byte little-endian SRID then WKB"
                        .into(),
                ),
            });
        }
        choose_column(
            ENGINE,
            "PostgreSQL",
            table,
            field,
            |logical, data_type| match (logical, barge_core::types::max_chars(field)) {
                (Some(LOGICAL_JSON), _) => Some("jsonb".into()),
                (Some(LOGICAL_UUID), _) => Some("uuid".into()),
                (Some(LOGICAL_GEOMETRY), _) => Some(crate::geometry::column_type(field)),
                // PostgreSQL's largest declared length; fixed-length text stays fixed-length.
                (None, Some(n)) if n <= 10_485_760 && barge_core::types::fixed_chars(field).is_some() => {
                    Some(format!("character({n})"))
                }
                (None, Some(n)) if n <= 10_485_760 => Some(format!("character varying({n})")),
                _ => sql_type_for_arrow(data_type),
            },
            |native| resolve(native).map(|r| r.arrow()),
        )
    }

    fn table_ddl(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> String {
        // Enumerations first: the type the source declared, or `<table>_<column>` for another
        // engine's ENUM (as pgloader names them); one that exists already is taken as it is.
        let types: String = columns
            .iter()
            .filter_map(|(f, c)| {
                let labels = labels(f, META_ENUM)?;
                let labels: Vec<String> = labels.iter().map(|l| literal(l)).collect();
                Some(format!(
                    "DO $barge$ BEGIN CREATE TYPE {} AS ENUM ({}); \
                     EXCEPTION WHEN duplicate_object THEN NULL; END $barge$;\n",
                    c.native_type,
                    labels.join(", ")
                ))
            })
            .collect();
        let defs: Vec<String> = columns
            .iter()
            .map(|(f, c)| {
                // Identity columns keep generating after the load; copied values are explicit, so
                // BY DEFAULT (ALWAYS would refuse them).
                let generated = if is_identity(f, c) { " GENERATED BY DEFAULT AS IDENTITY" } else { "" };
                let not_null = if f.is_nullable() && generated.is_empty() { "" } else { " NOT NULL" };
                let default = match barge_core::types::default_sql(f, pg_default) {
                    Some(default) if generated.is_empty() => format!(" DEFAULT {default}"),
                    _ => String::new(),
                };
                // A MySQL SET stays text, held to its members.
                let check = match labels(f, META_SET) {
                    Some(members) if labels(f, META_ENUM).is_none() => format!(
                        " CHECK ({column} = '' OR string_to_array({column}, ',') <@ ARRAY[{}]::text[])",
                        members.iter().map(|m| literal(m)).collect::<Vec<_>>().join(", "),
                        column = quote(f.name())
                    ),
                    _ => String::new(),
                };
                format!("{} {}{generated}{not_null}{default}{check}", quote(f.name()), c.native_type)
            })
            .collect();
        // The primary key is added by `finish_table`, after the data: building a B-tree over loaded
        // rows beats maintaining it row by row (2M rows: 2.4 s with the key during COPY, 1.6 s for
        // COPY then ADD PRIMARY KEY). `key` is the source's, which `finish_table` sees again.
        let _ = key;
        let postgis = if columns.iter().any(|(_, c)| c.native_type.starts_with("geometry")) {
            "CREATE EXTENSION IF NOT EXISTS postgis;\n"
        } else {
            ""
        };
        let comments: String = columns
            .iter()
            .filter_map(|(f, _)| {
                let comment = f.metadata().get(barge_core::META_COMMENT)?;
                Some(format!(
                    ";\nCOMMENT ON COLUMN {}.{} IS {}",
                    self.qualified(name),
                    quote(f.name()),
                    literal(comment)
                ))
            })
            .collect();
        format!(
            "CREATE SCHEMA IF NOT EXISTS {};\n{postgis}{types}CREATE TABLE {} (\n  {}\n){comments}",
            quote(&self.url.schema),
            self.qualified(name),
            defs.join(",\n  ")
        )
    }

    fn create_table(&self, name: &str, columns: &[(Field, TargetColumn)], key: &[String]) -> Result<()> {
        let ddl = self.table_ddl(name, columns, key);
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&ddl))
                .map_err(|e| Error::engine(format!("creating table `{name}`"), crate::conn::describe(&e)))
        })
    }

    fn truncate_table(&self, name: &str) -> Result<()> {
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&format!("TRUNCATE {}", self.rows_of(client, name)?)))
                .map_err(|e| Error::engine(format!("truncating `{name}`"), crate::conn::describe(&e)))
        })
    }

    fn keeps_comments(&self) -> bool {
        true
    }

    fn comment_table(&self, name: &str, comment: &str) -> Result<()> {
        let sql = format!("COMMENT ON TABLE {} IS {}", self.qualified(name), literal(comment));
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&sql))
                .map_err(|e| Error::engine(format!("commenting `{name}`"), crate::conn::describe(&e)))
        })
    }

    fn truncate_tables(&self, names: &[String]) -> Result<()> {
        // One statement: PostgreSQL allows it when every table referencing one of them is in it.
        // An empty table that references one (a child a failed run left empty) joins it, which
        // removes nothing; one with rows does not, and PostgreSQL refuses, as it must.
        self.admin(|client| {
            let rt = runtime();
            let qualified: Vec<String> = names.iter().map(|n| self.qualified(n)).collect();
            let children = rt
                .block_on(client.query(
                    "SELECT DISTINCT c.conrelid::regclass::text FROM pg_constraint c
                     WHERE c.contype = 'f' AND c.confrelid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) t)
                       AND c.conrelid <> ALL (SELECT to_regclass(t) FROM unnest($1::text[]) t)",
                    &[&qualified],
                ))
                .map_err(pg_err("truncating tables"))?;
            let mut list = names.iter().map(|n| self.rows_of(client, n)).collect::<Result<Vec<_>>>()?;
            for child in children.iter().map(|r| r.get::<_, String>(0)) {
                let empty = rt
                    .block_on(client.query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {child})"), &[]))
                    .map_err(pg_err("truncating tables"))?;
                if empty.get::<_, bool>(0) {
                    list.push(child);
                }
            }
            rt.block_on(client.batch_execute(&format!("TRUNCATE {}", list.join(", "))))
                .map_err(|e| Error::engine("truncating tables", crate::conn::describe(&e)))
        })
    }

    fn drop_table(&self, name: &str) -> Result<()> {
        // Not CASCADE: an object that depends on the table keeps it.
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&format!("DROP TABLE {}", self.qualified(name))))
                .map_err(|e| Error::engine(format!("dropping `{name}`"), crate::conn::describe(&e)))
        })
    }

    fn create_view(&self, view: &barge_core::ViewDef) -> Result<()> {
        // The SELECT names its tables unqualified: resolved in the target's schema.
        let ddl = view.create_sql(crate::conn::quote);
        self.in_schema(&ddl, || format!("creating view `{}`", view.name))
    }

    fn add_index(&self, table: &str, index: &barge_core::SqlIndex) -> Result<()> {
        let ddl = index.create_sql(table, crate::conn::quote, true);
        self.in_schema(&ddl, || format!("building index `{}` of `{table}`", index.name))
    }

    fn add_check(&self, table: &str, check: &barge_core::CheckInfo) -> Result<()> {
        let ddl = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})",
            crate::conn::quote(table),
            crate::conn::quote(&check.name),
            check.expr
        );
        self.in_schema(&ddl, || format!("adding CHECK constraint `{}` to `{table}`", check.name))
    }

    fn required_columns(&self, name: &str) -> Result<Vec<String>> {
        let sql = "SELECT a.attname::text FROM pg_attribute a
                   WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
                   ORDER BY a.attnum";
        self.admin(|client| {
            let rows = runtime()
                .block_on(client.query(sql, &[&self.qualified(name)]))
                .map_err(pg_err("describing a target table"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn table_columns(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.describe(name)?.into_iter().map(|(n, _, _)| n).collect())
    }

    fn encoder(&self, table: &str, fields: &[Field]) -> Result<Arc<dyn BatchEncoder>> {
        let described = self.describe(table)?;
        let targets = fields
            .iter()
            .map(|f| {
                let (_, sql_type, element_oid) = described.iter().find(|(n, _, _)| n == f.name()).ok_or_else(|| {
                    Error::UnknownColumn { side: "target", table: table.into(), column: f.name().clone() }
                })?;
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
        let native = fields
            .iter()
            .all(|f| takes_unchanged(f, described.iter().find(|(n, _, _)| n == f.name()).map(|(_, t, _)| t.as_str())));
        Ok(Arc::new(PgEncoder {
            table: table.into(),
            names: fields.iter().map(|f| f.name().clone()).collect(),
            targets,
            native,
        }))
    }

    fn writer(&self, table: &str, fields: &[Field], options: &WriteOptions) -> Result<Box<dyn TableWriter>> {
        let described = self.describe(table)?;
        let conn = match self.pooled_writer() {
            Some(conn) => conn,
            None => {
                let conn = connect_local(&self.url)?;
                conn.rt
                    .block_on(conn.client.batch_execute(LOADING_SESSION))
                    .map_err(pg_err("configuring a loading session"))?;
                conn
            }
        };
        let names: Vec<String> = fields.iter().map(|f| quote(f.name())).collect();
        let target_sql = |name: &str| described.iter().find(|(n, _, _)| n == name).map(|(_, t, _)| t.clone());
        // Columns without a binary codec (inet, tsvector, …) arrive as text in a staging table and
        // are cast by the server on the way in.
        let has_text_columns = fields
            .iter()
            .any(|f| target_sql(f.name()).and_then(|t| resolve(&t)).is_some_and(|t| t.codec == Codec::AsText));
        let needs_staging = options.conflict != Conflict::Error || has_text_columns;
        let names_plain: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let on_conflict = barge_sql::on_conflict_clause(options, &names_plain, quote)?;
        // A staging table's columns (text where the column has no binary codec), and their values
        // in the target's types again.
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
                Some(t) if resolve(&t).is_some_and(|r| r.codec == Codec::AsText) => format!("{}::{t}", quote(f.name())),
                _ => quote(f.name()),
            })
            .collect();
        let stage_sql = |stage: &str| {
            (
                format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {} FROM {} WITH NO DATA",
                    as_text.join(", "),
                    self.qualified(table)
                ),
                format!("COPY {stage} ({}) FROM STDIN (FORMAT binary)", names.join(", ")),
            )
        };
        let staging = needs_staging.then(|| {
            let stage = quote(&format!("barge_stage_{table}"));
            let (create, copy) = stage_sql(&stage);
            Staging {
                create,
                copy,
                // Copied values of GENERATED ALWAYS identity columns go in as they are, as COPY
                // takes them.
                apply: format!(
                    "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {stage}{on_conflict}; TRUNCATE {stage}",
                    self.qualified(table),
                    names.join(", "),
                    cast_back.join(", ")
                ),
            }
        });
        let rows_of = self.admin(|client| self.rows_of(client, table))?;
        // Rows deleted whole (changes to a table without a key): staged, then every row whose
        // columns' text is a staged row's (NULL-safe, and defined for types without equality).
        let gone = {
            let stage = quote(&format!("barge_gone_{table}"));
            let (create, copy) = stage_sql(&stage);
            let row = |items: Vec<String>| format!("ROW({})::text", items.join(", "));
            let delete = format!(
                "DELETE FROM {rows_of} AS t WHERE {} IN (SELECT {} FROM {stage})",
                row(names.iter().map(|n| format!("t.{n}")).collect()),
                row(cast_back.clone())
            );
            GoneRows { stage: Staging { create, copy, apply: delete }, empty: format!("TRUNCATE {stage}") }
        };
        let copy = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", self.qualified(table), names.join(", "));
        let direct = (options.conflict == Conflict::Upsert && !options.isolate_rows && !has_text_columns).then_some(0);
        Ok(Box::new(PgWriter {
            conn: Some(conn),
            pool: self.writers.clone(),
            used_temp: false,
            table: table.into(),
            gone,
            direct,
            rows_of,
            types: described.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect(),
            copy,
            staging,
            isolate: options.isolate_rows,
            in_transaction: false,
            positions: self.qualified(barge_core::POSITIONS_TABLE),
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
        let pids: Vec<i32> = sessions.iter().filter_map(|s| s.parse().ok()).collect();
        if pids.is_empty() {
            return Ok(Vec::new());
        }
        self.admin(|client| {
            let rt = runtime();
            let waiting = rt
                .block_on(client.query(
                    "SELECT pid, coalesce(wait_event_type, ''), coalesce(wait_event, ''), coalesce(state, ''),
                            pg_blocking_pids(pid) FROM pg_stat_activity
                     WHERE pid = ANY($1) AND wait_event_type IS NOT NULL AND wait_event_type <> 'Client'",
                    &[&pids],
                ))
                .map_err(pg_err("reading what sessions wait on"))?;
            let mut lines = Vec::new();
            for row in waiting {
                let (pid, kind, event, blockers): (i32, String, String, Vec<i32>) =
                    (row.get(0), row.get(1), row.get(2), row.get(4));
                let held = rt
                    .block_on(client.query(
                        "SELECT pid, coalesce(state, ''), coalesce(usename::text, ''),
                                coalesce(extract(epoch FROM now() - xact_start), 0)::float8,
                                coalesce(application_name, '')
                         FROM pg_stat_activity WHERE pid = ANY($1) ORDER BY pid",
                        &[&blockers],
                    ))
                    .map_err(pg_err("reading who blocks a session"))?
                    .iter()
                    .map(|b| {
                        let (pid, state, user, secs, app): (i32, String, String, f64, String) =
                            (b.get(0), b.get(1), b.get(2), b.get(3), b.get(4));
                        let app = if app.is_empty() { String::new() } else { format!(", application {app}") };
                        format!("pid {pid} ({state} {secs:.0} s, user {user}{app})")
                    })
                    .collect::<Vec<_>>();
                let by = if held.is_empty() { String::new() } else { format!(" held by {}", held.join(", ")) };
                lines.push(format!("target session {pid} waits on {kind}/{event}{by}"));
            }
            Ok(lines)
        })
    }

    fn end_sessions(&self, sessions: &[String]) -> Result<()> {
        let pids: Vec<i32> = sessions.iter().filter_map(|s| s.parse().ok()).collect();
        if pids.is_empty() {
            return Ok(());
        }
        self.admin(|client| {
            let rt = runtime();
            rt.block_on(
                client.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1)", &[&pids]),
            )
            .map_err(pg_err("ending an earlier worker's sessions"))?;
            let deadline = std::time::Instant::now() + SESSIONS_GONE;
            loop {
                let left: i64 = rt
                    .block_on(client.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", &[&pids]))
                    .map_err(pg_err("waiting for ended sessions"))?
                    .get(0);
                if left == 0 {
                    return Ok(());
                }
                if std::time::Instant::now() > deadline {
                    return Err(Error::engine("ending an earlier worker's sessions", format!("{left} still there")));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    }

    fn add_column(&self, table: &str, field: &Field, column: &TargetColumn) -> Result<()> {
        let sql = format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
            self.qualified(table),
            quote(field.name()),
            column.native_type
        );
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&sql))
                .map_err(|e| crate::conn::error_of(format!("adding a column to `{table}`"), &e))
        })
    }
}

/// A key value as a literal of its column's SQL type.
fn key_literal(value: &serde_json::Value, sql_type: &str) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => format!("{}::{sql_type}", literal(s)),
        other => format!("{}::{sql_type}", literal(&other.to_string())),
    }
}

/// Whether the target has its `barge_sync` table, `table` (reading positions creates nothing).
fn positions_exist(client: &tokio_postgres::Client, table: &str) -> Result<bool> {
    Ok(runtime()
        .block_on(client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]))
        .map_err(pg_err("looking up barge_sync"))?
        .get(0))
}

impl PgTarget {
    /// The rows `query` (its `{}` the qualified `barge_sync`) reads, for `context`; none where
    /// the table does not exist (reading creates nothing).
    fn positions_rows(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        context: &'static str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let table = self.qualified(barge_core::POSITIONS_TABLE);
        self.admin(|client| {
            if !positions_exist(client, &table)? {
                return Ok(Vec::new());
            }
            runtime().block_on(client.query(&query.replace("{}", &table), params)).map_err(pg_err(context))
        })
    }
}

impl barge_core::ChangePositions for PgTarget {
    fn positions(&self, stream: &str) -> Result<Vec<(String, u64)>> {
        let rows = self.positions_rows(
            "SELECT tbl, position FROM {} WHERE stream = $1",
            &[&stream],
            "reading change positions",
        )?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect())
    }

    fn record(&self, stream: &str, table: &str, position: u64) -> Result<()> {
        let positions = self.qualified(barge_core::POSITIONS_TABLE);
        let sql = record_sql(&positions);
        self.admin(|client| {
            let rt = runtime();
            // One transaction: the table cannot be dropped (by the last other stream's forget)
            // between its creation and the row.
            rt.block_on(client.batch_execute(&format!("BEGIN; {}", positions_ddl(&positions))))
                .map_err(pg_err("creating barge_sync"))?;
            let recorded = rt
                .block_on(client.execute(sql.as_str(), &[&stream, &table, &(position as i64)]))
                .map_err(pg_err("recording a change position"));
            let end = if recorded.is_ok() { "COMMIT" } else { "ROLLBACK" };
            rt.block_on(client.batch_execute(end)).map_err(pg_err("recording a change position"))?;
            recorded.map(|_| ())
        })
    }

    fn forget(&self, stream: &str) -> Result<()> {
        let table = self.qualified(barge_core::POSITIONS_TABLE);
        self.admin(|client| {
            let rt = runtime();
            rt.block_on(client.batch_execute(&positions_ddl(&table))).map_err(pg_err("creating barge_sync"))?;
            // The last stream gone, so is the table barge made for them (under the lock its
            // creation takes, so that a stream recording its first position meanwhile waits).
            let sql = format!(
                "DO $barge$ BEGIN PERFORM pg_advisory_xact_lock({POSITIONS_LOCK});
                   DELETE FROM {table} WHERE stream = {stream};
                   IF NOT EXISTS (SELECT 1 FROM {table}) THEN DROP TABLE {table}; END IF;
                 END $barge$",
                stream = literal(stream)
            );
            rt.block_on(client.batch_execute(&sql)).map_err(pg_err("forgetting change positions"))?;
            Ok(())
        })
    }

    fn streams(&self) -> Result<Vec<String>> {
        let rows =
            self.positions_rows("SELECT DISTINCT stream FROM {} ORDER BY stream", &[], "listing change streams")?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
}

/// Sessions of this database other than barge's own (and this one): what a freeze ends.
const OTHER_SESSIONS: &str = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
     AND backend_type = 'client backend' AND application_name IS DISTINCT FROM 'barge'";

/// How long a freeze waits for the sessions it ended to be gone.
const SESSIONS_GONE: std::time::Duration = std::time::Duration::from_secs(10);

impl PgTarget {
    /// Ends the other sessions `filter` (SQL over `pg_stat_activity`) selects, and waits until
    /// they are gone (their transactions rolled back). Returns how many were ended.
    fn end_sessions(&self, client: &tokio_postgres::Client, filter: &str) -> Result<i64> {
        let rt = runtime();
        let ended: i64 = rt
            .block_on(
                client.query_one(&format!("SELECT count(pg_terminate_backend(pid)) {OTHER_SESSIONS} {filter}"), &[]),
            )
            .map_err(pg_err("ending the database's other sessions"))?
            .get(0);
        let deadline = std::time::Instant::now() + SESSIONS_GONE;
        loop {
            let left: i64 = rt
                .block_on(client.query_one(
                    &format!("SELECT count(*) {OTHER_SESSIONS} {filter} AND state IS DISTINCT FROM 'idle'"),
                    &[],
                ))
                .map_err(pg_err("waiting for ended sessions"))?
                .get(0);
            // A session ended mid-transaction is gone once its rollback is done; an idle one
            // has nothing to roll back.
            if left == 0 || std::time::Instant::now() > deadline {
                return Ok(ended);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn database(&self, client: &tokio_postgres::Client) -> Result<String> {
        Ok(runtime()
            .block_on(client.query_one("SELECT current_database()", &[]))
            .map_err(pg_err("naming the database"))?
            .get(0))
    }
}

impl barge_core::SqlScripts for PgTarget {
    fn run_scripts(&self, scripts: &[&str]) -> Result<()> {
        self.admin(|client| {
            let rt = runtime();
            rt.block_on(client.batch_execute("BEGIN")).map_err(pg_err("starting a transaction"))?;
            for script in scripts {
                if let Err(e) = rt.block_on(client.batch_execute(script)) {
                    let _ = rt.block_on(client.batch_execute("ROLLBACK"));
                    return Err(crate::conn::error_of(barge_core::script_label(script), &e));
                }
            }
            rt.block_on(client.batch_execute("COMMIT")).map_err(pg_err("committing the scripts"))
        })
    }

    fn query_text(&self, query: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.admin(|client| {
            let messages = runtime().block_on(client.simple_query(query)).map_err(pg_err("reading a query's rows"))?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect())
        })
    }
}

/// The trigger that freezes one table's writes (an incremental migration's wave).
const FROZEN_TRIGGER: &str = "barge_frozen";
/// How long freezing a table waits for the transactions writing to it.
const FREEZE_LOCK_TIMEOUT: &str = "20s";

impl barge_core::WriteFreeze for PgTarget {
    fn freeze_method(&self) -> String {
        "ALTER DATABASE … SET default_transaction_read_only = on, then every other session of the database ended \
         (barge's own sessions, application_name `barge`, stay writable)"
            .into()
    }

    fn freeze(&self) -> Result<String> {
        self.admin(|client| {
            let database = self.database(client)?;
            let rt = runtime();
            let token: String =
                rt.block_on(client.query_one("SELECT now()::text", &[])).map_err(pg_err("reading the time"))?.get(0);
            rt.block_on(
                client.batch_execute(&format!(
                    "ALTER DATABASE {} SET default_transaction_read_only = on",
                    quote(&database)
                )),
            )
            .map_err(pg_err("freezing writes (ALTER DATABASE … SET default_transaction_read_only)"))?;
            // Sessions opened before the setting write as before: ended (an application
            // reconnects, read-only, and its writes fail with SQLSTATE 25006).
            let ended = self.end_sessions(client, "")?;
            tracing::info!(%database, ended, "writes frozen");
            Ok(token)
        })
    }

    fn unfreeze(&self, token: &str) -> Result<()> {
        self.admin(|client| {
            let database = self.database(client)?;
            runtime()
                .block_on(
                    client.batch_execute(&format!(
                        "ALTER DATABASE {} RESET default_transaction_read_only",
                        quote(&database)
                    )),
                )
                .map_err(pg_err("unfreezing writes (ALTER DATABASE … RESET default_transaction_read_only)"))?;
            // Sessions opened during the freeze are read-only for life: ended, so they reconnect
            // writable.
            let since = if token.is_empty() {
                String::new()
            } else {
                format!("AND backend_start >= {}::timestamptz", literal(token))
            };
            self.end_sessions(client, &since)?;
            Ok(())
        })
    }

    fn freeze_tables(&self, tables: &[String]) -> Result<()> {
        // A statement trigger on each table refuses other sessions' writes (SQLSTATE 25006, as a
        // read-only database does). Creating it takes a lock that waits for every transaction
        // that wrote to the table to end, and that a new writer waits behind: once committed,
        // no earlier write is in flight and no later one gets through.
        let mut sql = format!(
            "SET LOCAL lock_timeout = '{FREEZE_LOCK_TIMEOUT}';
             CREATE OR REPLACE FUNCTION {schema}.barge_refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $barge$
             BEGIN
               IF current_setting('application_name') = 'barge' THEN RETURN NULL; END IF;
               RAISE EXCEPTION 'table %.% is frozen by barge migrate (its wave is switching)',
                 TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = '25006';
             END $barge$;",
            schema = quote(&self.url.schema)
        );
        for table in tables {
            let table = self.qualified(table);
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {FROZEN_TRIGGER} ON {table};
                 CREATE TRIGGER {FROZEN_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                   FOR EACH STATEMENT EXECUTE FUNCTION {}.barge_refuse_writes();",
                quote(&self.url.schema)
            ));
        }
        self.admin(|client| {
            let rt = runtime();
            rt.block_on(client.batch_execute(&format!("BEGIN; {sql} COMMIT;"))).map_err(|e| {
                let _ = rt.block_on(client.batch_execute("ROLLBACK"));
                crate::conn::error_of("freezing writes to the wave's tables (CREATE TRIGGER barge_frozen)", &e)
            })
        })
    }

    fn unfreeze_tables(&self, tables: &[String]) -> Result<()> {
        let sql: String = tables
            .iter()
            .map(|t| format!("DROP TRIGGER IF EXISTS {FROZEN_TRIGGER} ON {};", self.qualified(t)))
            .collect();
        self.admin(|client| {
            runtime()
                .block_on(client.batch_execute(&format!("BEGIN; {sql} COMMIT;")))
                .map_err(pg_err("unfreezing writes to the wave's tables (DROP TRIGGER barge_frozen)"))
        })
    }

    fn frozen_tables(&self) -> Result<Vec<String>> {
        self.admin(|client| {
            let rows = runtime()
                .block_on(client.query(
                    "SELECT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname = $1 AND n.nspname = $2
                     ORDER BY 1",
                    &[&FROZEN_TRIGGER, &self.url.schema],
                ))
                .map_err(pg_err("listing frozen tables"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn frozen(&self) -> Result<bool> {
        self.admin(|client| {
            Ok(runtime()
                .block_on(client.query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
                     WHERE d.datname = current_database() AND s.setrole = 0 \
                     AND 'default_transaction_read_only=on' = ANY (s.setconfig))",
                    &[],
                ))
                .map_err(pg_err("reading the database's settings"))?
                .get(0))
        })
    }
}

/// Creates the positions table unless it exists, under a lock that streams running at once (the
/// waves of a migration) take in turn (two CREATE TABLE IF NOT EXISTS at once can both try).
fn positions_ddl(table: &str) -> String {
    format!(
        "SELECT pg_advisory_xact_lock({POSITIONS_LOCK}); \
         CREATE TABLE IF NOT EXISTS {table} (stream text NOT NULL, tbl text NOT NULL, position int8 NOT NULL, \
         updated timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stream, tbl))"
    )
}

/// The advisory lock taken to create or drop the positions table.
const POSITIONS_LOCK: i64 = 0x6261_7267_6573_796e;

fn record_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (stream, tbl, position) VALUES ($1, $2, $3) ON CONFLICT (stream, tbl) DO UPDATE SET \
         position = EXCLUDED.position, updated = now()"
    )
}

impl barge_core::KeyDeletes for PgTarget {
    fn delete_keys(&self, table: &str, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
        let described = self.describe(table)?;
        let type_of =
            |c: &str| described.iter().find(|(n, _, _)| n == c).map_or("text".to_string(), |(_, t, _)| t.clone());
        let types: Vec<String> = columns.iter().map(|c| type_of(c)).collect();
        let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let rows_of = self.admin(|client| self.rows_of(client, table))?;
        let statements = barge_sql::delete_statements(&rows_of, &quoted, keys, |i, v| key_literal(v, &types[i]));
        let mut deleted = 0;
        for sql in statements {
            deleted += self.admin(|client| {
                runtime()
                    .block_on(client.execute(sql.as_str(), &[]))
                    .map_err(pg_err("deleting rows gone from the source"))
            })?;
        }
        Ok(deleted)
    }
}

impl barge_core::SchemaRestore for PgTarget {
    fn check_restore(&self, dump: &dyn barge_core::DumpedSchema) -> Result<std::result::Result<(), String>> {
        let dump = dump.downcast::<crate::dump::PgDump>()?;
        if dump.schema() != self.url.schema {
            return Ok(Err(format!(
                "the target schema `{}` is not the source's `{}` (pg_dump's objects name their schema), so the \
                 schema is rebuilt by barge",
                self.url.schema,
                dump.schema()
            )));
        }
        let available: Vec<String> = self.admin(|client| {
            let rows = runtime()
                .block_on(client.query("SELECT name::text FROM pg_available_extensions", &[]))
                .map_err(pg_err("listing the target's extensions"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        if let Some(missing) = dump.extensions().iter().find(|e| !available.contains(e)) {
            return Err(Error::Config(format!(
                "the source uses extension `{missing}`, which the target server {} does not have: install it there \
                 (its package for the target's PostgreSQL version), then copy again",
                self.url.display
            )));
        }
        Ok(Ok(()))
    }

    fn restore(&self, dump: &dyn barge_core::DumpedSchema, step: barge_core::RestoreStep<'_>) -> Result<()> {
        let dump = dump.downcast::<crate::dump::PgDump>()?;
        let schema_exists = self.admin(|client| {
            let row =
                runtime()
                    .block_on(client.query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                        &[&self.url.schema],
                    ))
                    .map_err(pg_err("looking up the target schema"))?;
            Ok(row.get::<_, bool>(0))
        })?;
        dump.restore(&self.url, step, schema_exists)
    }
}

impl barge_core::SchemaObjects for PgTarget {
    fn finish_table(&self, table: &str, source: &barge_core::TableInfo) -> Result<()> {
        let qualified = self.qualified(table);
        let key = source.key_columns();
        // Idempotent, so that a resumed run can finish a table an interrupted one half finished
        // (the server completes a statement whose client was killed).
        let (has_key, relation_names) = self.admin(|client| {
            let rt = runtime();
            let has_key = rt
                .block_on(client.query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::text::regclass AND indisprimary)",
                    &[&qualified],
                ))
                .map(|row| row.get::<_, bool>(0))
                .map_err(pg_err("looking up a primary key"))?;
            // Relation names taken in the schema, and for an index, by which table ('' for
            // relations that are not indexes).
            let names = rt
                .block_on(client.query(
                    "SELECT c.relname::text, coalesce(t.relname::text, '')
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
                         WHERE n.nspname = $1",
                    &[&self.url.schema],
                ))
                .map_err(pg_err("listing relations"))?
                .into_iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect::<Vec<_>>();
            Ok((has_key, names))
        })?;
        // The key is built as a unique index, which lets readers through (verification reads the
        // table meanwhile: see `readable_while_finishing`), and attached as the primary key last:
        // that takes an exclusive lock, but only for a catalog update.
        let (build_key, attach_key) = if key.is_empty() || has_key {
            (None, None)
        } else {
            let (name, built) = key_index_name(table, &relation_names, source);
            let (name, columns) = (quote(&name), key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "));
            (
                (!built).then(|| format!("CREATE UNIQUE INDEX {name} ON {qualified} ({columns})")),
                Some(format!("ALTER TABLE {qualified} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}")),
            )
        };
        let mut ddl: Vec<String> = build_key
            .into_iter()
            .chain(source.indexes.iter().filter_map(|index| {
                // The source's name when it is free (an index of this name on this table is one a
                // resumed run built already); PostgreSQL picks one when another table has it.
                let name = match owner_of(&relation_names, &index.name) {
                    Some(owner) if owner == table => return None,
                    Some(_) => String::new(),
                    None => quote(&index.name),
                };
                Some(format!(
                    "CREATE {}INDEX {name} ON {qualified} ({})",
                    if index.unique { "UNIQUE " } else { "" },
                    index.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
                ))
            }))
            .chain(attach_key)
            .collect();
        for field in source.schema.fields() {
            let column = barge_core::Target::column_for(self, table, field)?;
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
                    .map_err(|e| crate::conn::error_of(format!("finishing `{table}`"), &e))?;
            }
            Ok(())
        })
    }

    fn readable_while_finishing(&self) -> bool {
        true
    }

    fn continue_identities(&self, table: &str) -> Result<()> {
        let qualified = self.qualified(table);
        self.admin(|client| {
            let rt = runtime();
            let generators = rt
                .block_on(client.query(
                    "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname)
                       FROM pg_attribute a
                      WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                        AND pg_get_serial_sequence($1, a.attname) IS NOT NULL",
                    &[&qualified],
                ))
                .map_err(pg_err("listing a table's identity generators"))?;
            for row in generators {
                let (column, sequence): (String, String) = (row.get(0), row.get(1));
                // The next value a generator gives is last_value + 1 once it was called.
                let statement = format!(
                    "SELECT setval({seq}, m + 1, false) FROM (SELECT max({col}) AS m FROM {qualified}) AS x
                      WHERE m >= (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {sequence})",
                    seq = literal(&sequence),
                    col = quote(&column),
                );
                rt.block_on(client.batch_execute(&statement))
                    .map_err(|e| crate::conn::error_of(format!("moving `{table}`'s identity past its keys"), &e))?;
            }
            Ok(())
        })
    }

    fn add_foreign_keys(&self, table: &str, foreign_keys: &[barge_core::ForeignKeyInfo]) -> Result<()> {
        self.admin(|client| {
            for fk in foreign_keys {
                let ddl = barge_sql::add_foreign_key(&self.qualified(table), &self.qualified(&fk.ref_table), fk, quote);
                runtime().block_on(client.batch_execute(&ddl)).map_err(|e| {
                    Error::engine(format!("adding a foreign key to `{table}`"), crate::conn::describe(&e))
                })?;
            }
            Ok(())
        })
    }
}

/// PostgreSQL's spelling of a portable default function ([`barge_core::types::portable_default`]).
fn pg_default(token: &str) -> Option<String> {
    use barge_core::types::{DEFAULT_NOW, DEFAULT_TODAY, DEFAULT_UUID};
    match token {
        DEFAULT_NOW => Some("CURRENT_TIMESTAMP".into()),
        DEFAULT_TODAY => Some("CURRENT_DATE".into()),
        DEFAULT_UUID => Some("gen_random_uuid()".into()),
        _ => None,
    }
}

/// Whether `name` is taken among `taken` (relation name, owning table of an index or ''), and by
/// which table.
fn owner_of<'a>(taken: &'a [(String, String)], name: &str) -> Option<&'a str> {
    taken.iter().find(|(relation, _)| relation == name).map(|(_, owner)| owner.as_str())
}

/// The name of the primary key's index, as `ADD PRIMARY KEY` would choose it (`<table>_pkey`, the
/// table's name clipped so the whole fits PostgreSQL's 63 bytes, then a number while another table
/// has the name), and whether this table has that index already: a unique index an interrupted
/// run built and did not get to attach. Names of the source's own indexes are left to them.
fn key_index_name(table: &str, taken: &[(String, String)], source: &barge_core::TableInfo) -> (String, bool) {
    const MAX_IDENTIFIER: usize = 63;
    for n in 0.. {
        let suffix = if n == 0 { "_pkey".to_string() } else { format!("_pkey{n}") };
        let mut end = MAX_IDENTIFIER.saturating_sub(suffix.len()).min(table.len());
        while !table.is_char_boundary(end) {
            end -= 1;
        }
        let name = format!("{}{suffix}", &table[..end]);
        if source.indexes.iter().any(|index| index.name == name) {
            continue;
        }
        match owner_of(taken, &name) {
            None => return (name, false),
            Some(owner) if owner == table => return (name, true),
            Some(_) => {}
        }
    }
    unreachable!("some numbered name is free")
}

/// SQLSTATE classes of errors caused by the rows themselves: 22 data exception (value out of
/// range, string too long, invalid text), 23 integrity constraint violation (check, not null,
/// unique, foreign key).
fn is_row_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
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
    /// The source's binary COPY rows load as they are (see [`takes_unchanged`]).
    native: bool,
}

/// Whether a column takes a PostgreSQL source's binary value as it is: the source is PostgreSQL,
/// both declare the same type (as `format_type` spells it, domains as their base type), and the
/// value's bytes mean the same in any database. Not for arrays (their bytes name the element
/// type's oid, which differs between databases for a domain), money (its scale follows the
/// server's `lc_monetary`), or types read as text.
fn takes_unchanged(field: &Field, target_type: Option<&str>) -> bool {
    let metadata = field.metadata();
    let (Some(engine), Some(source_type), Some(target_type)) =
        (metadata.get(META_ENGINE), metadata.get(META_NATIVE_TYPE), target_type)
    else {
        return false;
    };
    engine == ENGINE
        && source_type == target_type
        && resolve(source_type).is_some_and(|t| !t.array && !matches!(t.codec, Codec::Money | Codec::AsText))
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
        Ok(Encoded::Bytes { rows, bytes: bytes.into() })
    }

    fn accepts_native(&self) -> bool {
        self.native
    }

    fn encode_native(&self, rows: usize, native: Native) -> Option<Encoded> {
        (self.native && native.format == crate::NATIVE_COPY).then_some(Encoded::Bytes { rows, bytes: native.bytes })
    }
}

struct Staging {
    create: String,
    copy: String,
    apply: String,
}

/// Rows deleted whole: their staging table (`apply` deletes the rows equal to a staged one), and
/// the statement emptying it.
struct GoneRows {
    stage: Staging,
    empty: String,
}

/// Upserts: batches a plain COPY into the table may take (changes inserting new rows), tried
/// first inside a savepoint; after a batch it refused (a key already there), this many batches
/// go the staged way before the next try.
const DIRECT_RETRY_AFTER: u32 = 16;

/// Owns a private connection (see `conn::LocalConn`): the writer thread drives its own socket.
struct PgWriter {
    /// Its loading session (`None` only once dropped).
    conn: Option<LocalConn>,
    /// Where its session goes when the writer is done with it cleanly.
    pool: Arc<Mutex<Vec<LocalConn>>>,
    /// It made a temporary staging table, whose shape is this writer's: the session is not
    /// reused.
    used_temp: bool,
    table: String,
    /// Stages rows to delete whole, then deletes the rows equal to them.
    gone: GoneRows,
    /// Upserts where a plain COPY may do (no column staged as text, no row isolation): the
    /// batches to go before the next try (see [`DIRECT_RETRY_AFTER`]).
    direct: Option<u32>,
    /// The table as statements that remove its own rows name it (see `PgTarget::rows_of`).
    rows_of: String,
    /// Column name → SQL type, for literals of key bounds.
    types: std::collections::HashMap<String, String>,
    copy: String,
    staging: Option<Staging>,
    /// Each write inside a savepoint, so a refused batch leaves nothing behind.
    isolate: bool,
    in_transaction: bool,
    /// The qualified `barge_sync` table, for change positions.
    positions: String,
}

/// Loading sessions kept for reuse, at most.
const POOLED_WRITERS: usize = 16;

impl PgTarget {
    /// A loading session a finished writer left, still answering; `None` when there is none.
    fn pooled_writer(&self) -> Option<LocalConn> {
        loop {
            let conn = self.writers.lock().expect("writer pool lock").pop()?;
            // Its server session may have been ended meanwhile (a distributed run ends a lost
            // worker's sessions): asked once before it is used.
            if conn.rt.block_on(conn.client.simple_query("SELECT 1")).is_ok() {
                return Some(conn);
            }
        }
    }
}

impl PgWriter {
    fn conn(&self) -> &LocalConn {
        self.conn.as_ref().expect("a writer's session")
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Only a session left outside any transaction, without temporary tables, goes back.
        if !self.in_transaction && !self.used_temp && !conn.client.is_closed() {
            let mut pool = self.pool.lock().expect("writer pool lock");
            if pool.len() < POOLED_WRITERS {
                pool.push(conn);
            }
        }
    }
}

impl TableWriter for PgWriter {
    fn write(&mut self, batch: Encoded) -> Result<u64> {
        let Encoded::Bytes { rows, bytes } = batch else {
            return Err(Error::Config("the PostgreSQL writer takes COPY payloads".into()));
        };
        self.begin()?;
        let isolate = self.isolate;
        if isolate {
            let savepoint = self.conn().client.batch_execute("SAVEPOINT barge_batch");
            self.conn().rt.block_on(savepoint).map_err(pg_err("setting a savepoint"))?;
        }
        if let Some(copied) = self.try_direct(rows, &bytes)? {
            return Ok(copied);
        }
        self.used_temp |= self.staging.is_some();
        let (client, staging, copy, table) = (&self.conn().client, &self.staging, &self.copy, &self.table);
        let failed = |e: tokio_postgres::Error| {
            if isolate && is_row_error(&e) {
                Error::RowRejected { reason: crate::conn::describe(&e) }
            } else {
                crate::conn::error_of(format!("loading `{table}`"), &e)
            }
        };
        let copied = self.conn().rt.block_on(async {
            let statement = match staging {
                Some(s) => {
                    client.batch_execute(&s.create).await?;
                    &s.copy
                }
                None => copy,
            };
            let copied = copy_in(client, statement, &bytes).await?;
            if let Some(s) = staging {
                client.batch_execute(&s.apply).await?;
            }
            Ok::<u64, tokio_postgres::Error>(copied)
        });
        if isolate {
            let end = if copied.as_ref().is_ok() {
                "RELEASE SAVEPOINT barge_batch"
            } else {
                "ROLLBACK TO SAVEPOINT barge_batch"
            };
            self.conn().rt.block_on(client.batch_execute(end)).map_err(pg_err("ending a savepoint"))?;
        }
        let copied = copied.map_err(failed)?;
        if copied != rows as u64 {
            return Err(Error::engine(format!("loading `{table}`"), format!("COPY stored {copied} of {rows} rows")));
        }
        Ok(copied)
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            let table = &self.table;
            self.conn()
                .rt
                .block_on(self.conn().client.batch_execute("COMMIT"))
                .map_err(|e| crate::conn::error_of(format!("committing `{table}`"), &e))?;
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

    fn session_id(&mut self) -> Result<Option<String>> {
        let row = self
            .conn()
            .rt
            .block_on(self.conn().client.query_one("SELECT pg_backend_pid()", &[]))
            .map_err(pg_err("naming the writer's session"))?;
        Ok(Some(row.get::<_, i32>(0).to_string()))
    }
}

/// Sends `bytes` (a binary COPY payload) with COPY `statement`; returns the rows it stored.
async fn copy_in(client: &Client, statement: &str, bytes: &Bytes) -> std::result::Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    // In pieces: the connection copies each message into its write buffer, so one message per
    // batch would hold a second copy of a batch of huge values.
    for start in (0..bytes.len()).step_by(COPY_IN_PIECE_BYTES) {
        sink.feed(bytes.slice(start..bytes.len().min(start + COPY_IN_PIECE_BYTES))).await?;
    }
    sink.finish().await
}

impl PgWriter {
    /// Upserting rows that are all new (inserts streaming in): a plain COPY into the table does
    /// it without the staging table's second write. A key already there refuses the whole COPY,
    /// rolled back to its savepoint: `None`, and this batch and the next [`DIRECT_RETRY_AFTER`]
    /// go the staged way.
    fn try_direct(&mut self, rows: usize, bytes: &Bytes) -> Result<Option<u64>> {
        match self.direct {
            None => return Ok(None),
            Some(wait) if wait > 0 => {
                self.direct = Some(wait - 1);
                return Ok(None);
            }
            Some(_) => {}
        }
        let (client, copy, table) = (&self.conn().client, &self.copy, &self.table);
        let savepoint =
            |end: &str| self.conn().rt.block_on(client.batch_execute(end)).map_err(pg_err("ending a savepoint"));
        let direct = self.conn().rt.block_on(async {
            client.batch_execute("SAVEPOINT barge_direct").await?;
            copy_in(client, copy, bytes).await
        });
        match direct {
            Ok(copied) => {
                savepoint("RELEASE SAVEPOINT barge_direct")?;
                if copied != rows as u64 {
                    let stored = format!("COPY stored {copied} of {rows} rows");
                    return Err(Error::engine(format!("loading `{table}`"), stored));
                }
                Ok(Some(copied))
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                savepoint("ROLLBACK TO SAVEPOINT barge_direct")?;
                self.direct = Some(DIRECT_RETRY_AFTER);
                Ok(None)
            }
            Err(e) => Err(crate::conn::error_of(format!("loading `{table}`"), &e)),
        }
    }

    /// Runs `sql` in the writer's transaction (beginning it), returning the rows it touched.
    fn in_transaction(&mut self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<u64> {
        self.begin()?;
        let touched = self.conn().rt.block_on(self.conn().client.execute(sql, params));
        touched.map_err(|e| crate::conn::error_of(format!("applying changes to `{}`", self.table), &e))
    }

    /// Opens the writer's transaction, unless it is open.
    fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            let begun = self.conn().rt.block_on(self.conn().client.batch_execute("BEGIN"));
            begun.map_err(|e| crate::conn::error_of(format!("starting a transaction on `{}`", self.table), &e))?;
            self.in_transaction = true;
        }
        Ok(())
    }
}

impl barge_core::ChangeWriter for PgWriter {
    fn truncate(&mut self) -> Result<()> {
        // DELETE rather than TRUNCATE: the source's TRUNCATE emptied the tables that reference
        // this one too, each applied by a writer of its own.
        self.in_transaction(&format!("DELETE FROM {}", self.rows_of), &[])?;
        Ok(())
    }

    fn delete_keys(&mut self, columns: &[String], keys: &[serde_json::Value]) -> Result<u64> {
        let types: Vec<String> =
            columns.iter().map(|c| self.types.get(c).cloned().unwrap_or_else(|| "text".into())).collect();
        let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let statements = barge_sql::delete_statements(&self.rows_of, &quoted, keys, |i, v| key_literal(v, &types[i]));
        let mut deleted = 0;
        for sql in statements {
            deleted += self.in_transaction(&sql, &[])?;
        }
        Ok(deleted)
    }

    fn delete_rows(&mut self, rows: Encoded) -> Result<u64> {
        let Encoded::Bytes { rows, bytes } = rows else {
            return Err(Error::Config("the PostgreSQL writer takes COPY payloads".into()));
        };
        self.begin()?;
        self.used_temp = true;
        let (client, gone, table) = (&self.conn().client, &self.gone, &self.table);
        let deleted = self.conn().rt.block_on(async {
            client.batch_execute(&gone.stage.create).await?;
            let staged = copy_in(client, &gone.stage.copy, &bytes).await?;
            let deleted = client.execute(gone.stage.apply.as_str(), &[]).await?;
            client.batch_execute(&gone.empty).await?;
            Ok::<(u64, u64), tokio_postgres::Error>((staged, deleted))
        });
        let (staged, deleted) =
            deleted.map_err(|e| crate::conn::error_of(format!("applying changes to `{table}`"), &e))?;
        if staged != rows as u64 {
            return Err(Error::engine(
                format!("applying changes to `{table}`"),
                format!("staged {staged} of {rows} rows"),
            ));
        }
        Ok(deleted)
    }

    fn record_position(&mut self, stream: &str, table: &str, position: u64) -> Result<()> {
        self.in_transaction(&record_sql(&self.positions), &[&stream, &table, &(position as i64)])?;
        Ok(())
    }
}

impl barge_core::RangeClearer for PgWriter {
    fn clear_range(&mut self, columns: &[String], range: &barge_core::KeyRange) -> Result<u64> {
        let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let predicate = barge_core::model::range_predicate(&quoted, range, "true", |i, value| {
            crate::source::bound_literal(value, self.types.get(&columns[i]).map_or("text", String::as_str))
        });
        let sql = format!("DELETE FROM {} WHERE {predicate}", self.rows_of);
        self.begin()?;
        let deleted = self.conn().rt.block_on(self.conn().client.execute(sql.as_str(), &[]));
        deleted.map_err(|e| crate::conn::error_of(format!("clearing a range of `{}`", self.table), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use barge_core::{IndexInfo, KeySpec, TableInfo};

    fn source(index_names: &[&str]) -> TableInfo {
        TableInfo {
            name: "t".into(),
            schema: Arc::new(arrow_schema::Schema::empty()),
            key: KeySpec::Primary(vec![]),
            estimated_rows: 0,
            indexes: index_names
                .iter()
                .map(|n| IndexInfo { name: n.to_string(), columns: vec!["a".into()], unique: false })
                .collect(),
            foreign_keys: Vec::new(),
            checks: Vec::new(),
            sql_indexes: Vec::new(),
            comment: None,
            filter: None,
            window: None,
        }
    }

    fn taken(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_key_index_is_named_as_add_primary_key_names_it() {
        assert_eq!(key_index_name("orders", &[], &source(&[])), ("orders_pkey".into(), false));
        // Another table's index, a sequence, or one of the source's own index names: numbered.
        let others = taken(&[("orders_pkey", "old_orders"), ("orders_pkey1", "")]);
        assert_eq!(key_index_name("orders", &others, &source(&[])), ("orders_pkey2".into(), false));
        assert_eq!(key_index_name("orders", &[], &source(&["orders_pkey"])), ("orders_pkey1".into(), false));
        // Built by an interrupted run: attached, not built again.
        let ours = taken(&[("orders_pkey", "orders")]);
        assert_eq!(key_index_name("orders", &ours, &source(&[])), ("orders_pkey".into(), true));
        // Clipped to 63 bytes on a character boundary.
        let long = "é".repeat(40);
        let (name, _) = key_index_name(&long, &[], &source(&[]));
        assert!(name.len() <= 63 && name.ends_with("_pkey"), "{name}");
        assert_eq!(name, format!("{}_pkey", "é".repeat(29)));
    }
}
