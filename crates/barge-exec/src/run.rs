//! Copy and verify runs over whole plans.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow_schema::{Field, Schema};
use barge_core::{
    Budget, Error, KeyRange, KeySpec, RejectLog, Result, Scalar, Source, TableInfo, Target, WriteOptions,
};
use barge_plan::partition::{integer_bounds, plan_ranges};
use barge_plan::{Incremental, Plan, SourcePlan, TableAction};
use barge_verify::{Buckets, Digest, KeyDiff, Routes, is_bucket_key, narrow_range};

use crate::pipeline::{CopyCounters, CopyJob, RangeDigests, copy_table, digest_ranges, digest_routed};
use crate::progress::{Phase, Progress};
use crate::report::{CopyReport, TableReport, TableVerdict, VerifyReport};
use crate::transformed::TransformedSource;

/// How a run executes.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Readers and writers per table, and threads in the CPU pool.
    pub workers: usize,
    /// Rows per record batch.
    pub batch_rows: usize,
    /// Verify each table after copying it.
    pub verify: bool,
    /// Add the source's foreign keys to created tables once every table is loaded.
    pub foreign_keys: bool,
    /// Where rejected rows go (required for tables with an error budget).
    pub rejects: Option<Arc<RejectLog>>,
    /// The whole run's budget of rejected rows.
    pub run_budget: Budget,
    /// Times a range that fails transiently is copied again.
    pub retries: u32,
    /// Where the run keeps its ledger (for `--resume`), if anywhere.
    pub state: Option<RunState>,
}

/// A run's ledger: the store, the run's name in it, and what an earlier attempt left when resuming.
#[derive(Clone)]
pub struct RunState {
    pub store: Arc<dyn barge_core::state::StateStore>,
    pub name: String,
    /// `Some` when resuming: ranges committed earlier are skipped, the others cleared and reloaded.
    pub resume: Option<barge_core::state::RunLedger>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState").field("store", &self.store.describe()).field("name", &self.name).finish()
    }
}

fn action_name(action: TableAction) -> &'static str {
    match action {
        TableAction::Create => "create",
        TableAction::Truncate => "truncate",
        TableAction::Append => "append",
    }
}

/// Rounds of deleting the keys a comparison lists as gone from the source, at most.
const MAX_DELETE_ROUNDS: usize = 1000;

/// Retries of a range that fails transiently, unless told otherwise.
pub const DEFAULT_RETRIES: u32 = 3;

impl ExecOptions {
    /// Options with no reject handling: the first bad row stops the copy.
    pub fn new(workers: usize, batch_rows: usize, verify: bool) -> Self {
        ExecOptions {
            workers,
            batch_rows,
            verify,
            foreign_keys: false,
            rejects: None,
            run_budget: Budget::None,
            retries: DEFAULT_RETRIES,
            state: None,
        }
    }
}

fn cpu_pool(workers: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .thread_name(|i| format!("barge-cpu-{i}"))
        .build()
        .map_err(|e| Error::engine("starting the CPU pool", e))
}

fn sum<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Digest {
    digests.into_iter().fold(Digest::default(), |mut acc, d| {
        acc += *d;
        acc
    })
}

/// Digest buckets per range of the copy ranges.
const BUCKETS_PER_RANGE: usize = 16;

