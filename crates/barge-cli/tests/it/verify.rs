//! `barge verify`: exact keys for missing, extra and changed rows.

use serde_json::json;

use crate::support::*;

fn source_with(dir: &Dir, rows: i64) {
    dir.sql(
        "s.db",
        &format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n REAL);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
             INSERT INTO t SELECT i, 'value ' || i, i / 3.0 FROM s;"
        ),
    );
}

fn verify(dir: &Dir, extra: &[&str]) -> Run {
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let mut args = vec!["verify", "--from", &from, "--to", &to, "--json"];
    args.extend_from_slice(extra);
    barge(&args)
}

#[test]
fn identical_tables_match() {
    let dir = Dir::new();
    source_with(&dir, 500);
    copy_ok(&dir, "s.db", "t.db", &["--no-verify"]);
    let run = verify(&dir, &[]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["ok"], true);
    let t = table(&json, "t");
    assert_eq!(
        (t["match"].as_bool(), t["source_rows"].as_u64(), t["target_rows"].as_u64()),
        (Some(true), Some(500), Some(500))
    );
    assert_eq!(t["missing"], json!([]));
}

#[test]
fn names_a_deleted_an_added_and_a_changed_row() {
    let dir = Dir::new();
    source_with(&dir, 1000);
    copy_ok(&dir, "s.db", "t.db", &[]);
    dir.sql(
        "t.db",
        "DELETE FROM t WHERE id = 42; INSERT INTO t VALUES (5000, 'new', 0); UPDATE t SET v = 'changed' WHERE id = 7;",
    );
    let run = verify(&dir, &[]);
    run.assert_code(3);
    let t = table(&run.json(), "t").clone();
    assert_eq!(t["match"], false);
    assert_eq!(t["missing"], json!([[42]]));
    assert_eq!(t["extra"], json!([[5000]]));
    assert_eq!(t["changed"], json!([[7]]));
    assert_eq!(t["changed_columns"], json!([{"key": [7], "columns": ["v"]}]), "the column that differs");
    assert_eq!(t["changed_by_column"], json!({"v": 1}));
    assert_eq!(
        (t["missing_total"].as_u64(), t["extra_total"].as_u64(), t["changed_total"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    // The human report names them too.
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["verify", "--from", &from, "--to", &to]);
    run.assert_code(3);
    assert!(run.stdout.contains("changed  [7] (v)"), "{}", run.stdout);
    assert!(run.stdout.contains("columns  v in 1 rows"), "{}", run.stdout);
}

#[test]
fn narrows_large_ranges_down_to_the_changed_keys() {
    let dir = Dir::new();
    // 200k rows in 2 ranges of 100k: each mismatched range is split repeatedly before rows are diffed.
    source_with(&dir, 200_000);
    copy_ok(&dir, "s.db", "t.db", &["--no-verify"]);
    dir.sql("t.db", "UPDATE t SET n = n + 1e-9 WHERE id IN (3, 150001); DELETE FROM t WHERE id = 199999;");
    let run = verify(&dir, &["--partitions", "2"]);
    run.assert_code(3);
    let t = table(&run.json(), "t").clone();
    assert_eq!(t["changed"], json!([[3], [150001]]));
    assert_eq!(t["changed_by_column"], json!({"n": 2}), "narrowed ranges name their columns: {t}");
    assert_eq!(t["missing"], json!([[199999]]));
}

#[test]
fn composite_and_text_keys_are_reported_as_arrays() {
    let dir = Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE c (region TEXT, n INTEGER, v TEXT, PRIMARY KEY (region, n));
         INSERT INTO c VALUES ('eu', 1, 'a'), ('eu', 2, 'b'), ('us', 1, 'c');",
    );
    copy_ok(&dir, "s.db", "t.db", &[]);
    dir.sql("t.db", "UPDATE c SET v = 'z' WHERE region = 'eu' AND n = 2;");
    let run = verify(&dir, &[]);
    run.assert_code(3);
    assert_eq!(table(&run.json(), "c")["changed"], json!([["eu", 2]]));
    assert_eq!(table(&run.json(), "c")["changed_columns"], json!([{"key": ["eu", 2], "columns": ["v"]}]));
}

#[test]
fn keyless_tables_are_compared_as_multisets() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE log (at TEXT, msg TEXT); INSERT INTO log VALUES ('1', 'x'), ('1', 'x'), ('2', 'y');");
    copy_ok(&dir, "s.db", "t.db", &[]);
    // Removing one of two identical rows must be noticed (a XOR digest would not see it).
    dir.sql("t.db", "DELETE FROM log WHERE rowid = (SELECT min(rowid) FROM log WHERE msg = 'x'); UPDATE log SET msg = 'Y' WHERE at = '2';");
    let run = verify(&dir, &[]);
    run.assert_code(3);
    let t = table(&run.json(), "log").clone();
    assert_eq!(t["missing"], json!([["1", "x"], ["2", "y"]]));
    assert_eq!(t["extra"], json!([["2", "Y"]]));
}

