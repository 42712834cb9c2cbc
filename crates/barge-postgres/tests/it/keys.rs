//! Keys of every partitionable type, keyless tables, inheritance and declarative partitions.

use barge_core::{KeyRange, KeySpec, Source, TableInfo};
use barge_plan::partition::plan_ranges;

use crate::{TestDb, read_all};

fn counts(source: &dyn Source, table: &TableInfo, ranges: &[KeyRange]) -> Vec<usize> {
    ranges.iter().map(|r| read_all(source, table, r).iter().map(|b| b.num_rows()).sum()).collect()
}

#[track_caller]
fn assert_balanced_cover(name: &str, counts: &[usize], total: usize) {
    assert_eq!(counts.iter().sum::<usize>(), total, "{name}: every row in exactly one range: {counts:?}");
    let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(hi <= 2 * lo.max(1), "{name}: balanced within 2x: {counts:?}");
}

#[test]
fn keys_of_every_partitionable_type_split_into_balanced_ranges() {
    let db = TestDb::new("keys");
    db.sql(
        "CREATE TABLE k_int (k bigint PRIMARY KEY);
         INSERT INTO k_int SELECT CASE WHEN g <= 10000 THEN g ELSE g::bigint * g * 1000 END FROM generate_series(1, 20000) g;
         CREATE TABLE k_num (k numeric(20,4) PRIMARY KEY);
         INSERT INTO k_num SELECT g / 7.0 FROM generate_series(1, 20000) g;
         CREATE TABLE k_text (k text PRIMARY KEY);
         INSERT INTO k_text SELECT md5(g::text) || 'é' FROM generate_series(1, 20000) g;
         CREATE TABLE k_uuid (k uuid PRIMARY KEY);
         INSERT INTO k_uuid SELECT md5(g::text)::uuid FROM generate_series(1, 20000) g;
         CREATE TABLE k_ts (k timestamp PRIMARY KEY);
         INSERT INTO k_ts SELECT '2020-01-01'::timestamp + g * interval '1 second' * (g % 17 + 1) FROM generate_series(1, 20000) g
           ON CONFLICT DO NOTHING;
         CREATE TABLE k_comp (a text, b integer, PRIMARY KEY (a, b));
         INSERT INTO k_comp SELECT CASE WHEN g % 10 = 0 THEN 'rare' ELSE 'common' END, g FROM generate_series(1, 20000) g;
         ANALYZE;",
    );
    let source = db.source();
    for name in ["k_int", "k_num", "k_text", "k_uuid", "k_ts", "k_comp"] {
        let table = source.table(name).unwrap();
        assert!(table.key.is_primary(), "{name} has a primary key");
        let total = source.key_stats(&table, &KeyRange::all()).unwrap().rows as usize;
        let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 6).unwrap();
        assert_eq!(ranges.len(), 6, "{name}");
        assert_balanced_cover(name, &counts(source.as_ref(), &table, &ranges), total);
    }
}

#[test]
fn keyless_tables_are_read_in_ctid_block_ranges() {
    let db = TestDb::new("ctid");
    db.sql("CREATE TABLE log (msg text); INSERT INTO log SELECT 'message ' || g FROM generate_series(1, 50000) g;");
    let source = db.source();
    let table = source.table("log").unwrap();
    assert_eq!(table.key, KeySpec::Locator("ctid".into()));
    let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 5).unwrap();
    assert_eq!(ranges.len(), 5);
    assert_balanced_cover("log", &counts(source.as_ref(), &table, &ranges), 50_000);
}

#[test]
fn inheritance_children_are_tables_of_their_own_and_partitions_are_read_through_their_parent() {
    let db = TestDb::new("inherit");
    db.sql(
        "CREATE TABLE cities (id integer PRIMARY KEY, name text);
         CREATE TABLE capitals (country text) INHERITS (cities);
         INSERT INTO cities VALUES (1, 'Lyon'); INSERT INTO capitals VALUES (2, 'Paris', 'FR');
         CREATE TABLE measures (id integer, at date, v real, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE measures_2023 PARTITION OF measures FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
         CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         INSERT INTO measures SELECT g, '2023-06-01'::date + g, g FROM generate_series(1, 400) g;",
    );
    let source = db.source();
    assert_eq!(source.list_tables().unwrap(), ["capitals", "cities", "measures"]);
    // Each row once, from the table that holds it.
    for (name, rows) in [("cities", 1), ("capitals", 1), ("measures", 400)] {
        let table = source.table(name).unwrap();
        let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 3).unwrap();
        assert_eq!(counts(source.as_ref(), &table, &ranges).iter().sum::<usize>(), rows, "{name}");
    }
}

#[test]
fn quoted_identifiers_work_everywhere() {
    let db = TestDb::new("quoted");
    db.sql(
        r#"CREATE TABLE "Mixed Case ""Tbl""" ("select" integer PRIMARY KEY, "a b" text, "Ünï" text);
           INSERT INTO "Mixed Case ""Tbl""" SELECT g, 'v' || g, NULL FROM generate_series(1, 1000) g;"#,
    );
    let source = db.source();
    let table = source.table(r#"Mixed Case "Tbl""#).unwrap();
    let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 4).unwrap();
    assert_eq!(counts(source.as_ref(), &table, &ranges).iter().sum::<usize>(), 1000);
}

/// Polls a boolean query until it holds (the server's statistics arrive asynchronously).
fn wait_until(db: &TestDb, query: &str) {
    for _ in 0..200 {
        if db.sql(query).first().and_then(|v| v.as_deref()) == Some("t") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("still not true after 10 s: {query}");
}

#[test]
fn fresh_statistics_supply_the_boundaries_and_stale_ones_do_not() {
    let db = TestDb::new("histogram");
    db.sql(
        "CREATE TABLE h (k text PRIMARY KEY);
         INSERT INTO h SELECT md5(g::text) FROM generate_series(1, 30000) g;",
    );
    // Statistics reach the server when a session's backend exits, which a client's disconnect does
    // not wait for: wait until the insert is counted, then until ANALYZE has reset the count.
    wait_until(&db, "SELECT n_mod_since_analyze >= 30000 FROM pg_stat_user_tables WHERE relname = 'h'");
    db.sql("ANALYZE h");
    wait_until(
        &db,
        "SELECT n_mod_since_analyze = 0 AND last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'h'",
    );
    let bounds_in_histogram = |db: &TestDb| -> bool {
        let source = db.source();
        let table = source.table("h").unwrap();
        let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 4).unwrap();
        let bounds: Vec<String> = ranges
            .iter()
            .filter_map(|r| r.lo.as_ref())
            .map(|k| match &k[0] {
                barge_core::Scalar::Text(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bounds.len(), 3);
        let list = bounds.iter().map(|b| format!("'{b}'")).collect::<Vec<_>>().join(", ");
        let found = db.sql(&format!(
            "SELECT count(*) FROM pg_stats, unnest(histogram_bounds::text::text[]) b
             WHERE tablename = 'h' AND attname = 'k' AND b IN ({list})"
        ));
        found[0].as_deref() == Some("3")
    };
    assert!(bounds_in_histogram(&db), "fresh statistics: boundaries come from pg_stats");
    db.sql("INSERT INTO h SELECT md5(g::text) FROM generate_series(30001, 40000) g;");
    wait_until(&db, "SELECT n_mod_since_analyze >= 10000 FROM pg_stat_user_tables WHERE relname = 'h'");
    assert!(!bounds_in_histogram(&db), "stale statistics (25% new rows): boundaries come from a sample");
}
