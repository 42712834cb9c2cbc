//! Before the first row moves: each table's ranges (as planned now, or as the interrupted run
//! planned them), the capabilities the run needs, and the target tables created or emptied.

use barge_core::{Conflict, Error, KeyRange, RestoreStep, Result, SchemaRestore, Target};
use barge_plan::{Plan, TableAction};

use crate::ExecOptions;

/// Each table's ranges, and whether barge created it (it then gets its indexes at the end).
pub(crate) struct Layout {
    pub ranges: Vec<KeyRange>,
    pub created: bool,
}

fn action_name(action: TableAction) -> &'static str {
    match action {
        TableAction::Create => "create",
        TableAction::Truncate => "truncate",
        TableAction::Append => "append",
    }
}

/// The layout of every table, recording newly planned tables in the ledger.
pub(crate) fn layouts(plan: &Plan, options: &ExecOptions) -> Result<Vec<Layout>> {
    let mut layouts = Vec::with_capacity(plan.tables.len());
    for table in &plan.tables {
        let name = &table.source.name;
        let planned = Layout { ranges: table.ranges.clone(), created: table.action == TableAction::Create };
        let Some(ledger) = &options.ledger else {
            layouts.push(planned);
            continue;
        };
        // A table the interrupted run did not get to plan had nothing written: planned afresh.
        match ledger.earlier(name) {
            Some(earlier) => {
                // (Nothing is cleared when every range is committed: only the finish is left.)
                let clears = earlier.done.len() < earlier.ranges.len();
                if earlier.action == "append" && table.conflict == Conflict::Error && !earlier.finished && clears {
                    return Err(Error::Config(format!(
                        "cannot resume table `{name}`: it was appended to, so ranges cannot be cleared and reloaded; \
                         set conflict = \"upsert\" (or \"skip\") for it, or run without --resume"
                    )));
                }
                layouts.push(Layout { ranges: earlier.ranges.clone(), created: earlier.action == "create" });
            }
            None => {
                ledger.plan_table(name, action_name(table.action), &table.ranges)?;
                layouts.push(planned);
            }
        }
    }
    Ok(layouts)
}

/// The target's restore of an exact schema (planned only for targets that have it).
pub(crate) fn restorer(target: &dyn Target) -> Result<&dyn SchemaRestore> {
    target.schema_restore().ok_or_else(|| Error::unsupported(target.display_name(), "restore a schema dump"))
}

/// Refuses, before anything is written, a run that needs a capability the target lacks.
pub(crate) fn check_capabilities(target: &dyn Target, plan: &Plan, options: &ExecOptions) -> Result<()> {
    if options.foreign_keys && target.schema_objects().is_none() {
        return Err(Error::unsupported(target.display_name(), "create foreign keys (--foreign-keys)"));
    }
    let detects = plan.tables.iter().any(|t| t.incremental.as_ref().is_some_and(|i| i.detect_deletes));
    if detects && target.key_deletes().is_none() {
        return Err(Error::unsupported(target.display_name(), "delete rows by key (--detect-deletes)"));
    }
    Ok(())
}

/// Creates or empties the target tables as planned: an exact schema restores the source's own
/// dump of its types, functions and tables (in one transaction) instead of barge's DDL. Returns,
/// per table, the error of a CREATE or TRUNCATE the target refused: that table fails alone
/// (unless `fail_fast`, when the first such error is the run's).
/// `resumed`: the ledger holds the run this one continues, which made the tables already (a
/// distributed run's coordinator, once its workers copied every range).
pub(crate) fn prepare_targets(
    target: &dyn Target,
    plan: &Plan,
    fail_fast: bool,
    resumed: bool,
) -> Result<Vec<Option<Error>>> {
    if let Some(dump) = plan.schema.dump().filter(|_| !resumed) {
        restorer(target)?.restore(dump, RestoreStep::Tables)?;
    }
    // Tables emptied together first (keys between them would refuse one alone); if the target
    // refuses that, each is emptied alone below, and one it refuses fails alone.
    let emptied: Vec<String> =
        plan.tables.iter().filter(|t| t.action == TableAction::Truncate).map(|t| t.target_table.clone()).collect();
    let together = !emptied.is_empty() && target.truncate_tables(&emptied).is_ok();
    let mut refused = Vec::with_capacity(plan.tables.len());
    for table in &plan.tables {
        let prepared = match table.action {
            TableAction::Create if plan.schema.dump().is_some() => Ok(()),
            TableAction::Create => {
                let columns: Vec<_> = table.columns.iter().map(|c| (c.field.clone(), c.target.clone())).collect();
                let key: Vec<String> = table.output.key_columns().into_iter().map(str::to_string).collect();
                target.create_table(&table.target_table, &columns, &key).and_then(|()| {
                    match (&table.output.comment, target.keeps_comments()) {
                        (Some(comment), true) => target.comment_table(&table.target_table, comment),
                        _ => Ok(()),
                    }
                })
            }
            TableAction::Truncate if together => Ok(()),
            TableAction::Truncate => target.truncate_table(&table.target_table),
            TableAction::Append => Ok(()),
        };
        match prepared {
            Ok(()) => refused.push(None),
            Err(error) if !fail_fast && !matches!(error, Error::Transient { .. }) => {
                tracing::error!("table `{}`: the target refused to prepare it: {error}", table.target_table);
                refused.push(Some(error));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(refused)
}
