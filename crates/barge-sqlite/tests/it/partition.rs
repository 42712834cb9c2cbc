//! The partitioner on real SQLite tables: every row in exactly one range, balanced ranges on
//! skewed keys, text and composite keys ordered by SQLite itself.

use barge_core::{KeyRange, Source, TableInfo};
use barge_plan::partition::plan_ranges;

use crate::{Db, read_all};

fn rows_per_range(source: &dyn Source, table: &TableInfo, ranges: &[KeyRange]) -> Vec<u64> {
    ranges.iter().map(|r| source.key_stats(table, r).unwrap().rows).collect()
}

fn assert_balanced(counts: &[u64]) {
    let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(hi <= 2 * lo, "unbalanced ranges: {counts:?}");
}

#[test]
fn skewed_integer_keys_get_balanced_ranges_covering_every_row_once() {
    let db = Db::new();
    // Half the rows in keys 1..50000, the rest spread up to 10^12.
    db.sql(
        "s.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
         INSERT INTO t SELECT CASE WHEN i <= 50000 THEN i ELSE i * i * 100 END, i FROM n;",
    );
    let source = db.source("s.db");
    let table = source.table("t").unwrap();
    let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 8).unwrap();
    assert_eq!(ranges.len(), 8);
    let counts = rows_per_range(source.as_ref(), &table, &ranges);
    assert_eq!(counts.iter().sum::<u64>(), 100_000);
    assert_balanced(&counts);
    let read: usize = ranges.iter().flat_map(|r| read_all(source.as_ref(), &table, r)).map(|b| b.num_rows()).sum();
    assert_eq!(read, 100_000);
}

#[test]
fn text_and_composite_keys_follow_sqlite_ordering() {
    let db = Db::new();
    db.sql(
        "s.db",
        "CREATE TABLE txt (k TEXT PRIMARY KEY, v INTEGER);
         CREATE TABLE comp (a TEXT, b INTEGER, PRIMARY KEY (a, b));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO txt SELECT printf('%x-ü', i * 2654435761 % 1000003), i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO comp SELECT CASE WHEN i % 10 = 0 THEN 'rare' ELSE 'common' END, i FROM n;",
    );
    let source = db.source("s.db");
    for name in ["txt", "comp"] {
        let table = source.table(name).unwrap();
        let ranges = plan_ranges(source.as_ref(), &table, &KeyRange::all(), 6).unwrap();
        assert_eq!(ranges.len(), 6, "{name}");
        let counts = rows_per_range(source.as_ref(), &table, &ranges);
        assert_eq!(counts.iter().sum::<u64>(), 40_000, "{name}");
        assert_balanced(&counts);
    }
}

#[test]
fn keyless_tables_are_ranged_by_rowid_and_tiny_tables_stay_whole() {
    let db = Db::new();
    db.sql(
        "s.db",
        "CREATE TABLE log (msg TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO log SELECT 'm' || i FROM n;
         CREATE TABLE one (id INTEGER PRIMARY KEY); INSERT INTO one VALUES (1);",
    );
    let source = db.source("s.db");
    let log = source.table("log").unwrap();
    assert_eq!(log.key, barge_core::KeySpec::Locator("rowid".into()));
    let ranges = plan_ranges(source.as_ref(), &log, &KeyRange::all(), 4).unwrap();
    assert_eq!(rows_per_range(source.as_ref(), &log, &ranges), vec![250, 250, 250, 250]);
    let one = source.table("one").unwrap();
    assert_eq!(plan_ranges(source.as_ref(), &one, &KeyRange::all(), 4).unwrap().len(), 1);
}
