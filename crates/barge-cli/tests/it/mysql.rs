//! MySQL/MariaDB ↔ PostgreSQL and ↔ SQLite through the CLI, verified across engines.

use serde_json::json;

use crate::private::PrivateMy;
use crate::support::*;

const FIXTURE: &str = include_str!("../../../../fixtures/mysql_every_type.sql");

#[test]
fn every_mysql_type_round_trips_through_postgres_and_sqlite() {
    let (origin, pg, back, dir, back2) =
        (MyDb::new("every"), PgDb::new("myevery"), MyDb::new("everyback"), Dir::new(), MyDb::new("everyback2"));
    origin.sql(FIXTURE);
    let lite = dir.url("every.db");
    for (from, to) in
        [(origin.url(), pg.url()), (pg.url(), back.url()), (origin.url(), lite.clone()), (lite.clone(), back2.url())]
    {
        let run = barge(&["copy", "--from", &from, "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "every_type")["verified"], true, "{from} → {to}");
    }
    for back in [&back, &back2] {
        let run = barge(&["verify", "--from", &origin.url(), "--to", &back.url(), "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "every_type")["source_rows"], 3);
    }
    // MySQL → PostgreSQL types: unsigned extremes kept, tinyint(1) as boolean, TIME as interval.
    let types = pg.sql(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute
         WHERE attrelid = 'every_type'::regclass AND attname IN ('biu', 'flag', 'tm6', 'ts', 'js', 'iu', 'pt', 'geo')",
    );
    assert_eq!(
        types[0][0].as_deref(),
        Some(
            "iu bigint, biu numeric(20,0), flag boolean, ts timestamp with time zone, tm6 interval, js jsonb, \
             pt geometry(Point), geo geometry"
        )
    );
    // Geometries are PostGIS's own, with their SRIDs, and come back as the same spatial columns.
    let srids = pg
        .sql("SELECT ST_AsEWKT(pt) || ' ' || ST_SRID(geo) || ' ' || ST_GeometryType(geo) FROM every_type WHERE id = 1");
    assert_eq!(srids[0][0].as_deref(), Some("SRID=4326;POINT(-71.06 42.36) 3857 ST_Polygon"));
    // The subtype comes back through PostgreSQL and through SQLite (declared `POINT` there).
    for back in [&back, &back2] {
        let created = &back.sql("SHOW CREATE TABLE every_type")[0][1];
        assert!(created.contains("`pt` point") && created.contains("`geo` geometry"), "{created}");
    }
    let created = &back.sql("SHOW CREATE TABLE every_type")[0][1];
    assert!(created.contains("`st` set('a','b','c')"), "a SET comes back from PostgreSQL as a SET: {created}");
    assert_eq!(pg.sql("SELECT biu::text FROM every_type WHERE id = 1")[0][0].as_deref(), Some("18446744073709551615"));
}

#[test]
fn postgres_to_mysql_and_cross_engine_verify_names_keys() {
    let (pg, my) = (PgDb::new("pg2my"), MyDb::new("pg2my"));
    pg.sql(
        "CREATE TABLE accounts (region text, id bigint, owner text NOT NULL, balance numeric(14,2), opened timestamptz,
                                flags boolean, payload bytea, ref uuid, wait interval, PRIMARY KEY (region, id));
         INSERT INTO accounts SELECT (ARRAY['eu', 'us', 'ásia', 'Ωmega', '🚀'])[1 + g % 5], g, 'owner ' || g,
                                     g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour', g % 2 = 0,
                                     decode(md5(g::text), 'hex'), md5(g::text)::uuid,
                                     (ARRAY['-1 day', '1 day 02:00:00.5', '00:00:01', '-00:30'])[1 + g % 4]::interval
         FROM generate_series(1, 20000) g;",
    );
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--partitions", "4", "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "accounts")["verified"], true);
    let types = my.sql(
        "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()
         AND TABLE_NAME = 'accounts' AND COLUMN_NAME IN ('ref', 'flags', 'opened') ORDER BY ORDINAL_POSITION",
    );
    assert_eq!(types, [["datetime(6)"], ["tinyint(1)"], ["char(36)"]]);
    my.sql("UPDATE accounts SET owner = 'changed' WHERE region = '🚀' AND id = 4; DELETE FROM accounts WHERE region = 'eu' AND id = 5;");
    let run = barge(&["verify", "--from", &pg.url(), "--to", &my.url(), "--json"]);
    run.assert_code(3);
    let json = run.json();
    assert_eq!(table(&json, "accounts")["changed"], json!([["🚀", 4]]));
    assert_eq!(table(&json, "accounts")["missing"], json!([["eu", 5]]));
}

#[test]
fn postgres_arrays_and_postgres_only_types_go_to_mysql_and_come_back() {
    let (pg, my, back) = (PgDb::new("arr2my"), MyDb::new("arr2my"), PgDb::new("arr2myback"));
    pg.sql(
        r#"CREATE TABLE a (id int PRIMARY KEY, ints integer[], bigs bigint[], texts text[], nums numeric(12,2)[],
                           floats double precision[], flags boolean[], days date[], stamps timestamptz[],
                           blobs bytea[], ids uuid[], addr inet, net cidr, mac macaddr, tod time,
                           doc jsonb, big numeric);
           INSERT INTO a VALUES
             (1, '{1,NULL,-3}', '{9223372036854775807}', ARRAY['a "q"', E'tab\there', '🚀', ''], '{12.50,-0.01,NULL}',
              '{0.1,NaN,Infinity,-Infinity,-0}', '{t,f,NULL}', '{2024-02-29,0001-01-01}',
              '{"2024-01-01 10:00:00.123456+00","1969-12-31 23:59:59+00"}', '{"\x00ff",""}',
              '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
              '23:59:59.999999', '{"b": [1, 2], "a": null}', 12345678901234567890.123456789),
             (2, '{}', NULL, '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '00:00', NULL, NULL),
             (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"#,
    );
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "a")["verified"], true, "{}", run.stdout);
    // Arrays are JSON arrays in MySQL, their element type named in the column comment.
    let columns = my.sql(
        "SELECT COLUMN_NAME, COLUMN_COMMENT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()
         AND TABLE_NAME = 'a' AND COLUMN_NAME IN ('ints', 'nums', 'stamps') ORDER BY ORDINAL_POSITION",
    );
    assert_eq!(
        columns,
        [["ints", "barge:array:int"], ["nums", "barge:array:decimal(12,2)"], ["stamps", "barge:array:datetime(6)"]]
    );
    let stored = my.sql("SELECT ints, nums, flags, addr, tod FROM a WHERE id = 1");
    assert_eq!(
        stored,
        [["[1, null, -3]", r#"["12.50", "-0.01", null]"#, "[true, false, null]", "192.168.0.1/24", "23:59:59.999999"]]
    );
    // Verified across engines, and back into PostgreSQL as arrays again.
    barge(&["verify", "--from", &pg.url(), "--to", &my.url()]).assert_code(0);
    let run = barge(&["copy", "--from", &my.url(), "--to", &back.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "a")["verified"], true);
    let types = back.sql(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'a'::regclass
         AND attname IN ('ints', 'nums', 'flags', 'blobs') ORDER BY attnum",
    );
    let types: Vec<_> = types.into_iter().flatten().flatten().collect();
    assert_eq!(types, ["integer[]", "numeric(12,2)[]", "boolean[]", "bytea[]"]);
    // Every value reads back in PostgreSQL's own text form as it was (timestamptz[] became
    // timestamp[] in UTC: MySQL has no zoned type, so it is compared by verify, not here).
    let text = "SELECT id, ints::text, bigs::text, texts::text, nums::text, floats::text, flags::text, days::text,
                       blobs::text, ids::text, addr::text, net::text, mac::text, tod::text, doc::text, big::text
                FROM a ORDER BY id";
    assert_eq!(back.sql(text), pg.sql(text));
    // The MySQL copy and the original compare equal too.
    barge(&["verify", "--from", &my.url(), "--to", &pg.url(), "--table", "a"]).assert_code(0);
    // MySQL → MySQL keeps the array columns (and their comments); MySQL → SQLite makes them
    // SQLite's typed JSON arrays; both verify.
    let (again, dir) = (MyDb::new("arr2my2"), Dir::new());
    let run = barge(&["copy", "--from", &my.url(), "--to", &again.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "a")["verified"], true);
    let comment = again.sql(
        "SELECT COLUMN_COMMENT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()
         AND TABLE_NAME = 'a' AND COLUMN_NAME = 'blobs'",
    );
    assert_eq!(comment, [["barge:array:longblob"]]);
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("a.db"), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "a")["verified"], true);
    barge(&["verify", "--from", &pg.url(), "--to", &dir.url("a.db"), "--table", "a"]).assert_code(0);
}

