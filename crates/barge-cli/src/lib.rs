//! # barge-cli
//!
//! The `barge` command: parses arguments, opens engines through the registry in [`engines`],
//! builds the plan (barge-plan), runs it (barge-exec) and reports. The only crate that uses
//! `anyhow` and knows about exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | runtime failure |
//! | 2 | usage or configuration error (nothing written) |
//! | 3 | verification mismatch |

mod bench;
mod engines;
mod pipeline;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use barge_core::{Error, Source};
use barge_exec::ExecOptions;
use barge_plan::{CopyRequest, IfExists, TableRequest, plan_sources, plan_targets};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default rows per record batch: large enough to amortise per-batch work, small enough that the
/// bounded queues hold a few MB.
const DEFAULT_BATCH_ROWS: usize = 8192;
/// Rows in the demo's largest table.
const DEMO_ROWS: u64 = 1_000_000;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_MISMATCH: u8 = 3;

#[derive(Parser)]
#[command(name = "barge", version, about = "Parallel bulk data mover that proves the copy is exact")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (-v info, -vv debug). BARGE_LOG=level works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Copy tables from one database to another, then verify the copy.
    Copy(CopyArgs),
    /// Compare tables of two databases and name the keys that differ.
    Verify(VerifyArgs),
    /// Generate a demo SQLite database, copy it with several partitions and verify.
    Demo(DemoArgs),
    /// Show what a pipeline file would do: partitions, DDL, column mapping and the risks found in a
    /// sample of the data. Writes nothing; exits 2 when a risk is not accepted.
    Plan(PipelineArgs),
    /// Run a pipeline file: its plan, then copy (with transforms and reject files) and verify.
    Run(RunArgs),
    /// Measure throughput on a sample of each table, per worker count, in a scratch place of the
    /// target it creates and drops, and forecast the whole copy.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Rows sampled per table: whole key ranges spread over the key space.
    #[arg(long, default_value_t = 200_000)]
    sample_rows: u64,
    /// Worker counts to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Rows per record batch.
    #[arg(long)]
    batch_rows: Option<usize>,
    /// Write report.html, report.json and throughput.svg into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Continue the run of this pipeline that died: ranges it committed are kept, the others are
    /// cleared in the target and loaded again.
    #[arg(long)]
    resume: bool,
    /// The run's ledger: a SQLite file, or postgres://… (schema barge_state) to share it
    /// (default: NAME.state.db beside the pipeline file).
    #[arg(long)]
    state: Option<String>,
    /// For incremental tables: delete target rows whose key is gone from the source (found by
    /// comparing range digests, then the mismatched ranges row by row).
    #[arg(long)]
    detect_deletes: bool,
}

