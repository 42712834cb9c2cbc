//! `barge sync`: a bulk copy exactly as `copy` does it, then the source's committed changes,
//! applied until stopped (SIGINT/SIGTERM) or `--until caught-up`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use barge_core::Error;
use clap::{Args, ValueEnum};

use barge_pipeline::{Pipeline, PipelineTable, preview};
use barge_plan::{IfExists, Preflight, TablePlan};

use super::{
    CopyArgs, EXIT_PARTIAL, Endpoints, IfExistsArg, Tuning, ValuePolicyArg, ZeroDates, check_ledger, check_tuning,
    copy_between_with, copy_exit, engines, execute, fingerprint, open_ledger, pipeline_options, plan_copy, render,
};

#[derive(Args)]
pub struct SyncArgs {
    /// A pipeline file (see pipelines/README.md): its source, target and tables, with their
    /// filters, renames, drops and transforms, applied to changes exactly as to the bulk copy.
    /// Instead of --from and --to.
    #[arg(conflicts_with_all = ["from", "to", "tables", "exclude", "zero_dates"])]
    pipeline: Option<PathBuf>,
    /// Source database URL: postgres://user@host:5432/db or mysql://user@host:3306/db.
    #[arg(long, required_unless_present = "pipeline")]
    from: Option<String>,
    /// Target database URL (PostgreSQL, MySQL/MariaDB or SQLite).
    #[arg(long, required_unless_present = "pipeline")]
    to: Option<String>,
    /// Table (repeatable; default: every table of the source).
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Leave out the source tables this names: a name or a pattern with `*` and `?`
    /// (repeatable). Not with --table.
    #[arg(long, value_name = "PATTERN", conflicts_with = "tables")]
    exclude: Vec<String>,
    /// MySQL/MariaDB source: zero dates read as NULL (null, the default) or an error (see `copy`).
    #[arg(long, value_enum)]
    zero_dates: Option<ZeroDates>,
    /// Readers, writers and CPU threads of the bulk copy (a pipeline's own `workers` and
    /// `batch_rows` win over these).
    #[command(flatten)]
    tuning: Tuning,
    /// The sync's ledger (a SQLite file, or postgres://…): its bulk copy resumes from it, and it
    /// keeps a second sync of the same stream from running.
    #[arg(long)]
    state: String,
    /// Stop once every change committed before the command started is applied (exit 0).
    #[arg(long, value_enum)]
    until: Option<Until>,
    /// Remove the stream: its replication slot and publication on the source, and its positions
    /// in the target; says how much WAL the slot was keeping.
    #[arg(long)]
    drop: bool,
    /// The stream's name (letters, digits, `_`); the slot and publication are `barge_<name>`
    /// (default: from the two databases and the tables).
    #[arg(long)]
    stream: Option<String>,
    /// What the bulk copy does when a target table already holds rows.
    #[arg(long, value_enum, default_value_t = IfExistsArg::Fail)]
    if_exists: IfExistsArg,
    /// Skip the bulk copy's verification.
    #[arg(long)]
    no_verify: bool,
    /// Do not recreate the source's foreign keys (see `barge copy`).
    #[arg(long)]
    no_foreign_keys: bool,
    /// Times a batch that fails transiently (a lost connection, a server restarted) is tried
    /// again, with exponential backoff.
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// Changes read and applied per batch, about (whole source transactions).
    #[arg(long, default_value_t = 100_000)]
    batch_changes: usize,
    /// Warn when the stream's slot keeps more WAL than this on the source.
    #[arg(long, value_parser = super::parse_bytes, default_value = "1GiB")]
    max_retained: usize,
    /// One JSON status object a second on stdout, and a final one.
    #[arg(long)]
    pub json: bool,
    /// Serve a live status page (and `/status.json`) at this address, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<String>,
    /// Serve metrics in Prometheus' text format at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Prints nothing on stdout (`barge migrate` reports for it).
    #[arg(skip)]
    pub quiet: bool,
    /// Put before the names of the runs the sync keeps in its state store (`sync`, `copy`), so
    /// that several syncs share one (the waves of `barge migrate`).
    #[arg(skip)]
    pub runs: String,
}

