//! `barge migrate`: whole blue-green migrations between private servers with change capture,
//! while a scripted application writes (inserts, updates, deletes) through its own user, retries
//! what the write freeze refuses, and follows the switch through the pipeline's hook. Rows are
//! compared with each engine's own client, not with barge's verification.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::private::{PrivateMy, PrivatePg};
use crate::support::{Dir, Held, barge, free_port, wait_for_port};

/// One side of a migration, reached with its engine's command-line client.
#[derive(Clone)]
enum Db {
    Pg { port: u16, db: String },
    My { port: u16, db: String },
}

impl Db {
    fn client(&self, admin: bool, sql: &str) -> Command {
        match self {
            Db::Pg { port, db } => {
                let mut c = Command::new("psql");
                c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-d", db, "-v", "ON_ERROR_STOP=1", "-At"]);
                c.args(["-U", if admin { "postgres" } else { "appuser" }, "-c", sql]);
                c
            }
            Db::My { port, db } => {
                let mut c = Command::new("mariadb");
                c.args(["--protocol=tcp", "-h", "127.0.0.1", "-P", &port.to_string(), "-D", db, "-N", "-B"]);
                c.args([if admin { "-uroot" } else { "-uapp" }, "-e", sql]);
                c
            }
        }
    }

    /// `sql` as the application's user: its output, or the client's error.
    fn app(&self, sql: &str) -> Result<String, String> {
        let out = self.client(false, sql).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `sql` as the administrator, failing the test when it fails.
    fn admin(&self, sql: &str) -> String {
        let out = self.client(true, sql).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().replace('\t', "|")
    }

    /// Every row of both tables, as text, in key order.
    fn rows(&self) -> String {
        format!("{}\n--\n{}", self.admin(ORDERS), self.admin(CUSTOMERS))
    }

    /// A session held open (a lock, an uncommitted row) until [`Held::end`].
    fn hold(&self, sql: &str) -> Held {
        match self {
            Db::Pg { port, db } => Held::psql(&format!("postgres://postgres@127.0.0.1:{port}/{db}"), sql),
            Db::My { .. } => unreachable!("held sessions are PostgreSQL's here"),
        }
    }
}

const ORDERS: &str = "SELECT id, customer, amount, coalesce(note, '-') FROM orders ORDER BY id";
const CUSTOMERS: &str = "SELECT id, name FROM customers ORDER BY id";

/// The application: writes of every kind to the side the hook last named (`switchover`: the
/// target, else the source), each retried until it goes through (a frozen database refuses it,
/// a freeze ends its session).
struct App {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<AppLog>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct AppLog {
    /// The notes of the rows inserted.
    inserted: Vec<String>,
    /// Writes that went through, on the source and on the target.
    writes: [u64; 2],
    /// Attempts refused (the freeze), tried again.
    retries: u64,
    /// Writes that never went through.
    failed: Vec<String>,
    /// Writes begun (the pause takes effect between two).
    busy: bool,
}

/// The application's `n`th write to the orders: an insert noted `w{n}`, an update or a delete.
fn order_write(n: u64) -> String {
    match n % 3 {
        0 => format!("INSERT INTO orders (customer, amount, note) VALUES ('app', 1.00, 'w{n}')"),
        1 => format!("UPDATE orders SET amount = amount + 1 WHERE id = {}", 100 + n * 7919 % 4000),
        _ => format!("DELETE FROM orders WHERE id = {}", 5000 + n),
    }
}

impl App {
    fn start(source: Db, target: Db, side: PathBuf, first: u64) -> App {
        App::start_with(source, target, side, first, order_write)
    }