/// Buckets for `table` over `ranges` when its key is one integer column (see [`Buckets`]):
/// each range split arithmetically between its bounds (the table's min and max at the ends).
/// `read` is the table as stored (for statistics), `hashed` the table as hashed (the transform's
/// output), whose key column the buckets index.
fn bucket_layout(
    source: &dyn Source,
    read: &TableInfo,
    hashed: &TableInfo,
    ranges: &[KeyRange],
) -> Result<Option<Buckets>> {
    let KeySpec::Primary(columns) = &hashed.key else { return Ok(None) };
    let [column] = columns.as_slice() else { return Ok(None) };
    if !is_bucket_key(hashed.schema.field(*column).data_type()) {
        return Ok(None);
    }
    let table = read;
    // The outer ends only anchor the arithmetic: a bound beyond the real min or max just leaves a
    // bucket empty. With three or more ranges they are extrapolated from the interior boundaries,
    // sparing a COUNT/MIN/MAX scan (a full index scan on InnoDB); fewer ranges ask the database.
    let interior: Option<Vec<i64>> = ranges
        .iter()
        .take(ranges.len().saturating_sub(1))
        .map(|r| match r.hi.as_deref() {
            Some([Scalar::Int(v)]) => Some(*v),
            _ => None,
        })
        .collect();
    let Some(interior) = interior else { return Ok(None) };
    let (min, max) = match interior.as_slice() {
        [first, .., last] => {
            let width = (last - first) / (interior.len() as i64 - 1);
            (first.saturating_sub(width), last.saturating_add(width))
        }
        _ => {
            let stats = source.key_stats(table, &KeyRange::all())?;
            match (stats.min.as_deref(), stats.max.as_deref()) {
                (Some([Scalar::Int(min)]), Some([Scalar::Int(max)])) => (*min, *max),
                _ => return Ok(None),
            }
        }
    };
    let bounds = ranges
        .iter()
        .map(|range| {
            let lo = match range.lo.as_deref() {
                None => min,
                Some([Scalar::Int(v)]) => *v,
                Some(_) => return None,
            };
            let hi = match range.hi.as_deref() {
                None => max,
                Some([Scalar::Int(v)]) => v.checked_sub(1)?,
                Some(_) => return None,
            };
            Some(if hi > lo { integer_bounds(lo, hi, BUCKETS_PER_RANGE) } else { Vec::new() })
        })
        .collect::<Option<Vec<_>>>();
    Ok(bounds.map(|bounds| Buckets { key_column: *column, bounds }))
}