impl SyncArgs {
    /// The name under which the state store keeps run `base` of this sync.
    fn run(&self, base: &str) -> String {
        format!("{}{base}", self.runs)
    }
}

/// What drives a sync from outside (`barge migrate`): when to stop, and what to tell.
pub struct Control<'a> {
    /// Set to stop after the batch in flight.
    pub stop: Arc<AtomicBool>,
    /// Told each status (once a second, and the last).
    pub status: &'a mut dyn FnMut(&barge_exec::SyncStatus),
    /// Told each table's changed keys once applied (see [`barge_exec::SyncOptions::changed`]).
    pub changed: Option<&'a barge_exec::ChangedKeys<'a>>,
}

impl SyncArgs {
    /// Sync arguments from words, as the command line takes them (`barge migrate` syncs both ways).
    pub fn parse_from(words: &[String]) -> Result<SyncArgs, Error> {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Words {
            #[command(flatten)]
            args: SyncArgs,
        }
        <Words as clap::Parser>::try_parse_from(words).map(|w| w.args).map_err(|e| Error::Config(e.to_string()))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Until {
    /// Every change committed before the command started.
    CaughtUp,
}

/// A stream name: what a slot name may hold, short enough for `barge_` before it.
fn stream_name(args: &SyncArgs, from: &str, to: &str, tables: &[String]) -> Result<String, Error> {
    let name = match &args.stream {
        Some(name) => name.clone(),
        None => format!("s{}", &fingerprint(&[from, to, &tables.join(",")])[..16]),
    };
    let valid = !name.is_empty()
        && name.len() <= 50
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(Error::Config(format!(
            "--stream `{name}`: use 1 to 50 lowercase letters, digits and `_` (it names a replication slot)"
        )));
    }
    Ok(name)
}

/// What a sync moves: the tables of two URLs (planned as `copy` plans them), or a pipeline's
/// (planned as `run` plans them, with their filters and transforms).
enum Moves {
    Urls(Endpoints),
    Pipeline(Box<Pipeline>),
}

impl Moves {
    fn of(args: &SyncArgs) -> Result<Moves, Error> {
        let Some(path) = &args.pipeline else {
            return Ok(Moves::Urls(Endpoints {
                from: args.from.clone().unwrap_or_default(),
                to: args.to.clone().unwrap_or_default(),
                tables: args.tables.clone(),
                exclude: args.exclude.clone(),
                zero_dates: args.zero_dates,
            }));
        };
        let pipeline = Pipeline::load(path)?;
        if let Some(table) = pipeline.tables.iter().find(|t| t.incremental.is_some()) {
            return Err(Error::Config(format!(
                "pipeline {}: table `{}` is incremental (a watermark): sync keeps every table current by change \
                 capture, deletes included; remove its `incremental` settings to sync it",
                path.display(),
                table.source
            )));
        }
        Ok(Moves::Pipeline(Box::new(pipeline)))
    }

    /// The source URL as read, the target URL, and the tables named (none: every table).
    fn databases(&self) -> Result<(String, String, Vec<String>), Error> {
        match self {
            Moves::Urls(endpoints) => {
                let (from, tables) = endpoints.resolved()?;
                Ok((from, endpoints.to.clone(), tables))
            }
            Moves::Pipeline(p) => {
                Ok((p.source.clone(), p.target.clone(), p.tables.iter().map(|t| t.source.clone()).collect()))
            }
        }
    }

    /// The target table source table `table` goes to.
    fn target_of(&self, table: &str) -> String {
        match self {
            Moves::Pipeline(p) => p.tables.iter().find(|t| t.source == table).map_or(table, |t| &t.target).to_string(),
            Moves::Urls(_) => table.to_string(),
        }
    }

    /// The source columns behind the target table's `present` columns: a pipeline's renamed
    /// column is its `from`, a computed one none, any other its own name.
    fn source_columns(&self, table: &str, present: &[String]) -> Vec<String> {
        let spec = match self {
            Moves::Pipeline(p) => p.tables.iter().find(|t| t.source == table),
            Moves::Urls(_) => None,
        };
        present
            .iter()
            .filter_map(|column| match spec.and_then(|t| t.columns.iter().find(|c| &c.name == column)) {
                Some(c) if c.expr.is_some() => None,
                Some(c) => Some(c.from.clone().unwrap_or_else(|| column.clone())),
                None => Some(column.clone()),
            })
            .collect()
    }

