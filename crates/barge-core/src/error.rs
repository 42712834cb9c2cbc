//! One error type for the library crates. Each variant is a failure a user can act on; the CLI maps
//! [`Error::is_usage`] to exit code 2 and everything else to 1.

use std::fmt;

/// Result alias used across barge's library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in barge's library crates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection URL could not be understood. `url` is already redacted.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// No registered engine handles this URL scheme.
    #[error("unsupported URL scheme `{scheme}` (supported: {supported})")]
    UnknownScheme { scheme: String, supported: String },

    /// The source database does not exist (for file engines: the file is missing).
    #[error("source database not found: {0}")]
    SourceNotFound(String),

    /// The target database does not exist (a server's database: barge creates tables, not
    /// databases).
    #[error("target database not found: {0} (create it first)")]
    TargetNotFound(String),

    /// A table named on the command line or in a pipeline does not exist.
    #[error("table `{table}` not found in {database}")]
    UnknownTable { table: String, database: String },

    /// A name given as a table is another kind of relation (a view, a sequence).
    #[error("`{table}` in {database} is a {kind}, not a table: barge copies tables (copy the tables it reads)")]
    NotATable { table: String, kind: String, database: String },

    /// A column named in a pipeline, or needed by a copy, does not exist.
    #[error("column `{column}` not found in {side} table `{table}`")]
    UnknownColumn { side: &'static str, table: String, column: String },

    /// A target table that exists has a column the copy cannot fill: NOT NULL, no default, and
    /// not among the columns copied.
    #[error(
        "target table `{table}` has column `{column}` NOT NULL without a default, which the source does not fill: \
         give it a default, drop it, or fill it from a pipeline's `columns`"
    )]
    UnfilledColumn { table: String, column: String },

    /// A column's type has no mapping (or cannot be represented in the target).
    #[error("unsupported type: table `{table}`, column `{column}`, type `{type_name}`{}", reason_suffix(.reason))]
    UnsupportedType { table: String, column: String, type_name: String, reason: Option<String> },

    /// `--if-exists fail` and the target table already holds rows.
    #[error("target table `{table}` already holds {rows} rows; nothing was written ({fix})")]
    TargetNotEmpty { table: String, rows: u64, fix: String },

    /// A configuration or usage problem not covered by a more specific variant.
    #[error("{0}")]
    Config(String),

    /// The server could not be reached or refused the connection. `target` is redacted.
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },

    /// A value read from the source cannot be represented as its column's declared type.
    #[error("bad value in table `{table}`, column `{column}`{}: {reason}", key_suffix(.key))]
    BadValue { table: String, column: String, key: Option<String>, reason: String },

    /// A driver error, with what barge was doing when it happened.
    #[error("{context}: {message}")]
    Engine { context: String, message: String },

    /// A failure that may pass if the work is done again: a lost connection, a server restarting,
    /// a deadlock, a serialization failure, a lock timeout. Ranges that hit one are retried.
    #[error("{context}: {message}")]
    Transient { context: String, message: String },

    /// An Arrow error (builder or schema mismatch); indicates a bug in an engine's mapping table.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    /// Row accounting does not add up: rows read ≠ rows written + rows rejected.
    #[error("row accounting failed for table `{table}`: read {read}, written {written}, rejected {rejected}")]
    RowsLost { table: String, read: u64, written: u64, rejected: u64 },

    /// The target refused a batch for the data in it (constraint, value out of range, too long);
    /// under [`crate::WriteOptions::isolate_rows`] the batch left nothing behind.
    #[error("{reason}")]
    RowRejected { reason: String },

    /// More rows were rejected than the error budget allows.
    #[error("{scope}: {rejected} rejected rows exceed the error budget of {budget}; rejected rows are in {file}")]
    BudgetExceeded { scope: String, rejected: u64, budget: String, file: String },

    /// An engine lacks an optional capability the run needs (see `barge_core::engine`): e.g. a
    /// ledger store, secondary indexes, key deletes, scratch places for benchmarks.
    #[error("{engine} cannot {capability}")]
    Unsupported { engine: String, capability: String },

    /// Another live process owns the run in this ledger (see `LedgerStore::acquire`).
    #[error(
        "run `{run}` in {store} is owned by another process ({holder}); one run has one owner: wait for it to \
         finish, or stop it (a dead owner's run is taken over by the next start or --resume)"
    )]
    LedgerBusy { run: String, store: String, holder: String },

    /// The run was cancelled because another stage failed first.
    #[error("cancelled")]
    Cancelled,
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" at key {k}")).unwrap_or_default()
}