/// Executes `plan`: prepares every target table, copies each table, and (with `verify`) proves
/// each copy against the source digests taken while copying. `target_reader` opens the target for
/// reading, once, when the first verification needs it.
pub fn copy(
    source: &dyn Source,
    target: &dyn Target,
    target_reader: &dyn Fn() -> Result<Arc<dyn Source>>,
    plan: &Plan,
    options: &ExecOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let pool = cpu_pool(options.workers)?;
    let started = Instant::now();
    let ledger = options.state.as_ref().and_then(|s| s.resume.as_ref());
    // Each table's ranges, and whether barge created it (it then gets its indexes at the end): as
    // planned now, or, resuming, as the earlier attempt planned them.
    let mut layouts: Vec<(Vec<KeyRange>, bool)> = Vec::with_capacity(plan.tables.len());
    for table in &plan.tables {
        let name = &table.source.name;
        let Some(state) = &options.state else {
            layouts.push((table.ranges.clone(), table.action == TableAction::Create));
            continue;
        };
        // A table the interrupted run did not get to plan had nothing written: planned afresh.
        match ledger.and_then(|l| l.tables.get(name)) {
            Some(earlier) => {
                if earlier.action == "append" && table.conflict == barge_core::Conflict::Error && !earlier.finished {
                    return Err(Error::Config(format!(
                        "cannot resume table `{name}`: it was appended to, so ranges cannot be cleared and reloaded; \
                         set conflict = \"upsert\" (or \"skip\") for it, or run without --resume"
                    )));
                }
                layouts.push((earlier.ranges.clone(), earlier.action == "create"));
            }
            None => {
                state.store.plan_table(&state.name, name, action_name(table.action), &table.ranges)?;
                layouts.push((table.ranges.clone(), table.action == TableAction::Create));
            }
        }
    }
    for table in &plan.tables {
        match table.action {
            TableAction::Create => {
                let columns: Vec<_> = table.columns.iter().map(|c| (c.field.clone(), c.target.clone())).collect();
                let key: Vec<String> = table.output.key_columns().into_iter().map(str::to_string).collect();
                target.create_table(&table.target_table, &columns, &key)?;
            }
            TableAction::Truncate => target.truncate_table(&table.target_table)?,
            TableAction::Append => {}
        }
    }
    let mut reader: Option<Arc<dyn Source>> = None;
    let mut reports = Vec::with_capacity(plan.tables.len());
    let mut run_rejected = 0u64;
    for (table, (ranges, created)) in plan.tables.iter().zip(&layouts) {
        let name = table.source.name.as_str();
        let earlier = ledger.and_then(|l| l.tables.get(name));
        let ranges = ranges.as_slice();
        let table_started = Instant::now();
        progress.started(name, Phase::Copy, table.source.estimated_rows);
        let fields: Vec<Field> = table.columns.iter().map(|c| c.field.clone()).collect();
        let counters = CopyCounters::default();
        let detect_deletes = table.incremental.as_ref().is_some_and(|i| i.detect_deletes);
        let compare = options.verify || detect_deletes;
        let buckets = if compare { bucket_layout(source, &table.source, &table.output, ranges)? } else { None };
        let tolerant = table.budget.tolerates_rejects() || options.run_budget.tolerates_rejects();
        if tolerant && options.rejects.is_none() {
            return Err(Error::Config(format!("table `{name}` has an error budget but no reject directory")));
        }
        if let Some(log) = &options.rejects {
            log.start(name)?;
        }
        let job = CopyJob {
            source,
            target,
            table: &table.source,
            output: &table.output,
            transform: table.transform.as_deref(),
            write_options: WriteOptions {
                // A table barge created holds only this run's rows, whose keys are unique: no
                // conflicts (and PostgreSQL builds the key only after the load).
                conflict: if *created { barge_core::Conflict::Error } else { table.conflict },
                key: table.output.key_columns().into_iter().map(str::to_string).collect(),
                isolate_rows: tolerant,
            },
            rejects: options.rejects.as_deref(),
            budget: table.budget,
            run_rejects: (run_rejected, options.run_budget),
            target_table: &table.target_table,
            fields: &fields,
            ranges,
            workers: options.workers,
            batch_rows: options.batch_rows,
            retries: options.retries,
            ledger: options.state.as_ref().map(|state| crate::pipeline::Ledger {
                state,
                done: earlier.map(|e| &e.done),
                // Ranges an earlier attempt may have committed without recording: cleared first.
                clear: earlier.is_some(),
            }),
            hash: compare,
            buckets: buckets.as_ref(),
            progress,
        };
        let copied = copy_table(&job, &pool, &counters);
        if let Some(log) = &options.rejects {
            log.flush()?;
        }
        let digests = copied?;
        let rows_read = counters.rows_read.load(Ordering::Relaxed);
        let rows_written = counters.rows_written.load(Ordering::Relaxed);
        let rows_rejected = counters.rows_rejected.load(Ordering::Relaxed);
        run_rejected += rows_rejected;
        // The budget is checked against the rows read so far while copying; once more exactly.
        if table.budget.exceeded(rows_rejected, rows_read) && rows_rejected > 0 {
            let log = options.rejects.as_ref().expect("rejects need a reject log");
            return Err(Error::BudgetExceeded {
                scope: format!("table `{name}`"),
                rejected: rows_rejected,
                budget: table.budget.to_string(),
                file: log.path(name).display().to_string(),
            });
        }
        if rows_read != rows_written + rows_rejected {
            return Err(Error::RowsLost {
                table: name.into(),
                read: rows_read,
                written: rows_written,
                rejected: rows_rejected,
            });
        }
        // Indexes are recreated over the columns as copied: a transformed table has none to copy.
        // Where the target lets the table be read meanwhile, the build overlaps verification.
        let finish = *created && !earlier.is_some_and(|e| e.finished);
        let overlap =
            finish && compare && table.incremental.is_none() && buckets.is_some() && target.readable_while_finishing();
        let finished = || -> Result<()> {
            if finish {
                target.finish_table(&table.target_table, &table.output)?;
            }
            match &options.state {
                Some(state) => state.store.table_finished(&state.name, name),
                None => Ok(()),
            }
        };
        if !overlap {
            finished()?;
        }
        let notices: Vec<String> = source.notices(name).iter().map(ToString::to_string).collect();
        for notice in &notices {
            tracing::warn!("table `{name}`: {notice}");
        }
        let copy_seconds = table_started.elapsed().as_secs_f64();
        let copy_timeline = counters.timeline.finish(rows_written);
        let rejected_note = if rows_rejected > 0 { format!(", {rows_rejected} rejected") } else { String::new() };
        progress.finished(name, Phase::Copy, &format!("{rows_written} rows{rejected_note} in {copy_seconds:.2}s"));
        // An incremental table's watermark is recorded once its rows are committed.
        if let (Some(state), Some(Incremental { until: Some(until), .. })) = (&options.state, &table.incremental) {
            state.store.set_watermark(&state.name, name, until)?;
        }
        let mut rows_deleted = 0;
        let verify_started = Instant::now();
        let verify_progress = crate::report::PhaseTimeline::new(progress, Phase::Verify);
        let verdict = if compare {
            if sum(digests.iter().flatten()).rows != rows_written {
                return Err(Error::engine(
                    format!("verifying `{name}`"),
                    "source digest does not cover every row read",
                ));
            }
            let reader = match &reader {
                Some(reader) => reader.clone(),
                None => reader.insert(target_reader()?).clone(),
            };
            // An incremental run read a window of the table; the comparison covers all of it.
            let whole = TableInfo { window: None, ..table.source.clone() };
            let transformed = table.transform.as_deref().map(|transform| TransformedSource {
                inner: source,
                read: &whole,
                output: &table.output,
                transform,
            });
            let (verify_source, verify_info): (&dyn Source, &TableInfo) = match &transformed {
                Some(t) => (t, &table.output),
                None => (source, &whole),
            };
            let target_info = reader.table(&table.target_table)?;
            let progress = &verify_progress;
            let target_digests = match buckets.as_ref().filter(|_| overlap) {
                Some(buckets) => digest_while_finishing(
                    reader.as_ref(),
                    &target_info,
                    verify_info,
                    ranges,
                    buckets,
                    &finished,
                    options,
                    &pool,
                    progress,
                )?,
                None => None,
            };
            let compare_once = |digests: Option<RangeDigests>, target_digests: Option<RangeDigests>| {
                verify_table(
                    verify_source,
                    verify_info,
                    reader.as_ref(),
                    target_info.clone(),
                    ranges,
                    digests,
                    target_digests,
                    buckets.as_ref(),
                    options,
                    &pool,
                    progress,
                )
            };
            let mut verdict = compare_once(table.incremental.is_none().then_some(digests), target_digests)?;
            // Keys in the target that the source no longer has: deleted, then compared again (a
            // verdict lists a bounded number of keys at a time).
            let key: Vec<String> = table.output.key_columns().into_iter().map(str::to_string).collect();
            let mut rounds = 0;
            while detect_deletes && verdict.diff.extra_total > 0 && rounds < MAX_DELETE_ROUNDS {
                let deleted = target.delete_keys(&table.target_table, &key, &verdict.diff.extra)?;
                if deleted == 0 {
                    break;
                }
                rows_deleted += deleted;
                rounds += 1;
                verdict = compare_once(None, None)?;
            }
            options.verify.then_some(verdict)
        } else {
            None
        };
        reports.push(TableReport {
            table: name.into(),
            target_table: table.target_table.clone(),
            rows_read,
            rows_written,
            rows_rejected,
            partitions: ranges.len(),
            seconds: table_started.elapsed().as_secs_f64(),
            verified: verdict.as_ref().map(|v| v.matched),
            diff: verdict.filter(|v| !v.matched).map(|v| v.diff),
            notices,
            transformed: table.transform.is_some(),
            retries: counters.retries.load(Ordering::Relaxed),
            ranges_resumed: earlier.map_or(0, |e| e.done.len()),
            rows_deleted,
            watermark: table.incremental.as_ref().and_then(|i| i.until.clone()),
            stages: crate::report::StageSeconds {
                read: counters.read_ns.load(Ordering::Relaxed) as f64 / 1e9,
                cpu: counters.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9,
                write: counters.write_ns.load(Ordering::Relaxed) as f64 / 1e9,
                verify: if compare { verify_started.elapsed().as_secs_f64() } else { 0.0 },
            },
            bytes_read: counters.bytes_read.load(Ordering::Relaxed),
            timeline: copy_timeline,
            verify_timeline: if compare { verify_progress.finish() } else { Vec::new() },
            rejects_file: options
                .rejects
                .as_ref()
                .filter(|_| rows_rejected > 0)
                .map(|log| log.path(name).display().to_string()),
        });
    }
    if options.foreign_keys {
        for table in plan.tables.iter().filter(|t| t.action == TableAction::Create) {
            target.add_foreign_keys(&table.target_table, &table.source.foreign_keys)?;
        }
    }
    if let Some(state) = &options.state {
        state.store.finish(&state.name)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows = reports.iter().map(|r| r.rows_written).sum();
    Ok(CopyReport {
        ok: reports.iter().all(|r| r.verified != Some(false)),
        rows,
        seconds,
        rows_per_s: if seconds > 0.0 { rows as f64 / seconds } else { 0.0 },
        tables: reports,
        peak_rss_mb: crate::report::peak_rss_mb(),
    })
}

/// Verifies every table of a source plan against the same-named tables of `target`.
pub fn verify(
    source: &dyn Source,
    target: &dyn Source,
    plan: &SourcePlan,
    options: &ExecOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let pool = cpu_pool(options.workers)?;
    let started = Instant::now();
    let targets = plan.tables.iter().map(|t| target.table(&t.source.name)).collect::<Result<Vec<_>>>()?;
    let mut tables = Vec::with_capacity(plan.tables.len());
    for (table, target_info) in plan.tables.iter().zip(targets) {
        let buckets = bucket_layout(source, &table.source, &table.source, &table.ranges)?;
        tables.push(verify_table(
            source,
            &table.source,
            target,
            target_info,
            &table.ranges,
            None,
            None,
            buckets.as_ref(),
            options,
            &pool,
            progress,
        )?);
    }
    Ok(VerifyReport { ok: tables.iter().all(|t| t.matched), seconds: started.elapsed().as_secs_f64(), tables })
}

/// Describes the target table the way the source is described: the source's columns in the
/// source's order (so rows encode identically) and the source's key columns.
fn align(target: TableInfo, source: &TableInfo) -> Result<TableInfo> {
    let fields = source
        .schema
        .fields()
        .iter()
        .map(|f| {
            target
                .schema
                .field_with_name(f.name())
                .cloned()
                .map_err(|_| Error::UnknownColumn { table: target.name.clone(), column: f.name().clone() })
        })
        .collect::<Result<Vec<_>>>()?;
    let key = match (&source.key, target.key) {
        (KeySpec::Primary(columns), _) => KeySpec::Primary(columns.clone()),
        // Without a source key, rows are compared as a multiset; the target is ranged over by its
        // own locator where it has one.
        (_, KeySpec::Locator(locator)) => KeySpec::Locator(locator),
        _ => KeySpec::None,
    };
    Ok(TableInfo {
        name: target.name,
        schema: Arc::new(Schema::new(fields)),
        key,
        estimated_rows: target.estimated_rows,
        indexes: Vec::new(),
        foreign_keys: Vec::new(),
        filter: None,
        window: None,
    })
}

/// Narrows mismatched ranges down to keys, up to `workers` ranges at a time, each on a plain
/// thread of its own (narrowing reads the databases: no I/O on the CPU pool).
fn narrow_in_parallel(
    source: &dyn Source,
    source_info: &TableInfo,
    target: &dyn Source,
    target_info: &TableInfo,
    mismatched: &[(KeyRange, Digest, Digest)],
    workers: usize,
    batch_rows: usize,
) -> Result<KeyDiff> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let diffs: Vec<Result<KeyDiff>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.clamp(1, mismatched.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut diff = KeyDiff::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((range, s, t)) = mismatched.get(i) else { return Ok(diff) };
                        diff.merge(narrow_range(source, source_info, target, target_info, range, *s, *t, batch_rows)?);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a narrowing thread panicked")).collect()
    });
    let mut diff = KeyDiff::default();
    for part in diffs {
        diff.merge(part?);
    }
    Ok(diff)
}

