use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::Connection;
use serde_json::Value;

/// A temporary directory holding a test's databases; removed when dropped.
pub struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        Dir { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sqlite:///abs/path/name`.
    pub fn url(&self, name: &str) -> String {
        format!("sqlite://{}", self.path(name).display())
    }

    /// Runs SQL against a database file, creating it if needed.
    pub fn sql(&self, name: &str, sql: &str) {
        Connection::open(self.path(name)).unwrap().execute_batch(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    pub fn conn(&self, name: &str) -> Connection {
        Connection::open(self.path(name)).unwrap()
    }

    pub fn count(&self, name: &str, table: &str) -> i64 {
        self.conn(name).query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0)).unwrap()
    }
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

pub fn barge(args: &[&str]) -> Run {
    barge_env(args, &[])
}

/// Runs the binary with extra environment variables.
pub fn barge_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_barge"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("run barge");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Copies every table of `from` to `to` with `--json`, asserting success and verification.
pub fn copy_ok(dir: &Dir, from: &str, to: &str, extra: &[&str]) -> Value {
    let (from, to) = (dir.url(from), dir.url(to));
    let mut args = vec!["copy", "--from", &from, "--to", &to, "--json"];
    args.extend_from_slice(extra);
    let run = barge(&args);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["ok"], true, "{json}");
    json
}

pub fn table<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["tables"].as_array().unwrap().iter().find(|t| t["table"] == name).unwrap_or_else(|| panic!("{name} in {json}"))
}

/// Every row of a table with each value's storage class, in key order, for exact comparisons.
pub fn dump(conn: &Connection, table: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1, 2")).unwrap();
    let columns = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..columns)
            .map(|i| {
                let v = row.get_ref(i).unwrap();
                format!("{:?}", v)
            })
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A PostgreSQL database that exists for one test (server from BARGE_TEST_PG, default the local one).
pub struct PgDb {
    pub name: String,
}

fn pg_server() -> String {
    std::env::var("BARGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn pg_run(db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&format!("{}/{db}", pg_server()), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} must be reachable: {e}", pg_server()));
        tokio::spawn(conn);
        let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{e:?}\n{sql}"));
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    })
}

impl PgDb {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("barge_cli_{tag}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        pg_run("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        pg_run("postgres", &format!("CREATE DATABASE {name}"));
        PgDb { name }
    }

    /// The database's URL; tests use plain connections (TLS has a test of its own).
    pub fn url(&self) -> String {
        format!("{}/{}?sslmode=disable", pg_server(), self.name)
    }

