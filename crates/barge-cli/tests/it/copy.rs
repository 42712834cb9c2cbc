//! SQLite → SQLite copies: the JSON contract, every supported type, keys of every shape, sizes.

use crate::support::*;

const EVERY_TYPE: &str = r#"
CREATE TABLE everything (
  id INTEGER PRIMARY KEY,
  i INT, big BIGINT, small SMALLINT, r REAL, d DOUBLE, f FLOAT,
  t TEXT, v VARCHAR(10), c CHAR(3), cl CLOB, j JSON, u UUID,
  bl BLOB, untyped, bo BOOLEAN, dec DECIMAL(12,2), num NUMERIC, money MONEY,
  da DATE, dt DATETIME, ts TIMESTAMP, tz TIMESTAMPTZ, tm TIME,
  "Mixed Case ""quoted"" name" TEXT, "select" INTEGER
);
INSERT INTO everything VALUES
 (1, 42, 9223372036854775807, -32768, 1.5, -2.25e-300, 1e308,
  'héllo wörld', 'short', 'abc', 'a clob', '{"b": 1, "a": [1, 2]}', '123e4567-e89b-12d3-a456-426614174000',
  x'00ff10', x'cafe', 1, '12345.67', 42, '19.99',
  '2024-02-29', '2024-02-29 13:45:10', '1999-12-31 23:59:59.999999', '2024-06-01 00:00:00+00:00', '08:30:00',
  'quoted', 7),
 (2, -9223372036854775808, 0, 0, -0.0, 9e999, -9e999,
  '日本語 🚀 emoji', '', ' ', '', '[]', '',
  x'', x'0102', 0, '-0.01', 3.25, '-1',
  '0001-01-01', '1970-01-01 00:00:00', '2262-04-11 23:47:16.854775', '1969-12-31 23:59:59.5+00:00', '23:59:59.999999',
  '', 0),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[test]
fn copy_json_has_the_documented_shape() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    let json = copy_ok(&dir, "s.db", "t.db", &[]);
    for key in ["ok", "rows", "seconds", "rows_per_s", "tables"] {
        assert!(json.get(key).is_some(), "missing {key}: {json}");
    }
    assert_eq!(json["rows"], 2);
    let t = table(&json, "t");
    for key in ["table", "rows_read", "rows_written", "rows_rejected", "partitions", "seconds", "verified"] {
        assert!(t.get(key).is_some(), "missing {key}: {t}");
    }
    assert_eq!(
        (t["rows_read"].as_u64(), t["rows_written"].as_u64(), t["rows_rejected"].as_u64()),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(t["verified"], true);
}

#[test]
fn every_supported_sqlite_type_round_trips_exactly() {
    let dir = Dir::new();
    dir.sql("s.db", EVERY_TYPE);
    let json = copy_ok(&dir, "s.db", "t.db", &[]);
    assert_eq!(table(&json, "everything")["verified"], true);
    // Same declared types, same NOT NULL and key, same stored values and storage classes.
    let schema = |name: &str| -> Vec<(String, String, bool, i64)> {
        let conn = dir.conn(name);
        let mut stmt = conn.prepare("PRAGMA table_info(everything)").unwrap();
        stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(5)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(schema("s.db"), schema("t.db"));
    assert_eq!(dump(&dir.conn("s.db"), "everything"), dump(&dir.conn("t.db"), "everything"));
}

#[test]
fn timestamps_in_any_accepted_form_verify_by_value() {
    let dir = Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE ev (id INTEGER PRIMARY KEY, at DATETIME, tz TIMESTAMPTZ);
         INSERT INTO ev VALUES (1, '2024-01-01T10:00:00', '2024-01-01T12:00:00+02:00'),
                               (2, '2024-01-01 10:00', '2024-01-01 10:00:00Z'),
                               (3, 1704103200, '2024-01-01 10:00:00');",
    );
    copy_ok(&dir, "s.db", "t.db", &[]);
    // The target holds one canonical text form, which sorts chronologically.
    let stored: Vec<String> = dir
        .conn("t.db")
        .prepare("SELECT at || ' | ' || tz FROM ev ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        stored,
        [
            "2024-01-01 10:00:00 | 2024-01-01 10:00:00+00:00",
            "2024-01-01 10:00:00 | 2024-01-01 10:00:00+00:00",
            "2024-01-01 10:00:00 | 2024-01-01 10:00:00+00:00"
        ]
    );
}

