//! Bad input: a one-line error, exit code 2, nothing written, no password printed.

use crate::support::*;

fn source(dir: &Dir) {
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
}

#[track_caller]
fn assert_usage_error(run: &Run, needle: &str) {
    run.assert_code(2);
    assert!(run.stderr.contains(needle), "stderr lacks {needle:?}: {}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {}", run.stderr);
}

#[test]
fn unknown_table_writes_nothing() {
    let dir = Dir::new();
    source(&dir);
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to, "--table", "nope"]);
    assert_usage_error(&run, "table `nope` not found");
    assert!(!exists(&dir.path("t.db")), "no target file for a bad source");
}

#[test]
fn missing_source_file_writes_nothing() {
    let dir = Dir::new();
    let (from, to) = (dir.url("missing.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to]);
    assert_usage_error(&run, "source database not found");
    assert!(!exists(&dir.path("t.db")));
    assert!(!exists(&dir.path("missing.db")), "opening a source never creates it");
}

#[test]
fn malformed_and_unknown_urls_are_usage_errors_without_passwords() {
    let dir = Dir::new();
    source(&dir);
    let from = dir.url("s.db");
    assert_usage_error(&barge(&["copy", "--from", "not a url", "--to", &from]), "invalid URL");
    assert_usage_error(&barge(&["copy", "--from", &from, "--to", "sqlite://"]), "no database file");
    let run = barge(&["copy", "--from", &from, "--to", "oracle://scott:tiger@db/prod"]);
    assert_usage_error(&run, "unsupported URL scheme `oracle`");
    let run = barge(&["copy", "--from", "scott:tiger@db/prod", "--to", &from]);
    assert_usage_error(&run, "scott:***@db/prod");
    assert!(!run.stderr.contains("tiger") && !run.stdout.contains("tiger"), "{}", run.stderr);
}

#[test]
fn a_target_table_holding_rows_stops_before_writing() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY); INSERT INTO a VALUES (1); INSERT INTO b VALUES (2);");
    dir.sql("t.db", "CREATE TABLE b (id INTEGER PRIMARY KEY); INSERT INTO b VALUES (99);");
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to]);
    assert_usage_error(&run, "target table `b` already holds 1 rows");
    // Table `a` comes first alphabetically; it must not have been created either.
    let tables: i64 = dir
        .conn("t.db")
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn copying_a_database_onto_itself_is_refused() {
    let dir = Dir::new();
    source(&dir);
    let from = dir.url("s.db");
    let same = format!("sqlite://{}/./s.db", dir.path("").display());
    assert_usage_error(&barge(&["copy", "--from", &from, "--to", &same, "--if-exists", "truncate"]), "same database");
    assert_eq!(dir.count("s.db", "t"), 1);
}

/// The same database through another spelling of its URL: asked who it is, and refused.
#[test]
fn a_database_reached_through_another_url_is_not_copied_onto_itself() {
    // SQLite: a symlink to the source file.
    let dir = Dir::new();
    source(&dir);
    std::os::unix::fs::symlink(dir.path("s.db"), dir.path("link.db")).unwrap();
    let (from, to) = (dir.url("s.db"), dir.url("link.db"));
    assert_usage_error(&barge(&["copy", "--from", &from, "--to", &to, "--if-exists", "truncate"]), "same database");
    assert_eq!(dir.count("s.db", "t"), 1);
    // PostgreSQL: localhost for 127.0.0.1, and another parameter.
    let pg = PgDb::new("itself");
    pg.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);");
    let from = pg.url();
    for (to, said) in [
        // (asked: the URLs name different hosts)
        (from.replace("127.0.0.1", "localhost"), "source and target are the same database (PostgreSQL system"),
        (format!("{from}&schema=public"), "source and target are the same database"),
    ] {
        let run = barge(&["copy", "--from", &from, "--to", &to, "--if-exists", "truncate"]);
        assert_usage_error(&run, said);
        assert_eq!(pg.sql("SELECT count(*) FROM t")[0][0].as_deref(), Some("10"), "the source is intact");
    }
    // Another schema of the same database is another place: allowed.
    pg.sql("CREATE SCHEMA other");
    barge(&["copy", "--from", &from, "--to", &format!("{from}&schema=other"), "--json"]).assert_code(0);
    // MariaDB: localhost for 127.0.0.1.
    let my = MyDb::new("itself");
    my.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);");
    let from = my.url();
    let to = from.replace("127.0.0.1", "localhost");
    assert_usage_error(&barge(&["copy", "--from", &from, "--to", &to, "--if-exists", "truncate"]), "same database");
    assert_eq!(my.sql("SELECT count(*) FROM t"), vec![vec!["2".to_string()]]);
}

