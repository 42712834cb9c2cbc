//! Transient failures injected into real servers while barge runs: the affected ranges are rolled
//! back and copied again, and the copy still verifies.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A SQLite source big enough that a copy is still loading when a writer is killed.
fn big_source(dir: &Dir) -> String {
    dir.sql(
        "src.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, s TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600000)
         INSERT INTO t SELECT i, i * 7, printf('row %d with some padding text to make it wider', i) FROM n;",
    );
    dir.url("src.db")
}

/// Starts a copy, waits until `find` names a loading connection, kills it with `kill`, and
/// returns the finished run.
fn copy_and_kill(from: &str, to: &str, find: &dyn Fn() -> Option<String>, kill: &dyn Fn(&str)) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["copy", "--from", from, "--to", to, "--json", "--batch-rows", "2000", "--partitions", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(id) = find() {
            kill(&id);
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(killed, "the copy finished before a loading connection was seen: {}", run.stderr);
    run
}

#[test]
fn a_postgres_writer_terminated_mid_range_is_retried() {
    let (dir, pg) = (Dir::new(), PgDb::new("kill"));
    let from = big_source(&dir);
    let find = || {
        let sql = format!(
            "SELECT pid::text FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'COPY%FROM STDIN%'
             AND state = 'active' LIMIT 1",
            pg.name
        );
        pg.sql(&sql).into_iter().next().and_then(|r| r[0].clone())
    };
    let kill = |pid: &str| {
        pg.sql(&format!("SELECT pg_terminate_backend({pid})"));
    };
    let run = copy_and_kill(&from, &pg.url(), &find, &kill);
    run.assert_code(0);
    let json = run.json();
    let t = table(&json, "t");
    assert_eq!(t["verified"], true, "{json}");
    assert_eq!(t["rows_written"], 600000);
    assert!(t["retries"].as_u64().unwrap() >= 1, "{json}\n{}", run.stderr);
    assert!(run.stderr.contains("retry 1 of 3"), "{}", run.stderr);
    assert_eq!(pg.sql("SELECT count(*), count(DISTINCT id) FROM t")[0], [Some("600000".into()), Some("600000".into())]);
}

#[test]
fn a_mysql_writer_killed_mid_range_is_retried() {
    let (dir, my) = (Dir::new(), MyDb::new("kill"));
    let from = big_source(&dir);
    let find = || {
        let sql = format!(
            "SELECT id FROM information_schema.PROCESSLIST WHERE db = '{}' AND info LIKE 'LOAD DATA%' LIMIT 1",
            my.name
        );
        my.sql(&sql).into_iter().next().map(|r| r[0].clone())
    };
    let kill = |id: &str| {
        my.sql(&format!("KILL {id}"));
    };
    let run = copy_and_kill(&from, &my.url(), &find, &kill);
    run.assert_code(0);
    let json = run.json();
    let t = table(&json, "t");
    assert_eq!(t["verified"], true, "{json}");
    assert!(t["retries"].as_u64().unwrap() >= 1, "{json}\n{}", run.stderr);
    assert_eq!(my.sql("SELECT count(*), count(DISTINCT id) FROM t")[0], ["600000", "600000"]);
}
