//! `barge copy` and `barge run` over a whole plan.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use barge_core::{DumpedSchema, RestoreStep, Result, SnapshotInfo, Source, Target};
use barge_plan::{Plan, TableAction};

use crate::ExecOptions;
use crate::context::{Ctx, cpu_pool};
use crate::copy::prepare::{check_capabilities, layouts, prepare_targets, restorer};
use crate::copy::table::TableCopy;
use crate::progress::Progress;
use crate::report::CopyReport;

/// What every table of a run shares.
pub(crate) struct CopyRun<'a> {
    pub source: &'a dyn Source,
    pub target: &'a dyn Target,
    pub target_reader: &'a (dyn Fn() -> Result<Arc<dyn Source>> + Sync),
    pub options: &'a ExecOptions,
    /// The source's own schema dump, when the schema is restored exactly.
    pub schema: Option<&'a dyn DumpedSchema>,
    pub ctx: Ctx<'a>,
    /// The target opened for reading, once the first verification needs it.
    reader: OnceLock<Arc<dyn Source>>,
    /// Rows rejected and read by the tables copied so far (against the run's budget).
    pub run_rejected: AtomicU64,
    pub run_read: AtomicU64,
}

impl CopyRun<'_> {
    pub(crate) fn reader(&self) -> Result<Arc<dyn Source>> {
        if let Some(reader) = self.reader.get() {
            return Ok(reader.clone());
        }
        let reader = (self.target_reader)()?;
        Ok(self.reader.get_or_init(|| reader).clone())
    }
}

/// Copies a piece of a planned range for a distributed run's worker: `piece` (its id the planned
/// range's, `table` planned with its ranges as the run's ledger holds them) holds keys within that
/// range. Cleared first over `clear` (an earlier holder may have committed some of it), read,
/// transformed, hashed and written through the stages, with the worker's fence
/// (`options.fence`) checked before each commit. No DDL, finishing, verification or ledger: the
/// worker records what it returns. Its digests follow the planned range's buckets, so the pieces
/// of a range add up to the range's ([`merge_pieces`]).
pub fn copy_piece(
    source: &dyn Source,
    target: &dyn Target,
    table: &barge_plan::TablePlan,
    piece: &barge_core::KeyRange,
    clear: Option<&barge_core::KeyRange>,
    options: &ExecOptions,
    progress: &dyn Progress,
) -> Result<barge_core::ledger::RangeDone> {
    use std::sync::atomic::Ordering;
    let range = piece.id;
    let pool = cpu_pool(options.workers)?;
    let no_reader = || -> Result<Arc<dyn Source>> { Err(barge_core::Error::Config("no verification here".into())) };
    let run = CopyRun {
        source,
        target,
        target_reader: &no_reader,
        options,
        schema: None,
        ctx: Ctx { pool: &pool, workers: options.workers, batch: options.batch(), progress },
        reader: OnceLock::new(),
        run_rejected: AtomicU64::new(0),
        run_read: AtomicU64::new(0),
    };
    let layout = crate::copy::prepare::Layout { ranges: table.ranges.clone(), created: false };
    if !layout.ranges.iter().any(|r| r.id == range) {
        return Err(barge_core::Error::Config(format!("table `{}` has no range {range}", table.source.name)));
    }
    let mut copy = TableCopy::new(&run, table, &layout);
    // Buckets of the planned ranges; the range read is the piece.
    copy.buckets = crate::verify::buckets::bucket_layout(source, &table.source, &table.output, &layout.ranges)?;
    let ranges: Vec<barge_core::KeyRange> =
        layout.ranges.iter().map(|r| if r.id == range { piece.clone() } else { r.clone() }).collect();
    let fields = copy.fields();
    let mut job = copy.job(&table.source, &fields, &ranges, table.conflict);
    job.hash = true;
    job.buckets = copy.buckets.as_ref();
    if let Some(clear) = clear {
        crate::copy::ranges::clear_ranges(&job, &[clear])?;
    }
    let digests = crate::copy::ranges::copy_ranges(&job, &copy.counters, Some(range))?;
    if let Some(log) = &options.rejects {
        log.flush()?;
    }
    let c = &copy.counters;
    let (read, written, rejected) = (
        c.rows_read.load(Ordering::Relaxed),
        c.rows_written.load(Ordering::Relaxed),
        c.rows_rejected.load(Ordering::Relaxed),
    );
    if read != written + rejected {
        return Err(barge_core::Error::RowsLost { table: table.source.name.clone(), read, written, rejected });
    }
    Ok(barge_core::ledger::RangeDone {
        range,
        rows_read: read,
        rows_written: written,
        rows_rejected: rejected,
        digests: serde_json::to_string(&digests[range]).map_err(|e| barge_core::Error::engine("digests", e))?,
    })
}

