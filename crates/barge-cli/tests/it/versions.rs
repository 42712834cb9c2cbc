//! A pipeline's versioned target schema (`[schema]`: `V1__create.sql`, … applied in order with a
//! history table): the versions before the rows make the tables the copy fills, the ones from
//! `after_data` on (a backfill and its NOT NULL, indexes, foreign keys) run once the rows are in;
//! a changed or missing applied file is refused by name and checksum, before anything is written.

use crate::private::PrivatePg;
use crate::support::{Dir, MyDb, PgDb, barge, barge_env};

const CUSTOMERS: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, full_name text NOT NULL, email text, city text);
    INSERT INTO customers SELECT g, 'First' || g || ' Last' || g,
      'c' || g || CASE WHEN g % 7 = 0 THEN '@vip.example' ELSE '@mail.example' END, 'city' || (g % 20)
      FROM generate_series(1, 20000) g;";

/// Writes to the customers, numbered `round`: inserts, updates of the split column, deletes.
fn customer_writes(round: i32) -> String {
    let base = 100_000 * round;
    format!(
        "INSERT INTO customers SELECT {base} + g, 'New' || g || ' Person' || g, 'n' || g || '@vip.example', 'x'
           FROM generate_series(1, 500) g;
         UPDATE customers SET full_name = 'Renamed' || id || ' Again' || id WHERE id % 97 = {m};
         DELETE FROM customers WHERE id % 89 = {m};",
        m = round % 11
    )
}

/// The target's shape: the source's `full_name` split in two, `email` renamed, a NOT NULL `tier`
/// added with a default and backfilled from the rows, and an index, in the safe order.
const VERSIONS: [(&str, &str); 3] = [
    (
        "V1__create_clients.sql",
        "CREATE TABLE clients (id int PRIMARY KEY, first_name text NOT NULL, last_name text,\n  contact text, town text);\n",
    ),
    (
        "V2__add_tier.sql",
        "-- nullable with a default first: the copy fills the other columns\nALTER TABLE clients ADD COLUMN tier text DEFAULT 'standard';\n",
    ),
    (
        "V3__backfill_tier.sql",
        "UPDATE clients SET tier = CASE WHEN contact LIKE '%@vip.example' THEN 'vip' ELSE 'standard' END;\n\
         ALTER TABLE clients ALTER COLUMN tier SET NOT NULL;\n\
         CREATE INDEX clients_last_name ON clients (last_name);\n",
    ),
];

const RESHAPE: &str = r#"
source = "${SRC}"
target = "${DST}"

[defaults]
if_exists = "append"

[schema]
path = "schema"
after_data = 3

[[tables]]
source = "customers"
target = "clients"
drop = ["full_name", "email", "city"]
columns = [
  { name = "first_name", expr = "regex_replace(full_name, '^(\\S+) .*$', '$1')" },
  { name = "last_name", expr = "regex_replace(full_name, '^\\S+ ', '')" },
  { name = "contact", from = "email" },
  { name = "town", from = "city" },
]
"#;

const EXPECTED: &str =
    "SELECT id, split_part(full_name, ' ', 1), split_part(full_name, ' ', 2), email, city FROM customers ORDER BY id";
const GOT: &str = "SELECT id, first_name, last_name, contact, town FROM clients ORDER BY id";

