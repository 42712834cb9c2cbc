//! Progress events, rendered by the CLI (indicatif bars on a terminal, lines otherwise).

/// What a table is going through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Copy,
    Verify,
}

/// Receives progress from any thread.
pub trait Progress: Send + Sync {
    /// A table starts a phase; `total_rows` is an estimate.
    fn started(&self, table: &str, phase: Phase, total_rows: u64);
    /// `rows` more rows are done.
    fn advance(&self, table: &str, phase: Phase, rows: u64);
    /// The phase ended; `summary` is one human-readable line.
    fn finished(&self, table: &str, phase: Phase, summary: &str);
}

/// Discards progress.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn started(&self, _: &str, _: Phase, _: u64) {}
    fn advance(&self, _: &str, _: Phase, _: u64) {}
    fn finished(&self, _: &str, _: Phase, _: &str) {}
}
