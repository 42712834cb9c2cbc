//! Digests of a table read without writing: the read stage feeding a hashing sink on the CPU pool.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use arrow_array::RecordBatch;
use barge_core::{KeyRange, Result, Source, TableInfo};
use barge_verify::{Buckets, Digest, Routes, bucket_digests, routed_digests};
use rayon::prelude::*;

use crate::context::Ctx;
use crate::digests::{RangeDigests, add_digests, empty_digests, into_digests};
use crate::failure::Failure;
use crate::progress::Phase;
use crate::stages::budget::{ByteBudget, Held};
use crate::stages::read::{ReadMsg, ReadSide, spawn_readers};

/// Digests `ranges` of `table` in parallel: the copy's read and hash stages without writing.
pub(crate) fn digest_ranges(
    source: &dyn Source,
    table: &TableInfo,
    ranges: &[KeyRange],
    buckets: Option<&Buckets>,
    ctx: Ctx<'_>,
) -> Result<RangeDigests> {
    let digests = empty_digests(ranges, buckets);
    read_and_hash(source, table, ranges, ctx, &|range, batch| {
        add_digests(&digests[range], bucket_digests(&table.name, batch, buckets, range)?);
        Ok(())
    })?;
    Ok(into_digests(digests))
}

/// Digests a table read over `ranges` that are not its key's (its row locator's): each row goes to
/// the key range and bucket `routes` finds for its key, giving what [`digest_ranges`] gives over
/// the key ranges.
pub(crate) fn digest_routed(
    source: &dyn Source,
    table: &TableInfo,
    ranges: &[KeyRange],
    routes: &Routes<'_>,
    ctx: Ctx<'_>,
) -> Result<RangeDigests> {
    let digests: Vec<Mutex<Vec<Digest>>> = routes.empty().into_iter().map(Mutex::new).collect();
    read_and_hash(source, table, ranges, ctx, &|_, batch| {
        let mut routed = routes.empty();
        routed_digests(&table.name, batch, routes, &mut routed)?;
        for (slot, routed) in digests.iter().zip(routed) {
            add_digests(slot, routed);
        }
        Ok(())
    })?;
    Ok(into_digests(digests))
}

/// Reads `ranges` with up to `ctx.workers` readers and hands every batch, with its range, to
/// `hash` on the CPU pool.
fn read_and_hash(
    source: &dyn Source,
    table: &TableInfo,
    ranges: &[KeyRange],
    ctx: Ctx<'_>,
    hash: &(dyn Fn(usize, &RecordBatch) -> Result<()> + Sync),
) -> Result<()> {
    let failure = Failure::default();
    let rows_read = AtomicU64::new(0);
    // Bytes read but not yet hashed are bounded like a copy's: a batch of one huge value is
    // hashed before the next is read.
    let budget = ByteBudget::for_batches(ctx.batch.bytes);
    let side = ReadSide {
        source,
        table,
        batch: ctx.batch,
        rows_read: &rows_read,
        failure: &failure,
        retry: false,
        busy: None,
        native: None,
        budget: Some(&budget),
    };
    let ranges: Vec<&KeyRange> = ranges.iter().collect();
    std::thread::scope(|scope| {
        let read_rx = spawn_readers(scope, &side, &ranges, ctx.workers);
        let hashed = ctx.pool.install(|| {
            read_rx.into_iter().par_bridge().try_for_each(|msg| {
                if let ReadMsg::Batch { range, batch, bytes, .. } = msg {
                    let _held = Held { budget: Some(&budget), bytes };
                    ctx.progress.advance(&table.name, Phase::Verify, batch.num_rows() as u64);
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
