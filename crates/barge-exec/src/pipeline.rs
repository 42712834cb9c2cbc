//! The stages and the channels between them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Scope;

use arrow_array::RecordBatch;
use arrow_schema::Field;
use barge_core::{BatchEncoder, Encoded, Error, KeyRange, Result, Source, TableInfo, TableWriter, Target};
use barge_verify::{Buckets, Digest, bucket_digests};
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
    },
    /// All `batches` batches of `range` have been sent.
    End {
        range: usize,
        batches: u64,
    },
}

/// What the CPU stage sends to a writer.
enum WriteMsg {
    Batch { range: usize, encoded: Encoded },
    End { range: usize, batches: u64 },
}

/// Shared read-side context.
pub(crate) struct ReadSide<'a> {
    pub source: &'a dyn Source,
    pub table: &'a TableInfo,
    pub batch_rows: usize,
    pub rows_read: &'a AtomicU64,
    pub failure: &'a Failure,
}

/// Spawns up to `workers` readers that pull ranges from a queue and stream their batches.
/// Returns the receiving end; it closes when every range has been read or a stage failed.
pub(crate) fn spawn_readers<'scope, 'env: 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    side: &'env ReadSide<'env>,
    ranges: &'env [KeyRange],
    workers: usize,
) -> Receiver<ReadMsg> {
    let readers = workers.min(ranges.len()).max(1);
    let (range_tx, range_rx) = bounded::<&KeyRange>(ranges.len().max(1));
    for range in ranges {
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
                let read = side.source.read_range(side.table, range, side.batch_rows, &mut |batch| {
                    if side.failure.is_set() {
                        return Err(Error::Cancelled);
                    }
                    side.rows_read.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    batches += 1;
                    tx.send(ReadMsg::Batch { range: range.id, batch }).map_err(|_| Error::Cancelled)
                });
                if let Err(error) = read {
                    side.failure.record(error);
                    return;
                }
                if tx.send(ReadMsg::End { range: range.id, batches }).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Counters of one table copy.
#[derive(Default)]
pub(crate) struct CopyCounters {
    pub rows_read: AtomicU64,
    pub rows_written: AtomicU64,
}

/// Everything one table copy needs.
pub(crate) struct CopyJob<'a> {
    pub source: &'a dyn Source,
    pub target: &'a dyn Target,
    pub table: &'a TableInfo,
    pub target_table: &'a str,
    pub fields: &'a [Field],
    pub ranges: &'a [KeyRange],
    pub workers: usize,
    pub batch_rows: usize,
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

fn add_digests(slot: &Mutex<Vec<Digest>>, digests: Vec<Digest>) {
    let mut slot = slot.lock().expect("digest lock");
    for (total, digest) in slot.iter_mut().zip(digests) {
        *total += digest;
    }
}

/// Copies one table; returns the source digests of each range (zero when not hashing).
pub(crate) fn copy_table(job: &CopyJob<'_>, pool: &rayon::ThreadPool, counters: &CopyCounters) -> Result<RangeDigests> {
    let writers = job.workers.min(job.target.max_writers()).min(job.ranges.len()).max(1);
    // Open every writer before reading a row: a refused connection fails the table cleanly.
    let table_writers =
        (0..writers).map(|_| job.target.writer(job.target_table, job.fields)).collect::<Result<Vec<_>>>()?;
    let encoder = job.target.encoder(job.target_table, job.fields)?;
    let digests = empty_digests(job.ranges, job.buckets);
    let failure = Failure::default();
    let side = ReadSide {
        source: job.source,
        table: job.table,
        batch_rows: job.batch_rows,
        rows_read: &counters.rows_read,
        failure: &failure,
    };
    std::thread::scope(|scope| {
        let read_rx = spawn_readers(scope, &side, job.ranges, job.workers);
        let mut senders = Vec::with_capacity(writers);
        for writer in table_writers {
            let (tx, rx) = bounded(WRITE_QUEUE_PER_WRITER);
            senders.push(tx);
            let (failure, counters) = (&failure, counters);
            spawn_named(scope, "barge-writer", move || {
                if let Err(error) = write_loop(writer, rx, job, counters, failure) {
                    failure.record(error);
                }
            });
        }
        let cpu = pool.install(|| {
            read_rx
                .into_iter()
                .par_bridge()
                .try_for_each(|msg| cpu_stage(msg, job, encoder.as_ref(), &digests, &senders, writers))
        });
        if let Err(error) = cpu {
            failure.record(error);
        }
        // Dropping the senders lets the writers see the end of their input and commit.
    });
    failure.into_result()?;
    Ok(digests.into_iter().map(|d| d.into_inner().expect("digest lock")).collect())
}

/// Hashes and encodes one batch on the rayon pool, then hands it to the writer owning its range.
fn cpu_stage(
    msg: ReadMsg,
    job: &CopyJob<'_>,
    encoder: &dyn BatchEncoder,
    digests: &[Mutex<Vec<Digest>>],
    senders: &[Sender<WriteMsg>],
    writers: usize,
) -> Result<()> {
    let (range, out) = match msg {
        ReadMsg::Batch { range, batch } => {
            if job.hash {
                add_digests(&digests[range], bucket_digests(&job.table.name, &batch, job.buckets, range)?);
            }
            (range, WriteMsg::Batch { range, encoded: encoder.encode(batch)? })
        }
        ReadMsg::End { range, batches } => (range, WriteMsg::End { range, batches }),
    };
    senders[range % writers].send(out).map_err(|_| Error::Cancelled)
}

/// Writes batches as they come and commits whenever every range this writer has seen is complete
/// (group commit), so a commit never splits a range. A writer that stops early without committing
/// leaves its open transaction to roll back.
fn write_loop(
    mut writer: Box<dyn TableWriter>,
    rx: Receiver<WriteMsg>,
    job: &CopyJob<'_>,
    counters: &CopyCounters,
    failure: &Failure,
) -> Result<()> {
    // range → (batches received, batches announced by the reader)
    let mut open: HashMap<usize, (u64, Option<u64>)> = HashMap::new();
    for msg in rx {
        if failure.is_set() {
            return Ok(());
        }
        match msg {
            WriteMsg::Batch { range, encoded } => {
                let rows = writer.write(encoded)?;
                counters.rows_written.fetch_add(rows, Ordering::Relaxed);
                job.progress.advance(&job.table.name, Phase::Copy, rows);
                open.entry(range).or_default().0 += 1;
            }
            WriteMsg::End { range, batches } => open.entry(range).or_default().1 = Some(batches),
        }
        if !open.is_empty() && open.values().all(|(got, announced)| Some(*got) == *announced) {
            writer.commit()?;
            open.clear();
        }
    }
    if failure.is_set() || !open.is_empty() {
        return Ok(()); // incomplete ranges: roll back rather than commit half a range
    }
    writer.commit()
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
    let failure = Failure::default();
    let rows_read = AtomicU64::new(0);
    let side = ReadSide { source, table, batch_rows, rows_read: &rows_read, failure: &failure };
    std::thread::scope(|scope| {
        let read_rx = spawn_readers(scope, &side, ranges, workers);
        let hashed = pool.install(|| {
            read_rx.into_iter().par_bridge().try_for_each(|msg| {
                if let ReadMsg::Batch { range, batch } = msg {
                    progress.advance(&table.name, Phase::Verify, batch.num_rows() as u64);
                    add_digests(&digests[range], bucket_digests(&table.name, &batch, buckets, range)?);
                }
                Ok(())
            })
        });
        if let Err(error) = hashed {
            failure.record(error);
        }
    });
    failure.into_result()?;
    Ok(digests.into_iter().map(|d| d.into_inner().expect("digest lock")).collect())
}
