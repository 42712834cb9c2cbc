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
    }
}

#[test]
fn a_target_crash_after_early_commits_loses_nothing_the_ledger_holds() {
    crash_and_resume(&[1, 3, 5, 7, 9]);
}

#[test]
fn a_target_crash_after_late_commits_loses_nothing_the_ledger_holds() {
    crash_and_resume(&[2, 4, 8, 11, 14]);
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