#[derive(Args)]
struct PipelineArgs {
    /// The pipeline file (see pipelines/README.md).
    pipeline: PathBuf,
    /// Parallel readers and writers per table, and CPU threads (default: the file's, else the cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Rows per record batch (default: the file's, else 8192).
    #[arg(long)]
    batch_rows: Option<usize>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum IfExistsArg {
    Fail,
    Truncate,
    Append,
}

#[derive(Args, Clone)]
struct Tuning {
    /// Key ranges per table (default: from table size, up to 4 per worker).
    #[arg(long)]
    partitions: Option<usize>,
    /// Parallel readers and writers per table, and CPU threads.
    #[arg(long, default_value_t = default_workers())]
    workers: usize,
    /// Rows per record batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
}

/// The two databases and the tables of a copy or a verification.
#[derive(Args)]
struct Endpoints {
    /// Source database URL: sqlite://path.db, postgres://user@host:5432/db, mysql://user@host:3306/db.
    #[arg(long)]
    from: String,
    /// Target database URL (same forms as --from), with tables of the same names.
    #[arg(long)]
    to: String,
    /// Table (repeatable; default: every table of the source).
    #[arg(long = "table")]
    tables: Vec<String>,
}

#[derive(Args)]
struct CopyArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tuning: Tuning,
    /// What to do when a target table already holds rows.
    #[arg(long, value_enum, default_value_t = IfExistsArg::Fail)]
    if_exists: IfExistsArg,
    /// Skip verification.
    #[arg(long)]
    no_verify: bool,
    /// Also recreate the source's foreign keys (after every table is loaded).
    #[arg(long)]
    foreign_keys: bool,
    /// Times a range that fails transiently (lost connection, deadlock, server restart) is copied
    /// again, with exponential backoff.
    #[arg(long, default_value_t = barge_exec::DEFAULT_RETRIES)]
    retries: u32,
    /// Keep the run's ledger here (a SQLite file, or postgres://…), so that --resume can continue it.
    #[arg(long)]
    state: Option<String>,
    /// Continue the copy recorded in --state that died: committed ranges are kept, the others are
    /// cleared in the target and loaded again.
    #[arg(long, requires = "state")]
    resume: bool,
    /// Copy only about this many rows of each table, as whole key ranges spread over the key
    /// space (what `barge bench` measures with).
    #[arg(long, hide = true)]
    sample_rows: Option<u64>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tuning: Tuning,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Rows in the largest table.
    #[arg(long, default_value_t = DEMO_ROWS)]
    rows: u64,
    /// Where source.db and target.db are written.
    #[arg(long, default_value = "target/barge-demo")]
    dir: PathBuf,
    #[command(flatten)]
    tuning: Tuning,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs the CLI and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            let code = match error.downcast_ref::<Error>() {
                Some(e) if e.is_usage() => EXIT_USAGE,
                _ => EXIT_RUNTIME,
            };
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match (verbose, std::env::var("BARGE_LOG").ok().as_deref()) {
        (0, Some("error")) => LevelFilter::ERROR,
        (0, Some("info")) => LevelFilter::INFO,
        (0, Some("debug")) => LevelFilter::DEBUG,
        (0, Some("trace")) => LevelFilter::TRACE,
        (0, _) => LevelFilter::WARN,
        (1, _) => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| render::LogWriter)
        .try_init();
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Copy(args) => copy(args),
        Command::Verify(args) => verify(args),
        Command::Demo(args) => demo(args),
        Command::Plan(args) => plan(args),
        Command::Run(args) => run_pipeline(args),
        Command::Bench(args) => bench(args),
    }
}

fn load_pipeline(args: &PipelineArgs) -> Result<(barge_pipeline::Pipeline, usize, usize), Error> {
    let pipeline = barge_pipeline::Pipeline::load(&args.pipeline)?;
    let workers = args.workers.or(pipeline.workers).unwrap_or_else(default_workers);
    let batch_rows = args.batch_rows.or(pipeline.batch_rows).unwrap_or(DEFAULT_BATCH_ROWS);
    if workers == 0 || batch_rows == 0 {
        return Err(Error::Config("--workers and --batch-rows must be at least 1".into()));
    }
    Ok((pipeline, workers, batch_rows))
}

fn plan(args: PipelineArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, workers, _) = load_pipeline(&args)?;
    // Incremental tables plan from the default ledger's watermarks; planning creates no ledger.
    let (name, spec) = default_state(&pipeline);
    let watermarks = if std::path::Path::new(&spec).exists() {
        watermarks(open_state(&spec)?.as_ref(), &name, &pipeline)?
    } else {
        Default::default()
    };
    let prepared = pipeline::prepare(&pipeline, workers, &watermarks, false)?;
    if args.json {
        println!("{}", serde_json::to_string(&prepared.report)?);
    } else {
        println!("{}", pipeline::render(&prepared.report));
    }
    if prepared.report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {}", pipeline::risks_error(&prepared.report));
        Ok(ExitCode::from(EXIT_USAGE))
    }
}

/// Opens a state store: `postgres://…` is a schema in PostgreSQL, anything else a SQLite file.
fn open_state(spec: &str) -> Result<Arc<dyn barge_core::state::StateStore>, Error> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        Ok(Arc::new(barge_postgres::state::PgState::open(spec)?))
    } else {
        Ok(Arc::new(barge_sqlite::state::SqliteState::open(std::path::Path::new(spec))?))
    }
}

/// Starts a run's ledger, or reads it back to resume.
fn run_state(
    store: Arc<dyn barge_core::state::StateStore>,
    name: &str,
    fingerprint: &str,
    resume: bool,
) -> Result<barge_exec::RunState, Error> {
    let resume = if resume {
        Some(store.resume(name, fingerprint)?)
    } else {
        store.start(name, fingerprint)?;
        None
    };
    Ok(barge_exec::RunState { store, name: name.to_string(), resume })
}

