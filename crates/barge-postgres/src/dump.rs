//! PostgreSQL → PostgreSQL: the schema exactly as `pg_dump` dumps it, restored by `pg_restore`
//! in steps around the rows (as pgcopydb does). The archive is dumped once, at plan time, in
//! custom format; its table of contents is listed by section and each step restores a subset of
//! it (`pg_restore -L`), in one transaction:
//!
//! ```text
//!  pre-data  ─────────────▶ Tables          types, domains, functions, sequences, tables (defaults,
//!                                           checks, identity), views, matviews (empty), comments
//!  post-data CONSTRAINT,   ▶ TableObjects(t) once t's rows are committed (t: the table that holds
//!            INDEX of t                     the relation: a partition's index goes with its root)
//!  post-data FK CONSTRAINT ▶ ForeignKeys    once every table is loaded
//!  post-data the rest      ▶ Last           triggers, rules, index attachments, matview indexes,
//!                                           then matviews refreshed and sequences set
//! ```
//!
//! Reading the catalogs into our own DDL would have to follow PostgreSQL's every object kind and
//! version; `pg_dump` is the reference the issue measures by, and ships with the server. What it is
//! not asked for: ownership and grants (roles are the cluster's, not the database's: the target's
//! user owns what it creates), listed as not migrated.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use barge_core::{DumpedSchema, Error, NotMigrated, RestoreStep, Result, SchemaObject};
use tokio_postgres::config::Host;

use crate::conn::{PgUrl, TlsMode, connect, literal, pg_err, quote, runtime};

/// The restore step of a table-of-contents entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Tables,
    Table(String),
    ForeignKeys,
    Last,
}

/// One line of `pg_restore -l`: `id; catalog oid DESC namespace tag owner`.
#[derive(Clone, Debug)]
struct Entry {
    line: String,
    desc: String,
    namespace: String,
    tag: String,
    step: Step,
}

/// Descriptions of more than one word, longest first (pg_dump's `te->desc` values).
const LONG_DESCS: &[&str] = &[
    "MATERIALIZED VIEW DATA",
    "PUBLICATION TABLES IN SCHEMA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "FOREIGN DATA WRAPPER",
    "TEXT SEARCH TEMPLATE",
    "TEXT SEARCH PARSER",
    "PROCEDURAL LANGUAGE",
    "MATERIALIZED VIEW",
    "PUBLICATION TABLE",
    "SEQUENCE OWNED BY",
    "OPERATOR FAMILY",
    "OPERATOR CLASS",
    "ACCESS METHOD",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "FOREIGN TABLE",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "USER MAPPING",
    "DEFAULT ACL",
    "SHELL TYPE",
    "TABLE DATA",
];

/// Parses one entry line (comments and blank lines are `None`).
fn parse_entry(line: &str) -> Option<(String, String, String)> {
    let line = line.trim_end_matches('\n');
    if line.starts_with(';') || line.trim().is_empty() {
        return None;
    }
    // `3287; 2606 16867 CONSTRAINT public account account_key postgres`
    let (_, rest) = line.split_once("; ")?;
    let mut fields = rest.splitn(3, ' ');
    let (_catalog, _oid, rest) = (fields.next()?, fields.next()?, fields.next()?);
    let desc = LONG_DESCS
        .iter()
        .find(|d| rest.starts_with(*d) && rest[d.len()..].starts_with(' '))
        .map_or_else(|| rest.split(' ').next().unwrap_or_default(), |d| *d);
    let rest = rest[desc.len()..].trim_start_matches(' ');
    let (namespace, rest) = rest.split_once(' ')?;
    // The owner is the last word (empty for objects without one, e.g. extensions).
    let tag = rest.rsplit_once(' ').map_or(rest, |(tag, _owner)| tag);
    Some((desc.to_string(), namespace.to_string(), tag.to_string()))
}

/// The schema of a PostgreSQL source, dumped by `pg_dump`.
pub struct PgDump {
    /// Holds the archive and the list files of each step; removed with the dump.
    dir: tempfile::TempDir,
    archive: PathBuf,
    schema: String,
    entries: Vec<Entry>,
    /// Extensions the dump creates (checked on the target before anything is written).
    extensions: Vec<String>,
    /// Materialized views populated in the source, refreshed in the target's last step.
    populated: Vec<String>,
    /// The source, read again in the last step for its sequences' values (after the rows).
    source: PgUrl,
}