#[test]
fn a_versioned_schema_renames_and_splits_columns_and_backfills_a_not_null_one_under_change_capture() {
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql("CREATE DATABASE dst");
    server.sql_in("src", CUSTOMERS);
    let (from, to) = (server.url_of("src"), server.url_of("dst"));
    let dir = Dir::new();
    let schema = dir.path("schema");
    std::fs::create_dir(&schema).unwrap();
    for (name, sql) in VERSIONS {
        std::fs::write(schema.join(name), sql).unwrap();
    }
    let file = dir.path("reshape.toml");
    std::fs::write(&file, RESHAPE).unwrap();
    let file = file.display().to_string();
    let state = dir.path("s.db").display().to_string();
    let env = [("SRC", from.as_str()), ("DST", to.as_str())];

    // The plan shows the three versions pending, the third after the rows; it writes nothing.
    let plan = barge_env(&["plan", &file, "--json"], &env);
    let report = plan.json();
    let versions = report["schema_versions"].as_array().unwrap_or_else(|| panic!("{report}"));
    let shown: Vec<(String, String, String)> = versions
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().into(),
                v["state"].as_str().unwrap().into(),
                v["stage"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("V1__create_clients".into(), "pending".into(), "before the rows".into()),
            ("V2__add_tier".into(), "pending".into(), "before the rows".into()),
            ("V3__backfill_tier".into(), "pending".into(), "after the rows".into()),
        ]
    );
    assert_eq!(server.sql_in("dst", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");

    // The sync: versions 1 and 2, the bulk copy with writes running, version 3, then the changes.
    let sync = || {
        let run = barge_env(&["sync", &file, "--state", &state, "--until", "caught-up", "--json"], &env);
        run.assert_code(0);
        run
    };
    let run = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for round in 1..4 {
                server.sql_in("src", &customer_writes(round));
            }
        });
        let run = sync();
        writer.join().unwrap();
        run
    });
    for name in ["V1__create_clients", "V2__add_tier", "V3__backfill_tier"] {
        assert!(run.stderr.contains(&format!("schema: applied {name}")), "{}", run.stderr);
    }
    server.sql_in("src", &customer_writes(5));
    sync();
    assert_eq!(server.sql_in("dst", GOT), server.sql_in("src", EXPECTED));
    // The backfill ran over the copied rows, then the NOT NULL held for every change after.
    assert_eq!(server.sql_in("dst", "SELECT count(*) FROM clients WHERE tier IS NULL"), "0");
    assert_eq!(
        server.sql_in(
            "dst",
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'clients'::regclass AND attname = 'tier'"
        ),
        "t"
    );
    let wrong_tier =
        "SELECT count(*) FROM clients WHERE id <= 20000 AND (contact LIKE '%@vip.example') <> (tier = 'vip')";
    assert_eq!(server.sql_in("dst", wrong_tier), "0");
    assert_ne!(server.sql_in("dst", "SELECT count(*) FROM clients WHERE tier = 'vip'"), "0");
    assert_eq!(server.sql_in("dst", "SELECT count(*) FROM pg_indexes WHERE indexname = 'clients_last_name'"), "1");
    assert_eq!(
        server
            .sql_in("dst", "SELECT string_agg(version || ':' || name, ',' ORDER BY version) FROM barge_schema_history"),
        "1:create_clients,2:add_tier,3:backfill_tier"
    );

    // An applied file that changed is refused by name and checksum, by plan and by sync, and
    // nothing is written.
    let v2 = schema.join("V2__add_tier.sql");
    let applied_checksum = server.sql_in("dst", "SELECT checksum FROM barge_schema_history WHERE version = 2");
    std::fs::write(&v2, "ALTER TABLE clients ADD COLUMN tier text DEFAULT 'gold';\n").unwrap();
    for args in
        [vec!["plan", file.as_str()], vec!["sync", file.as_str(), "--state", state.as_str(), "--until", "caught-up"]]
    {
        let run = barge_env(&args, &env);
        run.assert_code(2);
        assert!(run.stderr.contains("V2__add_tier.sql changed after target"), "{}", run.stderr);
        assert!(run.stderr.contains(&applied_checksum), "{}", run.stderr);
    }
    std::fs::write(&v2, VERSIONS[1].1).unwrap();
    // A missing one too.
    let v1 = schema.join("V1__create_clients.sql");
    std::fs::remove_file(&v1).unwrap();
    let run = barge_env(&["plan", &file], &env);
    run.assert_code(2);
    assert!(run.stderr.contains("applied version V1__create_clients (checksum"), "{}", run.stderr);
    std::fs::write(&v1, VERSIONS[0].1).unwrap();
    // A new version is pending in the plan, and the next sync applies it (the rows are in).
    std::fs::write(schema.join("V4__add_note.sql"), "ALTER TABLE clients ADD COLUMN note text;\n").unwrap();
    let plan = barge_env(&["plan", &file], &env);
    plan.assert_code(0);
    assert!(plan.stdout.contains("V4__add_note") && plan.stdout.contains("pending, after the rows"), "{}", plan.stdout);
    let run = sync();
    assert!(run.stderr.contains("schema: applied V4__add_note"), "{}", run.stderr);
    assert_eq!(server.sql_in("dst", "SELECT count(*) FROM barge_schema_history"), "4");
    // An older version than the last applied one is refused.
    std::fs::write(schema.join("V0__early.sql"), "SELECT 1;\n").unwrap();
    let run = barge_env(&["plan", &file], &env);
    run.assert_code(2);
    assert!(run.stderr.contains("older than version 4"), "{}", run.stderr);
}