#[test]
fn keyless_and_quoted_tables_and_the_insert_fallback() {
    let (my, copy, dir) = (MyDb::new("misc"), MyDb::new("misccopy"), Dir::new());
    my.sql(
        "CREATE TABLE log (at datetime, msg varchar(20));
         INSERT INTO log VALUES ('2024-01-01 00:00:00', 'x'), ('2024-01-01 00:00:00', 'x'), (NULL, 'y');
         CREATE TABLE `Select ``Me``` (`Order` int PRIMARY KEY, `Mixed Case` text, `ünï` varchar(10));
         INSERT INTO `Select ``Me``` VALUES (1, 'a', 'é'), (2, NULL, '日本');",
    );
    // ?local_infile=false is what a server without LOCAL INFILE forces: INSERTs, same result.
    let run = barge(&["copy", "--from", &my.url(), "--to", &format!("{}?local_infile=false", copy.url()), "--json"]);
    run.assert_code(0);
    assert!(run.json()["tables"].as_array().unwrap().iter().all(|t| t["verified"] == true), "{}", run.stdout);
    assert!(run.stderr.contains("no primary key"), "{}", run.stderr);
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("m.db"), "--json"]);
    run.assert_code(0);
    copy.sql("DELETE FROM log WHERE msg = 'x' LIMIT 1");
    let run = barge(&["verify", "--from", &my.url(), "--to", &copy.url(), "--json"]);
    run.assert_code(3);
    assert_eq!(table(&run.json(), "log")["missing"], json!([["2024-01-01 00:00:00", "x"]]));
}

