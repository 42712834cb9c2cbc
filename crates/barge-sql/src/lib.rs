//! # barge-sql
//!
//! SQL text that more than one SQL engine speaks, kept out of `barge-core` (which names no
//! engine and builds no SQL). An engine crate depends on this crate only if it speaks SQL; each
//! passes its own identifier quoting and literal rendering.
//!
//! * [`delete_statements`]: `DELETE … WHERE (key) IN ((…), …)` in chunks, for incremental deletes.
//! * [`on_conflict_clause`]: the standard `ON CONFLICT … DO NOTHING | DO UPDATE` of a conflict mode.
//! * [`synthetic::Dialect`]: the synthetic benchmark tables as `CREATE TABLE` + `INSERT … SELECT`.

pub mod synthetic;

use barge_core::{Conflict, Error, Result, WriteOptions};

/// Rows per DELETE statement of [`delete_statements`].
pub const DELETE_CHUNK: usize = 500;

/// The values of one reported key (a JSON array, or a lone value for a one-column key).
pub fn key_values(key: &serde_json::Value) -> Vec<&serde_json::Value> {
    match key {
        serde_json::Value::Array(values) => values.iter().collect(),
        single => vec![single],
    }
}

/// The `DELETE FROM table WHERE (key columns) IN ((…), …)` statements removing `keys`,
/// [`DELETE_CHUNK`] keys each, for engines that take literals. `table` and `columns` are quoted;
/// `literal(i, value)` renders a value of key column `i`.
pub fn delete_statements(
    table: &str,
    columns: &[String],
    keys: &[serde_json::Value],
    literal: impl Fn(usize, &serde_json::Value) -> String,
) -> Vec<String> {
    let lhs = format!("({})", columns.join(", "));
    keys.chunks(DELETE_CHUNK)
        .map(|chunk| {
            let tuples: Vec<String> = chunk
                .iter()
                .map(|key| {
                    let values: Vec<String> =
                        key_values(key).into_iter().enumerate().map(|(i, v)| literal(i, v)).collect();
                    format!("({})", values.join(", "))
                })
                .collect();
            format!("DELETE FROM {table} WHERE {lhs} IN ({})", tuples.join(", "))
        })
        .collect()
}

/// `ALTER TABLE t ADD [CONSTRAINT name] FOREIGN KEY (…) REFERENCES r (…) [ON DELETE …] [ON
/// UPDATE …]` in standard SQL; `table` and `ref_table` come quoted and qualified.
pub fn add_foreign_key(
    table: &str,
    ref_table: &str,
    fk: &barge_core::ForeignKeyInfo,
    quote: impl Fn(&str) -> String,
) -> String {
    let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let name = fk.name.as_ref().map(|n| format!("CONSTRAINT {} ", quote(n))).unwrap_or_default();
    let mut sql = format!(
        "ALTER TABLE {table} ADD {name}FOREIGN KEY ({}) REFERENCES {ref_table} ({})",
        list(&fk.columns),
        list(&fk.ref_columns)
    );
    for (event, action) in [("DELETE", &fk.on_delete), ("UPDATE", &fk.on_update)] {
        if let Some(action) = action {
            sql.push_str(&format!(" ON {event} {action}"));
        }
    }
    sql
}

/// The standard SQL `ON CONFLICT (key) DO NOTHING | DO UPDATE SET c = excluded.c` clause of a
/// writer's conflict mode (empty for [`Conflict::Error`]). `columns` are the columns written,
/// `quote` quotes an identifier.
pub fn on_conflict_clause(
    options: &WriteOptions,
    columns: &[String],
    quote: impl Fn(&str) -> String,
) -> Result<String> {
    if options.conflict == Conflict::Error {
        return Ok(String::new());
    }
    if options.key.is_empty() {
        return Err(Error::Config(format!("conflict mode {:?} needs the table's key columns", options.conflict)));
    }
    let key = options.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let updates: Vec<String> =
        columns.iter().filter(|c| !options.key.contains(c)).map(|c| format!("{0} = excluded.{0}", quote(c))).collect();
    Ok(match options.conflict {
        Conflict::Upsert if !updates.is_empty() => {
            format!(" ON CONFLICT ({key}) DO UPDATE SET {}", updates.join(", "))
        }
        _ => format!(" ON CONFLICT ({key}) DO NOTHING"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_keep_their_name_and_actions() {
        let fk = barge_core::ForeignKeyInfo {
            name: Some("fk_a".into()),
            columns: vec!["a".into(), "b".into()],
            ref_table: "r".into(),
            ref_columns: vec!["x".into(), "y".into()],
            on_delete: barge_core::ForeignKeyInfo::action("c"),
            on_update: barge_core::ForeignKeyInfo::action("SET_NULL"),
        };
        let q = |s: &str| format!("\"{s}\"");
        assert_eq!(
            add_foreign_key("t", "r", &fk, q),
            "ALTER TABLE t ADD CONSTRAINT \"fk_a\" FOREIGN KEY (\"a\", \"b\") REFERENCES r (\"x\", \"y\") ON DELETE CASCADE ON UPDATE SET NULL"
        );
        let plain = barge_core::ForeignKeyInfo { name: None, on_delete: None, on_update: None, ..fk };
        assert_eq!(
            add_foreign_key("t", "r", &plain, q),
            "ALTER TABLE t ADD FOREIGN KEY (\"a\", \"b\") REFERENCES r (\"x\", \"y\")"
        );
        assert_eq!(barge_core::ForeignKeyInfo::action("a").as_deref(), Some("NO ACTION"));
        assert_eq!(barge_core::ForeignKeyInfo::action("x"), None);
    }

    #[test]
    fn deletes_come_in_chunks_of_literal_tuples() {
        let keys: Vec<serde_json::Value> = (0..1001).map(|i| serde_json::json!([i, "a"])).collect();
        let sql = delete_statements("t", &["k".into(), "s".into()], &keys, |i, v| match i {
            0 => v.to_string(),
            _ => format!("'{}'", v.as_str().unwrap()),
        });
        assert_eq!(sql.len(), 3);
        assert!(sql[0].starts_with("DELETE FROM t WHERE (k, s) IN ((0, 'a'), (1, 'a')"), "{}", sql[0]);
        assert!(sql[2].ends_with("((1000, 'a'))"), "{}", sql[2]);
    }

    #[test]
    fn conflict_modes_spell_standard_clauses() {
        let q = |s: &str| format!("\"{s}\"");
        let cols = ["id".to_string(), "v".to_string()];
        let mut options = WriteOptions { key: vec!["id".into()], ..WriteOptions::default() };
        assert_eq!(on_conflict_clause(&options, &cols, q).unwrap(), "");
        options.conflict = Conflict::Skip;
        assert_eq!(on_conflict_clause(&options, &cols, q).unwrap(), " ON CONFLICT (\"id\") DO NOTHING");
        options.conflict = Conflict::Upsert;
        assert_eq!(
            on_conflict_clause(&options, &cols, q).unwrap(),
            " ON CONFLICT (\"id\") DO UPDATE SET \"v\" = excluded.\"v\""
        );
        options.key.clear();
        assert!(on_conflict_clause(&options, &cols, q).unwrap_err().is_usage());
    }
}
