//! The read stage: up to `workers` reader threads pull key ranges from a queue and stream each as
//! Arrow batches into one bounded channel ([`crate::READ_QUEUE_PER_READER`] batches per reader),
//! ending each range with its batch count so that writers know when a range is complete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Scope;
use std::time::Duration;

use arrow_array::RecordBatch;
use barge_core::{Error, KeyRange, Native, Source, TableInfo};
use crossbeam_channel::{Receiver, bounded};

use crate::READ_QUEUE_PER_READER;
use crate::failure::{Failure, nanos, spawn_named};

/// What readers send to the CPU stage.
pub(crate) enum ReadMsg {
    Batch {
        range: usize,
        batch: RecordBatch,
        /// The rows as the source sent them, when the target loads them unchanged.
        native: Option<Native>,
        /// Bytes taken from the pass's budget for it (given back once written).
        bytes: usize,
    },
    /// All `batches` batches of `range` have been sent.
    End { range: usize, batches: u64 },
    /// Reading `range` hit a transient failure: what was sent of it must not be committed.
    Failed { range: usize, error: Error },
}

/// Shared read-side context.
pub(crate) struct ReadSide<'a> {
    pub source: &'a dyn Source,
    pub table: &'a TableInfo,
    pub batch: barge_core::BatchSize,
    pub rows_read: &'a AtomicU64,
    pub failure: &'a Failure,
    /// Report a range whose read fails transiently (to be retried) instead of failing the run.
    pub retry: bool,
    /// Where readers add their busy time (reading and decoding, not waiting on the channel) and
    /// the Arrow bytes they produced.
    pub busy: Option<(&'a AtomicU64, &'a AtomicU64)>,
    /// Bytes in flight between readers and writers (copy passes; verification reads have none).
    pub budget: Option<&'a crate::stages::budget::ByteBudget>,
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
                    let size = match (batch.num_columns(), &native) {
                        (0, Some(native)) => native.bytes.len(),
                        _ => batch.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or(0)).sum(),
                    };
                    if let Some((_, bytes)) = side.busy {
                        bytes.fetch_add(size as u64, Ordering::Relaxed);
                    }
                    batches += 1;
                    let waiting = std::time::Instant::now();
                    if let Some(budget) = side.budget {
                        budget.acquire(size, &|| side.failure.is_set())?;
                    }
                    let bytes = if side.budget.is_some() { size } else { 0 };
                    let msg = ReadMsg::Batch { range: range.id, batch, native, bytes };
                    let mut sent = tx.send(msg).map_err(|_| Error::Cancelled);
                    if let Some(budget) = side.budget.filter(|b| sent.is_ok() && b.exceeds(size)) {
                        sent = budget.drained(&|| side.failure.is_set());
                    }
                    blocked += waiting.elapsed();
                    sent
                };
                let (table, rows) = (side.table, side.batch);
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
