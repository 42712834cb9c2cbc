//! The engine matrix: the same case on every source × target pair of registered engines
//! (ripgrep's `rgtest!` is the model). A new engine adds one arm to `support::Engine` and one line
//! to `engine_matrix!`, and every case runs on its pairs.

use crate::support::{Engine, TestDb, barge, table};

/// Defines a module of nine tests, one per (source, target) pair, each running `$case` on a
/// fresh source and target database.
#[macro_export]
macro_rules! engine_matrix {
    ($name:ident, $case:path) => {
        mod $name {
            use $crate::support::Engine;
            $crate::engine_matrix!(@pairs $case;
                sqlite_to_sqlite: Sqlite, Sqlite; sqlite_to_postgres: Sqlite, Postgres; sqlite_to_mysql: Sqlite, Mysql;
                postgres_to_sqlite: Postgres, Sqlite; postgres_to_postgres: Postgres, Postgres;
                postgres_to_mysql: Postgres, Mysql; mysql_to_sqlite: Mysql, Sqlite;
                mysql_to_postgres: Mysql, Postgres; mysql_to_mysql: Mysql, Mysql);
        }
    };
    (@pairs $case:path; $($test:ident: $from:ident, $to:ident);+) => {
        $(
            #[test]
            fn $test() {
                let (source, target) = (Engine::$from.db("matrix"), Engine::$to.db("matrix"));
                $case(source.as_ref(), target.as_ref());
            }
        )+
    };
}

/// Rows of the mixed table.
const ROWS: i64 = 700;

/// A table of mixed types (integer key, text with non-ASCII, decimal, boolean, timestamp, double,
/// binary, a nullable text) in the source engine's own types.
fn create_mixed(db: &dyn TestDb) {
    let ddl = match db.engine() {
        "sqlite" => {
            "CREATE TABLE mixed (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount DECIMAL(12,2), flag BOOLEAN, \
             created DATETIME, ratio REAL, payload BLOB, note TEXT)"
        }
        "postgres" => {
            "CREATE TABLE mixed (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), flag boolean, \
             created timestamp, ratio double precision, payload bytea, note text)"
        }
        _ => {
            "CREATE TABLE mixed (id bigint PRIMARY KEY, name varchar(100) NOT NULL, amount decimal(12,2), \
             flag tinyint(1), created datetime(6), ratio double, payload longblob, note text) \
             DEFAULT CHARSET = utf8mb4"
        }
    };
    let rows: Vec<String> = (1..=ROWS)
        .map(|i| {
            let note = if i % 7 == 0 { "NULL".to_string() } else { format!("'note {i}'") };
            format!(
                "({i}, 'name {i} — ✓', {}.{:02}, {}, '2024-01-{:02} {:02}:{:02}:{:02}.{:06}', {}, {}, {note})",
                i * 3,
                i % 100,
                if i % 2 == 0 { "TRUE" } else { "FALSE" },
                1 + i % 28,
                i % 24,
                i % 60,
                (i * 7) % 60,
                i * 13,
                i as f64 / 8.0,
                db.binary_literal(&format!("{:04x}00ff", i)),
            )
        })
        .collect();
    db.execute(&format!("{ddl}; INSERT INTO mixed VALUES {}", rows.join(", ")));
}

/// Copies the mixed table, verified, then verifies it again with `barge verify`, and checks the
/// target independently of barge (row count, key sum, NULL count).
fn copies_and_verifies_a_mixed_table(source: &dyn TestDb, target: &dyn TestDb) {
    create_mixed(source);
    let (from, to) = (source.url(), target.url());
    let copy = barge(&["copy", "--from", &from, "--to", &to, "--table", "mixed", "--json"]);
    copy.assert_code(0);
    let json = copy.json();
    let mixed = table(&json, "mixed");
    assert_eq!(mixed["verified"], true, "{json}");
    assert_eq!(mixed["rows_read"], ROWS, "{json}");
    assert_eq!(mixed["rows_written"], ROWS, "{json}");
    barge(&["verify", "--from", &from, "--to", &to, "--table", "mixed", "--json"]).assert_code(0);
    let expected = vec![vec![ROWS.to_string(), (ROWS * (ROWS + 1) / 2).to_string(), (ROWS / 7).to_string()]];
    let check = "SELECT count(*), sum(id), count(*) - count(note) FROM mixed";
    assert_eq!(target.rows(check), expected, "{} → {}", source.engine(), target.engine());
}

crate::engine_matrix!(mixed_table, super::copies_and_verifies_a_mixed_table);

#[test]
fn the_kit_reads_every_engine_alike() {
    for engine in [Engine::Sqlite, Engine::Postgres, Engine::Mysql] {
        let db = engine.db("kit");
        db.execute("CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'a'), (2, NULL)");
        assert_eq!(db.rows("SELECT id, v FROM k ORDER BY id"), vec![vec!["1", "a"], vec!["2", "NULL"]], "{engine:?}");
    }
}
