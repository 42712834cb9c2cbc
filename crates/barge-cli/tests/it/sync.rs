//! `barge sync`: a bulk copy, then change capture from PostgreSQL (a private server with
//! `wal_level = logical`) into every target engine. Rows are compared with each engine's own
//! client, not with barge's verification.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::private::PrivatePg;
use crate::support::{Dir, MyDb, barge};

const SCHEMA: &str = "
    CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, big text, qty int NOT NULL DEFAULT 0);
    INSERT INTO items SELECT g, 'n' || g, CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 400) END, g
      FROM generate_series(1, 20000) g;
    CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
    INSERT INTO pairs SELECT g % 50, 'k' || (g / 50), g FROM generate_series(1, 2000) g;";

/// Writes of every kind, numbered `round` so that each call changes other rows.
fn writes(round: i32) -> String {
    let base = 100_000 * round;
    format!(
        "BEGIN; UPDATE items SET qty = qty + 1 WHERE id % 13 = {m}; DELETE FROM items WHERE id % 17 = {m};
         INSERT INTO items SELECT {base} + g, 'new' || g, NULL, g FROM generate_series(1, 3000) g; COMMIT;
         UPDATE items SET id = id + 1000000 WHERE id BETWEEN {lo} AND {lo} + 9;
         UPDATE items SET name = name || '+' WHERE id % 10 = 0 AND id < 2000;
         UPDATE items SET big = 'rewritten ' || id WHERE id = {lo} + 20;
         UPDATE pairs SET v = v + 1 WHERE a = {m}; DELETE FROM pairs WHERE a = {m} + 1;
         UPDATE pairs SET b = b || 'x' WHERE a = {m} + 2;",
        m = round % 13,
        lo = 100 + round * 50
    )
}

/// The rows of both tables as text, in key order, as any engine renders these columns.
const ITEMS: &str = "SELECT id, name, coalesce(length(big), -1), qty FROM items ORDER BY id";
const PAIRS: &str = "SELECT a, b, v FROM pairs ORDER BY a, b";

fn pg_rows(server: &PrivatePg, db: &str) -> (String, String) {
    (server.sql_in(db, ITEMS), server.sql_in(db, PAIRS))
}

fn my_rows(db: &MyDb) -> (String, String) {
    let join = |rows: Vec<Vec<String>>| rows.iter().map(|r| r.join("|")).collect::<Vec<_>>().join("\n");
    (join(db.sql(&ITEMS.replace("length(big)", "char_length(big)"))), join(db.sql(PAIRS)))
}

fn lite_rows(dir: &Dir, name: &str) -> (String, String) {
    let conn = dir.conn(name);
    (lite_lines(&conn, ITEMS).join("\n"), lite_lines(&conn, PAIRS).join("\n"))
}

/// The rows `sql` returns from a SQLite database, each as its values joined by `|`.
fn lite_lines(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

fn sync_caught_up(from: &str, to: &str, state: &str) -> serde_json::Value {
    let run = barge(&["sync", "--from", from, "--to", to, "--state", state, "--until", "caught-up", "--json"]);
    run.assert_code(0);
    let last = run.stdout.lines().last().expect("a final status");
    let status: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(status["caught_up"], true, "{}", run.stdout);
    status
}

/// Writes running on the source while `during` runs, in a thread of their own.
fn writing_during<T>(server: &PrivatePg, rounds: std::ops::Range<i32>, during: impl FnOnce() -> T) -> T {
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for round in rounds {
                server.sql_in("src", &writes(round));
            }
        });
        let out = during();
        writer.join().unwrap();
        out
    })
}

/// A private server with logical decoding, its database `src` holding [`SCHEMA`], and `dst`.
fn logical_source() -> PrivatePg {
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql("CREATE DATABASE dst");
    server.sql_in("src", SCHEMA);
    server
}

/// `src` synced into `dst` once (caught up), with the state file in `_dir`.
struct Synced {
    server: PrivatePg,
    from: String,
    to: String,
    _dir: Dir,
    state: String,
}

fn synced() -> Synced {
    let server = logical_source();
    let (from, to) = (server.url_of("src"), server.url_of("dst"));
    let _dir = Dir::new();
    let state = _dir.path("s.db").display().to_string();
    sync_caught_up(&from, &to, &state);
    Synced { server, from, to, _dir, state }
}

#[test]
fn sync_follows_writes_during_and_after_the_bulk_copy_into_every_engine() {
    let server = logical_source();
    let from = server.url_of("src");
    let dir = Dir::new();
    let my = MyDb::new("sync");
    let targets = [server.url_of("dst"), my.url(), dir.url("t.db")];
    let states: Vec<String> = (0..3).map(|i| dir.path(&format!("s{i}.db")).display().to_string()).collect();
    // First runs: the bulk copies, while the source is written to.
    writing_during(&server, 1..4, || {
        for (to, state) in targets.iter().zip(&states) {
            let run = barge(&["sync", "--from", &from, "--to", to, "--state", state, "--until", "caught-up"]);
            run.assert_code(0);
        }
    });
    // Writes after the bulk copy, a large transaction and a TRUNCATE among them.
    server.sql_in("src", &writes(5));
    server.sql_in("src", "UPDATE items SET qty = qty + 7 WHERE id <= 15000");
    server.sql_in("src", "TRUNCATE pairs; INSERT INTO pairs VALUES (1, 'again', 1), (2, 'again', 2)");
    // An update that leaves the large (TOASTed) value alone: pgoutput sends it as unchanged.
    server.sql_in("src", "UPDATE items SET qty = -1 WHERE id = 30");
    for (to, state) in targets.iter().zip(&states) {
        let status = sync_caught_up(&from, to, state);
        assert!(status["applied_total"].as_u64().unwrap() > 15_000, "{status}");
        // Rows PostgreSQL logged whole (in binary) are applied as logged; deleted keys, old keys
        // of re-keyed rows and rows with an unchanged TOAST value are read back.
        let items = status["tables"].as_array().unwrap().iter().find(|t| t["table"] == "items").unwrap();
        let (upserted, read_back) = (items["upserted"].as_u64().unwrap(), items["read_back"].as_u64().unwrap());
        assert!(read_back > 0 && read_back * 4 < upserted, "{items}");
    }
    let expected = pg_rows(&server, "src");
    assert!(expected.0.lines().count() > 20_000);
    let row30 = expected.0.lines().find(|l| l.starts_with("30|")).unwrap();
    assert!(row30.ends_with("|12800|-1"), "the TOASTed value is kept: {row30}");
    assert_eq!(pg_rows(&server, "dst"), expected, "PostgreSQL target");
    assert_eq!(my_rows(&my), expected, "MariaDB target");
    assert_eq!(lite_rows(&dir, "t.db"), expected, "SQLite target");
    // barge's own verification agrees, and does not count `barge_sync` as a stray table.
    for to in &targets {
        barge(&["verify", "--from", &from, "--to", to]).assert_code(0);
    }
    // A rerun with nothing new applies nothing.
    let status = sync_caught_up(&from, &targets[0], &states[0]);
    assert_eq!(status["applied_total"], 0, "{status}");
    // The stream goes with --drop: slot and publication.
    let run = barge(&["sync", "--from", &from, "--to", &targets[0], "--state", &states[0], "--drop"]);
    run.assert_code(0);
    assert!(run.stdout.contains("dropped"), "{}", run.stdout);
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_replication_slots"), "2");
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_publication"), "2");
}

/// Waits until a JSON status line on `stdout` of the child shows changes applied.
/// A pipeline's table: renamed (`goods`), a renamed key column, a renamed, a computed and a
/// dropped column, and a row filter, over `items`; `pairs` as it is.
const RESHAPE: &str = r#"
source = "${SYNC_FROM}"
target = "${SYNC_TO}"

