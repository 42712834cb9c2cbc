//! Every row of the mapping table (`barge_postgres::types::mapping()`, with its samples) round-trips PostgreSQL → Arrow → PostgreSQL with the same values
//! and the same digest, as a scalar column and as a one-dimensional array (1 element, empty, NULL).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use barge_core::{EngineFactory, KeyRange, Target};
use barge_postgres::PgEngine;
use barge_verify::batch_digest;

use crate::{TestDb, read_all};

/// (column type, sample literals): every row of the mapping table that has samples. NULL is added
/// to every list.
fn samples() -> Vec<(&'static str, &'static [&'static str])> {
    barge_postgres::types::mapping()
        .into_iter()
        .filter(|r| !r.samples.is_empty())
        .map(|r| (r.native, r.samples))
        .collect()
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

fn single(batches: Vec<RecordBatch>) -> RecordBatch {
    assert_eq!(batches.len(), 1);
    batches.into_iter().next().unwrap()
}

/// Writes `batch` into `table` of `target` the way the runtime does: plan the columns, create the
/// table, encode on "the CPU pool", write, commit.
fn load(target: &dyn Target, table: &str, batch: &RecordBatch) {
    let columns: Vec<_> =
        batch.schema().fields().iter().map(|f| (f.as_ref().clone(), target.column_for(table, f).unwrap())).collect();
    target.create_table(table, &columns, &["id".to_string()]).unwrap();
    let fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let encoder = target.encoder(table, &fields).unwrap();
    let mut writer = target.writer(table, &fields, &barge_core::WriteOptions::default()).unwrap();
    writer.write(encoder.encode(batch.clone()).unwrap()).unwrap();
    writer.commit().unwrap();
}

#[test]
fn every_mapping_row_round_trips_as_scalar_and_array() {
    let db = TestDb::new("types");
    // PostGIS for the geometry row (scripts/test.sh and .ci/run install it).
    let mut ddl = String::from("CREATE EXTENSION IF NOT EXISTS postgis;\n");
    for (i, (sql_type, values)) in samples().iter().enumerate() {
        let rows: Vec<String> = values
            .iter()
            .chain(["NULL"].iter())
            .enumerate()
            .map(|(r, v)| format!("({r}, ({v})::{sql_type}, ARRAY[({v})::{sql_type}, NULL])"))
            .chain([format!("(100, NULL, '{{}}'::{sql_type}[])")])
            .collect();
        ddl.push_str(&format!(
            "CREATE TABLE t{i} (id integer PRIMARY KEY, c {sql_type}, a {sql_type}[]); INSERT INTO t{i} VALUES {};\n",
            rows.join(", ")
        ));
    }
    db.sql(&ddl);
    let source = db.source();
    let target = PgEngine.open_target(&db.url()).unwrap();
    for (i, (sql_type, _)) in samples().iter().enumerate() {
        let table = source.table(&format!("t{i}")).unwrap();
        let original = single(read_all(source.as_ref(), &table, &KeyRange::all()));

        // PostgreSQL → PostgreSQL keeps the native type.
        load(target.as_ref(), &format!("same{i}"), &original);
        let same = source.table(&format!("same{i}")).unwrap();
        assert_eq!(
            same.schema.field(1).metadata(),
            table.schema.field(1).metadata(),
            "{sql_type}: the target column keeps its type"
        );
        let back = single(read_all(source.as_ref(), &same, &KeyRange::all()));
        assert_eq!(back.columns(), original.columns(), "{sql_type}");
        assert_eq!(batch_digest("t", &back).unwrap(), batch_digest("t", &original).unwrap(), "{sql_type}");

        // From another engine (Arrow types only) it lands in barge's own choice of type, same values.
        load(target.as_ref(), &format!("foreign{i}"), &strip_engine_metadata(&original));
        let foreign = source.table(&format!("foreign{i}")).unwrap();
        let back = single(read_all(source.as_ref(), &foreign, &KeyRange::all()));
        // Arrow types may widen (oid → bigint); the canonical digest says whether values are equal.
        assert_eq!(
            batch_digest("t", &back).unwrap(),
            batch_digest("t", &original).unwrap(),
            "{sql_type} via Arrow types"
        );
    }
}

#[test]
fn enums_and_domains_read_as_text_and_base_type() {
    let db = TestDb::new("enums");
    db.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
         CREATE TABLE e (id integer PRIMARY KEY, m mood, ms mood[], p positive);
         INSERT INTO e VALUES (1, 'happy', ARRAY['ok', 'sad']::mood[], 5), (2, NULL, NULL, NULL);",
    );
    let source = db.source();
    let table = source.table("e").unwrap();
    let native: Vec<&str> =
        table.schema.fields().iter().map(|f| f.metadata()[barge_core::META_NATIVE_TYPE].as_str()).collect();
    assert_eq!(native, ["integer", "text", "text[]", "integer"]);
    let original = single(read_all(source.as_ref(), &table, &KeyRange::all()));
    let target = PgEngine.open_target(&db.url()).unwrap();
    load(target.as_ref(), "e2", &original);
    let back = single(read_all(source.as_ref(), &source.table("e2").unwrap(), &KeyRange::all()));
    assert_eq!(back.columns(), original.columns());
}

#[test]
fn huge_values_travel_whole() {
    let db = TestDb::new("huge");
    db.sql(
        "CREATE TABLE h (id integer PRIMARY KEY, t text, b bytea);
         INSERT INTO h VALUES (1, repeat('é', 5 * 1024 * 1024), decode(repeat('ab', 10 * 1024 * 1024), 'hex'));",
    );
    let source = db.source();
    let table = source.table("h").unwrap();
    let original = single(read_all(source.as_ref(), &table, &KeyRange::all()));
    let target = PgEngine.open_target(&db.url()).unwrap();
    load(target.as_ref(), "h2", &original);
    let back = single(read_all(source.as_ref(), &source.table("h2").unwrap(), &KeyRange::all()));
    assert_eq!(back.columns(), original.columns());
}
