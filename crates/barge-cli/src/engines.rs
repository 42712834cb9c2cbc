//! The engines this binary knows. Adding an engine is one line here plus its own crate.

use barge_core::Registry;

/// Every registered engine.
pub fn registry() -> Registry {
    Registry::new(vec![&barge_sqlite::SqliteEngine, &barge_postgres::PgEngine, &barge_mysql::MyEngine])
}

/// The scheme of a ledger given as a plain path (`--state run.state.db`): a file of this engine.
pub const FILE_LEDGER_SCHEME: &str = "sqlite";

/// The ledger location `--state` names, as a URL: a plain path is a file ([`FILE_LEDGER_SCHEME`]).
pub fn ledger_url(spec: &str) -> String {
    if spec.contains("://") { spec.to_string() } else { format!("{FILE_LEDGER_SCHEME}://{spec}") }
}

/// The files a ledger at `spec` keeps on this machine (none for a ledger in a server).
pub fn ledger_files(spec: &str) -> Vec<std::path::PathBuf> {
    match barge_sqlite::parse_url(&ledger_url(spec)) {
        Ok(path) => barge_sqlite::ledger::SqliteLedger::files(&path),
        Err(_) => Vec::new(),
    }
}
