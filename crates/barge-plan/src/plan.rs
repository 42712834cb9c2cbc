//! The copy plan, built in two phases so that bad input fails before anything is written:
//! [`plan_sources`] needs only the source; [`plan_targets`] opens the target but writes nothing.

use std::sync::Arc;

use arrow_schema::Field;
use barge_core::types::{Fidelity, fidelity};
use barge_core::{
    Budget, Conflict, DumpedSchema, Error, ForeignKeyInfo, IndexInfo, KeyRange, KeySpec, NotMigrated, Result, Scalar,
    Source, TableInfo, Target, TargetColumn, Transform,
};
use serde::{Deserialize, Serialize};

use crate::partition::plan_ranges;

/// Below this many rows per range, another range costs more in queries than it gains in parallelism.
pub const MIN_ROWS_PER_RANGE: u64 = 50_000;
/// Without `--partitions`, plan this many ranges per worker so that a slow range does not leave
/// the other workers idle at the end of a table.
pub const RANGES_PER_WORKER: usize = 4;

/// What to do when a target table already holds rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfExists {
    /// Stop before writing anything (the default).
    #[default]
    Fail,
    /// Delete the target's rows first.
    Truncate,
    /// Add to the rows already there.
    Append,
}

/// Builds a table's transform once the source table is described.
pub type CompileTransform = Arc<dyn Fn(&TableInfo) -> Result<Arc<dyn Transform>> + Send + Sync>;

/// One table to copy, and how.
#[derive(Clone, Default)]
pub struct TableRequest {
    pub source: String,
    /// The target table's name (default: the source's).
    pub target: Option<String>,
    /// Columns identifying rows, overriding the source's primary key.
    pub key: Option<Vec<String>>,
    /// A row filter in the source's SQL, pushed down to every read.
    pub filter: Option<String>,
    pub transform: Option<CompileTransform>,
    pub conflict: Conflict,
    pub budget: Budget,
    /// Ranges for this table (overrides the request's).
    pub partitions: Option<usize>,
    /// Incremental: the watermark column, whose current largest value the run records once the
    /// table is committed.
    pub watermark: Option<String>,
    /// Incremental: read only rows whose watermark is at least this (the last run's mark, less
    /// the lookback).
    pub since: Option<Scalar>,
    /// Delete target rows whose key is gone from the source (found through range digests).
    pub detect_deletes: bool,
}

impl TableRequest {
    /// A table copied as is.
    pub fn named(name: impl Into<String>) -> Self {
        TableRequest { source: name.into(), ..TableRequest::default() }
    }
}

impl std::fmt::Debug for TableRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRequest")
            .field("source", &self.source)
            .field("target", &self.target)
            .field("key", &self.key)
            .field("filter", &self.filter)
            .field("transform", &self.transform.is_some())
            .field("conflict", &self.conflict)
            .field("budget", &self.budget)
            .field("watermark", &self.watermark)
            .field("since", &self.since)
            .finish()
    }
}

/// What the user asked to copy.
#[derive(Clone, Debug, Default)]
pub struct CopyRequest {
    /// Tables to copy; empty means every table of the source, as is, with `conflict` and `budget`.
    pub tables: Vec<TableRequest>,
    pub conflict: Conflict,
    pub budget: Budget,
    /// Ranges per table; `None` picks from the table size and the worker count.
    pub partitions: Option<usize>,
    pub workers: usize,
    /// Copy about this many rows of each table: whole key ranges spread over the key space (a
    /// benchmark's representative sample), not the first rows.
    pub sample_rows: Option<u64>,
    /// With `tables` empty: source tables to leave out, by name or `*`/`?` pattern.
    pub exclude: Vec<String>,
    /// A table that cannot be planned (a column type without a mapping) is set aside as failed
    /// and the others are copied, when more than one is asked for (`copy` without --fail-fast).
    pub isolate: bool,
    /// A table without a primary key (and without a `key` asked for) is keyed by its first
    /// unique index over NOT NULL columns, when it has one (`sync` applies changes by key).
    pub unique_key: bool,
}