const SHOP: &str = "
    CREATE TABLE buyers (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO buyers SELECT g, 'b' || g FROM generate_series(1, 300) g;
    CREATE TABLE sales (id int PRIMARY KEY, buyer_id int NOT NULL REFERENCES buyers, amount numeric(10,2));
    INSERT INTO sales SELECT g, 1 + g % 300, g * 1.25 FROM generate_series(1, 3000) g;";

/// A pipeline into `target` with schema files `files` (folder `schema-NAME`), run once.
fn run_with_schema(dir: &Dir, name: &str, from: &str, to: &str, files: &[(&str, &str)]) -> crate::support::Run {
    let schema = dir.path(&format!("schema-{name}"));
    std::fs::create_dir_all(&schema).unwrap();
    for (file, sql) in files {
        std::fs::write(schema.join(file), sql).unwrap();
    }
    let pipeline = dir.path(&format!("{name}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            "source = \"{from}\"\ntarget = \"{to}\"\n[schema]\npath = \"schema-{name}\"\nafter_data = 2\n\
             [[tables]]\nsource = \"buyers\"\n[[tables]]\nsource = \"sales\"\n"
        ),
    )
    .unwrap();
    let state = dir.path(&format!("{name}.db")).display().to_string();
    barge(&["run", &pipeline.display().to_string(), "--state", &state, "--json"])
}

#[test]
fn run_applies_versions_before_and_after_the_rows_into_mariadb_and_sqlite() {
    let source = PgDb::new("versions_src");
    source.sql(SHOP);
    let dir = Dir::new();
    let my = MyDb::new("versions");
    // MariaDB: the foreign key after the rows (its DDL commits on its own).
    let run = run_with_schema(
        &dir,
        "maria",
        &source.url(),
        &my.url(),
        &[
            (
                "V1__tables.sql",
                "CREATE TABLE buyers (id int PRIMARY KEY, name varchar(40) NOT NULL);\nCREATE TABLE sales (id int PRIMARY KEY, buyer_id int NOT NULL, amount decimal(10,2));\n",
            ),
            (
                "V2__keys.sql",
                "ALTER TABLE sales ADD CONSTRAINT sales_buyer FOREIGN KEY (buyer_id) REFERENCES buyers (id);\nCREATE INDEX sales_amount ON sales (amount);\n",
            ),
        ],
    );
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["ok"], true, "{json}");
    let applied: Vec<&str> =
        json["schema_versions_applied"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(applied, ["V1__tables", "V2__keys"]);
    assert_eq!(my.sql("SELECT count(*), sum(amount) FROM sales")[0], ["3000", "5626875.00"]);
    let fk = "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() \
              AND CONSTRAINT_NAME = 'sales_buyer'";
    assert_eq!(my.sql(fk)[0][0], "1");
    // The column keeps the versioned schema's type, not one barge would have chosen.
    let ty = "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
              AND TABLE_NAME = 'buyers' AND COLUMN_NAME = 'name'";
    assert_eq!(my.sql(ty)[0][0], "varchar(40)");
    assert_eq!(my.sql("SELECT count(*) FROM barge_schema_history")[0][0], "2");

    // SQLite: a version that fails after the rows fails the run (exit 1), names the statement,
    // and leaves it pending; fixed, a rerun applies it.
    let lite = dir.url("shop.db");
    let bad = [
        (
            "V1__tables.sql",
            "CREATE TABLE buyers (id integer PRIMARY KEY, name text NOT NULL);\nCREATE TABLE sales (id integer PRIMARY KEY, buyer_id integer NOT NULL, amount DECIMAL(10,2));\n",
        ),
        ("V2__index.sql", "CREATE INDEX sales_amount ON no_such_table (amount);\n"),
    ];
    let run = run_with_schema(&dir, "lite", &source.url(), &lite, &bad);
    run.assert_code(1);
    assert!(
        run.stderr.contains("V2__index") && run.stderr.contains("CREATE INDEX sales_amount ON no_such_table"),
        "{}",
        run.stderr
    );
    let conn = dir.conn("shop.db");
    let versions: i64 = conn.query_row("SELECT count(*) FROM barge_schema_history", [], |r| r.get(0)).unwrap();
    assert_eq!(versions, 1);
    let rows: i64 = conn.query_row("SELECT count(*) FROM sales", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 3000);
    drop(conn);
    // The fix is new content for a version never applied: allowed; `--resume` finishes the run.
    std::fs::write(dir.path("schema-lite/V2__index.sql"), "CREATE INDEX sales_amount ON sales (amount);\n").unwrap();
    let state = dir.path("lite.db").display().to_string();
    let run = barge(&["run", &dir.path("lite.toml").display().to_string(), "--state", &state, "--resume"]);
    run.assert_code(0);
    assert!(run.stderr.contains("schema: applied V2__index"), "{}", run.stderr);
    let conn = dir.conn("shop.db");
    let index: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'sales_amount'", [], |r| r.get(0)).unwrap();
    assert_eq!(index, 1);
}