    /// Every table planned (writing nothing), or only source table `only`, with `if_exists`.
    fn preflight(&self, args: &SyncArgs, if_exists: IfExistsArg, only: Option<&str>) -> Result<Preflight, Error> {
        self.planned(args, if_exists, only, false)
    }

    /// [`Self::preflight`]; `ranges`: with the bulk copy's key ranges (else each table is one
    /// range, planned without counting or sampling the source: what applying changes needs).
    fn planned(
        &self,
        args: &SyncArgs,
        if_exists: IfExistsArg,
        only: Option<&str>,
        ranges: bool,
    ) -> Result<Preflight, Error> {
        match self {
            Moves::Urls(endpoints) => {
                let mut copy = copy_args(args, endpoints, if_exists, false);
                if let Some(name) = only {
                    copy.endpoints.tables = vec![name.to_string()];
                    copy.endpoints.exclude.clear();
                }
                if !ranges {
                    copy.tuning.partitions = Some(1);
                }
                Ok(plan_copy(&copy)?.0)
            }
            Moves::Pipeline(pipeline) => {
                let mut pipeline = pipeline_for(pipeline, if_exists, only);
                if !ranges {
                    pipeline.partitions = Some(1);
                    for table in &mut pipeline.tables {
                        table.partitions = Some(1);
                    }
                }
                let workers = pipeline.workers.unwrap_or(args.tuning.workers);
                let prepared = preview::prepare(&engines::registry(), &pipeline, workers, &HashMap::new(), false)?;
                if !prepared.report.ok {
                    return Err(preview::risks_error(&prepared.report));
                }
                Ok(prepared.preflight)
            }
        }
    }

    /// The bulk copy, into the ledger `store` (which sync holds), resuming an interrupted one.
    fn copy(
        &self,
        args: &SyncArgs,
        store: &Arc<dyn barge_core::ledger::LedgerStore>,
        resume: bool,
    ) -> Result<barge_exec::CopyReport, Error> {
        let pipeline = match self {
            Moves::Urls(endpoints) => {
                let held = (store.clone(), args.run("copy"));
                return copy_between_with(&copy_args(args, endpoints, args.if_exists, resume), Some(held));
            }
            Moves::Pipeline(pipeline) => pipeline,
        };
        store.acquire(&args.run("copy"), &barge_core::ledger::Holder::current())?;
        let if_exists = if resume { IfExistsArg::Append } else { args.if_exists };
        let preflight = self.planned(args, if_exists, None, true)?;
        let print = fingerprint(&[&pipeline.text, &pipeline.source, &pipeline.target]);
        let ledger = barge_exec::Ledger::open(store.clone(), &args.run("copy"), &print, resume)?;
        let workers = pipeline.workers.unwrap_or(args.tuning.workers);
        let batch_rows = pipeline.batch_rows.unwrap_or(args.tuning.batch_rows);
        let mut options = barge_exec::ExecOptions {
            foreign_keys: !args.no_foreign_keys,
            batch_bytes: args.tuning.batch_bytes,
            ..pipeline_options(pipeline, workers, batch_rows, ledger)
        };
        options.verify &= !args.no_verify;
        execute(&preflight, &options, render::progress().as_ref())
    }
}

/// The pipeline as sync plans it: the bulk copy's `if_exists` (`--if-exists`, not the file's:
/// sync copies into empty tables unless told), and only table `only` when asked (as the file
/// has it, else as it is in the source).
fn pipeline_for(pipeline: &Pipeline, if_exists: IfExistsArg, only: Option<&str>) -> Pipeline {
    let mut pipeline = pipeline.clone();
    pipeline.unique_key = true;
    pipeline.if_exists = match if_exists {
        IfExistsArg::Fail => IfExists::Fail,
        IfExistsArg::Truncate => IfExists::Truncate,
        IfExistsArg::Append => IfExists::Append,
    };
    if let Some(name) = only {
        let table = pipeline.tables.iter().find(|t| t.source == name).cloned().unwrap_or_else(|| PipelineTable {
            source: name.to_string(),
            target: name.to_string(),
            key: None,
            filter: None,
            conflict: pipeline.conflict,
            budget: pipeline.budget,
            partitions: None,
            columns: Vec::new(),
            drop: Vec::new(),
            accept: HashMap::new(),
            incremental: None,
        });
        pipeline.tables = vec![table];
    }
    pipeline
}

pub fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    // The status page shows the last status, with the lag of each one.
    type Seen = (serde_json::Value, super::status_page::Series);
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::new(std::sync::Mutex::new((
        serde_json::json!({"phase": "bulk copy", "lag_seconds": 0.0, "changes_per_s": 0.0, "applied_total": 0}),
        super::status_page::Series::default(),
    )));
    let served = {
        let (status, metrics) = (seen.clone(), seen.clone());
        super::status_page::Served {
            status: Arc::new(move || {
                let (status, series) = &*status.lock().expect("status lock");
                series.with(status.clone())
            }),
            metrics: Arc::new(move || {
                let mut out = super::status_page::Metrics::default();
                super::status_page::sync_metrics(&mut out, &metrics.lock().expect("status lock").0);
                out.finish()
            }),
        }
    };
    let _served =
        super::status_page::serve_at(args.status_addr.as_deref(), args.metrics_addr.as_deref(), &served, "sync")?;
    let mut tell = |status: &barge_exec::SyncStatus| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (last, series) = &mut *seen.lock().expect("status lock");
        *last = serde_json::to_value(status).unwrap_or_default();
        series.push(now.as_secs_f64(), status.lag_seconds, status.changes_per_s);
    };
    sync_with(args, Control { stop, status: &mut tell, changed: None })
}

