//! Verification overlapping the target's key and index build (targets whose
//! [`barge_core::SchemaObjects::readable_while_finishing`] says readers pass).

use barge_core::{KeyRange, KeySpec, Result, Source, TableInfo};
use barge_plan::partition::plan_ranges;
use barge_verify::{Buckets, Routes, is_bucket_key};

use crate::context::Ctx;
use crate::digests::RangeDigests;
use crate::progress::Phase;
use crate::verify::digest::digest_routed;
use crate::verify::shared::{DigestShare, DigestTask, summed};
use crate::verify::table::align;

/// The target's digests over `ranges`, taken while `finish` builds its key and indexes: the table,
/// which has no key yet, is read in storage order over its row locator, and each row is routed to
/// the key range and bucket of its key. `None`, after `finish`, when it cannot be read so (no
/// locator, a key that does not read back as an integer, ranges that do not tile the key space).
/// With `share` (and the table's name in the plan), the spans are read by a distributed run's
/// workers.
pub(crate) fn digest_while_finishing(
    reader: &dyn Source,
    described: &TableInfo,
    source: &TableInfo,
    (ranges, buckets): (&[KeyRange], &Buckets),
    finish: &(dyn Fn() -> Result<()> + Sync),
    share: Option<(&dyn DigestShare, &str)>,
    ctx: Ctx<'_>,
) -> Result<Option<RangeDigests>> {
    let physical = match (&described.key, Routes::new(buckets, ranges)) {
        (KeySpec::Locator(locator), Some(routes)) => {
            let physical = TableInfo { key: KeySpec::Locator(locator.clone()), ..align(described.clone(), source)? };
            is_bucket_key(physical.schema.field(buckets.key_column).data_type()).then_some((physical, routes, locator))
        }
        _ => None,
    };
    let Some((physical, routes, locator)) = physical else {
        finish()?;
        return Ok(None);
    };
    let stored = plan_ranges(reader, &physical, &KeyRange::all(), ranges.len())?;
    tracing::info!("table `{}`: verifying while its key and indexes build", source.name);
    ctx.progress.started(&source.name, Phase::Verify, source.estimated_rows);
    std::thread::scope(|scope| {
        let building = std::thread::Builder::new()
            .name("barge-finish".into())
            .spawn_scoped(scope, finish)
            .expect("spawning a thread");
        let digests = match share {
            // The spans are read by the workers, while this process builds the key.
            Some((share, name)) => {
                let tasks = stored
                    .iter()
                    .map(|span| DigestTask {
                        table: name.to_string(),
                        span: span.clone(),
                        locator: Some(locator.clone()),
                        ranges: ranges.to_vec(),
                        buckets: Some(buckets.clone()),
                    })
                    .collect();
                share.digests(name, tasks).map(summed)
            }
            None => digest_routed(reader, &physical, &stored, &routes, ctx),
        };
        // The build's failure first: it says more than a read that failed because of it.
        building.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        digests.map(Some)
    })
}