impl std::fmt::Debug for PgDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pg_dump of schema {} ({} entries)", self.schema, self.entries.len())
    }
}

/// The environment that points libpq's tools at `url`'s database, password included (never on
/// the command line, where `ps` shows it).
fn tool_env(url: &PgUrl) -> Vec<(&'static str, String)> {
    let config = &url.config;
    let mut env = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        env.push((
            "PGHOST",
            match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            },
        ));
    }
    if let Some(port) = config.get_ports().first() {
        env.push(("PGPORT", port.to_string()));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    if let Some(password) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(db) = config.get_dbname() {
        env.push(("PGDATABASE", db.to_string()));
    }
    let mode = match url.tls {
        TlsMode::Disable => "disable",
        TlsMode::Prefer => "prefer",
        TlsMode::Require => "require",
        TlsMode::VerifyCa => "verify-ca",
        TlsMode::VerifyFull => "verify-full",
    };
    env.push(("PGSSLMODE", mode.to_string()));
    env.push(("PGCONNECT_TIMEOUT", "10".to_string()));
    env
}

/// Runs a libpq tool against `url`; its error output becomes the error (it never holds the
/// password, which travels in the environment). `Ok(None)`: the tool is not installed.
fn run_tool(tool: &str, args: &[&str], url: Option<&PgUrl>) -> Result<Option<String>> {
    let mut command = Command::new(tool);
    command.args(args).env_remove("PGSERVICE").env_remove("PGOPTIONS");
    if let Some(url) = url {
        command.envs(tool_env(url));
    }
    let output = match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::engine(format!("running {tool}"), e)),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::engine(format!("running {tool}"), stderr.trim()));
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The server's major version, and that of the installed `pg_dump` (`None`: not installed).
fn major_of(version: &str) -> Option<u32> {
    version.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
}

/// Dumps `url`'s schema. `Ok(Err(reason))`: it cannot be dumped exactly, and why.
pub fn dump(url: &PgUrl) -> Result<std::result::Result<PgDump, String>> {
    let client = connect(url)?;
    let rt = runtime();
    let schema = url.schema.clone();
    let server: i32 = rt
        .block_on(client.query_one("SELECT current_setting('server_version_num')::int", &[]))
        .map_err(pg_err("reading the server version"))?
        .get(0);
    let Some(version) = run_tool("pg_dump", &["--version"], None)? else {
        return Ok(Err(
            "pg_dump is not installed (Debian: postgresql-client), so the schema is rebuilt by barge".into()
        ));
    };
    let tool_major = major_of(&version).unwrap_or(0);
    let server_major = u32::try_from(server / 10_000).unwrap_or(0);
    if tool_major < server_major {
        return Ok(Err(format!(
            "pg_dump {tool_major} cannot dump a PostgreSQL {server_major} server, so the schema is rebuilt by barge; \
             install pg_dump {server_major} or newer"
        )));
    }
    // The catalog queries below take the schema as $1 (where they name it).
    let rows = |sql: &str, context: &'static str| -> Result<Vec<tokio_postgres::Row>> {
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = if sql.contains("$1") { &[&schema] } else { &[] };
        rt.block_on(client.query(sql, params)).map_err(pg_err(context))
    };
    // `-n` dumps no extension by itself: every one the database has (PL/pgSQL comes with it).
    let extensions: Vec<String> =
        rows("SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1", "listing extensions")?
            .iter()
            .map(|r| r.get(0))
            .collect();
    // Which table holds each relation of the schema: its own, or its partitioned root.
    let root: HashMap<String, String> = rows(
        "SELECT c.relname::text, coalesce((SELECT r.relname::text FROM pg_class r
                                           WHERE r.oid = pg_partition_root(c.oid)), c.relname::text)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
        "listing relations",
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let index_tables: HashMap<String, String> = rows(
        "SELECT i.relname::text, t.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = i.relnamespace
         WHERE n.nspname = $1 AND t.relkind IN ('r', 'p')",
        "listing indexes",
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let populated: Vec<String> = rows(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'm' AND c.relispopulated ORDER BY 1",
        "listing materialized views",
    )?
    .iter()
    .map(|r| r.get(0))
    .collect();
    drop(client);

    let dir = tempfile::Builder::new()
        .prefix("barge-schema-")
        .tempdir()
        .map_err(|e| Error::engine("creating a directory for the schema dump", e))?;
    let archive = dir.path().join("schema.dump");
    let pattern = format!("\"{}\"", schema.replace('"', "\"\""));
    let archive_arg = archive.display().to_string();
    let mut args = vec!["--format=custom", "--schema-only", "--no-owner", "--no-privileges", "--file", &archive_arg];
    args.extend(["--schema", &pattern]);
    let extension_patterns: Vec<String> =
        extensions.iter().map(|e| format!("\"{}\"", e.replace('"', "\"\""))).collect();
    for pattern in &extension_patterns {
        args.extend(["--extension", pattern]);
    }
    run_tool("pg_dump", &args, Some(url))?;

    let mut entries = Vec::new();
    for (section, post) in [("pre-data", false), ("post-data", true)] {
        let listed = run_tool("pg_restore", &["--list", "--section", section, &archive_arg], None)?
            .ok_or_else(|| Error::engine("listing the schema dump", "pg_restore is not installed"))?;
        for line in listed.lines() {
            let Some((desc, namespace, tag)) = parse_entry(line) else { continue };
            let step = if !post {
                Step::Tables
            } else {
                match desc.as_str() {
                    "FK CONSTRAINT" => Step::ForeignKeys,
                    // A constraint's tag is `table name`.
                    "CONSTRAINT" => owning_table(&tag, &root).map_or(Step::Last, Step::Table),
                    "INDEX" => {
                        index_tables.get(&tag).and_then(|t| root.get(t)).cloned().map_or(Step::Last, Step::Table)
                    }
                    _ => Step::Last,
                }
            };
            entries.push(Entry { line: line.to_string(), desc, namespace, tag, step });
        }
    }
    Ok(Ok(PgDump { dir, archive, schema, entries, extensions, populated, source: url.clone() }))
}

