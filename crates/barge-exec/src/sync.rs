//! Change capture after a bulk copy: the source's committed changes applied to the target, in
//! batches, each table's batch in one target transaction with the position it reaches.
//!
//! ```text
//!  ChangeFeed::read_changes ─▶ per table: changed keys (distinct, by their last change: a row
//!       │  image or not), TRUNCATE, column changes (changes at or before the table's recorded
//!       │  position are skipped: applied already)
//!       ▼
//!  ChangeFeed::read_keys (keys without an image): their current rows and the keys gone, in
//!  one source snapshot
//!       ▼
//!  writer (upsert), in one transaction: TRUNCATE → image rows → delete gone keys → upsert
//!  rows read (transform, encode as the copy does) → record_position(stream, table, end) → commit
//!       ▼
//!  ChangeFeed::confirm(end): the source frees what every table has
//! ```
//!
//! Rows the source logged whole (PostgreSQL's binary row images, [`ChangeKind::Image`]) are
//! upserted as logged; the others are read back (`ChangeFeed::read_keys`): deletes, old keys,
//! unchanged TOAST values, filtered tables. The bulk copy starts after the stream (its position
//! is recorded first), so changes it already saw are replayed over it: applied by key, by each
//! key's last change, that converges. A read-back writes the row as the source holds it now; an
//! image, as it was at its change, so during the replay a row may step back before the copy's
//! version and forward again. Replaying a change twice is harmless, and once the stream has
//! passed a position, every row changed before it matches the source as of some moment after
//! it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use barge_core::{
    BatchEncoder, ChangeFeed, ChangeKind, ChangeWriter, Conflict, Error, KeyRows, Result, TableWriter, Target,
    WriteOptions,
};
use barge_plan::TablePlan;
use serde::Serialize;

/// What a sync run does.
pub struct SyncOptions<'a> {
    /// The stream's name (slot and publication are named after it).
    pub stream: &'a str,
    /// Stop once every change committed before this position is applied (`--until caught-up`).
    pub until: Option<u64>,
    /// Changes read per batch, about (whole transactions).
    pub batch_changes: usize,
    /// Set by SIGINT/SIGTERM: finish the batch in flight, then stop.
    pub stop: Arc<AtomicBool>,
    /// How long to wait for changes when there are none.
    pub idle: Duration,
    /// Times a batch that fails transiently (lost connection, restarted server) is tried again.
    pub retries: u32,
    /// Tables stopped before the run (they no longer plan): reported with the others.
    pub stopped: Vec<SyncTable>,
    /// A table's plan again after the source changed its schema (DDL): the caller carries what
    /// it can (an added nullable column without a default, added to the target too), else an
    /// error saying why the table stops.
    pub replan: &'a (dyn Fn(&TablePlan) -> Result<TablePlan> + Sync),
    /// Told each table's changed keys (by source table) once its share of a batch committed:
    /// what `barge migrate` samples its shadow reads from.
    pub changed: Option<&'a ChangedKeys<'a>>,
}

/// Told a table's changed keys (see [`SyncOptions::changed`]).
pub type ChangedKeys<'a> = dyn Fn(&str, &[Vec<Option<String>>]) + Sync + 'a;

/// One table's changes applied in a sync run.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct SyncTable {
    pub table: String,
    /// Rows written (inserted or updated) by changes.
    pub upserted: u64,
    /// Rows deleted by changes.
    pub deleted: u64,
    pub truncates: u64,
    /// Changed rows read back from the source (the others came whole with their change).
    pub read_back: u64,
    /// The position this table holds every change up to.
    pub applied_position: Option<String>,
    /// Why the table stopped applying changes (the others go on).
    pub error: Option<String>,
}

