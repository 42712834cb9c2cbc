//! A copy is one snapshot: a writer keeps committing on the source while barge copies it. Each
//! of its transactions inserts row `OFFSET + k` and sets row 1's `v` to `k`; row 1 is read with
//! the first range and the inserted rows with the last, so a copy read as one instant holds
//! exactly the inserted rows up to the `k` its row 1 says, whenever that instant was.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

const ROWS: i64 = 200_000;
const OFFSET: i64 = 1_000_000;

fn create(db: &dyn TestDb) {
    db.execute(&match db.engine() {
        "sqlite" => format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO t SELECT i, 0 FROM n"
        ),
        "postgres" => format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO t SELECT i, 0 FROM generate_series(1, {ROWS}) i"
        ),
        _ => format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO t SELECT seq, 0 FROM seq_1_to_{ROWS}"
        ),
    });
}

/// A writer committing transaction after transaction until stopped; counts its commits.
struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicI64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(execute: Box<dyn Fn(&str) + Send>, sqlite: bool) -> Self {
        let (stop, commits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicI64::new(0)));
        let (stop_flag, counter) = (stop.clone(), commits.clone());
        let thread = std::thread::spawn(move || {
            let mut k = 0;
            while !stop_flag.load(Ordering::Relaxed) {
                k += 1;
                let (begin, commit) = if sqlite { ("BEGIN IMMEDIATE", "COMMIT") } else { ("BEGIN", "COMMIT") };
                execute(&format!(
                    "{begin}; INSERT INTO t VALUES ({}, {k}); UPDATE t SET v = {k} WHERE id = 1; {commit};",
                    OFFSET + k
                ));
                counter.store(k, Ordering::Relaxed);
            }
        });
        Writer { stop, commits, thread: Some(thread) }
    }

    fn wait_for(&self, commits: i64) {
        let started = Instant::now();
        while self.commits.load(Ordering::Relaxed) < commits {
            assert!(started.elapsed() < Duration::from_secs(120), "the writer is stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(mut self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.commits.load(Ordering::Relaxed)
    }
}

/// Copies `source` into `target` under a concurrent writer; returns the copy's JSON.
fn copy_under_writes(source: &dyn TestDb, target: &dyn TestDb, extra: &[&str]) -> (serde_json::Value, i64) {
    create(source);
    let writer = Writer::start(source.executor(), source.engine() == "sqlite");
    writer.wait_for(3);
    let before = writer.commits.load(Ordering::Relaxed);
    let (from, to) = (source.url(), target.url());
    let mut args = vec!["copy", "--from", &from, "--to", &to, "--partitions", "16", "--batch-rows", "2000", "--json"];
    args.extend_from_slice(extra);
    let run = barge(&args);
    // Writes after the copy are after its snapshot too: the source moved on while it ran.
    writer.wait_for(writer.commits.load(Ordering::Relaxed) + 3);
    let commits = writer.stop();
    run.assert_code(0);
    assert!(commits > before + 3, "the writer kept writing: {before} → {commits}");
    (run.json(), commits)
}

fn the_copy_is_one_snapshot(source: &dyn TestDb, target: &dyn TestDb) {
    let (json, commits) = copy_under_writes(source, target, &[]);
    assert_eq!(json["snapshot"]["consistent"], true, "{}", json["snapshot"]);
    assert_eq!(table(&json, "t")["verified"], true, "{json}");
    let row1 = &target.rows("SELECT v FROM t WHERE id = 1")[0][0];
    let inserted =
        target.rows(&format!("SELECT count(*), coalesce(max(id), {OFFSET}) - {OFFSET} FROM t WHERE id > {OFFSET}"));
    assert_eq!(&inserted[0][0], row1, "rows inserted up to the snapshot: row 1 says {row1}, got {inserted:?}");
    assert_eq!(&inserted[0][1], row1, "{inserted:?}");
    let k: i64 = row1.parse().unwrap();
    assert!(k < commits, "the snapshot ({k}) is older than the writer's last commit ({commits})");
}

#[test]
fn a_postgres_source_under_writes_is_copied_as_one_snapshot() {
    let (source, target) = (Engine::Postgres.db("snap_src"), Engine::Postgres.db("snap_dst"));
    the_copy_is_one_snapshot(source.as_ref(), target.as_ref());
}

#[test]
fn a_mariadb_source_under_writes_is_copied_as_one_snapshot() {
    let (source, target) = (Engine::Mysql.db("snap_src"), Engine::Postgres.db("snap_dst"));
    the_copy_is_one_snapshot(source.as_ref(), target.as_ref());
}

#[test]
fn a_sqlite_source_under_writes_is_copied_as_one_snapshot() {
    let (source, target) = (Engine::Sqlite.db("snap_src"), Engine::Sqlite.db("snap_dst"));
    the_copy_is_one_snapshot(source.as_ref(), target.as_ref());
}

#[test]
fn without_the_lock_a_mariadb_copy_says_it_is_not_one_snapshot() {
    let (source, target) = (Engine::Mysql.db("nolock_src"), Engine::Postgres.db("nolock_dst"));
    create(source.as_ref());
    let (from, to) = (source.url(), target.url());
    let run = barge(&["copy", "--from", &from, "--to", &to, "--no-lock"]);
    run.assert_code(0);
    assert!(run.stdout.contains("source read without a snapshot"), "{}", run.stdout);
    assert!(run.stdout.contains("not one snapshot"), "{}", run.stdout);
    let json = barge(&["copy", "--from", &from, "--to", &to, "--no-lock", "--if-exists", "truncate", "--json"]).json();
    assert_eq!(json["snapshot"]["consistent"], false, "{json}");
}