    pub fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        pg_run(&self.name, sql)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // A test that failed because the server went away must not abort on a second panic here
        // (that hides its own message).
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| {
                pg_run("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            });
            return;
        }
        pg_run("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A MySQL/MariaDB database that exists for one test, driven with the `mariadb` client (server
/// from BARGE_TEST_MYSQL_HOST/PORT, default 127.0.0.1:3306, user root without a password).
pub struct MyDb {
    pub name: String,
}

fn my_host() -> (String, String) {
    (
        std::env::var("BARGE_TEST_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        std::env::var("BARGE_TEST_MYSQL_PORT").unwrap_or_else(|_| "3306".into()),
    )
}

fn my_run(db: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let (host, port) = my_host();
    let mut command = Command::new("mariadb");
    command.args(["--default-character-set=utf8mb4", "--protocol=tcp", "-h", &host, "-P", &port, "-uroot", "-N", "-B"]);
    if let Some(db) = db {
        command.arg(db);
    }
    let out = command.args(["-e", sql]).output().expect("the mariadb client must be installed");
    assert!(
        out.status.success(),
        "MySQL at {host}:{port} must be reachable: {}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

impl MyDb {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("barge_cli_{tag}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        my_run(None, &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} CHARACTER SET utf8mb4"));
        MyDb { name }
    }

    pub fn url(&self) -> String {
        let (host, port) = my_host();
        format!("mysql://root@{host}:{port}/{}", self.name)
    }

    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        my_run(Some(&self.name), sql)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| my_run(None, &format!("DROP DATABASE IF EXISTS {}", self.name)));
            return;
        }
        my_run(None, &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// The engine test kit: one shape for a test database of any engine, so that a case can run on
/// every source × target pair ([`crate::engine_matrix`]).
pub trait TestDb {
    /// The engine's name, as barge registers it.
    fn engine(&self) -> &'static str;
    /// The URL barge reaches the database with.
    fn url(&self) -> String;
    /// Runs statements (several, separated by `;`).
    fn execute(&self, sql: &str);
    /// The rows of a query, each value as text (`NULL` for NULL).
    fn rows(&self, sql: &str) -> Vec<Vec<String>>;
    /// A binary literal of `hex` in the engine's SQL.
    fn binary_literal(&self, hex: &str) -> String {
        format!("X'{hex}'")
    }
    /// Runs statements on a connection of its own, from any thread (a concurrent writer).
    fn executor(&self) -> Box<dyn Fn(&str) + Send>;
}

/// The engines of the matrix, and how each makes a fresh test database.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
    Mysql,
}

impl Engine {
    pub fn db(self, tag: &str) -> Box<dyn TestDb> {
        match self {
            Engine::Sqlite => Box::new(SqliteDb::new()),
            Engine::Postgres => Box::new(PgDb::new(tag)),
            Engine::Mysql => Box::new(MyDb::new(tag)),
        }
    }
}

/// A SQLite database file in a temporary directory of its own.
pub struct SqliteDb {
    dir: Dir,
}

impl SqliteDb {
    pub fn new() -> Self {
        SqliteDb { dir: Dir::new() }
    }
}

impl TestDb for SqliteDb {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn url(&self) -> String {
        self.dir.url("db.sqlite")
    }

    fn execute(&self, sql: &str) {
        self.dir.sql("db.sqlite", sql);
    }

    fn executor(&self) -> Box<dyn Fn(&str) + Send> {
        let path = self.dir.path("db.sqlite");
        Box::new(move |sql| {
            let conn = Connection::open(&path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(120)).unwrap();
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
        })
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = self.dir.conn("db.sqlite");
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
        let columns = stmt.column_count();
        stmt.query_map([], |row| {
            Ok((0..columns)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "NULL".to_string(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                })
                .collect())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }
}

impl TestDb for PgDb {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn url(&self) -> String {
        PgDb::url(self)
    }

    fn execute(&self, sql: &str) {
        self.sql(sql);
    }

    fn executor(&self) -> Box<dyn Fn(&str) + Send> {
        let name = self.name.clone();
        Box::new(move |sql| {
            pg_run(&name, sql);
        })
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.sql(sql).into_iter().map(|r| r.into_iter().map(|v| v.unwrap_or_else(|| "NULL".into())).collect()).collect()
    }

    fn binary_literal(&self, hex: &str) -> String {
        format!("'\\x{hex}'::bytea")
    }
}

impl TestDb for MyDb {
    fn engine(&self) -> &'static str {
        "mysql"
    }

    fn url(&self) -> String {
        MyDb::url(self)
    }

    fn execute(&self, sql: &str) {
        self.sql(sql);
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        // The client's batch mode already prints NULL as `NULL`.
        self.sql(sql)
    }

    fn executor(&self) -> Box<dyn Fn(&str) + Send> {
        let name = self.name.clone();
        Box::new(move |sql| {
            my_run(Some(&name), sql);
        })
    }
}

/// One sample scraped from a `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Scrapes `http://{addr}/metrics` and parses Prometheus' text format, failing the test on a line
/// that breaks it: every sample's family has a TYPE line before it, names are valid, counters end
/// in `_total`, label values are quoted.
/// `GET path` at `addr`: the response's head and body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    (head.to_string(), body.to_string())
}

pub fn scrape(addr: &str) -> Vec<Sample> {
    let (head, body) = http_get(addr, "/metrics");
    let body = body.as_str();
    assert!(head.contains("200") && head.to_ascii_lowercase().contains("text/plain; version=0.0.4"), "{head}");
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid(name) && ["counter", "gauge"].contains(&kind), "{line}");
            assert!(kind != "counter" || name.ends_with("_total"), "a counter's name ends in _total: {line}");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = inner
                    .split("\",")
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        assert!(valid(k), "{line}");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(types.contains_key(name), "no TYPE before {line}");
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

/// The value of the sample `name` with label `label` (if given), from a scrape.
pub fn metric(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v)))
        .map(|s| s.value)
}

/// A port free on the loopback address now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (up to 60 s) until something listens on loopback port `port`.
pub fn wait_for_port(port: u16) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "nothing listens on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A PostgreSQL session held open by psql (a lock, an uncommitted row) until [`Held::end`];
/// killed if the test ends first.
pub struct Held(pub std::process::Child);

impl Held {
    /// Opens a session on `url` and runs `sql` in it (e.g. `BEGIN; LOCK TABLE …;`).
    pub fn psql(url: &str, sql: &str) -> Held {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("psql")
            .args([url, "-At"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.as_mut().unwrap(), "{sql}").unwrap();
        Held(child)
    }

    /// Ends the session with `sql` (COMMIT or ROLLBACK) and waits for psql to exit.
    pub fn end(mut self, sql: &str) {
        use std::io::Write;
        let mut stdin = self.0.stdin.take().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        drop(stdin);
        self.0.wait().unwrap();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
