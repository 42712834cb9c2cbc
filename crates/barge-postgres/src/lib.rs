//! # barge-postgres
//!
//! PostgreSQL as a barge source and target, through binary COPY in both directions.
//!
//! ```text
//!  reader thread, its own connection on a private current-thread runtime (conn.rs):
//!       COPY (SELECT … WHERE range) TO STDOUT (FORMAT binary), polled in place (block_on per chunk)
//!       │ parse tuples straight into Arrow builders, outside block_on (decode.rs)
//!  rayon: Arrow batch ─▶ binary COPY payload (per-column writers chosen from the target's types)
//!  writer thread (own connection) ─▶ COPY t (cols) FROM STDIN (FORMAT binary), in a transaction
//! ```
//!
//! Capabilities beyond the required traits: secondary objects (indexes, identity, foreign keys;
//! readable while the key builds), key deletes, range clears, scratch schemas and synthetic
//! tables, and ledger stores (schema `barge_state`). Type mapping: `TYPES.md`, from
//! [`types::mapping`].
//!
//! URLs: `postgres://user:pass@host:port/db?schema=public&sslmode=disable` (or `postgresql://`);
//! the password may come from `PGPASSWORD`. Type mapping: [`types`]. Tables without a primary key
//! are read in `ctid` block ranges. Partitioned and inherited tables are read through their parent
//! (children included) and never listed on their own.

mod changes;
mod checks;
mod conn;
/// Binary COPY → Arrow (public for the micro-benchmarks in `benches/`).
pub mod decode;
mod dump;
/// Arrow → binary COPY (public for the micro-benchmarks in `benches/`).
pub mod encode;
pub mod geometry;
pub mod ledger;
mod source;
mod target;
#[cfg(feature = "tls")]
mod tls;
pub mod types;
pub mod wire;

use std::sync::Arc;

use barge_core::{EngineFactory, Result};

pub use conn::{PgUrl, parse_url};
pub use source::PgSource;
pub use target::PgTarget;

/// The engine's name, also written into Arrow field metadata so a PostgreSQL target keeps a
/// PostgreSQL source's column types.
pub const ENGINE: &str = "postgres";

/// Rows as a PostgreSQL source reads them: a binary COPY stream (header, rows, trailer), which a
/// PostgreSQL target whose columns have the same types loads as it is.
pub const NATIVE_COPY: &str = "postgres binary COPY";

/// The largest message PostgreSQL takes or sends, so the largest row of a binary COPY: 1 GB, fixed
/// in the server (no setting raises it).
pub const MAX_MESSAGE_BYTES: u64 = (1 << 30) - 1;

/// Registers PostgreSQL with the CLI.
pub struct PgEngine;

impl EngineFactory for PgEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["postgres", "postgresql"]
    }

    fn check_url(&self, url: &str) -> Result<()> {
        parse_url(url).map(|_| ())
    }

    fn in_namespace(&self, url: &str, namespace: &str) -> Result<String> {
        parse_url(url)?;
        Ok(barge_core::url::with_param(url, "schema", namespace))
    }

    fn same_database(&self, a: &str, b: &str) -> bool {
        match (parse_url(a), parse_url(b)) {
            (Ok(a), Ok(b)) => {
                a.schema == b.schema
                    && a.config.get_dbname() == b.config.get_dbname()
                    && a.config.get_ports() == b.config.get_ports()
                    && format!("{:?}", a.config.get_hosts()) == format!("{:?}", b.config.get_hosts())
            }
            _ => false,
        }
    }

    fn open_source(&self, url: &str) -> Result<Arc<dyn barge_core::Source>> {
        Ok(PgSource::open(parse_url(url)?)?)
    }

    fn open_target(&self, url: &str) -> Result<Arc<dyn barge_core::Target>> {
        Ok(PgTarget::open(parse_url(url)?)?)
    }

    fn scratch(&self) -> Option<&dyn barge_core::ScratchSpace> {
        Some(self)
    }

    fn ledger_stores(&self) -> Option<&dyn barge_core::LedgerStores> {
        Some(self)
    }
}

impl barge_core::LedgerStores for PgEngine {
    fn open_ledger(&self, location: &str) -> Result<Arc<dyn barge_core::ledger::LedgerStore>> {
        Ok(Arc::new(ledger::PgLedger::open(location)?))
    }
}

impl barge_core::ScratchSpace for PgEngine {
    fn generate(&self, url: &str, table: &str, columns: &[barge_core::synthetic::Column], rows: u64) -> Result<()> {
        let dialect = barge_sql::synthetic::Dialect {
            types: [
                "bigint PRIMARY KEY",
                "bigint NOT NULL",
                "varchar(100) NOT NULL",
                "varchar(100)",
                "numeric(12,2) NOT NULL",
                "timestamp NOT NULL",
                "boolean NOT NULL",
            ],
            concat: |prefix, n| format!("'{prefix}' || ({n})"),
            hundredths: |n| format!("(({n}) / 100.0)::numeric(12,2)"),
            timestamp: |seconds| format!("timestamp '2024-01-01' + ({seconds}) * interval '1 second'"),
            quote: conn::quote,
        };
        let parsed = parse_url(url)?;
        let qualified = format!("{}.{}", conn::quote(&parsed.schema), conn::quote(table));
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; DROP TABLE IF EXISTS {qualified}; CREATE TABLE {qualified} ({});
             INSERT INTO {qualified} SELECT {} FROM generate_series(1::bigint, {rows}) n; ANALYZE {qualified}",
            dialect.column_defs(columns).join(", "),
            dialect.values(columns).join(", "),
            schema = conn::quote(&parsed.schema)
        );
        let client = conn::connect(&parsed)?;
        conn::runtime().block_on(client.batch_execute(&sql)).map_err(conn::pg_err("generating a table"))
    }

    fn create_scratch(&self, url: &str, tag: &str) -> Result<String> {
        let schema = format!("barge_scratch_{tag}");
        let scratch = barge_core::url::with_param(url, "schema", &schema);
        let parsed = parse_url(&scratch)?;
        let client = conn::connect(&parsed)?;
        let ddl = format!("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}", conn::quote(&schema));
        conn::runtime().block_on(client.batch_execute(&ddl)).map_err(conn::pg_err("creating a scratch schema"))?;
        Ok(scratch)
    }

    fn drop_scratch(&self, scratch_url: &str) -> Result<()> {
        let parsed = parse_url(scratch_url)?;
        let client = conn::connect(&parsed)?;
        let ddl = format!("DROP SCHEMA IF EXISTS {} CASCADE", conn::quote(&parsed.schema));
        conn::runtime().block_on(client.batch_execute(&ddl)).map_err(conn::pg_err("dropping a scratch schema"))
    }
}
