//! SQL text shared by the reader and the writer.

use barge_core::{KeyRange, Result, Scalar};
use rusqlite::types::Value;

use crate::sqlite_err;

/// Quotes an identifier: `"` doubled inside, so any name (spaces, quotes, keywords) is safe.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `cols >= lo AND cols < hi` (row values for composite keys) and its parameters. An unbounded
/// range is `1`.
pub fn range_predicate(columns: &[String], range: &KeyRange) -> (String, Vec<Scalar>) {
    let mut params = Vec::new();
    let predicate = barge_core::model::range_predicate(columns, range, "1", |_, scalar| {
        params.push(scalar.clone());
        "?".into()
    });
    (predicate, params)
}

/// Binds key scalars, in order, to a statement's positional parameters.
pub fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Scalar]) -> Result<()> {
    for (i, p) in params.iter().enumerate() {
        let value = match p {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Integer(i64::from(*b)),
            Scalar::Int(v) => Value::Integer(*v),
            Scalar::UInt(v) => i64::try_from(*v).map_or_else(|_| Value::Real(*v as f64), Value::Integer),
            Scalar::Float(v) => Value::Real(*v),
            Scalar::Text(s) => Value::Text(s.clone()),
            Scalar::Bytes(b) => Value::Blob(b.clone()),
        };
        stmt.raw_bind_parameter(i + 1, value).map_err(sqlite_err("binding a key"))?;
    }
    Ok(())
}
