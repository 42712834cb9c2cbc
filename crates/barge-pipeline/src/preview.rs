//! What `barge plan` shows of a pipeline, and what `barge run` starts from: the shared preflight
//! ([`barge_plan::preflight`]) plus, per table, the partitions, the DDL, each column's source →
//! target type with its fidelity, and the risks found in a sample of the data. Writes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use barge_core::types::Fidelity;
use barge_core::{Error, Key, META_NATIVE_TYPE, Registry, Source, Target};
use barge_plan::{ColumnRisk, Preflight, TableAction, assess};
use serde::Serialize;

use crate::Pipeline;

/// Rows sampled per table for the lossiness report.
pub const SAMPLE_ROWS: usize = 100_000;

/// The preflight, as printed by `plan` (and `--json`).
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub pipeline: String,
    pub source: String,
    pub target: String,
    /// No unaccepted risk: `run` would start.
    pub ok: bool,
    pub tables: Vec<TablePreview>,
    /// How the target's schema would be made (the engine's own dump, or barge's DDL, and why).
    pub schema: barge_plan::SchemaReport,
    /// What the target would not have, by kind and name, with the reason.
    pub not_migrated: Vec<barge_core::NotMigrated>,
    /// The source's views a copy creates after the rows, where the target takes their SQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<String>,
    /// Tables set aside: they cannot be copied, the others would be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<barge_plan::TableFailure>,
    /// The pipeline's versioned target schema (`[schema]`): each version, applied or pending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_versions: Vec<crate::versions::VersionStatus>,
}

#[derive(Debug, Serialize)]
pub struct TablePreview {
    pub source_table: String,
    pub target_table: String,
    pub action: TableAction,
    pub estimated_rows: u64,
    pub key: Vec<String>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub conflict: barge_core::Conflict,
    pub error_budget: String,
    /// Incremental tables: the watermark column, the mark this run reads from, and the one it records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<barge_plan::Incremental>,
    pub partitions: Vec<PartitionPreview>,
    /// The CREATE TABLE barge will run (`None` when the table exists).
    pub ddl: Option<String>,
    /// The source's expression and partial indexes and CHECK constraints, added after the rows
    /// where the target takes them (`name: CREATE INDEX …`, `name: CHECK (condition)`; none when
    /// the table exists or the schema is the source's dump).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    pub columns: Vec<ColumnPreview>,
    pub sampled_rows: u64,
    pub risks: Vec<ColumnRisk>,
}

#[derive(Debug, Serialize)]
pub struct PartitionPreview {
    pub id: usize,
    pub lo: Option<Key>,
    pub hi: Option<Key>,
    /// The table's estimate shared evenly (ranges are planned to hold similar row counts).
    pub estimated_rows: u64,
}

#[derive(Debug, Serialize)]
pub struct ColumnPreview {
    pub name: String,
    pub source_type: String,
    pub target_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    pub fidelity: String,
}

/// A validated pipeline, ready to run: the shared preflight and what `plan` shows of it.
pub struct Prepared {
    pub preflight: Preflight,
    pub report: PlanReport,
}