/// The pieces (or chunks) of one range added up: counts, and digests bucket by bucket.
pub fn merge_pieces(parts: &[barge_core::ledger::RangeDone]) -> Result<barge_core::ledger::RangeDone> {
    let digests = |part: &barge_core::ledger::RangeDone| {
        serde_json::from_str::<Vec<barge_verify::Digest>>(&part.digests)
            .map(|d| vec![d])
            .map_err(|e| barge_core::Error::engine("reading a piece's digests", e))
    };
    let each = parts.iter().map(digests).collect::<Result<Vec<_>>>()?;
    if each.windows(2).any(|w| w[0][0].len() != w[1][0].len()) {
        return Err(barge_core::Error::engine("adding up a range's pieces", "their digests have different buckets"));
    }
    let total = crate::verify::shared::summed(each).pop().unwrap_or_default();
    Ok(barge_core::ledger::RangeDone {
        range: parts.first().map_or(0, |p| p.range),
        rows_read: parts.iter().map(|p| p.rows_read).sum(),
        rows_written: parts.iter().map(|p| p.rows_written).sum(),
        rows_rejected: parts.iter().map(|p| p.rows_rejected).sum(),
        digests: serde_json::to_string(&total).map_err(|e| barge_core::Error::engine("digests", e))?,
    })
}

