//! The one preflight `copy`, `plan` and `run` share: resolve both URLs to engines, check them,
//! refuse a copy of a database onto itself, open the source, plan its tables, then open the
//! target and plan what lands there. Writes nothing.

use std::sync::Arc;

use barge_core::{EngineFactory, Error, NotMigrated, Registry, Result, Source, Target};

use crate::plan::{CopyRequest, IfExists, Plan, SchemaPlan, TableAction, plan_sources, plan_targets};

/// A validated copy: both databases open, the plan made, nothing written.
pub struct Preflight {
    pub source_engine: &'static dyn EngineFactory,
    pub target_engine: &'static dyn EngineFactory,
    pub source: Arc<dyn Source>,
    pub target: Arc<dyn Target>,
    /// The target URL, to open it for reading when verification needs it.
    pub target_url: String,
    pub plan: Plan,
}

impl std::fmt::Debug for Preflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preflight")
            .field("source", &self.source.display_name())
            .field("target", &self.target.display_name())
            .field("tables", &self.plan.tables.len())
            .finish()
    }
}

impl Preflight {
    /// Opens the target for reading (verification's reader).
    pub fn open_target_reader(&self) -> Result<Arc<dyn Source>> {
        self.target_engine.open_source(&self.target_url)
    }
}

/// The engines of `from` and `to`, both URLs checked, and the two refused when they name the
/// same database.
pub fn engines(
    registry: &Registry,
    from: &str,
    to: &str,
) -> Result<(&'static dyn EngineFactory, &'static dyn EngineFactory)> {
    let source_engine = registry.for_url(from)?;
    let target_engine = registry.for_url(to)?;
    source_engine.check_url(from)?;
    target_engine.check_url(to)?;
    if source_engine.name() == target_engine.name() && source_engine.same_database(from, to) {
        return Err(Error::Config("source and target are the same database".into()));
    }
    Ok((source_engine, target_engine))
}

/// Refuses, before anything is written, a copy whose target tables are its source tables: the
/// same database reached through another spelling of its URL (`localhost` for `127.0.0.1`, a
/// symlink, another parameter), asked by identity rather than compared as text.
pub fn check_not_itself(source: &dyn Source, target: &dyn Target, plan: &Plan) -> Result<()> {
    let (Some(source_id), Some(target_id)) = (source.identity()?, target.identity()?) else { return Ok(()) };
    if source_id != target_id {
        return Ok(());
    }
    match plan.tables.iter().find(|t| t.target_table == t.source.name) {
        Some(table) => Err(Error::Config(format!(
            "source and target are the same database ({source_id}): table `{}` would be copied onto itself; \
             nothing was written",
            table.target_table
        ))),
        None => Ok(()),
    }
}

/// What barge's own DDL leaves out of created tables: defaults it does not translate, MySQL's
/// `ON UPDATE` clauses, and what a target column cannot keep of its type.
fn untranslated(plan: &Plan, target: String, keeps_comments: bool) -> Vec<NotMigrated> {
    let mut lost = Vec::new();
    for table in plan.tables.iter().filter(|t| t.action == TableAction::Create) {
        if !keeps_comments {
            let why = format!("{target} has no comments");
            if table.output.comment.is_some() {
                lost.push(NotMigrated::new("comment", format!("on table {}", table.target_table), why.clone()));
            }
            for field in
                table.output.schema.fields().iter().filter(|f| f.metadata().contains_key(barge_core::META_COMMENT))
            {
                let name = format!("on column {}.{}", table.target_table, field.name());
                lost.push(NotMigrated::new("comment", name, why.clone()));
            }
        }
        for column in &table.columns {
            if let Some(note) = &column.target.note {
                let name = format!("{}.{}", table.target_table, column.field.name());
                lost.push(NotMigrated::new("column type", name, note.clone()));
            }
        }
        for field in table.output.schema.fields() {
            let name = format!("{}.{}", table.target_table, field.name());
            if let Some(expression) = field.metadata().get(barge_core::META_DEFAULT_UNTRANSLATED) {
                lost.push(NotMigrated::new(
                    "default",
                    name.clone(),
                    format!("`{expression}` is not an expression barge translates; the column has no default"),
                ));
            }
            if let Some(expression) = field.metadata().get(barge_core::META_ON_UPDATE) {
                lost.push(NotMigrated::new(
                    "on update",
                    name,
                    format!("`ON UPDATE {expression}` has no column-level counterpart in {target}"),
                ));
            }
        }
    }
    lost
}

