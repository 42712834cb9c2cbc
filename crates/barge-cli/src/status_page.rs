//! `--status-addr HOST:PORT`: a live status page, self-contained (its style and script inline;
//! it fetches nothing but `status.json` from the same address), and `/status.json`, the status
//! object `--json` prints.

use std::sync::Arc;

use barge_core::Error;

/// The page: a template with no data in it, filled by its script from `status.json`.
const PAGE: &str = include_str!("status.html");

/// What the page may load: itself and `status.json`, nothing from elsewhere.
const POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self'";

/// The status as JSON text, made on each request.
pub type StatusFn = dyn Fn() -> String + Send + Sync;

/// The server, serving until dropped.
pub struct StatusServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The address it listens on (the port chosen when `:0` was asked).
    pub addr: String,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a command serves: its status object, and its metrics in Prometheus' text format.
#[derive(Clone)]
pub struct Served {
    pub status: Arc<StatusFn>,
    pub metrics: Arc<StatusFn>,
}

/// Serves at `--status-addr` and at `--metrics-addr` (one server when they are the same), saying
/// where on stderr; `what` names the command.
pub fn serve_at(
    status_addr: Option<&str>,
    metrics_addr: Option<&str>,
    served: &Served,
    what: &str,
) -> Result<Vec<StatusServer>, Error> {
    let mut servers = Vec::new();
    if let Some(addr) = status_addr {
        let server = serve(addr, served.clone())?;
        eprintln!("{what}: status page at http://{}/ (metrics at /metrics)", server.addr);
        servers.push(server);
    }
    if let Some(addr) = metrics_addr.filter(|m| Some(*m) != status_addr) {
        let server = serve(addr, served.clone())?;
        eprintln!("{what}: metrics at http://{}/metrics", server.addr);
        servers.push(server);
    }
    Ok(servers)
}

