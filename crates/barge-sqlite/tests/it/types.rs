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

/// SQL literals for a declared type: the samples of the mapping row of its kind (rows of one
/// family share them; decimals match by family); NULL is added to all.
fn samples(declared: &str) -> &'static [&'static str] {
    let kind = barge_sqlite::types::kind_of(declared, "t", "c").unwrap();
    let same = |native: &str| {
        let row = barge_sqlite::types::kind_of(native, "t", "c").unwrap();
        match (&row, &kind) {
            (barge_sqlite::types::Kind::Decimal { .. }, barge_sqlite::types::Kind::Decimal { .. }) => true,
            _ => row == kind,
        }
    };
    barge_sqlite::types::mapping()
        .into_iter()
        .find(|r| same(r.native))
        .map(|r| r.samples)
        .unwrap_or_else(|| panic!("no mapping row for {declared}"))
}

/// List types: every list row of the mapping table.
fn array_types() -> Vec<&'static str> {
    barge_sqlite::types::mapping().into_iter().map(|r| r.native).filter(|n| n.contains("_ARRAY")).collect()
}

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
    for declared in DECLARED_TYPES.iter().map(|(d, _)| *d).chain(array_types()) {
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
    let err = source
        .read_range(&table, &KeyRange::all(), barge_core::BatchSize::rows(10), &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
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