#[test]
fn a_missing_target_column_is_named() {
    let dir = Dir::new();
    source(&dir);
    dir.sql("t.db", "CREATE TABLE t (id INTEGER PRIMARY KEY);");
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    assert_usage_error(&barge(&["copy", "--from", &from, "--to", &to]), "column `v` not found in target table `t`");
}

#[test]
fn zero_workers_is_a_usage_error() {
    let dir = Dir::new();
    source(&dir);
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    assert_usage_error(&barge(&["copy", "--from", &from, "--to", &to, "--workers", "0"]), "at least 1");
    barge(&["copy", "--from", &from, "--to", &to, "--if-exists", "maybe"]).assert_code(2);
}

#[test]
fn verify_against_a_missing_target_says_target() {
    let dir = Dir::new();
    source(&dir);
    let (from, to) = (dir.url("s.db"), dir.url("nothing.db"));
    assert_usage_error(&barge(&["verify", "--from", &from, "--to", &to]), "target database not found");
}

#[test]
fn a_value_that_breaks_its_declared_type_names_table_column_and_key() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO t VALUES (1, 5), (2, 'five');");
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to]);
    run.assert_code(1);
    assert!(run.stderr.contains("table `t`, column `n` at key 2: expected an integer, found text"), "{}", run.stderr);
}

#[test]
fn a_ledger_in_an_engine_that_keeps_none_is_refused_before_anything_is_written() {
    let dir = Dir::new();
    source(&dir);
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to, "--state", "mysql://root@127.0.0.1:3306/x"]);
    assert_usage_error(&run, "mysql cannot keep a run ledger (--state)");
    assert!(!exists(&dir.path("t.db")), "nothing written");
    // A sqlite:// URL is a ledger file like a plain path.
    let ledger = dir.url("run.state.db");
    barge(&["copy", "--from", &from, "--to", &to, "--state", &ledger, "--json"]).assert_code(0);
    assert!(exists(&dir.path("run.state.db")));
}

