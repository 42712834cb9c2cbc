//! The CPU stage, on the rayon pool: transform → hash (the source digest, per range and bucket) →
//! encode, then hand each batch to the writer owning its range. Rows the transform fails are
//! rejected here, before they are hashed.

use std::sync::atomic::Ordering;

use arrow_array::RecordBatch;
use barge_core::values::ValuePolicy;
use barge_core::{BatchEncoder, Encoded, Error, Native, Result};
use barge_verify::bucket_digests;
use crossbeam_channel::Sender;

use crate::digests::{DigestSlots, add_digests};
use crate::failure::nanos;
use crate::job::{CopyCounters, CopyJob, RangeTally};
use crate::rejects::{RowFailure, key_columns};
use crate::stages::read::ReadMsg;
use crate::stages::write::WriteMsg;

pub(crate) struct CpuStage<'a> {
    pub job: &'a CopyJob<'a>,
    pub counters: &'a CopyCounters,
    pub encoder: &'a dyn BatchEncoder,
    pub digests: &'a DigestSlots,
    pub tallies: &'a [RangeTally],
    /// One channel per writer; range `r` goes to writer `r % senders.len()`.
    pub senders: &'a [Sender<WriteMsg>],
    pub budget: Option<&'a crate::stages::budget::ByteBudget>,
}

impl CpuStage<'_> {
    /// Processes one message of the read stage and forwards it to its writer.
    pub(crate) fn run(&self, msg: ReadMsg) -> Result<()> {
        let started = std::time::Instant::now();
        let (range, out) = match msg {
            ReadMsg::Batch { range, batch, native, bytes } => match self.batch(range, batch, native, bytes) {
                // The writer gives the bytes back once it has written the batch…
                Ok(msg) => (range, msg),
                // …and a batch that never reaches it gives them back here.
                Err(error) => {
                    if let Some(budget) = self.budget {
                        budget.release(bytes);
                    }
                    return Err(error);
                }
            },
            ReadMsg::End { range, batches } => (range, WriteMsg::End { range, batches }),
            ReadMsg::Failed { range, error } => (range, WriteMsg::Failed { range, error }),
        };
        self.counters.cpu_ns.fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        self.senders[range % self.senders.len()].send(out).map_err(|_| Error::Cancelled)
    }

    fn batch(&self, range: usize, batch: RecordBatch, native: Option<Native>, bytes: usize) -> Result<WriteMsg> {
        let job = self.job;
        self.tallies[range].read.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let batch = self.transform(range, batch)?;
        let batch = self.unstorable(range, batch)?;
        if job.hash {
            add_digests(&self.digests[range], bucket_digests(&job.output.name, &batch, job.buckets, range)?);
        }
        let kept = job.isolating().then(|| batch.clone());
        let encoded = self.encode(batch, native)?;
        Ok(WriteMsg::Batch { range, encoded, batch: kept, bytes })
    }

    /// The table's transform, rejecting the rows it fails.
    fn transform(&self, range: usize, batch: RecordBatch) -> Result<RecordBatch> {
        let job = self.job;
        let Some(transform) = job.transform else { return Ok(batch) };
        let out = transform.apply(&batch)?;
        let key = key_columns(job.table);
        for (row, column, reason) in out.failures {
            let failure = RowFailure { column: Some(column), reason, stage: "transform" };
            job.reject(self.counters, &self.tallies[range], (&batch, row, key), failure)?;
        }
        Ok(out.batch)
    }

    /// Values the target cannot store (see [`barge_core::values`]), found before they are hashed
    /// and handled by the run's policy: an error naming the row, NULL, or the row rejected.
    fn unstorable(&self, range: usize, batch: RecordBatch) -> Result<RecordBatch> {
        let job = self.job;
        let (limits, policy) = job.unstorable;
        let schema = batch.schema();
        if !schema.fields().iter().any(|f| limits.applies_to(f.data_type())) {
            return Ok(batch);
        }
        let key: Vec<usize> = job.output.key_columns().iter().filter_map(|name| schema.index_of(name).ok()).collect();
        let mut columns = batch.columns().to_vec();
        let mut rejected: std::collections::BTreeMap<usize, (String, String)> = Default::default();
        for (i, field) in schema.fields().iter().enumerate() {
            if !limits.applies_to(field.data_type()) {
                continue;
            }
            let found = limits.scan(&columns[i]);
            let Some((first, reason)) = found.first().cloned() else { continue };
            let stop = |why: String| Error::BadValue {
                table: job.table.name.clone(),
                column: field.name().clone(),
                key: barge_core::rejects::key_shown(&batch, first, &key),
                reason: format!("{reason}{why}"),
            };
            match policy {
                ValuePolicy::Error => {
                    return Err(stop(
                        "; say what to do with such values: --unrepresentable null|reject (pipelines: \
                         `unrepresentable = \"null\"` or `\"reject\"`)"
                            .into(),
                    ));
                }
                ValuePolicy::Null if !field.is_nullable() => {
                    return Err(stop(
                        ", and the column is NOT NULL so it cannot be written as NULL: --unrepresentable reject".into(),
                    ));
                }
                ValuePolicy::Null => {
                    let rows: Vec<usize> = found.iter().map(|(row, _)| *row).collect();
                    columns[i] = barge_core::values::nulled(&columns[i], &rows)?;
                    let mut nulled = self.tallies[range].nulled.lock().expect("nulled lock");
                    *nulled.entry(field.name().clone()).or_default() += rows.len() as u64;
                }
                ValuePolicy::Reject => {
                    for (row, reason) in found {
                        rejected.entry(row).or_insert_with(|| (field.name().clone(), reason));
                    }
                }
            }
        }
        let batch = RecordBatch::try_new(schema, columns)?;
        if rejected.is_empty() {
            return Ok(batch);
        }
        let mut keep = vec![true; batch.num_rows()];
        for (row, (column, reason)) in rejected {
            keep[row] = false;
            let failure = RowFailure { column: Some(column), reason, stage: "write" };
            job.reject(self.counters, &self.tallies[range], (&batch, row, &key), failure)?;
        }
        Ok(arrow_select::filter::filter_record_batch(&batch, &arrow_array::BooleanArray::from(keep))?)
    }

    /// The batch as its writer takes it: the rows as the source sent them when the target takes
    /// those, else encoded. `None` when it did not encode while rows are isolated (the writer
    /// splits it to find the bad rows).
    fn encode(&self, batch: RecordBatch, native: Option<Native>) -> Result<Option<Encoded>> {
        let job = self.job;
        if let Some(encoded) = native.and_then(|native| self.encoder.encode_native(batch.num_rows(), native)) {
            return Ok(Some(encoded));
        }
        // Only rows as read came (see `ReadSide::native`), and the target did not take them.
        if batch.num_columns() == 0 && !job.output.schema.fields().is_empty() {
            return Err(Error::engine(
                format!("loading `{}`", job.table.name),
                "the target refused rows in their source encoding",
            ));
        }
        match self.encoder.encode(batch) {
            Ok(encoded) => Ok(Some(encoded)),
            Err(Error::BadValue { .. }) if job.isolating() => Ok(None),
            Err(error) => Err(error),
        }
    }
}