#[test]
fn zero_dates_and_unsupported_types_are_clear_errors() {
    let (my, dir) = (MyDb::new("bad"), Dir::new());
    my.sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE z (id int PRIMARY KEY, d date);
         INSERT INTO z VALUES (1, '2024-01-01'), (7, '0000-00-00');
         CREATE TABLE g (id int PRIMARY KEY, addr inet6);",
    );
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("z.db"), "--table", "g"]);
    run.assert_code(2);
    assert!(run.stderr.contains("table `g`, column `addr`, type `inet6`"), "{}", run.stderr);
    // By default a zero date becomes NULL, counted per column in the summary and the log…
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("z.db"), "--table", "z", "--json"]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(table(&json, "z")["notices"], json!(["column `d`: 1 zero date(s) read as NULL"]));
    assert!(run.stderr.contains("1 zero date(s) read as NULL"), "{}", run.stderr);
    let stored: Option<String> = dir.conn("z.db").query_row("SELECT d FROM z WHERE id = 7", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, None);
    // …or fails the table when asked, by flag or by URL parameter.
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("z2.db"), "--table", "z", "--zero-dates", "error"]);
    run.assert_code(1);
    assert!(run.stderr.contains("column `d` at key 7: zero date"), "{}", run.stderr);
    let strict = format!("{}?zero_dates=error", my.url());
    let run = barge(&["copy", "--from", &strict, "--to", &dir.url("z3.db"), "--table", "z"]);
    run.assert_code(1);
    assert!(run.stderr.contains("column `d` at key 7: zero date"), "{}", run.stderr);
    // verify reads zero dates the same way (NULL on both sides after the copy above).
    let run = barge(&["verify", "--from", &my.url(), "--to", &dir.url("z.db"), "--table", "z", "--zero-dates", "null"]);
    run.assert_code(0);
    // The flag means nothing to other engines: a usage error, before anything is written.
    let run = barge(&["copy", "--from", &dir.url("z.db"), "--to", &dir.url("z4.db"), "--zero-dates", "error"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--zero-dates applies to MySQL and MariaDB sources"), "{}", run.stderr);
    assert!(!dir.path("z4.db").exists());
}

#[test]
fn tinyint1_reads_as_boolean_or_on_request_as_an_integer() {
    let (my, pg) = (MyDb::new("tiny"), PgDb::new("tiny"));
    my.sql("CREATE TABLE f (id int PRIMARY KEY, flag tinyint(1)); INSERT INTO f VALUES (1, 0), (2, 1), (3, 7);");
    // A 7 is no boolean: refused, naming the key …
    let run = barge(&["copy", "--from", &my.url(), "--to", &pg.url()]);
    run.assert_code(1);
    assert!(run.stderr.contains("column `flag` at key 3: expected 0 or 1, found `7`"), "{}", run.stderr);
    // … and read as an integer when asked.
    let as_integer = format!("{}?tinyint1=integer", my.url());
    // The failed copy dropped the table it had created, so the rerun starts clean.
    assert!(run.stderr.contains("barge created `f` and dropped it again"), "{}", run.stderr);
    barge(&["copy", "--from", &as_integer, "--to", &pg.url()]).assert_code(0);
    // Into an existing boolean column, an integer cannot go: refused before writing.
    pg.sql("DROP TABLE f; CREATE TABLE f (id int PRIMARY KEY, flag boolean)");
    let run = barge(&["copy", "--from", &as_integer, "--to", &pg.url()]);
    run.assert_code(2);
    assert!(run.stderr.contains("column `flag`, type `Int8`: the target column is boolean"), "{}", run.stderr);
    pg.sql("DROP TABLE f");
    barge(&["copy", "--from", &as_integer, "--to", &pg.url()]).assert_code(0);
    let types = pg.sql(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'f'::regclass AND attname = 'flag'",
    );
    assert_eq!(types[0][0].as_deref(), Some("smallint"));
}

#[test]
fn mysql_connection_problems_never_show_the_password() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);");
    let src = dir.url("s.db");
    let run = barge(&["copy", "--from", &src, "--to", "mysql://root:hunter2@127.0.0.1:1/nope"]);
    run.assert_code(1);
    assert!(run.stderr.contains("cannot connect to mysql://root:***@127.0.0.1:1/nope"), "{}", run.stderr);
    let run = barge(&["copy", "--from", &src, "--to", "mysql://nobody_barge:hunter2@127.0.0.1:3306/nope"]);
    run.assert_code(1);
    assert!(run.stderr.contains("Access denied") && !run.stderr.contains("hunter2"), "{}", run.stderr);
}

