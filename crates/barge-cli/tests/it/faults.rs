//! Transient failures injected into real servers while barge runs: the affected ranges are rolled
//! back and copied again, and the copy still verifies.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::private::PrivatePg;
use crate::support::*;

/// A SQLite source big enough that a copy is still loading when a writer is killed.
pub fn big_source(dir: &Dir) -> String {
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

/// Copies into `pg` and terminates the first backend whose running statement is `LIKE like`.
fn copy_and_terminate(from: &str, pg: &PgDb, like: &str) -> Run {
    let find = || {
        let sql = format!(
            "SELECT pid::text FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '{like}'
             AND state = 'active' LIMIT 1",
            pg.name
        );
        pg.sql(&sql).into_iter().next().and_then(|r| r[0].clone())
    };
    let kill = |pid: &str| {
        pg.sql(&format!("SELECT pg_terminate_backend({pid})"));
    };
    copy_and_kill(from, &pg.url(), &find, &kill)
}

#[test]
fn a_connection_lost_while_the_key_builds_is_retried() {
    let (dir, pg) = (Dir::new(), PgDb::new("kill_key"));
    let from = big_source(&dir);
    let run = copy_and_terminate(&from, &pg, "CREATE UNIQUE INDEX%");
    run.assert_code(0);
    let json = run.json();
    assert_eq!(table(&json, "t")["verified"], true, "{json}");
    assert!(run.stderr.contains("building its key and indexes failed"), "{}", run.stderr);
    let key = "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND indisprimary";
    assert_eq!(pg.sql(key)[0], [Some("1".into())], "the key is there");
    assert_eq!(pg.sql("SELECT count(*), count(DISTINCT id) FROM t")[0], [Some("600000".into()), Some("600000".into())]);
}

#[test]
fn a_postgres_writer_terminated_mid_range_is_retried() {
    let (dir, pg) = (Dir::new(), PgDb::new("kill"));
    let from = big_source(&dir);
    let run = copy_and_terminate(&from, &pg, "COPY%FROM STDIN%");
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

/// `kill -9` at five points of a 1M-row copy (planning, reading, writing, committing), each time
/// followed by `--resume`: the target always ends equal to the source, with no duplicate key.
#[test]
fn a_killed_copy_resumes_to_an_exact_copy() {
    let (dir, pg) = (Dir::new(), PgDb::new("resume"));
    dir.sql(
        "src.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, s TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
         INSERT INTO t SELECT i, i * 7, printf('row %d', i) FROM n;",
    );
    let (from, to) = (dir.url("src.db"), pg.url());
    let args = |state: &str, resume: bool| {
        let mut args = vec!["copy", "--from", &from, "--to", &to, "--state", state, "--partitions", "16"];
        args.extend(["--batch-rows", "4000", "--json"]);
        if resume {
            args.push("--resume");
        }
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    // Five kill points spread over the run by its progress, not by the clock (so a loaded machine
    // moves them along with the run): early (planning, first reads), after a few, about half and
    // most ranges are committed (reading, writing and committing overlap there), and once every
    // range is committed (finishing and verifying). Each is moved by a random amount; the seed is
    // printed so that a failure can be replayed.
    let seed = std::env::var("BARGE_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
    });
    eprintln!("kill points: BARGE_KILL_SEED={seed}");
    let mut rng = seed | 1;
    let mut random = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    enum Point {
        Early(u64),
        Committed(u64),
    }
    let points = [
        Point::Early(50 + random(200)),
        Point::Committed(1 + random(3)),
        Point::Committed(5 + random(4)),
        Point::Committed(10 + random(5)),
        Point::Committed(16),
    ];
    let committed = |state: &str| -> u64 {
        let Ok(conn) = rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
            return 0;
        };
        conn.query_row("SELECT count(*) FROM barge_ranges_done", [], |r| r.get::<_, i64>(0)).map_or(0, |n| n as u64)
    };
    let mut killed_running = 0;
    for (attempt, point) in points.iter().enumerate() {
        // Each attempt starts from nothing: a fresh target table and a fresh ledger.
        pg.sql("DROP TABLE IF EXISTS t");
        let state = dir.path(&format!("state-{attempt}.db")).display().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_barge"))
            .args(args(&state, false))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at_least = match point {
            Point::Early(ms) => {
                std::thread::sleep(Duration::from_millis(*ms));
                0
            }
            Point::Committed(ranges) => {
                let started = Instant::now();
                while committed(&state) < *ranges && started.elapsed() < Duration::from_secs(120) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                *ranges
            }
        };
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap(); // SIGKILL: no cleanup of any kind
        child.wait().unwrap();
        let what = match point {
            Point::Early(ms) => format!("killed after {ms} ms"),
            Point::Committed(n) => format!("killed once {n} ranges were committed"),
        };
        let resumed = args(&state, true);
        let mut run = barge(&resumed.iter().map(String::as_str).collect::<Vec<_>>());
        if run.code == 2 && run.stderr.contains("nothing to resume") {
            // Killed before its ledger started, so before writing anything: a fresh run it is.
            let fresh = args(&state, false);
            run = barge(&fresh.iter().map(String::as_str).collect::<Vec<_>>());
        }
        run.assert_code(0);
        let json = run.json();
        let t = table(&json, "t");
        assert_eq!(t["verified"], true, "{what}: {json}");
        let kept = t["ranges_resumed"].as_u64().unwrap();
        eprintln!("{what}: {kept} of 16 ranges kept");
        assert!(kept >= at_least, "{what}, yet only {kept} ranges were kept");
        assert_eq!(t["rows_written"], 1_000_000, "{what}: {json}");
        assert_eq!(
            pg.sql("SELECT count(*), count(DISTINCT id) FROM t")[0],
            [Some("1000000".into()), Some("1000000".into())],
            "{what}"
        );
    }
    assert!(killed_running >= 4, "only {killed_running} of 5 kills hit a running copy");
}

/// A ledger belongs to one pipeline: another file, or the same file changed, cannot resume it.
#[test]
fn a_ledger_from_another_pipeline_is_refused() {
    let dir = Dir::new();
    dir.sql("src.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    let write = |name: &str, extra: &str| {
        let path = dir.path(name);
        let text = format!("source = \"{}\"\ntarget = \"{}\"\n{extra}", dir.url("src.db"), dir.url("dst.db"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let state = dir.path("shared.state.db").display().to_string();
    let first = write("nightly.toml", "[defaults]\nif_exists = \"truncate\"\n");
    barge(&["run", &first, "--state", &state]).assert_code(0);
    barge(&["run", &first, "--state", &state, "--resume"]).assert_code(0);
    // The same name in another directory, with other content.
    std::fs::create_dir(dir.path("other")).unwrap();
    let other = write("other/nightly.toml", "[defaults]\nif_exists = \"append\"\n");
    let run = barge(&["run", &other, "--state", &state, "--resume"]);
    run.assert_code(2);
    assert!(run.stderr.contains("another pipeline or command"), "{}", run.stderr);
    // The first file, edited.
    write("nightly.toml", "[defaults]\nif_exists = \"truncate\"\nworkers = 1\n");
    let run = barge(&["run", &first, "--state", &state, "--resume"]);
    run.assert_code(2);
    assert!(run.stderr.contains("changed since"), "{}", run.stderr);
    // Nothing recorded under a name.
    let run = barge(&["run", &first, "--state", &dir.path("empty.db").display().to_string(), "--resume"]);
    run.assert_code(2);
    assert!(run.stderr.contains("nothing to resume"), "{}", run.stderr);
    // The default ledger sits beside the pipeline file.
    barge(&["run", &first]).assert_code(0);
    assert!(dir.path("nightly.state.db").exists());
}

/// Incremental runs after inserts, updates and deletes in the source: each run reads only rows at
/// or past the last mark, upserts them, deletes what the source lost, and the target matches.
#[test]
fn incremental_runs_follow_inserts_updates_and_deletes() {
    let (dir, pg) = (Dir::new(), PgDb::new("incr"));
    dir.sql(
        "src.db",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT NOT NULL, updated_at TIMESTAMP NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO orders SELECT i, 'v' || i, printf('2024-01-01 %02d:%02d:%02d', i / 3600, (i / 60) % 60, i % 60) FROM n;",
    );
    let file = dir.path("nightly.toml");
    std::fs::write(
        &file,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\nsource_timezone = \"UTC\"\n[defaults]\nif_exists = \"append\"\npartitions = 4\n\
             [[tables]]\nsource = \"orders\"\nmode = \"incremental\"\nwatermark = \"updated_at\"\nlookback = 60\n",
            dir.url("src.db"),
            pg.url()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", file.as_str(), "--json"];
        args.extend_from_slice(extra);
        let run = barge(&args);
        run.assert_code(0);
        // A run that deletes what the source lost says so, never a mismatch first.
        assert!(!run.stderr.contains("MISMATCH"), "{}", run.stderr);
        let json = run.json();
        let t = table(&json, "orders").clone();
        assert_eq!(t["verified"], true, "{json}");
        t
    };
    let first = run(&[]);
    assert_eq!(first["rows_written"], 5000);
    assert_eq!(first["watermark"], "2024-01-01 01:23:20");
    // Between runs: 10 updates (moved past the mark), 20 inserts, 30 deletes.
    dir.sql(
        "src.db",
        "UPDATE orders SET v = 'changed', updated_at = '2024-01-02 00:00:00' WHERE id <= 10;
         WITH RECURSIVE n(i) AS (SELECT 5001 UNION ALL SELECT i + 1 FROM n WHERE i < 5020)
         INSERT INTO orders SELECT i, 'new', '2024-01-02 00:00:01' FROM n;
         DELETE FROM orders WHERE id BETWEEN 2001 AND 2030;",
    );
    let second = run(&["--detect-deletes"]);
    // The window is the minute up to the old mark, both ends included (61 rows), plus the 30
    // changed or new rows.
    assert_eq!(second["rows_written"], 61 + 10 + 20, "{second}");
    assert_eq!(second["rows_deleted"], 30);
    assert_eq!(second["watermark"], "2024-01-02 00:00:01");
    assert_eq!(pg.sql("SELECT count(*) FROM orders WHERE v = 'changed'")[0][0].as_deref(), Some("10"));
    assert_eq!(
        pg.sql("SELECT count(*), count(DISTINCT id) FROM orders")[0],
        [Some("4990".into()), Some("4990".into())]
    );
    // Nothing changed: only the lookback window (the 30 rows of the last minute) is read again.
    let third = run(&["--detect-deletes"]);
    assert_eq!(third["rows_written"], 30, "{third}");
    assert_eq!(third["rows_deleted"], 0);
    // A row changed without moving its watermark past the mark (a backdated update): the
    // watermark misses it, verification finds it, and it is copied now, said once.
    dir.sql("src.db", "UPDATE orders SET v = 'backdated', updated_at = '2023-06-01 00:00:00' WHERE id = 3000;");
    let fourth = run(&["--detect-deletes"]);
    let notices = fourth["notices"].as_array().cloned().unwrap_or_default();
    assert!(notices.iter().any(|n| n.as_str().unwrap().contains("watermark missed them")), "{fourth}");
    assert_eq!(pg.sql("SELECT v FROM orders WHERE id = 3000")[0][0].as_deref(), Some("backdated"));
    let fifth = run(&["--detect-deletes"]);
    assert!(fifth["notices"].as_array().is_none_or(|n| n.is_empty()), "said once: {fifth}");
    // A delete without --detect-deletes is seen by verification, which says so (exit 3).
    dir.sql("src.db", "DELETE FROM orders WHERE id = 1;");
    let run = barge(&["run", &file, "--json"]);
    run.assert_code(3);
    assert_eq!(table(&run.json(), "orders")["diff"]["extra"], serde_json::json!([[1]]));
}

pub fn spawn_copy(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_barge")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

pub fn finish(child: std::process::Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The target server restarts mid-copy: retries ride it out; without retries the run stops with
/// exit 1 and `--resume` completes it exactly.
#[test]
fn a_target_server_restart_is_ridden_out_or_resumed() {
    let (dir, server) = (Dir::new(), PrivatePg::start());
    let from = big_source(&dir);
    let to = server.url();
    let common = ["--batch-rows", "2000", "--partitions", "8", "--json"];
    // With retries: the copy succeeds.
    let mut args = vec!["copy", "--from", &from, "--to", &to, "--retries", "6"];
    args.extend(common);
    let child = spawn_copy(&args);
    server.restart_during_copy();
    let run = finish(child);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(table(&json, "t")["verified"], true, "{json}");
    assert!(table(&json, "t")["retries"].as_u64().unwrap() >= 1, "{json}");
    assert_eq!(server.sql("SELECT count(*), count(DISTINCT id) FROM t"), "600000|600000");
    // Without retries: exit 1, then --resume.
    server.sql("DROP TABLE t");
    let state = dir.path("state.db").display().to_string();
    let mut args = vec!["copy", "--from", &from, "--to", &to, "--retries", "0", "--state", &state];
    args.extend(common);
    let child = spawn_copy(&args);
    server.restart_during_copy();
    let run = finish(child);
    run.assert_code(1);
    args.push("--resume");
    let run = barge(&args);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(table(&json, "t")["verified"], true, "{json}");
    assert_eq!(server.sql("SELECT count(*), count(DISTINCT id) FROM t"), "600000|600000");
}

/// The ledger can live in PostgreSQL (`--state postgres://…`), where several machines can share it.
#[test]
fn a_ledger_in_postgres_resumes_a_killed_copy() {
    let (dir, pg, state) = (Dir::new(), PgDb::new("pgstate_target"), PgDb::new("pgstate"));
    let from = big_source(&dir);
    let (to, state_url) = (pg.url(), state.url());
    let mut args = vec!["copy", "--from", &from, "--to", &to, "--state", &state_url, "--partitions", "8", "--json"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_barge")).args(&args).stdout(Stdio::null()).spawn().unwrap();
    // Kill once some ranges are recorded as committed.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let done =
            state.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'barge_state' AND tablename = 'ranges_done'");
        if done[0][0].as_deref() == Some("1")
            && state.sql("SELECT count(*) FROM barge_state.ranges_done")[0][0].as_deref() != Some("0")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    args.push("--resume");
    let run = barge(&args);
    run.assert_code(0);
    let json = run.json();
    let t = table(&json, "t");
    assert_eq!(t["verified"], true, "{json}");
    assert!(t["ranges_resumed"].as_u64().unwrap() >= 1, "{json}");
    // Kept ranges were read at the interrupted run's instant: not one snapshot, and it says so.
    assert_eq!(json["snapshot"]["consistent"], false, "{json}");
    assert!(json["snapshot"]["detail"].as_str().unwrap().contains("kept from the interrupted run"), "{json}");
    assert_eq!(pg.sql("SELECT count(*), count(DISTINCT id) FROM t")[0], [Some("600000".into()), Some("600000".into())]);
    let runs = state.sql("SELECT name, finished_at IS NOT NULL FROM barge_state.runs");
    assert_eq!(runs, [[Some("copy".into()), Some("t".into())]]);
}
