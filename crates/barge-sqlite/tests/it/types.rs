//! Each row of the mapping table round-trips: SQLite → Arrow → (as another engine's Arrow, without
//! SQLite metadata) → SQLite → Arrow gives the same values and the same digest.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use barge_core::{EngineFactory, KeyRange};
use barge_sqlite::SqliteEngine;
use barge_sqlite::types::DECLARED_TYPES;
use barge_verify::batch_digest;

use crate::{Db, read_all};

/// SQL literals for a declared type's family, including its edge values; NULL is added to all.
fn samples(declared: &str) -> &'static [&'static str] {
    match barge_sqlite::types::kind_of(declared, "t", "c").unwrap() {
        barge_sqlite::types::Kind::Integer => &["0", "-9223372036854775808", "9223372036854775807"],
        barge_sqlite::types::Kind::Real => &["0.0", "-1.5e300", "9e999", "-9e999", "3.141592653589793", "'NaN'"],
        barge_sqlite::types::Kind::Text => &["''", "'héllo'", "'日本 🚀'", "' padded  '"],
        barge_sqlite::types::Kind::Blob => &["x''", "x'00ff'"],
        barge_sqlite::types::Kind::Boolean => &["0", "1"],
        barge_sqlite::types::Kind::Decimal { .. } => &["'0'", "'-123.45'", "'99999.99'", "7"],
        barge_sqlite::types::Kind::NumericText => &["1", "-2.5", "'not a number'"],
        barge_sqlite::types::Kind::Date => &["'0001-01-01'", "'2024-02-29'", "'9999-12-31'"],
        barge_sqlite::types::Kind::DateTime | barge_sqlite::types::Kind::DateTimeTz => {
            &["'1970-01-01 00:00:00'", "'2024-02-29 13:45:10.123456'", "'1900-06-01T00:00:00Z'"]
        }
        barge_sqlite::types::Kind::Time => &["'00:00:00'", "'23:59:59.999999'", "'12:30'"],
        barge_sqlite::types::Kind::Interval => {
            &["'1 months 2 days 3.5 seconds'", "'-14 months 0 days -0.000001 seconds'", "'0 months 0 days 0 seconds'"]
        }
        barge_sqlite::types::Kind::List(_) => match declared {
            "BIGINT_ARRAY" => &["'[1, null, -9223372036854775808]'", "'[]'"],
            "DOUBLE_ARRAY" => &["'[1.5, \"NaN\", \"-Infinity\", 2]'"],
            "TEXT_ARRAY" => &["'[\"a\", \"日本 \\\"q\\\"\", \"\"]'"],
            "DECIMAL_ARRAY(12,2)" => &["'[\"12.30\", \"-0.01\", null]'"],
            "BLOB_ARRAY" => &["'[\"00ff\", \"\"]'"],
            "BOOLEAN_ARRAY" => &["'[1, 0, null]'"],
            "TIMESTAMPTZ_ARRAY" => &["'[\"2024-01-01 00:00:00.5+00:00\"]'"],
            "INTERVAL_ARRAY" => &["'[\"1 months 0 days 0 seconds\"]'"],
            other => panic!("no samples for {other}"),
        },
    }
}

/// List types (not in the mapping table: any element type with the `_ARRAY` suffix).
const ARRAY_TYPES: &[&str] = &[
    "BIGINT_ARRAY",
    "DOUBLE_ARRAY",
    "TEXT_ARRAY",
    "DECIMAL_ARRAY(12,2)",
    "BLOB_ARRAY",
    "BOOLEAN_ARRAY",
    "TIMESTAMPTZ_ARRAY",
    "INTERVAL_ARRAY",
];

fn strip_engine_metadata(batch: &RecordBatch) -> RecordBatch {
    // What another engine would hand over: no native types, but the engine-independent logical type.
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let logical: HashMap<String, String> = f
                .metadata()
                .iter()
                .filter(|(k, _)| *k == barge_core::META_LOGICAL)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            f.as_ref().clone().with_metadata(logical)
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec()).unwrap()
}

#[test]
fn every_mapping_row_round_trips_through_arrow() {
    for declared in DECLARED_TYPES.iter().map(|(d, _)| *d).chain(ARRAY_TYPES.iter().copied()) {
        // DECIMAL needs parameters to be a decimal; without them it is numeric text.
        let declared = if matches!(declared, "DECIMAL" | "NUMERIC" | "DECIMAL_TEXT") {
            format!("{declared}(9,2)")
        } else {
            declared.to_string()
        };
        let db = Db::new();
        let values = samples(&declared);
        let rows: Vec<String> =
            values.iter().chain(["NULL"].iter()).enumerate().map(|(i, v)| format!("({i}, {v})")).collect();
        db.sql(
            "s.db",
            &format!(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, c {declared}); INSERT INTO t VALUES {};",
                rows.join(", ")
            ),
        );
        let source = db.source("s.db");
        let table = source.table("t").unwrap();
        let original = read_all(source.as_ref(), &table, &KeyRange::all());
        let original = single_batch(&original);

        // Write it as a foreign engine would hand it over: Arrow types only.
        let foreign = strip_engine_metadata(&original);
        let target = SqliteEngine.open_target(&db.url("t.db")).unwrap();
        let columns: Vec<_> = foreign
            .schema()
            .fields()
            .iter()
            .map(|f| (f.as_ref().clone(), target.column_for("t", f).unwrap()))
            .collect();
        target.create_table("t", &columns, &["id".into()]).unwrap();
        let fields: Vec<Field> = foreign.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut writer = target.writer("t", &fields, &barge_core::WriteOptions::default()).unwrap();
        writer.write(target.encoder("t", &fields).unwrap().encode(foreign.clone()).unwrap()).unwrap();
        writer.commit().unwrap();
        drop(writer);

        let reread = db.source("t.db");
        let back = single_batch(&read_all(reread.as_ref(), &reread.table("t").unwrap(), &KeyRange::all()));
        assert_eq!(back.column(1).as_ref(), original.column(1).as_ref(), "declared type {declared}");
        assert_eq!(
            batch_digest("t", &back).unwrap(),
            batch_digest("t", &original).unwrap(),
            "declared type {declared}"
        );
    }
}

/// One batch from several (the tables here are small enough to come in one).
fn single_batch(batches: &[RecordBatch]) -> RecordBatch {
    assert_eq!(batches.len(), 1, "small test tables arrive as one batch");
    batches[0].clone()
}

#[test]
fn text_in_a_blob_column_is_refused_not_converted() {
    let db = Db::new();
    db.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB); INSERT INTO t VALUES (1, 'text');");
    let source = db.source("s.db");
    let table = source.table("t").unwrap();
    let err = source.read_range(&table, &KeyRange::all(), 10, &mut |_| Ok(())).unwrap_err().to_string();
    assert!(err.contains("column `b` at key 1") && err.contains("found text"), "{err}");
}

#[test]
fn decimals_beyond_fifteen_digits_are_stored_as_exact_text() {
    let db = Db::new();
    let target = SqliteEngine.open_target(&db.url("t.db")).unwrap();
    let column = target.column_for("t", &Field::new("d", arrow_schema::DataType::Decimal128(30, 10), true)).unwrap();
    assert_eq!(column.native_type, "DECIMAL_TEXT(30,10)");
    assert_eq!(column.read_back, arrow_schema::DataType::Decimal128(30, 10));
}