/// How the target's schema is made: a same-engine copy of every table of the source into a target
/// that has none of them takes the engine's own dump (exact); anything else is built by barge.
/// Dumping reads the source's catalogs only; a target that lacks what the dump needs (an
/// extension) is refused here, before anything is written.
pub fn plan_schema(
    source: &dyn Source,
    target: &dyn Target,
    plan: &Plan,
    same_engine: bool,
    every_table: bool,
) -> Result<SchemaPlan> {
    let translated = |why: &str| Ok(SchemaPlan::Translated { why_not_exact: Some(why.to_string()) });
    if !same_engine {
        return Ok(SchemaPlan::Translated { why_not_exact: None });
    }
    let (Some(dumps), Some(restores)) = (source.schema_dump(), target.schema_restore()) else {
        return translated("this engine has no schema dump barge can restore");
    };
    if !every_table {
        return translated("only some tables are copied (--table), and the schema dump holds every table");
    }
    if let Some(failed) = plan.failed.first() {
        return translated(&format!(
            "table `{}` cannot be copied, and the schema dump holds every table",
            failed.table
        ));
    }
    if let Some(table) = plan.tables.iter().find(|t| t.action != TableAction::Create) {
        return translated(&format!(
            "target table `{}` exists already, so barge creates no tables",
            table.target_table
        ));
    }
    if let Some(table) = plan.tables.iter().find(|t| t.transform.is_some() || t.target_table != t.source.name) {
        return translated(&format!("table `{}` is renamed or transformed on its way", table.source.name));
    }
    let dump = match dumps.dump_schema()? {
        Ok(dump) => dump,
        Err(why) => return translated(&why),
    };
    match restores.check_restore(dump.as_ref())? {
        Ok(()) => Ok(SchemaPlan::Exact(dump)),
        Err(why) => translated(&why),
    }
}

/// Refuses, before anything is written, a table whose widest row the target cannot take in one
/// piece (MySQL's `max_allowed_packet`), naming the table, the sizes and the setting to change.
pub fn check_row_limits(source: &dyn Source, target: &dyn Target, plan: &Plan) -> Result<()> {
    let Some(limit) = target.row_limit()? else { return Ok(()) };
    if source.row_cap()?.is_some_and(|cap| cap <= limit.bytes) {
        return Ok(()); // no row of the source can be larger than the target takes
    }
    for table in &plan.tables {
        let variable: Vec<usize> = table
            .source
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| is_variable_width(f.data_type()))
            .map(|(i, _)| i)
            .collect();
        if variable.is_empty() {
            continue;
        }
        let Some(widest) = source.widest_row(&table.source, &variable)? else { continue };
        // Fixed-width values, separators and escaped bytes add a little (a quarter: binary
        // escapes a few bytes in a hundred, text hardly any).
        let fixed = 16 * table.source.schema.fields().len() as u64;
        if widest.saturating_add(widest / 4).saturating_add(fixed) > limit.bytes {
            return Err(Error::Config(format!(
                "table `{}`: its widest row holds {widest} bytes, which {} cannot take in one piece (limit {} bytes, \
                 {}); nothing was written. Raise the limit, or leave the widest columns out",
                table.source.name,
                target.display_name(),
                limit.bytes,
                limit.setting
            )));
        }
    }
    Ok(())
}

/// Types whose values can be of any size.
fn is_variable_width(data_type: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType::*;
    matches!(data_type, Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView | List(_) | LargeList(_))
}

/// Plans a copy from `from` to `to`. `request` builds the request once the target's engine is
/// known (a pipeline's type overrides depend on it).
pub fn preflight(
    registry: &Registry,
    from: &str,
    to: &str,
    request: impl FnOnce(&dyn EngineFactory) -> Result<CopyRequest>,
    if_exists: IfExists,
) -> Result<Preflight> {
    let (source_engine, target_engine) = engines(registry, from, to)?;
    let source = source_engine.open_source(from)?;
    let request = request(target_engine)?;
    let source_plan = plan_sources(source.as_ref(), &request)?;
    let target = target_engine.open_target(to)?;
    let mut plan = plan_targets(target.as_ref(), source_plan, if_exists)?;
    check_not_itself(source.as_ref(), target.as_ref(), &plan)?;
    let same_engine = source_engine.name() == target_engine.name();
    plan.schema = plan_schema(source.as_ref(), target.as_ref(), &plan, same_engine, request.tables.is_empty())?;
    match plan.schema.dump() {
        Some(dump) => plan.not_migrated.extend(dump.not_migrated()),
        None => {
            plan.not_migrated.extend(untranslated(&plan, target.display_name(), target.keeps_comments()));
            // A whole database copied: what it has besides tables stays behind, said by name.
            if request.tables.is_empty() {
                let why = match &plan.schema {
                    SchemaPlan::Translated { why_not_exact: Some(why) } => format!("not copied: {why}"),
                    _ => format!("barge does not translate this kind of object into {}", target_engine.name()),
                };
                // Plain views are tried on the target after the rows; the rest stays behind.
                plan.views = source.views()?;
                let tried =
                    |o: &barge_core::SchemaObject| o.kind == "view" && plan.views.iter().any(|v| v.name == o.name);
                let others: Vec<_> = source.other_objects()?.into_iter().filter(|o| !tried(o)).collect();
                plan.not_migrated.extend(others.into_iter().map(|o| NotMigrated::new(o.kind, o.name, why.clone())));
            }
        }
    }
    check_row_limits(source.as_ref(), target.as_ref(), &plan)?;
    Ok(Preflight { source_engine, target_engine, source, target, target_url: to.to_string(), plan })
}
