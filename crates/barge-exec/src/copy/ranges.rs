//! Copying one table's ranges: ranges an earlier attempt committed are taken from the ledger, the
//! rest go through passes of the stages; ranges that fail transiently (lost connection, deadlock,
//! server restart) are rolled back, taken out of the counters, and copied again in a further
//! pass after a backoff, up to `job.retries` times.

use std::sync::atomic::Ordering;

use barge_core::{Error, KeyRange, Result};
use barge_verify::Digest;

use crate::digests::{DigestSlots, RangeDigests, empty_digests, into_digests};
use crate::job::{CopyCounters, CopyJob, RangeTally};
use crate::retry::{Transient, backoff, retrying};
use crate::stages::pass::{PassState, copy_pass};

/// Copies the table of `job`; returns the source digests of each range (zero when not hashing).
/// `only`: the one range to copy (a distributed run's worker), the others left alone.
pub(crate) fn copy_ranges(job: &CopyJob<'_>, counters: &CopyCounters, only: Option<usize>) -> Result<RangeDigests> {
    let digests = empty_digests(job.ranges, job.buckets);
    let tallies: Vec<RangeTally> = job.ranges.iter().map(|_| RangeTally::default()).collect();
    let mut pending = resume_ranges(job, counters, &digests)?;
    if let Some(id) = only {
        pending.retain(|r| r.id == id);
    }
    if job.clears_ranges() {
        clear_ranges(job, &pending)?;
    }
    let mut attempt = 0u32;
    while !pending.is_empty() {
        let transient = Transient::default();
        let state = PassState { counters, digests: &digests, tallies: &tallies, transient: &transient };
        if let Err(error) = copy_pass(job, &pending, &state) {
            // Rows rejected so far are real rejects even though the table stops: keep them.
            job.flush_rejects(&tallies, 0..tallies.len())?;
            return Err(error);
        }
        let Some((failed, error)) = transient.into_failed() else { break };
        if attempt >= job.retries {
            job.flush_rejects(&tallies, 0..tallies.len())?;
            return Err(error);
        }
        // A distributed worker that lost its range does not copy it again.
        job.still_held()?;
        attempt += 1;
        counters.retries.fetch_add(failed.len() as u64, Ordering::Relaxed);
        for &range in &failed {
            forget_attempt(counters, &tallies[range], &digests[range]);
        }
        let delay = backoff(attempt);
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
    job.flush_rejects(&tallies, 0..tallies.len())?;
    let mut nulled = counters.nulled.lock().expect("nulled lock");
    for tally in &tallies {
        for (column, values) in std::mem::take(&mut *tally.nulled.lock().expect("nulled lock")) {
            *nulled.entry(column).or_default() += values;
        }
    }
    drop(nulled);
    Ok(into_digests(digests))
}

/// The ranges still to copy. Resuming, the ranges an earlier attempt committed are skipped and
/// their counts and digests taken from the ledger; a table without a key cannot be cleared range
/// by range and is reloaded whole.
fn resume_ranges<'a>(job: &CopyJob<'a>, counters: &CopyCounters, digests: &DigestSlots) -> Result<Vec<&'a KeyRange>> {
    let mut pending: Vec<&KeyRange> = job.ranges.iter().collect();
    let Some(ledger) = &job.ledger else { return Ok(pending) };
    if ledger.clear && !job.output.key.is_primary() {
        job.target.truncate_table(job.target_table)?;
        return Ok(pending);
    }
    let Some(done) = ledger.done else { return Ok(pending) };
    for (range, earlier) in done {
        let stored: Vec<Digest> =
            serde_json::from_str(&earlier.digests).map_err(|e| Error::engine("reading digests from the ledger", e))?;
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
    Ok(pending)
}

/// Resuming a keyed table: removes whatever an interrupted run may have committed of each range
/// still to copy, one range at a time, each in a transaction of its own, before any range loads.
/// Clearing while other writers load neighbouring ranges made them wait on each other's locks
/// (InnoDB: next-key locks deadlocked, 5 of 5 resumes; row locks on a neighbour's first
/// uncommitted row waited on a writer that waited on barge's own channels). Committing a clear
/// before its range loads is safe: a range counts as done only once its load commits and the
/// ledger records it, so one cleared but not loaded is cleared and loaded again next time.
pub(crate) fn clear_ranges(job: &CopyJob<'_>, pending: &[&KeyRange]) -> Result<()> {
    let key: Vec<String> = job.output.key_columns().into_iter().map(str::to_string).collect();
    let mut cleared = 0;
    retrying(job.retries, &job.table.name, "clearing ranges", || {
        // A retry goes on from the first range not yet cleared.
        let mut writer = job.target.writer(job.target_table, job.fields, &job.write_options)?;
        for range in &pending[cleared..] {
            let clearer = writer.range_clearer().ok_or_else(|| {
                Error::unsupported(job.target.display_name(), "clear key ranges, which resuming a keyed table needs")
            })?;
            clearer.clear_range(&key, range)?;
            writer.commit()?;
            cleared += 1;
        }
        Ok(())
    })
}

/// Takes a failed attempt of one range back out of the counters and its digest.
fn forget_attempt(counters: &CopyCounters, tally: &RangeTally, digest: &std::sync::Mutex<Vec<Digest>>) {
    counters.rows_read.fetch_sub(tally.read.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    counters.rows_written.fetch_sub(tally.written.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    tally.rejects.lock().expect("rejects lock").clear();
    tally.nulled.lock().expect("nulled lock").clear();
    counters.rows_rejected.fetch_sub(tally.rejected.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    digest.lock().expect("digest lock").iter_mut().for_each(|d| *d = Digest::default());
}
