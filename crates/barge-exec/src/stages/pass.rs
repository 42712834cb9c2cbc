//! One pass over a set of ranges: readers → CPU stage → writers, every channel bounded. Ranges
//! that fail transiently are recorded for the next pass; any other failure is the pass's error.

use barge_core::{KeyRange, Result};
use crossbeam_channel::bounded;
use rayon::prelude::*;

use crate::WRITE_QUEUE_PER_WRITER;
use crate::digests::DigestSlots;
use crate::failure::{Failure, spawn_named};
use crate::job::{CopyCounters, CopyJob, RangeTally};
use crate::retry::Transient;
use crate::stages::budget::ByteBudget;
use crate::stages::cpu::CpuStage;
use crate::stages::read::{ReadSide, spawn_readers};
use crate::stages::write::{WriteSide, write_loop};

/// What one pass fills in.
pub(crate) struct PassState<'a> {
    pub counters: &'a CopyCounters,
    pub digests: &'a DigestSlots,
    pub tallies: &'a [RangeTally],
    pub transient: &'a Transient,
}

pub(crate) fn copy_pass(job: &CopyJob<'_>, ranges: &[&KeyRange], state: &PassState<'_>) -> Result<()> {
    let PassState { counters, digests, tallies, transient } = *state;
    let writers = job.ctx.workers.min(job.target.max_writers()).min(ranges.len()).max(1);
    // Open every writer before reading a row: a refused connection fails the table cleanly (or,
    // when it is transient, the whole pass is retried).
    let opened = (0..writers)
        .map(|_| job.target.writer(job.target_table, job.fields, &job.write_options))
        .collect::<Result<Vec<_>>>();
    let table_writers = match opened.and_then(|mut writers| {
        writers.iter_mut().try_for_each(|w| job.writer_opened(w.as_mut()))?;
        Ok(writers)
    }) {
        Ok(writers) => writers,
        Err(error) if error.is_transient() => {
            transient.fail(ranges.iter().map(|r| r.id), error);
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    let encoder = job.target.encoder(job.target_table, job.fields)?;
    let failure = Failure::default();
    let budget = ByteBudget::for_batches(job.ctx.batch.bytes);
    let side = ReadSide {
        source: job.source,
        table: job.table,
        batch: job.ctx.batch,
        rows_read: &counters.rows_read,
        failure: &failure,
        retry: true,
        busy: Some((&counters.read_ns, &counters.bytes_read)),
        native: loads_as_read(job, encoder.accepts_native()).then_some(job.hash),
        budget: Some(&budget),
    };
    std::thread::scope(|scope| {
        let read_rx = spawn_readers(scope, &side, ranges, job.ctx.workers);
        let mut senders = Vec::with_capacity(writers);
        for writer in table_writers {
            let (tx, rx) = bounded(WRITE_QUEUE_PER_WRITER);
            senders.push(tx);
            let (failure, encoder, budget) = (&failure, encoder.as_ref(), &budget);
            spawn_named(scope, "barge-writer", move || {
                let side = WriteSide { job, counters, digests, tallies, transient, encoder, budget: Some(budget) };
                if let Err(error) = write_loop(writer, rx, &side, failure) {
                    failure.record(error);
                }
            });
        }
        let stage = CpuStage {
            job,
            counters,
            encoder: encoder.as_ref(),
            digests,
            tallies,
            senders: &senders,
            budget: Some(&budget),
        };
        let cpu = job.ctx.pool.install(|| read_rx.into_iter().par_bridge().try_for_each(|msg| stage.run(msg)));
        if let Err(error) = cpu {
            failure.record(error);
        }
        // Dropping the senders lets the writers see the end of their input and commit.
    });
    failure.into_result()
}

/// Rows go to the target as the source sent them when nothing changes them on the way (no
/// transform, the same columns in the same order), a refused batch need not be split, and the
/// target's encoder takes them; they are then decoded only to be hashed.
fn loads_as_read(job: &CopyJob<'_>, accepts_native: bool) -> bool {
    let same_columns = job.table.schema.fields().iter().map(|f| f.name()).eq(job.fields.iter().map(|f| f.name()));
    let as_read = accepts_native && job.transform.is_none() && same_columns && !job.isolating();
    if as_read {
        tracing::info!("table `{}`: rows load as the source sent them, without encoding", job.table.name);
    }
    as_read
}