/// The target's digests over `ranges`, taken while `finish` builds its key and indexes: the table,
/// which has no key yet, is read in storage order over its row locator, and each row is routed to
/// the key range and bucket of its key. `None`, after `finish`, when it cannot be read so (no
/// locator, a key that does not read back as an integer, ranges that do not tile the key space).
#[allow(clippy::too_many_arguments)]
fn digest_while_finishing(
    reader: &dyn Source,
    described: &TableInfo,
    source: &TableInfo,
    ranges: &[KeyRange],
    buckets: &Buckets,
    finish: &(dyn Fn() -> Result<()> + Sync),
    options: &ExecOptions,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
) -> Result<Option<RangeDigests>> {
    let physical = match (&described.key, Routes::new(buckets, ranges)) {
        (KeySpec::Locator(locator), Some(routes)) => {
            let physical = TableInfo { key: KeySpec::Locator(locator.clone()), ..align(described.clone(), source)? };
            is_bucket_key(physical.schema.field(buckets.key_column).data_type()).then_some((physical, routes))
        }
        _ => None,
    };
    let Some((physical, routes)) = physical else {
        finish()?;
        return Ok(None);
    };
    let stored = plan_ranges(reader, &physical, &KeyRange::all(), ranges.len())?;
    tracing::info!("table `{}`: verifying while its key and indexes build", source.name);
    progress.started(&source.name, Phase::Verify, source.estimated_rows);
    std::thread::scope(|scope| {
        let building = std::thread::Builder::new()
            .name("barge-finish".into())
            .spawn_scoped(scope, finish)
            .expect("spawning a thread");
        let (workers, batch_rows) = (options.workers, options.batch_rows);
        let digests = digest_routed(reader, &physical, &stored, &routes, workers, batch_rows, pool, progress);
        // The build's failure first: it says more than a read that failed because of it.
        building.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        digests.map(Some)
    })
}