#[test]
fn json_stays_json_and_verifies_across_formatting() {
    let (pg, my, back, dir) = (PgDb::new("jsonsrc"), MyDb::new("json"), PgDb::new("jsonback"), Dir::new());
    pg.sql(
        r#"CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb);
           INSERT INTO docs VALUES (1, '{"b": 1,   "a": [1, 2.5, "x"]}', '{"z": null, "a": {"k": true}}'),
                                   (2, '[]', '"just a string"'), (3, NULL, NULL);"#,
    );
    // The JSON class hashes documents canonically, whatever formatting each engine keeps.
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "docs")["verified"], true);
    // MariaDB keeps the text as written, MySQL 8 reformats it; verification holds either way.
    let stored = &my.sql("SELECT j FROM docs WHERE id = 1")[0][0];
    assert!(stored == r#"{"b": 1,   "a": [1, 2.5, "x"]}"# || stored == r#"{"a": [1, 2.5, "x"], "b": 1}"#, "{stored}");
    let types = my.sql("SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'docs' ORDER BY ORDINAL_POSITION");
    // MariaDB reports its JSON as longtext (with a json_valid check); MySQL would say json.
    assert!(types[1][0] == "longtext" || types[1][0] == "json", "{types:?}");
    for (from, to) in [(my.url(), back.url()), (my.url(), dir.url("j.db"))] {
        let run = barge(&["copy", "--from", &from, "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "docs")["verified"], true, "{to}");
    }
    let types = back.sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attnum > 1 ORDER BY attnum");
    assert_eq!(types.iter().map(|r| r[0].clone().unwrap()).collect::<Vec<_>>(), ["jsonb", "jsonb"]);
    barge(&["verify", "--from", &pg.url(), "--to", &back.url()]).assert_code(0);
    barge(&["verify", "--from", &pg.url(), "--to", &dir.url("j.db")]).assert_code(0);
}

#[test]
fn bit_columns_keep_their_bits_by_load_data_and_by_insert() {
    let (my, copy, fallback) = (MyDb::new("bits"), MyDb::new("bitscopy"), MyDb::new("bitsins"));
    my.sql(include_str!("../../../../fixtures/mysql_every_type.sql"));
    let bits = |db: &MyDb| db.sql("SELECT id, BIN(b1), BIN(b12), BIN(b64) FROM every_type WHERE id < 3 ORDER BY id");
    for (to, target) in [(copy.url(), &copy), (format!("{}?local_infile=false", fallback.url()), &fallback)] {
        let run = barge(&["copy", "--from", &my.url(), "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(table(&run.json(), "every_type")["verified"], true, "{to}");
        assert_eq!(bits(target), bits(&my), "{to}");
    }
    assert_eq!(bits(&my)[0], ["1", "1", "101000000101", &"1".repeat(64)]);
}

#[test]
fn a_server_that_refuses_local_infile_is_loaded_with_inserts_said_once() {
    let server = PrivateMy::start(&["--local-infile=0"]);
    assert_eq!(server.sql("SELECT @@local_infile").as_deref(), Some("0"));
    server.sql("CREATE DATABASE t CHARACTER SET utf8mb4").unwrap();
    let pg = PgDb::new("noinfile");
    pg.sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8,2));
         INSERT INTO items SELECT g, 'item ' || g || ' 🚀', g / 100.0 FROM generate_series(1, 30000) g;",
    );
    let run = barge(&["copy", "--from", &pg.url(), "--to", &server.url("t"), "--partitions", "4", "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "items")["verified"], true);
    assert_eq!(table(&run.json(), "items")["rows_written"], 30000);
    let said = run.stderr.matches("refuses LOAD DATA LOCAL INFILE").count();
    assert_eq!(said, 1, "said once: {}", run.stderr);
    assert_eq!(server.sql("SELECT count(*), sum(price) FROM t.items").as_deref(), Some("30000\t4500150.00"));
}

#[test]
fn char_padding_compares_alike_in_mysql_and_postgres() {
    let (pg, my, back) = (PgDb::new("charpad"), MyDb::new("charpad"), PgDb::new("charpadback"));
    pg.sql(
        "CREATE TABLE c (id int PRIMARY KEY, code char(5), label varchar(10));
         INSERT INTO c VALUES (1, 'ab', 'x  '), (2, 'abcde', 'y'), (3, NULL, NULL), (4, ' a', ' '), (5, 'é🚀', '');",
    );
    // Into an existing MySQL CHAR(5): MySQL strips the padding PostgreSQL keeps, and barge pads it
    // back when reading, so both sides hash the same values (VARCHAR keeps its trailing spaces).
    my.sql("CREATE TABLE c (id int PRIMARY KEY, code char(5), label varchar(10));");
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--if-exists", "append", "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "c")["verified"], true, "{}", run.stdout);
    assert_eq!(
        my.sql("SELECT CONCAT('[', code, ']'), CONCAT('[', label, ']') FROM c WHERE id = 1"),
        [["[ab]", "[x  ]"]]
    );
    // And back: a MySQL CHAR(5) becomes PostgreSQL's own character(5), its values padded.
    let run = barge(&["copy", "--from", &my.url(), "--to", &back.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "c")["verified"], true);
    let types = back.sql("SELECT string_agg(format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'c'::regclass AND attnum > 1");
    assert_eq!(types[0][0].as_deref(), Some("character(5), character varying(10)"));
    let padded = back.sql("SELECT octet_length(code) FROM c WHERE id IN (1, 4, 5) ORDER BY id");
    let padded: Vec<_> = padded.into_iter().flatten().flatten().collect();
    assert_eq!(padded, ["5", "5", "9"]);
    assert_eq!(back.sql("SELECT id FROM c WHERE code = 'ab'")[0][0].as_deref(), Some("1"), "compared as char(5)");
    barge(&["verify", "--from", &pg.url(), "--to", &back.url()]).assert_code(0);
    // A table barge creates keeps the fixed length too.
    let fresh = MyDb::new("charpad_fresh");
    let run = barge(&["copy", "--from", &pg.url(), "--to", &fresh.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "c")["verified"], true);
    let created = &fresh.sql("SHOW CREATE TABLE c")[0][1];
    assert!(created.contains("`code` char(5)") && created.contains("`label` varchar(10)"), "{created}");
}

/// A MySQL source keeps a range read's connection for the next read; one the server ended while
/// it sat idle is replaced without failing the read. (Through the engine: a CLI run is too short
/// for a connection to go stale.)
#[test]
fn range_reads_replace_a_kept_connection_the_server_ended() {
    use barge_core::KeyRange;
    let db = MyDb::new("reads");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT seq, concat('v', seq) FROM seq_1_to_100;",
    );
    let source = barge_core::EngineFactory::open_source(&barge_mysql::MyEngine, &db.url()).unwrap();
    let info = source.table("t").unwrap();
    let rows = || {
        let mut rows = 0;
        source
            .read_range(&info, &KeyRange::all(), barge_core::BatchSize::rows(30), &mut |batch| {
                rows += batch.num_rows();
                Ok(())
            })
            .unwrap();
        rows
    };
    assert_eq!((rows(), rows()), (100, 100));
    let killed = db.sql(&format!(
        "SELECT id FROM information_schema.processlist WHERE db = '{}' AND id <> connection_id()",
        db.name
    ));
    assert!(!killed.is_empty(), "the kept connection is open");
    for id in killed {
        db.sql(&format!("KILL {}", id[0]));
    }
    assert_eq!(rows(), 100);
}