/// Executes `plan`: prepares every target table, copies each table, and (with `verify`) proves
/// each copy against the source digests taken while copying. `target_reader` opens the target for
/// reading, once, when the first verification needs it.
pub fn copy(
    source: &dyn Source,
    target: &dyn Target,
    target_reader: &(dyn Fn() -> Result<Arc<dyn Source>> + Sync),
    plan: &Plan,
    options: &ExecOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let pool = cpu_pool(options.workers)?;
    let started = Instant::now();
    check_capabilities(target, plan, options)?;
    let layouts = layouts(plan, options)?;
    let snapshot = pin_snapshot(source, options)?;
    let resumed = options.ledger.as_ref().is_some_and(|l| l.resume.is_some());
    let refused = prepare_targets(target, plan, options.fail_fast, resumed)?;
    if options.prepare_only {
        // A distributed run's coordinator: its workers copy the ranges the ledger now holds.
        if let Some(error) = refused.into_iter().flatten().next() {
            return Err(error);
        }
        let mut report = CopyReport::new(Vec::new(), started.elapsed().as_secs_f64());
        report.snapshot = Some(snapshot);
        return Ok(report);
    }
    let run = CopyRun {
        source,
        target,
        target_reader,
        options,
        schema: plan.schema.dump(),
        ctx: Ctx { pool: &pool, workers: options.workers, batch: options.batch(), progress },
        reader: OnceLock::new(),
        run_rejected: AtomicU64::new(0),
        run_read: AtomicU64::new(0),
    };
    for (table, layout) in plan.tables.iter().zip(&layouts) {
        let key = table.output.key_columns().join(", ");
        let action = match table.action {
            TableAction::Create => "created",
            TableAction::Truncate => "truncated",
            TableAction::Append => "appended to",
        };
        tracing::info!(
            "plan: table `{}` → `{}` ({action}): {} range(s), ~{} rows estimated, key ({})",
            table.source.name,
            table.target_table,
            layout.ranges.len(),
            barge_core::text::count(table.source.estimated_rows),
            if key.is_empty() { "none" } else { &key },
        );
    }
    for failure in &plan.failed {
        tracing::info!("plan: table `{}` set aside: {}", failure.table, failure.message);
    }
    let mut reports = Vec::with_capacity(plan.tables.len());
    for ((table, layout), refused) in plan.tables.iter().zip(&layouts).zip(refused) {
        if let Some(error) = refused {
            // Its CREATE or TRUNCATE was refused: nothing of it was written.
            let failure = barge_plan::TableFailure::new(&table.source.name, &table.target_table, &error);
            run.ctx.progress.finished(&table.source.name, crate::Phase::Copy, &format!("FAILED: {error}"));
            reports.push(crate::report::TableReport::set_aside(&failure));
            continue;
        }
        let mut copy = TableCopy::new(&run, table, layout);
        match copy.run() {
            Ok(report) => reports.push(report),
            // One table that cannot be copied does not stop the others (unless --fail-fast, or
            // the failure is the run's: its budget, its ledger, a cancel).
            Err(error) if !options.fail_fast && is_table_failure(&error) => {
                tracing::error!("table `{}` failed: {error}; going on with the other tables", table.source.name);
                run.ctx.progress.finished(&table.source.name, crate::Phase::Copy, &format!("FAILED: {error}"));
                reports.push(copy.failed(&error));
            }
            Err(error) => return Err(error),
        }
    }
    // Tables the plan set aside: nothing of them was written.
    for failure in &plan.failed {
        run.ctx.progress.finished(&failure.table, crate::Phase::Copy, &format!("FAILED: {}", failure.message));
        reports.push(crate::report::TableReport::set_aside(failure));
    }
    let all_copied = reports.iter().all(|r| r.error.is_none());
    let mut not_migrated = plan.not_migrated.clone();
    if let Some(dump) = plan.schema.dump() {
        // The dump's foreign keys reference any table: added once every table is in.
        let restorer = restorer(target)?;
        if options.foreign_keys && all_copied {
            restorer.restore(dump, RestoreStep::ForeignKeys)?;
        } else if options.foreign_keys {
            tracing::warn!("foreign keys not added: a table failed (copy again with --resume once it is fixed)");
        }
        restorer.restore(dump, RestoreStep::Last)?;
    } else if options.foreign_keys
        && let Some(objects) = target.schema_objects()
    {
        let copied = |name: &str| reports.iter().any(|r| r.table == name && r.error.is_none());
        let mut refused_keys = Vec::new();
        // The tables barge made: in this run, or (resumed) in the run it continues.
        let made = |name: &str| plan.tables.iter().zip(&layouts).any(|(t, l)| t.source.name == name && l.created);
        for table in plan.tables.iter().filter(|t| made(&t.source.name) && copied(&t.source.name)) {
            // A key into a table that failed, or that this run left out and the target does not
            // have, cannot be added: said, not attempted.
            let mut foreign_keys = Vec::new();
            for fk in &table.output.foreign_keys {
                let why = match reports.iter().find(|r| r.target_table == fk.ref_table) {
                    Some(r) if r.error.is_some() => Some(format!("table `{}` failed", fk.ref_table)),
                    Some(_) => None,
                    None if target.table_rows(&fk.ref_table)?.is_none() => {
                        Some(format!("table `{}` is not copied and the target has none", fk.ref_table))
                    }
                    None => None,
                };
                match why {
                    Some(why) => {
                        not_migrated.push(barge_core::NotMigrated::new("foreign key", fk_name(table, fk), why))
                    }
                    None => foreign_keys.push(fk.clone()),
                }
            }
            if objects.adds_foreign_keys() {
                match objects.add_foreign_keys(&table.target_table, &foreign_keys) {
                    Ok(()) => {}
                    // A key the target refuses (rows without their parent) fails its table,
                    // whose rows stay as copied and verified; the others are not affected.
                    Err(error) if !options.fail_fast && is_table_failure(&error) => {
                        tracing::error!("table `{}`: its foreign keys were refused: {error}", table.target_table);
                        refused_keys.push((
                            table.source.name.clone(),
                            crate::report::TableError {
                                kind: error.kind().into(),
                                message: format!("adding its foreign keys: {error}"),
                                column: None,
                                target: format!(
                                    "`{}` holds its rows as copied and verified; some or all of its foreign keys are \
                                 missing: fix the rows they refuse, then add them",
                                    table.target_table
                                ),
                                usage: false,
                            },
                        ));
                    }
                    Err(error) => return Err(error),
                }
            } else {
                not_migrated.extend(table.output.foreign_keys.iter().map(|fk| {
                    barge_core::NotMigrated::new(
                        "foreign key",
                        fk_name(table, fk),
                        format!(
                            "{} cannot add a foreign key to a table after its rows are loaded",
                            target.display_name()
                        ),
                    )
                }));
            }
        }
        for (name, error) in refused_keys {
            if let Some(report) = reports.iter_mut().find(|r| r.table == name) {
                report.status = "failed".into();
                report.error = Some(error);
            }
        }
    }
    if plan.schema.dump().is_none() {
        add_checks(target, plan, &layouts, &reports, &mut not_migrated);
    }
    // A run with a failed table is not finished: `--resume` completes it after the fix.
    let views = create_views(target, &plan.views, &mut not_migrated);
    if let Some(ledger) = options.ledger.as_ref().filter(|_| all_copied) {
        ledger.finish()?;
    }
    let mut snapshot = snapshot;
    let resumed: usize = reports.iter().map(|r| r.ranges_resumed).sum();
    if resumed > 0 && snapshot.consistent {
        // Ranges kept from an interrupted run were read at that run's own instant.
        snapshot.consistent = false;
        snapshot.detail = format!(
            "{}, except {resumed} range(s) kept from the interrupted run, read at that run's snapshot",
            snapshot.detail
        );
    }
    let mut report = CopyReport::new(reports, started.elapsed().as_secs_f64());
    report.snapshot = Some(snapshot);
    report.schema = Some(barge_plan::SchemaReport::of(&plan.schema));
    report.not_migrated = not_migrated;
    report.views = views;
    Ok(report)
}

