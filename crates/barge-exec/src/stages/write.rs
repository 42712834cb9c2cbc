//! The write stage: one thread per writer connection, fed by its own bounded channel
//! ([`crate::WRITE_QUEUE_PER_WRITER`] batches). It writes batches as they come and commits whenever
//! every range it has seen is complete (group commit), so a commit never splits a range; then the
//! committed ranges' rejects go to the reject file and the ranges to the ledger (after the commit,
//! never before). With row isolation, a batch the target refuses is halved until the refused rows
//! are found.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use arrow_array::RecordBatch;
use barge_core::{BatchEncoder, Encoded, Error, Result, TableWriter};
use barge_verify::bucket_digests;
use crossbeam_channel::Receiver;

use crate::digests::{DigestSlots, subtract_digests};
use crate::failure::{Failure, nanos};
use crate::job::{CopyCounters, CopyJob, RangeTally};
use crate::progress::Phase;
use crate::rejects::{RowFailure, key_columns};
use crate::retry::Transient;

/// What the CPU stage sends to a writer.
pub(crate) enum WriteMsg {
    Batch {
        range: usize,
        /// `None` when the batch did not encode and must be split to find the bad rows.
        encoded: Option<Encoded>,
        /// Kept when rows are isolated, to split the batch if the target refuses it.
        batch: Option<RecordBatch>,
        /// Bytes of the pass's budget it holds.
        bytes: usize,
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

impl WriteMsg {
    fn range(&self) -> usize {
        match self {
            WriteMsg::Batch { range, .. } | WriteMsg::End { range, .. } | WriteMsg::Failed { range, .. } => *range,
        }
    }
}

/// What a writer thread shares with the rest of the copy.
pub(crate) struct WriteSide<'a> {
    pub job: &'a CopyJob<'a>,
    pub counters: &'a CopyCounters,
    pub digests: &'a DigestSlots,
    pub tallies: &'a [RangeTally],
    pub transient: &'a Transient,
    pub encoder: &'a dyn BatchEncoder,
    pub budget: Option<&'a crate::stages::budget::ByteBudget>,
}

/// One writer thread's state.
struct WriteLoop<'a, 's> {
    side: &'s WriteSide<'a>,
    /// `None` after a transient failure until reconnecting works.
    writer: Option<Box<dyn TableWriter>>,
    /// range → (batches received, batches announced by the reader)
    open: HashMap<usize, (u64, Option<u64>)>,
}

/// Runs a writer over its channel until it closes. A writer that stops early without committing
/// leaves its open transaction to roll back. A transient failure (of this writer, or of the read
/// of a range it holds) rolls back the open ranges, which are retried in the next pass; the writer
/// reconnects for the ranges after.
pub(crate) fn write_loop(
    writer: Box<dyn TableWriter>,
    rx: Receiver<WriteMsg>,
    side: &WriteSide<'_>,
    failure: &Failure,
) -> Result<()> {
    let mut state = WriteLoop { side, writer: Some(writer), open: HashMap::new() };
    for msg in rx {
        let bytes = if let WriteMsg::Batch { bytes, .. } = &msg { *bytes } else { 0 };
        let _held = crate::stages::budget::Held { budget: side.budget, bytes };
        if failure.is_set() {
            return Ok(());
        }
        let range = msg.range();
        if side.transient.contains(range) {
            continue; // the rest of a range already given up in this pass
        }
        let started = std::time::Instant::now();
        let step = state.handle(msg).and_then(|()| state.commit_if_complete());
        side.counters.write_ns.fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        match step {
            Ok(()) => {}
            Err(error) if error.is_transient() => state.recover(range, error),
            Err(error) => return Err(error),
        }
    }
    if failure.is_set() || !state.open.is_empty() {
        return Ok(()); // incomplete ranges: roll back rather than commit half a range
    }
    match state.writer.as_mut() {
        Some(w) => {
            side.job.still_held()?;
            w.commit()
        }
        None => Ok(()),
    }
}

impl WriteLoop<'_, '_> {
    fn handle(&mut self, msg: WriteMsg) -> Result<()> {
        let range = msg.range();
        match msg {
            WriteMsg::Failed { error, .. } if !self.open.contains_key(&range) => {
                self.side.transient.fail([range], error);
                Ok(())
            }
            WriteMsg::Failed { error, .. } => Err(error),
            WriteMsg::Batch { range, encoded, batch, .. } => self.write(range, encoded, batch),
            WriteMsg::End { range, batches } => {
                self.open.entry(range).or_default().1 = Some(batches);
                Ok(())
            }
        }
    }