#[test]
fn reports_list_at_most_a_thousand_keys_and_count_them_all() {
    let dir = Dir::new();
    source_with(&dir, 3000);
    copy_ok(&dir, "s.db", "t.db", &[]);
    dir.sql("t.db", "DELETE FROM t WHERE id <= 2500;");
    let run = verify(&dir, &[]);
    run.assert_code(3);
    let t = table(&run.json(), "t").clone();
    assert_eq!(t["missing"].as_array().unwrap().len(), 1000);
    assert_eq!(t["missing_total"], 2500);
}

#[test]
fn human_output_names_the_keys() {
    let dir = Dir::new();
    source_with(&dir, 10);
    copy_ok(&dir, "s.db", "t.db", &[]);
    dir.sql("t.db", "DELETE FROM t WHERE id = 4;");
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["verify", "--from", &from, "--to", &to]);
    run.assert_code(3);
    assert!(run.stdout.contains("MISMATCH") && run.stdout.contains("missing  [4]"), "{}", run.stdout);
}

#[test]
fn a_row_duplicated_in_a_target_without_a_unique_key_is_named() {
    let dir = Dir::new();
    source_with(&dir, 1000);
    // The target has no key, so nothing stops a row from being there twice.
    dir.sql("t.db", "CREATE TABLE t (id INTEGER, v TEXT, n REAL);");
    let source = dir.path("s.db").display().to_string();
    dir.sql(
        "t.db",
        &format!(
            "ATTACH '{source}' AS s; INSERT INTO t SELECT * FROM s.t; INSERT INTO t SELECT * FROM s.t WHERE id = 500;"
        ),
    );
    let run = verify(&dir, &[]);
    run.assert_code(3);
    let t = table(&run.json(), "t").clone();
    assert_eq!(t["match"], false);
    assert_eq!(t["duplicated"], json!([{"key": [500], "present": 2, "expected": 1}]), "{t}");
    assert_eq!(t["duplicated_total"], 1);
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let text = barge(&["verify", "--from", &from, "--to", &to]);
    assert!(text.stdout.contains("key [500] present 2 times, expected 1"), "{}", text.stdout);
    assert!(text.stderr.contains("1 duplicated"), "{}", text.stderr);
}

#[test]
fn a_table_only_the_target_has_is_a_difference() {
    let dir = Dir::new();
    source_with(&dir, 10);
    copy_ok(&dir, "s.db", "t.db", &[]);
    dir.sql("t.db", "CREATE TABLE stray (id INTEGER PRIMARY KEY);");
    let run = verify(&dir, &[]);
    run.assert_code(3);
    assert_eq!(run.json()["only_in_target"], json!(["stray"]));
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    assert!(barge(&["verify", "--from", &from, "--to", &to]).stdout.contains("tables only in the target: stray"));
    // Narrowed by --table, only that table is compared.
    verify(&dir, &["--table", "t"]).assert_code(0);
}

#[test]
fn a_changed_row_across_engines_names_every_column_that_differs() {
    let my = MyDb::new("changed_columns");
    my.sql(
        "CREATE TABLE p (id int PRIMARY KEY, name varchar(20), price decimal(8,2), seen datetime);
         INSERT INTO p VALUES (1, 'a', 1.50, '2024-01-01 00:00:00'), (2, 'b', 2.50, '2024-01-02 00:00:00');",
    );
    let pg = PgDb::new("changed_columns");
    barge(&["copy", "--from", &my.url(), "--to", &pg.url()]).assert_code(0);
    pg.sql("UPDATE p SET price = 9.99, seen = seen + interval '1 second' WHERE id = 2");
    let run = barge(&["verify", "--from", &my.url(), "--to", &pg.url(), "--json"]);
    run.assert_code(3);
    let t = table(&run.json(), "p").clone();
    assert_eq!(t["changed_columns"], json!([{"key": [2], "columns": ["price", "seen"]}]), "{t}");
}