/// A table set aside while planning: it cannot be copied, the others are.
#[derive(Clone, Debug, Serialize)]
pub struct TableFailure {
    pub table: String,
    pub target_table: String,
    pub kind: String,
    pub message: String,
    pub column: Option<String>,
    /// Fixable input (exit 2 when every table failed so).
    pub usage: bool,
}

impl TableFailure {
    pub fn new(table: &str, target_table: &str, error: &Error) -> Self {
        TableFailure {
            table: table.into(),
            target_table: target_table.into(),
            kind: error.kind().into(),
            message: error.to_string(),
            column: error.table_column().1.map(str::to_string),
            usage: error.is_usage(),
        }
    }
}

/// Whether a table name matches one of `patterns` (`*` any run of characters, `?` one, the rest
/// literal and the whole name matched).
pub fn excluded(patterns: &[String]) -> Result<impl Fn(&str) -> bool + use<>> {
    let regexes = patterns
        .iter()
        .map(|p| {
            let body = regex::escape(p).replace("\\*", ".*").replace("\\?", ".");
            regex::Regex::new(&format!("^(?:{body})$"))
                .map_err(|e| Error::Config(format!("--exclude {p}: not a pattern ({e})")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(move |name: &str| regexes.iter().any(|r| r.is_match(name)))
}

/// The columns of `table`'s first unique index whose columns are all NOT NULL: a key.
fn unique_not_null_key(table: &TableInfo) -> Option<Vec<usize>> {
    table.indexes.iter().filter(|index| index.unique && !index.columns.is_empty()).find_map(|index| {
        index
            .columns
            .iter()
            .map(|c| table.schema.index_of(c).ok().filter(|&i| !table.schema.field(i).is_nullable()))
            .collect()
    })
}

/// Whether planning sets a table aside for this error instead of stopping: a type the mapping
/// does not have, on either side, is that table's alone.
fn isolates(error: &Error) -> bool {
    matches!(error, Error::UnsupportedType { .. })
}

/// Ranges a table is cut into before a sample picks some of them.
pub const SAMPLE_RANGES: usize = 64;

/// About `rows` rows of a table estimated at `estimated` rows planned as `ranges`: every
/// k-th range, spread over the key space, renumbered from 0.
pub fn sample_ranges(ranges: Vec<KeyRange>, estimated: u64, rows: u64) -> Vec<KeyRange> {
    let count = ranges.len().max(1) as u64;
    let per_range = (estimated / count).max(1);
    let wanted = rows.div_ceil(per_range).clamp(1, count) as usize;
    if wanted >= ranges.len() {
        return ranges;
    }
    let step = ranges.len() as f64 / wanted as f64;
    (0..wanted)
        .map(|i| ranges[(i as f64 * step + step / 2.0) as usize].clone())
        .enumerate()
        .map(|(id, range)| KeyRange { id, ..range })
        .collect()
}

/// One source table with its key ranges.
#[derive(Clone, Debug)]
pub struct SourceTablePlan {
    /// The table as it is read (with the request's key override and row filter).
    pub source: TableInfo,
    /// The table as it lands: the transform's output schema and the key columns' places in it
    /// (the same as `source` without a transform). Hashing and verification see this shape.
    pub output: TableInfo,
    pub transform: Option<Arc<dyn Transform>>,
    pub target_table: String,
    pub conflict: Conflict,
    pub budget: Budget,
    pub ranges: Vec<KeyRange>,
    pub incremental: Option<Incremental>,
}

/// An incremental table: what this run reads and the watermark it records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incremental {
    pub column: String,
    /// Rows with the watermark at least this were read (`None`: the first run reads everything).
    pub since: Option<Scalar>,
    /// The watermark's largest value when the run planned the table, recorded once it committed.
    pub until: Option<Scalar>,
    pub detect_deletes: bool,
}

/// The source half of a plan.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    pub tables: Vec<SourceTablePlan>,
    /// Tables set aside (see [`CopyRequest::isolate`]).
    pub failed: Vec<TableFailure>,
    /// Whether the target half sets tables aside too.
    pub isolate: bool,
    /// What the plan already knows will not reach the target (a pipeline's index over a dropped
    /// column).
    pub not_migrated: Vec<NotMigrated>,
}

/// Describes and partitions the requested source tables. Touches only the source.
pub fn plan_sources(source: &dyn Source, request: &CopyRequest) -> Result<SourcePlan> {
    let requests = if request.tables.is_empty() {
        let every =
            |name| TableRequest { conflict: request.conflict, budget: request.budget, ..TableRequest::named(name) };
        let names = source.list_tables()?;
        if names.is_empty() {
            // Nothing to copy proves nothing: most often a mistyped schema or database.
            let elsewhere = source.namespaces_with_tables()?;
            let hint = if elsewhere.is_empty() {
                String::new()
            } else {
                format!("; these have tables: {}", elsewhere.join(", "))
            };
            return Err(Error::Config(format!(
                "the source {} has no tables, so there is nothing to copy{hint}",
                source.display_name()
            )));
        }
        let excluded = excluded(&request.exclude)?;
        let kept: Vec<String> = names.iter().filter(|n| !excluded(n)).cloned().collect();
        if kept.is_empty() {
            return Err(Error::Config(format!(
                "--exclude {} leaves none of the source's {} table(s) to copy",
                request.exclude.join(", "),
                names.len()
            )));
        }
        kept.into_iter().map(every).collect()
    } else {
        let mut requests = request.tables.clone();
        requests.dedup_by(|a, b| a.source == b.source && a.target == b.target);
        requests
    };
    let mut tables = Vec::with_capacity(requests.len());
    let isolate = request.isolate && requests.len() > 1;
    let mut failed = Vec::new();
    let mut not_migrated = Vec::new();
    for table_request in requests {
        let name = table_request.source.clone();
        let mut table = match source.table(&name) {
            Ok(table) => table,
            Err(error) if isolate && isolates(&error) => {
                tracing::error!("table `{name}` cannot be copied: {error}; going on with the other tables");
                failed.push(TableFailure::new(&name, table_request.target.as_deref().unwrap_or(&name), &error));
                continue;
            }
            Err(error) => return Err(error),
        };
        if let Some(key) = &table_request.key {
            let columns = key
                .iter()
                .map(|k| {
                    table.schema.index_of(k).map_err(|_| Error::UnknownColumn {
                        side: "source",
                        table: name.clone(),
                        column: k.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            table.key = KeySpec::Primary(columns);
        } else if request.unique_key
            && !table.key.is_primary()
            && let Some(columns) = unique_not_null_key(&table)
        {
            tracing::info!(table = %name, "no primary key: keyed by a unique index over NOT NULL columns");
            table.key = KeySpec::Primary(columns);
        }
        table.filter = table_request.filter.clone();
        // The first statements that apply a `where` are the planner's: one the source refuses is
        // input to fix, said before anything runs.
        let refused_filter = |error: Error| match (&table.filter, error) {
            (Some(filter), Error::Engine { message, .. }) => {
                Error::Config(format!("table `{name}`: the source refuses `where = \"{filter}\"`: {message}"))
            }
            (_, error) => error,
        };
        if table.filter.is_some() {
            source.check_filter(&table).map_err(refused_filter)?;
        }
        let incremental = match &table_request.watermark {
            Some(column) => {
                if table.schema.index_of(column).is_err() {
                    return Err(Error::UnknownColumn { side: "source", table: name.clone(), column: column.clone() });
                }
                if !table.key.is_primary() {
                    return Err(Error::Config(format!(
                        "table `{name}` is incremental but has no key to upsert by: set `key`"
                    )));
                }
                let until = source.column_max(&table, column).map_err(refused_filter)?;
                table.window = table_request.since.clone().map(|since| (column.clone(), since));
                Some(Incremental {
                    column: column.clone(),
                    since: table_request.since.clone(),
                    until,
                    detect_deletes: table_request.detect_deletes,
                })
            }
            None => None,
        };
        let parts = match request.sample_rows {
            Some(_) => SAMPLE_RANGES,
            None => table_request
                .partitions
                .or(request.partitions)
                .unwrap_or_else(|| auto_partitions(table.estimated_rows, request.workers)),
        };
        match &table.key {
            KeySpec::Primary(_) => {}
            KeySpec::Locator(locator) => tracing::warn!(
                "table `{name}` has no primary key: reading it by {locator} ranges, verifying it as one multiset of rows"
            ),
            KeySpec::None => tracing::warn!("table `{name}` has no primary key: copying it as one range"),
        }
        let mut ranges = plan_ranges(source, &table, &KeyRange::all(), parts).map_err(refused_filter)?;
        if let Some(rows) = request.sample_rows {
            ranges = sample_ranges(ranges, table.estimated_rows, rows);
        }
        let transform = table_request.transform.as_ref().map(|compile| compile(&table)).transpose()?;
        let output = match &transform {
            Some(transform) => output_table(&table, transform.as_ref(), &mut not_migrated)?,
            None => table.clone(),
        };
        tables.push(SourceTablePlan {
            target_table: table_request.target.clone().unwrap_or_else(|| name.clone()),
            source: table,
            output,
            transform,
            conflict: table_request.conflict,
            budget: table_request.budget,
            ranges,
            incremental,
        });
    }
    map_references(&mut tables, &mut not_migrated);
    Ok(SourcePlan { tables, failed, isolate, not_migrated })
}

/// The table as a transform delivers it. Key columns must reach the output unchanged (renaming is
/// fine): ranges, digests and reject files identify rows by them.
fn output_table(
    table: &TableInfo,
    transform: &dyn Transform,
    not_migrated: &mut Vec<NotMigrated>,
) -> Result<TableInfo> {
    let key = match &table.key {
        KeySpec::Primary(columns) => KeySpec::Primary(
            columns
                .iter()
                .map(|&c| {
                    transform.passthrough(c).ok_or_else(|| {
                        Error::Config(format!(
                            "table `{}`: key column `{}` must reach the target unchanged (it may be renamed, not \
                             dropped or computed)",
                            table.name,
                            table.schema.field(c).name()
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        ),
        // Rows without a key are compared as a multiset; the locator is not a column.
        other => other.clone(),
    };
    // Indexes and foreign keys whose columns all reach the target unchanged (renamed or not)
    // follow their columns; the others are listed. Foreign keys' referenced side is mapped once
    // every table is planned (see `map_references`).
    let output = transform.output_schema();
    let renamed = |columns: &[String]| -> Option<Vec<String>> {
        columns
            .iter()
            .map(|c| Some(output.field(transform.passthrough(table.schema.index_of(c).ok()?)?).name().clone()))
            .collect()
    };
    let why = "its columns do not all reach the target unchanged (the pipeline drops or computes one)";
    let mut indexes = Vec::new();
    for index in &table.indexes {
        match renamed(&index.columns) {
            Some(columns) => indexes.push(IndexInfo { columns, ..index.clone() }),
            None => not_migrated.push(NotMigrated::new("index", format!("{}.{}", table.name, index.name), why)),
        }
    }
    let mut foreign_keys = Vec::new();
    for fk in &table.foreign_keys {
        match renamed(&fk.columns) {
            Some(columns) => foreign_keys.push(ForeignKeyInfo { columns, ..fk.clone() }),
            None => not_migrated.push(NotMigrated::new("foreign key", fk_label(&table.name, fk), why)),
        }
    }
    Ok(TableInfo {
        name: table.name.clone(),
        schema: output,
        key,
        estimated_rows: table.estimated_rows,
        indexes,
        foreign_keys,
        checks: Vec::new(),
        sql_indexes: Vec::new(),
        comment: None,
        filter: None,
        window: None,
    })
}

/// A foreign key as plans list it: `child(a, b) → parent(x, y)`.
fn fk_label(table: &str, fk: &ForeignKeyInfo) -> String {
    format!("{table}({}) → {}({})", fk.columns.join(", "), fk.ref_table, fk.ref_columns.join(", "))
}

/// Points each table's foreign keys at what the tables they reference become in this plan: the
/// referenced table's target name and its key columns as its transform names them. A key whose
/// referenced columns do not all reach the target unchanged is listed instead. A referenced table
/// the plan does not copy keeps its name (the copy checks that the target has it).
fn map_references(tables: &mut [SourceTablePlan], not_migrated: &mut Vec<NotMigrated>) {
    let mapped: Vec<Vec<Option<ForeignKeyInfo>>> = tables
        .iter()
        .map(|t| {
            t.output
                .foreign_keys
                .iter()
                .map(|fk| {
                    let Some(parent) = tables.iter().find(|p| p.source.name == fk.ref_table) else {
                        return Some(fk.clone());
                    };
                    let ref_columns = fk
                        .ref_columns
                        .iter()
                        .map(|c| {
                            let i = parent.source.schema.index_of(c).ok()?;
                            let o = match &parent.transform {
                                Some(transform) => transform.passthrough(i)?,
                                None => i,
                            };
                            Some(parent.output.schema.field(o).name().clone())
                        })
                        .collect::<Option<Vec<_>>>()?;
                    Some(ForeignKeyInfo { ref_table: parent.target_table.clone(), ref_columns, ..fk.clone() })
                })
                .collect()
        })
        .collect();
    for (table, keys) in tables.iter_mut().zip(mapped) {
        let before = std::mem::take(&mut table.output.foreign_keys);
        for (fk, kept) in before.into_iter().zip(keys) {
            match kept {
                Some(fk) => table.output.foreign_keys.push(fk),
                None => not_migrated.push(NotMigrated::new(
                    "foreign key",
                    fk_label(&table.source.name, &fk),
                    "the columns it references do not all reach the target unchanged (the pipeline drops or \
                     computes one)",
                )),
            }
        }
    }
}

fn auto_partitions(rows: u64, workers: usize) -> usize {
    let by_size = usize::try_from(rows / MIN_ROWS_PER_RANGE).unwrap_or(usize::MAX);
    by_size.clamp(1, workers.max(1) * RANGES_PER_WORKER)
}

/// What happens to the target table before rows arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableAction {
    Create,
    Truncate,
    Append,
}

/// How one source column lands in the target.
#[derive(Clone, Debug)]
pub struct ColumnPlan {
    pub field: Field,
    pub target: TargetColumn,
    pub fidelity: Fidelity,
}

/// Everything the runtime needs to copy one table.
#[derive(Clone, Debug)]
pub struct TablePlan {
    /// The table as read (see [`SourceTablePlan::source`]).
    pub source: TableInfo,
    /// The table as it lands (see [`SourceTablePlan::output`]).
    pub output: TableInfo,
    pub transform: Option<Arc<dyn Transform>>,
    pub target_table: String,
    pub action: TableAction,
    /// One per column of `output`, in order.
    pub columns: Vec<ColumnPlan>,
    pub ranges: Vec<KeyRange>,
    pub conflict: Conflict,
    pub budget: Budget,
    pub incremental: Option<Incremental>,
}

/// How the target's schema is made.
#[derive(Clone, Debug)]
pub enum SchemaPlan {
    /// Restored from the source engine's own dump, exactly (same engine, every table created).
    Exact(Arc<dyn DumpedSchema>),
    /// Built by barge from each table's description, translated for the target's engine;
    /// `why_not_exact` says, for a same-engine copy, why the engine's own dump is not used.
    Translated { why_not_exact: Option<String> },
}

impl SchemaPlan {
    /// The dump to restore, for an exact schema.
    pub fn dump(&self) -> Option<&dyn DumpedSchema> {
        match self {
            SchemaPlan::Exact(dump) => Some(dump.as_ref()),
            SchemaPlan::Translated { .. } => None,
        }
    }
}

/// A validated copy plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
    /// Tables set aside while planning: reported as failed, the others copied.
    pub failed: Vec<TableFailure>,
    pub schema: SchemaPlan,
    /// Source objects the target will not have, with the reason.
    pub not_migrated: Vec<NotMigrated>,
    /// Views of a whole database copied with barge's own DDL, created after the rows when the
    /// target takes their SQL (listed as not migrated when it does not).
    pub views: Vec<barge_core::ViewDef>,
}

/// Checks every table against the target and decides each table's action. Writes nothing: a
/// non-empty target under [`IfExists::Fail`], a missing column or an impossible type mapping fails
/// here, for all tables, before the first row moves.
pub fn plan_targets(target: &dyn Target, sources: SourcePlan, if_exists: IfExists) -> Result<Plan> {
    let mut tables = Vec::with_capacity(sources.tables.len());
    let mut failed = sources.failed;
    for SourceTablePlan { source, output, transform, target_table, conflict, budget, ranges, incremental } in
        sources.tables
    {
        let name = target_table.clone();
        // Appending: whether the table exists is all that matters (no count of a large table).
        let rows = match if_exists {
            IfExists::Append => target.table_exists(&name)?.then_some(0),
            _ => target.table_rows(&name)?,
        };
        let action = match (rows, if_exists) {
            (None, _) => TableAction::Create,
            (Some(0), _) | (Some(_), IfExists::Append) => TableAction::Append,
            (Some(_), IfExists::Truncate) => TableAction::Truncate,
            (Some(rows), IfExists::Fail) => {
                let fix = "use --if-exists truncate or append".into();
                return Err(Error::TargetNotEmpty { table: name, rows, fix });
            }
        };
        if action != TableAction::Create {
            let existing = target.table_columns(&name)?;
            if let Some(missing) = output.schema.fields().iter().find(|f| !existing.contains(f.name())) {
                return Err(Error::UnknownColumn { side: "target", table: name, column: missing.name().clone() });
            }
            let filled = |column: &String| output.schema.fields().iter().any(|f| f.name() == column);
            if let Some(column) = target.required_columns(&name)?.into_iter().find(|c| !filled(c)) {
                return Err(Error::UnfilledColumn { table: name, column });
            }
        }
        if conflict != Conflict::Error && !output.key.is_primary() {
            return Err(Error::Config(format!(
                "table `{name}`: conflict mode {conflict:?} needs key columns (the source has no primary key; set `key`)"
            )));
        }
        let columns = match target_columns(target, &name, &output) {
            Ok(columns) => columns,
            Err(error) if sources.isolate && isolates(&error) => {
                tracing::error!("table `{name}` cannot be copied: {error}; going on with the other tables");
                failed.push(TableFailure::new(&source.name, &name, &error));
                continue;
            }
            Err(error) => return Err(error),
        };
        tables.push(TablePlan {
            target_table,
            source,
            output,
            transform,
            action,
            columns,
            ranges,
            conflict,
            budget,
            incremental,
        });
    }
    Ok(Plan {
        tables,
        failed,
        schema: SchemaPlan::Translated { why_not_exact: None },
        not_migrated: sources.not_migrated,
        views: Vec::new(),
    })
}

/// The target column of every field of `output`, with its fidelity; an impossible one is an error.
fn target_columns(target: &dyn Target, name: &str, output: &TableInfo) -> Result<Vec<ColumnPlan>> {
    let mut columns = Vec::with_capacity(output.schema.fields().len());
    for field in output.schema.fields() {
        let column = target.column_for(name, field)?;
        let fidelity = fidelity(field.data_type(), &column.read_back);
        match &fidelity {
            Fidelity::Exact => {}
            Fidelity::Lossy(why) => tracing::warn!(
                "table `{name}`, column `{}`: {} → {} is lossy: {why}",
                field.name(),
                field.data_type(),
                column.native_type
            ),
            Fidelity::Impossible => {
                return Err(Error::UnsupportedType {
                    table: name.into(),
                    column: field.name().clone(),
                    type_name: field.data_type().to_string(),
                    reason: Some(format!("no mapping to a {} column", column.native_type)),
                });
            }
        }
        columns.push(ColumnPlan { field: field.as_ref().clone(), target: column, fidelity });
    }
    Ok(columns)
}

/// How a copy made the target's schema.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaReport {
    /// `exact` (the source engine's own dump, restored) or `translated` (built by barge).
    pub mode: String,
    /// For a same-engine copy built by barge: why the engine's dump was not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not_exact: Option<String>,
    /// Exact schemas: every object restored, by kind and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<barge_core::SchemaObject>,
}

impl SchemaReport {
    pub fn of(plan: &SchemaPlan) -> Self {
        match plan {
            SchemaPlan::Exact(dump) => {
                SchemaReport { mode: "exact".into(), why_not_exact: None, objects: dump.objects() }
            }
            SchemaPlan::Translated { why_not_exact } => {
                SchemaReport { mode: "translated".into(), why_not_exact: why_not_exact.clone(), objects: Vec::new() }
            }
        }
    }

    /// `12 objects: 3 table, 2 index, …` in restore order of first appearance.
    pub fn counts(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for object in &self.objects {
            match counts.iter_mut().find(|(kind, _)| *kind == object.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((&object.kind, 1)),
            }
        }
        counts.iter().map(|(kind, n)| format!("{n} {kind}")).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_match_whole_names_with_star_and_question_mark() {
        let left_out = excluded(&["audit_*".into(), "t?".into(), "a.b".into()]).unwrap();
        for name in ["audit_", "audit_2024", "t1", "a.b"] {
            assert!(left_out(name), "{name}");
        }
        for name in ["my_audit_x", "t12", "t", "axb", "AUDIT_x"] {
            assert!(!left_out(name), "{name}");
        }
        assert!(!excluded(&[]).unwrap()("anything"));
    }

    #[test]
    fn samples_take_whole_ranges_spread_over_the_key_space() {
        let ranges: Vec<KeyRange> = (0..64)
            .map(|i| KeyRange { id: i, lo: Some(vec![barge_core::Scalar::Int(i as i64 * 100)]), hi: None })
            .collect();
        // 6,400 rows in 64 ranges of 100: 300 rows are 3 ranges, one in each third.
        let sample = sample_ranges(ranges.clone(), 6_400, 300);
        let starts: Vec<_> = sample.iter().map(|r| r.lo.clone().unwrap()[0].clone()).collect();
        assert_eq!(starts, [10, 32, 53].map(|i| barge_core::Scalar::Int(i * 100)));
        assert_eq!(sample.iter().map(|r| r.id).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(sample_ranges(ranges.clone(), 6_400, 1_000_000).len(), 64);
        assert_eq!(sample_ranges(ranges, 6_400, 1).len(), 1);
    }

    #[test]
    fn small_tables_get_one_range_and_large_ones_several_per_worker() {
        assert_eq!(auto_partitions(0, 2), 1);
        assert_eq!(auto_partitions(120_000, 2), 2);
        assert_eq!(auto_partitions(10_000_000, 2), 8);
    }
}