/// A sync run's state, reported once a second while it runs and at its end.
#[derive(Clone, Debug, Serialize)]
pub struct SyncStatus {
    pub phase: &'static str,
    pub stream: String,
    pub source_position: String,
    pub applied_position: String,
    pub lag_bytes: u64,
    /// Seconds from the last applied transaction's commit on the source to its apply (0 once
    /// nothing is waiting).
    pub lag_seconds: f64,
    pub changes_per_s: f64,
    pub applied_total: u64,
    pub transactions: u64,
    /// Bytes of the source's log the stream keeps.
    pub retained_bytes: Option<u64>,
    pub caught_up: bool,
    pub tables: Vec<SyncTable>,
}

struct TableState {
    plan: TablePlan,
    applied: u64,
    report: SyncTable,
    failed: bool,
    /// The table's writer and encoder, kept from batch to batch (a writer starts a new
    /// transaction at each commit); dropped when a batch fails or the plan changes.
    writer: Option<(Box<dyn TableWriter>, Arc<dyn BatchEncoder>)>,
}

impl TableState {
    /// The table stops applying changes, for `error`; the other tables go on.
    fn stop(&mut self, error: &Error) {
        tracing::error!(table = %self.plan.source.name, "sync stopped for this table: {error}");
        self.failed = true;
        self.report.error = Some(error.to_string());
    }
}

