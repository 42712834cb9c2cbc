//! URLs and connections. Every connection lives on a private current-thread runtime owned by the
//! thread that uses it (readers, writers, catalog queries), as in barge-postgres: the driver's I/O
//! never hops threads, and decoding happens outside `block_on`.

use barge_core::url::{redact, split_scheme};
use barge_core::{Error, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use tokio::runtime::Runtime;

/// Session settings: UTC for TIMESTAMP columns, utf8mb4 for 4-byte UTF-8.
const SESSION_SETUP: &[&str] = &[
    "SET time_zone = '+00:00'",
    // barge's sessions write to a table an incremental migration froze (its triggers let them).
    "SET @barge_writer = 1",
    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
    // A key of 0 is a key, not a request for the next AUTO_INCREMENT value (as mysqldump sets it):
    // loaded into an AUTO_INCREMENT column, or when one is made AUTO_INCREMENT after the load.
    "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'NO_AUTO_VALUE_ON_ZERO', \
                               CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO'))",
];

/// A parsed `mysql://` URL.
#[derive(Clone)]
pub struct MyUrl {
    pub opts: Opts,
    pub database: String,
    /// Whether writers may use LOAD DATA LOCAL INFILE (`?local_infile=false` forces INSERTs).
    pub local_infile: bool,
    /// Zero dates (`0000-00-00`, `2024-00-15`) read as NULL and counted (`?zero_dates=null`, the
    /// default), or fail the read (`?zero_dates=error`).
    pub zero_dates_as_null: bool,
    /// `tinyint(1)` read as boolean (`?tinyint1=boolean`, the default) or as an integer
    /// (`?tinyint1=integer`, for columns that hold more than 0 and 1).
    pub tinyint1_as_bool: bool,
    /// The URL with its password redacted.
    pub display: String,
}

/// Only the redacted form: the options hold the password.
impl std::fmt::Debug for MyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `mysql://user:pass@host:port/database` (or `mariadb://`).
pub fn parse_url(url: &str) -> Result<MyUrl> {
    let display = redact(url);
    let invalid = |reason: &str| Error::InvalidUrl { url: display.clone(), reason: reason.into() };
    let (scheme, rest) = split_scheme(url)?;
    if scheme != "mysql" && scheme != "mariadb" {
        return Err(invalid("expected mysql:// or mariadb://"));
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (mut local_infile, mut zero_dates_as_null, mut tinyint1_as_bool) = (true, true, true);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("local_infile", "true" | "1")) => local_infile = true,
            Some(("local_infile", "false" | "0")) => local_infile = false,
            Some(("zero_dates", "null")) => zero_dates_as_null = true,
            Some(("zero_dates", "error")) => zero_dates_as_null = false,
            Some(("tinyint1", "boolean")) => tinyint1_as_bool = true,
            Some(("tinyint1", "integer")) => tinyint1_as_bool = false,
            _ => {
                return Err(invalid(
                    "unknown URL parameter (supported: local_infile=true|false, zero_dates=null|error, \
                     tinyint1=boolean|integer)",
                ));
            }
        }
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let database = percent_decode(path);
    if database.is_empty() || database.contains('/') {
        return Err(invalid("no database name: use mysql://user@host:port/DATABASE"));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (percent_decode(user), Some(percent_decode(pass))),
            None => (percent_decode(u), None),
        },
        None => ("root".to_string(), None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| invalid("the port must be a number"))?),
        None => (hostport, 3306),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass(password.or_else(|| std::env::var("MYSQL_PWD").ok()))
        .db_name(Some(database.clone()))
        // The driver would otherwise switch 127.0.0.1 to the Unix socket behind the user's back.
        .prefer_socket(false)
        .init(SESSION_SETUP.to_vec());
    Ok(MyUrl { opts: opts.into(), database, local_infile, zero_dates_as_null, tinyint1_as_bool, display })
}

/// A connection driven by a private current-thread runtime on the calling thread.
pub struct LocalConn {
    // Declared first so it drops before the runtime that drives it.
    pub conn: Conn,
    pub rt: Runtime,
}

pub fn describe(e: &mysql_async::Error) -> String {
    if let mysql_async::Error::Server(server) = e {
        // The server's error number and SQLSTATE, for -v.
        tracing::info!("MySQL error {} (SQLSTATE {}): {}", server.code, server.state, server.message);
    }
    e.to_string()
}

/// Maps a driver error with what barge was doing.
pub fn my_err(context: &'static str) -> impl FnOnce(mysql_async::Error) -> Error {
    move |e| error_of(context, &e)
}

