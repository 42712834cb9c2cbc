//! Micro-benchmarks of barge's hot paths, each reporting rows (or keys) per second:
//!
//! * `postgres/encode_binary_copy`, `postgres/decode_binary_copy`: an Arrow batch of the `orders`
//!   shape to a binary COPY payload and back, as the PostgreSQL writer and reader do;
//! * `mysql/decode_text`: text-protocol values into Arrow builders, as the MySQL reader does;
//! * `mysql/encode_load_data`: an Arrow batch to LOAD DATA text, as the MySQL writer does;
//! * `verify/canonical_blake3`: canonical encoding and blake3 of every row, with the range digest;
//! * `plan/quantile_bounds`, `plan/integer_bounds`: partition boundaries from a key sample
//!   (64 ranges × 256 sampled composite keys) and by arithmetic.
//!
//! `cargo bench -p barge-benches` runs them; `scripts/bench.sh micro` runs them and records the
//! figures for benches/README.md. Every benchmark first checks that its path gives the right answer
//! (a round trip, a digest that changes with the data), so a fast wrong codec cannot pass.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::TimestampMicrosecondBuilder;
use arrow_array::builder::{BooleanBuilder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use barge_core::{Key, Scalar};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// barge's batch size.
const ROWS: usize = 8192;

/// The `orders` table of scripts/bench.sh: (column, PostgreSQL type, MySQL DATA_TYPE, COLUMN_TYPE).
const ORDERS: &[(&str, &str, &str, &str)] = &[
    ("id", "bigint", "bigint", "bigint(20)"),
    ("customer_id", "integer", "int", "int(11)"),
    ("email", "varchar(255)", "varchar", "varchar(255)"),
    ("name", "varchar(100)", "varchar", "varchar(100)"),
    ("amount", "numeric(12,2)", "decimal", "decimal(12,2)"),
    ("status", "varchar(20)", "varchar", "varchar(20)"),
    ("created_at", "timestamp", "datetime", "datetime"),
    ("updated_at", "timestamp", "datetime", "datetime"),
    ("is_active", "boolean", "tinyint", "tinyint(1)"),
    ("note", "text", "text", "text"),
];

/// A deterministic batch of `orders` rows (NULLs in name, updated_at and note; some non-ASCII text).
fn orders_batch(rows: usize, types: &[DataType]) -> RecordBatch {
    let mut id = Int64Builder::new();
    let mut customer = Int32Builder::new();
    let mut email = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut amount = Decimal128Builder::new().with_precision_and_scale(12, 2).expect("valid decimal");
    let mut status = StringBuilder::new();
    let mut created = TimestampMicrosecondBuilder::new();
    let mut updated = TimestampMicrosecondBuilder::new();
    let mut active = BooleanBuilder::new();
    let mut note = StringBuilder::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..rows {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let r = x >> 33;
        let key = i64::try_from(i).expect("small") + 1;
        id.append_value(key);
        customer.append_value(i32::try_from(r % 100_000).expect("small"));
        email.append_value(format!("customer{}@example.com", r % 100_000));
        if i % 7 == 0 {
            name.append_null()
        } else {
            name.append_value(format!("Zoë Name {}", r % 977))
        }
        amount.append_value(i128::from(r % 10_000_000));
        status.append_value(["pending", "paid", "shipped", "cancelled"][(r % 4) as usize]);
        let t = 1_700_000_000_000_000 + key * 37_000_000;
        created.append_value(t);
        if i % 3 == 0 {
            updated.append_null()
        } else {
            updated.append_value(t + 86_400_000_000)
        }
        active.append_value(!r.is_multiple_of(5));
        if i % 2 == 0 { note.append_null() } else { note.append_value(format!("note {r}: café ☕ 𝄞 \t tab")) }
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(customer.finish()),
        Arc::new(email.finish()),
        Arc::new(name.finish()),
        Arc::new(amount.finish()),
        Arc::new(status.finish()),
        Arc::new(created.finish()),
        Arc::new(updated.finish()),
        Arc::new(active.finish()),
        Arc::new(note.finish()),
    ];
    let arrays: Vec<ArrayRef> = arrays
        .iter()
        .zip(types)
        .map(|(a, t)| arrow_cast::cast(a, t).expect("the generated columns cast to the engine's types"))
        .collect();
    let fields: Vec<Field> = ORDERS
        .iter()
        .zip(&arrays)
        .map(|((name, ..), a)| Field::new(*name, a.data_type().clone(), a.null_count() > 0))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("a valid batch")
}

fn configured() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

fn postgres(c: &mut Criterion) {
    use barge_postgres::decode::CopyParser;
    use barge_postgres::encode::{TargetType, encode_batch};
    let columns: Vec<_> = ORDERS
        .iter()
        .map(|(_, pg, ..)| barge_postgres::types::resolve(pg).expect("a PostgreSQL type barge knows"))
        .collect();
    let types: Vec<DataType> = columns.iter().map(|c| c.arrow()).collect();
    let batch = orders_batch(ROWS, &types);
    let targets: Vec<TargetType> = columns.iter().map(|c| TargetType { column: c.clone(), element_oid: 0 }).collect();
    let decode = |bytes: &[u8]| -> Vec<RecordBatch> {
        let mut parser = CopyParser::new(batch.schema(), &columns, ROWS);
        let mut out = Vec::new();
        parser.buffer().extend_from_slice(bytes);
        let mut emit = |b: RecordBatch, _: Option<bytes::Bytes>| {
            out.push(b);
            Ok(())
        };
        assert!(parser.parse(&mut emit).is_ok(), "the payload decodes");
        assert!(parser.finish(&mut emit).is_ok(), "the payload ends cleanly");
        out
    };
    let bytes = encode_batch(&batch, &targets).expect("the batch encodes");
    assert_eq!(decode(&bytes), vec![batch.clone()], "binary COPY round trip");

    let mut group = c.benchmark_group("postgres");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("encode_binary_copy", |b| {
        b.iter(|| encode_batch(black_box(&batch), &targets).expect("encodes"))
    });
    group.bench_function("decode_binary_copy", |b| b.iter(|| decode(black_box(&bytes))));
    group.finish();
}

fn mysql(c: &mut Criterion) {
    use barge_mysql::codec::{Decoder, decode_lines, encode_batch};
    let kinds: Vec<_> = ORDERS
        .iter()
        .map(|(_, _, data_type, column_type)| {
            barge_mysql::types::resolve(data_type, column_type).expect("a MySQL type barge knows")
        })
        .collect();
    let types: Vec<DataType> = kinds.iter().map(|k| k.arrow()).collect();
    let batch = orders_batch(ROWS, &types);
    // The values as the text protocol delivers them (LOAD DATA text is the same text, escaped).
    let text_rows = decode_lines(&encode_batch(&batch).expect("the batch encodes"));
    let decode = |rows: &[Vec<Option<Vec<u8>>>]| -> RecordBatch {
        let mut decoders: Vec<Decoder> = kinds.iter().map(|k| Decoder::new(*k, ROWS)).collect();
        for row in rows {
            for (decoder, value) in decoders.iter_mut().zip(row) {
                decoder.append(value.as_deref(), false).expect("a valid value");
            }
        }
        let arrays: Vec<ArrayRef> = decoders.iter_mut().map(Decoder::finish).collect();
        RecordBatch::try_new(batch.schema(), arrays).expect("a valid batch")
    };
    assert_eq!(decode(&text_rows), batch, "text protocol round trip");

    let mut group = c.benchmark_group("mysql");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("decode_text", |b| b.iter(|| decode(black_box(&text_rows))));
    group.bench_function("encode_load_data", |b| b.iter(|| encode_batch(black_box(&batch)).expect("encodes")));
    group.finish();
}

fn verify(c: &mut Criterion) {
    let types: Vec<DataType> =
        ORDERS.iter().map(|(_, pg, ..)| barge_postgres::types::resolve(pg).expect("known").arrow()).collect();
    let batch = orders_batch(ROWS, &types);
    let digest = barge_verify::batch_digest("orders", &batch).expect("digests");
    let fewer = barge_verify::batch_digest("orders", &batch.slice(1, ROWS - 1)).expect("digests");
    assert_ne!(digest, fewer, "a missing row changes the digest");

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("canonical_blake3", |b| {
        b.iter(|| barge_verify::batch_digest("orders", black_box(&batch)).expect("digests"))
    });
    group.finish();
}

fn plan(c: &mut Criterion) {
    use barge_plan::partition::{SAMPLE_KEYS_PER_RANGE, integer_bounds, quantile_bounds};
    const PARTS: usize = 64;
    // A composite (text, integer) key sample in ascending order, with runs of repeated prefixes.
    let sample: Vec<Key> = (0..PARTS * SAMPLE_KEYS_PER_RANGE)
        .map(|i| vec![Scalar::Text(format!("tenant-{:05}", i / 97)), Scalar::Int(i64::try_from(i).expect("small"))])
        .collect();
    let bounds = quantile_bounds(&sample, PARTS);
    assert_eq!(bounds.len(), PARTS - 1, "one boundary between each pair of ranges");
    let position = |key: &Key| sample.iter().position(|k| k == key).expect("a sampled key");
    assert!(bounds.windows(2).all(|w| position(&w[0]) < position(&w[1])), "boundaries strictly increase");

    let mut group = c.benchmark_group("plan");
    group.throughput(Throughput::Elements(sample.len() as u64));
    group.bench_function("quantile_bounds", |b| b.iter(|| quantile_bounds(black_box(&sample), PARTS)));
    group.throughput(Throughput::Elements(PARTS as u64));
    group.bench_function("integer_bounds", |b| b.iter(|| integer_bounds(black_box(1), black_box(2_000_000), PARTS)));
    group.finish();
}

criterion_group! { name = benches; config = configured(); targets = postgres, mysql, verify, plan }
criterion_main!(benches);