/// Applies the stream's changes to the target until `options.until` is reached or a stop is
/// asked. Each table starts from the position it recorded, else from `start` (where the stream
/// began, before the bulk copy).
pub fn sync(
    feed: &dyn ChangeFeed,
    target: &dyn Target,
    tables: &[TablePlan],
    start: u64,
    options: &SyncOptions<'_>,
    status: &mut dyn FnMut(&SyncStatus),
) -> Result<SyncStatus> {
    let positions = target
        .change_positions()
        .ok_or_else(|| Error::unsupported(target.display_name(), "keep change positions (sync)"))?;
    let recorded: HashMap<String, u64> = positions.positions(options.stream)?.into_iter().collect();
    let mut states: Vec<TableState> = tables
        .iter()
        .map(|plan| {
            let applied = recorded.get(&plan.target_table).copied().unwrap_or(start).max(start);
            TableState {
                plan: plan.clone(),
                applied,
                report: SyncTable {
                    table: plan.source.name.clone(),
                    applied_position: Some(feed.describe_position(applied)),
                    ..SyncTable::default()
                },
                failed: false,
                writer: None,
            }
        })
        .collect();
    let apply = Apply { feed, target, stream: options.stream };
    let mut infos: Vec<barge_core::TableInfo> = tables.iter().map(|t| t.source.clone()).collect();
    let mut applied_to = recorded.get("").copied().unwrap_or(start).max(start);
    let (mut applied_total, mut transactions) = (0u64, 0u64);
    let started = Instant::now();
    let mut last_status = Instant::now();
    let mut caught_up = false;
    let mut lag_seconds = 0.0;
    let mut last_idle_record: Option<Instant> = None;
    let snapshot = |states: &[TableState], applied_to: u64, applied_total, transactions, caught_up, lag_seconds| {
        let source = feed.current_position().unwrap_or(applied_to);
        SyncStatus {
            phase: if caught_up || options.until.is_none() { "streaming" } else { "catch-up" },
            stream: options.stream.to_string(),
            source_position: feed.describe_position(source),
            applied_position: feed.describe_position(applied_to),
            lag_bytes: source.saturating_sub(applied_to),
            lag_seconds,
            changes_per_s: applied_total as f64 / started.elapsed().as_secs_f64().max(1e-3),
            applied_total,
            transactions,
            retained_bytes: feed.retained_bytes(options.stream).ok().flatten(),
            caught_up,
            tables: states.iter().map(|s| s.report.clone()).chain(options.stopped.iter().cloned()).collect(),
        }
    };
    loop {
        if options.stop.load(Ordering::SeqCst) {
            break;
        }
        let batch = crate::retry::retrying(options.retries, options.stream, "reading changes", || {
            feed.read_changes(options.stream, &infos, applied_to, options.until, options.batch_changes)
        })?;
        let Some(end) = batch.end else {
            if let Some(until) = options.until {
                // Nothing committed before `until` is left: every change it asks for is applied.
                feed.confirm(options.stream, until.max(applied_to))?;
                applied_to = applied_to.max(until);
                caught_up = true;
                break;
            }
            lag_seconds = 0.0;
            // Nothing to apply, and the read covered the source up to `scanned`: the stream
            // holds every change before it (so a verification waiting for the stream to pass a
            // position sees it pass on a quiet source, and the slot frees its WAL).
            // At most once a second: recording writes to the target, and where the target shares
            // the source's server that write moves the source's WAL on too.
            if let Some(scanned) = batch.scanned.filter(|&s| s > applied_to)
                && last_idle_record.is_none_or(|at| at.elapsed() >= IDLE_RECORD_EVERY)
            {
                crate::retry::retrying(options.retries, options.stream, "recording the position", || {
                    positions.record(options.stream, "", scanned)?;
                    feed.confirm(options.stream, scanned)
                })?;
                applied_to = scanned;
                last_idle_record = Some(Instant::now());
            }
            if last_status.elapsed() >= Duration::from_secs(1) {
                status(&snapshot(&states, applied_to, applied_total, transactions, false, lag_seconds));
                last_status = Instant::now();
            }
            sleep_unless_stopped(options.idle, &options.stop);
            continue;
        };
        transactions += batch.transactions;
        let work = group(&batch.changes, &states, options.changed.is_some());
        for state in states.iter_mut() {
            let Some(changes) = work.get(state.plan.source.name.as_str()) else { continue };
            if state.failed {
                continue;
            }
            if let Err(error) = evolve(state, changes, options.replan, &mut infos) {
                state.stop(&error);
                continue;
            }
            // A lost connection or a restarted server: the batch is applied again (idempotent:
            // the rows are read anew, nothing was committed).
            let name = state.plan.source.name.clone();
            let applied = crate::retry::retrying(options.retries, &name, "applying changes", || {
                apply_table(&apply, state, (changes, batch.images.get(name.as_str())), end)
            });
            match applied {
                Ok(n) => {
                    applied_total += n.upserted + n.deleted;
                    state.report.upserted += n.upserted;
                    state.report.deleted += n.deleted;
                    state.report.truncates += n.truncates;
                    state.report.read_back += n.read_back;
                    state.applied = end;
                    state.report.applied_position = Some(feed.describe_position(end));
                    if let Some(told) = options.changed {
                        told(&name, &changes.changed);
                    }
                }
                Err(error) => state.stop(&error),
            }
        }
        crate::retry::retrying(options.retries, options.stream, "recording the position", || {
            positions.record(options.stream, "", end)?;
            feed.confirm(options.stream, end)
        })?;
        applied_to = end;
        if let Some(at) = batch.committed_at {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            lag_seconds = (now.as_secs_f64() - at).max(0.0);
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            status(&snapshot(&states, applied_to, applied_total, transactions, false, lag_seconds));
            last_status = Instant::now();
        }
    }
    // Rows written with their keys leave a PostgreSQL sequence behind them: an application's
    // first insert into the target would take a key the source already gave.
    if let Some(objects) = target.schema_objects() {
        for state in states.iter_mut().filter(|s| !s.failed) {
            if let Err(error) = objects.continue_identities(&state.plan.target_table) {
                state.stop(&error);
            }
        }
    }
    let last = snapshot(&states, applied_to, applied_total, transactions, caught_up, lag_seconds);
    status(&last);
    Ok(last)
}

fn sleep_unless_stopped(idle: Duration, stop: &AtomicBool) {
    let until = Instant::now() + idle;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20).min(idle));
    }
}