#[test]
fn empty_keyless_composite_and_text_keyed_tables_copy_and_verify() {
    let dir = Dir::new();
    let mut sql = String::from(
        "CREATE TABLE empty (id INTEGER PRIMARY KEY, x TEXT);
         CREATE TABLE keyless (a INTEGER, b TEXT);
         CREATE TABLE composite (region TEXT, n INTEGER, v REAL, PRIMARY KEY (region, n));
         CREATE TABLE texty (code TEXT PRIMARY KEY, label TEXT) WITHOUT ROWID;",
    );
    for i in 0..3000 {
        // Duplicate rows in the keyless table: verification must count them, not cancel them.
        sql.push_str(&format!("INSERT INTO keyless VALUES ({}, 'dup');", i % 10));
        sql.push_str(&format!("INSERT INTO composite VALUES ('{}', {i}, {i}.5);", ["eu", "us", "ässia"][i % 3]));
        sql.push_str(&format!("INSERT INTO texty VALUES ('k{:x}-✓', 'label {i}');", i * 7919));
    }
    dir.sql("s.db", &format!("BEGIN; {sql} COMMIT;"));
    let json = copy_ok(&dir, "s.db", "t.db", &["--partitions", "4"]);
    for name in ["empty", "keyless", "composite", "texty"] {
        assert_eq!(table(&json, name)["verified"], true, "{name}");
    }
    assert_eq!(table(&json, "empty")["rows_written"], 0);
    assert_eq!(table(&json, "composite")["partitions"], 4);
    assert_eq!(table(&json, "texty")["partitions"], 4);
    assert_eq!(table(&json, "keyless")["partitions"], 4, "keyless tables are read in rowid ranges");
    assert_eq!(dir.count("t.db", "keyless"), 3000);
    for name in ["composite", "texty"] {
        assert_eq!(dump(&dir.conn("s.db"), name), dump(&dir.conn("t.db"), name));
    }
}

#[test]
fn tuning_flags_shape_the_run_and_sparse_keys_are_balanced() {
    let dir = Dir::new();
    let mut sql = String::from("BEGIN; CREATE TABLE sparse (id INTEGER PRIMARY KEY, v TEXT);");
    // Keys crowd at the low end: integer arithmetic would put almost everything in one range.
    for i in 0..20_000i64 {
        sql.push_str(&format!("INSERT INTO sparse VALUES ({}, 'v{i}');", i * i));
    }
    sql.push_str("COMMIT;");
    dir.sql("s.db", &sql);
    let json = copy_ok(&dir, "s.db", "t.db", &["--workers", "3", "--batch-rows", "7", "--partitions", "5"]);
    assert_eq!(table(&json, "sparse")["partitions"], 5);
    assert_eq!(table(&json, "sparse")["rows_written"], 20_000);
    assert_eq!(table(&json, "sparse")["verified"], true);
}

#[test]
fn if_exists_truncate_replaces_and_append_adds() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    dir.sql("t.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'old'), (9, 'old');");
    copy_ok(&dir, "s.db", "t.db", &["--if-exists", "truncate"]);
    assert_eq!(dump(&dir.conn("t.db"), "t"), dump(&dir.conn("s.db"), "t"));

    dir.sql("s2.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (3, 'c');");
    let (from, to) = (dir.url("s2.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to, "--if-exists", "append", "--json"]);
    // The target now holds rows the source lacks, and verification says exactly which.
    run.assert_code(3);
    assert_eq!(dir.count("t.db", "t"), 3);
    let json = run.json();
    let diff = &table(&json, "t")["diff"];
    assert_eq!(diff["extra"], serde_json::json!([[1], [2]]), "{diff}");
    assert_eq!(diff["missing_total"], 0);
}

#[test]
fn appending_a_duplicate_key_fails_and_rolls_back() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    dir.sql("t.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (2, 'taken');");
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to, "--if-exists", "append"]);
    run.assert_code(1);
    assert!(run.stderr.contains("UNIQUE constraint failed"), "{}", run.stderr);
    assert_eq!(dir.count("t.db", "t"), 1, "the failed range's rows were rolled back");
}

#[test]
fn secondary_and_unique_indexes_are_recreated() {
    let dir = Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE p (id INTEGER PRIMARY KEY, code TEXT UNIQUE, a TEXT, b TEXT);
         CREATE INDEX p_ab ON p (a, b);
         INSERT INTO p VALUES (1, 'x', 'a', 'b');",
    );
    copy_ok(&dir, "s.db", "t.db", &[]);
    let indexes: Vec<(String, bool)> = dir
        .conn("t.db")
        .prepare("SELECT il.name, il.\"unique\" FROM pragma_index_list('p') il ORDER BY il.name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // SQLite → SQLite restores the source's own statements: the same names.
    assert_eq!(indexes, [("p_ab".to_string(), false), ("sqlite_autoindex_p_1".to_string(), true)]);
}

#[test]
fn a_million_rows_copy_and_verify() {
    let dir = Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, grp INTEGER, label TEXT, amount DECIMAL(12,2), at DATETIME);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
         INSERT INTO big SELECT i, i % 97, 'row ' || i, (i % 100000) / 100.0, datetime(1700000000 + i, 'unixepoch') FROM n;",
    );
    let json = copy_ok(&dir, "s.db", "t.db", &[]);
    let big = table(&json, "big");
    assert_eq!(big["rows_written"], 1_000_000);
    assert_eq!(big["verified"], true);
    assert!(big["partitions"].as_u64().unwrap() > 1);
}

#[test]
fn demo_runs_and_verifies() {
    let dir = Dir::new();
    let out = dir.path("demo");
    let run = barge(&["demo", "--rows", "20000", "--dir", out.to_str().unwrap(), "--json"]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["tables"].as_array().unwrap().len(), 4);
    assert!(json["tables"].as_array().unwrap().iter().all(|t| t["verified"] == true), "{json}");
    assert_eq!(table(&json, "orders")["rows_written"], 20_000);
    assert!(out.join("source.db").exists() && out.join("target.db").exists());
}
