//! The stages and the channels between them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Scope;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::Field;
use barge_core::rejects::{columns_json, row_json};
use barge_core::{
    BatchEncoder, Budget, Encoded, Error, KeyRange, KeySpec, Native, Reject, RejectLog, Result, Source, TableInfo,
    TableWriter, Target, Transform, WriteOptions,
};
use barge_verify::{Buckets, Digest, Routes, bucket_digests, routed_digests};
use crossbeam_channel::{Receiver, Sender, bounded};
use rayon::prelude::*;

use crate::progress::{Phase, Progress};
use crate::{READ_QUEUE_PER_READER, WRITE_QUEUE_PER_WRITER};

/// The first real error of any stage; later stages see it and stop. Errors that only say a
/// channel closed because another stage failed are not recorded over it.
#[derive(Default)]
pub(crate) struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Failure {
    pub(crate) fn record(&self, error: Error) {
        let mut first = self.first.lock().expect("failure lock");
        if first.is_none() || matches!(*first, Some(Error::Cancelled)) {
            *first = Some(error);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn into_result(self) -> Result<()> {
        match self.first.into_inner().expect("failure lock") {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Spawns a named scoped thread (names make profiles and stack dumps readable per stage).
fn spawn_named<'scope, 'env: 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    work: impl FnOnce() + Send + 'scope,
) {
    std::thread::Builder::new().name(name.into()).spawn_scoped(scope, work).expect("spawning a thread");
}

/// What readers send to the CPU stage.
pub(crate) enum ReadMsg {
    Batch {
        range: usize,
        batch: RecordBatch,
        /// The rows as the source sent them, when the target loads them unchanged.
        native: Option<Native>,
    },
    /// All `batches` batches of `range` have been sent.
    End { range: usize, batches: u64 },
    /// Reading `range` hit a transient failure: what was sent of it must not be committed.
    Failed { range: usize, error: Error },
}

/// What the CPU stage sends to a writer.
enum WriteMsg {
    Batch {
        range: usize,
        /// `None` when the batch did not encode and must be split to find the bad rows.
        encoded: Option<Encoded>,
        /// Kept when rows are isolated, to split the batch if the target refuses it.
        batch: Option<RecordBatch>,
    },
    End {
        range: usize,
        batches: u64,
    },
    Failed {
        range: usize,
        error: Error,
    },
}

/// Shared read-side context.
pub(crate) struct ReadSide<'a> {
    pub source: &'a dyn Source,
    pub table: &'a TableInfo,
    pub batch_rows: usize,
    pub rows_read: &'a AtomicU64,
    pub failure: &'a Failure,
    /// Report a range whose read fails transiently (to be retried) instead of failing the run.
    pub retry: bool,
    /// Where readers add their busy time (reading and decoding, not waiting on the channel) and
    /// the Arrow bytes they produced.
    pub busy: Option<(&'a AtomicU64, &'a AtomicU64)>,
    /// Keep each batch's rows as the source sent them (see [`Native`]): `Some(decode)`, where
    /// `decode` false asks for those rows only.
    pub native: Option<bool>,
}

/// Spawns up to `workers` readers that pull ranges from a queue and stream their batches.
/// Returns the receiving end; it closes when every range has been read or a stage failed.
pub(crate) fn spawn_readers<'scope, 'env: 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    side: &'env ReadSide<'env>,
    ranges: &[&'env KeyRange],
    workers: usize,
) -> Receiver<ReadMsg> {
    let readers = workers.min(ranges.len()).max(1);
    let (range_tx, range_rx) = bounded::<&KeyRange>(ranges.len().max(1));
    for &range in ranges {
        range_tx.send(range).expect("the queue holds every range");
    }
    drop(range_tx);
    let (tx, rx) = bounded(READ_QUEUE_PER_READER * readers);
    for _ in 0..readers {
        let (range_rx, tx) = (range_rx.clone(), tx.clone());
        spawn_named(scope, "barge-reader", move || {
            for range in range_rx.iter() {
                if side.failure.is_set() {
                    return;
                }
                let mut batches = 0u64;
                let started = std::time::Instant::now();
                let mut blocked = Duration::ZERO;
                let mut send = |batch: RecordBatch, native: Option<Native>| {
                    if side.failure.is_set() {
                        return Err(Error::Cancelled);
                    }
                    side.rows_read.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    if let Some((_, bytes)) = side.busy {
                        let size = match (batch.num_columns(), &native) {
                            (0, Some(native)) => native.bytes.len(),
                            _ => batch.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or(0)).sum(),
                        };
                        bytes.fetch_add(size as u64, Ordering::Relaxed);
                    }
                    batches += 1;
                    let waiting = std::time::Instant::now();
                    let sent = tx.send(ReadMsg::Batch { range: range.id, batch, native }).map_err(|_| Error::Cancelled);
                    blocked += waiting.elapsed();
                    sent
                };
                let (table, rows) = (side.table, side.batch_rows);
                let read = match side.native {
                    Some(decode) => side.source.read_range_native(table, range, rows, decode, &mut send),
                    None => side.source.read_range(table, range, rows, &mut |batch| send(batch, None)),
                };
                if let Some((busy, _)) = side.busy {
                    busy.fetch_add(nanos(started.elapsed().saturating_sub(blocked)), Ordering::Relaxed);
                }
                match read {
                    Ok(()) => {}
                    Err(error) if side.retry && error.is_transient() => {
                        if tx.send(ReadMsg::Failed { range: range.id, error }).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(error) => {
                        side.failure.record(error);
                        return;
                    }
                }
                if tx.send(ReadMsg::End { range: range.id, batches }).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Counters of one table copy.
#[derive(Default)]
pub(crate) struct CopyCounters {
    /// Busy time of each stage, summed over its threads: reading and decoding (not waiting on the
    /// channel), transforming + hashing + encoding, writing and committing.
    pub read_ns: AtomicU64,
    pub cpu_ns: AtomicU64,
    pub write_ns: AtomicU64,
    /// Arrow bytes read.
    pub bytes_read: AtomicU64,
    pub rows_read: AtomicU64,
    pub rows_written: AtomicU64,
    pub rows_rejected: AtomicU64,
    /// Range attempts that failed transiently and were done again.
    pub retries: AtomicU64,
    /// Rows written over time.
    pub timeline: crate::report::Timeline,
}

/// The run's ledger as one table copy sees it.
pub(crate) struct Ledger<'a> {
    pub state: &'a crate::run::RunState,
    /// Ranges an earlier attempt committed (resuming): skipped, their counts and digests reused.
    pub done: Option<&'a std::collections::BTreeMap<usize, barge_core::state::RangeDone>>,
    /// Clear each range in the target before loading it (resuming).
    pub clear: bool,
}

/// What one range has done in the current attempt: taken back out of the counters if the attempt
/// fails. Its rejected rows wait here until the range commits, so a retried range does not list
/// them twice.
#[derive(Default)]
struct RangeTally {
    read: AtomicU64,
    written: AtomicU64,
    rejected: AtomicU64,
    rejects: Mutex<Vec<Reject>>,
}

/// Ranges whose attempt failed transiently in a pass, and the last such error.
#[derive(Default)]
struct Transient {
    failed: Mutex<(BTreeSet<usize>, Option<Error>)>,
}

impl Transient {
    fn fail(&self, ranges: impl IntoIterator<Item = usize>, error: Error) {
        let mut failed = self.failed.lock().expect("transient lock");
        failed.0.extend(ranges);
        failed.1 = Some(error);
    }

    fn contains(&self, range: usize) -> bool {
        self.failed.lock().expect("transient lock").0.contains(&range)
    }
}

/// Everything one table copy needs.
pub(crate) struct CopyJob<'a> {
    pub source: &'a dyn Source,
    pub target: &'a dyn Target,
    /// The table as read.
    pub table: &'a TableInfo,
    /// The table as written (the transform's output; `table` without one).
    pub output: &'a TableInfo,
    pub transform: Option<&'a dyn Transform>,
    pub write_options: WriteOptions,
    /// Where rejected rows go; `None` (or [`Budget::None`]) makes the first bad row fail the copy.
    pub rejects: Option<&'a RejectLog>,
    pub budget: Budget,
    /// Rejects other tables of the run had, and the run's budget.
    pub run_rejects: (u64, Budget),
    pub target_table: &'a str,
    pub fields: &'a [Field],
    pub ranges: &'a [KeyRange],
    pub workers: usize,
    pub batch_rows: usize,
    /// Times a range that failed transiently is read and written again.
    pub retries: u32,
    /// Where committed ranges are recorded, if the run keeps a ledger.
    pub ledger: Option<Ledger<'a>>,
    /// Digest source rows while copying (for verification without re-reading the source).
    pub hash: bool,
    /// Digest buckets inside each range, when the key allows them.
    pub buckets: Option<&'a Buckets>,
    pub progress: &'a dyn Progress,
}

/// One digest per bucket (a single one without buckets) for each range.
pub(crate) type RangeDigests = Vec<Vec<Digest>>;

fn empty_digests(ranges: &[KeyRange], buckets: Option<&Buckets>) -> Vec<Mutex<Vec<Digest>>> {
    ranges.iter().map(|r| Mutex::new(vec![Digest::default(); buckets.map_or(1, |b| b.count(r.id))])).collect()
}

fn into_digests(digests: Vec<Mutex<Vec<Digest>>>) -> RangeDigests {
    digests.into_iter().map(|d| d.into_inner().expect("digest lock")).collect()
}

fn add_digests(slot: &Mutex<Vec<Digest>>, digests: Vec<Digest>) {
    let mut slot = slot.lock().expect("digest lock");
    for (total, digest) in slot.iter_mut().zip(digests) {
        *total += digest;
    }
}

/// First delay before a retry; doubled for each further attempt, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(15);

/// Copies one table; returns the source digests of each range (zero when not hashing). Ranges
/// that fail transiently (lost connection, deadlock, server restart) are rolled back and copied
/// again in a further pass, after a backoff, up to `job.retries` times.
pub(crate) fn copy_table(job: &CopyJob<'_>, pool: &rayon::ThreadPool, counters: &CopyCounters) -> Result<RangeDigests> {
    let digests = empty_digests(job.ranges, job.buckets);
    let tallies: Vec<RangeTally> = job.ranges.iter().map(|_| RangeTally::default()).collect();
    let mut pending: Vec<&KeyRange> = job.ranges.iter().collect();
    if let Some(ledger) = &job.ledger {
        if ledger.clear && !job.output.key.is_primary() {
            // Rows without a key cannot be cleared range by range: reload the whole table.
            job.target.truncate_table(job.target_table)?;
        } else if let Some(done) = ledger.done {
            for (range, earlier) in done {
                let stored: Vec<Digest> = serde_json::from_str(&earlier.digests)
                    .map_err(|e| Error::engine("reading digests from the state store", e))?;
                let mut slot = digests[*range].lock().expect("digest lock");
                if stored.len() != slot.len() {
                    return Err(Error::Config(format!(
                        "cannot resume table `{}`: its recorded digests do not match its ranges; run without --resume",
                        job.table.name
                    )));
                }
                *slot = stored;
                counters.rows_read.fetch_add(earlier.rows_read, Ordering::Relaxed);
                counters.rows_written.fetch_add(earlier.rows_written, Ordering::Relaxed);
                counters.rows_rejected.fetch_add(earlier.rows_rejected, Ordering::Relaxed);
            }
            pending.retain(|r| !done.contains_key(&r.id));
        }
    }
    if pending.is_empty() {
        return Ok(into_digests(digests));
    }
    let mut attempt = 0u32;
    loop {
        let transient = Transient::default();
        let pass = copy_pass(job, pool, counters, &pending, &digests, &tallies, &transient);
        if let Err(error) = pass {
            // Rows rejected so far are real rejects even though the table stops: keep them.
            flush_rejects(job, &tallies, 0..tallies.len())?;
            return Err(error);
        }
        let (failed, error) = transient.failed.into_inner().expect("transient lock");
        let Some(error) = error.filter(|_| !failed.is_empty()) else { break };
        if attempt >= job.retries {
            flush_rejects(job, &tallies, 0..tallies.len())?;
            return Err(error);
        }
        attempt += 1;
        counters.retries.fetch_add(failed.len() as u64, Ordering::Relaxed);
        for &range in &failed {
            let tally = &tallies[range];
            counters.rows_read.fetch_sub(tally.read.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            counters.rows_written.fetch_sub(tally.written.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            tally.rejects.lock().expect("rejects lock").clear();
            counters.rows_rejected.fetch_sub(tally.rejected.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            digests[range].lock().expect("digest lock").iter_mut().for_each(|d| *d = Digest::default());
        }
        let delay = (FIRST_RETRY_DELAY * 2u32.saturating_pow(attempt - 1)).min(MAX_RETRY_DELAY);
        tracing::warn!(
            "table `{}`: {} range(s) failed ({error}); retry {attempt} of {} in {:.2}s",
            job.table.name,
            failed.len(),
            job.retries,
            delay.as_secs_f64()
        );
        std::thread::sleep(delay);
        pending = failed.iter().map(|&id| &job.ranges[id]).collect();
    }
    flush_rejects(job, &tallies, 0..tallies.len())?;
    Ok(into_digests(digests))
}

/// Writes the waiting rejects of `ranges` to the reject file.
fn flush_rejects(job: &CopyJob<'_>, tallies: &[RangeTally], ranges: impl IntoIterator<Item = usize>) -> Result<()> {
    let Some(log) = job.rejects else { return Ok(()) };
    for range in ranges {
        for reject in std::mem::take(&mut *tallies[range].rejects.lock().expect("rejects lock")) {
            log.record(&job.table.name, &reject)?;
        }
    }
    Ok(())
}

/// One pass over `ranges`: readers → CPU stage → writers. Ranges that fail transiently are
/// recorded in `transient`; any other failure is the pass's error.
fn copy_pass(
    job: &CopyJob<'_>,
    pool: &rayon::ThreadPool,
    counters: &CopyCounters,
    ranges: &[&KeyRange],
    digests: &[Mutex<Vec<Digest>>],
    tallies: &[RangeTally],
    transient: &Transient,
) -> Result<()> {
    let writers = job.workers.min(job.target.max_writers()).min(ranges.len()).max(1);
    // Open every writer before reading a row: a refused connection fails the table cleanly (or,
    // when it is transient, the whole pass is retried).
    let opened = (0..writers)
        .map(|_| job.target.writer(job.target_table, job.fields, &job.write_options))
        .collect::<Result<Vec<_>>>();
    let table_writers = match opened {
        Ok(writers) => writers,
        Err(error) if error.is_transient() => {
            transient.fail(ranges.iter().map(|r| r.id), error);
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    let encoder = job.target.encoder(job.target_table, job.fields)?;
    // Rows go to the target as the source sent them when nothing changes them on the way (no
    // transform, the same columns in the same order) and a refused batch need not be split; they
    // are then decoded only to be hashed.
    let same_columns = job.table.schema.fields().iter().map(|f| f.name()).eq(job.fields.iter().map(|f| f.name()));
    let as_read = encoder.accepts_native() && job.transform.is_none() && same_columns && !job.isolating();
    let native = as_read.then_some(job.hash);
    if as_read {
        tracing::info!("table `{}`: rows load as the source sent them, without encoding", job.table.name);
    }
    let failure = Failure::default();
    let side = ReadSide {
        source: job.source,
        table: job.table,
        batch_rows: job.batch_rows,
        rows_read: &counters.rows_read,
        failure: &failure,
        retry: true,
        busy: Some((&counters.read_ns, &counters.bytes_read)),
        native,
    };
    std::thread::scope(|scope| {
        let read_rx = spawn_readers(scope, &side, ranges, job.workers);
        let mut senders = Vec::with_capacity(writers);
        for writer in table_writers {
            let (tx, rx) = bounded(WRITE_QUEUE_PER_WRITER);
            senders.push(tx);
            let (failure, encoder) = (&failure, encoder.as_ref());
            spawn_named(scope, "barge-writer", move || {
                let mut side = WriteSide { job, counters, digests, tallies, transient, encoder };
                if let Err(error) = write_loop(writer, rx, &mut side, failure) {
                    failure.record(error);
                }
            });
        }
        let stage = CpuStage { job, counters, encoder: encoder.as_ref(), digests, tallies, senders: &senders, writers };
        let cpu = pool.install(|| read_rx.into_iter().par_bridge().try_for_each(|msg| stage.run(msg)));
        if let Err(error) = cpu {
            failure.record(error);
        }
        // Dropping the senders lets the writers see the end of their input and commit.
    });
    failure.into_result()
}

/// Why a row was rejected, and at which stage (`transform` or `write`).
struct RowFailure {
    column: Option<String>,
    reason: String,
    stage: &'static str,
}

/// Indices of the key columns (all columns for a table without a key).
fn key_columns(table: &TableInfo) -> &[usize] {
    match &table.key {
        KeySpec::Primary(columns) => columns,
        _ => &[],
    }
}

impl CopyJob<'_> {
    fn isolating(&self) -> bool {
        self.write_options.isolate_rows
    }

    /// Records one rejected row (row `row` of `batch`, whose key columns are `key`) of `range`, and
    /// enforces the table's and the run's budgets. Without a budget the reject is the copy's error.
    fn reject(
        &self,
        counters: &CopyCounters,
        tally: &RangeTally,
        (batch, row, key): (&RecordBatch, usize, &[usize]),
        failure: RowFailure,
    ) -> Result<()> {
        let RowFailure { column, reason, stage } = failure;
        let key_json = columns_json(batch, row, key.iter().copied());
        let (Some(log), true) =
            (self.rejects, self.budget.tolerates_rejects() || self.run_rejects.1.tolerates_rejects())
        else {
            let shown = key_json.values().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(Error::BadValue {
                table: self.table.name.clone(),
                column: column.unwrap_or_else(|| "-".into()),
                key: (!key_json.is_empty()).then_some(shown),
                reason: format!("{reason} (no error_budget: the first bad row stops the copy)"),
            });
        };
        let reject = Reject { key: key_json, column, reason, stage: stage.into(), row: row_json(batch, row) };
        tally.rejects.lock().expect("rejects lock").push(reject);
        tally.rejected.fetch_add(1, Ordering::Relaxed);
        let rejected = counters.rows_rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let read = counters.rows_read.load(Ordering::Relaxed).max(self.table.estimated_rows);
        if self.budget.exceeded(rejected, read) {
            return Err(Error::BudgetExceeded {
                scope: format!("table `{}`", self.table.name),
                rejected,
                budget: self.budget.to_string(),
                file: log.path(&self.table.name).display().to_string(),
            });
        }
        let (earlier, run_budget) = self.run_rejects;
        if run_budget != Budget::None && run_budget.exceeded(earlier + rejected, read) {
            return Err(Error::BudgetExceeded {
                scope: "the run".into(),
                rejected: earlier + rejected,
                budget: run_budget.to_string(),
                file: log.dir().display().to_string(),
            });
        }
        Ok(())
    }
}

/// The CPU stage of a pass: transforms, hashes and encodes batches on the rayon pool, then hands
/// each to the writer owning its range. Rows the transform fails are rejected here, before they
/// are hashed.
struct CpuStage<'a> {
    job: &'a CopyJob<'a>,
    counters: &'a CopyCounters,
    encoder: &'a dyn BatchEncoder,
    digests: &'a [Mutex<Vec<Digest>>],
    tallies: &'a [RangeTally],
    senders: &'a [Sender<WriteMsg>],
    writers: usize,
}

impl CpuStage<'_> {
    fn run(&self, msg: ReadMsg) -> Result<()> {
        let job = self.job;
        let started = std::time::Instant::now();
        let (range, out) = match msg {
            ReadMsg::Batch { range, batch, native } => {
                let tally = &self.tallies[range];
                tally.read.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                let batch = match job.transform {
                    Some(transform) => {
                        let out = transform.apply(&batch)?;
                        let key = key_columns(job.table);
                        for (row, column, reason) in out.failures {
                            let failure = RowFailure { column: Some(column), reason, stage: "transform" };
                            job.reject(self.counters, tally, (&batch, row, key), failure)?;
                        }
                        out.batch
                    }
                    None => batch,
                };
                if job.hash {
                    add_digests(&self.digests[range], bucket_digests(&job.output.name, &batch, job.buckets, range)?);
                }
                let kept = job.isolating().then(|| batch.clone());
                let rows = batch.num_rows();
                let encoded = match native.and_then(|native| self.encoder.encode_native(rows, native)) {
                    Some(encoded) => Some(encoded),
                    // Only rows as read came (see `ReadSide::native`), and the target did not take them.
                    None if batch.num_columns() == 0 && !job.output.schema.fields().is_empty() => {
                        return Err(Error::engine(
                            format!("loading `{}`", job.table.name),
                            "the target refused rows in their source encoding",
                        ));
                    }
                    None => match self.encoder.encode(batch) {
                        Ok(encoded) => Some(encoded),
                        Err(Error::BadValue { .. }) if job.isolating() => None,
                        Err(error) => return Err(error),
                    },
                };
                (range, WriteMsg::Batch { range, encoded, batch: kept })
            }
            ReadMsg::End { range, batches } => (range, WriteMsg::End { range, batches }),
            ReadMsg::Failed { range, error } => (range, WriteMsg::Failed { range, error }),
        };
        self.counters.cpu_ns.fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        self.senders[range % self.writers].send(out).map_err(|_| Error::Cancelled)
    }
}

/// What a writer thread shares with the rest of the copy.
struct WriteSide<'a> {
    job: &'a CopyJob<'a>,
    counters: &'a CopyCounters,
    digests: &'a [Mutex<Vec<Digest>>],
    tallies: &'a [RangeTally],
    transient: &'a Transient,
    encoder: &'a dyn BatchEncoder,
}

impl WriteSide<'_> {
    /// Records committed ranges in the run's ledger (after the commit, never before).
    fn record_done(&self, ranges: &[usize]) -> Result<()> {
        let Some(ledger) = &self.job.ledger else { return Ok(()) };
        let done = ranges
            .iter()
            .map(|&range| {
                let tally = &self.tallies[range];
                let digests = self.digests[range].lock().expect("digest lock").clone();
                barge_core::state::RangeDone {
                    range,
                    rows_read: tally.read.load(Ordering::Relaxed),
                    rows_written: tally.written.load(Ordering::Relaxed),
                    rows_rejected: tally.rejected.load(Ordering::Relaxed),
                    digests: serde_json::to_string(&digests).expect("digests serialise"),
                }
            })
            .collect::<Vec<_>>();
        ledger.state.store.ranges_done(&ledger.state.name, &self.job.table.name, &done)
    }

    /// Writes `batch`, and when the target refuses it, finds the refused rows by halving (as
    /// pgloader does): each refused row is rejected and taken out of its range's digest, the rest is
    /// written. Returns the rows written.
    fn write_isolating(
        &mut self,
        writer: &mut dyn TableWriter,
        range: usize,
        batch: &RecordBatch,
        encoded: Option<Encoded>,
    ) -> Result<u64> {
        let attempt = match encoded {
            Some(encoded) => writer.write(encoded),
            None => self.encoder.encode(batch.clone()).and_then(|encoded| writer.write(encoded)),
        };
        let reason = match attempt {
            Ok(rows) => return Ok(rows),
            Err(Error::RowRejected { reason }) => (None, reason),
            Err(Error::BadValue { column, reason, .. }) => (Some(column), reason),
            Err(error) => return Err(error),
        };
        if batch.num_rows() == 1 {
            let key = key_columns(self.job.output);
            let failure = RowFailure { column: reason.0, reason: reason.1, stage: "write" };
            self.job.reject(self.counters, &self.tallies[range], (batch, 0, key), failure)?;
            if self.job.hash {
                let digests = bucket_digests(&self.job.output.name, batch, self.job.buckets, range)?;
                let mut slot = self.digests[range].lock().expect("digest lock");
                for (total, digest) in slot.iter_mut().zip(digests) {
                    *total -= digest;
                }
            }
            return Ok(0);
        }
        let half = batch.num_rows() / 2;
        let first = self.write_isolating(writer, range, &batch.slice(0, half), None)?;
        let second = self.write_isolating(writer, range, &batch.slice(half, batch.num_rows() - half), None)?;
        Ok(first + second)
    }
}

/// Writes batches as they come and commits whenever every range this writer has seen is complete
/// (group commit), so a commit never splits a range; a committed range's rejects go to the reject
/// file then. A writer that stops early without committing leaves its open transaction to roll
/// back. A transient failure (of this writer, or of the read of a range it holds) rolls back the
/// open ranges, which are retried in the next pass; the writer reconnects for the ranges after.
fn write_loop(
    writer: Box<dyn TableWriter>,
    rx: Receiver<WriteMsg>,
    side: &mut WriteSide<'_>,
    failure: &Failure,
) -> Result<()> {
    let (job, counters) = (side.job, side.counters);
    let mut writer = Some(writer);
    // range → (batches received, batches announced by the reader)
    let mut open: HashMap<usize, (u64, Option<u64>)> = HashMap::new();
    let clear = job.ledger.as_ref().is_some_and(|l| l.clear) && job.output.key.is_primary();
    let key: Vec<String> = job.output.key_columns().into_iter().map(str::to_string).collect();
    let mut cleared: std::collections::HashSet<usize> = std::collections::HashSet::new();
    for msg in rx {
        if failure.is_set() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let range = match &msg {
            WriteMsg::Batch { range, .. } | WriteMsg::End { range, .. } | WriteMsg::Failed { range, .. } => *range,
        };
        if side.transient.contains(range) {
            continue; // the rest of a range already given up in this pass
        }
        // The first message of a range being resumed: remove whatever an earlier attempt may have
        // committed of it, in the transaction that loads it again.
        let first = if clear && !matches!(msg, WriteMsg::Failed { .. }) && !cleared.contains(&range) {
            connected(&mut writer).and_then(|w| w.clear_range(&key, &job.ranges[range])).map(|_| {
                cleared.insert(range);
                open.entry(range).or_default();
            })
        } else {
            Ok(())
        };
        let step = first.and_then(|()| match msg {
            WriteMsg::Failed { error, .. } if !open.contains_key(&range) => {
                side.transient.fail([range], error);
                Ok(())
            }
            WriteMsg::Failed { error, .. } => Err(error),
            WriteMsg::Batch { range, encoded, batch } => {
                let w = connected(&mut writer)?;
                let (rows, batch_rows) = match (batch, encoded) {
                    (Some(batch), encoded) => {
                        (side.write_isolating(w, range, &batch, encoded)?, batch.num_rows() as u64)
                    }
                    (None, Some(encoded)) => {
                        let rows = w.write(encoded)?;
                        (rows, rows)
                    }
                    (None, None) => unreachable!("a batch that did not encode is kept for isolation"),
                };
                let written = counters.rows_written.fetch_add(rows, Ordering::Relaxed) + rows;
                counters.timeline.record(written);
                side.tallies[range].written.fetch_add(rows, Ordering::Relaxed);
                job.progress.advance(&job.table.name, Phase::Copy, batch_rows);
                open.entry(range).or_default().0 += 1;
                Ok(())
            }
            WriteMsg::End { range, batches } => {
                open.entry(range).or_default().1 = Some(batches);
                Ok(())
            }
        });
        let step = step.and_then(|()| {
            if !open.is_empty() && open.values().all(|(got, announced)| Some(*got) == *announced) {
                connected(&mut writer)?.commit()?;
                let committed: Vec<usize> = open.drain().map(|(range, _)| range).collect();
                flush_rejects(job, side.tallies, committed.iter().copied())?;
                side.record_done(&committed)?;
            }
            Ok(())
        });
        counters.write_ns.fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        match step {
            Ok(()) => {}
            Err(error) if error.is_transient() => {
                // Roll back what this writer holds (dropping its connection), then reconnect.
                drop(writer.take());
                side.transient.fail(open.drain().map(|(range, _)| range).chain([range]), error);
                cleared.clear();
                writer = job.target.writer(job.target_table, job.fields, &job.write_options).ok();
            }
            Err(error) => return Err(error),
        }
    }
    if failure.is_set() || !open.is_empty() {
        return Ok(()); // incomplete ranges: roll back rather than commit half a range
    }
    match writer.as_mut() {
        Some(w) => w.commit(),
        None => Ok(()),
    }
}

/// The writer's connection, or a transient error when reconnecting after a failure did not work
/// (the ranges it meets are then retried in the next pass).
fn connected(writer: &mut Option<Box<dyn TableWriter>>) -> Result<&mut dyn TableWriter> {
    match writer {
        Some(w) => Ok(w.as_mut()),
        None => Err(Error::Transient { context: "writing".into(), message: "no connection".into() }),
    }
}

/// Digests `ranges` of `table` in parallel: the copy's read and hash stages without writing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn digest_ranges(
    source: &dyn Source,
    table: &TableInfo,
    ranges: &[KeyRange],
    buckets: Option<&Buckets>,
    workers: usize,
    batch_rows: usize,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
) -> Result<RangeDigests> {
    let digests = empty_digests(ranges, buckets);
    read_and_hash(source, table, ranges, workers, batch_rows, pool, progress, &|range, batch| {
        add_digests(&digests[range], bucket_digests(&table.name, batch, buckets, range)?);
        Ok(())
    })?;
    Ok(into_digests(digests))
}

/// Digests a table read over `ranges` that are not its key's (its row locator's): each row goes to
/// the key range and bucket `routes` finds for its key, giving what [`digest_ranges`] gives over
/// the key ranges.
#[allow(clippy::too_many_arguments)]
pub(crate) fn digest_routed(
    source: &dyn Source,
    table: &TableInfo,
    ranges: &[KeyRange],
    routes: &Routes<'_>,
    workers: usize,
    batch_rows: usize,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
) -> Result<RangeDigests> {
    let digests: Vec<Mutex<Vec<Digest>>> = routes.empty().into_iter().map(Mutex::new).collect();
    read_and_hash(source, table, ranges, workers, batch_rows, pool, progress, &|_, batch| {
        let mut routed = routes.empty();
        routed_digests(&table.name, batch, routes, &mut routed)?;
        for (slot, routed) in digests.iter().zip(routed) {
            add_digests(slot, routed);
        }
        Ok(())
    })?;
    Ok(into_digests(digests))
}

/// Reads `ranges` with up to `workers` readers and hands every batch, with its range, to `hash` on
/// the CPU pool.
#[allow(clippy::too_many_arguments)]
fn read_and_hash(
    source: &dyn Source,
    table: &TableInfo,
    ranges: &[KeyRange],
    workers: usize,
    batch_rows: usize,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
    hash: &(dyn Fn(usize, &RecordBatch) -> Result<()> + Sync),
) -> Result<()> {
    let failure = Failure::default();
    let rows_read = AtomicU64::new(0);
    let side = ReadSide {
        source,
        table,
        batch_rows,
        rows_read: &rows_read,
        failure: &failure,
        retry: false,
        busy: None,
        native: None,
    };
    let ranges: Vec<&KeyRange> = ranges.iter().collect();
    std::thread::scope(|scope| {
        let read_rx = spawn_readers(scope, &side, &ranges, workers);
        let hashed = pool.install(|| {
            read_rx.into_iter().par_bridge().try_for_each(|msg| {
                if let ReadMsg::Batch { range, batch, .. } = msg {
                    progress.advance(&table.name, Phase::Verify, batch.num_rows() as u64);
                    hash(range, &batch)?;
                }
                Ok(())
            })
        });
        if let Err(error) = hashed {
            failure.record(error);
        }
    });
    failure.into_result()
}