/// Compares one table: per key range where the source has a primary key, as one multiset of rows
/// otherwise. Mismatched ranges are narrowed down to the keys that differ.
#[allow(clippy::too_many_arguments)]
pub fn verify_table(
    source: &dyn Source,
    source_info: &TableInfo,
    target: &dyn Source,
    target_info: TableInfo,
    ranges: &[KeyRange],
    source_digests: Option<RangeDigests>,
    target_digests: Option<RangeDigests>,
    buckets: Option<&Buckets>,
    options: &ExecOptions,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
) -> Result<TableVerdict> {
    let name = source_info.name.as_str();
    let target_info = align(target_info, source_info)?;
    let (workers, batch_rows) = (options.workers, options.batch_rows);
    let expected = if source_digests.is_some() { target_info.estimated_rows } else { source_info.estimated_rows * 2 };
    if target_digests.is_none() {
        // (Whoever took the target's digests started the phase.)
        progress.started(name, Phase::Verify, expected);
    }
    let source_digests = match source_digests {
        Some(digests) => digests,
        None => digest_ranges(source, source_info, ranges, buckets, workers, batch_rows, pool, progress)?,
    };
    let mut diff = KeyDiff::default();
    let (source_total, target_total, matched);
    if source_info.key.is_primary() {
        // Buckets only when the target's key reads back as an integer too, so both sides assign
        // every row alike; otherwise compare whole ranges.
        let buckets = buckets.filter(|b| is_bucket_key(target_info.schema.field(b.key_column).data_type()));
        let source_digests: RangeDigests = match buckets {
            Some(_) => source_digests,
            None => source_digests.iter().map(|d| vec![sum(d)]).collect(),
        };
        let target_digests = match (target_digests, buckets) {
            (Some(digests), Some(_)) => digests,
            (Some(digests), None) => digests.iter().map(|d| vec![sum(d)]).collect(),
            (None, _) => digest_ranges(target, &target_info, ranges, buckets, workers, batch_rows, pool, progress)?,
        };
        let mut mismatched = Vec::new();
        for ((range, s), t) in ranges.iter().zip(&source_digests).zip(&target_digests) {
            for (bucket, (s, t)) in s.iter().zip(t).enumerate() {
                if s != t {
                    let key_range = buckets.map_or_else(|| range.clone(), |b| b.key_range(range, bucket));
                    mismatched.push((key_range, *s, *t));
                }
            }
        }
        diff = narrow_in_parallel(source, source_info, target, &target_info, &mismatched, workers, batch_rows)?;
        matched = source_digests == target_digests;
        (source_total, target_total) = (sum(source_digests.iter().flatten()), sum(target_digests.iter().flatten()));
    } else {
        let target_ranges = plan_ranges(target, &target_info, &KeyRange::all(), ranges.len())?;
        let target_digests =
            digest_ranges(target, &target_info, &target_ranges, None, workers, batch_rows, pool, progress)?;
        (source_total, target_total) = (sum(source_digests.iter().flatten()), sum(target_digests.iter().flatten()));
        matched = source_total == target_total;
        if !matched {
            diff = narrow_range(
                source,
                source_info,
                target,
                &target_info,
                &KeyRange::all(),
                source_total,
                target_total,
                batch_rows,
            )?;
        }
    }
    let summary = if matched {
        format!("verified: {} rows match", source_total.rows)
    } else {
        format!("MISMATCH: {} missing, {} extra, {} changed", diff.missing_total, diff.extra_total, diff.changed_total)
    };
    progress.finished(name, Phase::Verify, &summary);
    Ok(TableVerdict {
        table: name.into(),
        source_rows: source_total.rows,
        target_rows: target_total.rows,
        matched,
        diff,
    })
}
