//! Pipeline files through the CLI: `plan` and `run`, transforms on every engine, the lossiness
//! report, reject files, error budgets and conflict modes.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/seed-transform.toml");

/// Writes a pipeline file into `dir` and returns its path.
fn pipeline(dir: &Dir, text: &str) -> String {
    let path = dir.path("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn reject_lines(dir: &Dir, table: &str) -> Vec<Value> {
    let path = dir.path(&format!("rejects/{table}.rejects.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const USERS_SQLITE: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT,
     created_date TIMESTAMP NOT NULL, modified_date TIMESTAMP);
   INSERT INTO users VALUES
     (1, 'Ann@Example.ORG', '  Ann  ', '2024-01-02 03:04:05', NULL),
     (2, 'bo@x.io', 'Bo', '2024-02-03 04:05:06', '2024-03-04 05:06:07'),
     (3, 'ÇA@X.IO', NULL, '2024-05-06 07:08:09', NULL);";

const USERS_SQL: &str = "CREATE TABLE users (id integer PRIMARY KEY, email varchar(100) NOT NULL, name varchar(50),
     created_date timestamp NOT NULL, modified_date timestamp NULL);
   INSERT INTO users VALUES
     (1, 'Ann@Example.ORG', '  Ann  ', '2024-01-02 03:04:05', NULL),
     (2, 'bo@x.io', 'Bo', '2024-02-03 04:05:06', '2024-03-04 05:06:07'),
     (3, 'ÇA@X.IO', NULL, '2024-05-06 07:08:09', NULL);";

/// The seed rows as they must land: (id, email, name, created_at, updated_at).
fn seed_expected() -> Vec<Vec<String>> {
    [
        ["1", "ann@example.org", "Ann", "2024-01-02 03:04:05", "2024-01-02 03:04:05"],
        ["2", "bo@x.io", "Bo", "2024-02-03 04:05:06", "2024-03-04 05:06:07"],
        ["3", "ça@x.io", "NULL", "2024-05-06 07:08:09", "2024-05-06 07:08:09"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect()
}

fn run_seed(from: &str, to: &str) -> Value {
    let run = barge_env(&["run", SEED, "--json"], &[("BARGE_SOURCE", from), ("BARGE_TARGET", to)]);
    run.assert_code(0);
    let json = run.json();
    let users = table(&json, "users");
    assert_eq!(users["verified"], true, "{json}");
    assert_eq!(users["transformed"], true);
    assert_eq!((users["rows_read"].as_u64(), users["rows_written"].as_u64()), (Some(3), Some(3)));
    json
}

#[test]
fn the_seed_pipeline_reshapes_users_between_sqlite_files() {
    let dir = Dir::new();
    dir.sql("src.db", USERS_SQLITE);
    run_seed(&dir.url("src.db"), &dir.url("dst.db"));
    let rows: Vec<Vec<String>> = dir
        .conn("dst.db")
        .prepare("SELECT id, email, coalesce(name, 'NULL'), created_at, updated_at FROM users ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((0..5).map(|i| r.get::<_, rusqlite::types::Value>(i).unwrap()).collect::<Vec<_>>()))
        .unwrap()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t.replace('T', " ").trim_end_matches(".000000").to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect();
    assert_eq!(rows, seed_expected());
    let columns: Vec<String> = dir
        .conn("dst.db")
        .prepare("SELECT name FROM pragma_table_info('users') ORDER BY cid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns, ["id", "email", "name", "created_at", "updated_at"]);
}

#[test]
fn the_seed_pipeline_runs_postgres_to_mysql_and_mysql_to_postgres() {
    let (pg, my, pg_back) = (PgDb::new("seed"), MyDb::new("seed"), PgDb::new("seedback"));
    pg.sql(USERS_SQL);
    run_seed(&pg.url(), &my.url());
    let rows = my.sql(
        "SELECT id, email, coalesce(name, 'NULL'), DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s'),
                DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s') FROM users ORDER BY id",
    );
    assert_eq!(rows, seed_expected());
    // And back: a MySQL table holding the seed's source shape.
    my.sql(&format!("DROP TABLE users; {USERS_SQL}"));
    run_seed(&my.url(), &pg_back.url());
    let rows = pg_back.sql(
        "SELECT id::text, email, coalesce(name, 'NULL'), to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'),
                to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS') FROM users ORDER BY id",
    );
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.into_iter().map(Option::unwrap).collect()).collect();
    assert_eq!(rows, seed_expected());
}

/// A pipeline exercising every transform, from a SQLite source.
fn all_transforms(from: &str, to: &str) -> String {
    format!(
        r#"
source = "{from}"
target = "{to}"
hash_key = "a test key of enough length"
[[tables]]
source = "people"
drop = ["secret"]
columns = [
  {{ name = "full_name", from = "name" }},
  {{ name = "email", expr = "lower(trim(email))" }},
  {{ name = "code", expr = "upper(replace(code, '-', ''))", type = "varchar(12)" }},
  {{ name = "phone", expr = "regex_replace(phone, '[^0-9]', '')" }},
  {{ name = "initial", expr = "substring(name, 1, 1)" }},
  {{ name = "nick", expr = "coalesce(nick, name)" }},
  {{ name = "city", expr = "default(city, 'unknown')" }},
  {{ name = "note", expr = "null_if(note, '-')" }},
  {{ name = "label", expr = "concat(code, ':', id)" }},
  {{ name = "email_hash", expr = "hash(lower(trim(email)))" }},
  {{ name = "card", expr = "mask(card, 4)" }},
  {{ name = "age", expr = "cast(age_text, 'int64')" }},
  {{ name = "source_system", expr = "'crm'" }},
]
"#
    )
}

const PEOPLE: &str = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, code TEXT,
     phone TEXT, nick TEXT, city TEXT, note TEXT, card TEXT, age_text TEXT, secret TEXT);
   INSERT INTO people VALUES
     (1, 'Ann', ' ANN@X.ORG ', 'ab-1', '+1 (555) 010', NULL, 'Oslo', '-', '4111222233334444', '41', 's1'),
     (2, 'Bo', 'bo@y.io', 'cd-2', '555.020', 'B', NULL, 'vip', '5500', '7', 's2');";

/// (id, full_name, email, code, phone, initial, nick, city, note, label, card, age, source_system)
fn people_expected() -> Vec<Vec<String>> {
    [
        [
            "1",
            "Ann",
            "ann@x.org",
            "AB1",
            "1555010",
            "A",
            "Ann",
            "Oslo",
            "NULL",
            "ab-1:1",
            "************4444",
            "41",
            "crm",
        ],
        ["2", "Bo", "bo@y.io", "CD2", "555020", "B", "B", "unknown", "vip", "cd-2:2", "5500", "7", "crm"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect()
}

/// Every row of `query` over `columns` columns, integers and text as text.
fn sqlite_text_rows(conn: &rusqlite::Connection, query: &str, columns: usize) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(query).unwrap();
    stmt.query_map([], |r| {
        Ok((0..columns)
            .map(|i| match r.get::<_, rusqlite::types::Value>(i).unwrap() {
                rusqlite::types::Value::Integer(v) => v.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

const PEOPLE_QUERY: &str = "SELECT id, full_name, email, code, phone, initial, nick, city, coalesce(note, 'NULL'),
     label, card, age, source_system FROM people ORDER BY id";

#[test]
fn every_transform_lands_in_every_target_and_verifies() {
    let (dir, pg, my) = (Dir::new(), PgDb::new("alltx"), MyDb::new("alltx"));
    dir.sql("src.db", PEOPLE);
    let hash = blake3::keyed_hash(
        &blake3::derive_key("barge 2026 pipeline hash()", b"a test key of enough length"),
        b"ann@x.org",
    )
    .to_hex()
    .to_string();
    for to in [dir.url("dst.db"), pg.url(), my.url()] {
        let file = pipeline(&dir, &all_transforms(&dir.url("src.db"), &to));
        let run = barge(&["run", &file, "--json"]);
        run.assert_code(0);
        let json = run.json();
        assert_eq!(table(&json, "people")["verified"], true, "{to}: {json}");
    }
    let sqlite: Vec<Vec<String>> = sqlite_text_rows(&dir.conn("dst.db"), PEOPLE_QUERY, 13);
    assert_eq!(sqlite, people_expected());
    let pg_rows: Vec<Vec<String>> = pg
        .sql(&PEOPLE_QUERY.replace("SELECT id,", "SELECT id::text,").replace("age,", "age::text,"))
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap).collect())
        .collect();
    assert_eq!(pg_rows, people_expected());
    assert_eq!(my.sql(PEOPLE_QUERY), people_expected());
    assert_eq!(my.sql("SELECT email_hash FROM people WHERE id = 1")[0][0], hash);
    assert_eq!(pg.sql("SELECT email_hash FROM people WHERE id = 1")[0][0].as_deref(), Some(hash.as_str()));
    // The declared type, in each target's own SQL.
    assert_eq!(
        pg.sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'people'::regclass AND attname = 'code'")[0][0]
            .as_deref(),
        Some("character varying(12)")
    );
    assert_eq!(my.sql("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'people' AND COLUMN_NAME = 'code'")[0][0], "varchar(12)");
    // The dropped column is not in the target.
    assert!(pg.sql("SELECT 1 FROM information_schema.columns WHERE column_name = 'secret'").is_empty());
}

#[test]
fn transforms_read_from_postgres_and_mysql_sources() {
    let (dir, pg, my) = (Dir::new(), PgDb::new("txsrc"), MyDb::new("txsrc"));
    let ddl =
        "CREATE TABLE people (id integer PRIMARY KEY, name varchar(20) NOT NULL, email varchar(50), code varchar(9),
         phone varchar(20), nick varchar(9), city varchar(9), note varchar(9), card varchar(20), age_text varchar(5),
         secret varchar(5))";
    let rows = PEOPLE.split_once(';').unwrap().1;
    pg.sql(&format!("{ddl}; {rows}"));
    my.sql(&format!("{ddl}; {rows}"));
    for (from, db) in [(pg.url(), "from_pg.db"), (my.url(), "from_my.db")] {
        let file = pipeline(&dir, &all_transforms(&from, &dir.url(db)));
        let run = barge(&["run", &file, "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "people")["verified"], true, "{from}");
        let got: Vec<Vec<String>> = sqlite_text_rows(&dir.conn(db), PEOPLE_QUERY, 13);
        assert_eq!(got, people_expected(), "{from}");
    }
}

#[test]
fn plan_shows_partitions_ddl_and_columns_and_writes_nothing() {
    let (dir, pg) = (Dir::new(), PgDb::new("planonly"));
    dir.sql("src.db", USERS_SQLITE);
    for to in [dir.url("never.db"), pg.url()] {
        let run = barge_env(&["plan", SEED, "--json"], &[("BARGE_SOURCE", &dir.url("src.db")), ("BARGE_TARGET", &to)]);
        run.assert_code(0);
        let json = run.json();
        assert_eq!(json["ok"], true);
        let users = &json["tables"][0];
        assert_eq!(users["action"], "create");
        assert_eq!(users["partitions"][0]["id"], 0);
        assert!(users["ddl"].as_str().unwrap().contains("CREATE TABLE"), "{users}");
        let columns: Vec<&str> =
            users["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["id", "email", "name", "created_at", "updated_at"]);
        assert_eq!(users["columns"][1]["expr"], "lower(email)");
        assert_eq!(users["sampled_rows"], 3);
    }
    assert!(!dir.path("never.db").exists(), "plan created the SQLite target");
    assert!(pg.sql("SELECT 1 FROM pg_tables WHERE schemaname = 'public'").is_empty(), "plan created a table");
    // The human form says the same.
    let run = barge_env(&["plan", SEED], &[("BARGE_SOURCE", &dir.url("src.db")), ("BARGE_TARGET", &pg.url())]);
    run.assert_code(0);
    assert!(run.stdout.contains("users → users") && run.stdout.contains("lower(email)"), "{}", run.stdout);
}

/// Risks found by `plan` in a MySQL source headed for existing PostgreSQL tables.
#[test]
fn plan_finds_every_lossiness_risk_and_accepting_them_passes() {
    let (my, pg, dir) = (MyDb::new("risks"), PgDb::new("risks"), Dir::new());
    my.sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE facts (id int PRIMARY KEY, big bigint unsigned, name varchar(40), amount decimal(10,3),
           seen datetime, born date);
         INSERT INTO facts VALUES (1, 9223372036854775813, 'a rather long name', 12345.678, '2024-01-01 00:00:00', '0000-00-00'),
                                  (2, 5, 'ok', 1.5, NULL, '2024-01-01');
         CREATE TABLE flags (id int PRIMARY KEY, flag tinyint(1));
         INSERT INTO flags VALUES (1, 1), (2, 2);",
    );
    pg.sql(
        "CREATE TABLE facts (id int PRIMARY KEY, big bigint, name varchar(10), amount numeric(5,1), seen timestamptz, born date);
         CREATE TABLE flags (id int PRIMARY KEY, flag boolean);",
    );
    let text = |accept: bool| {
        let a = |risks: &str| if accept { format!(", accept = [{risks}]") } else { String::new() };
        format!(
            r#"
source = "{}"
target = "{}"
[defaults]
if_exists = "append"
[[tables]]
source = "facts"
columns = [
  {{ name = "big"{} }},
  {{ name = "name"{} }},
  {{ name = "amount"{} }},
  {{ name = "seen"{} }},
  {{ name = "born"{} }},
]
[[tables]]
source = "flags"
columns = [ {{ name = "flag"{} }} ]
"#,
            my.url(),
            pg.url(),
            a("'out_of_range'"),
            a("'too_long'"),
            a("'precision'"),
            a("'naive_timestamp'"),
            a("'zero_date'"),
            a("'bad_value'"),
        )
    };
    let run = barge(&["plan", &pipeline(&dir, &text(false)), "--json"]);
    run.assert_code(2);
    let json = run.json();
    assert_eq!(json["ok"], false);
    let mut found: Vec<(String, String)> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["risks"].as_array().unwrap().iter())
        .map(|r| (r["column"].as_str().unwrap().to_string(), r["risk"].as_str().unwrap().to_string()))
        .collect();
    found.sort();
    let expected = [
        ("amount", "precision"),
        ("big", "out_of_range"),
        ("born", "zero_date"),
        ("flag", "bad_value"),
        ("name", "too_long"),
        ("seen", "naive_timestamp"),
    ];
    assert_eq!(found, expected.map(|(c, r)| (c.to_string(), r.to_string())), "{json}");
    assert!(run.stderr.contains("unaccepted risk"), "{}", run.stderr);
    // `run` refuses the same plan before writing anything.
    let run = barge(&["run", &pipeline(&dir, &text(false))]);
    run.assert_code(2);
    assert_eq!(pg.sql("SELECT count(*) FROM facts")[0][0].as_deref(), Some("0"));
    let run = barge(&["plan", &pipeline(&dir, &text(true)), "--json"]);
    run.assert_code(0);
    assert!(run.json()["tables"][0]["risks"].as_array().unwrap().iter().all(|r| r["accepted"] == true));
}

/// A target with a CHECK constraint and a too-short varchar: the refused rows go to the reject
/// file, the rest is loaded, and read = written + rejected.
fn rejects_into(dir: &Dir, to: &str, create: &dyn Fn(&str), count: &dyn Fn() -> u64, check_only: bool) {
    dir.sql(
        "src.db",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO items SELECT i, CASE WHEN i % 100 = 7 THEN 'much too long' ELSE 'ok' || (i % 10) END,
                                  CASE WHEN i % 250 = 3 THEN -i ELSE i END FROM n;",
    );
    create(
        "CREATE TABLE items (id integer PRIMARY KEY, name varchar(5) NOT NULL, qty integer NOT NULL CHECK (qty > 0))",
    );
    let text = format!(
        r#"
source = "{}"
target = "{to}"
[defaults]
if_exists = "append"
error_budget = 20
partitions = 4
[[tables]]
source = "items"
columns = [ {{ name = "name", accept = ["too_long"] }} ]
"#,
        dir.url("src.db")
    );
    let run = barge(&["run", &pipeline(dir, &text), "--json"]);
    run.assert_code(0);
    let json = run.json();
    let items = table(&json, "items");
    let too_long = if check_only { 0 } else { 10 };
    let rejected = too_long + 4;
    assert_eq!(items["rows_read"], 1000, "{json}");
    assert_eq!(items["rows_rejected"], rejected, "{json}");
    assert_eq!(items["rows_written"], 1000 - rejected);
    assert_eq!(items["verified"], true, "{json}");
    assert_eq!(count(), 1000 - rejected);
    let rejects = reject_lines(dir, "items");
    assert_eq!(rejects.len() as u64, rejected);
    let mut keys: Vec<i64> = rejects.iter().map(|r| r["key"]["id"].as_i64().unwrap()).collect();
    keys.sort();
    let mut expected: Vec<i64> = (1..=1000).filter(|i| i % 250 == 3 || (!check_only && i % 100 == 7)).collect();
    expected.sort();
    assert_eq!(keys, expected);
    let bad_qty = rejects.iter().find(|r| r["key"]["id"] == 3).unwrap();
    assert_eq!(bad_qty["stage"], "write");
    assert_eq!(bad_qty["row"]["qty"], -3);
    assert!(!bad_qty["reason"].as_str().unwrap().is_empty());
}

#[test]
fn rejected_rows_go_to_the_reject_file_on_every_target() {
    let (pg, my) = (PgDb::new("rejects"), MyDb::new("rejects"));
    let dir = Dir::new();
    rejects_into(
        &dir,
        &pg.url(),
        &|ddl| {
            pg.sql(ddl);
        },
        &|| pg.sql("SELECT count(*) FROM items")[0][0].as_ref().unwrap().parse().unwrap(),
        false,
    );
    let dir = Dir::new();
    rejects_into(
        &dir,
        &my.url(),
        &|ddl| {
            my.sql(ddl);
        },
        &|| my.sql("SELECT count(*) FROM items")[0][0].parse().unwrap(),
        false,
    );
    // SQLite does not enforce varchar lengths: only the CHECK refuses rows.
    let dir = Dir::new();
    let target = dir.url("dst.db");
    rejects_into(&dir, &target, &|ddl| dir.sql("dst.db", ddl), &|| dir.count("dst.db", "items") as u64, true);
}

#[test]
fn an_exceeded_error_budget_stops_the_run_and_transform_failures_are_rejects() {
    let (dir, pg) = (Dir::new(), PgDb::new("budget"));
    dir.sql(
        "src.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n TEXT);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200)
         INSERT INTO t SELECT i, CASE WHEN i % 20 = 0 THEN 'x' || i ELSE CAST(i AS TEXT) END FROM s;",
    );
    let text = |budget: &str| {
        format!(
            r#"
source = "{}"
target = "{}"
[defaults]
if_exists = "truncate"
{budget}
[[tables]]
source = "t"
columns = [ {{ name = "n", expr = "cast(n, 'int64')", accept = ["bad_value"] }} ]
"#,
            dir.url("src.db"),
            pg.url()
        )
    };
    // Ten rows fail the cast: within a budget of 10 they are rejected, the rest loads.
    let run = barge(&["run", &pipeline(&dir, &text("error_budget = 10")), "--json"]);
    run.assert_code(0);
    let json = run.json();
    let t = table(&json, "t");
    assert_eq!(
        (t["rows_read"].as_u64(), t["rows_written"].as_u64(), t["rows_rejected"].as_u64()),
        (Some(200), Some(190), Some(10))
    );
    assert_eq!(t["verified"], true);
    let rejects = reject_lines(&dir, "t");
    assert_eq!(rejects.len(), 10);
    assert!(rejects.iter().all(|r| r["stage"] == "transform" && r["column"] == "n"), "{rejects:?}");
    assert_eq!(rejects.iter().find(|r| r["key"]["id"] == 20).unwrap()["reason"], "cannot cast `x20` to Int64");
    assert_eq!(pg.sql("SELECT count(*), sum(n) FROM t")[0], [Some("190".into()), Some("19000".into())]);
    // A budget of 5 is exceeded: exit 1, naming the budget and the reject file.
    let run = barge(&["run", &pipeline(&dir, &text("error_budget = 5"))]);
    run.assert_code(1);
    assert!(run.stderr.contains("exceed the error budget of 5 rows"), "{}", run.stderr);
    assert!(run.stderr.contains("t.rejects.jsonl"), "{}", run.stderr);
    // A percentage budget: 10 of 200 is 5%.
    let run = barge(&["run", &pipeline(&dir, &text("error_budget = \"4%\""))]);
    run.assert_code(1);
    let run = barge(&["run", &pipeline(&dir, &text("error_budget = \"5%\""))]);
    run.assert_code(0);
    // No budget: the first failing row stops the run, with its key.
    let run = barge(&["run", &pipeline(&dir, &text(""))]);
    run.assert_code(1);
    assert!(run.stderr.contains("cannot cast") && run.stderr.contains("at key"), "{}", run.stderr);
}

#[test]
fn conflict_modes_skip_and_upsert_on_every_target() {
    let (dir, pg, my) = (Dir::new(), PgDb::new("conflict"), MyDb::new("conflict"));
    dir.sql(
        "src.db",
        "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         INSERT INTO kv VALUES (3, 'new3'), (4, 'new4'), (5, 'new5'), (6, 'new6'), (7, 'new7');",
    );
    let seed = "DELETE FROM kv; INSERT INTO kv VALUES (1, 'old1'), (2, 'old2'), (3, 'old3'), (4, 'old4')";
    let ddl = "CREATE TABLE kv (id integer PRIMARY KEY, v varchar(10) NOT NULL)";
    dir.sql("dst.db", ddl);
    pg.sql(ddl);
    my.sql(ddl);
    let targets = [Db::Lite(&dir), Db::Pg(&pg), Db::My(&my)];
    for db in &targets {
        let to = db.url();
        for (mode, expected) in [
            ("skip", ["old1", "old2", "old3", "old4", "new5", "new6", "new7"]),
            ("upsert", ["old1", "old2", "new3", "new4", "new5", "new6", "new7"]),
        ] {
            db.exec(seed);
            let text = format!(
                "source = \"{}\"\ntarget = \"{to}\"\n[defaults]\nif_exists = \"append\"\nverify = false\nconflict = \"{mode}\"\n",
                dir.url("src.db")
            );
            let run = barge(&["run", &pipeline(&dir, &text), "--json"]);
            run.assert_code(0);
            assert_eq!(table(&run.json(), "kv")["rows_written"], 5, "{to} {mode}");
            assert_eq!(db.values(), expected, "{to} {mode}");
        }
    }
    // Without a conflict mode a duplicate key is a row failure.
    targets[1].exec(seed);
    let text =
        format!("source = \"{}\"\ntarget = \"{}\"\n[defaults]\nif_exists = \"append\"\n", dir.url("src.db"), pg.url());
    let run = barge(&["run", &pipeline(&dir, &text)]);
    run.assert_code(1);
    assert!(run.stderr.contains("duplicate key"), "{}", run.stderr);
}

/// A target of the conflict test, holding table `kv (id, v)`.
enum Db<'a> {
    Lite(&'a Dir),
    Pg(&'a PgDb),
    My(&'a MyDb),
}

impl Db<'_> {
    fn url(&self) -> String {
        match self {
            Db::Lite(dir) => dir.url("dst.db"),
            Db::Pg(pg) => pg.url(),
            Db::My(my) => my.url(),
        }
    }

    fn exec(&self, sql: &str) {
        match self {
            Db::Lite(dir) => dir.sql("dst.db", sql),
            Db::Pg(pg) => drop(pg.sql(sql)),
            Db::My(my) => drop(my.sql(sql)),
        }
    }

    fn values(&self) -> Vec<String> {
        let query = "SELECT v FROM kv ORDER BY id";
        match self {
            Db::Lite(dir) => {
                let conn = dir.conn("dst.db");
                let mut stmt = conn.prepare(query).unwrap();
                stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Db::Pg(pg) => pg.sql(query).into_iter().map(|r| r[0].clone().unwrap()).collect(),
            Db::My(my) => my.sql(query).into_iter().map(|r| r[0].clone()).collect(),
        }
    }
}

#[test]
fn pipeline_file_errors_name_the_line_or_the_variable() {
    let dir = Dir::new();
    let file = pipeline(
        &dir,
        "source = \"sqlite://a.db\"\ntarget = \"sqlite://b.db\"\n\n[defaults]\nworkers = 2\nretry = 3\n",
    );
    let run = barge(&["plan", &file]);
    run.assert_code(2);
    assert!(run.stderr.contains("pipeline.toml, line 6: unknown field `retry`"), "{}", run.stderr);
    let run = barge_env(&["run", SEED], &[("BARGE_SOURCE", "sqlite://a.db")]);
    run.assert_code(2);
    assert!(run.stderr.contains("line 12: environment variable `BARGE_TARGET` is not set"), "{}", run.stderr);
    let run = barge(&["run", &dir.path("missing.toml").display().to_string()]);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot read pipeline file"), "{}", run.stderr);
    dir.sql("src.db", USERS_SQLITE);
    let bad_column = format!(
        "source = \"{}\"\ntarget = \"{}\"\n[[tables]]\nsource = \"users\"\ncolumns = [{{ name = \"e\", expr = \"lower(mail)\" }}]\n",
        dir.url("src.db"),
        dir.url("dst.db")
    );
    let run = barge(&["plan", &pipeline(&dir, &bad_column)]);
    run.assert_code(2);
    assert!(run.stderr.contains("column `mail` not found in source table `users`"), "{}", run.stderr);
    let key_transformed = bad_column
        .replace("name = \\\"e\\\", expr = \\\"lower(mail)\\\"", "")
        .replace("{ name = \"e\", expr = \"lower(mail)\" }", "{ name = \"id\", expr = \"cast(id, 'text')\" }");
    let run = barge(&["plan", &pipeline(&dir, &key_transformed)]);
    run.assert_code(2);
    assert!(run.stderr.contains("key column `id` must reach the target unchanged"), "{}", run.stderr);
    assert!(!Path::new(&dir.path("dst.db")).exists());
}

#[test]
fn the_shipped_pipelines_parse_and_the_demo_pipeline_runs() {
    let dir = Dir::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    // Every file is well formed: planning it fails only because its databases do not exist.
    let env = [
        ("BARGE_SOURCE", dir.url("nothing-here.db")),
        ("BARGE_TARGET", dir.url("nor-here.db")),
        ("BARGE_DEMO_DIR", dir.path("no-demo").display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for file in &files {
        let run = barge_env(&["plan", &file.display().to_string()], &env);
        run.assert_code(2);
        assert!(run.stderr.contains("source database not found"), "{}: {}", file.display(), run.stderr);
    }
    // The demo pipeline on a small demo database.
    let demo = dir.path("demo");
    barge(&["demo", "--rows", "20000", "--dir", &demo.display().to_string(), "--json"]).assert_code(0);
    let demo_dir = demo.display().to_string();
    let file = root.join("demo.toml").display().to_string();
    let run = barge_env(&["run", &file, "--json"], &[("BARGE_DEMO_DIR", demo_dir.as_str())]);
    run.assert_code(0);
    let json = run.json();
    for t in json["tables"].as_array().unwrap() {
        assert_eq!(t["verified"], true, "{t}");
        assert_eq!(t["rows_read"], t["rows_written"].as_u64().unwrap() + t["rows_rejected"].as_u64().unwrap());
    }
    let target = rusqlite::Connection::open(demo.join("pipeline.db")).unwrap();
    let source = rusqlite::Connection::open(demo.join("source.db")).unwrap();
    let count = |conn: &rusqlite::Connection, sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count(&target, "SELECT count(*) FROM paid_orders"),
        count(&source, "SELECT count(*) FROM orders WHERE status <> 'cancelled'")
    );
    assert_eq!(count(&target, "SELECT count(*) FROM paid_orders WHERE status <> upper(status)"), 0);
    assert_eq!(count(&target, "SELECT count(*) FROM customers WHERE length(email) <> 64"), 0);
    // Running again truncates and reloads (if_exists = "truncate").
    barge_env(&["run", &file], &[("BARGE_DEMO_DIR", demo_dir.as_str())]).assert_code(0);
}

#[test]
fn a_key_override_lets_a_keyless_table_upsert() {
    let (dir, pg) = (Dir::new(), PgDb::new("keyover"));
    dir.sql(
        "src.db",
        "CREATE TABLE rates (code TEXT NOT NULL, rate REAL NOT NULL);
         INSERT INTO rates VALUES ('EUR', 1.0), ('USD', 1.1), ('GBP', 0.9);",
    );
    pg.sql("CREATE TABLE rates (code text PRIMARY KEY, rate float8 NOT NULL); INSERT INTO rates VALUES ('USD', 2.0), ('JPY', 150)");
    let text = format!(
        "source = \"{}\"\ntarget = \"{}\"\n[defaults]\nif_exists = \"append\"\nverify = false\n\
         [[tables]]\nsource = \"rates\"\nkey = [\"code\"]\nconflict = \"upsert\"\n",
        dir.url("src.db"),
        pg.url()
    );
    let run = barge(&["run", &pipeline(&dir, &text), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["plan"]["tables"][0]["key"], serde_json::json!(["code"]));
    let rows = pg.sql("SELECT code || '=' || rate FROM rates ORDER BY code");
    let rows: Vec<String> = rows.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(rows, ["EUR=1", "GBP=0.9", "JPY=150", "USD=1.1"]);
    // Without the key, upsert has nothing to match rows by.
    let run = barge(&["run", &pipeline(&dir, &text.replace("key = [\"code\"]\n", ""))]);
    run.assert_code(2);
    assert!(run.stderr.contains("needs key columns"), "{}", run.stderr);
}

/// `run` keeps the indexes, unique constraints and foreign keys whose columns still reach the
/// target after renames (of columns and tables), and lists the ones over a dropped column.
#[test]
fn run_keeps_indexes_and_foreign_keys_through_renames_and_lists_what_a_drop_breaks() {
    let (my, pg, dir) = (MyDb::new("pipe_fk"), PgDb::new("pipe_fk"), Dir::new());
    my.sql(
        "CREATE TABLE parent (id int PRIMARY KEY, code varchar(10) NOT NULL, UNIQUE KEY parent_code (code));
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL, note varchar(20), secret varchar(20),
             KEY child_note (note), KEY child_secret (secret),
             CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE);
         INSERT INTO parent VALUES (1, 'a'), (2, 'b');
         INSERT INTO child VALUES (1, 1, 'x', 's'), (2, 2, 'y', 's'), (3, 2, 'z', NULL);",
    );
    let file = pipeline(
        &dir,
        &format!(
            r#"source = "{}"
target = "{}"

[[tables]]
source = "parent"
target = "owner"
columns = [{{ name = "owner_key", from = "id" }}, {{ name = "label", from = "code" }}]

[[tables]]
source = "child"
drop = ["secret"]
columns = [{{ name = "owner_id", from = "parent_id" }}, {{ name = "remark", from = "note" }}]
"#,
            my.url(),
            pg.url()
        ),
    );
    let run = barge(&["run", &file, "--json"]);
    run.assert_code(0);
    let json = run.json();
    let listed: Vec<(String, String)> = json["not_migrated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap().to_string(), o["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, [("index".to_string(), "child.child_secret".to_string())], "{json}");
    let q = |sql: &str| pg.sql(sql).into_iter().map(|r| r[0].clone().unwrap_or_default()).collect::<Vec<_>>();
    assert_eq!(
        q(
            "SELECT indexdef FROM pg_indexes WHERE tablename IN ('owner', 'child') AND indexname NOT LIKE '%pkey' ORDER BY 1"
        ),
        [
            r#"CREATE INDEX child_note ON public.child USING btree (remark)"#,
            // MariaDB's own index for the foreign key, under the key's name.
            r#"CREATE INDEX child_parent ON public.child USING btree (owner_id)"#,
            r#"CREATE UNIQUE INDEX parent_code ON public.owner USING btree (label)"#,
        ]
    );
    assert_eq!(
        q("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'"),
        ["FOREIGN KEY (owner_id) REFERENCES owner(owner_key) ON UPDATE RESTRICT ON DELETE CASCADE"]
    );
    // The key works as the source's did: a child without its owner is refused, a delete cascades.
    let refused = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &pg.url(), "-c", "INSERT INTO child (id, owner_id) VALUES (9, 99)"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    pg.sql("DELETE FROM owner WHERE owner_key = 2");
    assert_eq!(q("SELECT count(*) FROM child"), ["1"]);
}

/// `run --status-addr`: the status page in a real browser shows the copy while it runs (held
/// here by a lock on the target table), fetching nothing from elsewhere.
#[test]
fn run_status_page_shows_the_copy_in_a_browser() {
    use std::process::{Command, Stdio};
    let dir = Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO items SELECT i, 'n' || i FROM n;",
    );
    let pg = PgDb::new("run_page");
    pg.sql("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL)");
    let held = Held::psql(&pg.url(), "BEGIN; LOCK TABLE items IN SHARE MODE;");
    let file = pipeline(
        &dir,
        &format!("source = \"{}\"\ntarget = \"{}\"\n[defaults]\nif_exists = \"append\"\n", dir.url("s.db"), pg.url()),
    );
    let port = free_port();
    let mut run = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["run", &file, "--state", &dir.path("r.state.db").display().to_string()])
        .args(["--status-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let browser = crate::browser::Browser::start();
    let page = format!("http://127.0.0.1:{port}/");
    browser.goto(&page);
    assert_eq!(browser.wait_text("phase", |p| !p.is_empty() && p != "…"), "copying");
    let progress = browser.wait_text("progress", |t| t.contains("items"));
    assert!(progress.contains("copy"), "{progress}");
    assert_eq!(browser.eval("return document.getElementById('allowed').closest('section').style.display"), "none");
    let requested = browser.requested();
    assert!(requested.iter().all(|u| u.starts_with(&page)), "{requested:?}");
    // The metrics at the same address: the table's copy begun, not done.
    let samples = scrape(&format!("127.0.0.1:{port}"));
    assert_eq!(metric(&samples, "barge_copy_table_done", Some(("table", "items"))), Some(0.0), "{samples:?}");
    assert!(metric(&samples, "barge_copy_rows_estimated", Some(("table", "items"))).is_some());
    // The lock gone, the copy finishes.
    held.end("COMMIT;");
    assert_eq!(run.wait().unwrap().code(), Some(0));
    assert_eq!(pg.sql("SELECT count(*) FROM items")[0][0].as_deref(), Some("5000"));
}