/// One table's share of a batch.
#[derive(Default)]
struct TableWork {
    truncate: bool,
    /// Keys whose rows are read back from the source.
    keys: Vec<Vec<Option<String>>>,
    /// Rows the changes left, by their number in the batch's images of the table.
    images: Vec<u32>,
    /// Column lists the source described the table with (DDL shows as a new list).
    columns: Vec<Vec<String>>,
    /// DDL statements on the table.
    ddl: Vec<String>,
    /// Every key changed, once each (only when asked: [`SyncOptions::changed`]).
    changed: Vec<Vec<Option<String>>>,
}

/// The batch's changes by table, without the ones a table applied already (at or before its
/// recorded position: a batch read again after a crash), keys once each, by their last change:
/// a row image the source logged, else read back. A TRUNCATE makes the changes before it moot.
fn group<'c>(changes: &'c [barge_core::Change], states: &[TableState], keep: bool) -> HashMap<&'c str, TableWork> {
    type Keys<'k> = (Vec<&'k Vec<Option<String>>>, HashMap<&'k Vec<Option<String>>, Option<u32>>);
    let applied: HashMap<&str, u64> = states.iter().map(|s| (s.plan.source.name.as_str(), s.applied)).collect();
    let mut work: HashMap<&str, TableWork> = HashMap::new();
    let mut last: HashMap<&str, Keys<'c>> = HashMap::new();
    for change in changes {
        let Some(&done) = applied.get(change.table.as_str()) else { continue };
        let entry = work.entry(change.table.as_str()).or_default();
        let (key, image) = match &change.kind {
            ChangeKind::Columns(columns) => {
                entry.columns.push(columns.clone());
                continue;
            }
            _ if change.position <= done => continue,
            ChangeKind::Ddl(statement) => {
                entry.ddl.push(statement.clone());
                continue;
            }
            ChangeKind::Truncate => {
                entry.truncate = true;
                last.remove(change.table.as_str());
                continue;
            }
            ChangeKind::Row(key) => (key, None),
            ChangeKind::Image { key, image } => (key, Some(*image)),
        };
        let (order, state) = last.entry(change.table.as_str()).or_default();
        if state.insert(key, image).is_none() {
            order.push(key);
        }
    }
    for (table, (order, state)) in last {
        let entry = work.entry(table).or_default();
        if keep {
            entry.changed = order.iter().map(|k| (*k).clone()).collect();
        }
        for key in order {
            match state[key] {
                Some(image) => entry.images.push(image),
                None => entry.keys.push(key.clone()),
            }
        }
    }
    work
}

/// Follows a schema change the batch shows for the table (a new column list, a DDL statement):
/// the table is planned again with `replan` and goes on with its new plan, or stops with why.
fn evolve(
    state: &mut TableState,
    work: &TableWork,
    replan: &dyn Fn(&TablePlan) -> Result<TablePlan>,
    infos: &mut [barge_core::TableInfo],
) -> Result<()> {
    let source = &state.plan.source;
    let expected: Vec<&str> = source.schema.fields().iter().map(|f| f.name().as_str()).collect();
    let columns = work.columns.iter().find(|c| c.iter().map(String::as_str).ne(expected.iter().copied()));
    let what = match (columns, work.ddl.first()) {
        (_, Some(statement)) => format!("the source ran `{statement}` on `{}`", source.name),
        (Some(columns), None) => format!(
            "the source's `{}` changed its columns to ({}) from ({})",
            source.name,
            columns.join(", "),
            expected.join(", ")
        ),
        (None, None) => return Ok(()),
    };
    let plan = replan(&state.plan)
        .map_err(|e| Error::Config(format!("{what}: {e}; sync of this table stopped (copy it again, then sync)")))?;
    tracing::info!(table = %plan.source.name, "{what}: carried on");
    if let Some(info) = infos.iter_mut().find(|i| i.name == plan.source.name) {
        *info = plan.source.clone();
    }
    state.plan = plan;
    state.writer = None;
    Ok(())
}

/// How often an idle stream records the position its reads covered.
const IDLE_RECORD_EVERY: Duration = Duration::from_secs(1);

