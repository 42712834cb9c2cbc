//! URLs, connections and the small tokio runtime that drives them.
//!
//! Engine methods are called from plain threads. Catalog queries `block_on` a shared runtime whose
//! two worker threads only drive sockets. Bulk streams (a reader's COPY OUT, a writer's COPY IN) use
//! a [`LocalConn`]: a connection on a private current-thread runtime owned by the reader or writer
//! thread, so the one-message-per-row COPY protocol never hops between threads (measured: the
//! shared runtime's cross-thread wake-ups were 44% of barge's CPU in a PostgreSQL → PostgreSQL
//! copy). Decoding and encoding always happen outside `block_on`. A source keeps the `LocalConn` of
//! a range read that ran to the end for the next range read (on whichever thread): each new
//! connection is a new server process, with its TLS handshake and its own page faults into shared
//! buffers (reusing them took ~0.2 s off a verified 2M-row copy, benches/README.md).

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use barge_core::url::{redact, split_scheme};
use barge_core::{Error, Result};
use tokio::runtime::Runtime;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Worker threads of the I/O runtime: sockets only, so two are plenty.
const IO_THREADS: usize = 2;

/// Settings every barge session uses, so values mean the same in every session: UTF-8, ISO dates,
/// UTC, and floats printed with full precision when anything is cast to text.
/// A database frozen by `barge migrate` (`default_transaction_read_only`) stays writable to barge
/// itself: its reverse sync writes into a frozen source.
const SESSION_SETUP: &str = "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; \
     SET extra_float_digits = 3; SET default_transaction_read_only = off";

/// The `application_name` of barge's sessions (unless the URL sets one): a write freeze ends
/// every other session of the database, never these.
pub const APPLICATION_NAME: &str = "barge";

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("barge-pg-io")
            .enable_io()
            .enable_time()
            .build()
            .expect("starting the PostgreSQL I/O runtime")
    })
}

/// How a connection uses TLS (`sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// `disable`: never.
    Disable,
    /// `prefer` (the default): when the server offers it, without verifying its certificate.
    Prefer,
    /// `require`: always, without verifying the certificate (libpq's meaning).
    Require,
    /// `verify-ca`: always, with a certificate signed by a trusted CA.
    VerifyCa,
    /// `verify-full`: always, with a trusted certificate for this host name.
    VerifyFull,
}

/// A parsed `postgres://` URL.
#[derive(Clone)]
pub struct PgUrl {
    pub config: Config,
    pub tls: TlsMode,
    /// `?schema=` (default `public`).
    pub schema: String,
    /// The URL with its password redacted.
    pub display: String,
}

/// Only the redacted form: the config inside holds the password.
impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Parses `postgres://user:pass@host:port/db?schema=s&sslmode=disable`. The password may also
/// come from `PGPASSWORD`, the user from `PGUSER`.
pub fn parse_url(url: &str) -> Result<PgUrl> {
    let display = redact(url);
    let invalid = |reason: String| Error::InvalidUrl { url: display.clone(), reason };
    let (scheme, rest) = split_scheme(url)?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(invalid("expected postgres:// or postgresql://".into()));
    }
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut schema = "public".to_string();
    let mut tls = TlsMode::Prefer;
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "schema" => schema = value.to_string(),
            // barge applies sslmode itself (the driver knows no verify-* modes).
            "sslmode" => {
                tls = match value {
                    "disable" => TlsMode::Disable,
                    "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "unknown sslmode `{other}` (disable, prefer, require, verify-ca or verify-full)"
                        )));
                    }
                }
            }
            _ => passed.push(pair.to_string()),
        }
    }
    if !cfg!(feature = "tls") && !matches!(tls, TlsMode::Disable | TlsMode::Prefer) {
        return Err(invalid(format!(
            "sslmode={} needs TLS, which this build of barge does not include (cargo feature `tls`)",
            query.split('&').find_map(|p| p.strip_prefix("sslmode=")).unwrap_or_default()
        )));
    }
    let normalised = if passed.is_empty() {
        format!("postgresql://{base}")
    } else {
        format!("postgresql://{base}?{}", passed.join("&"))
    };
    let mut config = Config::from_str(&normalised).map_err(|e| invalid(e.to_string()))?;
    if config.get_user().is_none() {
        config.user(std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()));
    }
    if config.get_password().is_none()
        && let Ok(password) = std::env::var("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_hosts().is_empty() {
        config.host("localhost");
    }
    if config.get_dbname().is_none() {
        return Err(invalid("no database name: use postgres://user@host:port/DATABASE".into()));
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer if cfg!(feature = "tls") => SslMode::Prefer,
        TlsMode::Prefer => SslMode::Disable,
        _ => SslMode::Require,
    });
    Ok(PgUrl { config, tls, schema, display })
}

