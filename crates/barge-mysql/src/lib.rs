//! # barge-mysql
//!
//! MySQL and MariaDB as a barge source and target.
//!
//! ```text
//!  reader thread: SELECT cols WHERE key range (text protocol, streamed) ─▶ rows in chunks ─▶ Arrow builders
//!  rayon: Arrow batch ─▶ LOAD DATA text (tab-separated, escaped, \N for NULL)
//!  writer thread (own connection): LOAD DATA LOCAL INFILE fed from memory, or INSERT … VALUES (…) ×500
//! ```
//!
//! URLs: `mysql://user:pass@host:port/db` or `mariadb://…`; the password may come from
//! `MYSQL_PWD`; `?local_infile=false` loads with INSERTs. Sessions run in UTC with utf8mb4. Type
//! mapping: [`types`]. Tables barge creates use `utf8mb4_bin`, so keys compare as bytes, as in the
//! other engines.
//!
//! Unique and foreign-key checks stay on during loads. For a table barge creates, secondary (also
//! unique) indexes and foreign keys are added after the load, which is what turning the checks off
//! would buy; for an existing table, turning them off could let in rows that break its
//! constraints, so barge does not. Differences handled between MariaDB 10.11 and MySQL 8: MariaDB's JSON is LONGTEXT
//! with a `json_valid` check (recognised as JSON); MySQL 8 has LOCAL INFILE off (INSERT fallback).

mod changes;
/// Text protocol → Arrow and Arrow → LOAD DATA (public for the micro-benchmarks in `benches/`).
pub mod codec;
mod conn;
mod dump;
mod source;
mod target;
pub mod types;

use std::sync::Arc;

use barge_core::{EngineFactory, Result};

pub use conn::{MyUrl, parse_url};
pub use source::MySource;
pub use target::MyTarget;

/// The engine's name, also written into Arrow field metadata so a MySQL target keeps a MySQL
/// source's column types.
pub const ENGINE: &str = "mysql";

/// Registers MySQL/MariaDB with the CLI.
pub struct MyEngine;

impl EngineFactory for MyEngine {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["mysql", "mariadb"]
    }

    fn check_url(&self, url: &str) -> Result<()> {
        parse_url(url).map(|_| ())
    }

    fn in_namespace(&self, url: &str, namespace: &str) -> Result<String> {
        parse_url(url)?;
        // The database is the path after the authority (whose password may hold `/` unencoded).
        let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
        let authority = base.rfind('@').map_or(base.find("://").map_or(0, |i| i + 3), |i| i + 1);
        let host_end = base[authority..].find('/').map_or(base.len(), |i| authority + i);
        let mut out = format!("{}/{namespace}", &base[..host_end]);
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Ok(out)
    }

    fn same_database(&self, a: &str, b: &str) -> bool {
        match (parse_url(a), parse_url(b)) {
            (Ok(a), Ok(b)) => {
                a.database == b.database
                    && a.opts.ip_or_hostname() == b.opts.ip_or_hostname()
                    && a.opts.tcp_port() == b.opts.tcp_port()
            }
            _ => false,
        }
    }

    fn open_source(&self, url: &str) -> Result<Arc<dyn barge_core::Source>> {
        Ok(MySource::open(parse_url(url)?)?)
    }

    fn open_target(&self, url: &str) -> Result<Arc<dyn barge_core::Target>> {
        Ok(MyTarget::open(parse_url(url)?)?)
    }

    fn scratch(&self) -> Option<&dyn barge_core::ScratchSpace> {
        Some(self)
    }
}

impl barge_core::ScratchSpace for MyEngine {
    fn generate(&self, url: &str, table: &str, columns: &[barge_core::synthetic::Column], rows: u64) -> Result<()> {
        let dialect = barge_sql::synthetic::Dialect {
            types: [
                "bigint PRIMARY KEY",
                "bigint NOT NULL",
                "varchar(100) NOT NULL",
                "varchar(100)",
                "decimal(12,2) NOT NULL",
                "datetime(6) NOT NULL",
                "tinyint(1) NOT NULL",
            ],
            concat: |prefix, n| format!("CONCAT('{prefix}', {n})"),
            hundredths: |n| format!("CAST(({n}) / 100 AS DECIMAL(12,2))"),
            timestamp: |seconds| format!("TIMESTAMP('2024-01-01') + INTERVAL ({seconds}) SECOND"),
            quote: conn::quote,
        };
        let parsed = parse_url(url)?;
        let mut conn = conn::connect(&parsed)?;
        let quoted = conn::quote(table);
        conn.exec(&format!("DROP TABLE IF EXISTS {quoted}"), "generating a table")?;
        conn.exec(
            &format!(
                "CREATE TABLE {quoted} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                dialect.column_defs(columns).join(", ")
            ),
            "generating a table",
        )?;
        // Rows in slices of a million: a recursive CTE per slice, with the recursion limit raised
        // (MySQL: cte_max_recursion_depth, MariaDB: max_recursive_iterations; each server knows one).
        let _ = conn.exec("SET SESSION cte_max_recursion_depth = 1000001", "allowing deep recursion");
        let _ = conn.exec("SET SESSION max_recursive_iterations = 1000001", "allowing deep recursion");
        let values = dialect.values(columns).join(", ");
        let mut start = 1u64;
        while start <= rows {
            let end = (start + 999_999).min(rows);
            conn.exec(
                &format!(
                    "INSERT INTO {quoted} WITH RECURSIVE s(n) AS (SELECT {start} UNION ALL SELECT n + 1 FROM s WHERE n < {end})
                     SELECT {values} FROM s"
                ),
                "generating a table",
            )?;
            start = end + 1;
        }
        Ok(())
    }

    fn create_scratch(&self, url: &str, tag: &str) -> Result<String> {
        let parsed = parse_url(url)?;
        let database = format!("barge_scratch_{tag}");
        let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
        let server = base.trim_end_matches('/').rsplit_once('/').map_or(base, |(server, _)| server);
        let scratch = format!("{server}/{database}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        let mut conn = conn::connect(&parsed)?;
        conn.exec(
            &format!("DROP DATABASE IF EXISTS {0}; CREATE DATABASE {0} CHARACTER SET utf8mb4", conn::quote(&database)),
            "creating a scratch database",
        )?;
        Ok(scratch)
    }

    fn drop_scratch(&self, scratch_url: &str) -> Result<()> {
        let parsed = parse_url(scratch_url)?;
        let mut conn = conn::connect(&parsed)?;
        conn.exec(&format!("DROP DATABASE IF EXISTS {}", conn::quote(&parsed.database)), "dropping a scratch database")
    }
}

#[cfg(test)]
mod tests {
    use barge_core::EngineFactory;

    use super::MyEngine;

    #[test]
    fn another_database_of_the_same_server_keeps_credentials_and_parameters() {
        let turned = |url: &str| MyEngine.in_namespace(url, "shop").unwrap();
        assert_eq!(turned("mysql://root@127.0.0.1:3306/app"), "mysql://root@127.0.0.1:3306/shop");
        assert_eq!(
            turned("mysql://u:p%2Fss@db:3306/app?local_infile=false"),
            "mysql://u:p%2Fss@db:3306/shop?local_infile=false"
        );
        assert_eq!(turned("mariadb://root@localhost/app"), "mariadb://root@localhost/shop");
    }
}
