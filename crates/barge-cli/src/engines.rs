//! The engines this binary knows. Adding an engine is one line here plus its own crate.

use barge_core::url::split_scheme;
use barge_core::{EngineFactory, Error, Result};

/// Every registered engine.
pub fn registered() -> Vec<&'static dyn EngineFactory> {
    vec![&barge_sqlite::SqliteEngine, &barge_postgres::PgEngine, &barge_mysql::MyEngine]
}

/// The engine whose scheme starts `url`.
pub fn for_url(url: &str) -> Result<&'static dyn EngineFactory> {
    let (scheme, _) = split_scheme(url)?;
    let engines = registered();
    engines.iter().copied().find(|e| e.schemes().contains(&scheme)).ok_or_else(|| Error::UnknownScheme {
        scheme: scheme.to_string(),
        supported: engines.iter().flat_map(|e| e.schemes()).map(|s| format!("{s}://")).collect::<Vec<_>>().join(", "),
    })
}