#[test]
fn a_failure_with_json_still_prints_one_json_object() {
    let dir = Dir::new();
    source(&dir);
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let run = barge(&["copy", "--from", &from, "--to", &to, "--table", "nope", "--json"]);
    run.assert_code(2);
    let json = run.json();
    assert_eq!(json["ok"], false, "{json}");
    assert_eq!(json["exit_code"], 2, "{json}");
    assert_eq!(json["error"]["kind"], "unknown_table", "{json}");
    assert_eq!(json["error"]["table"], "nope", "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("table `nope` not found"), "{json}");
    // A runtime failure too (exit 1): the target cannot be reached.
    let run = barge(&["copy", "--from", &from, "--to", "postgres://u:secret@127.0.0.1:1/db?sslmode=disable", "--json"]);
    run.assert_code(1);
    let json = run.json();
    assert_eq!((json["ok"].as_bool(), json["exit_code"].as_u64()), (Some(false), Some(1)), "{json}");
    assert_eq!(json["error"]["kind"], "connect", "{json}");
    assert!(!run.stdout.contains("secret") && !run.stderr.contains("secret"), "no password: {}", run.stdout);
}

#[test]
fn passwords_written_unencoded_never_print() {
    let dir = Dir::new();
    source(&dir);
    let to = dir.url("t.db");
    for url in [
        "postgres://postgres:se#cr/et?x@127.0.0.1:1/db",
        "mysql://root:p@ss#w/rd@127.0.0.1:1/db",
        "postgres://u:a:b%c?d#e@f@127.0.0.1:1/db",
        "postgres://u:pässwörd☃@127.0.0.1:1/db",
        "mysql://root:密码/x@127.0.0.1:1/db",
    ] {
        let secret = &url[url.find("//").unwrap() + 2..url.rfind('@').unwrap()];
        let secret = &secret[secret.find(':').unwrap() + 1..];
        let pipeline = dir.path("p.toml");
        std::fs::write(&pipeline, format!("source = \"{url}\"\ntarget = \"{to}\"\n")).unwrap();
        let pipeline = pipeline.display().to_string();
        for args in [
            vec!["copy", "--from", url, "--to", &to, "--json"],
            vec!["verify", "--from", url, "--to", &to],
            vec!["tables", url, "--json"],
            vec!["plan", &pipeline, "--json"],
            vec!["-vv", "run", &pipeline, "--json"],
        ] {
            let run = barge(&args);
            assert_ne!(run.code, 0);
            for shown in [&run.stdout, &run.stderr] {
                assert!(!shown.contains(secret), "{url}: {shown}");
            }
        }
    }
}

#[test]
fn a_source_with_no_tables_is_an_error_naming_where_tables_are() {
    let dir = Dir::new();
    let to = dir.url("t.db");
    // A mistyped schema.
    let pg = PgDb::new("no_tables");
    pg.sql("CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA sales; CREATE TABLE sales.o (id int PRIMARY KEY);");
    let typo = format!("{}&schema=pubic", pg.url());
    let run = barge(&["copy", "--from", &typo, "--to", &to, "--json"]);
    run.assert_code(2);
    assert!(run.stderr.contains("has no tables, so there is nothing to copy"), "{}", run.stderr);
    assert!(run.stderr.contains("these have tables: schema public, schema sales"), "{}", run.stderr);
    assert_eq!(run.json()["ok"], false);
    assert!(!exists(&dir.path("t.db")), "nothing written");
    // An empty MariaDB database, and verify alike.
    let my = MyDb::new("no_tables");
    assert_usage_error(&barge(&["copy", "--from", &my.url(), "--to", &to]), "has no tables");
    dir.sql("t.db", "CREATE TABLE x (id INTEGER PRIMARY KEY);");
    assert_usage_error(&barge(&["verify", "--from", &my.url(), "--to", &to]), "has no tables");
}

#[test]
fn a_view_named_as_a_table_is_called_a_view_on_every_engine() {
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE VIEW tv AS SELECT id FROM t;");
    let pg = PgDb::new("a_view");
    pg.sql("CREATE TABLE t (id int PRIMARY KEY); CREATE VIEW tv AS SELECT id FROM t; CREATE MATERIALIZED VIEW tm AS SELECT id FROM t; CREATE SEQUENCE ts;");
    let my = MyDb::new("a_view");
    my.sql("CREATE TABLE t (id int PRIMARY KEY); CREATE VIEW tv AS SELECT id FROM t;");
    let to = dir.url("t.db");
    let cases = [
        (dir.url("s.db"), "tv", "`tv` in"),
        (pg.url(), "tv", "is a view, not a table"),
        (pg.url(), "tm", "is a materialized view, not a table"),
        (pg.url(), "ts", "is a sequence, not a table"),
        (my.url(), "tv", "is a view, not a table"),
    ];
    for (from, name, needle) in cases {
        let run = barge(&["copy", "--from", &from, "--to", &to, "--table", name]);
        assert_usage_error(&run, needle);
        assert!(run.stderr.contains("is a view") || name != "tv", "{}", run.stderr);
        let run = barge(&["copy", "--from", &from, "--to", &to, "--table", name, "--json"]);
        assert_eq!(run.json()["error"]["kind"], "not_a_table", "{}", run.stdout);
        assert!(!exists(&dir.path("t.db")), "nothing written for {from} {name}");
    }
}

/// The files a SQLite ledger at `path` may leave.
fn ledger_files(path: &std::path::Path) -> Vec<String> {
    ["", "-wal", "-shm", "-journal", ".copy.lock", ".lock"]
        .iter()
        .map(|tail| format!("{}{tail}", path.display()))
        .filter(|f| exists(std::path::Path::new(f)))
        .collect()
}

#[test]
fn a_run_refused_before_writing_leaves_no_state_file_and_a_target_with_rows_hints_at_resume() {
    let dir = Dir::new();
    source(&dir);
    let (from, to) = (dir.url("s.db"), dir.url("t.db"));
    let state = dir.path("copy.state.db");
    let state_arg = state.display().to_string();
    // Refused before anything was written: a missing table, a bad --where-like input.
    let run = barge(&["copy", "--from", &from, "--to", &to, "--table", "nope", "--state", &state_arg]);
    assert_usage_error(&run, "table `nope` not found");
    assert_eq!(ledger_files(&state), Vec::<String>::new(), "no state file behind a refused copy");
    // A pipeline run refused the same way leaves no NAME.state.db beside the pipeline.
    let file = dir.path("nightly.toml");
    std::fs::write(&file, format!("source = \"{from}\"\ntarget = \"{to}\"\n[[tables]]\nsource = \"nope\"\n")).unwrap();
    barge(&["run", &file.display().to_string()]).assert_code(2);
    assert_eq!(ledger_files(&dir.path("nightly.state.db")), Vec::<String>::new());
    assert!(!exists(&dir.path("t.db")), "nothing written");

    // A finished copy keeps its ledger; a refused second copy leaves that ledger as it was.
    barge(&["copy", "--from", &from, "--to", &to, "--state", &state_arg]).assert_code(0);
    assert!(exists(&state), "the ledger of a run that wrote stays");
    let run = barge(&["copy", "--from", &from, "--to", &to, "--state", &state_arg]);
    assert_usage_error(&run, "target table `t` already holds 1 rows; nothing was written (use --if-exists");
    assert!(!run.stderr.contains("--resume"), "a finished run is not one to resume: {}", run.stderr);
    assert!(exists(&state), "an earlier ledger is never removed");

    // The ledger as an interrupted run leaves it: the hint names --resume, which finishes it.
    let ledger = rusqlite::Connection::open(&state).unwrap();
    ledger.execute_batch("UPDATE barge_runs SET finished_at = NULL; DELETE FROM barge_ranges_done;").unwrap();
    drop(ledger);
    let run = barge(&["copy", "--from", &from, "--to", &to, "--state", &state_arg]);
    assert_usage_error(&run, "holds an unfinished run (0 of 1 ranges committed): pass --resume to finish it");
    barge(&["copy", "--from", &from, "--to", &to, "--state", &state_arg, "--resume"]).assert_code(0);

    // A pipeline run says it in the pipeline's words, not with flags `run` does not take.
    std::fs::write(&file, format!("source = \"{from}\"\ntarget = \"{to}\"\n[[tables]]\nsource = \"t\"\n")).unwrap();
    for command in ["run", "plan"] {
        let run = barge(&[command, &file.display().to_string()]);
        assert_usage_error(&run, r#"set `if_exists = "truncate"`"#);
        assert!(!run.stderr.contains("--if-exists"), "{command}: {}", run.stderr);
    }
}

#[test]
fn verbose_logs_the_plan_and_phases_and_very_verbose_each_range_and_engine_detail() {
    let dir = Dir::new();
    dir.sql(
        "s.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000) INSERT INTO t SELECT x, 'v' FROM c;",
    );
    let from = dir.url("s.db");
    let quiet = barge(&["copy", "--from", &from, "--to", &dir.url("q.db")]);
    quiet.assert_code(0);
    assert!(!quiet.stderr.contains("INFO") && !quiet.stderr.contains("DEBUG"), "{}", quiet.stderr);
    let run = barge(&["-v", "copy", "--from", &from, "--to", &dir.url("v.db"), "--partitions", "3"]);
    run.assert_code(0);
    for line in [
        "plan: table `t` → `t` (created): 3 range(s), ~3,000 rows estimated, key (id)",
        "table `t`: 3,000 rows read, 3,000 written, 0 rejected in",
        "table `t`: verified in",
    ] {
        assert!(run.stderr.contains(line), "-v lacks {line:?}: {}", run.stderr);
    }
    assert!(!run.stderr.contains("range 0 committed"), "ranges only with -vv: {}", run.stderr);
    let run = barge(&["-vv", "copy", "--from", &from, "--to", &dir.url("vv.db"), "--partitions", "3"]);
    run.assert_code(0);
    for range in 0..3 {
        assert!(run.stderr.contains(&format!("table `t`: range {range} committed, 1000 rows")), "{}", run.stderr);
    }
    // An engine's error is one line; -v adds the server's own report (code, detail).
    let pg = PgDb::new("verbose");
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (5, 'there already');");
    let run = barge(&["-v", "copy", "--from", &from, "--to", &pg.url(), "--if-exists", "append", "--fail-fast"]);
    run.assert_code(1);
    let error: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{}", run.stderr);
    assert!(error[0].contains("duplicate key value violates unique constraint"), "{}", run.stderr);
    assert!(run.stderr.contains("PostgreSQL ERROR 23505: duplicate key value"), "{}", run.stderr);
    assert!(run.stderr.contains("detail: Key (id)=(5) already exists"), "{}", run.stderr);
}

#[test]
fn schema_qualified_table_names_read_from_that_schema_on_every_engine() {
    let dir = Dir::new();
    let pg = PgDb::new("qualified");
    pg.sql(
        "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int PRIMARY KEY, v text);
         INSERT INTO sales.orders VALUES (1, 'a'), (2, 'b'); CREATE SCHEMA hr; CREATE TABLE hr.people (id int PRIMARY KEY);",
    );
    let to = dir.url("pg.db");
    let run = barge(&["copy", "--from", &pg.url(), "--to", &to, "--table", "sales.orders", "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "orders")["rows_written"], 2, "{}", run.stdout);
    barge(&["verify", "--from", &pg.url(), "--to", &to, "--table", "sales.orders"]).assert_code(0);
    let run = barge(&[
        "copy",
        "--from",
        &pg.url(),
        "--to",
        &dir.url("x.db"),
        "--table",
        "sales.orders",
        "--table",
        "hr.people",
    ]);
    assert_usage_error(&run, "--table names tables of `sales` and of `hr`: one schema per run");
    assert!(!exists(&dir.path("x.db")));

    // MySQL: another database of the same server.
    let (home, other) = (MyDb::new("qualified_home"), MyDb::new("qualified_other"));
    other.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (7);");
    home.sql("CREATE TABLE t (id int PRIMARY KEY);");
    let qualified = format!("{}.t", other.name);
    let run = barge(&["copy", "--from", &home.url(), "--to", &dir.url("my.db"), "--table", &qualified, "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "t")["rows_written"], 1, "{}", run.stdout);

    // SQLite: `main.` is the one schema; a table whose own name holds a dot is found by it.
    dir.sql("s.db", "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1); CREATE TABLE \"a.b\" (id INTEGER PRIMARY KEY);");
    let from = dir.url("s.db");
    barge(&["copy", "--from", &from, "--to", &dir.url("m.db"), "--table", "main.t"]).assert_code(0);
    barge(&["copy", "--from", &from, "--to", &dir.url("d.db"), "--table", "a.b"]).assert_code(0);
    let run = barge(&["copy", "--from", &from, "--to", &dir.url("o.db"), "--table", "temp.t"]);
    assert_usage_error(&run, "a SQLite database has one schema, `main`");
}

/// Every bad input of the issue's list, the same way: exit 2, one `error:` line naming the
/// problem, exactly one JSON object on stdout with `--json`, no password anywhere (stdout, stderr,
/// files left behind) and nothing written.
#[test]
fn every_bad_input_is_exit_2_one_line_one_json_object_no_password_nothing_written() {
    const SECRET: &str = "s3cr#t"; // written percent-encoded below
    let dir = Dir::new();
    let pg = PgDb::new("bad_inputs");
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); CREATE VIEW tv AS SELECT id FROM t;");
    let from = pg.url().replacen("postgres@", "postgres:s3cr%23t@", 1);
    assert!(from.contains("s3cr%23t"), "{from}");
    let fresh = dir.url("fresh.db");
    dir.sql("narrow.db", "CREATE TABLE t (id INTEGER PRIMARY KEY);");
    dir.sql("wide.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, extra TEXT NOT NULL);");
    dir.sql("full.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (9, 'z');");
    let pipeline = dir.path("bad_where.toml");
    std::fs::write(
        &pipeline,
        format!("source = \"{from}\"\ntarget = \"{fresh}\"\n[[tables]]\nsource = \"t\"\nwhere = \"id >>>\"\n"),
    )
    .unwrap();
    let pipeline = pipeline.display().to_string();
    let missing_pg = from.replace(&pg.name, "zz_no_such_database");
    let localhost = from.replace("127.0.0.1", "localhost");
    let typo = format!("{from}&schema=pubic");
    let (narrow, wide, full) = (dir.url("narrow.db"), dir.url("wide.db"), dir.url("full.db"));
    let missing_file = dir.url("missing.db");
    let mysql_state = "mysql://root@127.0.0.1:3306/x".to_string();
    let copy = |to: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["copy".to_string(), "--from".into(), from.clone(), "--to".into(), to.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (copy(&fresh, &["--table", "nope"]), "table `nope` not found"),
        (copy(&fresh, &["--table", "tv"]), "is a view, not a table"),
        (vec!["copy".into(), "--from".into(), typo.clone(), "--to".into(), fresh.clone()], "has no tables"),
        (
            vec!["copy".into(), "--from".into(), missing_pg.clone(), "--to".into(), fresh.clone()],
            "source database not found",
        ),
        (
            vec![
                "copy".into(),
                "--from".into(),
                "mysql://root@127.0.0.1:3306/zz_no_such_db".into(),
                "--to".into(),
                fresh.clone(),
            ],
            "source database not found",
        ),
        (
            vec!["copy".into(), "--from".into(), missing_file.clone(), "--to".into(), fresh.clone()],
            "source database not found",
        ),
        (
            vec![
                "copy".into(),
                "--from".into(),
                from.clone(),
                "--to".into(),
                localhost.clone(),
                "--if-exists".into(),
                "truncate".into(),
            ],
            "same database",
        ),
        (copy(&narrow, &[]), "column `v` not found in target table `t`"),
        (copy(&wide, &[]), "target table `t` has column `extra` NOT NULL without a default"),
        (copy(&full, &[]), "target table `t` already holds 1 rows"),
        (vec!["copy".into(), "--from".into(), "not a url".into(), "--to".into(), fresh.clone()], "invalid URL"),
        (copy("oracle://scott:s3cr%23t@db/prod", &[]), "unsupported URL scheme `oracle`"),
        (copy(&fresh, &["--unrepresentable", "reject"]), "--unrepresentable reject needs --error-budget"),
        (copy(&fresh, &["--error-budget", "lots"]), "--error-budget: `lots` is neither a row count nor a percentage"),
        (copy(&fresh, &["--exclude", "*"]), "leaves none of the source's"),
        (copy(&fresh, &["--workers", "0"]), "must be at least 1"),
        (copy(&fresh, &["--state", &mysql_state]), "cannot keep a run ledger (--state)"),
        (copy(&fresh, &["--state", &missing_pg]), "the ledger's database (--state) not found"),
        (copy(&fresh, &["--no-such-flag"]), "unexpected argument '--no-such-flag'"),
        (
            vec!["verify".into(), "--from".into(), from.clone(), "--to".into(), missing_file.clone()],
            "target database not found",
        ),
        (vec!["run".into(), pipeline.clone()], "id >>>"),
        (vec!["plan".into(), pipeline.clone()], "id >>>"),
    ];
    for (args, needle) in &cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("--json");
        let run = barge(&args);
        let shown = format!("{args:?}\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
        assert_eq!(run.code, 2, "{shown}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains(needle), "first line lacks {needle:?}: {shown}");
        assert_eq!(run.stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{shown}");
        let json: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {shown}"));
        assert_eq!((json["ok"].as_bool(), json["exit_code"].as_u64()), (Some(false), Some(2)), "{shown}");
        assert!(json["error"]["kind"].as_str().is_some_and(|k| !k.is_empty()), "{shown}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| m.contains(needle)), "{shown}");
        for secret in [SECRET, "s3cr%23t"] {
            assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "password shown: {shown}");
        }
        // Nothing written: no new file, the prepared targets as they were, the source intact.
        assert!(!exists(&dir.path("fresh.db")), "{shown}");
        assert_eq!((dir.count("narrow.db", "t"), dir.count("wide.db", "t"), dir.count("full.db", "t")), (0, 0, 1));
        assert_eq!(pg.sql("SELECT count(*) FROM t")[0][0].as_deref(), Some("2"), "{shown}");
        let mut files: Vec<String> = std::fs::read_dir(dir.path(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["bad_where.toml", "full.db", "narrow.db", "wide.db"], "no state or reject files: {shown}");
        for file in &files {
            let bytes = std::fs::read(dir.path(file)).unwrap();
            assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "{file} holds the password");
        }
    }
}
