//! Pipeline files: the TOML model (every key documented in `pipelines/README.md`), `${ENV}`
//! interpolation, and the checks that turn a file into a [`Pipeline`]. Every error names the file
//! and the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use barge_core::{Budget, Conflict, Error, Result, Scalar, TableInfo};
use barge_plan::{CompileTransform, CopyRequest, IfExists, Risk, TableRequest};
use serde::Deserialize;
use toml::Spanned;

use crate::expr;
use crate::transform::{ColumnSpec, TransformSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    source: Spanned<String>,
    target: Spanned<String>,
    hash_key: Option<Spanned<String>>,
    error_budget: Option<Spanned<BudgetValue>>,
    rejects: Option<String>,
    source_timezone: Option<String>,
    #[serde(default)]
    defaults: DefaultsModel,
    #[serde(default)]
    tables: Vec<TableModel>,
    migration: Option<Migration>,
    schema: Option<SchemaModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaModel {
    path: Spanned<String>,
    after_data: Option<i64>,
    history_table: Option<String>,
}

/// The `[schema]` section: the target's schema as versioned SQL files (`V1__create.sql`,
/// `V2__add_status.sql`, … the Flyway convention), applied in order with a history table.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaVersions {
    /// The folder holding the files (relative paths resolved against the pipeline file's folder).
    pub dir: PathBuf,
    /// Versions from this one on are applied once the rows are in (indexes, foreign keys, a
    /// backfill and its NOT NULL); the ones before it, before the bulk copy. `None`: all before.
    pub after_data: Option<i64>,
    /// The history table in the target (default `barge_schema_history`).
    pub history_table: String,
}

/// The strategies `barge migrate` runs.
pub const STRATEGIES: [&str; 4] = ["blue-green", "big-bang", "shadow", "incremental"];

/// The `[migration]` section: how `barge migrate` runs a zero-downtime migration.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// `blue-green` (the default): copy, keep current, validate, switch over with a way back.
    #[serde(default = "Migration::blue_green")]
    pub strategy: String,
    /// The lag (seconds) under which catching up turns into validating.
    #[serde(default = "Migration::five")]
    pub catch_up_lag: f64,
    /// Share of changed keys read from both sides and compared (shadow reads), in percent.
    #[serde(default = "Migration::one")]
    pub shadow_reads: f64,
    /// Persistent mismatches a switchover tolerates, as a share of the rows compared (0: none).
    #[serde(default)]
    pub error_threshold: f64,
    /// Seconds between the starts of two full verification passes while validating.
    #[serde(default = "Migration::verify_every")]
    pub verify_every: u64,
    /// The switchover's default `--max-lag` (seconds).
    #[serde(default = "Migration::five")]
    pub max_lag: f64,
    /// The switchover's default `--freeze-timeout` (seconds).
    #[serde(default = "Migration::freeze_timeout")]
    pub freeze_timeout: f64,
    /// A shell command run at the freeze point of a switchover (and of a rollback), once the
    /// other side is ready to take writes: e.g. to repoint a connection pooler. It gets
    /// `BARGE_MIGRATE_EVENT` (`switchover` or `rollback`) in its environment; exiting non-zero
    /// aborts the switch.
    pub hook: Option<String>,
    /// The migration's name in the state store (default: from the pipeline file's name).
    pub name: Option<String>,
    /// The `incremental` strategy's waves (`[[migration.waves]]`), in order: each wave's tables
    /// are copied, kept current and switched over on their own (`switchover --wave N`).
    #[serde(default)]
    pub waves: Vec<Wave>,
}

/// One wave of an `incremental` migration.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// The source tables the wave moves.
    pub tables: Vec<String>,
}

