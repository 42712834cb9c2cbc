//! SQLite ↔ PostgreSQL and PostgreSQL → PostgreSQL through the CLI, verified across engines.

use serde_json::json;

use crate::support::*;

const SQLITE_SOURCE: &str = "
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, balance DECIMAL(12,2), born DATE,
                        seen DATETIME, seen_tz TIMESTAMPTZ, ok BOOLEAN, photo BLOB, score REAL, wake TIME);
INSERT INTO customers VALUES
  (1, 'Zoë 🚀', '12.30', '1990-02-28', '2024-01-01 10:00:00.5', '2024-01-01 10:00:00+00:00', 1, x'00ff', 1.5, '07:30:00'),
  (2, '', '-0.01', '0001-01-01', '1970-01-01 00:00:00', '1969-12-31 23:59:59.25+00:00', 0, x'', -0.0, '23:59:59.999999'),
  (3, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE events (region TEXT, n INTEGER, payload TEXT, PRIMARY KEY (region, n));
CREATE TABLE log (at TEXT, msg TEXT);
";

fn sqlite_source(dir: &Dir) {
    let mut sql = String::from(SQLITE_SOURCE);
    sql.push_str("BEGIN;");
    for i in 0..5000 {
        sql.push_str(&format!("INSERT INTO events VALUES ('{}', {i}, 'p{i}');", ["eu", "us", "ásia"][i % 3]));
        sql.push_str(&format!("INSERT INTO log VALUES ('{}', 'm');", i % 7));
    }
    sql.push_str("COMMIT;");
    dir.sql("s.db", &sql);
}

#[test]
fn sqlite_to_postgres_to_sqlite_verifies_against_the_original() {
    let (dir, pg) = (Dir::new(), PgDb::new("roundtrip"));
    sqlite_source(&dir);
    let (src, back) = (dir.url("s.db"), dir.url("back.db"));
    let run = barge(&["copy", "--from", &src, "--to", &pg.url(), "--json", "--partitions", "3"]);
    run.assert_code(0);
    assert!(run.json()["tables"].as_array().unwrap().iter().all(|t| t["verified"] == true), "{}", run.stdout);
    // The PostgreSQL side got proper types.
    let types = pg.sql(
        "SELECT column_name || ' ' || data_type FROM information_schema.columns
         WHERE table_name = 'customers' ORDER BY ordinal_position",
    );
    let types: Vec<String> = types.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        types,
        [
            "id bigint",
            "name text",
            "balance numeric",
            "born date",
            "seen timestamp without time zone",
            "seen_tz timestamp with time zone",
            "ok boolean",
            "photo bytea",
            "score double precision",
            "wake time without time zone"
        ]
    );
    barge(&["copy", "--from", &pg.url(), "--to", &back, "--json"]).assert_code(0);
    // The original and the copy of the copy are equal by digest, across three engines' worth of hops.
    let run = barge(&["verify", "--from", &src, "--to", &back, "--json"]);
    run.assert_code(0);
    // And PostgreSQL against SQLite directly.
    barge(&["verify", "--from", &pg.url(), "--to", &src, "--json"]).assert_code(0);
}

#[test]
fn verify_across_engines_names_the_changed_keys() {
    let (dir, pg) = (Dir::new(), PgDb::new("crossverify"));
    sqlite_source(&dir);
    let src = dir.url("s.db");
    barge(&["copy", "--from", &src, "--to", &pg.url(), "--no-verify"]).assert_code(0);
    pg.sql(
        "UPDATE customers SET balance = 12.31 WHERE id = 1;
         DELETE FROM events WHERE region = 'us' AND n = 4;
         INSERT INTO events VALUES ('zz', 1, 'new');
         UPDATE log SET msg = 'M' WHERE ctid = (SELECT min(ctid) FROM log);",
    );
    let run = barge(&["verify", "--from", &src, "--to", &pg.url(), "--json"]);
    run.assert_code(3);
    let json = run.json();
    assert_eq!(table(&json, "customers")["changed"], json!([[1]]));
    assert_eq!(table(&json, "events")["missing"], json!([["us", 4]]));
    assert_eq!(table(&json, "events")["extra"], json!([["zz", 1]]));
    assert_eq!(table(&json, "log")["missing_total"], 1);
    assert_eq!(table(&json, "log")["extra_total"], 1);
}