/// The recorded high-water marks of a pipeline's incremental tables.
fn watermarks(
    store: &dyn barge_core::state::StateStore,
    name: &str,
    pipeline: &barge_pipeline::Pipeline,
) -> Result<std::collections::HashMap<String, barge_core::Scalar>, Error> {
    let mut marks = std::collections::HashMap::new();
    for table in pipeline.incremental_tables() {
        if let Some(mark) = store.watermark(name, table)? {
            marks.insert(table.to_string(), mark);
        }
    }
    Ok(marks)
}

/// The default ledger of a pipeline file: NAME.state.db beside it.
fn default_state(pipeline: &barge_pipeline::Pipeline) -> (String, String) {
    let name = pipeline.path.file_stem().map_or("pipeline".into(), |s| s.to_string_lossy().into_owned());
    let spec = pipeline.path.with_file_name(format!("{name}.state.db")).display().to_string();
    (name, spec)
}

fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex().to_string()
}

fn run_pipeline(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (mut pipeline, workers, batch_rows) = load_pipeline(&args.pipeline)?;
    let text = std::fs::read_to_string(&pipeline.path)?;
    let (name, default_spec) = default_state(&pipeline);
    let state_spec = args.state.clone().unwrap_or(default_spec);
    if args.resume {
        // The ledger decides what the target holds: nothing is truncated or refused as non-empty.
        pipeline.if_exists = IfExists::Append;
    }
    let store = open_state(&state_spec)?;
    let watermarks = watermarks(store.as_ref(), &name, &pipeline)?;
    let prepared = pipeline::prepare(&pipeline, workers, &watermarks, args.detect_deletes)?;
    if !prepared.report.ok {
        return Err(pipeline::risks_error(&prepared.report).into());
    }
    // The ledger starts once the plan is accepted and before anything is written (see copy).
    let print = fingerprint(&[&text, &pipeline.source, &pipeline.target]);
    let state = run_state(store, &name, &print, args.resume)?;
    for table in &prepared.report.tables {
        for risk in table.risks.iter().filter(|r| r.accepted) {
            tracing::warn!(
                "table `{}`, column `{}`: accepted risk {}: {}",
                table.target_table,
                risk.column,
                risk.risk.name(),
                risk.detail
            );
        }
    }
    let progress = render::progress();
    let report = pipeline::execute(&pipeline, &prepared, workers, batch_rows, Some(state), progress.as_ref())?;
    if args.pipeline.json {
        let mut value = serde_json::to_value(&report)?;
        value["plan"] = serde_json::to_value(&prepared.report)?;
        println!("{value}");
    } else {
        println!("{}", render::copy_summary(&report));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISMATCH) })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let options = bench::BenchOptions {
        from: &args.endpoints.from,
        to: &args.endpoints.to,
        tables: &args.endpoints.tables,
        sample_rows: args.sample_rows,
        workers: &args.workers,
        batch_rows: args.batch_rows,
    };
    let report = bench::run(&options)?;
    if let Some(dir) = &args.report {
        bench::write_report(&report, dir)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", bench::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_tuning(tuning: &Tuning) -> Result<(), Error> {
    if tuning.workers == 0 || tuning.batch_rows == 0 || tuning.partitions == Some(0) {
        return Err(Error::Config("--workers, --batch-rows and --partitions must be at least 1".into()));
    }
    Ok(())
}

fn request(endpoints: &Endpoints, tuning: &Tuning) -> CopyRequest {
    CopyRequest {
        tables: endpoints.tables.iter().map(TableRequest::named).collect(),
        partitions: tuning.partitions,
        workers: tuning.workers,
        ..CopyRequest::default()
    }
}

fn options(tuning: &Tuning, verify: bool) -> ExecOptions {
    ExecOptions::new(tuning.workers, tuning.batch_rows, verify)
}

