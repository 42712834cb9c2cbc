//! `barge verify`: every table of a source plan against the same-named tables of a target; with
//! a change stream keeping the target current, differences re-checked once it applied past them.
//!
//! ```text
//!  pass 1: every range of every table compared (digests, then keys) ── all match ──▶ done
//!     │ some ranges differ
//!     ▼
//!  P = the source's position now (every pass-1 read happened before it)
//!  wait until the stream's applied position (the target's barge_sync) is past P
//!  re-compare only the ranges that differed ── the keys that now match were changes in flight
//!     │ some still differ: again from a new P, up to `rounds` times
//!     ▼
//!  what differs in the last re-check is reported
//! ```

use std::time::{Duration, Instant};

use barge_core::{ChangeFeed, ChangePositions, KeyRange, Result, Source, TableInfo};
use barge_plan::SourcePlan;
use barge_verify::Buckets;
use serde::Serialize;

use crate::ExecOptions;
use crate::context::{Ctx, cpu_pool};
use crate::progress::Progress;
use crate::report::{TableVerdict, VerifyReport};
use crate::verify::buckets::bucket_layout;
use crate::verify::table::{Comparison, announce};

/// A change stream that keeps the target current while it is verified (`barge sync`).
pub struct LiveStream<'a> {
    pub feed: &'a dyn ChangeFeed,
    pub positions: &'a dyn ChangePositions,
    pub stream: &'a str,
    /// How long to wait for the stream to apply past a position.
    pub timeout: Duration,
    /// Re-checks of what still differs, at most.
    pub rounds: usize,
}

/// What the re-checks of a verification under a live stream did.
#[derive(Clone, Debug, Serialize)]
pub struct Recheck {
    pub stream: String,
    /// Re-checks done (0: the first pass found no difference).
    pub rounds: usize,
    /// The last source position the stream was waited for.
    pub position: Option<String>,
    /// Seconds spent waiting for the stream.
    pub waited_seconds: f64,
    /// The stream did not apply past a position within the timeout (is sync running?): the
    /// differences left are reported as they were last seen.
    pub timed_out: bool,
}

/// How often the stream's applied position is read while waiting for it.
const STREAM_POLL: Duration = Duration::from_millis(100);

/// Verifies every table of a source plan against the same-named tables of `target`; with `live`,
/// differences are re-checked after the stream applied past the position they were read at.
pub fn verify(
    source: &dyn Source,
    target: &dyn Source,
    plan: &SourcePlan,
    options: &ExecOptions,
    progress: &dyn Progress,
    live: Option<&LiveStream<'_>>,
) -> Result<VerifyReport> {
    let pool = cpu_pool(options.workers)?;
    let ctx = Ctx { pool: &pool, workers: options.workers, batch: options.batch(), progress };
    let started = Instant::now();
    let targets = plan.tables.iter().map(|t| target.table(&t.source.name)).collect::<Result<Vec<_>>>()?;
    let sides = Sides { source, target, plan, targets };
    let mut tables = Vec::with_capacity(plan.tables.len());
    for (i, table) in plan.tables.iter().enumerate() {
        let buckets = bucket_layout(source, &table.source, &table.source, &table.ranges)?;
        let checked = sides.compare(i, &table.ranges, buckets.as_ref(), ctx)?;
        // Under a live stream, a difference is announced once the re-checks are over.
        if live.is_none() || checked.verdict.matched {
            announce(&checked.verdict, ctx);
        }
        tables.push(checked);
    }
    let recheck = match live {
        Some(live) => Some(recheck(&sides, live, &mut tables, ctx)?),
        None => None,
    };
    Ok(VerifyReport {
        ok: tables.iter().all(|t| t.verdict.matched),
        seconds: started.elapsed().as_secs_f64(),
        tables: tables.into_iter().map(|t| t.verdict).collect(),
        only_in_target: Vec::new(),
        recheck,
    })
}

/// The two sides of a verification, with each table of the plan as the target describes it.
struct Sides<'a> {
    source: &'a dyn Source,
    target: &'a dyn Source,
    plan: &'a SourcePlan,
    targets: Vec<TableInfo>,
}

/// A table's verdict, and the key ranges a re-check compares again.
struct Checked {
    verdict: TableVerdict,
    differing: Vec<KeyRange>,
}

impl Sides<'_> {
    /// Table `i` of the plan compared over `ranges`.
    fn compare(&self, i: usize, ranges: &[KeyRange], buckets: Option<&Buckets>, ctx: Ctx<'_>) -> Result<Checked> {
        let table = &self.plan.tables[i];
        let comparison = Comparison {
            source: self.source,
            source_info: &table.source,
            target: self.target,
            target_info: self.targets[i].clone(),
            ranges,
            buckets,
        };
        let (verdict, mismatched) = comparison.compare_ranges(None, None, ctx)?;
        // A table compared as one multiset (no key) has no ranges of its own that differ: it is
        // compared whole again.
        let differing = match (table.source.key.is_primary(), verdict.matched) {
            (true, _) => mismatched,
            (false, true) => Vec::new(),
            (false, false) => table.ranges.clone(),
        };
        Ok(Checked { verdict, differing })
    }
}

/// Re-compares the ranges that differ once the stream applied past the source's position, up to
/// `live.rounds` times, keeping what differs in the last re-check; announces every verdict left.
fn recheck(sides: &Sides<'_>, live: &LiveStream<'_>, tables: &mut [Checked], ctx: Ctx<'_>) -> Result<Recheck> {
    let mut report =
        Recheck { stream: live.stream.to_string(), rounds: 0, position: None, waited_seconds: 0.0, timed_out: false };
    while report.rounds < live.rounds && tables.iter().any(|t| !t.verdict.matched) {
        let at = live.feed.current_position()?;
        let position = live.feed.describe_position(at);
        let waiting = Instant::now();
        let reached = applied_past(live, at)?;
        report.waited_seconds += waiting.elapsed().as_secs_f64();
        report.position = Some(position.clone());
        if !reached {
            report.timed_out = true;
            break;
        }
        report.rounds += 1;
        for (i, checked) in tables.iter_mut().enumerate().filter(|(_, t)| !t.verdict.matched) {
            let again = sides.compare(i, &checked.differing, None, ctx)?;
            let before = &checked.verdict;
            let differed = before.diff.missing_total + before.diff.extra_total + before.diff.changed_total;
            let differs =
                again.verdict.diff.missing_total + again.verdict.diff.extra_total + again.verdict.diff.changed_total;
            tracing::info!(
                table = %before.table,
                "re-checked after the stream passed {position}: {differs} of {differed} key(s) still differ"
            );
            // The whole table's counts stay the first pass's; the verdict and the keys are the
            // re-check's.
            let verdict = TableVerdict {
                source_rows: before.source_rows,
                target_rows: before.target_rows,
                in_flight: before.in_flight + differed.saturating_sub(differs),
                ..again.verdict
            };
            *checked = Checked { verdict, differing: again.differing };
        }
    }
    for checked in tables.iter().filter(|t| !t.verdict.matched || t.verdict.in_flight > 0) {
        announce(&checked.verdict, ctx);
    }
    Ok(report)
}

/// Waits until the stream recorded, in the target, that it applied every change before `at`;
/// false when `live.timeout` passed first.
fn applied_past(live: &LiveStream<'_>, at: u64) -> Result<bool> {
    let deadline = Instant::now() + live.timeout;
    loop {
        let applied = live.positions.positions(live.stream)?.into_iter().find(|(table, _)| table.is_empty());
        if applied.is_some_and(|(_, position)| position >= at) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(STREAM_POLL);
    }
}