/// Keys looked up in the source per statement.
const KEYS_PER_LOOKUP: usize = 20_000;
/// Lookups read ahead of the writer: one is written while the next is read.
const LOOKUPS_AHEAD: usize = 1;

/// Applies one table's share of a batch in one target transaction; returns what it changed. A
/// batch that fails leaves no writer behind: the next attempt opens one anew.
fn apply_table(
    apply: &Apply<'_>,
    state: &mut TableState,
    (work, images): (&TableWork, Option<&Vec<RecordBatch>>),
    end: u64,
) -> Result<Applied> {
    let target = apply.target;
    if !work.truncate && work.keys.is_empty() && work.images.is_empty() {
        return Ok(Applied::default());
    }
    let plan = &state.plan;
    let key: Vec<String> = plan.output.key_columns().iter().map(|k| k.to_string()).collect();
    if state.writer.is_none() {
        let fields: Vec<arrow_schema::Field> = plan.columns.iter().map(|c| c.field.clone()).collect();
        // A table without a key gets its changed rows deleted, then written anew (see
        // `write_found`): plain inserts.
        let conflict = if key.is_empty() { Conflict::Error } else { Conflict::Upsert };
        let options = WriteOptions { conflict, key: key.clone(), isolate_rows: false };
        let encoder = target.encoder(&plan.target_table, &fields)?;
        state.writer = Some((target.writer(&plan.target_table, &fields, &options)?, encoder));
    }
    let (writer, encoder) = state.writer.as_mut().expect("opened above");
    let applied = apply_batch(apply, plan, &key, (writer.as_mut(), encoder.as_ref()), (work, images), end);
    if applied.is_err() {
        state.writer = None;
    }
    applied
}

/// Where changes come from and go to.
struct Apply<'a> {
    feed: &'a dyn ChangeFeed,
    target: &'a dyn Target,
    stream: &'a str,
}

impl Apply<'_> {
    /// The writer's capability to apply changes.
    fn changes<'w>(&self, writer: &'w mut dyn TableWriter) -> Result<&'w mut dyn ChangeWriter> {
        writer.change_writer().ok_or_else(|| Error::unsupported(self.target.display_name(), "apply changes"))
    }
}

fn apply_batch(
    apply: &Apply<'_>,
    plan: &TablePlan,
    key: &[String],
    (writer, encoder): (&mut dyn TableWriter, &dyn BatchEncoder),
    (work, images): (&TableWork, Option<&Vec<RecordBatch>>),
    end: u64,
) -> Result<Applied> {
    let source = &plan.source;
    let mut applied = Applied { read_back: work.keys.len() as u64, ..Applied::default() };
    if work.truncate {
        apply.changes(writer)?.truncate()?;
        applied.truncates += 1;
    }
    // The rows the source logged whole: upserted as they are, no read-back.
    if !work.images.is_empty() {
        let images = images.ok_or_else(|| Error::engine("applying changes", "row images missing from the batch"))?;
        let all = arrow_select::concat::concat_batches(&source.schema, images)?;
        let rows = arrow_select::take::take_record_batch(&all, &arrow_array::UInt32Array::from(work.images.clone()))?;
        let rows = transformed(plan, rows)?;
        if rows.num_rows() > 0 {
            applied.upserted += writer.write(encoder.encode(rows)?)?;
        }
    }
    // A table without a key: a row logged before the source added columns lacks them, and holds
    // NULL in them now (sync carries only nullable columns added without a default).
    let columns = source.schema.fields().len();
    let padded: Vec<Vec<Option<String>>>;
    let keys = if key.is_empty() && work.keys.iter().any(|k| k.len() < columns) {
        // Padded, a row's key from before and after the columns came may be the same: once.
        let mut seen = std::collections::HashSet::new();
        padded = work
            .keys
            .iter()
            .map(|k| k.iter().cloned().chain(std::iter::repeat(None)).take(columns).collect::<Vec<_>>())
            .filter(|k| seen.insert(k.clone()))
            .collect();
        &padded
    } else {
        &work.keys
    };
    // The next lookup reads from the source while the rows of the one before are written to
    // the target (a thread of its own: both are I/O).
    std::thread::scope(|scope| -> Result<()> {
        let (lookups, found_rows) = crossbeam_channel::bounded::<Result<KeyRows>>(LOOKUPS_AHEAD);
        let feed = apply.feed;
        scope.spawn(move || {
            for keys in keys.chunks(KEYS_PER_LOOKUP) {
                let found = feed.read_keys(source, keys);
                let failed = found.is_err();
                // The writer gone (it failed) or this lookup failed: nothing more to read.
                if lookups.send(found).is_err() || failed {
                    return;
                }
            }
        });
        for found in found_rows {
            write_found(apply, plan, key, (&mut *writer, encoder), found?, &mut applied)?;
        }
        Ok(())
    })?;
    apply.changes(writer)?.record_position(apply.stream, &plan.target_table, end)?;
    writer.commit()?;
    Ok(applied)
}