/// [`sync`], stopped and watched by `control`.
pub fn sync_with(args: SyncArgs, control: Control<'_>) -> anyhow::Result<ExitCode> {
    check_tuning(&args.tuning)?;
    let moves = Moves::of(&args)?;
    let (from, to, tables) = moves.databases()?;
    let registry = engines::registry();
    let source_engine = registry.for_url(&from)?;
    let target_engine = registry.for_url(&to)?;
    let source = source_engine.open_source(&from)?;
    let Some(feed) = source.change_feed() else {
        return Err(Error::Config(format!(
            "a {} source has no change stream: sync reads PostgreSQL's logical decoding (copy a {0} database \
             with `barge copy`, or run incremental pipelines)",
            source_engine.name()
        ))
        .into());
    };
    let stream = stream_name(&args, &from, &to, &tables)?;
    check_ledger(&args.state)?;
    let store = open_ledger(&args.state)?;
    store.acquire(&args.run("sync"), &barge_core::ledger::Holder::current())?;
    if args.drop {
        // The slot first: it keeps the source's WAL, whether or not the target answers.
        let retained = feed.drop_stream(&stream)?;
        if let Some(positions) = target_engine.open_target(&to)?.change_positions() {
            positions.forget(&stream)?;
        }
        return Ok(dropped(&stream, retained, args.json));
    }
    let target = target_engine.open_target(&to)?;
    let positions = target
        .change_positions()
        .ok_or_else(|| Error::unsupported(target_engine.name(), "keep change positions (sync)"))?;
    let recorded = positions.positions(&stream)?;
    let start = match recorded.iter().find(|(table, _)| table.is_empty()) {
        Some((_, start)) => *start,
        None => match bulk(&args, &moves, feed, positions, &stream, &store, &from)? {
            Some(start) => start,
            // The bulk copy failed: its report said why (the stream is kept for a rerun).
            None => return Ok(ExitCode::from(super::EXIT_RUNTIME)),
        },
    };
    // The versions after the rows (indexes, foreign keys, backfills and their NOT NULLs): once
    // the bulk copy is in, before the changes since are applied.
    if let Moves::Pipeline(pipeline) = &moves {
        super::apply_versions(pipeline, barge_pipeline::versions::Stage::All)?;
    }
    // The tables as the copy planned them (nothing is written: the target tables exist); a
    // table that no longer plans (its columns changed) stops, the others go on.
    let (plans, stopped) = plan_tables(&args, &moves, source.as_ref(), target.as_ref())?;
    let until = match args.until {
        Some(Until::CaughtUp) => Some(feed.current_position()?),
        None => None,
    };
    let Control { stop, status: tell, changed } = control;
    let options = barge_exec::SyncOptions {
        stream: &stream,
        until,
        batch_changes: args.batch_changes.max(1),
        stop,
        changed,
        idle: Duration::from_millis(200),
        retries: args.retries,
        stopped,
        replan: &|old: &TablePlan| replan(&args, &moves, source.as_ref(), target.as_ref(), old),
    };
    let terminal = std::io::stderr().is_terminal();
    let max_retained = args.max_retained as u64;
    let mut warned = false;
    let mut on_status = |status: &barge_exec::SyncStatus| {
        tell(status);
        if args.quiet {
        } else if args.json {
            println!("{}", serde_json::to_string(status).unwrap_or_default());
        } else if terminal {
            eprint!(
                "\r{}: applied {} (lag {:.1} s, {}), {:.0} changes/s, {} changes   ",
                status.phase,
                status.applied_position,
                status.lag_seconds,
                indicatif::HumanBytes(status.lag_bytes),
                status.changes_per_s,
                barge_core::text::count(status.applied_total)
            );
        }
        if let Some(retained) = status.retained_bytes.filter(|&r| r > max_retained && !warned) {
            warned = true;
            eprintln!(
                "warning: the stream's replication slot keeps {} of WAL on the source (over --max-retained): \
                 keep sync running, or remove the stream with `barge sync --drop`",
                indicatif::HumanBytes(retained)
            );
        }
    };
    let last = barge_exec::sync(feed, target.as_ref(), &plans, start, &options, &mut on_status)?;
    if !args.json && !args.quiet {
        if terminal {
            eprintln!();
        }
        println!(
            "sync {}: applied up to {} ({} changes in {} transactions){}",
            stream,
            last.applied_position,
            last.applied_total,
            last.transactions,
            if last.caught_up { ", caught up" } else { ", stopped" }
        );
        for table in &last.tables {
            println!(
                "  {:<30} {:>10} upserted {:>10} deleted{}",
                table.table,
                table.upserted,
                table.deleted,
                table.error.as_ref().map(|e| format!("  FAILED: {e}")).unwrap_or_default()
            );
        }
    }
    let failed: Vec<_> = last.tables.iter().filter(|t| t.error.is_some()).collect();
    for table in &failed {
        eprintln!("error: table `{}` stopped syncing: {}", table.table, table.error.as_deref().unwrap_or(""));
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL) })
}