#[test]
fn postgres_to_postgres_keeps_types_and_honours_if_exists() {
    let (from, to) = (PgDb::new("pgsrc"), PgDb::new("pgdst"));
    from.sql(
        "CREATE TABLE items (id bigint PRIMARY KEY, tags text[], price numeric(10,2), meta jsonb, at timestamptz,
                             ip inet, span interval, code uuid);
         INSERT INTO items SELECT g, ARRAY['a', 'b' || g], g * 1.25, jsonb_build_object('g', g),
                                  '2024-01-01'::timestamptz + g * interval '1 minute', '10.0.0.1',
                                  g * interval '1 day', md5(g::text)::uuid
         FROM generate_series(1, 20000) g;",
    );
    let run = barge(&["copy", "--from", &from.url(), "--to", &to.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "items")["verified"], true);
    let types = to.sql(
        "SELECT string_agg(format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute
         WHERE attrelid = 'items'::regclass AND attnum > 0",
    );
    assert_eq!(
        types[0][0].as_deref(),
        Some("bigint, text[], numeric(10,2), jsonb, timestamp with time zone, inet, interval, uuid")
    );
    // A second copy into the now non-empty target: refused, then truncated and redone.
    let again = barge(&["copy", "--from", &from.url(), "--to", &to.url()]);
    again.assert_code(2);
    assert!(again.stderr.contains("already holds 20000 rows"), "{}", again.stderr);
    barge(&["copy", "--from", &from.url(), "--to", &to.url(), "--if-exists", "truncate"]).assert_code(0);
    assert_eq!(to.sql("SELECT count(*) FROM items")[0][0].as_deref(), Some("20000"));
}

