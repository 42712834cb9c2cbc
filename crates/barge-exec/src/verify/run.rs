//! `barge verify`: every table of a source plan against the same-named tables of a target.

use std::time::Instant;

use barge_core::{Result, Source};
use barge_plan::SourcePlan;

use crate::ExecOptions;
use crate::context::{Ctx, cpu_pool};
use crate::progress::Progress;
use crate::report::VerifyReport;
use crate::verify::buckets::bucket_layout;
use crate::verify::table::Comparison;

/// Verifies every table of a source plan against the same-named tables of `target`.
pub fn verify(
    source: &dyn Source,
    target: &dyn Source,
    plan: &SourcePlan,
    options: &ExecOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let pool = cpu_pool(options.workers)?;
    let ctx = Ctx { pool: &pool, workers: options.workers, batch: options.batch(), progress };
    let started = Instant::now();
    let targets = plan.tables.iter().map(|t| target.table(&t.source.name)).collect::<Result<Vec<_>>>()?;
    let mut tables = Vec::with_capacity(plan.tables.len());
    for (table, target_info) in plan.tables.iter().zip(targets) {
        let buckets = bucket_layout(source, &table.source, &table.source, &table.ranges)?;
        let comparison = Comparison {
            source,
            source_info: &table.source,
            target,
            target_info,
            ranges: &table.ranges,
            buckets: buckets.as_ref(),
        };
        tables.push(comparison.run(None, None, ctx)?);
    }
    Ok(VerifyReport {
        ok: tables.iter().all(|t| t.matched),
        seconds: started.elapsed().as_secs_f64(),
        tables,
        only_in_target: Vec::new(),
    })
}