/// The plans of the stream's tables: all at once, or, when that fails, one by one, so that a
/// table whose source changed (a column added or dropped) is reported stopped with the reason
/// and the others go on.
fn plan_tables(
    args: &SyncArgs,
    moves: &Moves,
    source: &dyn barge_core::Source,
    target: &dyn barge_core::Target,
) -> Result<(Vec<TablePlan>, Vec<barge_exec::SyncTable>), Error> {
    let whole = match moves.preflight(args, IfExistsArg::Append, None) {
        Ok(preflight) => return Ok((preflight.plan.tables, Vec::new())),
        Err(e) if e.is_usage() => e,
        Err(e) => return Err(e),
    };
    let (_, _, named) = moves.databases()?;
    let names = if named.is_empty() {
        let left_out = barge_plan::excluded(&args.exclude)?;
        source.list_tables()?.into_iter().filter(|t| !left_out(t)).collect()
    } else {
        named
    };
    let (mut plans, mut stopped) = (Vec::new(), Vec::new());
    for name in names {
        let planned = plan_one(args, moves, &name).or_else(|e| {
            // A column the source added while sync was not running is carried as in a run.
            let target_table = moves.target_of(&name);
            let present = target.table_columns(&target_table).map_err(|e| e.to_string())?;
            let known = moves.source_columns(&name, &present);
            add_columns(source, target, (&name, &target_table), &known, None).map_err(|why| format!("{e} ({why})"))?;
            plan_one(args, moves, &name).map_err(|e| e.to_string())
        });
        match planned {
            Ok(plan) => plans.push(plan),
            Err(e) => stopped.push(barge_exec::SyncTable {
                table: name,
                error: Some(format!("{e}: the table no longer matches the target, sync of it stopped (copy it again)")),
                ..Default::default()
            }),
        }
    }
    if plans.is_empty() {
        return Err(whole);
    }
    Ok((plans, stopped))
}