[[tables]]
source = "items"
target = "goods"
where = "qty < 5000"
drop = ["big"]
columns = [
  { name = "item_id", from = "id" },
  { name = "label", expr = "upper(name)" },
  { name = "stock", from = "qty" },
  { name = "tag", expr = "concat(name, '#', qty)" },
]

[[tables]]
source = "pairs"
"#;

/// The source's items as the pipeline reshapes them, in key order.
const GOODS_EXPECTED: &str = "SELECT id, upper(name), qty, name || '#' || qty FROM items WHERE qty < 5000 ORDER BY id";
const GOODS: &str = "SELECT item_id, label, stock, tag FROM goods ORDER BY item_id";

#[test]
fn sync_with_a_pipeline_applies_its_renames_transforms_and_filter_to_every_change() {
    let server = logical_source();
    let from = server.url_of("src");
    let dir = Dir::new();
    let file = dir.path("reshape.toml");
    std::fs::write(&file, RESHAPE).unwrap();
    let file = file.display().to_string();
    let my = MyDb::new("sync_pipe");
    for (i, to) in [server.url_of("dst"), my.url()].iter().enumerate() {
        let state = dir.path(&format!("s{i}.db")).display().to_string();
        let sync = || {
            let run = crate::support::barge_env(
                &["sync", &file, "--state", &state, "--until", "caught-up", "--json"],
                &[("SYNC_FROM", &from), ("SYNC_TO", to)],
            );
            run.assert_code(0);
            serde_json::from_str::<serde_json::Value>(run.stdout.lines().last().unwrap()).unwrap()
        };
        writing_during(&server, 10 * i as i32 + 1..10 * i as i32 + 3, sync);
        // Rows that leave the filter (qty raised past it) are deleted; rows that enter it come.
        server.sql_in(
            "src",
            &format!(
                "{} UPDATE items SET qty = 6000 WHERE id BETWEEN 30 AND 60; UPDATE items SET qty = 1 \
                 WHERE id BETWEEN 100 AND 110; UPDATE items SET qty = 7000 WHERE id = 4000;",
                writes(10 * i as i32 + 5)
            ),
        );
        let status = sync();
        assert_eq!(status["caught_up"], true, "{status}");
        let expected = (server.sql_in("src", GOODS_EXPECTED), server.sql_in("src", PAIRS));
        assert!(expected.0.contains("\n105|N105|1|n105#1\n"), "{}", expected.0);
        let got = if i == 0 {
            (server.sql_in("dst", GOODS), server.sql_in("dst", PAIRS))
        } else {
            let join = |rows: Vec<Vec<String>>| rows.iter().map(|r| r.join("|")).collect::<Vec<_>>().join("\n");
            (join(my.sql(GOODS)), join(my.sql(PAIRS)))
        };
        assert_eq!(got, expected, "into {to}");
        assert!(!got.0.contains("\n45|"), "a row that left the filter is deleted");
        assert!(status["tables"].as_array().unwrap().iter().any(|t| t["table"] == "items"), "{status}");
        // A nullable column the source adds while sync is stopped passes through the pipeline's
        // transform into the renamed table, with its values.
        let note = format!("note_{i}");
        server.sql_in(
            "src",
            &format!("ALTER TABLE items ADD COLUMN {note} text; UPDATE items SET {note} = 'n' || id WHERE id < 60"),
        );
        let status = sync();
        assert!(status["tables"].as_array().unwrap().iter().all(|t| t["error"].is_null()), "{status}");
        let with_note = format!("SELECT count(*) FROM goods WHERE {note} LIKE 'n%'");
        let expected =
            server.sql_in("src", &format!("SELECT count(*) FROM items WHERE {note} LIKE 'n%' AND qty < 5000"));
        let got = if i == 0 { server.sql_in("dst", &with_note) } else { my.sql(&with_note)[0][0].clone() };
        assert_eq!(got, expected, "into {to}");
        assert_ne!(expected, "0");
    }
    // A pipeline table that is incremental is refused: sync keeps every table current itself.
    let tables = "[[tables]]\nsource = \"items\"\nmode = \"incremental\"\nwatermark = \"qty\"\n";
    let run = sync_once_with_pipeline(&dir, "incremental", tables, &from, &server.url_of("dst"));
    run.assert_code(2);
    assert!(run.stderr.contains("is incremental"), "{}", run.stderr);
}

/// `barge sync NAME.toml` once, with a pipeline of `tables` (its `[[tables]]` entries) from
/// `from` to `to`, the file and its state `NAME.db` in `dir`.
fn sync_once_with_pipeline(dir: &Dir, name: &str, tables: &str, from: &str, to: &str) -> crate::support::Run {
    let file = dir.path(&format!("{name}.toml"));
    std::fs::write(&file, format!("source = \"${{SYNC_FROM}}\"\ntarget = \"${{SYNC_TO}}\"\n{tables}")).unwrap();
    let state = dir.path(&format!("{name}.db")).display().to_string();
    crate::support::barge_env(
        &["sync", &file.display().to_string(), "--state", &state],
        &[("SYNC_FROM", from), ("SYNC_TO", to)],
    )
}

fn wait_for_applied(child: &mut std::process::Child, at_least: u64) {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let applied = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["applied_total"].as_u64())
                .unwrap_or(0);
            if tx.send(applied).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(applied) = rx.recv_timeout(Duration::from_secs(1))
            && applied >= at_least
        {
            return;
        }
    }
    panic!("sync applied fewer than {at_least} changes in 60 s");
}

fn spawn_sync(from: &str, to: &str, state: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["sync", "--from", from, "--to", to, "--state", state, "--json", "--batch-changes", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sync_killed_mid_stream_or_stopped_by_sigterm_continues_exactly() {
    let Synced { server, from, to, _dir, state } = synced();
    // kill -9 while it applies a stream of small transactions.
    let mut child = spawn_sync(&from, &to, &state);
    writing_during(&server, 1..3, || wait_for_applied(&mut child, 1));
    server.sql_in("src", "UPDATE items SET qty = qty + 1 WHERE id <= 20000");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    server.sql_in("src", &writes(4));
    sync_caught_up(&from, &to, &state);
    assert_eq!(pg_rows(&server, "dst"), pg_rows(&server, "src"), "after kill -9");
    // SIGTERM: the batch in flight is finished, the position recorded, exit 0.
    let mut child = spawn_sync(&from, &to, &state);
    server.sql_in("src", &writes(6));
    wait_for_applied(&mut child, 1);
    // A second sync of the same stream is refused while this one runs, naming the run.
    let second = barge(&["sync", "--from", &from, "--to", &to, "--state", &state, "--until", "caught-up"]);
    second.assert_code(2);
    assert!(second.stderr.contains("sync"), "{}", second.stderr);
    assert!(second.stderr.contains(&child.id().to_string()), "names the holder: {}", second.stderr);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "sync stops cleanly on SIGTERM");
    server.sql_in("src", &writes(7));
    // Past --max-retained, a warning says how much WAL the slot keeps, and what to do.
    let run = barge(&[
        "sync",
        "--from",
        &from,
        "--to",
        &to,
        "--state",
        &state,
        "--until",
        "caught-up",
        "--max-retained",
        "1",
    ]);
    run.assert_code(0);
    assert!(run.stderr.contains("warning: the stream's replication slot keeps"), "{}", run.stderr);
    assert!(run.stderr.contains("barge sync --drop"), "{}", run.stderr);
    assert_eq!(pg_rows(&server, "dst"), pg_rows(&server, "src"), "after SIGTERM");
}

#[test]
fn sync_killed_mid_batch_into_mariadb_and_sqlite_continues_exactly() {
    // Each target engine commits a batch with its position in one transaction of its own.
    let server = logical_source();
    let from = server.url_of("src");
    let dir = Dir::new();
    let my = MyDb::new("sync_kill");
    type Rows<'a> = &'a dyn Fn() -> (String, String);
    let targets: [(i32, String, Rows); 2] =
        [(3, my.url(), &|| my_rows(&my)), (5, dir.url("t.db"), &|| lite_rows(&dir, "t.db"))];
    for (round, to, rows) in targets {
        let state = dir.path(&format!("s{round}.db")).display().to_string();
        sync_caught_up(&from, &to, &state);
        let mut child = spawn_sync(&from, &to, &state);
        server.sql_in("src", &writes(round));
        wait_for_applied(&mut child, 1);
        // kill -9 while a 20,000-row transaction is applied (its 2,000 rows with an unchanged
        // 12.8 kB value are read back: one LOAD DATA payload larger than a MariaDB packet).
        server.sql_in("src", "UPDATE items SET qty = qty + 1 WHERE id <= 20000");
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        child.wait().unwrap();
        server.sql_in("src", &writes(round + 1));
        sync_caught_up(&from, &to, &state);
        assert_eq!(rows(), pg_rows(&server, "src"), "{to} after kill -9");
    }
}

/// A `sync --json` of its own, its status lines going to `log`, once it has printed the first.
fn spawn_streaming(from: &str, to: &str, state: &str, log: &std::path::Path) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["sync", "--from", from, "--to", to, "--state", state, "--json"])
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a first status line", || std::fs::read_to_string(log).unwrap().lines().next().is_some());
    child
}