#[test]
fn connection_problems_are_clear_and_never_show_the_password() {
    let dir = Dir::new();
    sqlite_source(&dir);
    let src = dir.url("s.db");
    let run = barge(&["copy", "--from", &src, "--to", "postgres://postgres:hunter2@127.0.0.1:1/nope"]);
    run.assert_code(1);
    assert!(run.stderr.contains("cannot connect to postgres://postgres:***@127.0.0.1:1/nope"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"));
    // A database that does not exist is input to fix (exit 2), said as the target's.
    let run = barge(&["copy", "--from", &src, "--to", "postgres://postgres:hunter2@127.0.0.1:5432/no_such_db_barge"]);
    run.assert_code(2);
    assert!(run.stderr.contains("target database not found: postgres://postgres:***@127.0.0.1:5432/no_such_db_barge"));
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    let run = barge(&["copy", "--from", &src, "--to", "postgres://u:hunter2@host/db?sslmode=sometimes"]);
    run.assert_code(2);
    assert!(run.stderr.contains("unknown sslmode") && !run.stderr.contains("hunter2"), "{}", run.stderr);
}

#[test]
fn tls_is_negotiated_when_required_and_verified_when_asked() {
    let (dir, pg) = (Dir::new(), PgDb::new("tls"));
    sqlite_source(&dir);
    let src = dir.url("s.db");
    // The local server has TLS on with a self-signed certificate: `require` encrypts without
    // verifying (libpq's meaning) …
    let run =
        barge(&["copy", "--from", &src, "--to", &pg.url().replace("sslmode=disable", "sslmode=require"), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["ok"], true);
    // … and `verify-full` refuses a certificate no CA vouches for.
    let run = barge(&["verify", "--from", &src, "--to", &pg.url().replace("sslmode=disable", "sslmode=verify-full")]);
    run.assert_code(1);
    assert!(run.stderr.to_lowercase().contains("certificate"), "{}", run.stderr);
}

#[test]
fn a_postgres_type_without_a_binary_codec_travels_as_its_text_form() {
    let (from, dir) = (PgDb::new("astext"), Dir::new());
    from.sql(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE shapes (id int PRIMARY KEY, p point, r int4range);
         INSERT INTO shapes VALUES (1, '(1.5,2)', '[1,5)');",
    );
    let run = barge(&["copy", "--from", &from.url(), "--to", &dir.url("t.db")]);
    run.assert_code(0);
    let row: (String, String) =
        dir.conn("t.db").query_row("SELECT p, r FROM shapes", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(row, ("(1.5,2)".to_string(), "[1,5)".to_string()), "PostgreSQL's own text form");
}

#[test]
fn indexes_foreign_keys_and_identities_are_recreated_after_the_load() {
    let (from, to) = (PgDb::new("schemasrc"), PgDb::new("schemadst"));
    from.sql(
        "CREATE TABLE authors (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text);
         CREATE INDEX authors_name ON authors (name);
         CREATE INDEX authors_lower ON authors (lower(name));
         CREATE TABLE books (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                             author_id int NOT NULL REFERENCES authors (id), title text);
         INSERT INTO authors (email, name) SELECT 'a' || g || '@x.org', 'n' || g FROM generate_series(1, 50) g;
         INSERT INTO books (author_id, title) SELECT 1 + g % 50, 't' || g FROM generate_series(1, 200) g;",
    );
    let run = barge(&["copy", "--from", &from.url(), "--to", &to.url(), "--foreign-keys", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["schema"]["mode"], "exact");
    let indexes = to.sql(
        "SELECT string_agg(def, '; ' ORDER BY def) FROM
           (SELECT regexp_replace(indexdef, '^.* USING ', '') AS def FROM pg_indexes WHERE tablename = 'authors') d",
    );
    assert_eq!(indexes[0][0].as_deref(), Some("btree (email); btree (id); btree (lower(name)); btree (name)"));
    let unique = to.sql("SELECT count(*) FROM pg_index WHERE indrelid = 'authors'::regclass AND indisunique");
    assert_eq!(unique[0][0].as_deref(), Some("2"), "primary key and the unique email");
    let fks = to.sql("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'");
    assert_eq!(fks[0][0].as_deref(), Some("FOREIGN KEY (author_id) REFERENCES authors(id)"));
    // The generators continue after the largest copied key.
    let next = to.sql(
        "INSERT INTO authors (email) VALUES ('new@x.org') RETURNING id;
         INSERT INTO books (author_id) VALUES (1) RETURNING id;",
    );
    assert_eq!((next[0][0].as_deref(), next[1][0].as_deref()), (Some("51"), Some("201")));
}

#[test]
fn rows_load_as_read_only_into_columns_of_the_same_types() {
    let (from, to) = (PgDb::new("nativesrc"), PgDb::new("nativedst"));
    from.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'ok');
         CREATE TABLE same (id bigint PRIMARY KEY, n integer, s varchar(10), f mood, at timestamptz, x numeric(8,3));
         CREATE TABLE wider (id bigint PRIMARY KEY, n integer, s varchar(10));
         CREATE TABLE other (id bigint PRIMARY KEY, tags int[], cash money);
         INSERT INTO same SELECT g, g, 's' || g, 'ok', '2024-01-01'::timestamptz + g * interval '1 s', g / 7.0
           FROM generate_series(1, 3000) g;
         INSERT INTO wider SELECT g, g, 'w' || g FROM generate_series(1, 3000) g;
         INSERT INTO other SELECT g, ARRAY[g, g + 1], g FROM generate_series(1, 3000) g;",
    );
    // `wider` exists in the target with other types: its rows must be encoded for them.
    to.sql("CREATE TABLE wider (id bigint PRIMARY KEY, n bigint, s text)");
    let run = barge(&["copy", "--from", &from.url(), "--to", &to.url(), "--if-exists", "append", "--json", "-v"]);
    run.assert_code(0);
    for name in ["same", "wider", "other"] {
        assert_eq!(table(&run.json(), name)["verified"], true, "{name}: {}", run.stdout);
    }
    let as_read = |name: &str| run.stderr.contains(&format!("table `{name}`: rows load as the source sent them"));
    assert!(as_read("same"), "{}", run.stderr);
    assert!(!as_read("wider") && !as_read("other"), "{}", run.stderr);
    assert_eq!(to.sql("SELECT sum(n), count(*) FROM wider")[0][0].as_deref(), Some("4501500"));
    // Unverified, rows are not even decoded on the way: the copy still equals the source.
    let quiet = barge(&["copy", "--from", &from.url(), "--to", &to.url(), "--if-exists", "truncate", "--no-verify"]);
    quiet.assert_code(0);
    barge(&["verify", "--from", &from.url(), "--to", &to.url()]).assert_code(0);
    assert_eq!(
        to.sql("SELECT count(*), sum(x) FROM same")[0][1].as_deref(),
        from.sql("SELECT 1, sum(x) FROM same")[0][1].as_deref()
    );
}

#[test]
fn a_row_changed_on_its_way_in_is_found_while_the_key_builds() {
    let (from, to) = (PgDb::new("overlapsrc"), PgDb::new("overlapdst"));
    from.sql(
        "CREATE TABLE t (id bigint PRIMARY KEY, name text NOT NULL, n int);
         CREATE INDEX t_name ON t (name);
         INSERT INTO t SELECT g, 'name ' || g, g % 7 FROM generate_series(1, 30000) g;",
    );
    // Every table created in the target gets a trigger that changes one row as it is loaded.
    to.sql(
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.id = 4242 THEN NEW.name := 'tampered'; END IF; RETURN NEW; END $$;
         CREATE FUNCTION arm() RETURNS event_trigger LANGUAGE plpgsql AS $$
         DECLARE r record;
         BEGIN
           FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
             EXECUTE format('CREATE TRIGGER tamper BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION public.tamper()',
                            r.object_identity);
             -- Firing in barge's loading sessions too, which run as replicas (no triggers).
             EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER tamper', r.object_identity);
           END LOOP;
         END $$;
         CREATE EVENT TRIGGER arm ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION arm();",
    );
    // Into another schema, so barge builds the schema itself (pg_dump's names its schema) and
    // verifies while the key builds.
    let target = format!("{}&schema=landing", to.url());
    let run = barge(&["copy", "--from", &from.url(), "--to", &target, "--partitions", "4", "--json", "-v"]);
    run.assert_code(3);
    assert!(run.stderr.contains("verifying while its key and indexes build"), "{}", run.stderr);
    let json = run.json();
    assert_eq!(table(&json, "t")["diff"]["changed"], json!([[4242]]), "{}", run.stdout);
    assert_eq!(table(&json, "t")["diff"]["changed_total"], 1);
    // The key was built meanwhile, under the name ADD PRIMARY KEY gives it, with the index.
    let indexes = to.sql(
        "SELECT string_agg(indexname || ' ' || regexp_replace(indexdef, '^.* USING ', ''), '; ' ORDER BY indexname)
         FROM pg_indexes WHERE tablename = 't' AND schemaname = 'landing'",
    );
    assert_eq!(indexes[0][0].as_deref(), Some("t_name btree (name); t_pkey btree (id)"));
    let key = to.sql("SELECT conname FROM pg_constraint WHERE contype = 'p' AND conrelid = 'landing.t'::regclass");
    assert_eq!(key[0][0].as_deref(), Some("t_pkey"));
}

#[test]
fn sqlite_unique_constraints_and_autoincrement_become_postgres_indexes_and_identities() {
    let (dir, pg) = (Dir::new(), PgDb::new("sqliteschema"));
    dir.sql(
        "s.db",
        "CREATE TABLE tags (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL UNIQUE, grp TEXT);
         CREATE INDEX tags_grp ON tags (grp);
         INSERT INTO tags (label, grp) VALUES ('a', 'x'), ('b', 'x'), ('c', 'y');",
    );
    barge(&["copy", "--from", &dir.url("s.db"), "--to", &pg.url()]).assert_code(0);
    let indexes = pg.sql("SELECT count(*) FROM pg_indexes WHERE tablename = 'tags'");
    assert_eq!(indexes[0][0].as_deref(), Some("3"));
    let next = pg.sql("INSERT INTO tags (label) VALUES ('d') RETURNING id");
    assert_eq!(next[0][0].as_deref(), Some("4"));
}

#[test]
fn every_postgres_type_round_trips_through_sqlite_and_directly() {
    let (origin, dir, back, direct) =
        (PgDb::new("every"), Dir::new(), PgDb::new("everyback"), PgDb::new("everydirect"));
    origin.sql(include_str!("../../../../fixtures/postgres_every_type.sql"));
    let lite = dir.url("every.db");
    for (from, to) in [(origin.url(), lite.clone()), (lite.clone(), back.url()), (origin.url(), direct.url())] {
        let run = barge(&["copy", "--from", &from, "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "every_type")["verified"], true, "{from} → {to}");
    }
    // End to end: the table that went through SQLite equals the original, value for value.
    let run = barge(&["verify", "--from", &origin.url(), "--to", &back.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "every_type")["source_rows"], 4);
    // The direct copy kept every native type.
    let types = |db: &PgDb| {
        db.sql(
            "SELECT string_agg(format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute
             WHERE attrelid = 'every_type'::regclass AND attnum > 0",
        )[0][0]
            .clone()
    };
    assert_eq!(types(&direct), types(&origin));
}

#[test]
fn defaults_travel_into_postgres_exactly_and_into_sqlite_translated() {
    let (from, to, dir) = (PgDb::new("defsrc"), PgDb::new("defdst"), Dir::new());
    from.sql(
        "CREATE TABLE d (id int PRIMARY KEY, status varchar(10) DEFAULT 'new', qty int DEFAULT 1,
                         ok boolean DEFAULT true, quote text DEFAULT 'it''s', at timestamptz DEFAULT now());
         INSERT INTO d (id) VALUES (1);",
    );
    barge(&["copy", "--from", &from.url(), "--to", &to.url()]).assert_code(0);
    barge(&["copy", "--from", &from.url(), "--to", &dir.url("d.db")]).assert_code(0);
    let defaults = to.sql(
        "SELECT string_agg(column_name || '=' || coalesce(column_default, '-'), ', ' ORDER BY ordinal_position)
         FROM information_schema.columns WHERE table_name = 'd'",
    );
    assert_eq!(
        defaults[0][0].as_deref(),
        Some("id=-, status='new'::character varying, qty=1, ok=true, quote='it''s'::text, at=now()")
    );
    dir.sql("d.db", "INSERT INTO d (id) VALUES (2);");
    let row: (String, i64, i64, String, bool) = dir
        .conn("d.db")
        .query_row("SELECT status, qty, ok, quote, at IS NOT NULL FROM d WHERE id = 2", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    assert_eq!(row, ("new".to_string(), 1, 1, "it's".to_string(), true), "now() became CURRENT_TIMESTAMP");
}

#[test]
fn quoted_identifiers_survive_every_hop() {
    let (from, to, dir) = (PgDb::new("quotedsrc"), PgDb::new("quoteddst"), Dir::new());
    from.sql(
        r#"CREATE TABLE "Order ""Lines""" ("select" int, "Line No" int, "ünï cödé" text, PRIMARY KEY ("select", "Line No"));
           CREATE INDEX "idx ""odd""" ON "Order ""Lines""" ("ünï cödé");
           INSERT INTO "Order ""Lines""" SELECT g / 10, g % 10, 'v' || g FROM generate_series(1, 5000) g;"#,
    );
    for to in [to.url(), dir.url("q.db")] {
        let run = barge(&["copy", "--from", &from.url(), "--to", &to, "--partitions", "4", "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), r#"Order "Lines""#)["verified"], true, "{to}");
    }
    let back = PgDb::new("quotedback");
    barge(&["copy", "--from", &dir.url("q.db"), "--to", &back.url()]).assert_code(0);
    barge(&["verify", "--from", &from.url(), "--to", &back.url()]).assert_code(0);
}

/// Rows of huge values (5 MiB texts, 2.5 MiB bytea: above the sizes from which the PostgreSQL
/// reader hands rows over without copying and verification hashes values in place), mixed with
/// small ones and NULLs.
pub(crate) const HUGE_VALUES: &str = "
CREATE TABLE huge (id bigint PRIMARY KEY, t text, b bytea NOT NULL);
INSERT INTO huge SELECT i,
    CASE WHEN i % 3 = 0 THEN NULL WHEN i % 2 = 0 THEN repeat(md5(i::text), 163840) ELSE 'small ' || i END,
    CASE WHEN i % 4 = 0 THEN '\\x00ff'::bytea ELSE decode(repeat(md5((i * 7)::text), 81920), 'hex') END
FROM generate_series(1, 12) i;";

/// Each row of `huge` as (id, md5 of t, md5 of b), by the test's own query.
pub(crate) const HUGE_ROWS: &str = "SELECT id, coalesce(md5(t), 'null'), md5(b) FROM huge ORDER BY id";

#[test]
fn huge_values_copy_exactly_and_a_changed_byte_in_one_is_found() {
    let (from, to) = (PgDb::new("hugesrc"), PgDb::new("hugedst"));
    from.sql(HUGE_VALUES);
    let run = barge(&["copy", "--from", &from.url(), "--to", &to.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "huge")["verified"], true);
    let rows = from.sql(HUGE_ROWS);
    assert_eq!(rows.len(), 12);
    assert_eq!(to.sql(HUGE_ROWS), rows, "every value, compared by md5 in the database");
    // One byte more at the end of a 2.5 MiB value, and one byte changed inside a 5 MiB text.
    to.sql(
        "UPDATE huge SET b = b || '\\x00'::bytea WHERE id = 5;
         UPDATE huge SET t = overlay(t placing 'X' from 4000000) WHERE id = 8;",
    );
    let run = barge(&["verify", "--from", &from.url(), "--to", &to.url(), "--json"]);
    run.assert_code(3);
    assert_eq!(table(&run.json(), "huge")["changed"], json!([[5], [8]]));
}