/// Plans `pipeline` (the shared [`barge_plan::preflight`]) and assesses every table's data against
/// its target. Writes nothing.
pub fn prepare(
    registry: &Registry,
    pipeline: &Pipeline,
    workers: usize,
    watermarks: &HashMap<String, barge_core::Scalar>,
    detect_deletes: bool,
) -> Result<Prepared, Error> {
    let (from, to) = (pipeline.source.as_str(), pipeline.target.as_str());
    barge_plan::preflight::engines(registry, from, to)?;
    if let Some(zone) = &pipeline.source_timezone
        && !zone.eq_ignore_ascii_case("UTC")
    {
        return Err(Error::Config(format!(
            "source_timezone = \"{zone}\": barge reads naive timestamps as UTC; only \"UTC\" can be declared"
        )));
    }
    // The versioned target schema first: a changed or missing applied file is refused before
    // anything else is looked at.
    let versions = match &pipeline.schema {
        Some(spec) => crate::versions::status(spec, registry.for_url(to)?.open_target(to)?.as_ref())?,
        None => Vec::new(),
    };
    let request =
        |target: &dyn barge_core::EngineFactory| pipeline.request(workers, target.name(), watermarks, detect_deletes);
    let preflight = barge_plan::preflight(registry, from, to, request, pipeline.if_exists)?;
    // The sample reads through a source of its own, so its read notices do not count in the run's.
    let sampler = preflight.source_engine.open_source(from)?;
    let mut existing_reader: Option<Arc<dyn Source>> = None;
    let mut tables = Vec::with_capacity(preflight.plan.tables.len());
    for table in &preflight.plan.tables {
        let existing = existing_schema(&preflight, table, &mut existing_reader)?;
        let accepted = pipeline.accepted(&table.target_table);
        let assessment = assess(
            sampler.as_ref(),
            table,
            existing.as_deref(),
            SAMPLE_ROWS,
            pipeline.source_timezone.is_some(),
            &accepted,
            (preflight.target.unstorable(), pipeline.unrepresentable),
        )?;
        tables.push(preview(Some(pipeline), preflight.target.as_ref(), table, existing.as_deref(), assessment));
    }
    let mut report = report(&preflight, pipeline.path.display().to_string(), tables);
    report.schema_versions = versions;
    Ok(Prepared { preflight, report })
}

/// The schema a table that exists already has in the target (read through one reader, opened the
/// first time it is needed); `None` for a table to create.
fn existing_schema(
    preflight: &Preflight,
    table: &barge_plan::TablePlan,
    reader: &mut Option<Arc<dyn Source>>,
) -> Result<Option<arrow_schema::SchemaRef>, Error> {
    if table.action == TableAction::Create {
        return Ok(None);
    }
    let reader = match reader {
        Some(reader) => reader.clone(),
        None => reader.insert(preflight.open_target_reader()?).clone(),
    };
    Ok(Some(reader.table(&table.target_table)?.schema))
}

fn report(preflight: &Preflight, title: String, mut tables: Vec<TablePreview>) -> PlanReport {
    if preflight.plan.schema.dump().is_some() {
        // The source's own dump holds them.
        tables.iter_mut().for_each(|t| t.checks.clear());
    }
    PlanReport {
        pipeline: title,
        source: preflight.source.display_name(),
        target: preflight.target.display_name(),
        ok: tables.iter().all(|t| t.risks.iter().all(|r| r.accepted)),
        tables,
        schema: barge_plan::SchemaReport::of(&preflight.plan.schema),
        not_migrated: preflight.plan.not_migrated.clone(),
        views: preflight.plan.views.iter().map(|v| v.name.clone()).collect(),
        failed: preflight.plan.failed.clone(),
        schema_versions: Vec::new(),
    }
}

/// What a copy's preflight would do, as `plan` shows a pipeline's (`barge copy --dry-run`): the
/// tables with their partitions, DDL and column mapping, the schema's mode and what would not be
/// migrated. No data is sampled, and nothing is written.
pub fn dry_run(preflight: &Preflight, title: String) -> Result<PlanReport, Error> {
    let mut existing_reader: Option<Arc<dyn Source>> = None;
    let mut tables = Vec::with_capacity(preflight.plan.tables.len());
    for table in &preflight.plan.tables {
        let existing = existing_schema(preflight, table, &mut existing_reader)?;
        let nothing_sampled = barge_plan::Assessment { sampled_rows: 0, risks: Vec::new() };
        tables.push(preview(None, preflight.target.as_ref(), table, existing.as_deref(), nothing_sampled));
    }
    Ok(report(preflight, title, tables))
}