/// The plan of one table, as it is now.
fn plan_one(args: &SyncArgs, moves: &Moves, name: &str) -> Result<TablePlan, Error> {
    let preflight = moves.preflight(args, IfExistsArg::Append, Some(name))?;
    preflight.plan.tables.into_iter().next().ok_or_else(|| Error::Config(format!("source table `{name}` is gone")))
}

/// Adds to the target table the columns the source's `table` gained, when every one of them is
/// nullable without a default (rows already copied hold NULL in them on both sides), and
/// nothing else changed: a dropped or renamed column, or one whose type changed, is an error
/// saying so. `known` are the source columns the target already holds (a pipeline renames,
/// drops and computes columns); `old` is the plan sync ran with, when it ran with one.
fn add_columns(
    source: &dyn barge_core::Source,
    target: &dyn barge_core::Target,
    (table, target_table): (&str, &str),
    known: &[String],
    old: Option<&TablePlan>,
) -> Result<(), String> {
    let now = source.table(table).map_err(|e| e.to_string())?;
    let present = target.table_columns(target_table).map_err(|e| e.to_string())?;
    let native = |f: &arrow_schema::Field| f.metadata().get(barge_core::META_NATIVE_TYPE).cloned();
    if let Some(gone) = known.iter().find(|c| now.schema.field_with_name(c).is_err()) {
        return Err(format!("column `{gone}` is no longer in the source"));
    }
    for field in old.iter().flat_map(|old| old.source.schema.fields().iter()) {
        if let Ok(f) = now.schema.field_with_name(field.name())
            && (native(f) != native(field) || f.data_type() != field.data_type())
        {
            return Err(format!(
                "column `{}` changed its type to {}",
                field.name(),
                native(f).unwrap_or_else(|| f.data_type().to_string())
            ));
        }
    }
    // A new source column passes through a pipeline's transform under its own name.
    let added = now.schema.fields().iter().filter(|f| !known.contains(f.name()) && !present.contains(f.name()));
    for field in added {
        let has_default = field.metadata().contains_key(barge_core::META_DEFAULT)
            || field.metadata().contains_key(barge_core::META_DEFAULT_UNTRANSLATED);
        if !field.is_nullable() || has_default {
            return Err(format!(
                "the source added column `{}`{}: only a nullable column without a default is carried on",
                field.name(),
                if has_default { " with a default" } else { " NOT NULL" }
            ));
        }
        let column = target.column_for(target_table, field).map_err(|e| e.to_string())?;
        target.add_column(target_table, field, &column).map_err(|e| e.to_string())?;
        tracing::info!(table, column = %field.name(), "the source added a column: added to the target");
    }
    Ok(())
}

/// A table's plan again after DDL on the source (see [`barge_exec::SyncOptions::replan`]).
fn replan(
    args: &SyncArgs,
    moves: &Moves,
    source: &dyn barge_core::Source,
    target: &dyn barge_core::Target,
    old: &TablePlan,
) -> barge_core::Result<TablePlan> {
    let name = &old.source.name;
    let known: Vec<String> = old.source.schema.fields().iter().map(|f| f.name().clone()).collect();
    add_columns(source, target, (name, &old.target_table), &known, Some(old)).map_err(Error::Config)?;
    plan_one(args, moves, name)
}

fn copy_args(args: &SyncArgs, endpoints: &Endpoints, if_exists: IfExistsArg, resume: bool) -> CopyArgs {
    CopyArgs {
        endpoints: endpoints.clone(),
        tuning: args.tuning.clone(),
        if_exists,
        no_verify: args.no_verify,
        no_foreign_keys: args.no_foreign_keys,
        foreign_keys: false,
        fail_fast: false,
        no_lock: false,
        retries: barge_exec::DEFAULT_RETRIES,
        unrepresentable: ValuePolicyArg::Error,
        error_budget: None,
        rejects: "rejects".into(),
        state: Some(args.state.clone()),
        resume,
        stall_after: 60.0,
        sample_rows: None,
        dry_run: false,
        json: args.json,
        unique_key: true,
        distributed: false,
    }
}

