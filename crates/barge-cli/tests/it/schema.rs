//! Schema fidelity on real schemas: the public sample databases of `../shared/corpus` (Chinook in
//! its MySQL, PostgreSQL and SQLite editions; Northwind in PostgreSQL) and an edge-case schema
//! with every kind of PostgreSQL object (`fixtures/schema/postgres_objects.sql`). The target's
//! schema is compared with the source's by the engines themselves (`pg_dump --schema-only`,
//! information_schema), and used as an application would: inserts that rely on defaults and
//! identity, and a foreign-key violation that must be refused.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{MyDb, PgDb, barge, table};

/// A file of the sample databases: `BARGE_CORPUS`, else `../shared/corpus` beside the project
/// (where CI has it).
fn corpus(path: &str) -> PathBuf {
    let root = std::env::var_os("BARGE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(root.is_dir(), "the sample databases must be at {} (or set BARGE_CORPUS)", root.display());
    root.join(path)
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A script without the lines that make and enter its own database (the tests load it into one of theirs).
fn without_lines(script: &str, prefixes: &[&str]) -> String {
    script.lines().filter(|l| !prefixes.iter().any(|p| l.starts_with(p))).map(|l| format!("{l}\n")).collect()
}

/// Chinook's PostgreSQL edition, without the lines that make and enter its own database.
fn load_chinook_pg(db: &PgDb) {
    db.sql(&without_lines(
        &read(corpus("chinook/Chinook_PostgreSql.sql")),
        &["DROP DATABASE", "CREATE DATABASE", "\\c"],
    ));
}

/// Chinook's MySQL edition into `db` (through the client's standard input: it is 600 KB).
fn load_chinook_mysql(db: &MyDb) {
    let sql = without_lines(&read(corpus("chinook/Chinook_MySql.sql")), &["DROP DATABASE", "CREATE DATABASE", "USE "]);
    let host = std::env::var("BARGE_TEST_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("BARGE_TEST_MYSQL_PORT").unwrap_or_else(|_| "3306".into());
    let mut child = Command::new("mariadb")
        .args(["--default-character-set=utf8mb4", "--protocol=tcp", "-h", &host, "-P", &port, "-uroot", &db.name])
        .stdin(Stdio::piped())
        .spawn()
        .expect("the mariadb client");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "loading Chinook into MariaDB");
}

/// `pg_dump --schema-only` of a database, without the random `\restrict` key of each dump.
fn pg_schema(db: &PgDb) -> String {
    let url = db.url();
    let out = Command::new("pg_dump").args(["--schema-only", "--dbname", &url]).output().expect("pg_dump");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn copy_json(from: &str, to: &str) -> serde_json::Value {
    let run = barge(&["copy", "--from", from, "--to", to, "--json"]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["ok"], true, "{json}");
    json
}

/// The first line where two schemas differ, for a readable failure.
fn assert_same_schema(source: &str, target: &str) {
    if source != target {
        let (a, b) = (source.lines().collect::<Vec<_>>(), target.lines().collect::<Vec<_>>());
        let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        panic!(
            "schemas differ at line {at}:\n source: {:?}\n target: {:?}",
            a.get(at).unwrap_or(&"<end>"),
            b.get(at).unwrap_or(&"<end>")
        );
    }
}

fn one(db: &PgDb, sql: &str) -> String {
    db.sql(sql)[0][0].clone().unwrap_or_else(|| "NULL".into())
}

fn refused(db: &PgDb, sql: &str) -> bool {
    let url = db.url();
    let out = Command::new("psql").args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url, "-c", sql]).output().unwrap();
    !out.status.success()
}

#[test]
fn postgres_to_postgres_keeps_every_kind_of_object_exactly() {
    let (source, target) = (PgDb::new("schema_src"), PgDb::new("schema_dst"));
    source.sql(&read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schema/postgres_objects.sql")));
    let json = copy_json(&source.url(), &target.url());
    assert_eq!(json["schema"]["mode"], "exact", "{}", json["schema"]);
    let kinds: Vec<&str> =
        json["schema"]["objects"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in
        ["extension", "type", "domain", "function", "table", "view", "materialized view", "trigger", "fk constraint"]
    {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_same_schema(&pg_schema(&source), &pg_schema(&target));
    // Rows, the materialized view's data and the sequences as the source has them.
    for sql in [
        "SELECT count(*) FROM account",
        "SELECT count(*) FROM measurement_2025",
        "SELECT count(*) FROM ONLY measurement",
        "SELECT count(*) FROM ONLY city",
        "SELECT count(*) FROM ONLY capital",
        "SELECT count(*) FROM ONLY note",
        "SELECT count(*) FROM ONLY urgent_note",
        "SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM city c",
        "SELECT count(*) FROM bookings_per_account",
        "SELECT last_value FROM ticket_seq",
        "SELECT md5(string_agg(a::text, ',' ORDER BY id)) FROM account a",
    ] {
        assert_eq!(one(&source, sql), one(&target, sql), "{sql}");
    }
    assert_eq!(one(&target, "SELECT nextval('ticket_seq')"), one(&source, "SELECT nextval('ticket_seq')"));
    // An application's first insert: identity, uuid and timestamp from their defaults, the
    // trigger firing on update, and the foreign key and the exclusion constraint enforced.
    let id = one(&target, "INSERT INTO account (email) VALUES ('new@example.com') RETURNING id");
    assert_eq!(id, "301", "the identity continues past the copied keys");
    assert_eq!(
        one(&target, "SELECT count(*) FROM account WHERE token IS NOT NULL AND created_at IS NOT NULL AND id = 301"),
        "1"
    );
    target.sql("UPDATE account SET score = 7 WHERE id = 301");
    assert_eq!(one(&target, "SELECT updated_at IS NOT NULL FROM account WHERE id = 301"), "t", "trigger");
    assert!(refused(
        &target,
        "INSERT INTO booking (account_id, during, room) VALUES (999999, '[2030-01-01,2030-01-02)', 1)"
    ));
    assert!(refused(
        &target,
        "INSERT INTO booking (account_id, during, room) VALUES (1, '[2025-01-02 12:00,2025-01-02 13:00)', 1)"
    ));
    assert!(refused(&target, "INSERT INTO account (email, score) VALUES ('x@y', -1)"), "domain check");
}

#[test]
fn corpus_postgres_editions_copy_into_postgres_with_an_identical_schema() {
    for edition in ["chinook", "northwind"] {
        let (source, target) = (PgDb::new("corpus_src"), PgDb::new("corpus_dst"));
        match edition {
            "chinook" => load_chinook_pg(&source),
            _ => {
                source.sql(&read(corpus("northwind/northwind.sql")));
            }
        }
        let json = copy_json(&source.url(), &target.url());
        assert_eq!(json["schema"]["mode"], "exact", "{edition}");
        assert_same_schema(&pg_schema(&source), &pg_schema(&target));
        let tables = source.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        for table in tables.iter().map(|r| r[0].clone().unwrap()) {
            let sql = format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM \"{table}\" t"
            );
            assert_eq!(source.sql(&sql), target.sql(&sql), "{edition}.{table}");
        }
        let violation = match edition {
            "chinook" => "INSERT INTO album (album_id, title, artist_id) VALUES (100000, 'x', 999999)",
            _ => "INSERT INTO territories (territory_id, territory_description, region_id) VALUES ('x', 'x', 32000)",
        };
        assert!(refused(&target, violation), "{edition}: a foreign-key violation is refused");
    }
}

/// Character lengths of every column, and the foreign keys with their actions, as
/// information_schema lists them (the same views in PostgreSQL and MariaDB).
const LENGTHS: &str = "SELECT lower(table_name), lower(column_name), coalesce(character_maximum_length, 0)
    FROM information_schema.columns WHERE table_schema = {schema} AND character_maximum_length IS NOT NULL ORDER BY 1, 2";

#[test]
fn corpus_chinook_crosses_engines_with_lengths_keys_and_foreign_keys() {
    // MySQL edition → PostgreSQL, and the PostgreSQL copy → MariaDB again.
    let (mysql, pg) = (MyDb::new("chinook_my"), PgDb::new("chinook_pg"));
    load_chinook_mysql(&mysql);
    let json = copy_json(&mysql.url(), &pg.url());
    assert_eq!(json["schema"]["mode"], "translated");
    let lengths_my = mysql.sql(&LENGTHS.replace("{schema}", "DATABASE()"));
    let lengths_pg: Vec<Vec<String>> = pg
        .sql(&LENGTHS.replace("{schema}", "'public'"))
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap).collect())
        .collect();
    assert_eq!(lengths_my, lengths_pg, "varchar lengths kept");
    assert_eq!(
        one(&pg, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"),
        mysql.sql(
            "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()"
        )[0][0],
        "every foreign key, by default"
    );
    assert_eq!(one(&pg, "SELECT count(*) FROM pg_constraint WHERE conname = 'FK_TrackAlbumId'"), "1", "names kept");
    assert_eq!(one(&pg, "SELECT count(*) FROM pg_indexes WHERE indexname = 'IFK_TrackAlbumId'"), "1", "indexes kept");
    assert!(refused(&pg, "INSERT INTO \"Album\" (\"AlbumId\", \"Title\", \"ArtistId\") VALUES (100000, 'x', 999999)"));

    let back = MyDb::new("chinook_back");
    copy_json(&pg.url(), &back.url());
    assert_eq!(back.sql(&LENGTHS.replace("{schema}", "DATABASE()")), lengths_my, "lengths survive both ways");
    let fks = "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE, UPDATE_RULE
        FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() ORDER BY 1";
    assert_eq!(back.sql(fks), mysql.sql(fks), "foreign keys with their names and actions");
    for table in ["Album", "Track", "InvoiceLine", "PlaylistTrack"] {
        let sql = format!("SELECT count(*) FROM `{table}`");
        assert_eq!(back.sql(&sql), mysql.sql(&sql), "{table}");
    }

    // SQLite edition → PostgreSQL.
    let from_sqlite = PgDb::new("chinook_lite");
    let sqlite = format!("sqlite://{}", corpus("chinook/Chinook_Sqlite.sqlite").display());
    copy_json(&sqlite, &from_sqlite.url());
    assert_eq!(
        one(
            &from_sqlite,
            "SELECT character_maximum_length FROM information_schema.columns WHERE table_name = 'Album' AND column_name = 'Title'"
        ),
        "160"
    );
    assert_eq!(one(&from_sqlite, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"), "11");
    assert!(refused(
        &from_sqlite,
        "INSERT INTO \"Album\" (\"AlbumId\", \"Title\", \"ArtistId\") VALUES (100000, 'x', 999999)"
    ));
}

#[test]
fn mysql_boolean_and_function_defaults_translate_into_postgres_and_what_cannot_is_listed() {
    let (mysql, pg) = (MyDb::new("defaults_my"), PgDb::new("defaults_pg"));
    mysql.sql(
        "CREATE TABLE item (
            id int NOT NULL AUTO_INCREMENT PRIMARY KEY,
            active tinyint(1) NOT NULL DEFAULT 1,
            hidden tinyint(1) NOT NULL DEFAULT 0,
            label varchar(20) NOT NULL DEFAULT 'none',
            created datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
            changed datetime NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
            price decimal(8,2) DEFAULT 9.50,
            lucky int DEFAULT (floor(rand() * 10))
        );
        INSERT INTO item (label) VALUES ('a'), ('b');
        CREATE VIEW item_labels AS SELECT label FROM item;
        CREATE TRIGGER item_touch BEFORE INSERT ON item FOR EACH ROW SET NEW.label = lower(NEW.label);",
    );
    let json = copy_json(&mysql.url(), &pg.url());
    let lost: Vec<(String, String)> = json["not_migrated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap().to_string(), o["name"].as_str().unwrap().to_string()))
        .collect();
    assert!(lost.contains(&("on update".into(), "item.changed".into())), "{lost:?}");
    assert!(lost.contains(&("default".into(), "item.lucky".into())), "{lost:?}");
    assert_eq!(json["views"], serde_json::json!(["item_labels"]), "a plain view is created: {json}");
    assert_eq!(one(&pg, "SELECT count(*) FROM item_labels"), "2");
    assert!(lost.contains(&("trigger".into(), "item_touch on item".into())), "{lost:?}");
    assert_eq!(
        one(
            &pg,
            "SELECT column_default FROM information_schema.columns WHERE table_name = 'item' AND column_name = 'active'"
        ),
        "true"
    );
    let row = pg.sql("INSERT INTO item DEFAULT VALUES RETURNING id, active, hidden, label, created IS NOT NULL, price");
    assert_eq!(
        row[0].iter().map(|v| v.clone().unwrap()).collect::<Vec<_>>(),
        ["3", "t", "f", "none", "t", "9.50"],
        "an insert with only defaults works, its key after the copied ones"
    );
}

/// `SHOW CREATE TABLE` of every table, and the definitions of views, triggers and routines.
fn mysql_schema(db: &MyDb) -> Vec<Vec<String>> {
    let mut schema = Vec::new();
    for table in db.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1") {
        schema.extend(db.sql(&format!("SHOW CREATE TABLE `{}`", table[0])));
    }
    schema.extend(db.sql(
        "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
    ));
    schema.extend(db.sql(
        "SELECT TRIGGER_NAME, EVENT_MANIPULATION, ACTION_TIMING, ACTION_STATEMENT FROM information_schema.TRIGGERS
         WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1",
    ));
    schema.extend(db.sql(
        "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES
         WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1",
    ));
    // Views name their tables with the database's own name.
    schema.into_iter().map(|row| row.into_iter().map(|v| v.replace(&db.name, "<db>")).collect()).collect()
}

#[test]
fn mysql_to_mysql_keeps_every_kind_of_object_exactly() {
    let (source, target) = (MyDb::new("myobj_src"), MyDb::new("myobj_dst"));
    source.sql(&read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schema/mysql_objects.sql")));
    let json = copy_json(&source.url(), &target.url());
    assert_eq!(json["schema"]["mode"], "exact", "{}", json["schema"]);
    // SHOW CREATE TABLE the same, AUTO_INCREMENT counters included.
    assert_eq!(mysql_schema(&source), mysql_schema(&target));
    for sql in [
        "SELECT count(*), sum(balance), group_concat(email_domain ORDER BY id SEPARATOR '') = group_concat(email_domain ORDER BY id SEPARATOR '') FROM customer",
        "SELECT count(*), sum(amount) FROM purchase",
        "SELECT count(*) FROM pro_emails",
        "SELECT cents(1.25)",
    ] {
        assert_eq!(source.sql(sql), target.sql(sql), "{sql}");
    }
    // An application's insert with only defaults; the trigger, the check and the foreign key.
    let counter = |db: &MyDb, table: &str| {
        db.sql(&format!(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        ))[0][0]
            .clone()
    };
    let next_customer = counter(&source, "customer");
    target.sql("INSERT INTO customer (email) VALUES ('NEW@Example.com')");
    assert_eq!(
        target.sql("SELECT id, email, tier, perms, active, created IS NOT NULL FROM customer WHERE id > 300"),
        [[next_customer.as_str(), "new@example.com", "free", "read", "1", "1"]],
        "the key the source would have given next"
    );
    let next_purchase = counter(&source, "purchase");
    assert_eq!(
        target.sql("INSERT INTO purchase (customer_id, amount) VALUES (1, 1); SELECT max(id) FROM purchase"),
        [[next_purchase]]
    );
    let refused = |sql: &str| {
        let out = Command::new("mariadb")
            .args(["--protocol=tcp", "-h", "127.0.0.1", "-uroot", &target.name, "-e", sql])
            .output()
            .unwrap();
        !out.status.success()
    };
    assert!(refused("INSERT INTO purchase (customer_id, amount) VALUES (999999, 1)"), "foreign key");
    assert!(refused("INSERT INTO customer (email, balance) VALUES ('x@y', -1)"), "check");
    assert!(refused("INSERT INTO customer (email) VALUES ('user1@example.com')"), "unique");

    // Chinook's MySQL edition, copied into MariaDB again.
    let (chinook, copy) = (MyDb::new("chinook_mysrc"), MyDb::new("chinook_mydst"));
    load_chinook_mysql(&chinook);
    assert_eq!(copy_json(&chinook.url(), &copy.url())["schema"]["mode"], "exact");
    assert_eq!(mysql_schema(&chinook), mysql_schema(&copy));
}

/// Every `sqlite_schema` row (the statements as written), and the AUTOINCREMENT counters.
fn sqlite_schema(conn: &rusqlite::Connection) -> Vec<String> {
    let counters: bool = conn
        .query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'", [], |r| r.get(0))
        .unwrap();
    let sql = format!(
        "SELECT type || ' ' || name || ' ' || tbl_name || ' ' || coalesce(sql, '') AS line FROM sqlite_schema{} ORDER BY 1",
        if counters { " UNION ALL SELECT 'counter ' || name || ' ' || seq FROM sqlite_sequence" } else { "" }
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn sqlite_to_sqlite_keeps_every_kind_of_object_exactly() {
    let dir = crate::support::Dir::new();
    dir.sql(
        "src.db",
        &read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schema/sqlite_objects.sql")),
    );
    let json = copy_json(&dir.url("src.db"), &dir.url("dst.db"));
    assert_eq!(json["schema"]["mode"], "exact", "{}", json["schema"]);
    let (source, target) = (dir.conn("src.db"), dir.conn("dst.db"));
    assert_eq!(sqlite_schema(&source), sqlite_schema(&target));
    // The next key continues the source's AUTOINCREMENT (296..300 were deleted, never reused).
    target.execute_batch("PRAGMA foreign_keys = ON; INSERT INTO customer (email) VALUES ('new@example.com')").unwrap();
    let row: (i64, String, String) = target
        .query_row("SELECT id, tier, created FROM customer WHERE email = 'new@example.com'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((row.0, row.1.as_str(), row.2.len()), (301, "free", 19));
    assert!(
        target.execute("INSERT INTO purchase (customer_id, amount) VALUES (999999, 1)", []).is_err(),
        "foreign key"
    );
    assert!(target.execute("INSERT INTO customer (email, tier) VALUES ('x@y', 'gold')", []).is_err(), "check");
    let count = |c: &rusqlite::Connection, sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count(&target, "SELECT count(*) FROM pro_customers"),
        count(&source, "SELECT count(*) FROM pro_customers")
    );

    // Chinook's SQLite edition.
    let chinook = corpus("chinook/Chinook_Sqlite.sqlite");
    let json = copy_json(&format!("sqlite://{}", chinook.display()), &dir.url("chinook.db"));
    assert_eq!(json["schema"]["mode"], "exact");
    let original = rusqlite::Connection::open_with_flags(&chinook, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    assert_eq!(sqlite_schema(&original), sqlite_schema(&dir.conn("chinook.db")));
}

#[test]
fn a_sqlite_copy_whose_rows_break_their_foreign_keys_fails_naming_them() {
    let dir = crate::support::Dir::new();
    dir.sql(
        "src.db",
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id));
         INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1), (2, 99);",
    );
    let (from, to) = (dir.url("src.db"), dir.url("dst.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to]);
    run.assert_code(1);
    assert!(run.stderr.contains("1 row(s) reference missing parents (first: `child` → `parent`)"), "{}", run.stderr);
    // The rows themselves were copied as they are; the copy is just not called a success.
    let orphans: i64 =
        dir.conn("dst.db").query_row("SELECT count(*) FROM child WHERE parent_id = 99", [], |r| r.get(0)).unwrap();
    assert_eq!(orphans, 1);
}

/// MySQL's ENUM becomes a PostgreSQL enum type with the same labels in the same order (and
/// comes back from it as the same ENUM), a CHECK in SQLite; a SET stays text held to its members.
#[test]
fn enumerations_and_sets_cross_engines_with_their_labels_in_order() {
    let (mysql, pg, back) = (MyDb::new("enum_my"), PgDb::new("enum_pg"), MyDb::new("enum_back"));
    let dir = crate::support::Dir::new();
    let declared = "enum('sad','it''s ok','happy')";
    mysql.sql(&format!(
        "CREATE TABLE item (
            id int NOT NULL AUTO_INCREMENT PRIMARY KEY,
            mood {declared} NOT NULL DEFAULT 'happy',
            tags set('a','b','c')
        );
        INSERT INTO item (mood, tags) VALUES ('sad', 'a,c'), ('it''s ok', ''), ('happy', NULL);"
    ));
    copy_json(&mysql.url(), &pg.url());
    assert_eq!(one(&pg, "SELECT enum_range(NULL::item_mood)::text"), r#"{sad,"it's ok",happy}"#);
    assert_eq!(
        one(&pg, "SELECT string_agg(mood::text || '/' || coalesce(tags, '-'), ' ' ORDER BY id) FROM item"),
        "sad/a,c it's ok/ happy/-"
    );
    assert!(refused(&pg, "INSERT INTO item (mood) VALUES ('bad')"), "a label outside the enum is refused");
    assert!(refused(&pg, "INSERT INTO item (tags) VALUES ('a,d')"), "a member outside the set is refused");
    // The refused inserts may have taken identity values: only "after the copied keys" is certain.
    assert_eq!(
        one(&pg, "INSERT INTO item (tags) VALUES ('b,c') RETURNING mood::text || ' ' || (id > 3)"),
        "happy true"
    );

    // Back in MySQL: the ENUM, and the SET from the CHECK that held the text to its members.
    copy_json(&pg.url(), &back.url());
    let created = &back.sql("SHOW CREATE TABLE item")[0][1];
    assert!(created.contains(&format!("`mood` {declared} NOT NULL DEFAULT 'happy'")), "{created}");
    assert!(created.contains("`tags` set('a','b','c')"), "{created}");

    copy_json(&mysql.url(), &dir.url("enum.db"));
    let conn = dir.conn("enum.db");
    assert!(conn.execute("INSERT INTO item (id, mood) VALUES (9, 'bad')", []).is_err(), "SQLite's CHECK refuses it");
    conn.execute("INSERT INTO item (id, mood) VALUES (9, 'it''s ok')", []).unwrap();
    // SQLite's CHECK is read back as the enumeration it holds.
    let from_lite = PgDb::new("enum_lite");
    copy_json(&dir.url("enum.db"), &from_lite.url());
    assert_eq!(one(&from_lite, "SELECT enum_range(NULL::item_mood)::text"), r#"{sad,"it's ok",happy}"#);
    assert_eq!(one(&from_lite, "SELECT count(*) FROM item WHERE mood = 'it''s ok'"), "2");
}

/// CHECK constraints cross every engine once the rows are in (which proves the rows satisfy
/// them); one whose SQL a target refuses is listed as not migrated with the target's reason.
#[test]
fn check_constraints_cross_engines_and_one_a_target_refuses_is_listed() {
    let (pg, my, back) = (PgDb::new("check_pg"), MyDb::new("check_my"), PgDb::new("check_back"));
    let dir = crate::support::Dir::new();
    pg.sql(
        "CREATE TABLE product (
            id int PRIMARY KEY,
            price numeric(8,2) CHECK (price > 0),
            status text NOT NULL CHECK (status IN ('new', 'sold')),
            code varchar(8),
            qty int,
            doc json,
            CONSTRAINT code_shape CHECK (code LIKE 'P%' AND qty >= 0),
            CONSTRAINT code_digits CHECK (code ~ '^P[0-9]+$'));
         INSERT INTO product SELECT i, i * 1.5, CASE WHEN i % 2 = 0 THEN 'new' ELSE 'sold' END, 'P' || i, i, '{}'
         FROM generate_series(1, 20) i;",
    );
    let kept = ["code_shape", "product_price_check", "product_status_check"];
    let refused_checks = |json: &serde_json::Value| -> Vec<String> {
        json["not_migrated"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "check constraint")
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    let json = copy_json(&pg.url(), &my.url());
    assert_eq!(refused_checks(&json), ["product.code_digits"], "{}", json["not_migrated"]);
    let names: Vec<String> = my
        .sql(
            "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = 'product' AND CONSTRAINT_NAME <> 'doc'
             ORDER BY 1",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(names, kept);
    assert!(my.sql("SELECT 1 FROM product WHERE id = 1").len() == 1);
    for bad in ["(100, -1, 'new', 'P1', 1)", "(100, 1, 'lost', 'P1', 1)", "(100, 1, 'new', 'X1', 1)"] {
        let out = Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                "-uroot",
                &my.name,
                "-e",
                &format!("INSERT INTO product (id, price, status, code, qty) VALUES {bad}"),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "MariaDB took {bad}");
    }

    // MariaDB → SQLite (the JSON column's own json_valid() check is its type, not a constraint).
    let lite = dir.url("check.db");
    let json = copy_json(&my.url(), &lite);
    assert!(refused_checks(&json).is_empty(), "{}", json["not_migrated"]);
    let conn = dir.conn("check.db");
    assert!(conn.execute("INSERT INTO product (id, price, status) VALUES (100, -1, 'new')", []).is_err());
    assert!(conn.execute("INSERT INTO product (id, price, status) VALUES (100, 1, 'lost')", []).is_err());
    conn.execute("INSERT INTO product (id, price, status, code, qty) VALUES (100, 1, 'new', 'P100', 0)", []).unwrap();
    conn.execute("DELETE FROM product WHERE id = 100", []).unwrap();

    // SQLite → PostgreSQL: the same three, enforced.
    let json = copy_json(&lite, &back.url());
    assert!(refused_checks(&json).is_empty(), "{}", json["not_migrated"]);
    assert_eq!(
        one(
            &back,
            "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE contype = 'c' AND conrelid = 'product'::regclass"
        ),
        kept.join(",")
    );
    assert!(refused(&back, "INSERT INTO product (id, price, status) VALUES (100, -1, 'new')"));
    assert!(refused(&back, "INSERT INTO product (id, price, status, code, qty) VALUES (100, 1, 'new', 'P1', -1)"));
    assert_eq!(one(&back, "SELECT count(*) FROM product WHERE status = 'new'"), "10");

    // A dry run shows the checks it will try.
    let fresh = PgDb::new("check_dry");
    let run = barge(&["copy", "--from", &lite, "--to", &fresh.url(), "--dry-run"]);
    run.assert_code(0);
    assert!(run.stdout.contains("indexes and checks, added after the rows if the target takes them"), "{}", run.stdout);
    assert!(run.stdout.contains("product_price_check: CHECK (\"price\" > 0)"), "{}", run.stdout);
}

/// A PostGIS database copies exactly into PostgreSQL (the extension created, its own
/// spatial_ref_sys filled by it, not copied), and its geometries cross into SQLite and MySQL and
/// back with their subtypes and SRIDs, verified.
#[test]
fn postgis_geometries_copy_exactly_and_cross_engines_with_their_srids() {
    let (source, exact, back) = (PgDb::new("gis_src"), PgDb::new("gis_exact"), PgDb::new("gis_back"));
    let (my, dir) = (MyDb::new("gis_my"), crate::support::Dir::new());
    source.sql(
        "CREATE EXTENSION postgis;
         CREATE TABLE place (id int PRIMARY KEY, name text NOT NULL, at geometry(Point, 4326), area geometry);
         CREATE INDEX place_at ON place USING gist (at);
         INSERT INTO place SELECT g, 'p' || g, ST_SetSRID(ST_MakePoint(g * 0.5, -g * 0.25), 4326),
                CASE WHEN g % 3 = 0 THEN ST_Buffer(ST_MakePoint(g, g), 1.5) WHEN g % 3 = 1 THEN NULL
                     ELSE ST_SetSRID('LINESTRING(0 0, 1 1, 2 0)'::geometry, 3857) END
         FROM generate_series(1, 500) g;",
    );
    let json = copy_json(&source.url(), &exact.url());
    assert_eq!(json["schema"]["mode"], "exact", "{}", json["schema"]);
    assert_eq!(table(&json, "place")["verified"], true);
    assert!(json["tables"].as_array().unwrap().iter().all(|t| t["table"] != "spatial_ref_sys"), "{json}");
    assert_same_schema(&pg_schema(&source), &pg_schema(&exact));
    let digest =
        "SELECT md5(string_agg(id || ST_AsEWKT(at) || coalesce(ST_AsEWKT(area), '-'), ',' ORDER BY id)) FROM place";
    assert_eq!(one(&exact, digest), one(&source, digest));
    assert_eq!(
        one(&exact, "SELECT count(*) FROM spatial_ref_sys"),
        one(&source, "SELECT count(*) FROM spatial_ref_sys")
    );

    let lite = dir.url("gis.db");
    for (from, to) in [(source.url(), lite.clone()), (lite.clone(), back.url()), (source.url(), my.url())] {
        let run = barge(&["copy", "--from", &from, "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "place")["verified"], true, "{from} → {to}");
    }
    assert_eq!(one(&back, digest), one(&source, digest), "PostgreSQL → SQLite → PostgreSQL");
    let mine = my.sql("SELECT ST_AsText(at), ST_SRID(at), ST_SRID(area) FROM place WHERE id = 2");
    assert_eq!(mine[0], ["POINT(1 -0.5)", "4326", "3857"]);
    assert!(my.sql("SHOW CREATE TABLE place")[0][1].contains("`at` point"));
    // The subtype survives SQLite, declared as SpatiaLite does.
    let declared: String = dir
        .conn("gis.db")
        .query_row("SELECT type FROM pragma_table_info('place') WHERE name = 'at'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(declared, "POINT");
    assert_eq!(
        one(
            &back,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'place'::regclass AND attname = 'at'"
        ),
        "geometry(Point)"
    );
    barge(&["verify", "--from", &my.url(), "--to", &back.url()]).assert_code(0);
}

/// `copy --dry-run` shows what the copy would do — DDL, each column's source → target type with
/// its fidelity, the schema's mode and what would not be migrated — and writes nothing.
#[test]
fn a_dry_run_shows_types_schema_and_what_is_not_migrated_and_writes_nothing() {
    let (mysql, pg, dir) = (MyDb::new("dry_my"), PgDb::new("dry_pg"), crate::support::Dir::new());
    mysql.sql(
        "CREATE TABLE item (
            id int NOT NULL AUTO_INCREMENT PRIMARY KEY,
            mood enum('sad','ok') NOT NULL DEFAULT 'ok',
            changed datetime NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
            at point
        );
        INSERT INTO item (mood, at) VALUES ('sad', ST_GeomFromText('POINT(1 2)', 4326));
        CREATE VIEW item_ids AS SELECT id FROM item;",
    );
    let run = barge(&["copy", "--from", &mysql.url(), "--to", &pg.url(), "--dry-run", "--json"]);
    run.assert_code(0);
    let json = run.json();
    let item = &json["tables"][0];
    assert_eq!(item["action"], "create", "{json}");
    let column = |name: &str| item["columns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(column("mood")["source_type"], "enum('sad','ok')");
    assert_eq!(column("mood")["target_type"], r#""public"."item_mood""#);
    assert_eq!(column("at")["target_type"], "geometry(Point)");
    assert_eq!(column("at")["fidelity"], "exact");
    assert!(item["ddl"].as_str().unwrap().contains("CREATE TYPE"), "{json}");
    assert_eq!(json["schema"]["mode"], "translated");
    let lost: Vec<&str> =
        json["not_migrated"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert!(lost.contains(&"item.changed"), "{lost:?}");
    assert_eq!(json["views"], serde_json::json!(["item_ids"]), "a plain view is tried after the rows: {json}");
    assert_eq!(one(&pg, "SELECT count(*) FROM pg_class WHERE relname = 'item'"), "0", "nothing was written");

    let run = barge(&["copy", "--from", &mysql.url(), "--to", &dir.url("dry.db"), "--dry-run"]);
    run.assert_code(0);
    assert!(run.stdout.contains("dry run: nothing was written"), "{}", run.stdout);
    assert!(run.stdout.contains("created after the rows if the target takes their SQL: item_ids"), "{}", run.stdout);
    assert!(!dir.path("dry.db").exists(), "no SQLite file is created");
}

/// `barge tables URL` on the sample databases of every engine, and on tables a copy would refuse.
#[test]
fn barge_tables_lists_rows_size_and_key_and_names_what_cannot_be_copied() {
    let listed = |url: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["tables", url, "--json"];
        args.extend_from_slice(extra);
        let run = barge(&args);
        run.assert_code(0);
        run.json()
    };
    let entry = |json: &serde_json::Value, name: &str| -> serde_json::Value {
        json["tables"].as_array().unwrap().iter().find(|t| t["table"] == name).cloned().unwrap_or_else(|| {
            panic!("no {name} in {json}");
        })
    };
    let sqlite = format!("sqlite://{}", corpus("chinook/Chinook_Sqlite.sqlite").display());
    let pg = PgDb::new("tables");
    load_chinook_pg(&pg);
    pg.sql(
        "ANALYZE; CREATE TABLE events (at date NOT NULL, v int) PARTITION BY RANGE (at);
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         INSERT INTO events SELECT '2024-01-01'::date + (i % 300), i FROM generate_series(1, 5000) i; ANALYZE events;
         CREATE VIEW top_albums AS SELECT 1 AS n;",
    );
    let my = MyDb::new("tables");
    load_chinook_mysql(&my);
    my.sql("CREATE TABLE hosts (id int PRIMARY KEY, addr inet6); ANALYZE TABLE Track;");
    for url in [sqlite.clone(), pg.url(), my.url()] {
        let json = listed(&url, &[]);
        let track = entry(&json, if url.starts_with("postgres") { "track" } else { "Track" });
        assert_eq!(track["key"]["kind"], "primary", "{track}");
        assert!(track["key"]["columns"].as_array().unwrap().len() == 1, "{track}");
        let rows = track["estimated_rows"].as_u64().unwrap();
        assert!((2500..=4500).contains(&rows), "Track holds 3,503 rows, estimated {rows}: {url}");
        assert!(track["bytes"].as_u64().unwrap() > 50_000, "{track}");
        let playlist_track = entry(&json, if url.starts_with("postgres") { "playlist_track" } else { "PlaylistTrack" });
        assert_eq!(playlist_track["key"]["columns"].as_array().unwrap().len(), 2, "a composite key: {playlist_track}");
        // The human form: one line per table, the key's columns named.
        let run = barge(&["tables", &url]);
        run.assert_code(0);
        assert!(run.stdout.lines().count() >= 12, "{}", run.stdout);
    }
    let json = listed(&pg.url(), &["--exclude", "play*"]);
    assert!(json["tables"].as_array().unwrap().iter().all(|t| !t["table"].as_str().unwrap().starts_with("play")));
    let events = entry(&json, "events");
    assert!(events["estimated_rows"].as_u64().unwrap() >= 4000, "a partitioned table counts its partitions: {events}");
    assert!(events["bytes"].as_u64().unwrap() > 0, "{events}");
    assert!(
        json["tables"].as_array().unwrap().iter().all(|t| t["table"] != "top_albums" && t["table"] != "events_2024")
    );
    let hosts = entry(&listed(&my.url(), &[]), "hosts");
    assert_eq!(hosts["error"]["kind"], "unsupported_type", "{hosts}");
    assert_eq!(hosts["error"]["column"], "addr", "{hosts}");
    let run = barge(&["tables", &my.url()]);
    assert!(run.stdout.contains("CANNOT BE COPIED"), "{}", run.stdout);
}

/// Views that are plain SELECTs cross every engine (a view over a view after it); one whose SQL
/// the target does not take is listed as not migrated with the target's reason.
#[test]
fn views_cross_engines_when_the_target_takes_their_sql_and_are_listed_when_not() {
    let dir = crate::support::Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER); INSERT INTO t VALUES (1, 'a', 5), (2, 'b', 7), (3, 'c', 9);
         CREATE VIEW big AS SELECT id, v FROM t WHERE n > 6;
         CREATE VIEW bigger AS SELECT id FROM big WHERE id > 2;
         CREATE VIEW all_big AS SELECT count(*) AS n FROM big;
         CREATE VIEW joined AS SELECT group_concat(v) AS g FROM t;
         CREATE VIEW named (ident, label) AS SELECT id, v FROM t;",
    );
    let pg = PgDb::new("views");
    let run = barge(&["copy", "--from", &dir.url("s.db"), "--to", &pg.url(), "--json"]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["views"], serde_json::json!(["big", "bigger", "all_big", "named"]), "{json}");
    let refused = json["not_migrated"].as_array().unwrap().iter().find(|o| o["name"] == "joined").cloned();
    let refused = refused.unwrap_or_else(|| panic!("joined is listed: {json}"));
    assert_eq!(refused["kind"], "view");
    assert!(refused["reason"].as_str().unwrap().contains("group_concat"), "{refused}");
    assert_eq!(pg.sql("SELECT id FROM bigger"), vec![vec![Some("3".to_string())]]);
    // A view's own column names (`CREATE VIEW named (ident, label)`) are kept.
    assert_eq!(pg.sql("SELECT label FROM named WHERE ident = 2"), vec![vec![Some("b".to_string())]]);
    // PostgreSQL → MariaDB → SQLite: each engine's own spelling of the views travels on.
    let my = MyDb::new("views");
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["views"], serde_json::json!(["big", "bigger", "all_big", "named"]), "{}", run.stdout);
    assert_eq!(my.sql("SELECT v FROM big ORDER BY id"), vec![vec!["b".to_string()], vec!["c".to_string()]]);
    assert_eq!(my.sql("SELECT label FROM named WHERE ident = 3"), vec![vec!["c".to_string()]]);
    // MariaDB lists views by name: `all_big` comes before the `big` it reads, which PostgreSQL
    // checks, so it is created in a second round.
    let again = PgDb::new("views_again");
    let run = barge(&["copy", "--from", &my.url(), "--to", &again.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["views"], serde_json::json!(["big", "bigger", "named", "all_big"]), "{}", run.stdout);
    assert_eq!(again.sql("SELECT n FROM all_big"), vec![vec![Some("2".to_string())]]);
    // SQLite resolves a view's names when it is read, so it takes them in MariaDB's order.
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("back.db"), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["views"], serde_json::json!(["all_big", "big", "bigger", "named"]), "{}", run.stdout);
    let n: i64 = dir.conn("back.db").query_row("SELECT n FROM all_big", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
    let ids: i64 = dir.conn("back.db").query_row("SELECT sum(id) FROM bigger", [], |r| r.get(0)).unwrap();
    assert_eq!(ids, 3);
    // The dry run says which views it would try.
    let my2 = MyDb::new("views_dry");
    let dry = barge(&["copy", "--from", &pg.url(), "--to", &my2.url(), "--dry-run"]);
    dry.assert_code(0);
    assert!(
        dry.stdout.contains("views, created after the rows if the target takes their SQL: big, bigger"),
        "{}",
        dry.stdout
    );
}

/// PostgreSQL inheritance: each row is copied once, into the table that holds it in the source.
/// Another engine gets every child as a table of its own with all its columns, and the
/// inheritance is listed as not migrated; a parent copied alone leaves its children's rows be.
#[test]
fn inheritance_children_are_tables_of_their_own_and_each_row_is_copied_once() {
    let (pg, my, into) = (PgDb::new("inh_src"), MyDb::new("inh_my"), PgDb::new("inh_into"));
    let dir = crate::support::Dir::new();
    let schema = "CREATE TABLE city (id integer PRIMARY KEY, name text NOT NULL);
         CREATE TABLE capital (country char(2) NOT NULL) INHERITS (city);";
    pg.sql(&format!(
        "{schema}
         INSERT INTO city SELECT i, 'city ' || i FROM generate_series(1, 50) i;
         INSERT INTO capital SELECT i, 'capital ' || i, 'FR' FROM generate_series(51, 60) i;"
    ));
    for to in [my.url(), dir.url("inh.db")] {
        let json = copy_json(&pg.url(), &to);
        assert_eq!(table(&json, "city")["rows_written"], 50, "{json}");
        assert_eq!(table(&json, "capital")["rows_written"], 10, "{json}");
        let listed = json["not_migrated"].as_array().unwrap();
        assert!(
            listed.iter().any(|o| o["kind"] == "inheritance" && o["name"] == "capital inherits city"),
            "{listed:?}"
        );
    }
    assert_eq!(my.sql("SELECT count(*), min(country) FROM capital"), vec![vec!["10".to_string(), "FR".to_string()]]);
    assert_eq!(my.sql("SELECT count(*) FROM city"), vec![vec!["50".to_string()]]);
    // Into an existing inheritance pair, the parent alone, truncated first: the child's rows stay.
    into.sql(&format!("{schema} INSERT INTO capital VALUES (99, 'kept', 'DE'); INSERT INTO city VALUES (98, 'gone');"));
    let run = barge(&[
        "copy",
        "--from",
        &pg.url(),
        "--to",
        &into.url(),
        "--table",
        "city",
        "--if-exists",
        "truncate",
        "--json",
    ]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "city")["verified"], true, "{}", run.stdout);
    assert_eq!(one(&into, "SELECT count(*) FROM ONLY city"), "50");
    assert_eq!(one(&into, "SELECT string_agg(name, ',') FROM capital"), "kept");
}

/// A target without PostGIS (here: a user who cannot create it, as PostGIS is not a trusted
/// extension) gets each geometry as bytea in barge's canonical layout, said in the plan and in
/// `not_migrated`; the values verify.
#[test]
fn without_postgis_geometries_land_as_bytea_said_in_the_plan_and_verify() {
    struct Role(String);
    impl Drop for Role {
        fn drop(&mut self) {
            let _ = std::panic::catch_unwind(|| {
                crate::support::pg_run("postgres", &format!("DROP ROLE IF EXISTS {}", self.0))
            });
        }
    }
    // Declared first, dropped last: after the database it owns.
    let role = Role(format!("barge_cli_nogis_{}", std::process::id()));
    let (my, pg) = (MyDb::new("nogis_my"), PgDb::new("nogis_pg"));
    crate::support::pg_run("postgres", &format!("DROP ROLE IF EXISTS {0}; CREATE ROLE {0} LOGIN", role.0));
    crate::support::pg_run("postgres", &format!("ALTER DATABASE {} OWNER TO {}", pg.name, role.0));
    my.sql(
        "CREATE TABLE place (id int PRIMARY KEY, at point, area geometry);
         INSERT INTO place VALUES (1, ST_GeomFromText('POINT(1 2)', 4326), NULL),
                                  (2, NULL, ST_GeomFromText('LINESTRING(0 0, 1 1)', 3857));",
    );
    let url = pg.url().replacen("postgres@", &format!("{}@", role.0), 1);
    let run = barge(&["copy", "--from", &my.url(), "--to", &url, "--dry-run", "--json"]);
    run.assert_code(0);
    let json = run.json();
    let at = json["tables"][0]["columns"].as_array().unwrap().iter().find(|c| c["name"] == "at").unwrap().clone();
    assert_eq!(at["target_type"], "bytea", "{json}");
    assert!(json["not_migrated"].to_string().contains("PostGIS is not available"), "{json}");

    let json = copy_json(&my.url(), &url);
    assert_eq!(table(&json, "place")["verified"], true);
    let listed = json["not_migrated"].to_string();
    assert!(listed.contains("PostGIS is not available"), "{listed}");
    assert_eq!(one(&pg, "SELECT count(*) FROM pg_extension WHERE extname = 'postgis'"), "0");
    assert_eq!(
        one(
            &pg,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'place'::regclass AND attname = 'at'"
        ),
        "bytea"
    );
    // The SRID, little-endian, then the WKB MySQL stores.
    assert_eq!(
        one(&pg, "SELECT encode(at, 'hex') FROM place WHERE id = 1"),
        "e61000000101000000000000000000f03f0000000000000040"
    );
}

/// Indexes over expressions and partial indexes cross into engines that have them (SQLite,
/// PostgreSQL) and keep working there; MariaDB, which has neither, lists them, as does every
/// engine without the source's index method.
#[test]
fn expression_and_partial_indexes_cross_engines_and_are_listed_where_the_target_has_none() {
    let (pg, my, back, dir) =
        (PgDb::new("xidx_pg"), MyDb::new("xidx_my"), PgDb::new("xidx_back"), crate::support::Dir::new());
    pg.sql(
        "CREATE TABLE person (id int PRIMARY KEY, email text NOT NULL, deleted_at timestamp, tags text[], handle text);
         CREATE UNIQUE INDEX person_email_lower ON person (lower(email));
         CREATE UNIQUE INDEX person_live_handle ON person (handle) WHERE deleted_at IS NULL;
         CREATE INDEX person_tags ON person USING gin (tags);
         INSERT INTO person VALUES (1, 'Ann@x.io', NULL, '{a}', 'ann'), (2, 'bo@x.io', '2024-01-01', '{b}', 'bo'),
                                   (3, 'cy@x.io', NULL, '{}', 'bo');",
    );
    let listed = |json: &serde_json::Value| -> Vec<String> {
        let mut names: Vec<String> = json["not_migrated"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "index")
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    // PostgreSQL → SQLite: both indexes, enforced; the GIN index listed.
    let lite = dir.url("xidx.db");
    let json = copy_json(&pg.url(), &lite);
    assert_eq!(listed(&json), ["person.person_tags"], "{}", json["not_migrated"]);
    let conn = dir.conn("xidx.db");
    assert!(
        conn.execute("INSERT INTO person (id, email) VALUES (9, 'ANN@x.io')", []).is_err(),
        "lower(email) is unique"
    );
    assert!(
        conn.execute("INSERT INTO person (id, email, handle) VALUES (9, 'dd@x.io', 'bo')", []).is_err(),
        "a live handle is unique"
    );
    conn.execute("INSERT INTO person (id, email, deleted_at, handle) VALUES (9, 'dd@x.io', '2024-01-01', 'bo')", [])
        .unwrap();
    conn.execute("DELETE FROM person WHERE id >= 9", []).unwrap();
    // SQLite → PostgreSQL: the same two indexes again.
    let json = copy_json(&lite, &back.url());
    assert!(listed(&json).is_empty(), "{}", json["not_migrated"]);
    let defs = back
        .sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'person' AND indexname <> 'person_pkey' ORDER BY 1");
    let defs: Vec<String> = defs.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        defs,
        [
            "CREATE UNIQUE INDEX person_email_lower ON public.person USING btree (lower(email))",
            "CREATE UNIQUE INDEX person_live_handle ON public.person USING btree (handle) WHERE (deleted_at IS NULL)",
        ]
    );
    // PostgreSQL → MariaDB: no functional or partial indexes there, said by name.
    let json = copy_json(&pg.url(), &my.url());
    assert_eq!(listed(&json), ["person.person_email_lower", "person.person_live_handle", "person.person_tags"]);
    assert_eq!(my.sql("SELECT count(*) FROM person"), vec![vec!["3".to_string()]]);
}

/// One database as its own engine's catalog and an independent count describe it: per table, its
/// rows and its columns in order with whether each may be NULL (a key column may not), and how many
/// foreign keys the database has.
#[derive(Debug, PartialEq)]
struct Described {
    tables: std::collections::BTreeMap<String, (String, Vec<(String, bool)>)>,
    foreign_keys: usize,
}

enum Side<'a> {
    Pg(&'a PgDb),
    My(&'a MyDb),
    Lite(&'a rusqlite::Connection),
}

fn describe(side: &Side) -> Described {
    let mut tables = std::collections::BTreeMap::new();
    let foreign_keys = match side {
        Side::Pg(db) => {
            for table in db.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1") {
                let table = table[0].clone().unwrap();
                let rows = one(db, &format!("SELECT count(*) FROM \"{table}\""));
                let columns = db
                    .sql(&format!(
                        "SELECT column_name, is_nullable = 'YES' FROM information_schema.columns
                         WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
                    ))
                    .into_iter()
                    .map(|r| (r[0].clone().unwrap(), r[1].as_deref() == Some("t")))
                    .collect();
                tables.insert(table, (rows, columns));
            }
            one(db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'").parse().unwrap()
        }
        Side::My(db) => {
            for table in db.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1") {
                let table = table[0].clone();
                let rows = db.sql(&format!("SELECT count(*) FROM `{table}`"))[0][0].clone();
                let columns = db
                    .sql(&format!(
                        "SELECT COLUMN_NAME, IS_NULLABLE = 'YES' FROM information_schema.COLUMNS
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
                    ))
                    .into_iter()
                    .map(|r| (r[0].clone(), r[1] == "1"))
                    .collect();
                tables.insert(table, (rows, columns));
            }
            db.sql(
                "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
            )[0][0]
                .parse()
                .unwrap()
        }
        Side::Lite(conn) => {
            let names: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut fks = 0;
            for table in names {
                let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0)).unwrap();
                let columns = conn
                    .prepare("SELECT name, NOT \"notnull\" AND pk = 0 FROM pragma_table_info(?1) ORDER BY cid")
                    .unwrap()
                    .query_map([&table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let keys: i64 = conn
                    .query_row("SELECT count(DISTINCT id) FROM pragma_foreign_key_list(?1)", [&table], |r| r.get(0))
                    .unwrap();
                fks += keys as usize;
                tables.insert(table, (rows.to_string(), columns));
            }
            fks
        }
    };
    Described { tables, foreign_keys }
}

/// Every edition of the sample databases into every engine: the tables with their rows counted
/// by each engine itself, every column with its nullability, every foreign key — enforced (a
/// violation refused) — and nothing listed as not migrated but views and routines the target
/// cannot take.
#[test]
fn corpus_every_edition_into_every_engine_keeps_tables_rows_columns_and_foreign_keys() {
    let (chinook_my, chinook_pg, northwind) = (MyDb::new("corpus_my"), PgDb::new("corpus_pg"), PgDb::new("corpus_nw"));
    load_chinook_mysql(&chinook_my);
    load_chinook_pg(&chinook_pg);
    northwind.sql(&read(corpus("northwind/northwind.sql")));
    let lite_file = corpus("chinook/Chinook_Sqlite.sqlite");
    let lite = rusqlite::Connection::open_with_flags(&lite_file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let lite_url = format!("sqlite://{}", lite_file.display());
    // (edition, URL, its description, a child row whose parent does not exist)
    let editions: Vec<(&str, String, Described, &str)> = vec![
        (
            "Chinook (MySQL)",
            chinook_my.url(),
            describe(&Side::My(&chinook_my)),
            "INSERT INTO \"Album\" (\"AlbumId\", \"Title\", \"ArtistId\") VALUES (100000, 'x', 999999)",
        ),
        (
            "Chinook (PostgreSQL)",
            chinook_pg.url(),
            describe(&Side::Pg(&chinook_pg)),
            "INSERT INTO album (album_id, title, artist_id) VALUES (100000, 'x', 999999)",
        ),
        (
            "Chinook (SQLite)",
            lite_url,
            describe(&Side::Lite(&lite)),
            "INSERT INTO \"Album\" (\"AlbumId\", \"Title\", \"ArtistId\") VALUES (100000, 'x', 999999)",
        ),
        (
            "Northwind (PostgreSQL)",
            northwind.url(),
            describe(&Side::Pg(&northwind)),
            "INSERT INTO territories (territory_id, territory_description, region_id) VALUES ('x', 'x', 32000)",
        ),
    ];
    let dir = crate::support::Dir::new();
    for (i, (edition, from, source, violation)) in editions.iter().enumerate() {
        assert!(source.tables.len() >= 11 && source.foreign_keys >= 11, "{edition}: {source:?}");
        let (pg, my) = (PgDb::new("corpus_to_pg"), MyDb::new("corpus_to_my"));
        let file = format!("corpus{i}.db");
        for to in [pg.url(), my.url(), dir.url(&file)] {
            let json = copy_json(from, &to);
            for t in json["tables"].as_array().unwrap() {
                assert_eq!(t["verified"], true, "{edition} → {to}: {t}");
            }
            let listed: Vec<&serde_json::Value> = json["not_migrated"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| {
                    !["view", "function", "procedure", "trigger", "sequence", "ownership and grants"]
                        .contains(&o["kind"].as_str().unwrap())
                })
                .collect();
            assert!(listed.is_empty(), "{edition} → {to}: {listed:?}");
            let (target, refused_here) = match to.split(':').next().unwrap() {
                "postgres" => (describe(&Side::Pg(&pg)), refused(&pg, violation)),
                "mysql" => {
                    let out = Command::new("mariadb")
                        .args(["-h127.0.0.1", "-uroot", "--init-command=SET sql_mode = 'ANSI_QUOTES'", &my.name])
                        .args(["-e", violation])
                        .output()
                        .unwrap();
                    (describe(&Side::My(&my)), !out.status.success())
                }
                _ => {
                    let conn = dir.conn(&file);
                    let refused = conn.execute_batch(&format!("PRAGMA foreign_keys = ON; {violation}")).is_err();
                    (describe(&Side::Lite(&conn)), refused)
                }
            };
            assert_eq!(&target, source, "{edition} → {to}");
            assert!(refused_here, "{edition} → {to}: a foreign-key violation is refused");
            // An application's insert with no key, where the source generates keys (Chinook's SQLite
            // edition: INTEGER PRIMARY KEY, the rowid; its MySQL and PostgreSQL editions have no
            // generator, and the copy invents none): it continues after the copied keys.
            if edition == &"Chinook (SQLite)" {
                let (genre, name, id) = ("Genre", "Name", "GenreId");
                let insert = format!("INSERT INTO \"{genre}\" (\"{name}\") VALUES ('new')");
                let max = format!("SELECT max(\"{id}\") FROM \"{genre}\"");
                let new_key = match to.split(':').next().unwrap() {
                    "postgres" => {
                        pg.sql(&insert);
                        one(&pg, &max)
                    }
                    "mysql" => my.sql(&format!("SET sql_mode = 'ANSI_QUOTES'; {insert}; {max}"))[0][0].clone(),
                    _ => {
                        let conn = dir.conn(&file);
                        conn.execute_batch(&insert).unwrap();
                        conn.query_row(&max, [], |r| r.get::<_, i64>(0)).unwrap().to_string()
                    }
                };
                assert_eq!(new_key, "26", "{edition} → {to}: the identity continues after the 25 genres");
            }
        }
    }
}

/// What a PostgreSQL schema has and another engine does not get is listed by kind and name:
/// generated columns, exclusion constraints, domains and comments.
#[test]
fn postgres_objects_another_engine_does_not_get_are_listed_by_kind_and_name() {
    let (pg, dir) = (PgDb::new("unlisted"), crate::support::Dir::new());
    pg.sql(
        "CREATE EXTENSION IF NOT EXISTS btree_gist;
         CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
         CREATE TABLE room (id int PRIMARY KEY, size positive, area int GENERATED ALWAYS AS (size * 2) STORED,
                            during tsrange, EXCLUDE USING gist (id WITH =, during WITH &&));
         COMMENT ON TABLE room IS 'bookable rooms';
         COMMENT ON COLUMN room.size IS 'square metres';
         INSERT INTO room (id, size, during) VALUES (1, 10, '[2025-01-01,2025-01-02)');",
    );
    let json = copy_json(&pg.url(), &dir.url("rooms.db"));
    let listed: Vec<String> = json["not_migrated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), o["name"].as_str().unwrap()))
        .collect();
    for expected in [
        "generated column room.area",
        "exclusion constraint room.room_id_during_excl",
        "domain positive",
        "comment on table room",
        "comment on column room.size",
    ] {
        assert!(listed.iter().any(|l| l == expected), "{expected} in {listed:?}");
    }
    assert_eq!(table(&json, "room")["verified"], true);
}

/// A rerun into the tables an earlier copy made, foreign keys and all (`--if-exists truncate`,
/// as a nightly job runs): the tables are emptied together and loaded in any order, on every
/// engine, and the keys still hold afterwards.
#[test]
fn a_rerun_with_truncate_into_tables_with_their_foreign_keys_works_on_every_engine() {
    let my = MyDb::new("rerun_src");
    my.sql(
        "CREATE TABLE parent (id int PRIMARY KEY, name varchar(10));
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL, CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id));
         INSERT INTO parent SELECT seq, 'p' FROM seq_1_to_300;
         INSERT INTO child SELECT seq, 1 + seq % 300 FROM seq_1_to_3000;",
    );
    let (pg, target_my, dir) = (PgDb::new("rerun_pg"), MyDb::new("rerun_my"), crate::support::Dir::new());
    for to in [pg.url(), target_my.url(), dir.url("rerun.db")] {
        copy_json(&my.url(), &to);
        let run = barge(&[
            "copy",
            "--from",
            &my.url(),
            "--to",
            &to,
            "--if-exists",
            "truncate",
            "--partitions",
            "4",
            "--json",
        ]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "child")["rows_written"], 3000, "{to}: {}", run.stdout);
    }
    assert_eq!(one(&pg, "SELECT count(*) FROM child"), "3000");
    assert!(refused(&pg, "INSERT INTO child VALUES (99999, 99999)"), "the key still holds");
    assert_eq!(target_my.sql("SELECT count(*) FROM child")[0][0], "3000");
    let conn = dir.conn("rerun.db");
    assert!(conn.execute_batch("PRAGMA foreign_keys = ON; INSERT INTO child VALUES (99999, 99999)").is_err());
}

/// Table and column comments cross between PostgreSQL and MySQL both ways (SQLite has none: the
/// plan lists them, see above).
#[test]
fn comments_cross_between_postgres_and_mysql_both_ways() {
    let (pg, my, back) = (PgDb::new("comment_pg"), MyDb::new("comment_my"), PgDb::new("comment_back"));
    pg.sql(
        "CREATE TABLE item (id int PRIMARY KEY, price numeric(8,2), note text);
         COMMENT ON TABLE item IS 'what we sell';
         COMMENT ON COLUMN item.price IS 'in euros, VAT ''included''';
         INSERT INTO item VALUES (1, 2.50, NULL);",
    );
    let json = copy_json(&pg.url(), &my.url());
    assert!(!json["not_migrated"].to_string().contains("comment"), "{}", json["not_migrated"]);
    let created = &my.sql("SHOW CREATE TABLE item")[0][1];
    assert!(created.contains("COMMENT 'in euros, VAT ''included'''"), "{created}");
    assert!(created.contains("COMMENT='what we sell'"), "{created}");
    copy_json(&my.url(), &back.url());
    assert_eq!(one(&back, "SELECT obj_description('item'::regclass, 'pg_class')"), "what we sell");
    assert_eq!(one(&back, "SELECT col_description('item'::regclass, 2)"), "in euros, VAT 'included'");
    assert_eq!(one(&back, "SELECT count(*) FROM pg_description WHERE objoid = 'item'::regclass"), "2");
}