/// Writes one lookup's rows (transformed as the copy does) and deletes its keys gone.
///
/// A table without a key (its rows matched whole, see [`barge_core::TableInfo::change_key`]):
/// the target should hold each changed row as many times as the source does now, so every copy
/// of each changed row is deleted, then the source's copies are written. Replayed, that
/// converges as upserts do.
fn write_found(
    apply: &Apply<'_>,
    plan: &TablePlan,
    key: &[String],
    (writer, encoder): (&mut dyn TableWriter, &dyn BatchEncoder),
    found: KeyRows,
    applied: &mut Applied,
) -> Result<()> {
    let source = &plan.source;
    if key.is_empty() {
        let encoded = |batches: Vec<RecordBatch>| -> Result<Vec<barge_core::Encoded>> {
            batches
                .into_iter()
                .map(|b| transformed(plan, b))
                .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
                .map(|b| encoder.encode(b?))
                .collect()
        };
        let (rows, absent) = (encoded(found.rows)?, encoded(found.absent)?);
        for gone in absent {
            applied.deleted += apply.changes(writer)?.delete_rows(gone)?;
        }
        // Every copy first, then the source's: equal rows may come in two batches.
        for batch in &rows {
            apply.changes(writer)?.delete_rows(batch.clone())?;
        }
        for batch in rows {
            applied.upserted += writer.write(batch)?;
        }
        return Ok(());
    }
    let mut gone = Vec::new();
    for batch in &found.absent {
        let indices: Vec<usize> = (0..batch.num_columns()).collect();
        let encoder = barge_verify::RowEncoder::for_columns(&source.name, batch, &indices)?;
        gone.extend((0..batch.num_rows()).map(|row| encoder.json_row(row)));
    }
    if !gone.is_empty() {
        applied.deleted += apply.changes(writer)?.delete_keys(key, &gone)?;
    }
    for batch in found.rows {
        let batch = transformed(plan, batch)?;
        if batch.num_rows() > 0 {
            applied.upserted += writer.write(encoder.encode(batch)?)?;
        }
    }
    Ok(())
}

/// Source rows as the target takes them: through the pipeline's transform, as the copy's.
fn transformed(plan: &TablePlan, batch: RecordBatch) -> Result<RecordBatch> {
    let Some(transform) = plan.transform.as_deref() else {
        return Ok(batch);
    };
    let source = &plan.source;
    let out = transform.apply(&batch)?;
    if let Some((row, column, reason)) = out.failures.first() {
        return Err(Error::BadValue {
            table: source.name.clone(),
            column: column.clone(),
            key: barge_core::rejects::key_shown(&batch, *row, crate::rejects::key_columns(source)),
            reason: reason.clone(),
        });
    }
    Ok(out.batch)
}

/// What one table's batch changed, counted once it committed.
#[derive(Default)]
struct Applied {
    upserted: u64,
    deleted: u64,
    truncates: u64,
    read_back: u64,
}
