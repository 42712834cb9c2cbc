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

/// Serves the page and `status` at `addr` in a thread of its own.
pub fn serve(addr: &str, status: Arc<StatusFn>) -> Result<StatusServer, Error> {
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
                "/status.json" => (status(), "application/json", 200),
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
        let server = serve("127.0.0.1:0", Arc::new(|| r#"{"phase":"validating"}"#.to_string())).unwrap();
        let page = get(&server.addr, "/");
        assert!(page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"), "{page}");
        assert!(page.contains("Content-Security-Policy: default-src 'none'"), "{page}");
        assert!(page.contains("<script>") && page.contains("status.json"));
        // Self-contained: no address of anything elsewhere.
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://") && !PAGE.contains("//cdn"));
        assert!(get(&server.addr, "/status.json").ends_with(r#"{"phase":"validating"}"#));
        assert!(get(&server.addr, "/elsewhere").contains("404"));
    }

    #[test]
    fn an_address_taken_is_a_configuration_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let error = serve(&addr, Arc::new(String::new)).err().unwrap();
        assert!(error.is_usage() && error.to_string().contains("cannot listen"), "{error}");
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