/// A driver error as barge reports it: transient when retrying can help.
pub fn error_of(context: impl Into<String>, e: &mysql_async::Error) -> Error {
    Error::driver(context, describe(e), is_transient(e))
}

/// Lost connections (I/O and driver errors), lock wait timeouts (1205), deadlocks (1213), a
/// killed connection or query (1927, 1317), a server shutting down (1053).
pub fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        mysql_async::Error::Server(server) => matches!(server.code, 1205 | 1213 | 1927 | 1317 | 1053),
        _ => false,
    }
}

/// Opens a session. Problems name the server (password redacted), never the password.
pub fn connect(url: &MyUrl) -> Result<LocalConn> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::engine("starting a connection runtime", e))?;
    let conn = rt.block_on(Conn::new(url.opts.clone())).map_err(|e| match &e {
        // ER_BAD_DB_ERROR: a database that does not exist is input to fix.
        mysql_async::Error::Server(server) if server.code == 1049 => Error::SourceNotFound(url.display.clone()),
        _ => Error::Connect { target: url.display.clone(), reason: describe(&e) },
    })?;
    Ok(LocalConn { conn, rt })
}

impl LocalConn {
    /// Runs a query and collects every row's columns as optional text bytes (text protocol).
    pub fn rows(&mut self, sql: &str, context: &'static str) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
        // MariaDB 10.11 builds an information_schema result in a temporary Aria table, whose file
        // another session's work can remove under it ("Error on delete of …", error 6): the query
        // is read-only, so it is asked again, a few times.
        let mut attempt = 0;
        let rows: Vec<mysql_async::Row> = loop {
            match self.rt.block_on(self.conn.query(sql)) {
                Err(mysql_async::Error::Server(e))
                    if e.code == 6 && attempt < 3 && sql.contains("information_schema") =>
                {
                    attempt += 1;
                    tracing::debug!("{context}: {} (asking again)", e.message);
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                }
                other => break other.map_err(my_err(context))?,
            }
        };
        Ok(rows
            .into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(b) => Some(b),
                        other => Some(other.as_sql(true).into_bytes()),
                    })
                    .collect()
            })
            .collect())
    }

    /// The first column of the first row as text (`None`: no row, or NULL).
    pub fn value(&mut self, sql: &str, context: &'static str) -> Result<Option<String>> {
        let rows = self.rows(sql, context)?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The server's `max_allowed_packet`: a statement, a LOAD DATA row or a value sent is at most this.
    pub fn max_allowed_packet(&mut self) -> Result<Option<u64>> {
        Ok(self.value("SELECT @@max_allowed_packet", "reading max_allowed_packet")?.and_then(|v| v.parse().ok()))
    }

    pub fn exec(&mut self, sql: &str, context: &'static str) -> Result<()> {
        self.rt.block_on(self.conn.query_drop(sql)).map_err(my_err(context))
    }
}

/// Who the server and database behind `conn` are: MySQL's `@@server_uuid`, else (MariaDB, which
/// has none) `@@hostname:@@port`, with the database.
pub fn identity(conn: &mut LocalConn) -> Result<String> {
    let text = |rows: Vec<Vec<Option<Vec<u8>>>>| -> Vec<String> {
        rows.into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
            .collect()
    };
    let server = match conn.rows("SELECT @@server_uuid", "asking the server who it is") {
        Ok(rows) => format!("server {}", text(rows).join("")),
        Err(_) => {
            let parts = text(conn.rows("SELECT @@hostname, @@port", "asking the server who it is")?);
            format!("server {}", parts.join(":"))
        }
    };
    let database = text(conn.rows("SELECT DATABASE()", "asking the server who it is")?).join("");
    Ok(format!("MySQL {server}, database {database}"))
}

/// `` `name` `` with backticks doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal safe whatever the sql_mode: quotes doubled, backslashes escaped.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_passwords_and_name_the_database() {
        let url = parse_url("mysql://bob:s%40cret@127.0.0.1:3307/shop").unwrap();
        assert_eq!(url.database, "shop");
        assert_eq!(url.display, "mysql://bob:***@127.0.0.1:3307/shop");
        assert_eq!(url.opts.pass(), Some("s@cret"));
        assert_eq!(url.opts.tcp_port(), 3307);
        assert!(!url.opts.prefer_socket());
        let err = parse_url("mysql://bob:s3cret@host").unwrap_err();
        assert!(err.is_usage() && !err.to_string().contains("s3cret"), "{err}");
        assert_eq!(quote("we`ird"), "`we``ird`");
        assert_eq!(literal(r"it's \ ok"), r"'it''s \\ ok'");
    }
}
