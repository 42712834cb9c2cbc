//! Run summaries; their JSON form is the CLI's `--json` contract.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use barge_verify::KeyDiff;
use serde::{Deserialize, Serialize};

/// One copied table. (Deserialisable too: `barge bench` reads its child runs' JSON back.)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    pub target_table: String,
    /// `copied`, or `failed`: then `error` says why, and the other tables went on.
    #[serde(default = "copied")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TableError>,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_rejected: u64,
    pub partitions: usize,
    pub seconds: f64,
    /// `None` when verification was skipped.
    pub verified: Option<bool>,
    /// The keys behind a failed verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<KeyDiff>,
    /// Conversions the source applied while reading (see `Source::notices`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    /// Rows written over the copy (not the verification), as `[seconds since the table started,
    /// rows written so far]`, sampled at most every [`TIMELINE_STEP`] (coarser for long copies).
    pub timeline: Vec<(f64, u64)>,
    /// Rows digested over the verification, as `[seconds since it started, rows so far]` (empty
    /// without verification).
    pub verify_timeline: Vec<(f64, u64)>,
    /// The high-water mark recorded for an incremental table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<barge_core::Scalar>,
    /// Where the rejected rows are (when there are any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
}

fn copied() -> String {
    "copied".into()
}

/// Why a table failed, and what it left in the target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableError {
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The target table's condition after the failure, and what to do.
    pub target: String,
    /// A usage or configuration problem (fixable input; exit 2 when every table has one).
    #[serde(default)]
    pub usage: bool,
}

/// Where a table's time went: each stage's busy time summed over its threads (readers: reading
/// and decoding, not waiting for the CPU stage; cpu: transform + hash + encode; writers: writing
/// and committing), and the verification's wall time.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct StageSeconds {
    pub read: f64,
    pub cpu: f64,
    pub write: f64,
    pub verify: f64,
}

/// The finest interval between two timeline samples.
pub const TIMELINE_STEP: Duration = Duration::from_millis(100);
/// A timeline longer than this is thinned to every other sample, and samples half as often.
const TIMELINE_MAX_POINTS: usize = 512;

/// Rows written over time, sampled from the writers as they commit batches.
pub(crate) struct Timeline {
    started: Instant,
    inner: Mutex<TimelineInner>,
}

struct TimelineInner {
    step: Duration,
    next: Duration,
    points: Vec<(f64, u64)>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            started: Instant::now(),
            inner: Mutex::new(TimelineInner { step: TIMELINE_STEP, next: TIMELINE_STEP, points: vec![(0.0, 0)] }),
        }
    }
}

impl Timeline {
    /// `rows` have been written so far; kept if a step has passed since the last sample, or if
    /// these are the first rows (when the copy got going: forecasts take the start-up from it).
    pub fn record(&self, rows: u64) {
        self.sample(self.started.elapsed(), rows, false);
    }

    fn sample(&self, at: Duration, rows: u64, last: bool) {
        let mut inner = self.inner.lock().expect("timeline lock");
        // Samples never go down: the first rows are those after a last sample still at zero.
        let first_rows = rows > 0 && inner.points.last().is_some_and(|(_, written)| *written == 0);
        if at < inner.next && !last && !first_rows {
            return;
        }
        inner.points.push((at.as_secs_f64(), rows));
        inner.next = at + inner.step;
        if inner.points.len() > TIMELINE_MAX_POINTS {
            let mut i = 0;
            inner.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            inner.step *= 2;
        }
    }

    /// The samples, ending with `rows` now.
    pub fn finish(&self, rows: u64) -> Vec<(f64, u64)> {
        self.sample(self.started.elapsed(), rows, true);
        std::mem::take(&mut self.inner.lock().expect("timeline lock").points)
    }
}

/// Passes progress on, keeping a timeline of the rows one phase has done.
pub(crate) struct PhaseTimeline<'a> {
    inner: &'a dyn crate::Progress,
    phase: crate::Phase,
    rows: std::sync::atomic::AtomicU64,
    timeline: Timeline,
}

impl<'a> PhaseTimeline<'a> {
    pub fn new(inner: &'a dyn crate::Progress, phase: crate::Phase) -> Self {
        PhaseTimeline { inner, phase, rows: Default::default(), timeline: Timeline::default() }
    }