    /// An application whose `n`th write is `write(n)` (every third one an insert).
    fn start_with(source: Db, target: Db, side: PathBuf, first: u64, write: fn(u64) -> String) -> App {
        let (stop, pause) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let log = Arc::new(std::sync::Mutex::new(AppLog::default()));
        let thread = {
            let (stop, pause, log) = (stop.clone(), pause.clone(), log.clone());
            std::thread::spawn(move || {
                let mut n = first;
                while !stop.load(Ordering::SeqCst) {
                    if pause.load(Ordering::SeqCst) {
                        log.lock().unwrap().busy = false;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    log.lock().unwrap().busy = true;
                    n += 1;
                    let note = format!("w{n}");
                    let sql = write(n);
                    let started = Instant::now();
                    loop {
                        let on_target = std::fs::read_to_string(&side).is_ok_and(|s| s.trim() == "switchover");
                        let db = if on_target { &target } else { &source };
                        match db.app(&sql) {
                            Ok(_) => {
                                let mut log = log.lock().unwrap();
                                log.writes[usize::from(on_target)] += 1;
                                if n.is_multiple_of(3) {
                                    log.inserted.push(note.clone());
                                }
                                break;
                            }
                            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                                log.lock().unwrap().failed.push(format!("{sql}: {e}"));
                                break;
                            }
                            Err(_) => {
                                log.lock().unwrap().retries += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        App { stop, pause, log, thread: Some(thread) }
    }

    /// Stops writing (after the write in flight) until [`App::resume`].
    fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        wait_until("the application to pause", || !self.log.lock().unwrap().busy);
    }

    fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    fn writes(&self) -> [u64; 2] {
        self.log.lock().unwrap().writes
    }

    /// Waits until `more` writes went through on the source (0) or the target (1).
    fn wait_writes(&self, side: usize, more: u64) {
        let from = self.writes()[side];
        wait_until("the application's writes", || self.writes()[side] >= from + more);
    }

    fn finish(mut self) -> AppLog {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(90), "waited 90 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A migration's files: the pipeline, its state, the side file the hook writes.
struct Migration {
    dir: Dir,
    pipeline: String,
    state: String,
    side: PathBuf,
    /// `migrate start`, while it runs.
    start: Option<Child>,
}

impl Migration {
    fn new(from: &str, to: &str, extra: &str) -> Migration {
        let dir = Dir::new();
        let side = dir.path("side");
        let pipeline = dir.path("mig.toml");
        std::fs::write(
            &pipeline,
            format!(
                "source = \"{from}\"\ntarget = \"{to}\"\n\n[migration]\nverify_every = 1\nshadow_reads = 100\n\
                 hook = \"test ! -e '{fail}' && printf %s \\\"$BARGE_MIGRATE_EVENT\\\" > '{}'\"\n{extra}",
                side.display(),
                fail = dir.path("fail").display()
            ),
        )
        .unwrap();
        let state = dir.path("mig.state.db").display().to_string();
        Migration { pipeline: pipeline.display().to_string(), state, side, dir, start: None }
    }

    /// An incremental migration of one table per wave, in order; its hook writes each wave's
    /// event to `sides/N` (returned), which that table's application follows.
    fn waves(from: &str, to: &str, tables: &[&str]) -> (Migration, PathBuf) {
        let m = Migration::new(from, to, "");
        let sides = m.dir.path("sides");
        std::fs::create_dir(&sides).unwrap();
        let waves: String = tables.iter().map(|t| format!("\n[[migration.waves]]\ntables = [\"{t}\"]\n")).collect();
        std::fs::write(
            &m.pipeline,
            format!(
                "source = \"{from}\"\ntarget = \"{to}\"\n\n[migration]\nstrategy = \"incremental\"\nverify_every = 1\n\
                 shadow_reads = 100\nhook = \"printf %s \\\"$BARGE_MIGRATE_EVENT\\\" > '{}'/$BARGE_MIGRATE_WAVE\"\n{waves}",
                sides.display()
            ),
        )
        .unwrap();
        (m, sides)
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, extra: &[&str]) {
        assert!(self.start.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path("start.log")).unwrap();
        let json = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path("start.jsonl")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_barge"))
            .args(["migrate", "start", &self.pipeline, "--state", &self.state, "--json"])
            .args(extra)
            .stdout(json)
            .stderr(log)
            .spawn()
            .unwrap();
        self.start = Some(child);
    }

    /// `kill -9` of `migrate start`.
    fn kill(&mut self) {
        let mut child = self.start.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn run(&self, command: &str, extra: &[&str]) -> crate::support::Run {
        let mut args = vec!["migrate", command, &self.pipeline, "--state", &self.state];
        args.extend_from_slice(extra);
        barge(&args)
    }

    fn status(&self) -> Value {
        let run = self.run("status", &["--json"]);
        run.assert_code(0);
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// The status, or null before `start` recorded the migration.
    fn status_if_started(&self) -> Value {
        let run = self.run("status", &["--json"]);
        if run.code == 2 && run.stderr.contains("holds no migration") {
            return Value::Null;
        }
        run.assert_code(0);
        serde_json::from_str(&run.stdout).unwrap()
    }

    fn wait_phase(&self, phase: &str) -> Value {
        let started = Instant::now();
        loop {
            let last = self.status_if_started();
            if last["phase"] == phase {
                return last;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "no phase {phase} in 90 s: {last:#}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_allowed(&self) -> Value {
        let mut last = Value::Null;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            last = self.status_if_started();
            if last["switchover_allowed"] == true {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the switchover was not allowed within 90 s: {last:#}\n{}", self.log());
    }

    /// Waits until wave `wave` of an incremental migration allows its switchover.
    fn wait_wave_allowed(&self, wave: usize) -> Value {
        let mut last = Value::Null;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            let run = self.run("status", &["--json", "--wave", &wave.to_string()]);
            if run.code == 0 {
                last = serde_json::from_str(&run.stdout).unwrap();
                if last["switchover_allowed"] == true {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("wave {wave}'s switchover was not allowed within 90 s: {last:#}\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("start.log")).unwrap_or_default()
    }

    /// Waits for `migrate start` to end by itself; its exit code.
    fn ended(&mut self) -> Option<i32> {
        let mut child = self.start.take().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "migrate start did not end: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Migration {
    fn drop(&mut self) {
        if let Some(mut child) = self.start.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Both sides hold the same rows; else the first lines that differ.
fn assert_same(source: &Db, target: &Db, when: &str) {
    let (a, b) = (source.rows(), target.rows());
    if a != b {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        let only_source: Vec<_> = a.iter().filter(|l| !b.contains(l)).take(10).collect();
        let only_target: Vec<_> = b.iter().filter(|l| !a.contains(l)).take(10).collect();
        panic!("{when}: the sides differ; only in the source: {only_source:?}; only in the target: {only_target:?}");
    }
}

/// With the application paused: waits until the sync named `what` brought both sides to the
/// same rows, then lets the application write again.
fn caught_up(app: &App, source: &Db, target: &Db, what: &str) {
    app.pause();
    wait_until(what, || source.rows() == target.rows());
    assert_same(source, target, what);
    app.resume();
}

/// The refusal's reasons, as `--json` gives them.
fn refused(run: &crate::support::Run) -> String {
    run.assert_code(3);
    let out: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    assert_eq!(out["ok"], false, "{}", run.stdout);
    out["reasons"].to_string()
}

const PG_SCHEMA: &str = "
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), note text);
    INSERT INTO orders (customer, amount) SELECT 'c' || g, g * 1.5 FROM generate_series(1, 10000) g;
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers SELECT g, 'name ' || g FROM generate_series(1, 500) g;";

const PG_APP: &str = "DO $$ BEGIN CREATE ROLE appuser LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO appuser;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO appuser;";

/// What barge made for its streams, left on a PostgreSQL database.
fn pg_leftovers(db: &Db) -> String {
    db.admin(
        "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()) || ' slots, ' || \
         (SELECT count(*) FROM pg_publication) || ' publications, ' || \
         (SELECT count(*) FROM pg_class WHERE relname = 'barge_sync') || ' barge_sync'",
    )
}

fn pg_frozen(db: &Db) -> String {
    db.app("SHOW default_transaction_read_only").unwrap()
}

#[test]
fn migrate_postgres_to_postgres_switches_over_rolls_back_and_completes_while_an_application_writes() {
    // Two servers: a transaction held open in the target must not hold back the source's slot.
    let (server, other) = (PrivatePg::start_logical(), PrivatePg::start_logical());
    server.sql("CREATE DATABASE src");
    other.sql("CREATE DATABASE dst");
    let (source, target) =
        (Db::Pg { port: server.port(), db: "src".into() }, Db::Pg { port: other.port(), db: "dst".into() });
    source.admin(&format!("{PG_APP} {}", PG_SCHEMA));
    target.admin(PG_APP);
    // Held back on the target by transactions that are not done: the bulk copy's last step (the
    // stream's start, recorded once every table is copied), then the first apply of `orders`.
    target.admin(
        "CREATE TABLE barge_sync (stream text NOT NULL, tbl text NOT NULL, position int8 NOT NULL,
           updated timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stream, tbl))",
    );
    let copy_held = target.hold("BEGIN; INSERT INTO barge_sync (stream, tbl, position) VALUES ('m_mig', '', 0);");
    let mut m = Migration::new(&server.url_of("src"), &other.url_of("dst"), "");
    let app = App::start(source.clone(), target.clone(), m.side.clone(), 0);
    m.spawn();
    m.wait_phase("copying");
    wait_until("the bulk copy", || target.admin("SELECT count(*) FROM pg_tables WHERE tablename = 'orders'") == "1");
    let reasons = refused(&m.run("switchover", &["--json"]));
    assert!(reasons.contains("the phase is copying"), "{reasons}");
    assert_eq!(pg_frozen(&source), "off");
    // kill -9 while copying, then start again: the bulk copy resumes.
    std::thread::sleep(Duration::from_secs(1));
    m.kill();
    // The killed process's session would record the start once the row is free: ended first.
    target.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock'");
    m.spawn();
    let apply_held =
        target.hold("BEGIN; INSERT INTO barge_sync (stream, tbl, position) VALUES ('m_mig', 'orders', 0);");
    copy_held.end("ROLLBACK;");
    let status = m.wait_phase("catching-up");
    assert_eq!(status["history"].as_array().unwrap().len(), 3, "{status:#}");
    std::thread::sleep(Duration::from_secs(3));
    let status = m.status();
    assert_eq!(status["phase"], "catching-up", "{status:#}");
    assert!(status["lag_seconds"].as_f64().unwrap() > 1.0, "{status:#}");
    let reasons = refused(&m.run("switchover", &["--json"]));
    assert!(reasons.contains("the phase is catching-up"), "{reasons}");
    // kill -9 while catching up, then start again: it goes on.
    m.kill();
    m.spawn();
    apply_held.end("ROLLBACK;");
    m.wait_phase("validating");
    let status = m.wait_allowed();
    // One start per migration.
    let second = m.run("start", &[]);
    second.assert_code(2);
    assert!(second.stderr.contains("already running"), "{}", second.stderr);
    assert!(status["shadow"]["compared"].as_u64().unwrap() > 0, "{status:#}");
    assert!(status["verification"]["passes"].as_u64().unwrap() > 0, "{status:#}");

    // A planted difference lasts: counted against the threshold (0), so the switchover is refused
    // and the source keeps taking writes.
    target.admin("UPDATE customers SET name = 'planted' WHERE id = 3");
    wait_until("the planted mismatch", || {
        let status = m.status();
        status["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["table"] == "customers" && x["key"] == serde_json::json!([3]))
    });
    let reasons = refused(&m.run("switchover", &["--json"]));
    assert!(reasons.contains("1 persistent mismatch"), "{reasons}");
    assert_eq!(pg_frozen(&source), "off");
    app.wait_writes(0, 5);
    target.admin("UPDATE customers SET name = 'name 3' WHERE id = 3");
    m.wait_allowed();

    // Lag over the limit: the apply waits on a lock in the target.
    let lagging = target.hold("BEGIN; LOCK TABLE orders IN SHARE MODE;");
    wait_until("the lag", || m.status()["lag_seconds"].as_f64().unwrap() > 2.0);
    let reasons = refused(&m.run("switchover", &["--json", "--max-lag", "1"]));
    assert!(reasons.contains("at most 1 s"), "{reasons}");
    assert_eq!(pg_frozen(&source), "off");
    lagging.end("ROLLBACK;");
    // kill -9 while validating, then start again.
    m.kill();
    m.spawn();
    m.wait_allowed();

    // The switchover, with the application writing all along.
    let run = m.run("switchover", &["--json"]);
    run.assert_code(0);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    let freeze_ms = out["switchover"]["freeze_ms"].as_u64().unwrap();
    assert!(freeze_ms < 10_000, "{out:#}");
    // Verified in the freeze: the table the application writes to, not the one nobody changed
    // since its last clean pass.
    assert_eq!(out["switchover"]["verified"], serde_json::json!(["orders"]), "{out:#}");
    assert_eq!(std::fs::read_to_string(&m.side).unwrap(), "switchover");
    assert_eq!(pg_frozen(&source), "on");
    app.wait_writes(1, 30);
    // kill -9 after the switch, then start again: the reverse sync goes on.
    m.kill();
    m.spawn();
    app.wait_writes(1, 30);
    caught_up(&app, &source, &target, "the reverse sync");
    app.wait_writes(1, 30);
    let status = m.status();
    assert_eq!((status["phase"].as_str(), status["direction"].as_str()), (Some("switched"), Some("reverse")));

    // Rollback: the source takes every write back (the application pauses, so that the sides
    // can be compared as the rollback left them).
    app.pause();
    let run = m.run("rollback", &["--json"]);
    run.assert_code(0);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["rollback"]["verified"], serde_json::json!(["orders"]), "{out:#}");
    assert_eq!(std::fs::read_to_string(&m.side).unwrap(), "rollback");
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    assert_same(&source, &target, "after the rollback");
    app.resume();
    app.wait_writes(0, 10);
    let log = app.finish();
    assert!(log.failed.is_empty(), "{:?}", log.failed);
    assert!(log.retries > 0 && log.writes[0] > 0 && log.writes[1] > 0, "{:?} {}", log.writes, log.retries);
    let notes = source.admin("SELECT note FROM orders WHERE note IS NOT NULL");
    let notes: std::collections::HashSet<&str> = notes.lines().collect();
    let lost: Vec<&String> = log.inserted.iter().filter(|n| !notes.contains(n.as_str())).collect();
    assert!(lost.is_empty(), "inserted, then missing from the source: {lost:?}");
    assert_eq!(pg_frozen(&source), "off");
    assert_eq!(pg_frozen(&target), "on");
    // The source's sequence is past every key the target gave.
    source.app("INSERT INTO orders (customer) VALUES ('after')").unwrap();

    let run = m.run("complete", &["--json"]);
    run.assert_code(0);
    assert_eq!(pg_leftovers(&source), "0 slots, 0 publications, 0 barge_sync");
    assert_eq!(pg_leftovers(&target), "0 slots, 0 publications, 0 barge_sync");
    let status = m.status();
    assert_eq!(status["phase"], "rolled-back");
    assert_eq!(status["cleaned"], true);
    let phases: Vec<&str> =
        status["history"].as_array().unwrap().iter().map(|s| s["phase"].as_str().unwrap()).collect();
    assert_eq!(phases[..6], ["planned", "copying", "catching-up", "validating", "switched", "rolled-back"]);
    m.run("complete", &["--reopen"]).assert_code(0);
    assert_eq!(pg_frozen(&target), "off");
}

fn my_app_user(server: &PrivateMy, db: &str) {
    server
        .sql(&format!(
            "CREATE USER IF NOT EXISTS 'app'@'%'; CREATE USER IF NOT EXISTS 'app'@'localhost'; \
                       GRANT ALL ON {db}.* TO 'app'@'%'; GRANT ALL ON {db}.* TO 'app'@'localhost'"
        ))
        .expect("app user");
}

const BINLOG: &[&str] = &["--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL", "--server-id=1"];

const MY_SCHEMA: &str = "
    CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, customer varchar(40) NOT NULL,
      amount decimal(12,2), note varchar(40));
    INSERT INTO orders (customer, amount) SELECT concat('c', seq), seq * 1.5 FROM seq_1_to_10000;
    CREATE TABLE customers (id int PRIMARY KEY, name varchar(40) NOT NULL);
    INSERT INTO customers SELECT seq, concat('name ', seq) FROM seq_1_to_500;";

/// A private MariaDB with a binlog holding `src` (the schema, an application user) and a private
/// PostgreSQL with an empty `dst` the application user may write in.
fn mariadb_to_postgres() -> (PrivateMy, PrivatePg, Db, Db) {
    let my = PrivateMy::start(BINLOG);
    my.sql(&format!("CREATE DATABASE src; USE src; {MY_SCHEMA}")).expect("schema");
    my_app_user(&my, "src");
    let pg = PrivatePg::start_logical();
    pg.sql("CREATE DATABASE dst");
    let (source, target) = (Db::My { port: my.port(), db: "src".into() }, Db::Pg { port: pg.port(), db: "dst".into() });
    target.admin(PG_APP);
    (my, pg, source, target)
}

#[test]
fn migrate_mariadb_to_postgres_switches_over_and_the_reverse_sync_keeps_the_source_current() {
    let (my, pg, source, target) = mariadb_to_postgres();
    let mut m = Migration::new(&my.url("src"), &pg.url_of("dst"), "");
    let app = App::start(source.clone(), target.clone(), m.side.clone(), 0);
    m.spawn();
    m.wait_allowed();
    // A switchover whose hook fails: the source takes writes again, the phase stays, and
    // status says what happened.
    std::fs::write(m.dir.path("fail"), "").unwrap();
    let run = m.run("switchover", &["--json"]);
    run.assert_code(1);
    assert!(run.stdout.contains("running the hook"), "{}", run.stdout);
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("0"));
    let status = m.status();
    assert_eq!(status["phase"], "validating");
    assert!(status["last_error"].as_str().unwrap().contains("the source takes writes again"), "{status:#}");
    // No reverse stream is left behind.
    assert!(pg_leftovers(&target).starts_with("0 slots, 0 publications"), "{}", pg_leftovers(&target));
    app.wait_writes(0, 10);
    std::fs::remove_file(m.dir.path("fail")).unwrap();
    let run = m.run("switchover", &["--json"]);
    run.assert_code(0);
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("1"));
    app.wait_writes(1, 30);
    caught_up(&app, &source, &target, "the reverse sync");
    app.wait_writes(1, 10);
    let log = app.finish();
    assert!(log.failed.is_empty(), "{:?}", log.failed);
    wait_until("the reverse sync", || source.rows() == target.rows());
    assert_same(&source, &target, "after the reverse sync");
    let run = m.run("complete", &["--json"]);
    run.assert_code(0);
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    assert_eq!(pg_leftovers(&target), "0 slots, 0 publications, 0 barge_sync");
    assert_eq!(
        my.sql("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'barge_sync'").as_deref(),
        Some("0")
    );
    // The retired source stays read-only until reopened.
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("1"));
    m.run("complete", &["--reopen"]).assert_code(0);
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("0"));
    // `start --json`: a status object a second, through the phases it ran in.
    let lines = std::fs::read_to_string(m.dir.path("start.jsonl")).unwrap();
    let statuses: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let phases: std::collections::BTreeSet<&str> = statuses.iter().map(|v| v["phase"].as_str().unwrap()).collect();
    assert!(phases.contains("validating") && phases.contains("switched"), "{phases:?}");
    assert!(statuses.iter().all(|v| v["preconditions"].is_array() && v["lag_seconds"].is_number()));
}

#[test]
fn migrate_postgres_to_mariadb_switches_over_and_rolls_back_with_every_write_on_the_source() {
    let pg = PrivatePg::start_logical();
    pg.sql("CREATE DATABASE src");
    let source = Db::Pg { port: pg.port(), db: "src".into() };
    source.admin(&format!("{PG_APP} {}", PG_SCHEMA));
    let my = PrivateMy::start(BINLOG);
    my.sql("CREATE DATABASE dst").expect("database");
    my_app_user(&my, "dst");
    let target = Db::My { port: my.port(), db: "dst".into() };
    // A password in the source's URL (the private server trusts, so it is never asked for):
    // it shows nowhere.
    let secret = "s3cret-pw";
    let from = pg.url_of("src").replace("postgres@", &format!("postgres:{secret}@"));
    let mut m = Migration::new(&from, &my.url("dst"), "");
    let app = App::start(source.clone(), target.clone(), m.side.clone(), 0);
    m.spawn();
    let status = m.wait_allowed();
    // Refused before a switchover: a rollback and a complete (exit 3, nothing changed).
    assert!(refused(&m.run("rollback", &["--json"])).contains("a rollback follows a switchover"));
    assert!(refused(&m.run("complete", &["--json"])).contains("complete follows a switchover"));
    // A switchover over its --freeze-timeout is undone: the source takes writes again, and
    // no reverse stream is left.
    let run = m.run("switchover", &["--json", "--freeze-timeout", "0.001"]);
    run.assert_code(1);
    assert!(run.stdout.contains("the freeze timeout passed"), "{}", run.stdout);
    assert_eq!(pg_frozen(&source), "off");
    assert!(pg_leftovers(&source).ends_with("0 barge_sync"), "{}", pg_leftovers(&source));
    assert_eq!(m.status()["phase"], "validating");
    app.wait_writes(0, 5);
    m.wait_allowed();
    let switched = m.run("switchover", &["--json"]);
    switched.assert_code(0);
    for shown in [status.to_string(), switched.stdout, switched.stderr, m.run("status", &[]).stdout, m.log()] {
        assert!(!shown.contains(secret), "{shown}");
    }
    app.wait_writes(1, 30);
    caught_up(&app, &source, &target, "the reverse sync");
    app.wait_writes(1, 30);
    app.pause();
    // A rollback whose hook fails: the target takes writes again, the source stays frozen.
    std::fs::write(m.dir.path("fail"), "").unwrap();
    let run = m.run("rollback", &["--json"]);
    run.assert_code(1);
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("0"));
    assert_eq!(pg_frozen(&source), "on");
    assert_eq!(m.status()["phase"], "switched");
    std::fs::remove_file(m.dir.path("fail")).unwrap();
    let run = m.run("rollback", &["--json"]);
    run.assert_code(0);
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("1"));
    assert_eq!(pg_frozen(&source), "off");
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    assert_same(&source, &target, "after the rollback");
    app.resume();
    app.wait_writes(0, 10);
    let log = app.finish();
    assert!(log.failed.is_empty(), "{:?}", log.failed);
    let notes = source.admin("SELECT note FROM orders WHERE note IS NOT NULL");
    let notes: std::collections::HashSet<&str> = notes.lines().collect();
    assert!(log.inserted.iter().all(|n| notes.contains(n.as_str())), "an insert is missing from the source");
    source.app("INSERT INTO orders (customer) VALUES ('after')").unwrap();
    m.run("complete", &[]).assert_code(0);
    assert_eq!(pg_leftovers(&source), "0 slots, 0 publications, 0 barge_sync");
    assert_eq!(
        my.sql("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'barge_sync'").as_deref(),
        Some("0")
    );
}

/// What a migration refuses before anything is made (exit 2): a pipeline without a
/// `[migration]` section, and a table renamed or transformed (it could not sync back).
#[test]
fn migrate_refuses_a_reshaped_table_and_a_missing_section_before_connecting() {
    let dir = Dir::new();
    let state = dir.path("s.db").display().to_string();
    let urls = "source = \"postgres://postgres@127.0.0.1:1/x\"\ntarget = \"postgres://postgres@127.0.0.1:1/y\"\n";
    let plain = dir.path("plain.toml");
    std::fs::write(&plain, urls).unwrap();
    let run = barge(&["migrate", "start", plain.to_str().unwrap(), "--state", &state]);
    run.assert_code(2);
    assert!(run.stderr.contains("no [migration] section"), "{}", run.stderr);
    let reshaped = dir.path("reshaped.toml");
    std::fs::write(&reshaped, format!("{urls}[migration]\n[[tables]]\nsource = \"orders\"\ntarget = \"sales\"\n"))
        .unwrap();
    let run = barge(&["migrate", "start", reshaped.to_str().unwrap(), "--state", &state]);
    run.assert_code(2);
    assert!(run.stderr.contains("table `orders` is renamed, filtered or transformed"), "{}", run.stderr);
    assert!(!dir.path("s.db").exists(), "a refused migration makes no state file");
    let run = barge(&["migrate", "status", plain.to_str().unwrap(), "--state", &state]);
    run.assert_code(2);
}

/// A private server with logical decoding holding `src` (the schema, an application user) and
/// an empty `dst` the application user may write in.
fn one_server() -> (PrivatePg, Db, Db) {
    let server = PrivatePg::start_logical();
    server.sql("CREATE DATABASE src");
    server.sql("CREATE DATABASE dst");
    let (source, target) =
        (Db::Pg { port: server.port(), db: "src".into() }, Db::Pg { port: server.port(), db: "dst".into() });
    source.admin(&format!("{PG_APP} {PG_SCHEMA}"));
    target.admin(PG_APP);
    (server, source, target)
}

/// The status page in a real browser (headless Chromium): it loads with no request but to
/// barge's own address, follows the phase without a reload, and lists a planted mismatch.
#[test]
fn migrate_status_page_follows_the_migration_in_a_browser() {
    let (server, _source, target) = one_server();
    let mut m = Migration::new(&server.url_of("src"), &server.url_of("dst"), "");
    let port = free_port();
    let page = format!("http://127.0.0.1:{port}/");
    m.spawn_with(&["--status-addr", &format!("127.0.0.1:{port}")]);
    wait_for_port(port);
    let browser = crate::browser::Browser::start();
    browser.goto(&page);
    browser.wait_text("phase", |p| p == "validating");
    browser.wait_text("allowed", |a| a == "allowed");
    assert!(browser.text("preconditions").contains("lag"), "{}", browser.text("preconditions"));
    // A planted difference shows up with its key, and the switchover is no longer allowed.
    target.admin("UPDATE customers SET name = 'planted' WHERE id = 3");
    let mismatches = browser.wait_text("mismatches", |t| t.contains("[3]"));
    assert!(mismatches.contains("customers") && mismatches.contains("changed"), "{mismatches}");
    assert_eq!(browser.text("allowed"), "not allowed");
    target.admin("UPDATE customers SET name = 'name 3' WHERE id = 3");
    browser.wait_text("mismatch-count", |n| n == "0");
    m.wait_allowed();
    // The phase changes under the open page.
    m.run("switchover", &["--json"]).assert_code(0);
    browser.wait_text("phase", |p| p == "switched");
    assert!(browser.text("windows").contains("switchover: writes frozen"), "{}", browser.text("windows"));
    assert!(browser.text("timeline").contains("validating"), "{}", browser.text("timeline"));
    // The metrics at the same address say the same.
    let samples = crate::support::scrape(&format!("127.0.0.1:{port}"));
    let metric = |name: &str, label: Option<(&str, &str)>| crate::support::metric(&samples, name, label);
    assert_eq!(metric("barge_migrate_phase", Some(("phase", "switched"))), Some(1.0), "{samples:?}");
    assert_eq!(metric("barge_migrate_phase", Some(("phase", "validating"))), Some(0.0));
    assert_eq!(metric("barge_migrate_source_frozen", None), Some(1.0));
    assert_eq!(metric("barge_migrate_persistent_mismatches", None), Some(0.0));
    assert!(metric("barge_migrate_verification_passes_total", None).is_some_and(|n| n >= 1.0));
    // Nothing was fetched from anywhere but barge's own address.
    let requested = browser.requested();
    assert!(requested.iter().any(|u| u.ends_with("/status.json")), "{requested:?}");
    let elsewhere: Vec<&String> = requested.iter().filter(|u| !u.starts_with(&page)).collect();
    assert!(elsewhere.is_empty(), "requests elsewhere: {elsewhere:?}");
}

/// `strategy = "shadow"`: the target is kept current and validated while the application writes
/// to the source; a switchover is refused; `complete` ends it, leaving nothing behind.
#[test]
fn migrate_shadow_keeps_the_target_current_and_validated_and_never_switches() {
    let (server, source, target) = one_server();
    let mut m = Migration::new(&server.url_of("src"), &server.url_of("dst"), "strategy = \"shadow\"\n");
    let app = App::start(source.clone(), target.clone(), m.side.clone(), 0);
    m.spawn();
    m.wait_phase("validating");
    wait_until("two verification passes and shadow reads", || {
        let status = m.status();
        status["verification"]["passes"].as_u64().unwrap() >= 2 && status["shadow"]["compared"].as_u64().unwrap() > 0
    });
    let status = m.status();
    assert_eq!(status["switchover_allowed"], false, "{status:#}");
    let reasons = refused(&m.run("switchover", &["--json"]));
    assert!(reasons.contains("never switches"), "{reasons}");
    assert_eq!(pg_frozen(&source), "off");
    caught_up(&app, &source, &target, "the target to catch up");
    app.wait_writes(0, 10);
    m.run("complete", &["--json"]).assert_code(0);
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    let log = app.finish();
    assert!(log.failed.is_empty() && log.writes[1] == 0, "{:?} {:?}", log.failed, log.writes);
    assert_eq!(pg_leftovers(&source), "0 slots, 0 publications, 0 barge_sync");
    assert_eq!(pg_leftovers(&target), "0 slots, 0 publications, 0 barge_sync");
    assert_eq!(pg_frozen(&source), "off");
    assert_eq!(m.status()["phase"], "completed");
}

/// `strategy = "big-bang"`: the source is frozen before the copy and stays so; the switchover
/// reports the downtime from that freeze; a rollback before the switch lets the source write.
#[test]
fn migrate_big_bang_freezes_the_source_before_the_copy_and_reports_the_downtime() {
    let (server, source, target) = one_server();
    let mut m = Migration::new(&server.url_of("src"), &server.url_of("dst"), "strategy = \"big-bang\"\n");
    // The plan forecasts the downtime from a bench of the tables, and leaves nothing behind.
    let plan = barge(&["plan", &m.pipeline, "--forecast", "--forecast-seconds", "1", "--json"]);
    plan.assert_code(0);
    let forecast = plan.json()["forecast"].clone();
    let downtime = forecast["downtime_seconds"].as_f64().unwrap_or_else(|| panic!("{forecast:#}"));
    assert!(downtime > 0.0 && downtime >= forecast["copy_seconds"].as_f64().unwrap(), "{forecast:#}");
    let tables: Vec<&str> =
        forecast["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert!(tables.contains(&"orders") && tables.contains(&"customers"), "{forecast:#}");
    assert_eq!(target.admin("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'barge%'"), "0");
    assert_eq!(target.admin("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
    let app = App::start(source.clone(), target.clone(), m.side.clone(), 0);
    app.wait_writes(0, 5);
    m.spawn();
    m.wait_allowed();
    assert_eq!(pg_frozen(&source), "on");
    // No write reaches the source while it is frozen: the application retries.
    let before = app.writes()[0];
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(app.writes()[0], before);
    assert_same(&source, &target, "validating a frozen source");
    let run = m.run("switchover", &["--json"]);
    run.assert_code(0);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    let (freeze, downtime) =
        (out["switchover"]["freeze_ms"].as_u64().unwrap(), out["switchover"]["downtime_ms"].as_u64().unwrap());
    assert!(downtime > freeze && downtime > 1000, "{out:#}");
    app.wait_writes(1, 20);
    app.pause();
    wait_until("the reverse sync", || source.rows() == target.rows());
    assert_same(&source, &target, "after the switch");
    let log = app.finish();
    assert!(log.failed.is_empty() && log.retries > 0, "{:?} {}", log.failed, log.retries);
    m.run("complete", &[]).assert_code(0);
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    assert_eq!(pg_frozen(&source), "on", "the retired source stays read-only");

    // A big-bang abandoned before its switch: the source takes writes again.
    server.sql("CREATE DATABASE dst2");
    let again = Db::Pg { port: server.port(), db: "dst2".into() };
    again.admin(PG_APP);
    m.run("complete", &["--reopen"]).assert_code(0);
    let mut second = Migration::new(&server.url_of("src"), &server.url_of("dst2"), "strategy = \"big-bang\"\n");
    second.spawn();
    second.wait_allowed();
    assert_eq!(pg_frozen(&source), "on");
    second.run("rollback", &["--json"]).assert_code(0);
    assert_eq!(second.ended(), Some(0), "{}", second.log());
    assert_eq!(pg_frozen(&source), "off");
    source.app("INSERT INTO orders (customer) VALUES ('after')").unwrap();
    second.run("complete", &[]).assert_code(0);
    assert_eq!(pg_leftovers(&source), "0 slots, 0 publications, 0 barge_sync");
}

/// The application's `n`th write to the customers: an insert, a rename, a delete.
fn customer_write(n: u64) -> String {
    match n % 3 {
        0 => format!("INSERT INTO customers VALUES ({}, 'new {n}')", 100_000 + n),
        1 => format!("UPDATE customers SET name = 'renamed {n}' WHERE id = {}", 1 + n * 7 % 500),
        _ => format!("DELETE FROM customers WHERE id = {}", 100_000 + n - 2),
    }
}

/// `strategy = "incremental"`: the customers (wave 1) switch over while the orders (wave 2)
/// keep syncing forward, each table written by an application that follows its wave's hook;
/// waves switch in order and roll back in reverse; each wave's freeze holds only its tables.
#[test]
fn migrate_incremental_switches_wave_by_wave_while_later_waves_still_sync() {
    let (server, source, target) = one_server();
    let (mut m, sides) = Migration::waves(&server.url_of("src"), &server.url_of("dst"), &["customers", "orders"]);
    let customers = App::start_with(source.clone(), target.clone(), sides.join("1"), 0, customer_write);
    let orders = App::start(source.clone(), target.clone(), sides.join("2"), 0);
    m.spawn();
    let wave = |n: usize| {
        let run = m.run("status", &["--json", "--wave", &n.to_string()]);
        if run.code == 2 && run.stderr.contains("holds no migration") {
            return Value::Null;
        }
        run.assert_code(0);
        serde_json::from_str::<Value>(&run.stdout).unwrap()
    };
    let started = Instant::now();
    while !(wave(1)["switchover_allowed"] == true && wave(2)["phase"] == "validating") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the waves did not get ready in 90 s: {:#}\n{:#}\n{}",
            wave(1),
            wave(2),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Without a wave named, the switch is refused; and wave 2 cannot go before wave 1.
    let run = m.run("switchover", &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("one wave at a time"), "{}", run.stderr);
    let reasons = refused(&m.run("switchover", &["--json", "--wave", "2"]));
    assert!(reasons.contains("wave 1 is not switched yet"), "{reasons}");
    // `status` without a wave shows both.
    let all = m.status();
    assert_eq!(all["waves"].as_array().unwrap().len(), 2, "{all:#}");
    assert_eq!(all["waves"][1]["wave_tables"], serde_json::json!(["orders"]));

    let run = m.run("switchover", &["--json", "--wave", "1"]);
    run.assert_code(0);
    // Only the customers are frozen on the source: the orders still take the application's
    // writes there, and the database is not read-only.
    assert_eq!(pg_frozen(&source), "off");
    let refused_write = source.app("INSERT INTO customers VALUES (999999, 'late')").unwrap_err();
    assert!(refused_write.contains("frozen by barge migrate"), "{refused_write}");
    orders.wait_writes(0, 20);
    customers.wait_writes(1, 20);
    assert_eq!(wave(1)["phase"], "switched");
    assert_eq!(wave(2)["phase"], "validating");
    // The customers come back to the source by wave 1's reverse sync; the orders go forward
    // by wave 2's sync.
    customers.pause();
    orders.pause();
    wait_until("both directions", || source.rows() == target.rows());
    assert_same(&source, &target, "wave 1 switched, wave 2 syncing");
    customers.resume();
    orders.resume();
    // Wave 2 follows; then wave 1 cannot roll back before it.
    wait_until("wave 2 to allow its switchover", || wave(2)["switchover_allowed"] == true);
    m.run("switchover", &["--json", "--wave", "2"]).assert_code(0);
    orders.wait_writes(1, 20);
    let reasons = refused(&m.run("rollback", &["--json", "--wave", "1"]));
    assert!(reasons.contains("roll the later waves back first"), "{reasons}");
    // Wave 2 rolls back (verifying the orders the target took): its orders are written on the
    // source again, and every order the application inserted anywhere is there.
    let run = m.run("rollback", &["--json", "--wave", "2"]);
    run.assert_code(0);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["rollback"]["verified"], serde_json::json!(["orders"]), "{out:#}");
    orders.wait_writes(0, 20);
    customers.pause();
    wait_until("the customers' reverse sync", || source.admin(CUSTOMERS) == target.admin(CUSTOMERS));
    let (customers, orders) = (customers.finish(), orders.finish());
    assert!(customers.failed.is_empty() && orders.failed.is_empty(), "{:?} {:?}", customers.failed, orders.failed);
    let notes = source.admin("SELECT string_agg(note, ',') FROM orders WHERE note IS NOT NULL");
    let notes: std::collections::HashSet<&str> = notes.split(',').collect();
    let lost: Vec<&String> = orders.inserted.iter().filter(|n| !notes.contains(n.as_str())).collect();
    assert!(lost.is_empty() && orders.writes[1] > 0, "orders lost: {lost:?}");
    assert!(customers.retries > 0, "the customers' writes met the freeze");
    for n in ["1", "2"] {
        m.run("complete", &["--json", "--wave", n]).assert_code(0);
    }
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    assert_eq!(pg_leftovers(&source), "0 slots, 0 publications, 0 barge_sync");
    assert_eq!(pg_leftovers(&target), "0 slots, 0 publications, 0 barge_sync");
    // The retired customers stay frozen on the source until reopened; the orders were never.
    assert!(source.app("INSERT INTO customers VALUES (999998, 'late')").is_err());
    source.app("INSERT INTO orders (customer) VALUES ('after')").unwrap();
    m.run("complete", &["--wave", "1", "--reopen"]).assert_code(0);
    source.app("INSERT INTO customers VALUES (999998, 'late')").unwrap();
}

/// An incremental migration from MariaDB: a wave's freeze is triggers on its tables only (the
/// server stays writable); barge's reverse sync writes through them, the application cannot.
#[test]
fn migrate_incremental_from_mariadb_freezes_only_the_switched_wave_s_tables() {
    let (my, pg, source, target) = mariadb_to_postgres();
    let (mut m, sides) = Migration::waves(&my.url("src"), &pg.url_of("dst"), &["orders", "customers"]);
    let orders = App::start(source.clone(), target.clone(), sides.join("1"), 0);
    let customers = App::start_with(source.clone(), target.clone(), sides.join("2"), 0, customer_write);
    m.spawn();
    m.wait_wave_allowed(1);
    m.run("switchover", &["--json", "--wave", "1"]).assert_code(0);
    assert_eq!(my.sql("SELECT @@GLOBAL.read_only").as_deref(), Some("0"));
    let refused_write = source.app("INSERT INTO orders (customer) VALUES ('late')").unwrap_err();
    assert!(refused_write.contains("frozen by barge migrate"), "{refused_write}");
    customers.wait_writes(0, 20);
    orders.wait_writes(1, 20);
    // The orders the target takes come back through the triggers; the customers go forward.
    orders.pause();
    customers.pause();
    wait_until("both directions", || source.rows() == target.rows());
    assert_same(&source, &target, "wave 1 switched, wave 2 syncing");
    let (orders, customers) = (orders.finish(), customers.finish());
    assert!(orders.failed.is_empty() && customers.failed.is_empty(), "{:?} {:?}", orders.failed, customers.failed);
    assert!(orders.retries > 0, "the orders' writes met the freeze");
    m.run("complete", &["--wave", "1", "--reopen"]).assert_code(0);
    source.app("INSERT INTO orders (customer) VALUES ('reopened')").unwrap();
    m.run("switchover", &["--wave", "2"]).assert_code(0);
    m.run("complete", &["--wave", "2"]).assert_code(0);
    assert_eq!(m.ended(), Some(0), "{}", m.log());
    let triggers =
        "SELECT group_concat(EVENT_OBJECT_TABLE) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'src'";
    assert_eq!(my.sql(triggers).as_deref(), Some("customers,customers,customers"));
}