    fn write(&mut self, range: usize, encoded: Option<Encoded>, batch: Option<RecordBatch>) -> Result<()> {
        let side = self.side;
        let w = connected(&mut self.writer)?;
        let (rows, batch_rows) = match (batch, encoded) {
            (Some(batch), encoded) => (side.write_isolating(w, range, &batch, encoded)?, batch.num_rows() as u64),
            (None, Some(encoded)) => {
                let rows = w.write(encoded)?;
                (rows, rows)
            }
            (None, None) => unreachable!("a batch that did not encode is kept for isolation"),
        };
        let written = side.counters.rows_written.fetch_add(rows, Ordering::Relaxed) + rows;
        side.counters.timeline.record(written);
        side.tallies[range].written.fetch_add(rows, Ordering::Relaxed);
        side.job.ctx.progress.advance(&side.job.table.name, Phase::Copy, batch_rows);
        self.open.entry(range).or_default().0 += 1;
        Ok(())
    }

    /// Group commit: once every open range has all its announced batches.
    fn commit_if_complete(&mut self) -> Result<()> {
        if self.open.is_empty() || !self.open.values().all(|(got, announced)| Some(*got) == *announced) {
            return Ok(());
        }
        self.side.job.still_held()?;
        connected(&mut self.writer)?.commit()?;
        let committed: Vec<usize> = self.open.drain().map(|(range, _)| range).collect();
        for &range in &committed {
            let rows = self.side.tallies[range].written.load(std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("table `{}`: range {range} committed, {rows} rows", self.side.job.table.name);
        }
        self.side.job.flush_rejects(self.side.tallies, committed.iter().copied())?;
        self.side.record_done(&committed)
    }

    /// Rolls back what this writer holds (dropping its connection), marks those ranges for the next
    /// pass, then reconnects.
    fn recover(&mut self, range: usize, error: Error) {
        drop(self.writer.take());
        self.side.transient.fail(self.open.drain().map(|(range, _)| range).chain([range]), error);
        let job = self.side.job;
        self.writer = job.target.writer(job.target_table, job.fields, &job.write_options).ok().and_then(|mut w| {
            // A writer whose session a distributed worker cannot record does not write.
            job.writer_opened(w.as_mut()).ok().map(|()| w)
        });
    }
}

impl WriteSide<'_> {
    /// Records committed ranges in the run's ledger (after the commit, never before).
    fn record_done(&self, ranges: &[usize]) -> Result<()> {
        let Some(view) = &self.job.ledger else { return Ok(()) };
        let done = ranges
            .iter()
            .map(|&range| {
                let tally = &self.tallies[range];
                let digests = self.digests[range].lock().expect("digest lock").clone();
                barge_core::ledger::RangeDone {
                    range,
                    rows_read: tally.read.load(Ordering::Relaxed),
                    rows_written: tally.written.load(Ordering::Relaxed),
                    rows_rejected: tally.rejected.load(Ordering::Relaxed),
                    digests: serde_json::to_string(&digests).expect("digests serialise"),
                }
            })
            .collect::<Vec<_>>();
        view.ledger.ranges_done(&self.job.table.name, &done)
    }

    /// Writes `batch`, and when the target refuses it, finds the refused rows by halving (as
    /// pgloader does): each refused row is rejected and taken out of its range's digest, the rest is
    /// written. Returns the rows written.
    fn write_isolating(
        &self,
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
                subtract_digests(&self.digests[range], digests);
            }
            return Ok(0);
        }
        let half = batch.num_rows() / 2;
        let first = self.write_isolating(writer, range, &batch.slice(0, half), None)?;
        let second = self.write_isolating(writer, range, &batch.slice(half, batch.num_rows() - half), None)?;
        Ok(first + second)
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