/// Serves the page, `/status.json` and `/metrics` at `addr` in a thread of its own.
pub fn serve(addr: &str, served: Served) -> Result<StatusServer, Error> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| Error::Config(format!("--status-addr {addr}: cannot listen there: {e}")))?;
    let addr = server.server_addr().to_ip().map_or_else(|| addr.to_string(), |a| a.to_string());
    let server = Arc::new(server);
    let serving = server.clone();
    let thread = std::thread::spawn(move || {
        for request in serving.incoming_requests() {
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let (body, kind, code) = match path.as_str() {
                "/" | "/index.html" => (PAGE.to_string(), "text/html; charset=utf-8", 200),
                "/status.json" => ((served.status)(), "application/json", 200),
                "/metrics" => ((served.metrics)(), "text/plain; version=0.0.4; charset=utf-8", 200),
                _ => ("not found\n".to_string(), "text/plain; charset=utf-8", 404),
            };
            let header = |name: &str, value: &str| {
                tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
            };
            let response = tiny_http::Response::from_string(body)
                .with_status_code(code)
                .with_header(header("Content-Type", kind))
                .with_header(header("Cache-Control", "no-store"))
                .with_header(header("Content-Security-Policy", POLICY));
            let _ = request.respond(response);
        }
    });
    Ok(StatusServer { server, thread: Some(thread), addr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: &str, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_page_and_the_status_and_nothing_else() {
        let served = Served {
            status: Arc::new(|| r#"{"phase":"validating"}"#.to_string()),
            metrics: Arc::new(|| "barge_up 1\n".to_string()),
        };
        let server = serve("127.0.0.1:0", served).unwrap();
        let page = get(&server.addr, "/");
        assert!(page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"), "{page}");
        assert!(page.contains("Content-Security-Policy: default-src 'none'"), "{page}");
        assert!(page.contains("<script>") && page.contains("status.json"));
        // Self-contained: no address of anything elsewhere.
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://") && !PAGE.contains("//cdn"));
        assert!(get(&server.addr, "/status.json").ends_with(r#"{"phase":"validating"}"#));
        assert!(get(&server.addr, "/metrics").ends_with("barge_up 1\n"));
        assert!(get(&server.addr, "/elsewhere").contains("404"));
    }

    #[test]
    fn metrics_follow_the_text_format_with_label_values_escaped() {
        let mut metrics = Metrics::default();
        metrics.one("barge_up", "gauge", "Whether it runs.", 1.0);
        metrics.family("barge_rows_total", "counter", "Rows.").sample(
            "barge_rows_total",
            &[("table", "we\"ird\\na\nme")],
            2.5,
        );
        assert_eq!(
            metrics.finish(),
            "# HELP barge_up Whether it runs.\n# TYPE barge_up gauge\nbarge_up 1\n\
             # HELP barge_rows_total Rows.\n# TYPE barge_rows_total counter\n\
             barge_rows_total{table=\"we\\\"ird\\\\na\\nme\"} 2.5\n"
        );
    }

    #[test]
    fn the_series_keeps_the_last_ten_minutes() {
        let mut series = Series::default();
        for second in 0..700 {
            series.push(f64::from(second), 0.5, 10.0);
        }
        let shown: serde_json::Value = serde_json::from_str(&series.with(serde_json::json!({"phase": "x"}))).unwrap();
        let samples = shown["series"].as_array().unwrap();
        assert_eq!(samples.len(), 600);
        assert_eq!(samples[0], serde_json::json!([100.0, 0.5, 10.0]));
        assert_eq!(shown["phase"], "x");
    }

    #[test]
    fn an_address_taken_is_a_configuration_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let error =
            serve(&addr, Served { status: Arc::new(String::new), metrics: Arc::new(String::new) }).err().unwrap();
        assert!(error.is_usage() && error.to_string().contains("cannot listen"), "{error}");
    }
}

/// The last ten minutes of lag and change rate, a sample a second, that the page draws.
#[derive(Default)]
pub struct Series(std::collections::VecDeque<[f64; 3]>);

impl Series {
    /// Samples kept: ten minutes at one a second.
    const KEPT: usize = 600;

    /// Adds a sample: seconds since the epoch, lag in seconds, changes a second.
    pub fn push(&mut self, at: f64, lag: f64, rate: f64) {
        self.0.push_back([at, lag, rate]);
        while self.0.len() > Self::KEPT {
            self.0.pop_front();
        }
    }

    /// `status` (a JSON object) with the samples as its `series`.
    pub fn with(&self, mut status: serde_json::Value) -> String {
        status["series"] = serde_json::json!(self.0);
        status.to_string()
    }
}

/// Metrics in Prometheus' text exposition format: each family's HELP and TYPE once, then its
/// samples.
#[derive(Default)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// One metric family: `kind` is `gauge` or `counter` (a counter's name ends in `_total`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        use std::fmt::Write;
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// A sample of the family just declared, with its labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        use std::fmt::Write;
        self.text.push_str(name);
        if !labels.is_empty() {
            let shown: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
                .collect();
            let _ = write!(self.text, "{{{}}}", shown.join(","));
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family with one unlabelled sample.
    pub fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// The metrics of a sync's status (also a migration's, which runs one).
pub fn sync_metrics(metrics: &mut Metrics, status: &serde_json::Value) {
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    metrics
        .one(
            "barge_sync_lag_seconds",
            "gauge",
            "Seconds from the last applied transaction's commit to its apply.",
            number(&status["lag_seconds"]),
        )
        .one(
            "barge_sync_lag_bytes",
            "gauge",
            "Bytes of the source's log the stream has not applied.",
            number(&status["lag_bytes"]),
        )
        .one(
            "barge_sync_changes_applied_total",
            "counter",
            "Changes applied (rows upserted and deleted).",
            number(&status["applied_total"]),
        )
        .one(
            "barge_sync_changes_per_second",
            "gauge",
            "Changes applied per second since the sync started.",
            number(&status["changes_per_s"]),
        );
    let tables = status["tables"].as_array().cloned().unwrap_or_default();
    for (field, name, help) in [
        ("upserted", "barge_sync_table_upserted_rows_total", "Rows a table's changes wrote."),
        ("deleted", "barge_sync_table_deleted_rows_total", "Rows a table's changes deleted."),
        ("read_back", "barge_sync_table_read_back_rows_total", "Changed rows read back from the source."),
    ] {
        metrics.family(name, "counter", help);
        for table in &tables {
            metrics.sample(name, &[("table", table["table"].as_str().unwrap_or(""))], number(&table[field]));
        }
    }
    metrics.family("barge_sync_table_stopped", "gauge", "1 when a table stopped syncing (its error in the status).");
    for table in &tables {
        let stopped = if table["error"].is_string() { 1.0 } else { 0.0 };
        metrics.sample("barge_sync_table_stopped", &[("table", table["table"].as_str().unwrap_or(""))], stopped);
    }
}

/// Progress that also keeps each table's counts, for the status page of a copy (`run`).
pub struct Watched {
    inner: Box<dyn barge_exec::Progress>,
    tables: std::sync::Mutex<std::collections::BTreeMap<String, TableProgress>>,
    started: std::time::Instant,
}

/// One table's progress, as the page shows it.
#[derive(Clone, Debug, serde::Serialize)]
struct TableProgress {
    table: String,
    /// `copy` or `verify`.
    step: &'static str,
    /// An estimate, from the plan.
    total_rows: u64,
    rows: u64,
    /// The phase's one-line summary once it ended.
    summary: Option<String>,
}

impl Watched {
    pub fn new(inner: Box<dyn barge_exec::Progress>) -> Watched {
        Watched { inner, tables: Default::default(), started: std::time::Instant::now() }
    }

    /// The status object of the copy: `phase` (`copying` until `done`), rows done and their
    /// rate, and each table's progress.
    pub fn status(&self, done: bool) -> String {
        let tables: Vec<TableProgress> = self.tables.lock().expect("progress lock").values().cloned().collect();
        let rows: u64 = tables.iter().filter(|t| t.step == "copy").map(|t| t.rows).sum();
        serde_json::json!({
            "phase": if done { "done" } else { "copying" },
            "applied_total": rows,
            "changes_per_s": rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3),
            "progress": tables,
        })
        .to_string()
    }

    /// The copy's metrics: rows per table and step, and tables done.
    pub fn metrics(&self) -> String {
        let tables: Vec<TableProgress> = self.tables.lock().expect("progress lock").values().cloned().collect();
        let mut metrics = Metrics::default();
        metrics.family("barge_copy_rows_total", "counter", "Rows copied or verified, per table and step.");
        for t in &tables {
            metrics.sample("barge_copy_rows_total", &[("table", &t.table), ("step", t.step)], t.rows as f64);
        }
        metrics.family("barge_copy_rows_estimated", "gauge", "The plan's estimate of a table's rows, per step.");
        for t in &tables {
            metrics.sample("barge_copy_rows_estimated", &[("table", &t.table), ("step", t.step)], t.total_rows as f64);
        }
        metrics.family("barge_copy_table_done", "gauge", "1 once a table's step ended.");
        for t in &tables {
            let done = if t.summary.is_some() { 1.0 } else { 0.0 };
            metrics.sample("barge_copy_table_done", &[("table", &t.table), ("step", t.step)], done);
        }
        metrics.finish()
    }

    fn update(&self, table: &str, phase: barge_exec::Phase, f: impl FnOnce(&mut TableProgress)) {
        let step = match phase {
            barge_exec::Phase::Copy => "copy",
            barge_exec::Phase::Verify => "verify",
        };
        let mut tables = self.tables.lock().expect("progress lock");
        let entry = tables.entry(table.to_string()).or_insert_with(|| TableProgress {
            table: table.to_string(),
            step,
            total_rows: 0,
            rows: 0,
            summary: None,
        });
        if entry.step != step {
            *entry = TableProgress { table: table.to_string(), step, total_rows: 0, rows: 0, summary: None };
        }
        f(entry);
    }
}

impl barge_exec::Progress for Watched {
    fn started(&self, table: &str, phase: barge_exec::Phase, total_rows: u64) {
        self.update(table, phase, |t| t.total_rows = total_rows);
        self.inner.started(table, phase, total_rows);
    }

    fn advance(&self, table: &str, phase: barge_exec::Phase, rows: u64) {
        self.update(table, phase, |t| t.rows += rows);
        self.inner.advance(table, phase, rows);
    }

    fn finished(&self, table: &str, phase: barge_exec::Phase, summary: &str) {
        self.update(table, phase, |t| t.summary = Some(summary.to_string()));
        self.inner.finished(table, phase, summary);
    }
}