#[test]
fn mysql_batches_close_at_their_byte_limit() {
    let db = MyDb::new("batch_bytes");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, s longtext NOT NULL); INSERT INTO t SELECT seq, repeat('x', 10000) FROM seq_1_to_100;");
    let source = barge_core::EngineFactory::open_source(&barge_mysql::MyEngine, &db.url()).unwrap();
    let table = source.table("t").unwrap();
    let mut sizes = Vec::new();
    let limit = barge_core::BatchSize { rows: 1000, bytes: 50_000 };
    source
        .read_range(&table, &barge_core::KeyRange::all(), limit, &mut |b| {
            sizes.push(b.num_rows());
            Ok(())
        })
        .unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(sizes.iter().all(|&n| n <= 5), "10 KB rows, 50 KB batches: {sizes:?}");
}

#[test]
fn wide_rows_loaded_with_inserts_fit_a_small_max_allowed_packet() {
    let server = PrivateMy::start(&["--local-infile=0", "--max-allowed-packet=1M"]);
    server.sql("CREATE DATABASE t CHARACTER SET utf8mb4").unwrap();
    let dir = Dir::new();
    // 300 rows of 50 KB: 500 rows per statement would be a 15 MB packet.
    dir.sql(
        "s.db",
        "CREATE TABLE w (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
         INSERT INTO w SELECT i, printf('%.50000c', 'x') FROM n;",
    );
    let run = barge(&["copy", "--from", &dir.url("s.db"), "--to", &server.url("t"), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "w")["verified"], true, "{}", run.stderr);
    assert_eq!(server.sql("SELECT count(*), sum(length(body)) FROM t.w").as_deref(), Some("300\t15000000"));
}