/// A foreign key as the summary names it: `child(parent_id) → parent(id)`.
fn fk_name(table: &barge_plan::TablePlan, fk: &barge_core::ForeignKeyInfo) -> String {
    format!("{}({}) → {}({})", table.target_table, fk.columns.join(", "), fk.ref_table, fk.ref_columns.join(", "))
}

/// Adds the source's CHECK constraints and expression or partial indexes to the tables this run
/// created and filled (one the target refuses, in its SQL or for a row, is listed as not migrated
/// with the target's reason). A table whose columns a pipeline transforms keeps none: their SQL
/// names source columns.
fn add_checks(
    target: &dyn Target,
    plan: &Plan,
    layouts: &[crate::copy::prepare::Layout],
    reports: &[crate::report::TableReport],
    not_migrated: &mut Vec<barge_core::NotMigrated>,
) {
    let copied = |name: &str| reports.iter().any(|r| r.table == name && r.error.is_none());
    let made = plan.tables.iter().zip(layouts).filter(|(_, l)| l.created).map(|(t, _)| t);
    for table in made.filter(|t| copied(&t.source.name)) {
        for index in &table.source.sql_indexes {
            let name = format!("{}.{}", table.target_table, index.name);
            let refused = match table.transform {
                Some(_) => {
                    Err("the pipeline transforms this table's columns, and barge does not rewrite index expressions"
                        .to_string())
                }
                None => target.add_index(&table.target_table, index).map_err(|e| format!("the target refused it: {e}")),
            };
            match refused {
                Ok(()) => tracing::info!("index `{name}` built"),
                Err(why) => {
                    tracing::warn!("index `{name}` not built: {why}");
                    not_migrated.push(barge_core::NotMigrated::new("index", name, why));
                }
            }
        }
        for check in &table.source.checks {
            let name = format!("{}.{}", table.target_table, check.name);
            if table.transform.is_some() {
                not_migrated.push(barge_core::NotMigrated::new(
                    "check constraint",
                    name,
                    "the pipeline transforms this table's columns, and barge does not rewrite CHECK conditions",
                ));
                continue;
            }
            match target.add_check(&table.target_table, check) {
                Ok(()) => tracing::info!("check constraint `{name}` added"),
                Err(error) => {
                    tracing::warn!("check constraint `{name}` not added: {error}");
                    not_migrated.push(barge_core::NotMigrated::new(
                        "check constraint",
                        name,
                        format!("the target refused `{}`: {error}", check.expr),
                    ));
                }
            }
        }
    }
}

/// Creates the source's views on the target, after every row: in rounds, so a view over another
/// view waits for it; one the target refuses in the last round is listed as not migrated with the
/// target's reason. Returns the views created.
fn create_views(
    target: &dyn Target,
    views: &[barge_core::ViewDef],
    not_migrated: &mut Vec<barge_core::NotMigrated>,
) -> Vec<String> {
    let mut created = Vec::new();
    let mut pending: Vec<&barge_core::ViewDef> = views.iter().collect();
    loop {
        let mut refused = Vec::new();
        let before = pending.len();
        for view in pending {
            match target.create_view(view) {
                Ok(()) => {
                    tracing::info!("view `{}` created", view.name);
                    created.push(view.name.clone());
                }
                Err(error) => refused.push((view, error)),
            }
        }
        if refused.is_empty() || refused.len() == before {
            for (view, error) in refused {
                tracing::warn!("view `{}` not created: {error}", view.name);
                not_migrated.push(barge_core::NotMigrated::new(
                    "view",
                    &view.name,
                    format!("the target refused its SQL: {error}"),
                ));
            }
            return created;
        }
        pending = refused.into_iter().map(|(view, _)| view).collect();
    }
}

/// Whether `error` is one table's failure (the others can go on) rather than the run's.
fn is_table_failure(error: &barge_core::Error) -> bool {
    use barge_core::Error;
    match error {
        Error::BudgetExceeded { scope, .. } => scope != "the run",
        Error::LedgerBusy { .. } | Error::Cancelled | Error::Unsupported { .. } => false,
        _ => true,
    }
}

/// Pins the source at one instant before the first row is read, where the source can; says so
/// either way (a copy that is not one snapshot may not match a source being written to).
fn pin_snapshot(source: &dyn Source, options: &ExecOptions) -> Result<SnapshotInfo> {
    let snapshot = match source.snapshots() {
        Some(snapshots) => snapshots.pin_snapshot(options.workers, options.snapshot_lock)?,
        None => SnapshotInfo {
            consistent: false,
            detail: format!("{} cannot be read as one snapshot", source.display_name()),
        },
    };
    if snapshot.consistent {
        tracing::info!("source as of {}", snapshot.detail);
    } else {
        tracing::warn!("source read without a snapshot ({}): concurrent writes may differ", snapshot.detail);
    }
    Ok(snapshot)
}