/// The table (by its root) a `table name` tag belongs to: the longest relation name it starts with.
fn owning_table(tag: &str, root: &HashMap<String, String>) -> Option<String> {
    root.iter()
        .filter(|(relation, _)| tag.starts_with(relation.as_str()) && tag[relation.len()..].starts_with(' '))
        .max_by_key(|(relation, _)| relation.len())
        .map(|(_, table)| table.clone())
}

impl DumpedSchema for PgDump {
    fn engine(&self) -> &'static str {
        crate::ENGINE
    }

    fn objects(&self) -> Vec<SchemaObject> {
        self.entries
            .iter()
            .filter(|e| !(e.desc == "SCHEMA" && e.tag == self.schema))
            .map(|e| SchemaObject { kind: e.desc.to_lowercase(), name: e.tag.clone() })
            .collect()
    }

    fn not_migrated(&self) -> Vec<NotMigrated> {
        vec![NotMigrated::new(
            "ownership and grants",
            format!("schema {}", self.schema),
            "roles belong to the server, not the database: the target's user owns every object it creates, \
             and no GRANT is copied",
        )]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl PgDump {
    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Restores the entries of `step` into `target`: `schema_exists` leaves out the schema's own
    /// entry (the target has it).
    pub fn restore(&self, target: &PgUrl, step: RestoreStep<'_>, schema_exists: bool) -> Result<()> {
        let wanted = match step {
            RestoreStep::Tables => Step::Tables,
            RestoreStep::TableObjects(table) => Step::Table(table.to_string()),
            RestoreStep::ForeignKeys => Step::ForeignKeys,
            RestoreStep::Last => Step::Last,
        };
        let lines: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.step == wanted)
            .filter(|e| !(schema_exists && e.desc == "SCHEMA" && e.namespace == "-" && e.tag == self.schema))
            .map(|e| e.line.as_str())
            .collect();
        if !lines.is_empty() {
            let list = self.list_file(&wanted, &lines)?;
            let (list, archive) = (list.display().to_string(), self.archive.display().to_string());
            let args = [
                "--exit-on-error",
                "--single-transaction",
                "--no-owner",
                "--no-privileges",
                "--use-list",
                &list,
                "--dbname",
                "",
                &archive,
            ];
            // `--dbname ""` makes pg_restore connect (to PGDATABASE) rather than print SQL.
            run_tool("pg_restore", &args, Some(target))?
                .ok_or_else(|| Error::engine("restoring the schema", "pg_restore is not installed"))?;
        }
        if step == RestoreStep::Last {
            self.finish_last(target)?;
        }
        Ok(())
    }

    fn list_file(&self, step: &Step, lines: &[&str]) -> Result<PathBuf> {
        let name = match step {
            Step::Tables => "tables.list".to_string(),
            Step::Table(t) => format!("table-{}.list", t.bytes().map(|b| format!("{b:02x}")).collect::<String>()),
            Step::ForeignKeys => "foreign-keys.list".to_string(),
            Step::Last => "last.list".to_string(),
        };
        let path: PathBuf = self.dir.path().join(name);
        write_lines(&path, lines)?;
        Ok(path)
    }

    /// Materialized views refreshed (those the source has populated) and every sequence of the
    /// schema set as the source has it now, after every row was read (so past every copied key).
    fn finish_last(&self, target: &PgUrl) -> Result<()> {
        let source = connect(&self.source)?;
        let rt = runtime();
        let sequences = rt
            .block_on(source.query(
                "SELECT sequencename::text, last_value FROM pg_sequences WHERE schemaname = $1 ORDER BY 1",
                &[&self.schema],
            ))
            .map_err(pg_err("reading the source's sequences"))?;
        let schema = quote(&self.schema);
        let mut sql: Vec<String> =
            self.populated.iter().map(|view| format!("REFRESH MATERIALIZED VIEW {schema}.{}", quote(view))).collect();
        for row in sequences {
            let name: String = row.get(0);
            let qualified = literal(&format!("{schema}.{}", quote(&name)));
            sql.push(match row.get::<_, Option<i64>>(1) {
                Some(value) => format!("SELECT setval({qualified}, {value}, true)"),
                // Never used in the source: the next value is its start, as a fresh sequence's.
                None => format!(
                    "SELECT setval({qualified}, s.seqstart, false) FROM pg_sequence s WHERE s.seqrelid = {qualified}::regclass"
                ),
            });
        }
        if sql.is_empty() {
            return Ok(());
        }
        let client = connect(target)?;
        rt.block_on(client.batch_execute(&sql.join(";\n")))
            .map_err(|e| crate::conn::error_of("refreshing materialized views and setting sequences", &e))
    }
}

