//! # barge-postgres
//!
//! PostgreSQL as a barge source and target, through binary COPY in both directions.
//!
//! ```text
//!  reader thread ◀─ bounded chunks (1 MiB) ─ I/O task: COPY (SELECT … WHERE range) TO STDOUT (FORMAT binary)
//!       │ parse tuples straight into Arrow builders
//!  rayon: Arrow batch ─▶ binary COPY payload (per-column writers chosen from the target's types)
//!  writer thread (own connection) ─▶ COPY t (cols) FROM STDIN (FORMAT binary), in a transaction
//! ```
//!
//! URLs: `postgres://user:pass@host:port/db?schema=public&sslmode=disable` (or `postgresql://`);
//! the password may come from `PGPASSWORD`. Type mapping: [`types`]. Tables without a primary key
//! are read in `ctid` block ranges. Partitioned and inherited tables are read through their parent
//! (children included) and never listed on their own.

mod conn;
mod decode;
mod encode;
mod source;
pub mod state;
mod target;
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
}