fn copy(args: CopyArgs) -> anyhow::Result<ExitCode> {
    check_tuning(&args.tuning)?;
    let report = copy_between(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", render::copy_summary(&report));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISMATCH) })
}

/// Plans (writing nothing), then copies. Shared by `copy` and `demo`.
fn copy_between(args: &CopyArgs) -> Result<barge_exec::CopyReport, Error> {
    let (from, to) = (args.endpoints.from.as_str(), args.endpoints.to.as_str());
    let source_engine = engines::for_url(from)?;
    let target_engine = engines::for_url(to)?;
    target_engine.check_url(to)?;
    if source_engine.name() == target_engine.name() && source_engine.same_database(from, to) {
        return Err(Error::Config("source and target are the same database".into()));
    }
    let source = source_engine.open_source(from)?;
    let source_plan = plan_sources(
        source.as_ref(),
        &CopyRequest { sample_rows: args.sample_rows, ..request(&args.endpoints, &args.tuning) },
    )?;
    let target = target_engine.open_target(to)?;
    let if_exists = match (args.resume, args.if_exists) {
        (true, _) | (false, IfExistsArg::Append) => IfExists::Append,
        (false, IfExistsArg::Fail) => IfExists::Fail,
        (false, IfExistsArg::Truncate) => IfExists::Truncate,
    };
    let plan = plan_targets(target.as_ref(), source_plan, if_exists)?;
    // The ledger starts once the plan is valid and before anything is written: a run refused for
    // bad input leaves the ledger of an earlier interrupted run to resume.
    let state = match &args.state {
        Some(spec) => {
            let if_exists = format!("{:?}", args.if_exists as u8);
            let tables = args.endpoints.tables.join(",");
            let print = fingerprint(&[from, to, &tables, &if_exists]);
            Some(run_state(open_state(spec)?, "copy", &print, args.resume)?)
        }
        None => None,
    };
    let progress = render::progress();
    let open_reader = || target_engine.open_source(to);
    barge_exec::copy(
        source.as_ref(),
        target.as_ref(),
        &open_reader,
        &plan,
        &ExecOptions {
            foreign_keys: args.foreign_keys,
            retries: args.retries,
            state,
            ..options(&args.tuning, !args.no_verify)
        },
        progress.as_ref(),
    )
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    check_tuning(&args.tuning)?;
    let Endpoints { from, to, .. } = &args.endpoints;
    let source_engine = engines::for_url(from)?;
    let target_engine = engines::for_url(to)?;
    let source = source_engine.open_source(from)?;
    let target: Arc<dyn Source> = target_engine.open_source(to).map_err(|e| match e {
        Error::SourceNotFound(db) => Error::Config(format!("target database not found: {db}")),
        other => other,
    })?;
    let plan = plan_sources(source.as_ref(), &request(&args.endpoints, &args.tuning))?;
    let progress = render::progress();
    let report =
        barge_exec::verify(source.as_ref(), target.as_ref(), &plan, &options(&args.tuning, true), progress.as_ref())?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", render::verify_summary(&report));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISMATCH) })
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    check_tuning(&args.tuning)?;
    std::fs::create_dir_all(&args.dir)?;
    let source_path = args.dir.join("source.db");
    let target_path = args.dir.join("target.db");
    let generated = Instant::now();
    let tables = barge_sqlite::demo::create_demo_source(&source_path, args.rows)?;
    let generate_seconds = generated.elapsed().as_secs_f64();
    if !args.json {
        let rows: u64 = tables.tables.iter().map(|(_, n)| n).sum();
        eprintln!(
            "generated {} ({rows} rows in {} tables) in {generate_seconds:.2}s",
            source_path.display(),
            tables.tables.len()
        );
    }
    if target_path.exists() {
        std::fs::remove_file(&target_path)?;
    }
    let copy_args = CopyArgs {
        endpoints: Endpoints {
            from: format!("sqlite://{}", source_path.display()),
            to: format!("sqlite://{}", target_path.display()),
            tables: Vec::new(),
        },
        tuning: args.tuning.clone(),
        if_exists: IfExistsArg::Fail,
        no_verify: false,
        // SQLite cannot add foreign keys to loaded tables; the demo's target is SQLite.
        foreign_keys: false,
        retries: barge_exec::DEFAULT_RETRIES,
        state: None,
        resume: false,
        sample_rows: None,
        json: args.json,
    };
    let report = copy_between(&copy_args)?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["generate_seconds"] = serde_json::json!(generate_seconds);
        value["source"] = serde_json::json!(copy_args.endpoints.from);
        value["target"] = serde_json::json!(copy_args.endpoints.to);
        println!("{value}");
    } else {
        println!("{}", render::copy_summary(&report));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISMATCH) })
}