    /// The samples, ending with the rows done so far.
    pub fn finish(&self) -> Vec<(f64, u64)> {
        self.timeline.finish(self.rows.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl crate::Progress for PhaseTimeline<'_> {
    fn started(&self, table: &str, phase: crate::Phase, total_rows: u64) {
        self.inner.started(table, phase, total_rows);
    }

    fn advance(&self, table: &str, phase: crate::Phase, rows: u64) {
        self.inner.advance(table, phase, rows);
        if phase == self.phase {
            let done = self.rows.fetch_add(rows, std::sync::atomic::Ordering::Relaxed) + rows;
            self.timeline.record(done);
        }
    }

    fn finished(&self, table: &str, phase: crate::Phase, summary: &str) {
        self.inner.finished(table, phase, summary);
    }
}

/// A whole copy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CopyReport {
    pub ok: bool,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub tables: Vec<TableReport>,
    /// The process's peak resident memory, in MB (Linux; `None` elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    /// How the source was read: as one snapshot (which), or not (why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<barge_core::SnapshotInfo>,
    /// How the target's schema was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<barge_plan::SchemaReport>,
    /// Source objects the target does not have, with the reason.
    #[serde(default)]
    pub not_migrated: Vec<barge_core::NotMigrated>,
    /// The source's views created on the target (a copy that builds the schema itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<String>,
}

impl TableReport {
    /// The report of a table the plan set aside: failed, nothing written.
    pub fn set_aside(failure: &barge_plan::TableFailure) -> Self {
        TableReport {
            table: failure.table.clone(),
            target_table: failure.target_table.clone(),
            status: "failed".into(),
            error: Some(TableError {
                kind: failure.kind.clone(),
                message: failure.message.clone(),
                column: failure.column.clone(),
                target: format!("nothing was written to `{}`", failure.target_table),
                usage: failure.usage,
            }),
            rows_read: 0,
            rows_written: 0,
            rows_rejected: 0,
            partitions: 0,
            seconds: 0.0,
            verified: None,
            diff: None,
            notices: Vec::new(),
            transformed: false,
            retries: 0,
            ranges_resumed: 0,
            rows_deleted: 0,
            watermark: None,
            stages: Default::default(),
            bytes_read: 0,
            timeline: Vec::new(),
            verify_timeline: Vec::new(),
            rejects_file: None,
        }
    }
}

impl CopyReport {
    /// The report of a run of `seconds` over `tables`: ok unless a verification failed.
    pub fn new(tables: Vec<TableReport>, seconds: f64) -> Self {
        let rows = tables.iter().map(|r| r.rows_written).sum();
        CopyReport {
            ok: tables.iter().all(|r| r.verified != Some(false) && r.error.is_none()),
            rows,
            seconds,
            rows_per_s: if seconds > 0.0 { rows as f64 / seconds } else { 0.0 },
            tables,
            peak_rss_mb: peak_rss_mb(),
            snapshot: None,
            schema: None,
            not_migrated: Vec::new(),
            views: Vec::new(),
        }
    }
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
    /// Keys that differed while a change stream was applying them and matched once it had
    /// (`verify` under `sync`): changes in flight, not differences.
    #[serde(default, skip_serializing_if = "barge_verify::is_zero")]
    pub in_flight: u64,
}

/// A whole verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub seconds: f64,
    pub tables: Vec<TableVerdict>,
    /// Tables the target has and the source does not (compared when no `--table` narrows it):
    /// a difference too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_in_target: Vec<String>,
    /// How differences were re-checked while a change stream kept the target current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<crate::verify::run::Recheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_samples_at_most_once_per_step_and_always_ends_with_the_total() {
        let timeline = Timeline::default();
        timeline.sample(Duration::from_millis(10), 5, false); // the first rows: kept
        timeline.sample(Duration::from_millis(20), 8, false); // within a step of the last: dropped
        timeline.sample(Duration::from_millis(120), 10, false);
        timeline.sample(Duration::from_millis(150), 20, false); // dropped
        timeline.sample(Duration::from_millis(230), 30, false);
        timeline.sample(Duration::from_millis(240), 40, true); // the end is always kept
        let points = timeline.inner.lock().unwrap().points.clone();
        assert_eq!(points, vec![(0.0, 0), (0.01, 5), (0.12, 10), (0.23, 30), (0.24, 40)]);
    }

    #[test]
    fn a_long_timeline_is_thinned_and_stays_bounded() {
        let timeline = Timeline::default();
        for i in 1..=10_000u64 {
            timeline.sample(Duration::from_millis(i * 100), i, false);
        }
        let inner = timeline.inner.lock().unwrap();
        assert!(inner.points.len() <= TIMELINE_MAX_POINTS, "{} points", inner.points.len());
        assert!(inner.points.len() > TIMELINE_MAX_POINTS / 4, "{} points", inner.points.len());
        assert!(inner.points.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "in order");
        assert_eq!(inner.points[0], (0.0, 0));
        assert!(inner.step > TIMELINE_STEP, "samples less often after thinning");
    }
}