#[test]
fn one_table_that_cannot_be_copied_does_not_stop_the_others() {
    let (pg, my) = (PgDb::new("isolate"), MyDb::new("isolate"));
    pg.sql(
        "CREATE TABLE a_bad (id int PRIMARY KEY, x real); INSERT INTO a_bad VALUES (1, 1.5), (2, 'NaN');
         CREATE TABLE b_good (id int PRIMARY KEY, v text); INSERT INTO b_good SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    );
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--json"]);
    run.assert_code(4);
    let json = run.json();
    assert_eq!(json["ok"], false);
    let (bad, good) = (table(&json, "a_bad"), table(&json, "b_good"));
    assert_eq!(bad["status"], "failed", "{json}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("NaN"), "{json}");
    assert_eq!(bad["error"]["target"], "barge created `a_bad` and dropped it again: rerun once fixed", "{json}");
    assert_eq!(my.sql("SHOW TABLES LIKE 'a_bad'"), Vec::<Vec<String>>::new(), "the failed table is gone");
    assert_eq!((good["status"].as_str(), good["verified"].as_bool()), (Some("copied"), Some(true)), "{json}");
    assert_eq!(my.sql("SELECT count(*) FROM b_good"), vec![vec!["100".to_string()]]);
    assert!(run.stderr.contains("table `a_bad` failed"), "{}", run.stderr);
    // --fail-fast stops at the first failure, as before.
    let (pg2, my2) = (PgDb::new("isolate_ff"), MyDb::new("isolate_ff"));
    pg2.sql("CREATE TABLE a_bad (id int PRIMARY KEY, x real); INSERT INTO a_bad VALUES (1, 'NaN'); CREATE TABLE b_good (id int PRIMARY KEY);");
    let run = barge(&["copy", "--from", &pg2.url(), "--to", &my2.url(), "--fail-fast"]);
    run.assert_code(1);
    assert!(run.stderr.contains("NaN"), "{}", run.stderr);
}

/// A table with a column type barge cannot map is set aside while planning: the others copy
/// and verify, a foreign key into it is listed instead of failing the run, exit 4.
#[test]
fn a_table_with_an_unmapped_type_is_set_aside_and_the_others_are_copied() {
    let (my, pg) = (MyDb::new("aside"), PgDb::new("aside"));
    my.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v int); INSERT INTO a VALUES (1, 1), (2, 2);
         CREATE TABLE bad (id int PRIMARY KEY, addr inet6, a_id int, FOREIGN KEY (a_id) REFERENCES a (id));
         INSERT INTO bad VALUES (1, '::1', 1);
         CREATE TABLE c (id int PRIMARY KEY, bad_id int, a_id int, FOREIGN KEY (bad_id) REFERENCES bad (id),
                         FOREIGN KEY (a_id) REFERENCES a (id));
         INSERT INTO c VALUES (1, 1, 2);",
    );
    let run = barge(&["copy", "--from", &my.url(), "--to", &pg.url(), "--json"]);
    run.assert_code(4);
    let json = run.json();
    let bad = table(&json, "bad");
    assert_eq!(bad["status"], "failed", "{json}");
    assert_eq!(bad["error"]["column"], "addr");
    assert!(bad["error"]["message"].as_str().unwrap().contains("type `inet6`"), "{json}");
    assert_eq!(bad["error"]["target"], "nothing was written to `bad`");
    for name in ["a", "c"] {
        assert_eq!(table(&json, name)["verified"], true, "{json}");
    }
    let lost: Vec<&str> =
        json["not_migrated"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(lost, ["c(bad_id) → bad(id)"], "{json}");
    let tables = pg.sql("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace");
    assert_eq!(tables[0][0].as_deref(), Some("a,c"));
    let keys = pg.sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'");
    assert_eq!(keys[0][0].as_deref(), Some("1"), "c's key into a is added");
    // --fail-fast, or a single table asked for: the old stop, before anything is written (exit 2).
    let pg2 = PgDb::new("aside_ff");
    for extra in [["--fail-fast"], ["--table=bad"]] {
        let run = barge(&["copy", "--from", &my.url(), "--to", &pg2.url(), extra[0]]);
        run.assert_code(2);
        assert!(run.stderr.contains("table `bad`, column `addr`, type `inet6`"), "{}", run.stderr);
    }
    let tables = pg2.sql("SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace");
    assert_eq!(tables[0][0].as_deref(), Some("0"));
    // The fix the message names: leave the table out, by name or pattern; verify agrees.
    let run = barge(&["copy", "--from", &my.url(), "--to", &pg2.url(), "--exclude", "b?d", "--json"]);
    run.assert_code(0);
    let json = run.json();
    let copied: Vec<&str> = json["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert_eq!(copied, ["a", "c"]);
    barge(&["verify", "--from", &my.url(), "--to", &pg2.url(), "--exclude", "bad"]).assert_code(0);
    let run = barge(&["copy", "--from", &my.url(), "--to", &pg2.url(), "--exclude", "*", "--if-exists", "truncate"]);
    run.assert_code(2);
    assert!(run.stderr.contains("leaves none of the source's 3 table(s)"), "{}", run.stderr);
}

#[test]
fn a_run_with_a_failed_table_resumes_after_the_fix() {
    let (pg, my, dir) = (PgDb::new("isolate_resume"), MyDb::new("isolate_resume"), Dir::new());
    pg.sql(
        "CREATE TABLE a_bad (id int PRIMARY KEY, x real); INSERT INTO a_bad VALUES (1, 1.5), (2, 'NaN');
         CREATE TABLE b_good (id int PRIMARY KEY); INSERT INTO b_good SELECT generate_series(1, 50);",
    );
    let state = dir.path("run.state.db").display().to_string();
    let (from, to) = (pg.url(), my.url());
    let args = ["copy", "--from", &from, "--to", &to, "--state", &state, "--json"];
    barge(&args).assert_code(4);
    // Fixed at the source, the run is not finished in the ledger: --resume completes it.
    pg.sql("UPDATE a_bad SET x = 0 WHERE id = 2");
    let mut resume = args.to_vec();
    resume.push("--resume");
    let run = barge(&resume);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(table(&json, "a_bad")["verified"], true, "{json}");
    assert_eq!(my.sql("SELECT count(*), sum(x) FROM a_bad"), vec![vec!["2".to_string(), "1.5".to_string()]]);
    assert_eq!(my.sql("SELECT count(*) FROM b_good"), vec![vec!["50".to_string()]]);
}

#[test]
fn huge_values_copy_from_postgres_into_mariadb_exactly() {
    let (pg, my) = (PgDb::new("huge2my"), MyDb::new("huge2my"));
    pg.sql(crate::postgres::HUGE_VALUES);
    let run = barge(&["copy", "--from", &pg.url(), "--to", &my.url(), "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "huge")["verified"], true);
    // The same md5s, by each database's own function.
    let expected: Vec<Vec<String>> =
        pg.sql(crate::postgres::HUGE_ROWS).into_iter().map(|r| r.into_iter().map(Option::unwrap).collect()).collect();
    let got = my.sql("SELECT id, coalesce(md5(t), 'null'), md5(b) FROM huge ORDER BY id");
    assert_eq!(got, expected);
}

/// NaN and infinities into MySQL, NUL in text into PostgreSQL: `error` names the row and the fix,
/// `null` writes NULL and says how many, `reject` writes the rows to the reject file by key.
#[test]
fn values_a_target_cannot_store_follow_the_chosen_policy() {
    let pg = PgDb::new("unrepresentable");
    pg.sql(
        "CREATE TABLE f (id int PRIMARY KEY, r real, d double precision NOT NULL);
         INSERT INTO f VALUES (1, 'NaN', 1), (2, 2.5, '-Infinity'), (3, 3, 3), (4, 'Infinity', 4);",
    );
    let dir = crate::support::Dir::new();
    let rejects = dir.path("rejects").display().to_string();
    let copy = |policy: &str, extra: &[&str]| {
        let my = MyDb::new("unrepresentable");
        let (from, url) = (pg.url(), my.url());
        let mut args = vec!["copy", "--from", &from, "--to", &url, "--json", "--unrepresentable", policy];
        args.extend_from_slice(extra);
        (barge(&args), my)
    };
    // error (the default): the table stops at the first such value, naming column, key and fix.
    let (run, _my) = copy("error", &[]);
    run.assert_code(1);
    let message = run.json()["tables"][0]["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("column `r` at key 1: MySQL cannot store NaN"), "{}", run.stdout);
    assert!(message.contains("--unrepresentable null|reject"), "{message}");
    // null: a NOT NULL column cannot take it, and says to reject instead.
    let (run, _my) = copy("null", &[]);
    run.assert_code(1);
    assert!(run.stdout.contains("column `d` at key 2: MySQL cannot store -Infinity, and the column is NOT NULL"));
    // reject without a budget is a usage error before anything is written.
    let (run, my) = copy("reject", &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("--unrepresentable reject needs --error-budget"), "{}", run.stderr);
    assert_eq!(my.sql("SHOW TABLES"), Vec::<Vec<String>>::new());
    // reject: the rows go to the reject file with their key and reason; the rest is exact.
    let (run, my) = copy("reject", &["--error-budget", "10", "--rejects", &rejects]);
    run.assert_code(0);
    let f = table(&run.json(), "f").clone();
    assert_eq!((f["rows_written"].as_u64(), f["rows_rejected"].as_u64()), (Some(1), Some(3)), "{f}");
    assert_eq!(f["verified"], true, "{f}");
    assert_eq!(my.sql("SELECT id, r, d FROM f"), vec![vec!["3".to_string(), "3".into(), "3".into()]]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path("rejects/f.rejects.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (l["key"]["id"].to_string(), l["column"].as_str().unwrap().into(), l["reason"].as_str().unwrap().into())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("1".into(), "r".into(), "MySQL cannot store NaN".into()),
            ("2".into(), "d".into(), "MySQL cannot store -Infinity".into()),
            ("4".into(), "r".into(), "MySQL cannot store +Infinity".into()),
        ]
    );
    // null on a nullable column: NULL written, counted in the table's notices.
    pg.sql("UPDATE f SET d = 0 WHERE id = 2");
    let (run, my) = copy("null", &[]);
    run.assert_code(0);
    let f = table(&run.json(), "f").clone();
    assert!(f["notices"].to_string().contains("column `r`: 2 value(s) MySQL cannot store written as NULL"), "{f}");
    assert_eq!(my.sql("SELECT count(*) FROM f WHERE r IS NULL"), vec![vec!["2".to_string()]]);

    // MariaDB text holding NUL into PostgreSQL, and a pipeline's plan that finds it first.
    let source = MyDb::new("nul_text");
    source.sql("CREATE TABLE t (id int PRIMARY KEY, s varchar(10)); INSERT INTO t VALUES (1, CONCAT('a', CHAR(0), 'b')), (2, 'ok');");
    let target = PgDb::new("nul_text");
    let run = barge(&["copy", "--from", &source.url(), "--to", &target.url(), "--unrepresentable", "null"]);
    run.assert_code(0);
    assert_eq!(target.sql("SELECT id FROM t WHERE s IS NULL"), vec![vec![Some("1".to_string())]]);
    let file = dir.path("nul.toml");
    let text = |policy: &str| {
        format!(
            "source = \"{}\"\ntarget = \"{}\"\n[defaults]\nif_exists = \"truncate\"\nunrepresentable = \"{policy}\"\n",
            source.url(),
            target.url()
        )
    };
    std::fs::write(&file, text("error")).unwrap();
    let plan = barge(&["plan", &file.display().to_string(), "--json"]);
    plan.assert_code(2);
    let risks = plan.json()["tables"][0]["risks"].to_string();
    assert!(risks.contains("unrepresentable") && risks.contains("PostgreSQL text cannot hold the NUL"), "{risks}");
    barge(&["run", &file.display().to_string()]).assert_code(2);
    std::fs::write(&file, text("null")).unwrap();
    barge(&["plan", &file.display().to_string()]).assert_code(0);
    std::fs::write(&file, text("reject")).unwrap();
    let run = barge(&["plan", &file.display().to_string()]);
    run.assert_code(2);
    assert!(run.stderr.contains("unrepresentable = \"reject\" needs an error_budget"), "{}", run.stderr);
}

/// A CREATE TABLE the target refuses (MariaDB's 64-character names) fails that table alone.
#[test]
fn a_table_whose_create_the_target_refuses_fails_alone() {
    let dir = crate::support::Dir::new();
    let long = "x".repeat(70);
    dir.sql(
        "s.db",
        &format!(
            "CREATE TABLE good (id INTEGER PRIMARY KEY); INSERT INTO good VALUES (1), (2);
             CREATE TABLE {long} (id INTEGER PRIMARY KEY); INSERT INTO {long} VALUES (1);"
        ),
    );
    let my = MyDb::new("refused_ddl");
    let run = barge(&["copy", "--from", &dir.url("s.db"), "--to", &my.url(), "--json"]);
    run.assert_code(4);
    let json = run.json();
    let (good, bad) = (table(&json, "good"), table(&json, &long));
    assert_eq!((good["status"].as_str(), good["verified"].as_bool()), (Some("copied"), Some(true)), "{json}");
    assert_eq!(bad["status"], "failed", "{json}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("Incorrect table name"), "{json}");
    assert_eq!(bad["error"]["target"], format!("nothing was written to `{long}`"), "{json}");
    assert_eq!(my.sql("SELECT count(*) FROM good"), vec![vec!["2".to_string()]]);
    // --fail-fast: the refused statement stops the run.
    let my = MyDb::new("refused_ddl_ff");
    barge(&["copy", "--from", &dir.url("s.db"), "--to", &my.url(), "--fail-fast"]).assert_code(1);
}

/// A foreign key the target refuses (the source holds a child row without its parent, as MySQL
/// allows with FOREIGN_KEY_CHECKS=0) fails its table, whose rows stay copied; exit 4.
#[test]
fn a_foreign_key_the_target_refuses_fails_its_table_not_the_run() {
    let my = MyDb::new("refused_fk");
    my.sql(
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int, CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id));
         INSERT INTO parent VALUES (1);
         SET FOREIGN_KEY_CHECKS = 0; INSERT INTO child VALUES (10, 1), (11, 99); SET FOREIGN_KEY_CHECKS = 1;",
    );
    let pg = PgDb::new("refused_fk");
    let run = barge(&["copy", "--from", &my.url(), "--to", &pg.url(), "--json"]);
    run.assert_code(4);
    let json = run.json();
    let (parent, child) = (table(&json, "parent"), table(&json, "child"));
    assert_eq!(parent["status"], "copied", "{json}");
    assert_eq!((child["status"].as_str(), child["verified"].as_bool()), (Some("failed"), Some(true)), "{json}");
    let message = child["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("adding its foreign keys") && message.contains("child_parent"), "{json}");
    assert!(child["error"]["target"].as_str().unwrap().contains("holds its rows as copied and verified"), "{json}");
    assert_eq!(pg.sql("SELECT count(*) FROM child")[0][0].as_deref(), Some("2"));
    // SQLite too: its statement gets the key only when every row has its parent.
    let dir = Dir::new();
    let run = barge(&["copy", "--from", &my.url(), "--to", &dir.url("fk.db"), "--json"]);
    run.assert_code(4);
    let json = run.json();
    let child = table(&json, "child");
    assert_eq!((child["status"].as_str(), child["verified"].as_bool()), (Some("failed"), Some(true)), "{json}");
    let message = child["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 row(s) reference no row of `parent` (child_parent)"), "{message}");
    let conn = dir.conn("fk.db");
    let keys: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_list('child')", [], |r| r.get(0)).unwrap();
    assert_eq!(keys, 0, "the statement went back");
    let rows: i64 = conn.query_row("SELECT count(*) FROM child", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 2);
}

/// A MySQL FLOAT keeps every digit of its f32 (the text protocol prints only 6 of them), both
/// ways, checked by the databases' own comparisons.
#[test]
fn mysql_float_columns_keep_every_digit_both_ways() {
    let (my, pg, back) = (MyDb::new("float_my"), PgDb::new("float_pg"), MyDb::new("float_back"));
    my.sql(
        "CREATE TABLE f (id int PRIMARY KEY, c float);
         INSERT INTO f VALUES (1, 0.12345678), (2, 1.17549435e-38), (3, 3.4028234e38), (4, -98765.4321);",
    );
    barge(&["copy", "--from", &my.url(), "--to", &pg.url()]).assert_code(0);
    let exact = pg.sql(
        "SELECT count(*) FROM f WHERE c IN (0.12345678::real, 1.17549435e-38::real, 3.4028234e38::real, -98765.4321::real)",
    );
    assert_eq!(exact[0][0].as_deref(), Some("4"));
    barge(&["copy", "--from", &pg.url(), "--to", &back.url()]).assert_code(0);
    let same = back.sql(&format!(
        "SELECT count(*) FROM f b JOIN {}.f s ON s.id = b.id AND CAST(s.c AS DOUBLE) = CAST(b.c AS DOUBLE)",
        my.name
    ));
    assert_eq!(same[0][0], "4");
}