impl Migration {
    fn blue_green() -> String {
        "blue-green".into()
    }
    fn five() -> f64 {
        5.0
    }
    fn one() -> f64 {
        1.0
    }
    fn verify_every() -> u64 {
        60
    }
    fn freeze_timeout() -> f64 {
        30.0
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsModel {
    workers: Option<usize>,
    partitions: Option<usize>,
    batch_rows: Option<usize>,
    if_exists: Option<IfExists>,
    verify: Option<bool>,
    error_budget: Option<Spanned<BudgetValue>>,
    conflict: Option<Conflict>,
    retries: Option<u32>,
    unrepresentable: Option<barge_core::values::ValuePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableModel {
    source: Spanned<String>,
    target: Option<String>,
    key: Option<Vec<String>>,
    #[serde(rename = "where")]
    filter: Option<Spanned<String>>,
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    columns: Vec<ColumnModel>,
    conflict: Option<Conflict>,
    error_budget: Option<Spanned<BudgetValue>>,
    partitions: Option<usize>,
    #[serde(default)]
    mode: Mode,
    watermark: Option<String>,
    lookback: Option<i64>,
    #[serde(default)]
    detect_deletes: bool,
}

/// How a table is copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every row, each run.
    #[default]
    Full,
    /// Rows whose watermark column reached the last run's high-water mark (less `lookback`),
    /// upserted.
    Incremental,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnModel {
    name: String,
    from: Option<String>,
    expr: Option<Spanned<String>>,
    #[serde(rename = "type")]
    native_type: Option<String>,
    #[serde(default)]
    accept: Vec<Risk>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum BudgetValue {
    Rows(u64),
    Text(String),
}

/// A checked pipeline, with environment variables substituted.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub path: PathBuf,
    /// The file as read (what a run's ledger fingerprints).
    pub text: String,
    pub source: String,
    pub target: String,
    pub workers: Option<usize>,
    pub partitions: Option<usize>,
    pub batch_rows: Option<usize>,
    pub if_exists: IfExists,
    pub verify: bool,
    /// Times a range that fails transiently (lost connection, deadlock, restart) is copied again.
    pub retries: Option<u32>,
    /// The whole run's budget of rejected rows.
    pub error_budget: Budget,
    /// What to do with values the target cannot store (`[defaults] unrepresentable`).
    pub unrepresentable: barge_core::values::ValuePolicy,
    /// Where `<table>.rejects.jsonl` files go.
    pub rejects_dir: PathBuf,
    /// The time zone naive source timestamps are in (declaring it acknowledges naive timestamps).
    pub source_timezone: Option<String>,
    pub tables: Vec<PipelineTable>,
    /// Conflict mode and error budget of tables the file does not list (when it lists none).
    pub conflict: Conflict,
    pub budget: Budget,
    /// Tables without a primary key are keyed by a unique index over NOT NULL columns (not from
    /// the file: `sync` sets it, as it applies changes by key).
    pub unique_key: bool,
    /// The `[migration]` section, when the file has one.
    pub migration: Option<Migration>,
    /// The `[schema]` section: versioned SQL files that make the target's schema.
    pub schema: Option<SchemaVersions>,
    hash_key: Option<[u8; 32]>,
}

/// One `[[tables]]` entry.
#[derive(Clone, Debug)]
pub struct PipelineTable {
    pub source: String,
    pub target: String,
    pub key: Option<Vec<String>>,
    pub filter: Option<String>,
    pub conflict: Conflict,
    pub budget: Budget,
    pub partitions: Option<usize>,
    pub columns: Vec<ColumnSpec>,
    pub drop: Vec<String>,
    /// Risks the file accepts, per target column.
    pub accept: HashMap<String, Vec<Risk>>,
    /// Incremental tables: the watermark column, the lookback (in the column's units: seconds
    /// for timestamps, days for dates) and whether deletes are detected.
    pub incremental: Option<(String, i64, bool)>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl Pipeline {
    /// Reads and checks a pipeline file, substituting `${VAR}` from the environment.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read pipeline file {}: {e}", path.display())))?;
        Pipeline::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Checks pipeline `text` (read from `path`), taking variables from `env`.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Pipeline> {
        let shown = path.display();
        let model: FileModel = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| format!(", line {}", line_of(text, s.start))).unwrap_or_default();
            Error::Config(format!("{shown}{line}: {}", e.message()))
        })?;
        let at = |span: std::ops::Range<usize>, what: String| {
            Error::Config(format!("{shown}, line {}: {what}", line_of(text, span.start)))
        };
        let interpolate = |value: &Spanned<String>| -> Result<String> {
            substitute(value.get_ref(), env).map_err(|what| at(value.span(), what))
        };
        let budget = |value: &Option<Spanned<BudgetValue>>, default: Budget| -> Result<Budget> {
            match value {
                None => Ok(default),
                Some(v) => match v.get_ref() {
                    BudgetValue::Rows(n) => Ok(Budget::Rows(*n)),
                    BudgetValue::Text(t) => {
                        Budget::parse(t).map_err(|what| at(v.span(), format!("error_budget: {what}")))
                    }
                },
            }
        };
        let hash_key = model
            .hash_key
            .as_ref()
            .map(|key| {
                let material = interpolate(key)?;
                if material.len() < 16 {
                    return Err(at(key.span(), "hash_key must be at least 16 characters".into()));
                }
                Ok(blake3::derive_key("barge 2026 pipeline hash()", material.as_bytes()))
            })
            .transpose()?;
        let defaults = &model.defaults;
        for (name, value) in
            [("workers", defaults.workers), ("partitions", defaults.partitions), ("batch_rows", defaults.batch_rows)]
        {
            if value == Some(0) {
                return Err(Error::Config(format!("{shown}: defaults.{name} must be at least 1")));
            }
        }
        if let Some(m) = &model.migration {
            if !STRATEGIES.contains(&m.strategy.as_str()) {
                return Err(Error::Config(format!(
                    "{shown}: [migration] strategy `{}`: barge migrate runs {}",
                    m.strategy,
                    STRATEGIES.map(|s| format!("`{s}`")).join(", ")
                )));
            }
            match (m.strategy.as_str(), m.waves.is_empty()) {
                ("incremental", true) => {
                    return Err(Error::Config(format!(
                        "{shown}: [migration] strategy `incremental` needs its waves: `[[migration.waves]]` with \
                         `tables = [\"…\"]`, one section per wave"
                    )));
                }
                ("incremental", false) => {}
                (other, false) => {
                    return Err(Error::Config(format!(
                        "{shown}: [[migration.waves]] belong to strategy `incremental` (this migration is `{other}`)"
                    )));
                }
                _ => {}
            }
            let mut seen: Vec<&str> = Vec::new();
            for (i, wave) in m.waves.iter().enumerate() {
                if wave.tables.is_empty() {
                    return Err(Error::Config(format!("{shown}: [migration] wave {} names no table", i + 1)));
                }
                for table in &wave.tables {
                    if seen.contains(&table.as_str()) {
                        return Err(Error::Config(format!(
                            "{shown}: [migration] table `{table}` is in two waves: each table moves in one"
                        )));
                    }
                    seen.push(table);
                }
            }
            let shares = [("shadow_reads", m.shadow_reads, 100.0), ("error_threshold", m.error_threshold, 1.0)];
            for (name, value, max) in shares {
                if !(0.0..=max).contains(&value) {
                    return Err(Error::Config(format!("{shown}: [migration] {name} must be between 0 and {max}")));
                }
            }
            for (name, value) in
                [("catch_up_lag", m.catch_up_lag), ("max_lag", m.max_lag), ("freeze_timeout", m.freeze_timeout)]
            {
                if !(value > 0.0 && value.is_finite()) {
                    return Err(Error::Config(format!(
                        "{shown}: [migration] {name} must be a positive number of seconds"
                    )));
                }
            }
        }
        let run_budget = budget(&model.error_budget, Budget::None)?;
        // Without a per-table budget, a table may reject rows within the run's budget.
        let default_budget = budget(&defaults.error_budget, run_budget)?;
        let mut tables = Vec::with_capacity(model.tables.len());
        for table in &model.tables {
            let mut accept = HashMap::new();
            let mut columns = Vec::with_capacity(table.columns.len());
            for column in &table.columns {
                let expr = column
                    .expr
                    .as_ref()
                    .map(|e| {
                        expr::parse(e.get_ref())
                            .map_err(|what| at(e.span(), format!("column `{}`: {what}", column.name)))
                    })
                    .transpose()?;
                if !column.accept.is_empty() {
                    accept.insert(column.name.clone(), column.accept.clone());
                }
                columns.push(ColumnSpec {
                    name: column.name.clone(),
                    from: column.from.clone(),
                    expr,
                    native_type: column.native_type.clone(),
                });
            }
            if table.partitions == Some(0) {
                return Err(at(table.source.span(), "partitions must be at least 1".into()));
            }
            let incremental = match (table.mode, &table.watermark) {
                (Mode::Incremental, Some(column)) => {
                    Some((column.clone(), table.lookback.unwrap_or(0), table.detect_deletes))
                }
                (Mode::Incremental, None) => {
                    return Err(at(
                        table.source.span(),
                        "mode = \"incremental\" needs `watermark = \"column\"`".into(),
                    ));
                }
                (Mode::Full, None) if table.lookback.is_none() && !table.detect_deletes => None,
                (Mode::Full, _) => {
                    return Err(at(
                        table.source.span(),
                        "`watermark`, `lookback` and `detect_deletes` apply to mode = \"incremental\"".into(),
                    ));
                }
            };
            if table.lookback.is_some_and(|l| l < 0) {
                return Err(at(table.source.span(), "lookback cannot be negative".into()));
            }
            tables.push(PipelineTable {
                source: table.source.get_ref().clone(),
                target: table.target.clone().unwrap_or_else(|| table.source.get_ref().clone()),
                key: table.key.clone(),
                filter: table.filter.as_ref().map(interpolate).transpose()?,
                // Incremental rows come again when they change: upserted unless told otherwise.
                conflict: table.conflict.or(defaults.conflict).unwrap_or(if incremental.is_some() {
                    Conflict::Upsert
                } else {
                    Conflict::Error
                }),
                budget: budget(&table.error_budget, default_budget)?,
                partitions: table.partitions,
                columns,
                drop: table.drop.clone(),
                accept,
                incremental,
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let unrepresentable = defaults.unrepresentable.unwrap_or_default();
        let tolerant = run_budget.tolerates_rejects()
            || default_budget.tolerates_rejects()
            || tables.iter().any(|t| t.budget.tolerates_rejects());
        if unrepresentable == barge_core::values::ValuePolicy::Reject && !tolerant {
            return Err(Error::Config(format!(
                "{}: [defaults] unrepresentable = \"reject\" needs an error_budget (how many rows may be rejected)",
                path.display()
            )));
        }
        Ok(Pipeline {
            path: path.to_path_buf(),
            text: text.to_string(),
            source: interpolate(&model.source)?,
            target: interpolate(&model.target)?,
            workers: defaults.workers,
            partitions: defaults.partitions,
            batch_rows: defaults.batch_rows,
            if_exists: defaults.if_exists.unwrap_or_default(),
            verify: defaults.verify.unwrap_or(true),
            retries: defaults.retries,
            error_budget: run_budget,
            unrepresentable,
            rejects_dir: base.join(model.rejects.as_deref().unwrap_or("rejects")),
            source_timezone: model.source_timezone.clone(),
            tables,
            conflict: defaults.conflict.unwrap_or_default(),
            budget: default_budget,
            unique_key: false,
            migration: model.migration.clone(),
            schema: model
                .schema
                .as_ref()
                .map(|m| -> Result<SchemaVersions> {
                    let history_table = m.history_table.clone().unwrap_or_else(|| "barge_schema_history".into());
                    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
                    if history_table.is_empty() || !history_table.chars().all(plain) {
                        return Err(Error::Config(format!(
                            "{shown}: [schema] history_table `{history_table}` must be letters, digits and `_`"
                        )));
                    }
                    let dir = base.join(interpolate(&m.path)?);
                    if !dir.is_dir() {
                        return Err(at(m.path.span(), format!("[schema] path {} is not a folder", dir.display())));
                    }
                    Ok(SchemaVersions { dir, after_data: m.after_data, history_table })
                })
                .transpose()?,
            hash_key,
        })
    }

    /// True when some table may reject rows instead of failing.
    pub fn tolerates_rejects(&self) -> bool {
        self.error_budget.tolerates_rejects()
            || self.budget.tolerates_rejects()
            || self.tables.iter().any(|t| t.budget.tolerates_rejects())
    }

    /// The copy request this pipeline makes of the planner. `target_engine` names the target's
    /// engine, for column `type` overrides; `watermarks` gives each incremental table's last
    /// recorded high-water mark; `detect_deletes` turns delete detection on for every
    /// incremental table.
    pub fn request(
        &self,
        workers: usize,
        target_engine: &str,
        watermarks: &HashMap<String, Scalar>,
        detect_deletes: bool,
    ) -> Result<CopyRequest> {
        let tables = self
            .tables
            .iter()
            .map(|t| -> Result<TableRequest> {
                let spec = TransformSpec {
                    columns: t.columns.clone(),
                    drop: t.drop.clone(),
                    hash_key: self.hash_key,
                    target_engine: target_engine.to_string(),
                };
                let transform: Option<CompileTransform> = (!spec.is_identity()).then(|| {
                    Arc::new(move |table: &TableInfo| spec.compile(table).map(|c| c as Arc<dyn barge_core::Transform>))
                        as CompileTransform
                });
                let (watermark, since, deletes) = match &t.incremental {
                    Some((column, lookback, deletes)) => {
                        let since = watermarks.get(&t.source).map(|mark| look_back(mark, *lookback)).transpose()?;
                        (Some(column.clone()), since, *deletes || detect_deletes)
                    }
                    None => (None, None, false),
                };
                Ok(TableRequest {
                    source: t.source.clone(),
                    target: Some(t.target.clone()),
                    key: t.key.clone(),
                    filter: t.filter.clone(),
                    transform,
                    conflict: t.conflict,
                    budget: t.budget,
                    partitions: t.partitions,
                    watermark,
                    since,
                    detect_deletes: deletes,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CopyRequest {
            tables,
            partitions: self.partitions,
            workers,
            conflict: self.conflict,
            budget: self.budget,
            // A pipeline names its tables: one that cannot be planned stops the plan.
            isolate: false,
            unique_key: self.unique_key,
            exclude: Vec::new(),
            sample_rows: None,
        })
    }

    /// The incremental tables, by source name.
    pub fn incremental_tables(&self) -> Vec<&str> {
        self.tables.iter().filter(|t| t.incremental.is_some()).map(|t| t.source.as_str()).collect()
    }

    /// Risks accepted for `column` of target table `table`.
    pub fn accepted(&self, table: &str) -> HashMap<String, Vec<Risk>> {
        self.tables.iter().find(|t| t.target == table).map(|t| t.accept.clone()).unwrap_or_default()
    }
}

/// A watermark moved back by `lookback`: integers by that much, timestamps by that many seconds,
/// dates by that many days (in the text form the engine gave them).
pub fn look_back(mark: &Scalar, lookback: i64) -> Result<Scalar> {
    if lookback == 0 {
        return Ok(mark.clone());
    }
    match mark {
        Scalar::Int(v) => Ok(Scalar::Int(v.saturating_sub(lookback))),
        Scalar::UInt(v) => Ok(Scalar::UInt(v.saturating_sub(lookback.unsigned_abs()))),
        Scalar::Text(t) if t.trim().len() <= 10 && barge_core::text::parse_date(t).is_some() => {
            let days = barge_core::text::parse_date(t).expect("checked") - i32::try_from(lookback).unwrap_or(i32::MAX);
            let mut out = String::new();
            barge_core::text::format_date(days, &mut out);
            Ok(Scalar::Text(out))
        }
        Scalar::Text(t) => match barge_core::text::parse_datetime(t) {
            Some(micros) => {
                let mut out = String::new();
                let zoned = t.ends_with('Z') || t.rfind(['+']).is_some_and(|i| i > 10);
                barge_core::text::format_datetime(micros - lookback.saturating_mul(1_000_000), zoned, &mut out);
                Ok(Scalar::Text(out))
            }
            None => Err(Error::Config(format!("lookback needs an integer, date or timestamp watermark, not `{t}`"))),
        },
        other => Err(Error::Config(format!("lookback needs an integer, date or timestamp watermark, not {other}"))),
    }
}

/// Replaces every `${NAME}` with the variable's value (`${NAME:-default}` when it may be unset);
/// `$$` is a literal `$`.
fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unterminated ${{ in `{text}`"))?;
            let (name, default) = match inner[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&inner[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{name}}}` is not a variable name"));
            }
            let value = env(name)
                .filter(|v| default.is_none() || !v.is_empty())
                .or_else(|| default.map(str::to_string))
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SRC" => Some("sqlite://a.db".into()),
            "DST" => Some("postgres://u:secret@127.0.0.1/db".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Pipeline> {
        Pipeline::parse(text, Path::new("p.toml"), &env)
    }

    #[test]
    fn lookback_moves_integers_dates_and_timestamps_back() {
        assert_eq!(look_back(&Scalar::Int(100), 10).unwrap(), Scalar::Int(90));
        assert_eq!(look_back(&Scalar::Text("2024-03-01".into()), 1).unwrap(), Scalar::Text("2024-02-29".into()));
        assert_eq!(
            look_back(&Scalar::Text("2024-03-01 00:00:30".into()), 60).unwrap(),
            Scalar::Text("2024-02-29 23:59:30".into())
        );
        assert_eq!(look_back(&Scalar::Text("abc".into()), 0).unwrap(), Scalar::Text("abc".into()));
        assert!(look_back(&Scalar::Text("abc".into()), 5).is_err());
    }

    #[test]
    fn substitutes_variables_and_dollars() {
        assert_eq!(substitute("x${SRC}y$$z$", &env).unwrap(), "xsqlite://a.dby$z$");
        assert_eq!(substitute("${NOPE}", &env).unwrap_err(), "environment variable `NOPE` is not set");
        assert!(substitute("${SRC", &env).unwrap_err().contains("unterminated"));
        assert_eq!(substitute("${NOPE:-x/y}|${SRC:-z}", &env).unwrap(), "x/y|sqlite://a.db");
    }

    #[test]
    fn a_full_file_parses() {
        let p = parse(
            r#"
source = "${SRC}"
target = "${DST}"
error_budget = "1%"
[defaults]
workers = 3
if_exists = "truncate"
error_budget = 5
[[tables]]
source = "users"
target = "people"
key = ["id"]
where = "id > 10"
drop = ["modified_date"]
conflict = "upsert"
columns = [
  { name = "email", expr = "lower(email)", accept = ["too_long"] },
  { name = "created_at", from = "created_date" },
]
"#,
        )
        .unwrap();
        assert_eq!(p.source, "sqlite://a.db");
        assert_eq!(p.workers, Some(3));
        assert_eq!(p.if_exists, IfExists::Truncate);
        assert_eq!(p.error_budget, Budget::Fraction(0.01));
        let t = &p.tables[0];
        assert_eq!((t.source.as_str(), t.target.as_str()), ("users", "people"));
        assert_eq!(t.budget, Budget::Rows(5));
        assert_eq!(t.conflict, Conflict::Upsert);
        assert_eq!(t.filter.as_deref(), Some("id > 10"));
        assert_eq!(t.accept["email"], vec![Risk::TooLong]);
        assert_eq!(p.rejects_dir, Path::new("rejects"));
    }

    #[test]
    fn errors_name_the_line() {
        let unknown = parse("source = 'a'\ntarget = 'b'\n\n[defaults]\nretry = 3\n").unwrap_err().to_string();
        assert!(unknown.starts_with("p.toml, line 5: unknown field `retry`"), "{unknown}");
        assert_eq!(parse("source = 'a'\ntarget = 'b'\n[defaults]\nretries = 5\n").unwrap().retries, Some(5));
        let missing = parse("source = '${NOPE}'\ntarget = 'b'\n").unwrap_err().to_string();
        assert_eq!(missing, "p.toml, line 1: environment variable `NOPE` is not set");
        let expr = parse(
            "source = 'a'\ntarget = 'b'\n[[tables]]\nsource = 't'\ncolumns = [{ name = 'x', expr = 'lower(' }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(expr.starts_with("p.toml, line 5: column `x`: expected an expression"), "{expr}");
        let budget = parse("source = 'a'\ntarget = 'b'\nerror_budget = 'lots'\n").unwrap_err().to_string();
        assert!(budget.starts_with("p.toml, line 3: error_budget"), "{budget}");
        let syntax = parse("source = 'a'\ntarget = \n").unwrap_err().to_string();
        assert!(syntax.starts_with("p.toml, line 2:"), "{syntax}");
        let risk = parse(
            "source = 'a'\ntarget = 'b'\n[[tables]]\nsource = 't'\ncolumns = [{ name = 'x', accept = ['typo'] }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(risk.starts_with("p.toml, line 5:") && risk.contains("typo"), "{risk}");
    }
}
