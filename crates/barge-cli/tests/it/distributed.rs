//! Distributed runs: `run --distributed` (the coordinator) and `barge worker` processes standing
//! in for machines, sharing one run through a PostgreSQL state store; workers killed with
//! `kill -9` and stopped with SIGSTOP past their lease. Rows are compared with the engines' own
//! clients, independently of barge's verification.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Dir, Held, MyDb, PgDb, barge};

/// A `barge worker` process, its stdout (one JSON object per range) in `DIR/NAME.jsonl`.
fn spawn_worker(dir: &Dir, state: &str, name: &str, extra: &[&str]) -> Child {
    let out = std::fs::File::create(dir.path(&format!("{name}.jsonl"))).unwrap();
    let err = std::fs::File::create(dir.path(&format!("{name}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["worker", "--state", state, "--name", name, "--json"])
        .args(if extra.contains(&"--lease") { &[][..] } else { &["--lease", "3"][..] })
        .args(extra)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// What a worker printed: one object per range it copied, lost or failed.
fn ranges_of(dir: &Dir, name: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.path(&format!("{name}.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The coordinator: `run PIPELINE --state STATE --distributed --json`.
fn spawn_coordinator(dir: &Dir, pipeline: &str, state: &str, extra: &[&str]) -> Child {
    let out = std::fs::File::create(dir.path("coordinator.jsonl")).unwrap();
    let err = std::fs::File::create(dir.path("coordinator.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["run", pipeline, "--state", state, "--distributed", "--json"])
        .args(extra)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// `barge status --json` of the state store.
fn status(state: &str) -> Value {
    let run = barge(&["status", "--state", state, "--json"]);
    run.assert_code(0);
    serde_json::from_str(run.stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

/// Waits until worker `name` holds a range; that range (table, range).
fn wait_holding(state: &str, name: &str, dir: &Dir) -> (String, u64) {
    let started = Instant::now();
    loop {
        let status = status(state);
        let held = status["runs"].as_array().into_iter().flatten().find_map(|run| {
            run["ranges"].as_array().into_iter().flatten().find(|r| r["state"] == "claimed" && r["owner"] == name)
        });
        if let Some(r) = held {
            return (r["table"].as_str().unwrap().to_string(), r["range"].as_u64().unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} held no range in 60 s: {status:#}\n{}",
            std::fs::read_to_string(dir.path("coordinator.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether range `held` is still claimed by `by`.
fn still_holds(state: &str, held: &(String, u64), by: &str) -> bool {
    status(state)["runs"].as_array().into_iter().flatten().any(|run| {
        run["ranges"].as_array().into_iter().flatten().any(|r| {
            r["table"] == held.0.as_str() && r["range"] == held.1 && r["owner"] == by && r["state"] == "claimed"
        })
    })
}

/// Waits until range `held` is another worker's than `was`.
fn wait_taken(state: &str, held: &(String, u64), was: &str, dir: &Dir) {
    let started = Instant::now();
    loop {
        let status = status(state);
        let taken = status["runs"].as_array().into_iter().flatten().any(|run| {
            run["ranges"].as_array().into_iter().flatten().any(|r| {
                r["table"] == held.0.as_str() && r["range"] == held.1 && r["owner"] != was && !r["owner"].is_null()
            })
        });
        if taken {
            return;
        }
        let logs: String = ["w1", "w2", "w3"]
            .iter()
            .map(|n| std::fs::read_to_string(dir.path(&format!("{n}.log"))).unwrap_or_default())
            .collect();
        assert!(started.elapsed() < Duration::from_secs(60), "{held:?} not taken over in 60 s: {status}\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut Child, what: &str, dir: &Dir) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("{what} did not end in 180 s: {}", std::fs::read_to_string(dir.path("coordinator.log")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of `GET path` at `addr`.
fn http_get(addr: &str, path: &str) -> String {
    crate::support::http_get(addr, path).1
}

/// A session of "the application" holding `table` of `db` locked against writes (readers pass),
/// and its pid.
fn planted_lock(db: &PgDb, table: &str) -> (Held, String) {
    let held =
        Held::psql(&db.url(), &format!("SET application_name = 'planted'; BEGIN; LOCK TABLE {table} IN SHARE MODE;"));
    loop {
        let rows = db.sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'planted' AND datname = current_database() \
             AND state = 'idle in transaction'",
        );
        if let Some(pid) = rows.first().and_then(|r| r[0].clone()) {
            return (held, pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

const CHECK: &str = "SELECT count(*), sum(hashtext(v)::numeric), sum(n) FROM big";

#[test]
fn a_distributed_run_survives_a_killed_and_a_stopped_worker_with_every_range_committed_once() {
    let source = PgDb::new("dist_src");
    source.sql(
        "CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL, n numeric(12,2));
         INSERT INTO big SELECT g, md5(g::text) || repeat('x', g % 50), g / 7.0 FROM generate_series(1, 1000000) g;
         CREATE TABLE small (id int PRIMARY KEY, big_id int NOT NULL REFERENCES big, note text);
         INSERT INTO small SELECT g, g * 3, 'n' || g FROM generate_series(1, 30000) g; ANALYZE;",
    );
    let target = PgDb::new("dist_dst");
    let state_db = PgDb::new("dist_state");
    let state = state_db.url();
    let dir = Dir::new();
    let pipeline = dir.path("dist.toml");
    std::fs::write(
        &pipeline,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\n[defaults]\npartitions = 10\nbatch_rows = 2000\n\
             [[tables]]\nsource = \"big\"\n[[tables]]\nsource = \"small\"\n",
            source.url(),
            target.url()
        ),
    )
    .unwrap();
    // Workers start before the coordinator: they wait for its plan.
    let mut workers: Vec<Child> = ["w1", "w2", "w3"].iter().map(|n| spawn_worker(&dir, &state, n, &[])).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut coordinator = spawn_coordinator(&dir, &pipeline.display().to_string(), &state, &[]);
    // w1 dies mid-range; w2 stops mid-range past its lease and wakes up later.
    wait_holding(&state, "w1", &dir);
    workers[0].kill().unwrap();
    workers[0].wait().unwrap();
    // Stopped while it holds a range (not in the moment it completes one: then it goes on and
    // is stopped again), and woken once another worker took that range over.
    loop {
        let held = wait_holding(&state, "w2", &dir);
        signal(&workers[1], "-STOP");
        std::thread::sleep(Duration::from_millis(300));
        if still_holds(&state, &held, "w2") {
            wait_taken(&state, &held, "w2", &dir);
            signal(&workers[1], "-CONT");
            break;
        }
        signal(&workers[1], "-CONT");
    }
    let code = wait_exit(&mut coordinator, "the coordinator", &dir);
    let log = std::fs::read_to_string(dir.path("coordinator.log")).unwrap();
    assert_eq!(code, Some(0), "{log}");
    let report: Value =
        serde_json::from_str(std::fs::read_to_string(dir.path("coordinator.jsonl")).unwrap().lines().last().unwrap())
            .unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    // Rows compared with PostgreSQL itself, not with barge's verification.
    assert_eq!(target.sql(CHECK), source.sql(CHECK));
    assert_eq!(
        target.sql("SELECT count(*), sum(big_id) FROM small"),
        source.sql("SELECT count(*), sum(big_id) FROM small")
    );
    // The finish: the key, and the foreign key, are there.
    let fk = "SELECT count(*) FROM pg_constraint WHERE contype IN ('p', 'f') AND conrelid IN ('big'::regclass, 'small'::regclass)";
    assert_eq!(target.sql(fk)[0][0].as_deref(), Some("3"));
    // Every range committed once in the ledger, and the queue gone.
    let done = state_db.sql("SELECT source_table, count(*) FROM barge_state.ranges_done GROUP BY 1 ORDER BY 1");
    let done: Vec<(String, String)> =
        done.into_iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect();
    assert_eq!(done, [("big".to_string(), "10".to_string()), ("small".to_string(), "10".to_string())]);
    assert_eq!(state_db.sql("SELECT count(*) FROM barge_state.work_queue")[0][0].as_deref(), Some("0"));
    // w2 woke up to a range it no longer held, and committed nothing of it; others took over
    // w1's and w2's ranges.
    let w2 = ranges_of(&dir, "w2");
    assert!(w2.iter().any(|r| r["outcome"] == "lost"), "w2 printed: {w2:?}");
    // (A range w2 took over from w1 may be the one it lost while stopped.)
    let took_over: Vec<Value> =
        ["w2", "w3"].iter().flat_map(|n| ranges_of(&dir, n)).filter(|r| r["attempt"].as_u64() > Some(1)).collect();
    let from: Vec<&str> = took_over.iter().filter_map(|r| r["took_over_from"].as_str()).collect();
    assert!(from.contains(&"w1") && from.contains(&"w2"), "ranges taken over: {took_over:?}");
    // The workers left exit 0 once the run is finished.
    for (i, worker) in workers.iter_mut().enumerate().skip(1) {
        assert_eq!(wait_exit(worker, "a worker", &dir), Some(0), "worker {}", i + 1);
    }
}

#[test]
fn a_distributed_run_from_mariadb_two_runs_in_one_store_and_refusals() {
    let my = MyDb::new("dist_my");
    my.sql(
        "CREATE TABLE big (id int PRIMARY KEY, v varchar(100) NOT NULL, n decimal(12,2));
         INSERT INTO big SELECT seq, concat(md5(seq), repeat('x', seq % 50)), seq / 7 FROM seq_1_to_200000;",
    );
    let other = PgDb::new("dist_other_src");
    other.sql(
        "CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL, n numeric(12,2));
               INSERT INTO big SELECT g, 'o' || g, g FROM generate_series(1, 50000) g;",
    );
    let (first, second) = (PgDb::new("dist_dst1"), PgDb::new("dist_dst2"));
    let state_db = PgDb::new("dist_state2");
    let state = state_db.url();
    let dir = Dir::new();
    let write = |name: &str, from: &str, to: &str| {
        let path = dir.path(&format!("{name}.toml"));
        std::fs::write(&path, format!("source = \"{from}\"\ntarget = \"{to}\"\n[defaults]\npartitions = 6\n")).unwrap();
        path.display().to_string()
    };
    let (a, b) = (write("first", &my.url(), &first.url()), write("second", &other.url(), &second.url()));
    // Two runs in one state store, at once, served by the same two workers.
    let mut workers: Vec<Child> =
        ["x1", "x2"].iter().map(|n| spawn_worker(&dir, &state, n, &["--workers", "2"])).collect();
    let runs: Vec<Child> = [&a, &b]
        .iter()
        .map(|p| {
            Command::new(env!("CARGO_BIN_EXE_barge"))
                .args(["run", p, "--state", &state, "--distributed"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let check = "SELECT count(*), sum(n) FROM big";
    let mine = my.sql(check);
    assert_eq!(first.sql(check)[0], [Some(mine[0][0].clone()), Some(mine[0][1].clone())]);
    let lengths = "SELECT sum(length(v)) FROM big";
    assert_eq!(first.sql(lengths)[0][0].as_deref(), Some(my.sql("SELECT sum(char_length(v)) FROM big")[0][0].as_str()));
    assert_eq!(second.sql(check), other.sql(check));
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let both: Vec<String> = ["x1", "x2"]
        .iter()
        .flat_map(|n| ranges_of(&dir, n))
        .filter_map(|r| r["run"].as_str().map(str::to_string))
        .collect();
    assert!(both.contains(&"first".to_string()) && both.contains(&"second".to_string()), "{both:?}");
    // The first run's target digests were read by the workers while its coordinator built the
    // key (spans of the table's row locator, each row routed to its key range): every row once.
    let digested: u64 = ["x1", "x2"]
        .iter()
        .flat_map(|n| ranges_of(&dir, n))
        .filter(|r| r["run"] == "first" && r.get("digest").is_some() && r["outcome"] == "done")
        .map(|r| r["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(digested, 200_000);
    // A state file cannot share a run; a keyless table cannot be distributed: exit 2, nothing
    // written.
    other.sql("CREATE TABLE loose (a int, b text); INSERT INTO loose VALUES (1, 'x')");
    let third = PgDb::new("dist_dst3");
    let c = write("third", &other.url(), &third.url());
    let run = barge(&["run", &c, "--state", &dir.path("s.db").display().to_string(), "--distributed"]);
    run.assert_code(2);
    assert!(run.stderr.contains("PostgreSQL state store"), "{}", run.stderr);
    let run = barge(&["run", &c, "--state", &state, "--distributed"]);
    run.assert_code(2);
    assert!(run.stderr.contains("table `loose` has no primary key"), "{}", run.stderr);
    assert_eq!(third.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0].as_deref(), Some("0"));
}

/// A range that makes no progress is reported, by the coordinator and by `barge status`, with the
/// target session that waits and the session that holds what it waits for.
#[test]
fn a_stalled_range_is_named_with_the_session_that_blocks_it() {
    let source = PgDb::new("stall_src");
    source.sql("CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL); INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 50000) g;");
    let (target, state_db) = (PgDb::new("stall_dst"), PgDb::new("stall_state"));
    let state = state_db.url();
    let dir = Dir::new();
    let pipeline = dir.path("stall.toml");
    std::fs::write(
        &pipeline,
        format!("source = \"{}\"\ntarget = \"{}\"\n[defaults]\npartitions = 2\n", source.url(), target.url()),
    )
    .unwrap();
    let (coordinator_port, worker_port) = (crate::support::free_port(), crate::support::free_port());
    let coordinator_metrics = format!("127.0.0.1:{coordinator_port}");
    let mut coordinator = spawn_coordinator(
        &dir,
        &pipeline.display().to_string(),
        &state,
        &["--stall-after", "2", "--metrics-addr", &coordinator_metrics],
    );
    // Once the coordinator made the table, a session of "the application" locks it.
    let started = Instant::now();
    while target.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'big'")[0][0].as_deref() != Some("1") {
        assert!(started.elapsed() < Duration::from_secs(60), "the coordinator made no table");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (held, pid) = planted_lock(&target, "big");
    let worker_metrics = format!("127.0.0.1:{worker_port}");
    let mut worker = spawn_worker(
        &dir,
        &state,
        "s1",
        &["--lease", "30", "--metrics-addr", &worker_metrics, "--status-addr", &worker_metrics],
    );
    let blocked_by = format!("held by pid {pid} (idle in transaction");
    let started = Instant::now();
    let report = loop {
        let lines = std::fs::read_to_string(dir.path("coordinator.jsonl")).unwrap_or_default();
        // (A first report may come before the session waits on the lock.)
        let stalled = lines
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| !v["stalled"].is_null() && v["waits"].to_string().contains(&blocked_by));
        if let Some(v) = stalled {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no stall reported: {}\n{}\n{}\n{}",
            lines.lines().filter(|l| l.contains("stalled")).take(2).collect::<Vec<_>>().join("\n"),
            std::fs::read_to_string(dir.path("coordinator.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path("s1.log")).unwrap_or_default(),
            barge(&["status", "--state", &state, "--json"]).stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let waits = report["waits"].to_string();
    assert!(waits.contains("waits on Lock/relation") && waits.contains(&blocked_by), "{report:#}");
    assert_eq!(report["stalled"]["owner"], "s1");
    let log = std::fs::read_to_string(dir.path("coordinator.log")).unwrap();
    assert!(log.contains("no progress for") && log.contains(&blocked_by), "{log}");
    // The metrics say it too: the coordinator's queue, the worker's range held.
    let samples = crate::support::scrape(&coordinator_metrics);
    let metric = |name: &str, label| crate::support::metric(&samples, name, label);
    assert_eq!(metric("barge_distributed_stalled_ranges", None), Some(1.0), "{samples:?}");
    assert_eq!(metric("barge_distributed_ranges", Some(("state", "claimed"))), Some(1.0));
    assert_eq!(metric("barge_distributed_workers", None), Some(1.0));
    let samples = crate::support::scrape(&worker_metrics);
    assert_eq!(crate::support::metric(&samples, "barge_worker_ranges_held", None), Some(1.0), "{samples:?}");
    // The worker's status page's object: the range it holds, copying.
    let status = http_get(&worker_metrics, "/status.json");
    let status: Value = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(status["phase"], "copying", "{status:#}");
    assert_eq!(status["progress"][0]["table"], "big range 0", "{status:#}");
    assert_eq!(status["progress"][0]["step"], "copy", "{status:#}");
    assert!(http_get(&worker_metrics, "/").contains("<html"), "the page");
    // `barge status` says the same, from this shell.
    let run = barge(&["status", "--state", &state, "--stall-after", "2"]);
    run.assert_code(0);
    assert!(run.stdout.contains("stalled: big range") && run.stdout.contains(&blocked_by), "{}", run.stdout);
    // The lock goes: the run finishes, exact.
    held.end("ROLLBACK");
    assert_eq!(wait_exit(&mut coordinator, "the coordinator", &dir), Some(0));
    assert_eq!(target.sql("SELECT count(*), sum(id) FROM big"), source.sql("SELECT count(*), sum(id) FROM big"));
    assert_eq!(wait_exit(&mut worker, "the worker", &dir), Some(0));
    let done: Vec<Value> = ranges_of(&dir, "s1");
    assert_eq!(done.iter().filter(|r| r["outcome"] == "done" && r.get("range").is_some()).count(), 2, "{done:?}");
}

/// A single-process `copy` whose target table is locked by another session says so while it
/// waits, naming the session that holds the lock, and goes on once it is released.
#[test]
fn a_stalled_copy_names_the_session_that_blocks_it() {
    let source = PgDb::new("stall1_src");
    source.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g;");
    let target = PgDb::new("stall1_dst");
    target.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let (held, pid) = planted_lock(&target, "t");
    let dir = Dir::new();
    let log = dir.path("copy.log");
    let mut copy = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["copy", "--from", &source.url(), "--to", &target.url(), "--if-exists", "append", "--stall-after", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = format!("held by pid {pid} (idle in transaction");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("table `t`: no progress for") && text.contains(&said) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no stall reported: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    held.end("ROLLBACK");
    assert_eq!(wait_exit(&mut copy, "the copy", &dir), Some(0));
    assert_eq!(target.sql("SELECT count(*) FROM t"), source.sql("SELECT count(*) FROM t"));
}

/// A range that fails for a reason of its own (not a lost lease) is given back and tried again;
/// after three attempts the run fails (exit 1, naming the range, its table and the error), and
/// its workers stop.
#[test]
fn a_range_that_fails_three_times_fails_the_run_and_stops_its_workers() {
    let source = PgDb::new("fail_src");
    source.sql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 3000) g;");
    let target = PgDb::new("fail_dst");
    // The target refuses the rows of the second range (v >= 2000).
    target.sql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL CHECK (v < 2000))");
    let state_db = PgDb::new("fail_state");
    let state = state_db.url();
    let dir = Dir::new();
    let pipeline = dir.path("fail.toml");
    std::fs::write(
        &pipeline,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\n[defaults]\npartitions = 2\nif_exists = \"append\"\n",
            source.url(),
            target.url()
        ),
    )
    .unwrap();
    let mut worker = spawn_worker(&dir, &state, "f1", &["--run", "fail"]);
    let mut coordinator = spawn_coordinator(&dir, &pipeline.display().to_string(), &state, &[]);
    assert_eq!(wait_exit(&mut coordinator, "the coordinator", &dir), Some(1));
    let log = std::fs::read_to_string(dir.path("coordinator.log")).unwrap();
    assert!(log.contains("of table `t`") && log.contains("failed 3 time(s)") && log.contains("t_v_check"), "{log}");
    assert_eq!(wait_exit(&mut worker, "the worker", &dir), Some(1));
    let ranges = ranges_of(&dir, "f1");
    let failed: Vec<&Value> = ranges.iter().filter(|r| r["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{ranges:?}");
    assert!(failed.iter().all(|r| r["range"] == failed[0]["range"]), "{ranges:?}");
    // Nothing of the failed range is in the target; the good one is, as the source has it.
    assert_eq!(target.sql("SELECT count(*) FROM t WHERE v >= 2000")[0][0].as_deref(), Some("0"));
    // The committed range holds the source's rows 1..n as they are (v = id there), whole.
    let held = target.sql("SELECT count(*), min(id), max(id), sum(v - id) FROM t");
    let n: i64 = held[0][0].as_deref().unwrap().parse().unwrap();
    assert!(n > 0 && n < 2000, "{held:?}");
    assert_eq!(held[0][1..], [Some("1".to_string()), Some(n.to_string()), Some("0".to_string())]);
    let status = barge(&["status", "--state", &state, "--run", "fail"]);
    status.assert_code(0);
    assert!(status.stdout.contains("failed: t range"), "{}", status.stdout);
}

/// `copy --distributed`: the same sharing for a copy given by its flags. Workers parse the copy's
/// own arguments from the store; a URL with a password is refused (it would be stored), exit 2,
/// without printing it.
#[test]
fn a_distributed_copy_is_shared_by_workers_and_keeps_its_foreign_key() {
    let source = PgDb::new("dcopy_src");
    source.sql(
        "CREATE TABLE parent (id int PRIMARY KEY, name varchar(20) NOT NULL);
         CREATE TABLE child (id bigint PRIMARY KEY, parent_id int NOT NULL REFERENCES parent(id), amount numeric(10,2));
         CREATE INDEX child_parent ON child (parent_id);
         INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 500) g;
         INSERT INTO child SELECT g, 1 + g % 500, g / 3.0 FROM generate_series(1, 120000) g;",
    );
    let target = PgDb::new("dcopy_dst");
    let state_db = PgDb::new("dcopy_state");
    let state = state_db.url();
    let dir = Dir::new();
    let mut workers: Vec<Child> =
        ["c1", "c2"].iter().map(|n| spawn_worker(&dir, &state, n, &["--run", "copy"])).collect();
    let copy = barge(&[
        "copy",
        "--from",
        &source.url(),
        "--to",
        &target.url(),
        "--partitions",
        "4",
        "--state",
        &state,
        "--distributed",
        "--json",
    ]);
    copy.assert_code(0);
    let report: Value = serde_json::from_str(copy.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    for worker in &mut workers {
        assert_eq!(wait_exit(worker, "a worker", &dir), Some(0));
    }
    let copied: Vec<Value> = ["c1", "c2"].iter().flat_map(|n| ranges_of(&dir, n)).collect();
    let done: Vec<&Value> = copied.iter().filter(|r| r["outcome"] == "done" && r.get("range").is_some()).collect();
    assert_eq!(done.len(), 8, "{copied:?}");
    assert!(done.iter().all(|r| r["run"] == "copy"), "{copied:?}");
    // The verification's target digests were read by the workers (by key range, once the
    // coordinator restored the tables' keys), every target row once.
    let digested: Vec<&Value> = copied.iter().filter(|r| r.get("digest").is_some()).collect();
    assert!(digested.iter().all(|r| r["outcome"] == "done"), "{digested:?}");
    let rows: u64 = digested.iter().map(|r| r["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 120_500, "{digested:?}");
    assert!(report["tables"].as_array().unwrap().iter().all(|t| t["verified"] == true), "{report}");
    let check =
        "SELECT (SELECT count(*) FROM child), (SELECT sum(amount) FROM child), (SELECT sum(length(name)) FROM parent)";
    assert_eq!(target.sql(check), source.sql(check));
    let fk = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'child'::regclass AND contype = 'f'";
    assert_eq!(target.sql(fk)[0][0].as_deref(), Some("1"));
    let index = "SELECT count(*) FROM pg_indexes WHERE tablename = 'child' AND indexname = 'child_parent'";
    assert_eq!(target.sql(index)[0][0].as_deref(), Some("1"));
    // A password in a URL would be stored for the workers: refused, and never printed.
    let secret = source.url().replacen("postgres@", "postgres:s3cr3t-pw@", 1);
    assert!(secret.contains("s3cr3t-pw"), "{secret}");
    let other = PgDb::new("dcopy_dst2");
    let refused = barge(&["copy", "--from", &secret, "--to", &other.url(), "--state", &state, "--distributed"]);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--from holds a password") && refused.stderr.contains("PGPASSWORD"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("s3cr3t") && !refused.stderr.contains("s3cr3t"), "{}", refused.stderr);
    assert_eq!(other.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0].as_deref(), Some("0"));
}

/// The verification of a distributed run is real when the workers take its digests: a row the
/// target changed on its way in (a trigger that fires even for barge's replica-role loads) is
/// found, by key, exit 3. The tables exist already, so
/// the workers read the target by key ranges once the coordinator has finished them.
#[test]
fn workers_digests_find_a_row_the_target_changed() {
    let source = PgDb::new("ddig_src");
    source.sql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 40000) g;");
    let target = PgDb::new("ddig_dst");
    target.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
         CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.id = 7777 THEN NEW.v := NEW.v + 1; END IF; RETURN NEW; END $$;
         CREATE TRIGGER bump BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION bump();
         ALTER TABLE t ENABLE ALWAYS TRIGGER bump;",
    );
    let state_db = PgDb::new("ddig_state");
    let state = state_db.url();
    let dir = Dir::new();
    // Appending to a table that holds rows is refused (a lost worker's range would be cleared:
    // rows the run did not write); the same table empty is taken.
    target.sql("INSERT INTO t VALUES (-1, -1)");
    let appended = barge(&[
        "copy",
        "--from",
        &source.url(),
        "--to",
        &target.url(),
        "--if-exists",
        "append",
        "--state",
        &state,
        "--distributed",
    ]);
    appended.assert_code(2);
    assert!(appended.stderr.contains("table `t` holds rows and is appended to"), "{}", appended.stderr);
    target.sql("DELETE FROM t");
    let mut worker = spawn_worker(&dir, &state, "g1", &["--run", "copy", "--workers", "2"]);
    let copy = barge(&[
        "copy",
        "--from",
        &source.url(),
        "--to",
        &target.url(),
        "--if-exists",
        "append",
        "--partitions",
        "5",
        "--state",
        &state,
        "--distributed",
        "--json",
    ]);
    copy.assert_code(3);
    let report: Value = serde_json::from_str(copy.stdout.lines().last().unwrap()).unwrap();
    let table = &report["tables"][0];
    assert_eq!(table["verified"], false, "{report}");
    assert_eq!(table["diff"]["changed_total"], 1, "{report}");
    assert_eq!(table["diff"]["changed"], serde_json::json!([[7777]]), "{report}");
    assert_eq!(table["diff"]["missing_total"].as_u64().unwrap() + table["diff"]["extra_total"].as_u64().unwrap(), 0);
    // What the target holds, by its own queries: every row, and exactly one (7777) changed.
    assert_eq!(target.sql("SELECT count(*) FROM t")[0][0].as_deref(), Some("40000"));
    assert_eq!(target.sql("SELECT id, v FROM t WHERE v <> id"), [[Some("7777".to_string()), Some("7778".to_string())]]);
    assert_eq!(wait_exit(&mut worker, "the worker", &dir), Some(0));
    let digested: Vec<Value> = ranges_of(&dir, "g1").into_iter().filter(|r| r.get("digest").is_some()).collect();
    assert_eq!(digested.len(), 5, "{digested:?}");
    assert_eq!(digested.iter().map(|r| r["rows"].as_u64().unwrap()).sum::<u64>(), 40_000, "{digested:?}");
}

/// A long range is copied in chunks; a worker with nothing left to claim splits the chunks its
/// holder has not started off it and copies them itself. Here the holder is held up on its first
/// chunk (an application's uncommitted row with one of its keys), so the run would otherwise wait
/// on it: the second worker takes the second half meanwhile, and the range is recorded once, with
/// both pieces' rows and digests added up (the verification passes).
#[test]
fn an_idle_worker_splits_the_unstarted_chunks_off_a_long_range() {
    let source = PgDb::new("split_src");
    source.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 60000) g; ANALYZE t;",
    );
    let target = PgDb::new("split_dst");
    target.sql("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)");
    let state_db = PgDb::new("split_state");
    let state = state_db.url();
    let dir = Dir::new();
    // The application's row with key 5: the first chunk's load waits for its transaction.
    let held = Held::psql(&target.url(), "BEGIN; INSERT INTO t VALUES (5, 'the application');");
    let chunks = ["--run", "copy", "--chunk-rows", "10000"];
    let mut first = spawn_worker(&dir, &state, "a", &chunks);
    let out = std::fs::File::create(dir.path("coordinator.jsonl")).unwrap();
    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["copy", "--from", &source.url(), "--to", &target.url(), "--if-exists", "append"])
        .args(["--partitions", "1", "--state", &state, "--distributed", "--json"])
        .stdout(out)
        .stderr(std::fs::File::create(dir.path("coordinator.log")).unwrap())
        .spawn()
        .unwrap();
    assert_eq!(wait_holding(&state, "a", &dir), ("t".to_string(), 0));
    let mut second = spawn_worker(&dir, &state, "b", &chunks);
    // The second worker splits off chunks 3..6 of range 0 and copies them while `a` waits.
    let started = Instant::now();
    while !ranges_of(&dir, "b").iter().any(|r| r["piece"] == 1 && r["outcome"] == "done") {
        let log = std::fs::read_to_string(dir.path("b.log")).unwrap_or_default();
        assert!(started.elapsed() < Duration::from_secs(60), "no piece split off and copied: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.path("b.log")).unwrap();
    assert!(log.contains("split t range 0 piece 0 (held by a) before chunk 3 of 6"), "{log}");
    held.end("ROLLBACK");
    assert_eq!(wait_exit(&mut coordinator, "the coordinator", &dir), Some(0));
    for worker in [&mut first, &mut second] {
        assert_eq!(wait_exit(worker, "a worker", &dir), Some(0));
    }
    let report: Value =
        serde_json::from_str(std::fs::read_to_string(dir.path("coordinator.jsonl")).unwrap().lines().last().unwrap())
            .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["tables"][0]["verified"], true, "{report}");
    let check = "SELECT count(*), sum(id), sum(hashtext(v)::numeric) FROM t";
    assert_eq!(target.sql(check), source.sql(check));
    // Each worker copied one piece of range 0: the holder its first three chunks, the other the
    // rest; the ledger records the range once, with every row.
    let piece = |name: &str, n: u64| {
        let copied: Vec<Value> = ranges_of(&dir, name).into_iter().filter(|r| r.get("range").is_some()).collect();
        let done: Vec<&Value> = copied.iter().filter(|r| r["outcome"] == "done").collect();
        assert_eq!(done.len(), 1, "{name}: {copied:?}");
        assert_eq!((done[0]["range"].as_u64(), done[0]["piece"].as_u64()), (Some(0), Some(n)), "{copied:?}");
        done[0]["rows"].as_u64().unwrap()
    };
    let (kept, split) = (piece("a", 0), piece("b", 1));
    assert_eq!(kept + split, 60_000);
    assert!((25_000..=35_000).contains(&split), "{split}");
    let ledger = state_db.sql("SELECT range_id, rows_written FROM barge_state.ranges_done WHERE name = 'copy'");
    assert_eq!(ledger, [[Some("0".to_string()), Some("60000".to_string())]]);
}

/// A role of the target that may load a table but not read it, for the workers only.
struct Loader {
    name: String,
    db: String,
}

impl Loader {
    fn new(db: &PgDb, table: &str) -> Loader {
        let name = format!("barge_loader_{}", std::process::id());
        db.sql(&format!("CREATE ROLE {name} LOGIN; GRANT INSERT ON {table} TO {name};"));
        Loader { name, db: db.name.clone() }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            crate::support::pg_run(&self.db, &format!("DROP OWNED BY {}", self.name));
            crate::support::pg_run("postgres", &format!("DROP ROLE IF EXISTS {}", self.name));
        });
    }
}

/// A digest task that fails for good fails the run: the workers load the target through a role
/// that may insert but not read, so every task they take is refused; after three attempts the
/// coordinator exits 1 naming the task and the server's refusal, and the workers stop. The rows
/// were loaded (the copy itself was not the failure).
#[test]
fn a_digest_task_that_fails_three_times_fails_the_run() {
    let source = PgDb::new("dfail_src");
    source.sql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 9000) g;");
    let target = PgDb::new("dfail_dst");
    target.sql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)");
    let loader = Loader::new(&target, "t");
    let state_db = PgDb::new("dfail_state");
    let state = state_db.url();
    let dir = Dir::new();
    let pipeline = dir.path("dfail.toml");
    std::fs::write(
        &pipeline,
        "source = \"${DFAIL_SOURCE}\"\ntarget = \"${DFAIL_TARGET}\"\n[defaults]\npartitions = 3\nif_exists = \"append\"\n",
    )
    .unwrap();
    let as_loader = target.url().replacen("postgres@", &format!("{}@", loader.name), 1);
    assert!(as_loader.contains(&loader.name), "{as_loader}");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["worker", "--state", &state, "--run", "dfail", "--name", "r1", "--json", "--lease", "3"])
        .env("DFAIL_SOURCE", source.url())
        .env("DFAIL_TARGET", &as_loader)
        .stdout(std::fs::File::create(dir.path("r1.jsonl")).unwrap())
        .stderr(std::fs::File::create(dir.path("r1.log")).unwrap())
        .spawn()
        .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["run", &pipeline.display().to_string(), "--state", &state, "--distributed"])
        .env("DFAIL_SOURCE", source.url())
        .env("DFAIL_TARGET", target.url())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{log}\n{}", std::fs::read_to_string(dir.path("r1.log")).unwrap());
    assert!(log.contains("verifying `t`: digest task") && log.contains("failed 3 time(s)"), "{log}");
    assert!(log.contains("permission denied"), "{log}");
    assert_eq!(wait_exit(&mut worker, "the worker", &dir), Some(1));
    let tasks: Vec<Value> = ranges_of(&dir, "r1").into_iter().filter(|r| r.get("digest").is_some()).collect();
    assert!(tasks.len() >= 3 && tasks.iter().all(|t| t["outcome"] == "failed"), "{tasks:?}");
    // The copy was whole: the target's rows, by its own query, are the source's.
    let check = "SELECT count(*), sum(id), sum(v) FROM t";
    assert_eq!(target.sql(check), source.sql(check));
}