/// Sessions of the current database whose last statement read a stream's applied position:
/// with sync not started, only a verification waiting for the stream reads it (its first pass
/// is over, so the differences it saw are the changes sync has not applied yet).
const WAITING_FOR_THE_STREAM: &str = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
     AND query LIKE 'SELECT tbl, position FROM %barge_sync%' AND pid <> pg_backend_pid()";

/// `barge verify --json` as a child process, its stdout to `out`.
fn spawn_verify(from: &str, to: &str, extra: &[&str], out: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["verify", "--from", from, "--to", to, "--json"])
        .args(extra)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn verify_report(mut child: std::process::Child, out: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let code = child.wait().unwrap().code();
    (code, serde_json::from_str(std::fs::read_to_string(out).unwrap().trim()).unwrap())
}

#[test]
fn verify_under_a_running_sync_rechecks_differences_once_the_stream_passed_them() {
    let Synced { server, from, to, _dir: dir, state } = synced();
    let log = dir.path("status.jsonl");
    let out = dir.path("verify.json");
    // Changes the target has not got yet: sync is not running. Verify's first pass sees them,
    // then it waits for the stream; sync starts and applies them; the re-check finds none.
    server.sql_in("src", "UPDATE items SET qty = qty + 1 WHERE id <= 150; DELETE FROM pairs WHERE a = 3");
    let verify = spawn_verify(&from, &to, &[], &out);
    wait_until("verify to wait for the stream", || server.sql_in("dst", WAITING_FOR_THE_STREAM) != "0");
    let child = spawn_streaming(&from, &to, &state, &log);
    let (code, report) = verify_report(verify, &out);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["recheck"]["rounds"].as_u64().unwrap() >= 1, "{report}");
    let in_flight: u64 =
        report["tables"].as_array().unwrap().iter().map(|t| t["in_flight"].as_u64().unwrap_or(0)).sum();
    assert!(in_flight >= 150, "the changes in flight are counted: {report}");
    // A real difference (planted in the target) persists through every re-check and is
    // reported with its key; the quiet source's stream still moves past each position.
    server.sql_in("dst", "UPDATE items SET name = 'planted' WHERE id = 7");
    let (code, report) = verify_report(spawn_verify(&from, &to, &[], &out), &out);
    assert_eq!(code, Some(3), "{report}");
    let items = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "items").unwrap();
    assert_eq!(items["changed"], serde_json::json!([[7]]), "{report}");
    assert_eq!(report["recheck"]["rounds"], 3, "{report}");
    assert_eq!(report["recheck"]["timed_out"], false, "{report}");
    let (code, _) = stop(child, &log);
    assert_eq!(code, Some(0));
    // With sync stopped, the wait ends at --recheck-timeout and says so.
    let started = Instant::now();
    let (code, report) = verify_report(spawn_verify(&from, &to, &["--recheck-timeout", "1"], &out), &out);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["recheck"]["timed_out"], true, "{report}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // --no-recheck reports the first pass; a stream the target does not hold is refused.
    let (code, report) = verify_report(spawn_verify(&from, &to, &["--no-recheck"], &out), &out);
    assert_eq!(code, Some(3), "{report}");
    assert!(report.get("recheck").is_none(), "{report}");
    let run = barge(&["verify", "--from", &from, "--to", &to, "--stream", "nosuch"]);
    run.assert_code(2);
    assert!(run.stderr.contains("holds no positions of it"), "{}", run.stderr);
    // A target two streams keep: which one to wait for must be named.
    server.sql_in("dst", "INSERT INTO barge_sync (stream, tbl, position) VALUES ('other', '', 0)");
    let run = barge(&["verify", "--from", &from, "--to", &to]);
    run.assert_code(2);
    assert!(run.stderr.contains("is kept by several sync streams"), "{}", run.stderr);
    // A source with no change stream has none to wait for.
    dir.sql("a.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let run = barge(&["verify", "--from", &dir.url("a.db"), "--to", &dir.url("a.db"), "--stream", "other"]);
    run.assert_code(2);
    assert!(run.stderr.contains("has no change stream to wait for"), "{}", run.stderr);
}

#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "waited 60 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM to `child`; its exit code and its last status line.
fn stop(mut child: std::process::Child, log: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let code = child.wait().unwrap().code();
    let text = std::fs::read_to_string(log).unwrap();
    (code, serde_json::from_str(text.lines().last().unwrap()).unwrap())
}

