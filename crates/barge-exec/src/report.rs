//! Run summaries; their JSON form is the CLI's `--json` contract.

use barge_verify::KeyDiff;
use serde::Serialize;

/// One copied table.
#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub target_table: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_rejected: u64,
    pub partitions: usize,
    pub seconds: f64,
    /// `None` when verification was skipped.
    pub verified: Option<bool>,
    /// The keys behind a failed verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<KeyDiff>,
    /// Conversions the source applied while reading (see `Source::notices`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// The table went through a pipeline transform: verification compared the target with the
    /// source as transformed.
    pub transformed: bool,
    /// Range attempts that failed transiently and were copied again.
    pub retries: u64,
    /// Ranges an earlier, interrupted run had committed (`--resume`): kept, not copied again.
    pub ranges_resumed: usize,
    /// Target rows deleted because their key is gone from the source (incremental tables with
    /// delete detection).
    pub rows_deleted: u64,
    /// Busy seconds of each stage, summed over its threads (see [`StageSeconds`]).
    pub stages: StageSeconds,
    /// Bytes of the Arrow data read (the in-memory size of the values that moved).
    pub bytes_read: u64,
    /// The high-water mark recorded for an incremental table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<barge_core::Scalar>,
    /// Where the rejected rows are (when there are any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
}

/// Where a table's time went: each stage's busy time summed over its threads (readers: reading
/// and decoding, not waiting for the CPU stage; cpu: transform + hash + encode; writers: writing
/// and committing), and the verification's wall time.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StageSeconds {
    pub read: f64,
    pub cpu: f64,
    pub write: f64,
    pub verify: f64,
}

/// A whole copy.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    pub ok: bool,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub tables: Vec<TableReport>,
    /// The process's peak resident memory, in MB (Linux; `None` elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
}

/// The process's peak resident set size (VmHWM), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One verified table.
#[derive(Clone, Debug, Serialize)]
pub struct TableVerdict {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    #[serde(rename = "match")]
    pub matched: bool,
    #[serde(flatten)]
    pub diff: KeyDiff,
}

/// A whole verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub seconds: f64,
    pub tables: Vec<TableVerdict>,
}