fn preview(
    pipeline: Option<&Pipeline>,
    target: &dyn Target,
    table: &barge_plan::TablePlan,
    existing: Option<&arrow_schema::Schema>,
    assessment: barge_plan::Assessment,
) -> TablePreview {
    let spec = pipeline.and_then(|p| p.tables.iter().find(|t| t.target == table.target_table));
    let exprs: HashMap<&str, String> = spec
        .map(|s| s.columns.iter().filter_map(|c| Some((c.name.as_str(), c.expr.as_ref()?.to_string()))).collect())
        .unwrap_or_default();
    let renames: HashMap<&str, &str> = spec
        .map(|s| s.columns.iter().filter_map(|c| Some((c.name.as_str(), c.from.as_deref()?))).collect())
        .unwrap_or_default();
    let native = |field: &arrow_schema::Field| {
        field.metadata().get(META_NATIVE_TYPE).cloned().unwrap_or_else(|| field.data_type().to_string())
    };
    let columns = table
        .columns
        .iter()
        .map(|c| {
            let name = c.field.name().as_str();
            let source_name = renames.get(name).copied().unwrap_or(name);
            let source_type = match (exprs.get(name), table.source.schema.field_with_name(source_name)) {
                (None, Ok(field)) => native(field),
                _ => format!("computed ({})", c.field.data_type()),
            };
            let target_type = existing
                .and_then(|s| s.field_with_name(name).ok())
                .map(native)
                .unwrap_or_else(|| c.target.native_type.clone());
            ColumnPreview {
                name: name.to_string(),
                source_type,
                target_type,
                expr: exprs.get(name).cloned().or_else(|| renames.get(name).map(|from| format!("renamed from {from}"))),
                fidelity: match &c.fidelity {
                    Fidelity::Exact => "exact".into(),
                    Fidelity::Lossy(why) => format!("lossy: {why}"),
                    Fidelity::Impossible => "impossible".into(),
                },
            }
        })
        .collect();
    let per_range = table.source.estimated_rows / table.ranges.len().max(1) as u64;
    let ddl = (table.action == TableAction::Create).then(|| {
        let columns: Vec<_> = table.columns.iter().map(|c| (c.field.clone(), c.target.clone())).collect();
        let key: Vec<String> = table.output.key_columns().into_iter().map(str::to_string).collect();
        target.table_ddl(&table.target_table, &columns, &key)
    });
    TablePreview {
        source_table: table.source.name.clone(),
        target_table: table.target_table.clone(),
        action: table.action,
        estimated_rows: table.source.estimated_rows,
        key: table.source.range_columns(),
        filter: table.source.filter.clone(),
        conflict: table.conflict,
        error_budget: table.budget.to_string(),
        incremental: table.incremental.clone(),
        partitions: table
            .ranges
            .iter()
            .map(|r| PartitionPreview { id: r.id, lo: r.lo.clone(), hi: r.hi.clone(), estimated_rows: per_range })
            .collect(),
        checks: match (table.action, &table.transform) {
            (TableAction::Create, None) => table
                .source
                .sql_indexes
                .iter()
                .map(|i| format!("{}: {}", i.name, i.create_sql(&table.target_table, |n| format!("\"{n}\""), true)))
                .chain(table.source.checks.iter().map(|c| format!("{}: CHECK ({})", c.name, c.expr)))
                .collect(),
            _ => Vec::new(),
        },
        ddl,
        columns,
        sampled_rows: assessment.sampled_rows,
        risks: assessment.risks,
    }
}

/// The error for a plan with unaccepted risks (exit 2: nothing was written).
pub fn risks_error(report: &PlanReport) -> Error {
    let risks: Vec<String> = report
        .tables
        .iter()
        .flat_map(|t| {
            t.risks
                .iter()
                .filter(|r| !r.accepted)
                .map(move |r| format!("  {}.{}: {} — {}", t.target_table, r.column, r.risk.name(), r.detail))
        })
        .collect();
    Error::Config(format!(
        "the plan found {} unaccepted risk(s); nothing was written. Fix the data or the target, or accept a risk \
         with `accept = [\"<risk>\"]` on the column in the pipeline file:\n{}",
        risks.len(),
        risks.join("\n")
    ))
}