fn table_error(status: &serde_json::Value, table: &str) -> String {
    let entry = status["tables"].as_array().unwrap().iter().find(|t| t["table"] == table).unwrap();
    entry["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn sync_carries_an_added_nullable_column_and_stops_a_table_on_other_ddl() {
    let Synced { server, from, to, _dir, state } = synced();
    let log = _dir.path("status.jsonl");
    let child = spawn_streaming(&from, &to, &state, &log);
    // A nullable column without a default: added to the target, its values carried.
    server.sql_in("src", "ALTER TABLE pairs ADD COLUMN extra int; UPDATE pairs SET extra = a * 10 WHERE a < 5");
    let with_extra = "SELECT a, b, v, extra FROM pairs ORDER BY a, b";
    let has_extra =
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'pairs' AND column_name = 'extra'";
    wait_until("the added column's values", || {
        server.sql_in("dst", has_extra) == "1"
            && server.sql_in("dst", "SELECT count(*) FROM pairs WHERE extra IS NOT NULL") != "0"
            && server.sql_in("dst", with_extra) == server.sql_in("src", with_extra)
    });
    // A NOT NULL column with a default stops its table; the other goes on.
    server.sql_in(
        "src",
        "ALTER TABLE items ADD COLUMN flag int NOT NULL DEFAULT 0; UPDATE items SET qty = 5 WHERE id = 7",
    );
    server.sql_in("src", "UPDATE pairs SET v = -5 WHERE a = 4");
    wait_until("the other table's change", || server.sql_in("dst", "SELECT min(v) FROM pairs WHERE a = 4") == "-5");
    let (code, last) = stop(child, &log);
    assert_eq!(code, Some(4), "{last}");
    assert!(table_error(&last, "items").contains("only a nullable column without a default"), "{last}");
    assert_eq!(table_error(&last, "pairs"), "", "{last}");
    // A column added while sync is not running is carried too when it starts.
    server.sql_in("src", "ALTER TABLE pairs ADD COLUMN note text; UPDATE pairs SET note = 'n' WHERE a = 1");
    let run = barge(&["sync", "--from", &from, "--to", &to, "--state", &state, "--until", "caught-up"]);
    run.assert_code(4);
    let all = "SELECT a, b, v, extra, note FROM pairs ORDER BY a, b";
    assert_eq!(server.sql_in("dst", all), server.sql_in("src", all));
}

#[test]
fn sync_names_missing_prerequisites_and_creates_nothing() {
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    // The shared server runs with wal_level = replica.
    let src = crate::support::PgDb::new("sync_src");
    src.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let target = dir.url("t.db");
    let run = barge(&["sync", "--from", &src.url(), "--to", &target, "--state", &state, "--until", "caught-up"]);
    run.assert_code(2);
    assert!(run.stderr.contains("wal_level = logical"), "{}", run.stderr);
    assert!(!dir.path("t.db").exists() || dir.count("t.db", "sqlite_schema") == 0, "nothing was created");
    // A keyless table, on a server that has logical decoding.
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql_in("src", "CREATE TABLE loose (a int, b text)");
    let run = barge(&["sync", "--from", &server.url_of("src"), "--to", &target, "--state", &state]);
    run.assert_code(2);
    assert!(run.stderr.contains("`loose` has no primary key"), "{}", run.stderr);
    assert!(run.stderr.contains(r#"ALTER TABLE "public"."loose" REPLICA IDENTITY FULL"#), "{}", run.stderr);
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_replication_slots"), "0", "no slot was created");
    // A user without the REPLICATION privilege; then every slot taken.
    server.sql_in(
        "src",
        "DROP TABLE loose; CREATE TABLE t (id int PRIMARY KEY); CREATE ROLE plain LOGIN; GRANT SELECT ON t TO plain",
    );
    let plain = server.url_of("src").replacen("postgres@", "plain@", 1);
    let run = barge(&["sync", "--from", &plain, "--to", &target, "--state", &state]);
    run.assert_code(2);
    assert!(run.stderr.contains("needs the REPLICATION privilege"), "{}", run.stderr);
    server.sql_in(
        "src",
        "SELECT pg_create_logical_replication_slot('taken' || g, 'pgoutput') FROM generate_series(1, 10) g",
    );
    let run = barge(&["sync", "--from", &server.url_of("src"), "--to", &target, "--state", &state]);
    run.assert_code(2);
    assert!(run.stderr.contains("no free replication slot (max_replication_slots = 10, 10 in use)"), "{}", run.stderr);
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_publication"), "0", "no publication was created");
    server.sql_in("src", "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots");
    // SQLite is no change source.
    dir.sql("a.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let run = barge(&["sync", "--from", &dir.url("a.db"), "--to", &dir.url("b.db"), "--state", &state]);
    run.assert_code(2);
    assert!(run.stderr.contains("has no change stream"), "{}", run.stderr);
}

// --- MariaDB sources: a private server with a row-based binlog. ---

const BINLOG: &[&str] = &["--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL", "--server-id=1"];

const MY_SCHEMA: &str = "CREATE DATABASE src; USE src;
    CREATE TABLE items (id int PRIMARY KEY, name varchar(40) NOT NULL, big mediumtext, qty int NOT NULL DEFAULT 0);
    INSERT INTO items SELECT seq, concat('n', seq), IF(seq % 10 = 0, repeat(md5(seq), 400), NULL), seq
      FROM seq_1_to_20000;
    CREATE TABLE pairs (a int, b varchar(20), v int, PRIMARY KEY (a, b));
    INSERT INTO pairs SELECT seq % 50, concat('k', seq DIV 50), seq FROM seq_1_to_2000;
    CREATE TABLE wide (id int unsigned PRIMARY KEY, v int);
    INSERT INTO wide VALUES (4294967295, 1), (1, 2), (2147483648, 3);";

/// [`writes`] in MariaDB's dialect, with the unsigned table too.
fn my_writes(round: i32) -> String {
    let (base, m, lo) = (100_000 * round, round % 13, 100 + round * 50);
    format!(
        "USE src; START TRANSACTION; UPDATE items SET qty = qty + 1 WHERE id % 13 = {m};
         DELETE FROM items WHERE id % 17 = {m};
         INSERT INTO items SELECT {base} + seq, concat('new', seq), NULL, seq FROM seq_1_to_3000; COMMIT;
         UPDATE items SET id = id + 1000000 WHERE id BETWEEN {lo} AND {lo} + 9;
         UPDATE items SET name = concat(name, '+') WHERE id % 10 = 0 AND id < 2000;
         UPDATE items SET big = concat('rewritten ', id) WHERE id = {lo} + 20;
         UPDATE pairs SET v = v + 1 WHERE a = {m}; DELETE FROM pairs WHERE a = {m} + 1;
         UPDATE pairs SET b = concat(b, 'x') WHERE a = {m} + 2;
         UPDATE wide SET v = v + 1 WHERE id = 4294967295; INSERT INTO wide VALUES (4000000000 + {round}, {round});"
    )
}

const WIDE: &str = "SELECT id, v FROM wide ORDER BY id";

fn join_rows(rows: impl IntoIterator<Item = Vec<String>>) -> String {
    rows.into_iter().map(|r| r.join("|")).collect::<Vec<_>>().join("\n")
}

/// Items, pairs and wide, as text, from the private MariaDB's `src`.
fn my_source_rows(server: &crate::private::PrivateMy) -> [String; 3] {
    my_rows_in(server, "src")
}

/// Items, pairs and wide, as text, from database `db` of a private MariaDB.
fn my_rows_in(server: &crate::private::PrivateMy, db: &str) -> [String; 3] {
    let sql = |q: &str| server.sql(&format!("USE {db}; {q}")).unwrap_or_default().replace('\t', "|");
    [sql(&ITEMS.replace("length(big)", "char_length(big)")), sql(PAIRS), sql(WIDE)]
}

#[test]
fn sync_from_mariadb_goes_on_through_crashes_of_a_mariadb_target_and_of_the_source() {
    let mut source = crate::private::PrivateMy::start(BINLOG);
    source.sql(MY_SCHEMA).unwrap();
    let mut target = crate::private::PrivateMy::start(&[]);
    target.sql("CREATE DATABASE dst").unwrap();
    let (from, to) = (source.url("src"), target.url("dst"));
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    sync_caught_up(&from, &to, &state);
    let log = dir.path("status.jsonl");
    let child = spawn_streaming(&from, &to, &state, &log);
    // The target is killed (SIGKILL, InnoDB recovers) while changes are applied, then the
    // source is (its binlog goes on in a new file).
    source.sql(&my_writes(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    target.crash_and_restart();
    source.sql(&my_writes(2)).unwrap();
    source.crash_and_restart();
    source.sql(&my_writes(3)).unwrap();
    wait_until("the changes after the crashes", || my_rows_in(&target, "dst") == my_source_rows(&source));
    let (code, last) = stop(child, &log);
    assert_eq!(code, Some(0), "sync went on through both crashes: {last}");
    sync_caught_up(&from, &to, &state);
    assert_eq!(my_rows_in(&target, "dst"), my_source_rows(&source));
}

#[test]
fn sync_from_mariadb_follows_writes_during_and_after_the_bulk_copy_into_every_engine() {
    let server = crate::private::PrivateMy::start(BINLOG);
    server.sql(MY_SCHEMA).expect("schema");
    let from = server.url("src");
    let dir = Dir::new();
    let (pg, my) = (crate::support::PgDb::new("sync_my"), MyDb::new("sync_my"));
    let targets = [pg.url(), my.url(), dir.url("t.db")];
    let states: Vec<String> = (0..3).map(|i| dir.path(&format!("s{i}.db")).display().to_string()).collect();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for round in 1..4 {
                server.sql(&my_writes(round)).expect("writes");
            }
        });
        for (to, state) in targets.iter().zip(&states) {
            barge(&["sync", "--from", &from, "--to", to, "--state", state, "--until", "caught-up"]).assert_code(0);
        }
        writer.join().unwrap();
    });
    server.sql(&my_writes(5)).expect("writes");
    server.sql("USE src; UPDATE items SET qty = qty + 7 WHERE id <= 15000").unwrap();
    server.sql("USE src; TRUNCATE pairs; INSERT INTO pairs VALUES (1, 'again', 1), (2, 'again', 2)").unwrap();
    for (to, state) in targets.iter().zip(&states) {
        let status = sync_caught_up(&from, to, state);
        assert!(status["applied_total"].as_u64().unwrap() > 15_000, "{status}");
    }
    let expected = my_source_rows(&server);
    assert!(expected[2].contains("4294967295|"), "{}", expected[2]);
    let pg_text =
        |q: &str| join_rows(pg.sql(q).into_iter().map(|r| r.into_iter().map(|v| v.unwrap_or_default()).collect()));
    assert_eq!([pg_text(ITEMS), pg_text(PAIRS), pg_text(WIDE)], expected, "PostgreSQL target");
    let my_text = |q: &str| join_rows(my.sql(q));
    assert_eq!(
        [my_text(&ITEMS.replace("length(big)", "char_length(big)")), my_text(PAIRS), my_text(WIDE)],
        expected,
        "MariaDB target"
    );
    let (items, pairs) = lite_rows(&dir, "t.db");
    let wide = join_rows(
        dir.conn("t.db")
            .prepare(WIDE)
            .unwrap()
            .query_map([], |r| Ok(vec![r.get::<_, i64>(0)?.to_string(), r.get::<_, i64>(1)?.to_string()]))
            .unwrap()
            .map(Result::unwrap),
    );
    assert_eq!([items, pairs, wide], expected, "SQLite target");
    for to in &targets {
        barge(&["verify", "--from", &from, "--to", to]).assert_code(0);
    }
}

/// A private MariaDB with a binlog holding [`MY_SCHEMA`], synced once (caught up) into a
/// PostgreSQL database named after `name`, with the state file in `dir`.
struct MySynced {
    server: crate::private::PrivateMy,
    from: String,
    pg: crate::support::PgDb,
    dir: Dir,
    to: String,
    state: String,
}

fn my_synced(name: &str) -> MySynced {
    let server = crate::private::PrivateMy::start(BINLOG);
    server.sql(MY_SCHEMA).expect("schema");
    let from = server.url("src");
    let dir = Dir::new();
    let pg = crate::support::PgDb::new(name);
    let (to, state) = (pg.url(), dir.path("s.db").display().to_string());
    sync_caught_up(&from, &to, &state);
    MySynced { server, from, pg, dir, to, state }
}

#[test]
fn sync_from_mariadb_killed_mid_stream_continues_and_ddl_stops_its_table() {
    let MySynced { server, from, pg, dir, to, state } = my_synced("sync_my_kill");
    let mut child = spawn_sync(&from, &to, &state);
    server.sql(&my_writes(1)).unwrap();
    wait_for_applied(&mut child, 1);
    server.sql("USE src; UPDATE items SET qty = qty + 1 WHERE id <= 20000").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    server.sql(&my_writes(2)).unwrap();
    sync_caught_up(&from, &to, &state);
    let pg_text =
        |q: &str| join_rows(pg.sql(q).into_iter().map(|r| r.into_iter().map(|v| v.unwrap_or_default()).collect()));
    assert_eq!([pg_text(ITEMS), pg_text(PAIRS), pg_text(WIDE)], my_source_rows(&server), "after kill -9");
    // An added nullable column is carried; other DDL on a table stops it, naming the
    // statement; the others go on, and the run ends with exit 4.
    let log = dir.path("status.jsonl");
    let child = spawn_streaming(&from, &to, &state, &log);
    server
        .sql("USE src; ALTER TABLE pairs ADD COLUMN extra int NULL; UPDATE pairs SET extra = 7 WHERE a = 10")
        .unwrap();
    let has_extra =
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'pairs' AND column_name = 'extra'";
    wait_until("the added column's values", || {
        pg.sql(has_extra)[0][0].as_deref() == Some("1")
            && pg.sql("SELECT count(*) FROM pairs WHERE extra = 7")[0][0].as_deref() != Some("0")
    });
    server.sql("USE src; ALTER TABLE pairs DROP COLUMN v; UPDATE items SET qty = 99 WHERE id = 5").unwrap();
    wait_until("the other table's change", || {
        pg.sql("SELECT qty FROM items WHERE id = 5")[0][0].as_deref() == Some("99")
    });
    let (code, last) = stop(child, &log);
    assert_eq!(code, Some(4), "{last}");
    assert!(table_error(&last, "pairs").contains("ALTER TABLE pairs DROP COLUMN v"), "{last}");
    // The binlog that holds the stream's position is purged: sync says so, and what to do.
    server.sql("FLUSH BINARY LOGS; UPDATE src.items SET qty = 1 WHERE id = 6; FLUSH BINARY LOGS").unwrap();
    let newest =
        server.sql("SHOW BINARY LOGS").unwrap().lines().last().unwrap().split('\t').next().unwrap().to_string();
    server.sql(&format!("PURGE BINARY LOGS TO '{newest}'")).unwrap();
    let run = barge(&["sync", "--from", &from, "--to", &to, "--state", &state, "--until", "caught-up"]);
    run.assert_code(2);
    assert!(run.stderr.contains("is no longer on the server"), "{}", run.stderr);
}

/// Regression: a sync that started exactly at some transaction boundaries applied nothing and
/// said it was caught up. The server opens a dump with a made-up Rotate event whose name still
/// ends with its checksum; where that checksum began with a digit, the file number was misread
/// (`binlog.000001` + `2…` → file 12), so the first commit looked past the end. MariaDB's comment
/// standing for an Annotate_rows event was also taken for a commit, mid-transaction. The
/// checksum depends only on the offset, so among enough boundaries some always hit it.
#[test]
fn sync_from_mariadb_continues_from_every_transaction_boundary() {
    let server = crate::private::PrivateMy::start(BINLOG);
    server
        .sql("CREATE DATABASE src; CREATE TABLE src.t (id int PRIMARY KEY, v int); INSERT INTO src.t VALUES (1, 0)")
        .unwrap();
    let from = server.url("src");
    let dir = Dir::new();
    let (to, state) = (dir.url("t.db"), dir.path("s.db").display().to_string());
    sync_caught_up(&from, &to, &state);
    // Transactions of two statements each (an Annotate_rows event apiece), and the binlog
    // position after each.
    let script: String = (0..80)
        .map(|i| {
            format!(
                "BEGIN; UPDATE src.t SET v = v + 1 WHERE id = 1; INSERT INTO src.t VALUES ({}, {i}); COMMIT; \
                 SHOW BINLOG STATUS;",
                i + 2
            )
        })
        .collect();
    let boundaries: Vec<u64> = server
        .sql(&script)
        .unwrap()
        .lines()
        .map(|line| (1u64 << 32) | line.split('\t').nth(1).unwrap().parse::<u64>().unwrap())
        .collect();
    assert_eq!(boundaries.len(), 80);
    let target = dir.conn("t.db");
    for (i, at) in boundaries.iter().enumerate() {
        target.execute("UPDATE barge_sync SET position = ?1", [*at as i64]).unwrap();
        let status = sync_caught_up(&from, &to, &state);
        let after = (boundaries.len() - 1 - i) as u64;
        assert_eq!(status["transactions"].as_u64(), Some(after), "from boundary {i} ({at}): {status}");
        // Keys once per batch: each inserted row, and row 1 when anything changed.
        let keys = after + u64::from(after > 0);
        assert_eq!(status["applied_total"].as_u64(), Some(keys), "from boundary {i} ({at}): {status}");
    }
}

const CODES_WRITES: &str = "UPDATE codes SET v = v + 1 WHERE v % 3 = 0; DELETE FROM codes WHERE v % 7 = 0;
    UPDATE codes SET code = concat(code, 'x') WHERE v % 11 = 0; INSERT INTO codes (code, v) VALUES ('new1', -1), ('new2', -2);";
const CODES: &str = "SELECT code, v FROM codes ORDER BY code";

/// Tables without a primary key are synced by a unique index over NOT NULL columns; PostgreSQL
/// needs that index as the table's replica identity first (else it refuses the table's UPDATEs
/// and DELETEs once published), which sync asks for before creating anything.
#[test]
fn sync_keys_a_table_without_a_primary_key_by_a_unique_not_null_index() {
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql("CREATE DATABASE dst");
    server.sql_in(
        "src",
        "CREATE TABLE codes (code text NOT NULL, v int, CONSTRAINT codes_code_key UNIQUE (code));
         INSERT INTO codes SELECT 'c' || g, g FROM generate_series(1, 500) g",
    );
    let (from, to) = (server.url_of("src"), server.url_of("dst"));
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    let run = barge(&["sync", "--from", &from, "--to", &to, "--state", &state, "--until", "caught-up"]);
    run.assert_code(2);
    assert!(run.stderr.contains(r#"REPLICA IDENTITY USING INDEX "codes_code_key""#), "{}", run.stderr);
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_replication_slots"), "0", "nothing was created");
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_publication"), "0", "nothing was created");
    server.sql_in("src", "ALTER TABLE codes REPLICA IDENTITY USING INDEX codes_code_key");
    // A key the replica identity does not cover (a pipeline's `key`) is refused too.
    server.sql("CREATE DATABASE dst2");
    let tables = "[[tables]]\nsource = \"codes\"\nkey = [\"v\"]\n";
    let run = sync_once_with_pipeline(&dir, "by_v", tables, &from, &server.url_of("dst2"));
    run.assert_code(2);
    assert!(run.stderr.contains("sync applies changes by (v), which its replica identity (code)"), "{}", run.stderr);
    assert_eq!(server.sql_in("src", "SELECT count(*) FROM pg_replication_slots"), "0", "nothing was created");
    sync_caught_up(&from, &to, &state);
    server.sql_in("src", CODES_WRITES);
    let status = sync_caught_up(&from, &to, &state);
    assert!(status["applied_total"].as_u64().unwrap() > 100, "{status}");
    assert_eq!(server.sql_in("dst", CODES), server.sql_in("src", CODES));
    assert!(server.sql_in("dst", CODES).contains("c11x|11"));
    // MariaDB (its binlog rows hold every column) into SQLite.
    let my = crate::private::PrivateMy::start(BINLOG);
    my.sql(
        "CREATE DATABASE src; USE src; CREATE TABLE codes (code varchar(20) NOT NULL, v int, UNIQUE KEY (code));
         INSERT INTO codes SELECT concat('c', seq), seq FROM seq_1_to_500",
    )
    .unwrap();
    let (from, lite) = (my.url("src"), dir.url("t.db"));
    let state = dir.path("my.db").display().to_string();
    sync_caught_up(&from, &lite, &state);
    my.sql(&format!("USE src; {CODES_WRITES}")).unwrap();
    sync_caught_up(&from, &lite, &state);
    let conn = dir.conn("t.db");
    let got: Vec<String> = conn
        .prepare(CODES)
        .unwrap()
        .query_map([], |r| Ok(format!("{}|{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.join("\n"), my.sql(&format!("USE src; {CODES}")).unwrap().replace('\t', "|"));
}

/// The same re-check rule with a MariaDB source: the stream's position is a binlog offset, and
/// differences are re-checked, and one planted in the target persists.
#[test]
fn verify_under_a_running_sync_from_mariadb_rechecks_differences_once_the_stream_passed_them() {
    let MySynced { server, from, pg, dir, to, state } = my_synced("sync_my_verify");
    let (log, out) = (dir.path("status.jsonl"), dir.path("verify.json"));
    server.sql("USE src; UPDATE items SET qty = qty + 1 WHERE id <= 150; DELETE FROM pairs WHERE a = 3").unwrap();
    let verify = spawn_verify(&from, &to, &[], &out);
    wait_until("verify to wait for the stream", || pg.sql(WAITING_FOR_THE_STREAM)[0][0].as_deref() != Some("0"));
    let child = spawn_streaming(&from, &to, &state, &log);
    let (code, report) = verify_report(verify, &out);
    assert_eq!(code, Some(0), "{report}");
    assert!(report["recheck"]["rounds"].as_u64().unwrap() >= 1, "{report}");
    pg.sql("UPDATE items SET name = 'planted' WHERE id = 7");
    let (code, report) = verify_report(spawn_verify(&from, &to, &[], &out), &out);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["recheck"]["timed_out"], false, "the stream was at the position: {report}");
    let items = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "items").unwrap();
    assert_eq!(items["changed"], serde_json::json!([[7]]), "{report}");
    let (code, _) = stop(child, &log);
    assert_eq!(code, Some(0));
}

/// Rows sync writes carry their keys, which moves no PostgreSQL sequence: when sync stops, the
/// target's identity generators are moved past the largest key, so an application's first
/// insert into the target takes a new key (PostgreSQL → PostgreSQL, MariaDB → PostgreSQL).
#[test]
fn after_sync_an_insert_into_the_target_takes_a_key_past_the_synced_ones() {
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql("CREATE DATABASE dst");
    server.sql_in(
        "src",
        "CREATE TABLE ident (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);
         INSERT INTO ident (v) SELECT 'bulk' FROM generate_series(1, 10)",
    );
    let (from, to) = (server.url_of("src"), server.url_of("dst"));
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    sync_caught_up(&from, &to, &state);
    server.sql_in("src", "INSERT INTO ident (v) SELECT 'synced' FROM generate_series(1, 50)");
    sync_caught_up(&from, &to, &state);
    assert_eq!(server.sql_in("dst", "SELECT max(id) FROM ident"), "60");
    let insert = |db: &str| {
        server.sql_in(db, "INSERT INTO ident (v) VALUES ('app') RETURNING id").lines().next().map(String::from)
    };
    assert_eq!(insert("dst").as_deref(), Some("61"));
    // A second stop does not move the generator back.
    sync_caught_up(&from, &to, &state);
    assert_eq!(insert("dst").as_deref(), Some("62"));
    // MariaDB's AUTO_INCREMENT, as an identity in PostgreSQL.
    let my = crate::private::PrivateMy::start(BINLOG);
    my.sql(
        "CREATE DATABASE src; USE src; CREATE TABLE ident (id int AUTO_INCREMENT PRIMARY KEY, v text); \
            INSERT INTO ident (v) SELECT 'bulk' FROM seq_1_to_10",
    )
    .unwrap();
    let pg = crate::support::PgDb::new("sync_ident");
    let (from, state) = (my.url("src"), dir.path("my.db").display().to_string());
    sync_caught_up(&from, &pg.url(), &state);
    my.sql("USE src; INSERT INTO ident (v) SELECT 'synced' FROM seq_1_to_50").unwrap();
    sync_caught_up(&from, &pg.url(), &state);
    // (InnoDB reserves AUTO_INCREMENT values for INSERT … SELECT in growing blocks: keys have gaps.)
    let max: i64 = my.sql("SELECT max(id) FROM src.ident").unwrap().parse().unwrap();
    let new_key = pg.sql("INSERT INTO ident (v) VALUES ('app') RETURNING id")[0][0].clone().unwrap();
    assert_eq!(new_key, (max + 1).to_string());
}

/// The pipeline form from a MariaDB source into SQLite: the binlog's changes go through the same
/// renames, computed columns and `where` as the bulk copy.
#[test]
fn sync_with_a_pipeline_from_mariadb_reshapes_every_change() {
    let server = crate::private::PrivateMy::start(BINLOG);
    server.sql(MY_SCHEMA).expect("schema");
    let dir = Dir::new();
    let file = dir.path("reshape.toml");
    std::fs::write(&file, RESHAPE).unwrap();
    let (file, from, to) = (file.display().to_string(), server.url("src"), dir.url("t.db"));
    let state = dir.path("s.db").display().to_string();
    let sync = || {
        let run = crate::support::barge_env(
            &["sync", &file, "--state", &state, "--until", "caught-up", "--json"],
            &[("SYNC_FROM", &from), ("SYNC_TO", &to)],
        );
        run.assert_code(0);
    };
    sync();
    server
        .sql(&format!(
            "{} UPDATE items SET qty = 6000 WHERE id BETWEEN 30 AND 60; UPDATE items SET qty = 1 WHERE id BETWEEN 100 \
             AND 110;",
            my_writes(3)
        ))
        .unwrap();
    sync();
    let expected = server
        .sql("USE src; SELECT id, upper(name), qty, concat(name, '#', qty) FROM items WHERE qty < 5000 ORDER BY id")
        .unwrap()
        .replace('\t', "|");
    let got = lite_lines(&dir.conn("t.db"), GOODS);
    assert!(got.join("\n") == expected, "the SQLite target differs from the source as reshaped");
    assert!(expected.contains("\n101|N101|1|n101#1\n"), "a row that entered the filter");
    assert!(!expected.contains("\n45|"), "a row that left the filter");
}

#[test]
fn sync_from_mariadb_names_binlog_settings_it_needs() {
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    for (options, message) in [
        (&[][..], "a binary log"),
        (&["--log-bin=binlog", "--binlog-format=STATEMENT", "--server-id=1"][..], "binlog_format = ROW"),
        (
            &["--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=MINIMAL", "--server-id=1"][..],
            "binlog_row_image = FULL",
        ),
    ] {
        let server = crate::private::PrivateMy::start(options);
        server.sql("CREATE DATABASE src; CREATE TABLE src.t (id int PRIMARY KEY)").unwrap();
        let run = barge(&[
            "sync",
            "--from",
            &server.url("src"),
            "--to",
            &dir.url("t.db"),
            "--state",
            &state,
            "--until",
            "caught-up",
        ]);
        run.assert_code(2);
        assert!(run.stderr.contains(message), "{options:?}: {}", run.stderr);
    }
    // A user who may read the tables but not the binlog. (A server_id of 0, which MySQL refuses
    // to replicate from, cannot be set on MariaDB: its least is 1.)
    let server = crate::private::PrivateMy::start(BINLOG);
    server
        .sql(
            "CREATE DATABASE src; CREATE TABLE src.t (id int PRIMARY KEY); CREATE USER plain@'%'; \
             GRANT SELECT ON src.* TO plain@'%'",
        )
        .unwrap();
    let plain = server.url("src").replacen("root@", "plain@", 1);
    let run = barge(&["sync", "--from", &plain, "--to", &dir.url("t.db"), "--state", &state, "--until", "caught-up"]);
    run.assert_code(2);
    assert!(run.stderr.contains("GRANT REPLICATION SLAVE, REPLICATION CLIENT"), "{}", run.stderr);
}

#[test]
fn sync_goes_on_through_restarts_of_the_target_and_of_the_source() {
    let source = logical_source();
    let target = PrivatePg::start();
    target.sql("CREATE DATABASE dst");
    let (from, to) = (source.url_of("src"), target.url_of("dst"));
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    sync_caught_up(&from, &to, &state);
    let log = dir.path("status.jsonl");
    let child = spawn_streaming(&from, &to, &state, &log);
    // The target restarts while changes are applied, then the source does.
    writing_during(&source, 1..4, || {
        std::thread::sleep(Duration::from_millis(300));
        target.pg_ctl(&["restart"]);
    });
    source.pg_ctl(&["restart"]);
    source.sql_in("src", &writes(5));
    wait_until("the changes after the restarts", || target.sql_in("dst", PAIRS) == source.sql_in("src", PAIRS));
    let (code, last) = stop(child, &log);
    assert_eq!(code, Some(0), "sync went on through both restarts: {last}");
    sync_caught_up(&from, &to, &state);
    assert_eq!(pg_rows(&target, "dst"), pg_rows(&source, "src"));
}

// --- A table without a key: PostgreSQL's REPLICA IDENTITY FULL, rows matched whole. ---

const LOOSE: &str = "
    CREATE TABLE loose (a int, b text, f float8, j json, big text);
    ALTER TABLE loose REPLICA IDENTITY FULL;
    INSERT INTO loose SELECT g % 100, CASE WHEN g % 7 = 0 THEN NULL ELSE 'b' || (g % 30) END, (g % 9) + 0.5,
        CASE WHEN g % 5 = 0 THEN NULL ELSE json_build_object('k', g % 4, 'pad', ' x ') END,
        CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 400) END
      FROM generate_series(1, 3000) g;
    INSERT INTO loose SELECT * FROM loose WHERE a < 20;";

/// Writes to `loose` touching some copies of equal rows, NULLs and the TOASTed values.
fn loose_writes(round: i32) -> String {
    let m = (round * 7) % 90;
    format!(
        "UPDATE loose SET f = f + 1 WHERE a = {m};
         DELETE FROM loose WHERE ctid IN (SELECT ctid FROM loose WHERE a = {m} + 1 LIMIT 3);
         INSERT INTO loose SELECT * FROM loose WHERE a = {m} + 2;
         UPDATE loose SET b = NULL WHERE a = {m} + 3 AND b IS NOT NULL;
         UPDATE loose SET a = a + 1000 WHERE ctid = (SELECT ctid FROM loose WHERE a = {m} + 4 LIMIT 1);
         BEGIN; INSERT INTO loose VALUES ({m} + 5, NULL, NULL, NULL, NULL), ({m} + 5, NULL, NULL, NULL, NULL);
           DELETE FROM loose WHERE ctid = (SELECT ctid FROM loose WHERE a = {m} + 5 AND b IS NULL AND f IS NULL LIMIT 1);
         COMMIT;"
    )
}

/// `loose`'s rows as text, sorted (with their copies), as each engine renders them.
fn loose_rows(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut rows: Vec<String> = lines.into_iter().collect();
    rows.sort();
    rows
}

/// The same rows, each as many times: else the counts and the first row that differs.
fn assert_same_rows(got: Vec<String>, expected: &[String], what: &str) {
    if got != expected {
        let first = got.iter().zip(expected).position(|(g, e)| g != e).unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: {} rows, the source {}; first difference at {first}: {:?} where the source has {:?}",
            got.len(),
            expected.len(),
            got.get(first),
            expected.get(first)
        );
    }
}
const LOOSE_PG: &str =
    "SELECT a, coalesce(b, '<null>'), coalesce(f::text, '<null>'), coalesce(length(big), -1) FROM loose";

#[test]
fn sync_matches_whole_rows_of_a_table_with_replica_identity_full_into_every_engine() {
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql("CREATE DATABASE dst");
    server.sql_in("src", LOOSE);
    let from = server.url_of("src");
    let dir = Dir::new();
    let my = MyDb::new("loose");
    let targets = [server.url_of("dst"), my.url(), dir.url("t.db")];
    let states: Vec<String> = (0..3).map(|i| dir.path(&format!("s{i}.db")).display().to_string()).collect();
    // The bulk copies run while the source is written to: changes they saw are replayed.
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for round in 1..4 {
                server.sql_in("src", &loose_writes(round));
            }
        });
        for (to, state) in targets.iter().zip(&states) {
            barge(&["sync", "--from", &from, "--to", to, "--state", state, "--until", "caught-up"]).assert_code(0);
        }
        writer.join().unwrap();
    });
    for round in 4..8 {
        server.sql_in("src", &loose_writes(round));
    }
    // Updates leaving the TOASTed value alone (pgoutput: unchanged; the old row has it).
    server.sql_in("src", "UPDATE loose SET f = f + 0.25 WHERE big IS NOT NULL");
    // A column added between changes: rows changed before it hold NULL in it.
    server.sql_in(
        "src",
        "UPDATE loose SET b = 'before' WHERE a = 31; ALTER TABLE loose ADD COLUMN extra int;
         UPDATE loose SET extra = 1 WHERE a = 32; UPDATE loose SET b = 'after' WHERE a = 31 AND f < 3",
    );
    for (to, state) in targets.iter().zip(&states) {
        let status = sync_caught_up(&from, to, state);
        assert!(status["applied_total"].as_u64().unwrap() > 50, "{status}");
    }
    let expected = loose_rows(server.sql_in("src", LOOSE_PG).lines().map(str::to_string));
    assert!(expected.len() > 3000, "{}", expected.len());
    assert!(expected.windows(2).any(|w| w[0] == w[1]), "the source holds equal rows");
    let toasted = server.sql_in("src", "SELECT count(*) FROM loose WHERE big IS NOT NULL AND f - floor(f) = 0.75");
    assert_ne!(toasted, "0");
    assert_same_rows(loose_rows(server.sql_in("dst", LOOSE_PG).lines().map(str::to_string)), &expected, "PostgreSQL");
    assert_eq!(
        server.sql_in("dst", "SELECT count(*) FROM loose WHERE j::text LIKE '%\"pad\" : \" x \"%'"),
        server.sql_in("src", "SELECT count(*) FROM loose WHERE j::text LIKE '%\"pad\" : \" x \"%'"),
        "json values kept as they are"
    );
    let my_sql = "SELECT a, coalesce(b, '<null>'), coalesce(CAST(f AS CHAR), '<null>'), coalesce(char_length(big), -1) \
                  FROM loose";
    assert_same_rows(loose_rows(my.sql(my_sql).into_iter().map(|r| r.join("|"))), &expected, "MariaDB");
    let lite_sql =
        "SELECT a, coalesce(b, '<null>'), coalesce(CAST(f AS TEXT), '<null>'), coalesce(length(big), -1) FROM loose";
    assert_same_rows(loose_rows(lite_lines(&dir.conn("t.db"), lite_sql)), &expected, "SQLite");
    let extra = "SELECT count(*), count(extra) FROM loose";
    let want = server.sql_in("src", extra);
    assert_eq!(server.sql_in("dst", extra), want, "the added column");
    assert_eq!(my.sql(extra)[0].join("|"), want);
    assert_eq!(lite_lines(&dir.conn("t.db"), extra).join(""), want);
    for to in &targets {
        barge(&["verify", "--from", &from, "--to", to]).assert_code(0);
    }
}

