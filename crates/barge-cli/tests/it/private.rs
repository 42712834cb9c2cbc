//! Servers of a test's own, on free ports, so that stopping, crashing or reconfiguring them
//! disturbs no other test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server of the test's own (initdb in a temporary directory, a free port), so that
/// restarting it disturbs no other test.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
    /// Server settings beyond the defaults (`-c name=value …`).
    settings: String,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePg {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A server with logical decoding (`wal_level = logical`), for change capture.
    pub fn start_logical() -> Self {
        Self::start_with("-c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10")
    }

    fn start_with(settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::free_port();
        Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
        let data = dir.path().join("data");
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/initdb"), "-A", "trust", "-U", "postgres", "--no-sync"])
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb (PostgreSQL 15) must be installed");
        assert!(status.success(), "initdb failed");
        let server = PrivatePg { dir, port, settings: settings.into() };
        server.pg_ctl(&["start"]);
        server
    }

    pub fn pg_ctl(&self, action: &[&str]) {
        self.pg_ctl_mode("fast", action);
    }

    /// Stops the server as a crash would: `pg_ctl stop -m immediate` (no checkpoint, no flush of
    /// what the server had not flushed yet; recovery replays its WAL at the next start).
    pub fn crash(&self) {
        self.pg_ctl_mode("immediate", &["stop"]);
    }

    fn pg_ctl_mode(&self, mode: &str, action: &[&str]) {
        // fsync=off: no data reaches the disk sooner, but a stop of the server (not of the
        // machine) keeps what the server wrote to the OS, which is what a crash test needs.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-w", "-m", mode, "-o", &options])
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(action)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action:?} failed");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// Runs `sql` in database `db`, failing the test when psql does; returns its unaligned output.
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success() || db == "postgres",
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Restarts the server once a COPY into it is running.
    pub fn restart_during_copy(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if !self.sql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY%FROM STDIN%' LIMIT 1").is_empty() {
                self.pg_ctl(&["restart"]);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no COPY was seen on the private server");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.pg_ctl(&["stop"]));
    }
}

/// A MariaDB server of the test's own (mariadb-install-db in a temporary directory, a free port),
/// for server settings that would disturb other tests, and to kill.
pub struct PrivateMy {
    /// Holds the data directory until the server is gone.
    dir: tempfile::TempDir,
    port: u16,
    options: Vec<String>,
    server: Option<std::process::Child>,
}

impl PrivateMy {
    pub fn start(options: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A temporary directory of its own: MariaDB names its temporary tables after its pid in
        // tmpdir and clears what it finds there, so servers sharing /tmp (the shared one too)
        // remove each other's (seen: parallel mariadb-install-db failing on a vanished table).
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Command::new("chown").arg("-R").arg("mysql").arg(dir.path()).status().unwrap();
        let status = Command::new("mariadb-install-db")
            // --no-defaults first: the shared server's my.cnf (its socket, pid file and logs) is not
            // this server's.
            .args(["--no-defaults", "--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db (MariaDB server) must be installed");
        assert!(status.success(), "mariadb-install-db failed");
        let port = crate::support::free_port();
        let mut server =
            PrivateMy { dir, port, options: options.iter().map(|o| o.to_string()).collect(), server: None };
        server.run();
        server
    }

    /// Starts the server on its data directory and waits until it answers.
    fn run(&mut self) {
        let server = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--datadir={}", self.dir.path().join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.path().join("pid").display()))
            .arg(format!("--tmpdir={}", self.dir.path().join("tmp").display()))
            .args(&self.options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd must be installed");
        self.server = Some(server);
        let started = Instant::now();
        while self.sql("SELECT 1").is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "the private MariaDB did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server with SIGKILL (a crash: InnoDB recovers at the next start) and starts it again.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        self.run();
    }

    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn sql(&self, sql: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .args(["--protocol=tcp", "-h", "127.0.0.1", "-P", &self.port.to_string(), "-uroot", "-N", "-B", "-e", sql])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for PrivateMy {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