/// The TLS connector of a mode, built once per process: building one loads the system's CA
/// bundle, which cost ~30 ms per connection, and barge opens connections per reader and writer.
#[cfg(feature = "tls")]
fn tls_connector(mode: TlsMode) -> native_tls::TlsConnector {
    static CONNECTORS: OnceLock<std::sync::Mutex<Vec<(TlsMode, native_tls::TlsConnector)>>> = OnceLock::new();
    let mut built = CONNECTORS.get_or_init(Default::default).lock().expect("TLS connectors lock");
    if let Some((_, connector)) = built.iter().find(|(m, _)| *m == mode) {
        return connector.clone();
    }
    let connector = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(matches!(mode, TlsMode::Prefer | TlsMode::Require))
        .danger_accept_invalid_hostnames(mode != TlsMode::VerifyFull)
        .build()
        .expect("a TLS connector with default settings");
    built.push((mode, connector.clone()));
    connector
}

/// Connects with the TLS the URL asks for, spawning the connection task on the current runtime.
async fn open(url: &PgUrl) -> Result<Client, tokio_postgres::Error> {
    #[cfg(feature = "tls")]
    if url.tls != TlsMode::Disable {
        let connector = tls_connector(url.tls);
        let tls = crate::tls::MakeBoundedTls(postgres_native_tls::MakeTlsConnector::new(connector));
        let (client, connection) = url.config.connect(tls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        return Ok(client);
    }
    let (client, connection) = url.config.connect(NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; errors surface on the client.
        let _ = connection.await;
    });
    Ok(client)
}

/// A driver error as text: the server's message for database errors, the cause chain otherwise.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        // The server's whole report, for -v; the message keeps one line of it.
        tracing::info!(
            "PostgreSQL {} {}: {}{}{}{}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!("; detail: {d}")).unwrap_or_default(),
            db.hint().map(|h| format!("; hint: {h}")).unwrap_or_default(),
            db.where_().map(|w| format!("; where: {w}")).unwrap_or_default(),
            [db.schema(), db.table(), db.column(), db.constraint()]
                .iter()
                .flatten()
                .map(|n| format!("; {n}"))
                .collect::<String>(),
        );
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        return message;
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// Maps a driver error with what barge was doing.
pub fn pg_err(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| error_of(context, &e)
}

/// A driver error as barge reports it: transient when retrying can help.
pub fn error_of(context: impl Into<String>, e: &tokio_postgres::Error) -> Error {
    Error::driver(context, describe(e), is_transient(e))
}

/// Lost connections (no server error at all, or class 08), the server shutting down or starting
/// (57P01–57P03), serialization failures and deadlocks (40001, 40P01), lock timeouts (55P03).
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03")
        }
        None => e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Opens a session. Connection problems name the server (password redacted), never the password.
pub fn connect(url: &PgUrl) -> Result<Client> {
    let rt = runtime();
    let client = rt.block_on(open(url)).map_err(|e| match e.code() {
        // A database that does not exist is input to fix, not a connection failure.
        Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => Error::SourceNotFound(url.display.clone()),
        _ => Error::Connect { target: url.display.clone(), reason: describe(&e) },
    })?;
    rt.block_on(client.batch_execute(SESSION_SETUP)).map_err(pg_err("configuring the session"))?;
    Ok(client)
}

/// A connection driven by a private current-thread runtime on the calling thread: it makes
/// progress only inside `block_on`, which is all a bulk stream needs (TCP buffers the rest).
pub struct LocalConn {
    // Declared first so it drops before the runtime that drives it.
    pub client: Client,
    pub rt: Runtime,
}

/// Opens a [`LocalConn`] with barge's session settings.
pub fn connect_local(url: &PgUrl) -> Result<LocalConn> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::engine("starting a connection runtime", e))?;
    let client =
        rt.block_on(open(url)).map_err(|e| Error::Connect { target: url.display.clone(), reason: describe(&e) })?;
    rt.block_on(client.batch_execute(SESSION_SETUP)).map_err(pg_err("configuring the session"))?;
    Ok(LocalConn { client, rt })
}

/// Who the server, database and schema behind `client` are: the cluster's system identifier is the
/// same whichever address or parameters reached it.
pub fn identity(client: &Client, schema: &str) -> Result<String> {
    let row = runtime()
        .block_on(client.query_one("SELECT system_identifier::text, current_database() FROM pg_control_system()", &[]))
        .map_err(pg_err("asking the server who it is"))?;
    Ok(format!("PostgreSQL system {}, database {}, schema {schema}", row.get::<_, String>(0), row.get::<_, String>(1)))
}

/// `"name"` with quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with quotes doubled (standard_conforming_strings is on since PostgreSQL 9.1).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_schema_and_hide_passwords() {
        let url = parse_url("postgres://bob:s3cret@127.0.0.1:5433/app?schema=sales&sslmode=disable").unwrap();
        assert_eq!(url.schema, "sales");
        assert_eq!(url.config.get_dbname(), Some("app"));
        assert_eq!(url.display, "postgres://bob:***@127.0.0.1:5433/app?schema=sales&sslmode=disable");
        let err = parse_url("postgres://bob:s3cret@host/db?sslmode=sometimes").unwrap_err();
        assert!(err.is_usage() && !err.to_string().contains("s3cret"), "{err}");
        assert_eq!(
            parse_url("postgres://h/db?sslmode=verify-full").map(|u| u.tls).ok(),
            cfg!(feature = "tls").then_some(TlsMode::VerifyFull)
        );
        assert!(parse_url("postgres://bob@host").unwrap_err().to_string().contains("no database name"));
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(literal("it's"), "'it''s'");
    }
}