/// A MySQL binlog position is kept nowhere on the server: a sync stopped after its bulk copy and
/// before it recorded the stream's start continues from the first start (kept in the target
/// while the copy ran), so the changes made meanwhile are applied.
#[test]
fn sync_from_mariadb_stopped_after_its_bulk_copy_applies_every_change_since_its_first_start() {
    let server = crate::private::PrivateMy::start(BINLOG);
    server.sql(MY_SCHEMA).expect("schema");
    let from = server.url("src");
    let dir = Dir::new();
    let pg = crate::support::PgDb::new("sync_my_stopped");
    let (to, state) = (pg.url(), dir.path("s.db").display().to_string());
    // The stream's start, recorded once the copy is done, waits on a transaction not done.
    pg.sql(
        "CREATE TABLE barge_sync (stream text NOT NULL, tbl text NOT NULL, position int8 NOT NULL,
           updated timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stream, tbl))",
    );
    let held = crate::support::Held::psql(&to, "BEGIN; INSERT INTO barge_sync VALUES ('s1', '', 0);");
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%barge_sync%'";
    wait_until("the held row", || {
        pg.sql("SELECT count(*) FROM pg_locks WHERE mode = 'RowExclusiveLock'")[0][0].as_deref() != Some("0")
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["sync", "--from", &from, "--to", &to, "--state", &state, "--stream", "s1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the copy to wait on the held row", || pg.sql(waiting)[0][0].as_deref() == Some("1"));
    server.sql(&my_writes(1)).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The killed sync's session would record the start once the row is free: ended first.
    pg.sql(&waiting.replace("count(*)", "pg_terminate_backend(pid)"));
    wait_until("the killed sync's session to end", || pg.sql(waiting)[0][0].as_deref() == Some("0"));
    drop(held);
    let run =
        barge(&["sync", "--from", &from, "--to", &to, "--state", &state, "--stream", "s1", "--until", "caught-up"]);
    run.assert_code(0);
    // Nothing is copied again: the copy was done.
    assert!(!run.stdout.contains("copied"), "{}\n{}", run.stdout, run.stderr);
    let pg_text =
        |q: &str| join_rows(pg.sql(q).into_iter().map(|r| r.into_iter().map(|v| v.unwrap_or_default()).collect()));
    assert_eq!([pg_text(ITEMS), pg_text(PAIRS), pg_text(WIDE)], my_source_rows(&server));
}

/// `sync --status-addr`: the status page in a real browser follows the stream (its phase, the
/// tables' counts), fetching nothing from elsewhere.
#[test]
fn sync_status_page_shows_the_stream_in_a_browser() {
    let server = logical_source();
    let (from, to) = (server.url_of("src"), server.url_of("dst"));
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    let (port, metrics_port) = (crate::support::free_port(), crate::support::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["sync", "--from", &from, "--to", &to, "--state", &state])
        .args(["--status-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::support::wait_for_port(port);
    let browser = crate::browser::Browser::start();
    let page = format!("http://127.0.0.1:{port}/");
    browser.goto(&page);
    browser.wait_text("phase", |p| p == "streaming");
    server.sql_in("src", &writes(1));
    // The tables' rows, as the page shows them: items' upserts counted once applied.
    let rows =
        "return [...document.querySelectorAll('#tables tbody tr')].map(r => [...r.cells].map(c => c.textContent))";
    wait_until("the applied writes on the page", || {
        let shown = browser.eval(rows);
        shown
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[0] == "items" && r[1].as_str().unwrap().parse::<u64>().unwrap() >= 3000)
    });
    let shown = browser.eval(rows);
    assert!(shown.as_array().unwrap().iter().any(|r| r[0] == "pairs"), "{shown}");
    // The switchover's checklist belongs to migrations: not shown for a sync.
    assert_eq!(browser.eval("return document.getElementById('allowed').closest('section').style.display"), "none");
    let requested = browser.requested();
    assert!(requested.iter().all(|u| u.starts_with(&page)), "{requested:?}");
    // `--metrics-addr`: Prometheus' text format, with the same counts.
    let samples = crate::support::scrape(&format!("127.0.0.1:{metrics_port}"));
    let upserted = crate::support::metric(&samples, "barge_sync_table_upserted_rows_total", Some(("table", "items")));
    assert!(upserted.is_some_and(|n| n >= 3000.0), "{samples:?}");
    assert!(crate::support::metric(&samples, "barge_sync_changes_applied_total", None).is_some_and(|n| n > 0.0));
    assert_eq!(crate::support::metric(&samples, "barge_sync_table_stopped", Some(("table", "pairs"))), Some(0.0));
    assert!(crate::support::metric(&samples, "barge_sync_lag_seconds", None).is_some());
    child.kill().unwrap();
    child.wait().unwrap();
}