fn write_lines(path: &Path, lines: &[&str]) -> Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::engine("writing a restore list", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines_split_into_description_namespace_and_tag() {
        let parse = |l: &str| parse_entry(l).unwrap();
        assert_eq!(
            parse("3287; 2606 16867 CONSTRAINT public account account_key postgres"),
            ("CONSTRAINT".into(), "public".into(), "account account_key".into())
        );
        assert_eq!(
            parse("3309; 2606 16884 FK CONSTRAINT public booking booking_account_fk postgres"),
            ("FK CONSTRAINT".into(), "public".into(), "booking booking_account_fk".into())
        );
        assert_eq!(parse("2; 3079 16799 EXTENSION - pgcrypto "), ("EXTENSION".into(), "-".into(), "pgcrypto".into()));
        assert_eq!(
            parse("263; 1255 16850 FUNCTION public double_it(integer) postgres"),
            ("FUNCTION".into(), "public".into(), "double_it(integer)".into())
        );
        assert_eq!(
            parse("225; 1259 16912 MATERIALIZED VIEW public bookings_per_account postgres").0,
            "MATERIALIZED VIEW"
        );
        assert!(parse_entry("; Archive created at 2026-12-02").is_none());
        assert!(parse_entry("").is_none());
    }

    #[test]
    fn a_constraint_belongs_to_the_longest_table_name_its_tag_starts_with() {
        let root: HashMap<String, String> = [("order", "order"), ("order details", "order details"), ("m_2025", "m")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(owning_table("order details pk", &root).as_deref(), Some("order details"));
        assert_eq!(owning_table("order order_pkey", &root).as_deref(), Some("order"));
        assert_eq!(owning_table("m_2025 m_2025_pkey", &root).as_deref(), Some("m"));
        assert_eq!(owning_table("orders x", &root), None);
    }

    #[test]
    fn versions_read_their_major() {
        assert_eq!(major_of("15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(major_of(" 17.2"), Some(17));
        assert_eq!(major_of("pg_dump (PostgreSQL) 15.20"), Some(15));
    }
}