/// The `barge_sync` entry of a stream's start while its bulk copy runs (no table has this name).
const PENDING_START: &str = "(start)";

/// The first run's bulk copy: the stream is opened first (so every change from then on is kept),
/// then the tables are copied as `copy` does, resuming an interrupted bulk copy from the ledger.
/// Returns the stream's start, recorded in the target once the copy succeeded; `None` when it
/// did not (its report says why).
fn bulk(
    args: &SyncArgs,
    moves: &Moves,
    feed: &dyn barge_core::ChangeFeed,
    positions: &dyn barge_core::ChangePositions,
    stream: &str,
    store: &Arc<dyn barge_core::ledger::LedgerStore>,
    from: &str,
) -> Result<Option<u64>, Error> {
    // Where the stream began, once a first run opened it: kept (a MySQL binlog position is not
    // kept on the server), so that a copy resumed after a crash replays every change since.
    let pending = positions.positions(stream)?.into_iter().find(|(t, _)| t == PENDING_START).map(|(_, p)| p);
    if let Some(start) = pending
        && matches!(store.run_state(&args.run("copy"))?, Some((_, true)))
    {
        // The copy finished and the run stopped before recording it.
        positions.record(stream, "", start)?;
        return Ok(Some(start));
    }
    let resume = store.unfinished(&args.run("copy"))?.is_some();
    // A versioned target schema: the versions before the rows make the tables the copy fills.
    if let Moves::Pipeline(pipeline) = moves {
        super::apply_versions(pipeline, barge_pipeline::versions::Stage::BeforeData)?;
    }
    // Everything is checked before anything is created: the plan, then the source's settings.
    let if_exists = if resume { IfExistsArg::Append } else { args.if_exists };
    let preflight = moves.preflight(args, if_exists, None).map_err(|e| match e {
        Error::TargetNotEmpty { .. } if !resume => {
            Error::Config(format!("{e}; sync copies into empty tables (--if-exists truncate empties them first)"))
        }
        other => other,
    })?;
    let infos: Vec<_> = preflight.plan.tables.iter().map(|t| t.source.clone()).collect();
    feed.check(&infos)?;
    drop(preflight);
    let opened = feed.open_stream(stream, &infos)?;
    let start = match pending {
        Some(start) if resume => start,
        _ => opened,
    };
    positions.record(stream, PENDING_START, start)?;
    if args.json && !args.quiet {
        println!(
            "{}",
            serde_json::json!({"phase": "bulk", "stream": stream, "start_position": feed.describe_position(start),
                               "tables": infos.iter().map(|t| t.name.clone()).collect::<Vec<_>>()})
        );
    } else {
        eprintln!(
            "sync {stream}: stream opened at {} ({}); bulk copy",
            feed.describe_position(start),
            barge_core::url::redact(from)
        );
    }
    let report = moves.copy(args, store, resume)?;
    if args.quiet {
        eprintln!("{}", render::copy_summary(&report));
    } else if args.json {
        println!("{}", serde_json::json!({"phase": "bulk", "report": report}));
    } else {
        println!("{}", render::copy_summary(&report));
    }
    if copy_exit(&report) != ExitCode::SUCCESS {
        eprintln!(
            "error: the bulk copy did not finish cleanly: fix the cause and run sync again (the stream keeps the \
             changes meanwhile), or remove it with `barge sync --drop`"
        );
        return Ok(None);
    }
    positions.record(stream, "", start)?;
    Ok(Some(start))
}

/// Says what `--drop` removed: the stream's slot, and the WAL it was keeping.
fn dropped(stream: &str, retained: Option<u64>, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"stream": stream, "dropped": retained.is_some(), "retained_bytes": retained})
        );
    } else {
        match retained {
            Some(bytes) => {
                println!("sync {stream}: dropped (its slot was keeping {} of WAL)", indicatif::HumanBytes(bytes))
            }
            None => println!("sync {stream}: no such stream on the source (positions in the target forgotten)"),
        }
    }
    ExitCode::SUCCESS
}