impl Error {
    /// An engine lacks `capability` ("keep a ledger", "delete keys", …).
    pub fn unsupported(engine: impl Into<String>, capability: impl Into<String>) -> Self {
        Error::Unsupported { engine: engine.into(), capability: capability.into() }
    }

    /// Wraps a driver error with context. Callers must make sure neither carries a password.
    pub fn engine(context: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::Engine { context: context.into(), message: err.to_string() }
    }

    /// A driver error with context: [`Error::Transient`] when the engine says retrying may help,
    /// else [`Error::Engine`]. Callers must make sure neither carries a password.
    pub fn driver(context: impl Into<String>, err: impl fmt::Display, transient: bool) -> Self {
        // One line: an engine's message may span several (its detail, a statement).
        let message: String =
            err.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        let context = context.into();
        if transient { Error::Transient { context, message } } else { Error::Engine { context, message } }
    }

    /// The variant's name, for machine-readable reports (`--json`): `unknown_table`, `config`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "invalid_url",
            Error::UnknownScheme { .. } => "unknown_scheme",
            Error::SourceNotFound(_) => "source_not_found",
            Error::TargetNotFound(_) => "target_not_found",
            Error::UnknownTable { .. } => "unknown_table",
            Error::NotATable { .. } => "not_a_table",
            Error::UnknownColumn { .. } => "unknown_column",
            Error::UnfilledColumn { .. } => "unfilled_column",
            Error::UnsupportedType { .. } => "unsupported_type",
            Error::TargetNotEmpty { .. } => "target_not_empty",
            Error::Config(_) => "config",
            Error::Connect { .. } => "connect",
            Error::BadValue { .. } => "bad_value",
            Error::Engine { .. } => "engine",
            Error::Transient { .. } => "transient",
            Error::Arrow(_) => "arrow",
            Error::RowsLost { .. } => "rows_lost",
            Error::RowRejected { .. } => "row_rejected",
            Error::BudgetExceeded { .. } => "budget_exceeded",
            Error::Unsupported { .. } => "unsupported",
            Error::LedgerBusy { .. } => "ledger_busy",
            Error::Cancelled => "cancelled",
        }
    }

    /// The table and column an error names, where it names them.
    pub fn table_column(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Error::UnknownTable { table, .. }
            | Error::NotATable { table, .. }
            | Error::TargetNotEmpty { table, .. }
            | Error::RowsLost { table, .. } => (Some(table), None),
            Error::UnknownColumn { table, column, .. }
            | Error::UnfilledColumn { table, column }
            | Error::UnsupportedType { table, column, .. }
            | Error::BadValue { table, column, .. } => (Some(table), Some(column)),
            _ => (None, None),
        }
    }

    /// True when doing the work again may succeed (see [`Error::Transient`]; a refused connection
    /// counts too, as during a server restart).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. } | Error::Connect { .. })
    }

    /// True for usage and configuration errors (exit code 2): the run can succeed once the input is fixed,
    /// and nothing has been written.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidUrl { .. }
                | Error::UnknownScheme { .. }
                | Error::SourceNotFound(_)
                | Error::TargetNotFound(_)
                | Error::UnknownTable { .. }
                | Error::NotATable { .. }
                | Error::UnknownColumn { .. }
                | Error::UnfilledColumn { .. }
                | Error::UnsupportedType { .. }
                | Error::TargetNotEmpty { .. }
                | Error::Config(_)
                | Error::Unsupported { .. }
                | Error::LedgerBusy { .. }
        )
    }
}
