//! The copy plan, built in two phases so that bad input fails before anything is written:
//! [`plan_sources`] needs only the source; [`plan_targets`] opens the target but writes nothing.

use arrow_schema::Field;
use barge_core::types::{Fidelity, fidelity};
use barge_core::{Error, KeyRange, KeySpec, Result, Source, TableInfo, Target, TargetColumn};
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

/// What the user asked to copy.
#[derive(Clone, Debug, Default)]
pub struct CopyRequest {
    /// Tables to copy; empty means every table of the source.
    pub tables: Vec<String>,
    /// Ranges per table; `None` picks from the table size and the worker count.
    pub partitions: Option<usize>,
    pub workers: usize,
}

/// One source table with its key ranges.
#[derive(Clone, Debug)]
pub struct SourceTablePlan {
    pub source: TableInfo,
    pub ranges: Vec<KeyRange>,
}

/// The source half of a plan.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    pub tables: Vec<SourceTablePlan>,
}

/// Describes and partitions the requested source tables. Touches only the source.
pub fn plan_sources(source: &dyn Source, request: &CopyRequest) -> Result<SourcePlan> {
    let names = if request.tables.is_empty() {
        source.list_tables()?
    } else {
        let mut names = request.tables.clone();
        names.dedup();
        names
    };
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let table = source.table(&name)?;
        let parts = request.partitions.unwrap_or_else(|| auto_partitions(table.estimated_rows, request.workers));
        match &table.key {
            KeySpec::Primary(_) => {}
            KeySpec::Locator(locator) => tracing::warn!(
                "table `{name}` has no primary key: reading it by {locator} ranges, verifying it as one multiset of rows"
            ),
            KeySpec::None => tracing::warn!("table `{name}` has no primary key: copying it as one range"),
        }
        let ranges = plan_ranges(source, &table, &KeyRange::all(), parts)?;
        tables.push(SourceTablePlan { source: table, ranges });
    }
    Ok(SourcePlan { tables })
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
    pub source: TableInfo,
    pub target_table: String,
    pub action: TableAction,
    pub columns: Vec<ColumnPlan>,
    pub ranges: Vec<KeyRange>,
}

/// A validated copy plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
}

/// Checks every table against the target and decides each table's action. Writes nothing: a
/// non-empty target under [`IfExists::Fail`], a missing column or an impossible type mapping fails
/// here, for all tables, before the first row moves.
pub fn plan_targets(target: &dyn Target, sources: SourcePlan, if_exists: IfExists) -> Result<Plan> {
    let mut tables = Vec::with_capacity(sources.tables.len());
    for SourceTablePlan { source, ranges } in sources.tables {
        let name = source.name.clone();
        let action = match (target.table_rows(&name)?, if_exists) {
            (None, _) => TableAction::Create,
            (Some(0), _) | (Some(_), IfExists::Append) => TableAction::Append,
            (Some(_), IfExists::Truncate) => TableAction::Truncate,
            (Some(rows), IfExists::Fail) => return Err(Error::TargetNotEmpty { table: name, rows }),
        };
        if action != TableAction::Create {
            let existing = target.table_columns(&name)?;
            if let Some(missing) = source.schema.fields().iter().find(|f| !existing.contains(f.name())) {
                return Err(Error::UnknownColumn { table: name, column: missing.name().clone() });
            }
        }
        let mut columns = Vec::with_capacity(source.schema.fields().len());
        for field in source.schema.fields() {
            let column = target.column_for(&name, field)?;
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
                        table: name,
                        column: field.name().clone(),
                        type_name: field.data_type().to_string(),
                        reason: Some(format!("no mapping to a {} column", column.native_type)),
                    });
                }
            }
            columns.push(ColumnPlan { field: field.as_ref().clone(), target: column, fidelity });
        }
        tables.push(TablePlan { target_table: name, source, action, columns, ranges });
    }
    Ok(Plan { tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_get_one_range_and_large_ones_several_per_worker() {
        assert_eq!(auto_partitions(0, 2), 1);
        assert_eq!(auto_partitions(120_000, 2), 2);
        assert_eq!(auto_partitions(10_000_000, 2), 8);
    }
}
