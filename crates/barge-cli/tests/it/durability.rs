//! Committed means durable: the target server crashes (`pg_ctl stop -m immediate`) at many points
//! of a copy, after the ledger has recorded some ranges as committed; after a restart, `--resume`
//! gives an exact copy every time, checked independently of barge's own verification.

use std::time::{Duration, Instant};

use crate::faults::{finish, spawn_copy};
use crate::private::PrivatePg;
use crate::support::*;

const ROWS: i64 = 200_000;

fn source(dir: &Dir) -> String {
    dir.sql(
        "src.db",
        &format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, s TEXT NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO t SELECT i, i * 7, printf('row %d with some padding text', i) FROM n;"
        ),
    );
    dir.url("src.db")
}

/// Ranges the SQLite ledger at `path` records as committed (0 while it cannot be read).
fn ranges_done(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("SELECT count(*) FROM barge_ranges_done", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// For each kill point: copy with a ledger, crash the target once the ledger records at least that
/// many committed ranges, restart it, resume, and check the target row by row.
fn crash_and_resume(kill_points: &[i64]) {
    let (dir, server) = (Dir::new(), PrivatePg::start());
    let from = source(&dir);
    let to = server.url();
    // What the target must hold, computed from the source independently of barge.
    let expected: String = dir
        .conn("src.db")
        .query_row(
            "SELECT count(*) || '|' || count(DISTINCT id) || '|' || sum(a) || '|' || sum(length(s)) FROM t",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (point, &after) in kill_points.iter().enumerate() {
        server.sql("DROP TABLE IF EXISTS t");
        let ledger = dir.path(&format!("crash{point}.state.db"));
        let ledger_arg = ledger.display().to_string();
        let mut args = vec!["copy", "--from", &from, "--to", &to, "--retries", "0", "--state", &ledger_arg];
        args.extend(["--partitions", "16", "--batch-rows", "1000", "--workers", "2", "--json"]);
        let mut child = spawn_copy(&args);
        let started = Instant::now();
        while ranges_done(&ledger) < after {
            assert!(child.try_wait().unwrap().is_none(), "kill point {after}: the copy ended before the crash");
            assert!(started.elapsed() < Duration::from_secs(120), "kill point {after}: no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        server.crash();
        let crashed = finish(child);
        assert_ne!(crashed.code, 0, "kill point {after}: a copy whose target crashed cannot succeed");
        server.pg_ctl(&["start"]);
        args.push("--resume");
        let run = barge(&args);
        run.assert_code(0);
        let json = run.json();
        assert_eq!(table(&json, "t")["verified"], true, "kill point {after}: {json}");
        let held =
            server.sql("SELECT count(*) || '|' || count(DISTINCT id) || '|' || sum(a) || '|' || sum(length(s)) FROM t");
        assert_eq!(held, expected, "kill point {after}: the target differs from the source after --resume");
        eprintln!("kill point {after}: exact after resume");
    }
}

/// The kill points of one of the two crash tests: `points` of them, or `BARGE_CRASH_POINTS`
/// (`scripts/bench.sh soak` runs 25 each), spread over 1..=15 committed ranges (of 16).
fn kill_points(points: &[i64], offset: i64) -> Vec<i64> {
    match std::env::var("BARGE_CRASH_POINTS").ok().and_then(|n| n.parse::<i64>().ok()) {
        Some(n) => (0..n).map(|i| 1 + (i * 2 + offset) % 15).collect(),
        None => points.to_vec(),
    }
}

#[test]
fn a_target_crash_after_early_commits_loses_nothing_the_ledger_holds() {
    crash_and_resume(&kill_points(&[1, 3, 5, 7, 9], 0));
}

#[test]
fn a_target_crash_after_late_commits_loses_nothing_the_ledger_holds() {
    crash_and_resume(&kill_points(&[2, 4, 8, 11, 14], 1));
}

/// Copies into MariaDB with a ledger, stops once the ledger records `after` ranges (by `stop`),
/// then resumes with `--retries 0` (so a self-inflicted deadlock would fail it) and checks the
/// target independently.
fn stop_and_resume_into_mysql(
    after: i64,
    to: &str,
    stop: &mut dyn FnMut(&mut std::process::Child),
    count: &dyn Fn() -> String,
) {
    let dir = Dir::new();
    let from = source(&dir);
    let expected: String = dir
        .conn("src.db")
        .query_row("SELECT count(*) || '|' || count(DISTINCT id) || '|' || sum(a) FROM t", [], |r| r.get(0))
        .unwrap();
    let ledger = dir.path("my.state.db");
    let ledger_arg = ledger.display().to_string();
    let mut args = vec!["copy", "--from", &from, "--to", to, "--retries", "0", "--state", &ledger_arg];
    args.extend(["--partitions", "16", "--batch-rows", "1000", "--workers", "2", "--json"]);
    let mut child = spawn_copy(&args);
    let started = Instant::now();
    while ranges_done(&ledger) < after {
        assert!(child.try_wait().unwrap().is_none(), "the copy ended before it was stopped");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    stop(&mut child);
    assert_ne!(finish(child).code, 0, "a stopped copy cannot succeed");
    args.push("--resume");
    let run = barge(&args);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(table(&json, "t")["verified"], true, "{json}");
    assert!(table(&json, "t")["ranges_resumed"].as_u64().unwrap() >= after as u64, "{json}");
    assert_eq!(count(), expected, "the target differs from the source after --resume");
}

#[test]
fn a_resume_into_mariadb_clearing_many_ranges_at_once_does_not_deadlock() {
    for after in [2, 6] {
        let db = MyDb::new("deadlock");
        let to = db.url();
        let count = || db.sql("SELECT concat(count(*), '|', count(DISTINCT id), '|', sum(a)) FROM t")[0][0].clone();
        stop_and_resume_into_mysql(after, &to, &mut |child| child.kill().unwrap(), &count);
    }
}

#[test]
fn a_mariadb_target_killed_mid_copy_loses_nothing_the_ledger_holds() {
    let server = crate::private::PrivateMy::start(&[]);
    server.sql("CREATE DATABASE crash CHARACTER SET utf8mb4").unwrap();
    let to = server.url("crash");
    let server = std::cell::RefCell::new(server);
    let count =
        || server.borrow().sql("SELECT concat(count(*), '|', count(DISTINCT id), '|', sum(a)) FROM crash.t").unwrap();
    stop_and_resume_into_mysql(3, &to, &mut |_| server.borrow_mut().crash_and_restart(), &count);
}

/// Starts a copy with `--state ledger`, and once it owns its run, a second identical copy (and a
/// `--resume` of it): both are refused at once (exit 2) naming the owner; the first finishes and
/// the target holds every row once.
fn second_owner_is_refused(ledger: &str, owned: &dyn Fn() -> bool, count: &dyn Fn() -> String, to: &str) {
    let dir = Dir::new();
    let from = faults_source(&dir);
    let mut args = vec!["copy", "--from", &from, "--to", to, "--state", ledger, "--partitions", "16"];
    args.extend(["--batch-rows", "1000", "--json"]);
    let first = spawn_copy(&args);
    let started = Instant::now();
    while !owned() {
        assert!(started.elapsed() < Duration::from_secs(60), "the first copy never took its run");
        std::thread::sleep(Duration::from_millis(2));
    }
    let second = barge(&args);
    second.assert_code(2);
    assert!(second.stderr.contains("is owned by another process (pid "), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "names the owner: {}", second.stderr);
    let mut resume = args.clone();
    resume.push("--resume");
    barge(&resume).assert_code(2);
    let run = finish(first);
    run.assert_code(0);
    assert_eq!(count(), format!("{ROWS}|{ROWS}"), "every row once");
}

fn faults_source(dir: &Dir) -> String {
    source(dir)
}

#[test]
fn a_second_process_on_a_sqlite_ledger_run_is_refused() {
    let (dir, pg) = (Dir::new(), PgDb::new("owner_sqlite"));
    let ledger = dir.path("shared.state.db");
    let owned = || {
        rusqlite::Connection::open(&ledger)
            .and_then(|c| c.query_row("SELECT count(*) FROM barge_owners", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n > 0)
    };
    let count = || pg.rows("SELECT count(*) || '|' || count(DISTINCT id) FROM t")[0][0].clone();
    second_owner_is_refused(&ledger.display().to_string(), &owned, &count, &pg.url());
}

#[test]
fn a_second_process_on_a_postgres_ledger_run_is_refused() {
    let (pg, state) = (PgDb::new("owner_pg"), PgDb::new("owner_pg_state"));
    let owned = || {
        let exists =
            state.rows("SELECT count(*) FROM pg_tables WHERE schemaname = 'barge_state' AND tablename = 'owners'");
        exists[0][0] == "1" && state.rows("SELECT count(*) FROM barge_state.owners")[0][0] != "0"
    };
    let count = || pg.rows("SELECT count(*) || '|' || count(DISTINCT id) FROM t")[0][0].clone();
    second_owner_is_refused(&state.url(), &owned, &count, &pg.url());
}

#[test]
fn a_row_larger_than_max_allowed_packet_is_refused_before_anything_is_written() {
    let dir = Dir::new();
    dir.sql(
        "src.db",
        "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO small VALUES (1, 'a');
         CREATE TABLE big (id INTEGER PRIMARY KEY, payload BLOB);
         INSERT INTO big VALUES (1, zeroblob(10)), (2, randomblob(3000000));",
    );
    let server = crate::private::PrivateMy::start(&["--max-allowed-packet=1M"]);
    server.sql("CREATE DATABASE lim CHARACTER SET utf8mb4").unwrap();
    let (from, to) = (dir.url("src.db"), server.url("lim"));
    let run = barge(&["copy", "--from", &from, "--to", &to]);
    run.assert_code(2);
    assert!(run.stderr.contains("table `big`: its widest row holds 3000000 bytes"), "{}", run.stderr);
    assert!(run.stderr.contains("max_allowed_packet = 1048576"), "{}", run.stderr);
    assert_eq!(server.sql("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'lim'").unwrap(), "0");
    // Raised, the same copy goes through.
    server.sql("SET GLOBAL max_allowed_packet = 16777216").unwrap();
    let run = barge(&["copy", "--from", &from, "--to", &to, "--json"]);
    run.assert_code(0);
    assert_eq!(table(&run.json(), "big")["verified"], true);
    assert_eq!(server.sql("SELECT count(*), max(length(payload)) FROM lim.big").as_deref(), Some("2\t3000000"));
}

#[test]
fn a_mariadb_that_cannot_promise_durable_commits_or_a_snapshot_says_so() {
    let server = crate::private::PrivateMy::start(&["--innodb-flush-log-at-trx-commit=2"]);
    server.sql("CREATE DATABASE d CHARACTER SET utf8mb4; CREATE TABLE d.t (id int PRIMARY KEY); INSERT INTO d.t VALUES (1), (2);").unwrap();
    // As a target: commits may not survive a crash, and the copy warns.
    let dir = Dir::new();
    dir.sql("s.db", "CREATE TABLE s (id INTEGER PRIMARY KEY); INSERT INTO s VALUES (1);");
    let run = barge(&["copy", "--from", &dir.url("s.db"), "--to", &server.url("d")]);
    run.assert_code(0);
    assert!(run.stderr.contains("innodb_flush_log_at_trx_commit = 2"), "{}", run.stderr);
    // As a source read by a user without RELOAD: no consistent snapshot, refused before anything is
    // written, and --no-lock copies without one, saying so.
    server.sql("CREATE USER 'reader'@'%'; GRANT SELECT ON d.* TO 'reader'@'%';").unwrap();
    let from = server.url("d").replace("root@", "reader@");
    let to = dir.url("t.db");
    let run = barge(&["copy", "--from", &from, "--to", &to, "--table", "t"]);
    run.assert_code(2);
    assert!(run.stderr.contains("grant the RELOAD privilege, or pass --no-lock"), "{}", run.stderr);
    assert!(!dir.path("t.db").exists() || dir.count("t.db", "t") == 0, "nothing written");
    let run = barge(&["copy", "--from", &from, "--to", &to, "--table", "t", "--no-lock", "--if-exists", "truncate"]);
    run.assert_code(0);
    assert!(run.stdout.contains("source read without a snapshot"), "{}", run.stdout);
    assert_eq!(dir.count("t.db", "t"), 2);
}
