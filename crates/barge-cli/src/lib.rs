//! # barge-cli
//!
//! The `barge` command: parses arguments, opens engines through the registry in [`engines`],
//! runs the shared preflight (`barge_plan::preflight`; for pipeline files
//! `barge_pipeline::preview`), runs the plan (barge-exec) and reports ([`render`]). The only crate that uses
//! `anyhow` and knows about exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | runtime failure |
//! | 2 | usage or configuration error (nothing written) |
//! | 3 | verification mismatch |
//! | 4 | completed, but some tables failed (the others copied and verified) |

mod bench;
mod distributed;
mod engines;
mod migrate;
mod render;
mod scaling;
mod stalls;
mod status_page;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use barge_core::{Error, RejectLog, Source};
use barge_exec::{ExecOptions, Ledger};
use barge_pipeline::preview;
use barge_plan::{CopyRequest, IfExists, TableRequest, plan_sources};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default rows per record batch: large enough to amortise per-batch work, small enough that the
/// bounded queues hold a few MB.
const DEFAULT_BATCH_ROWS: usize = 8192;
/// Rows in the demo's largest table.
const DEMO_ROWS: u64 = 1_000_000;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_MISMATCH: u8 = 3;
const EXIT_PARTIAL: u8 = 4;

/// The exit code of a copy's report: 0, 3 (a verification mismatch), 4 (some tables failed, the
/// others copied), or, when every table failed, 2 (all for fixable input) or 1.
fn copy_exit(report: &barge_exec::CopyReport) -> ExitCode {
    let failed = report.tables.iter().filter(|t| t.error.is_some()).count();
    if failed > 0 {
        for t in report.tables.iter().filter(|t| t.error.is_some()) {
            let error = t.error.as_ref().expect("a failed table's error");
            eprintln!("error: table `{}` failed: {} ({})", t.table, error.message, error.target);
        }
        let all_usage = report.tables.iter().filter_map(|t| t.error.as_ref()).all(|e| e.usage);
        return ExitCode::from(match (failed < report.tables.len(), all_usage) {
            (true, _) => EXIT_PARTIAL,
            (false, true) => EXIT_USAGE,
            (false, false) => EXIT_RUNTIME,
        });
    }
    if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISMATCH) }
}

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
    Plan(PlanArgs),
    /// Run a pipeline file: its plan, then copy (with transforms and reject files) and verify.
    Run(RunArgs),
    /// Measure throughput on a sample of each table, per worker count, in a scratch place of the
    /// target it creates and drops, and forecast the whole copy.
    Bench(BenchArgs),
    /// List the tables of a database: estimated rows, size, key, and why one cannot be copied.
    Tables(TablesArgs),
    /// Copy tables (of two URLs, or a pipeline file's), then keep the target current with the
    /// source's committed changes (PostgreSQL logical decoding, MySQL's binlog) until stopped,
    /// or `--until caught-up`.
    Sync(sync::SyncArgs),
    /// A zero-downtime migration of a live database (blue-green): `start` copies and keeps the
    /// target current and validated, `switchover` moves the writes with a short freeze, then
    /// `rollback` or `complete`; `status` shows where it is.
    Migrate(migrate::MigrateArgs),
    /// Claim and copy ranges of distributed runs (`run --distributed`) kept in a PostgreSQL state
    /// store, until they are done: start any number, on any machines.
    Worker(distributed::WorkerArgs),
    /// The distributed runs of a state store: ranges by state, the workers holding them, stalls.
    Status(distributed::StatusArgs),
}

#[derive(Args)]
struct TablesArgs {
    /// Database URL (postgres://, mysql://, sqlite://).
    url: String,
    /// Leave out tables whose name matches (`*` and `?` wildcards; repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Source database URL (not with --generate).
    #[arg(long, required_unless_present = "generate")]
    from: Option<String>,
    /// Target database URL: a scratch place in it is benchmarked (with --generate: where the
    /// synthetic tables are created).
    #[arg(long)]
    to: String,
    /// Table (repeatable; default: every table of the source).
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Instead of benchmarking: create deterministic synthetic tables in --to, generated by the
    /// database itself (comma-separated: orders, events, wide).
    #[arg(long, value_delimiter = ',', conflicts_with = "from")]
    generate: Vec<String>,
    /// Rows of each generated table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows sampled per table: whole key ranges spread over the key space.
    #[arg(long, default_value_t = 200_000)]
    sample_rows: u64,
    /// Instead of --sample-rows: size each run to about this many seconds (a short calibration
    /// run measures the rate first).
    #[arg(long, conflicts_with = "sample_rows")]
    sample_seconds: Option<f64>,
    /// Worker counts to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Rows per record batch.
    #[arg(long)]
    batch_rows: Option<usize>,
    /// Machine counts the scaling model forecasts a distributed run on (`barge worker` on each,
    /// with the best --workers count tried), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    machines: Vec<usize>,
    /// Each machine's and server's network bandwidth the scaling model assumes, MB/s each way
    /// (1250: 10 Gbit/s).
    #[arg(long, default_value_t = bench::DEFAULT_NETWORK_MB_PER_S)]
    network_mb_per_s: f64,
    /// Write report.html, report.json and throughput.svg into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Also forecast the copy's time from a `barge bench` of the pipeline's tables (a sample
    /// copied into a scratch place of the target, removed after), and for a `big-bang`
    /// migration the downtime it means.
    #[arg(long)]
    forecast: bool,
    /// About how long the forecast's sample copy runs, in seconds.
    #[arg(long, default_value_t = 3.0, requires = "forecast")]
    forecast_seconds: f64,
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
    /// Never lock the source to read it as one snapshot (see `barge copy --no-lock`).
    #[arg(long)]
    no_lock: bool,
    /// Stop at the first table that fails (see `barge copy --fail-fast`).
    #[arg(long)]
    fail_fast: bool,
    /// Do not add the source's foreign keys to the tables the run creates (see `barge copy`).
    #[arg(long)]
    no_foreign_keys: bool,
    /// Serve a live status page (and `/status.json`) of the copy at this address.
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<String>,
    /// Serve metrics in Prometheus' text format at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Share the run with `barge worker` processes through the --state store (PostgreSQL): this
    /// process plans, makes the tables, queues the ranges, waits for the workers, then finishes
    /// and verifies.
    #[arg(long, requires = "state")]
    distributed: bool,
    /// A table (a distributed run: a range) without progress for this many seconds is reported
    /// on stderr with what its target sessions wait on and who holds it.
    #[arg(long, default_value_t = 60.0)]
    stall_after: f64,
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
    /// Bytes per record batch (see `barge copy --batch-bytes`).
    #[arg(long, value_parser = parse_bytes, default_value = "4MiB")]
    batch_bytes: usize,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// What to do with a value the target cannot store (`--unrepresentable`).
#[derive(Clone, Copy, ValueEnum)]
enum ValuePolicyArg {
    Error,
    Null,
    Reject,
}

impl From<ValuePolicyArg> for barge_core::values::ValuePolicy {
    fn from(arg: ValuePolicyArg) -> Self {
        match arg {
            ValuePolicyArg::Error => Self::Error,
            ValuePolicyArg::Null => Self::Null,
            ValuePolicyArg::Reject => Self::Reject,
        }
    }
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
    /// Bytes per record batch: a batch also closes once it holds this much (`4MiB`, `512KB`,
    /// or bytes); bytes in flight between readers and writers are bounded by a few batches.
    #[arg(long, value_parser = parse_bytes, default_value = "4MiB")]
    batch_bytes: usize,
}

/// A size: bytes, or a number with `KB`/`MB`/`GB` (×1000) or `KiB`/`MiB`/`GiB` (×1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().map_err(|_| format!("`{text}` is not a size (e.g. 16MiB)"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KB, MB, GB, KiB, MiB or GiB)")),
    };
    match number.checked_mul(factor) {
        Some(0) | None => Err(format!("`{text}` is not a usable size")),
        Some(bytes) => Ok(bytes),
    }
}

/// The two databases and the tables of a copy or a verification.
#[derive(Args, Clone)]
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
    /// Leave out the source tables this names: a name or a pattern with `*` and `?`
    /// (repeatable; `--exclude 'audit_*'`). Not with --table.
    #[arg(long, value_name = "PATTERN", conflicts_with = "tables")]
    exclude: Vec<String>,
    /// MySQL/MariaDB source: read zero dates (`0000-00-00`, `2024-00-15`) as NULL, counted per
    /// column in the summary and the log (null, the default), or fail the table on the first (error).
    #[arg(long, value_enum)]
    zero_dates: Option<ZeroDates>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ZeroDates {
    Null,
    Error,
}

impl Endpoints {
    /// The source URL with the options given as flags (`--zero-dates` is the MySQL engine's
    /// `zero_dates` URL parameter).
    /// The source URL as read (with `--zero-dates`, and turned to the schema that qualified
    /// `--table` names give), and the table names alone.
    fn resolved(&self) -> Result<(String, Vec<String>), Error> {
        let from = self.source_url()?;
        if !self.tables.iter().any(|t| t.contains('.')) {
            return Ok((from, self.tables.clone()));
        }
        let engine = engines::registry().for_url(&from)?;
        // A table whose own name holds a dot stays as it is.
        let listed = engine.open_source(&from)?.list_tables()?;
        let (mut namespace, mut names): (Option<&str>, Vec<String>) = (None, Vec::new());
        for table in &self.tables {
            match table.split_once('.') {
                Some((schema, name)) if !listed.contains(table) => {
                    if let Some(other) = namespace.filter(|n| *n != schema) {
                        return Err(Error::Config(format!(
                            "--table names tables of `{other}` and of `{schema}`: one schema per run \
                             (copy each in a run of its own)"
                        )));
                    }
                    namespace = Some(schema);
                    names.push(name.to_string());
                }
                _ => names.push(table.clone()),
            }
        }
        match namespace {
            Some(schema) => Ok((engine.in_namespace(&from, schema)?, names)),
            None => Ok((from, names)),
        }
    }

    fn source_url(&self) -> Result<String, Error> {
        let Some(zero_dates) = self.zero_dates else { return Ok(self.from.clone()) };
        let engine = engines::registry().for_url(&self.from)?;
        if !engine.schemes().contains(&"mysql") {
            return Err(Error::Config(format!(
                "--zero-dates applies to MySQL and MariaDB sources; a {} source has no zero dates",
                engine.name()
            )));
        }
        let value = match zero_dates {
            ZeroDates::Null => "null",
            ZeroDates::Error => "error",
        };
        Ok(barge_core::url::with_param(&self.from, "zero_dates", value))
    }
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
    /// Do not recreate the source's foreign keys (they are added, with their actions, after every
    /// table is loaded).
    #[arg(long, conflicts_with = "foreign_keys")]
    no_foreign_keys: bool,
    /// Foreign keys are recreated by default; kept for scripts that ask for them.
    #[arg(long, hide = true)]
    foreign_keys: bool,
    /// Stop at the first table that fails, instead of reporting it and copying the others.
    #[arg(long)]
    fail_fast: bool,
    /// Never lock the source to read it as one snapshot (MySQL/MariaDB sources otherwise hold
    /// FLUSH TABLES WITH READ LOCK for a moment while every reader starts its transaction): the
    /// copy is then not one snapshot, and says so.
    #[arg(long)]
    no_lock: bool,
    /// Times a range that fails transiently (lost connection, deadlock, server restart) is copied
    /// again, with exponential backoff.
    #[arg(long, default_value_t = barge_exec::DEFAULT_RETRIES)]
    retries: u32,
    /// A value the target cannot store in any column (NaN or ±Infinity into MySQL, text holding
    /// NUL into PostgreSQL): `error` stops the table naming the row, `null` writes NULL, `reject`
    /// writes the row to the reject file (needs --error-budget).
    #[arg(long, value_enum, default_value_t = ValuePolicyArg::Error)]
    unrepresentable: ValuePolicyArg,
    /// Rows that may be rejected, a count (`100`) or a share of the rows read (`0.5%`), before the
    /// run stops; rejected rows go to --rejects.
    #[arg(long, value_name = "N|P%")]
    error_budget: Option<String>,
    /// Where `<table>.rejects.jsonl` files go.
    #[arg(long, value_name = "DIR", default_value = "rejects")]
    rejects: PathBuf,
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
    /// Show the plan and write nothing: each table's partitions, DDL and columns (source type →
    /// target type, exact or lossy), how the schema would be made, and what would not be migrated.
    #[arg(long, conflicts_with_all = ["resume", "state"])]
    dry_run: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// A table whose copy makes no progress for this many seconds is reported on stderr, with
    /// what its target sessions wait on and who holds it.
    #[arg(long, default_value_t = 60.0)]
    stall_after: f64,
    /// Share the copy with `barge worker --run copy` processes through the --state store
    /// (PostgreSQL), as `run --distributed` does: this process plans, makes the tables, queues
    /// the ranges, waits for the workers, then finishes and verifies. The URLs must not hold a
    /// password (the workers read the command from the store): give it through each process's
    /// PGPASSWORD or MYSQL_PWD, or use a pipeline with `${ENV}` references.
    #[arg(long, requires = "state", conflicts_with_all = ["resume", "dry_run"])]
    distributed: bool,
    /// Tables without a primary key are keyed by a unique index over NOT NULL columns (set by
    /// `sync`, which applies changes by key; no flag).
    #[arg(skip)]
    unique_key: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tuning: Tuning,
    /// The `barge sync` stream that keeps the target current (default: the one the target's
    /// barge_sync table names, when there is one): differences are re-checked once it applied
    /// past the position they were read at, and only those that persist are reported.
    #[arg(long)]
    stream: Option<String>,
    /// Seconds to wait for the stream to apply past a position before reporting the differences
    /// as they are.
    #[arg(long, default_value_t = 60)]
    recheck_timeout: u64,
    /// Report differences as the first pass saw them, without waiting for a sync stream.
    #[arg(long, conflicts_with = "stream")]
    no_recheck: bool,
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
            if e.use_stderr() && std::env::args().any(|a| a == "--json") {
                // `--json` prints one object even when the command line itself is wrong.
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
                let report = serde_json::json!({
                    "ok": false,
                    "exit_code": EXIT_USAGE,
                    "error": {"kind": "usage", "message": first, "table": null, "column": null},
                });
                println!("{report}");
            }
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose);
    let json = cli.command.wants_json();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            let barge_error = error.downcast_ref::<Error>();
            let code = match barge_error {
                Some(e) if e.is_usage() => EXIT_USAGE,
                _ => EXIT_RUNTIME,
            };
            eprintln!("error: {error:#}");
            if json {
                // `--json` always prints one object, failures included.
                let (table, column) = barge_error.map_or((None, None), Error::table_column);
                let report = serde_json::json!({
                    "ok": false,
                    "exit_code": code,
                    "error": {
                        "kind": barge_error.map_or("runtime", Error::kind),
                        "message": format!("{error:#}"),
                        "table": table,
                        "column": column,
                    },
                });
                println!("{report}");
            }
            ExitCode::from(code)
        }
    }
}

impl Command {
    /// Whether the command was asked for a JSON report on stdout.
    fn wants_json(&self) -> bool {
        match self {
            Command::Copy(args) => args.json,
            Command::Verify(args) => args.json,
            Command::Demo(args) => args.json,
            Command::Plan(args) => args.pipeline.json,
            Command::Run(args) => args.pipeline.json,
            Command::Bench(args) => args.json,
            Command::Tables(args) => args.json,
            Command::Sync(args) => args.json,
            Command::Migrate(args) => args.json(),
            Command::Worker(args) => args.json(),
            Command::Status(args) => args.json(),
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
    // barge's own crates at the asked level; drivers and libraries only warn (their debug lines
    // would bury barge's).
    use tracing_subscriber::layer::SubscriberExt;
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("barge", level)
        .with_default(level.min(LevelFilter::WARN));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| render::LogWriter)
        .finish()
        .with(targets);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Copy(args) => copy(args),
        Command::Verify(args) => verify(args),
        Command::Demo(args) => demo(args),
        Command::Plan(args) => plan(args),
        Command::Run(args) => run_pipeline(args),
        Command::Bench(args) => bench(args),
        Command::Tables(args) => tables(args),
        Command::Sync(args) => sync::sync(args),
        Command::Migrate(args) => migrate::migrate(args),
        Command::Worker(args) => distributed::worker(args),
        Command::Status(args) => distributed::status(args),
    }
}

/// `barge tables URL`: what a copy of this database would read.
fn tables(args: TablesArgs) -> anyhow::Result<ExitCode> {
    let source = engines::registry().for_url(&args.url)?.open_source(&args.url)?;
    let left_out = barge_plan::excluded(&args.exclude)?;
    let mut listed = Vec::new();
    for name in source.list_tables()?.into_iter().filter(|t| !left_out(t)) {
        let bytes = source.table_bytes(&name)?;
        let entry = match source.table(&name) {
            Ok(info) => {
                let names = |cols: &[usize]| -> Vec<String> {
                    cols.iter().map(|&i| info.schema.field(i).name().clone()).collect()
                };
                let key = match &info.key {
                    barge_core::KeySpec::Primary(cols) => {
                        serde_json::json!({"kind": "primary", "columns": names(cols)})
                    }
                    barge_core::KeySpec::Locator(locator) => serde_json::json!({"kind": "locator", "locator": locator}),
                    barge_core::KeySpec::None => serde_json::json!({"kind": "none"}),
                };
                serde_json::json!({"table": name, "estimated_rows": info.estimated_rows, "bytes": bytes,
                                   "columns": info.schema.fields().len(), "key": key})
            }
            // A table that cannot be described is listed with the reason a copy would give.
            Err(error) if error.is_usage() => {
                let (_, column) = error.table_column();
                serde_json::json!({"table": name, "bytes": bytes, "error": {"kind": error.kind(),
                                   "message": error.to_string(), "column": column}})
            }
            Err(error) => return Err(error.into()),
        };
        listed.push(entry);
    }
    if args.json {
        println!("{}", serde_json::json!({"ok": true, "database": source.display_name(), "tables": listed}));
    } else {
        println!("{}", render::tables(&source.display_name(), &listed));
    }
    Ok(ExitCode::SUCCESS)
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

fn plan(plan_args: PlanArgs) -> anyhow::Result<ExitCode> {
    let args = &plan_args.pipeline;
    let (pipeline, workers, _) = load_pipeline(args)?;
    // Incremental tables plan from the default ledger's watermarks; planning creates no ledger.
    let (name, spec) = default_state(&pipeline);
    let watermarks = if std::path::Path::new(&spec).exists() {
        watermarks(open_ledger(&spec)?.as_ref(), &name, &pipeline)?
    } else {
        Default::default()
    };
    let prepared = preview::prepare(&engines::registry(), &pipeline, workers, &watermarks, false)
        .map_err(|e| target_not_empty_fix(e, PIPELINE_IF_EXISTS, None))?;
    let forecast = if plan_args.forecast {
        Some(bench::forecast_pipeline(&pipeline, workers, plan_args.forecast_seconds)?)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&prepared.report)?;
        if let Some(forecast) = &forecast {
            value["forecast"] = serde_json::to_value(forecast)?;
        }
        println!("{value}");
    } else {
        println!("{}", render::plan_summary(&prepared.report));
        if let Some(forecast) = &forecast {
            println!("{}", bench::render_forecast(forecast));
        }
    }
    if prepared.report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {}", preview::risks_error(&prepared.report));
        Ok(ExitCode::from(EXIT_USAGE))
    }
}

/// Opens the ledger store `--state` names: a URL of an engine that keeps ledgers, or a plain path
/// (a file, see [`engines::ledger_url`]).
fn open_ledger(spec: &str) -> Result<Arc<dyn barge_core::ledger::LedgerStore>, Error> {
    engines::registry().open_ledger(&engines::ledger_url(spec))
}

/// The ledger files a run is about to make: removed again when the run stops before its ledger
/// has started (bad input, a plan refused), so a run that wrote nothing leaves no state file.
/// Files that were there before are never touched.
struct NewLedgerFiles {
    spec: String,
    /// The files that were there before (left alone).
    existed: Vec<std::path::PathBuf>,
    kept: bool,
}

impl NewLedgerFiles {
    fn before(spec: &str) -> NewLedgerFiles {
        let existed = engines::ledger_files(spec).into_iter().filter(|f| f.exists()).collect();
        NewLedgerFiles { spec: spec.to_string(), existed, kept: false }
    }

    /// The ledger has started: its files stay, to resume or to read.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NewLedgerFiles {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Listed now: a run's lock file is named after the run.
        for file in engines::ledger_files(&self.spec) {
            if file.exists() && !self.existed.contains(&file) {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// What a pipeline says instead of `--if-exists`.
const PIPELINE_IF_EXISTS: &str = r#"set `if_exists = "truncate"` or `"append"` under [defaults] in the pipeline"#;

/// An earlier run of `name` the ledger holds that did not finish (when not resuming it): the
/// store, for a hint to `--resume` it.
fn unfinished(store: &dyn barge_core::ledger::LedgerStore, name: &str, resuming: bool) -> Option<String> {
    if resuming {
        return None;
    }
    let record = store.unfinished(name).ok()??;
    let done: usize = record.tables.values().map(|t| t.done.len()).sum();
    let planned: usize = record.tables.values().map(|t| t.ranges.len()).sum();
    Some(format!("{} holds an unfinished run ({done} of {planned} ranges committed)", store.describe()))
}

/// A target table that holds rows, with the fix this command accepts, and `--resume` first when
/// the ledger holds an earlier run that did not finish.
fn target_not_empty_fix(error: Error, fix: &str, earlier: Option<String>) -> Error {
    match error {
        Error::TargetNotEmpty { table, rows, .. } => {
            let fix = match earlier {
                Some(earlier) => format!("{earlier}: pass --resume to finish it; or {fix}"),
                None => fix.to_string(),
            };
            Error::TargetNotEmpty { table, rows, fix }
        }
        other => other,
    }
}

/// Refuses, before anything is opened, a `--state` no registered engine can keep a ledger in.
fn check_ledger(spec: &str) -> Result<(), Error> {
    let engine = engines::registry().for_url(&engines::ledger_url(spec))?;
    match engine.ledger_stores() {
        Some(_) => Ok(()),
        None => Err(Error::unsupported(engine.name(), "keep a run ledger (--state)")),
    }
}

/// The recorded high-water marks of a pipeline's incremental tables.
fn watermarks(
    store: &dyn barge_core::ledger::LedgerStore,
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
    let (name, default_spec) = default_state(&pipeline);
    let state_spec = args.state.clone().unwrap_or(default_spec);
    check_ledger(&state_spec)?;
    let new_files = NewLedgerFiles::before(&state_spec);
    if args.resume {
        // The ledger decides what the target holds: nothing is truncated or refused as non-empty.
        pipeline.if_exists = IfExists::Append;
    }
    let store = open_ledger(&state_spec)?;
    // The run is taken before planning, so a second process on it is refused at once.
    store.acquire(&name, &barge_core::ledger::Holder::current())?;
    let watermarks = watermarks(store.as_ref(), &name, &pipeline)?;
    // A versioned target schema: the versions before the rows make the tables the copy fills.
    let mut versions_applied = apply_versions(&pipeline, barge_pipeline::versions::Stage::BeforeData)?;
    let prepared = preview::prepare(&engines::registry(), &pipeline, workers, &watermarks, args.detect_deletes)
        .map_err(|e| target_not_empty_fix(e, PIPELINE_IF_EXISTS, unfinished(store.as_ref(), &name, args.resume)))?;
    if !prepared.report.ok {
        return Err(preview::risks_error(&prepared.report).into());
    }
    // The ledger starts once the plan is accepted and before anything is written (see copy).
    let print = fingerprint(&[&pipeline.text, &pipeline.source, &pipeline.target]);
    let ledger = Ledger::open(store, &name, &print, args.resume)?;
    new_files.keep();
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
    let progress = Arc::new(status_page::Watched::new(render::progress()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A distributed run's queue, as its coordinator last read it.
    let queue: Arc<std::sync::Mutex<Option<(distributed::Summary, usize)>>> = Arc::default();
    let served = {
        let (watched, done, counted, queued) = (progress.clone(), done.clone(), progress.clone(), queue.clone());
        status_page::Served {
            status: Arc::new(move || watched.status(done.load(std::sync::atomic::Ordering::SeqCst))),
            metrics: Arc::new(move || counted.metrics() + &distributed::queue_metrics(&queued)),
        }
    };
    let _served = status_page::serve_at(args.status_addr.as_deref(), args.metrics_addr.as_deref(), &served, "run")?;
    let mut options = ExecOptions {
        snapshot_lock: !args.no_lock,
        fail_fast: args.fail_fast,
        foreign_keys: !args.no_foreign_keys,
        batch_bytes: args.pipeline.batch_bytes,
        ..pipeline_options(&pipeline, workers, batch_rows, ledger)
    };
    let mut prepared = prepared;
    let shared = match args.distributed {
        true => {
            let spec = distributed::Spec {
                pipeline: pipeline.text.clone(),
                path: pipeline.path.display().to_string(),
                copy: None,
                fingerprint: print.to_string(),
                state: "copying".into(),
            };
            let watch = distributed::Watch { stall_after: args.stall_after, json: args.pipeline.json, shown: &queue };
            let ledger = options.ledger.clone().expect("a run keeps a ledger");
            let ledger = distribute(ledger, &pipeline.target, &mut prepared.preflight, &options, &spec, &watch)?;
            options.ledger = Some(ledger.clone());
            options.digests = Some(distributed::digests_by_workers(&ledger.store, &name));
            Some((ledger, spec))
        }
        false => None,
    };
    // A table that stops moving is reported with what its sessions wait on.
    let sessions = stalls::sessions();
    if options.fence.is_none() {
        options.fence = Some(sessions.clone());
    }
    let target = prepared.preflight.target.clone();
    let report = stalls::watching(target.as_ref(), &sessions, args.stall_after, progress.as_ref(), |progress| {
        execute(&prepared.preflight, &options, progress)
    });
    if let Some((ledger, spec)) = &shared {
        distributed::finished(ledger.store.as_ref(), &name, spec, &report)?;
    }
    let mut report = report?;
    if shared.is_some() {
        // Every range came from a worker, each read at its own instant.
        report.snapshot = Some(barge_core::SnapshotInfo {
            consistent: false,
            detail: "a distributed run: each range read by its worker at its own instant".into(),
        });
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    // Then the versions after the rows (indexes, foreign keys, backfills and their NOT NULLs),
    // once every table is in.
    if pipeline.schema.is_some() {
        if report.tables.iter().all(|t| t.error.is_none()) {
            versions_applied.extend(apply_versions(&pipeline, barge_pipeline::versions::Stage::All)?);
        } else {
            eprintln!(
                "schema: the versions after the rows were not applied (the copy did not finish); a rerun applies them"
            );
        }
    }
    if args.pipeline.json {
        let mut value = serde_json::to_value(&report)?;
        value["plan"] = serde_json::to_value(&prepared.report)?;
        value["schema_versions_applied"] = serde_json::to_value(&versions_applied)?;
        println!("{value}");
    } else if shared.is_some() {
        println!("{}", render::copy_summary_kept(&report, "copied by the workers"));
    } else {
        println!("{}", render::copy_summary(&report));
    }
    Ok(copy_exit(&report))
}

/// A distributed run's coordinator, before the usual finish: makes the tables and records the
/// plan, queues the ranges for `barge worker` processes and waits until they copied them all;
/// then returns the ledger as a `--resume` would take it (every range committed), and the
/// preflight's tables appended to, so the run goes on to finish the tables and verify them.
fn distribute(
    ledger: Ledger,
    target_url: &str,
    preflight: &mut barge_plan::Preflight,
    options: &ExecOptions,
    spec: &distributed::Spec,
    watch: &distributed::Watch<'_>,
) -> Result<Ledger, Error> {
    if ledger.store.work_queue().is_none() {
        return Err(Error::Config(format!(
            "{} cannot share a run: --distributed needs a PostgreSQL state store (--state postgres://…)",
            ledger.store.describe()
        )));
    }
    if ledger.resume.is_some() {
        return Err(Error::Config("a distributed run is not resumed with --resume: start it again".into()));
    }
    let plan = &preflight.plan;
    if let Some(keyless) = plan.tables.iter().find(|t| !t.output.key.is_primary()) {
        return Err(Error::Config(format!(
            "table `{}` has no primary key: a distributed run clears and reloads the ranges of a worker that died, \
             which needs one (copy it without --distributed, or set `key`)",
            keyless.source.name
        )));
    }
    // A range a lost worker held is cleared and loaded again: in a table appended to that holds
    // rows, that would delete rows the run did not write.
    for table in &plan.tables {
        if table.action == barge_plan::TableAction::Append
            && table.conflict == barge_core::Conflict::Error
            && preflight.target.table_rows(&table.target_table)? != Some(0)
        {
            return Err(Error::Config(format!(
                "table `{}` holds rows and is appended to: a distributed run clears and reloads the ranges of a \
                 worker that died, which would delete rows it did not write (use --if-exists truncate, or \
                 conflict = \"upsert\" in a pipeline)",
                table.source.name
            )));
        }
    }
    if engines::registry().for_url(target_url)?.name() == "sqlite" {
        return Err(Error::Config(
            "a distributed run writes from many processes and ends a lost worker's sessions: the target must be a \
             server (PostgreSQL, MySQL/MariaDB)"
                .into(),
        ));
    }
    let options = ExecOptions { prepare_only: true, ledger: Some(ledger.clone()), ..options.clone() };
    drop(execute(preflight, &options, &barge_exec::NoProgress)?);
    let target = preflight.target.clone();
    distributed::coordinate(&ledger.store, &ledger.name, spec, plan, target.as_ref(), watch)?;
    // Every range is committed: the run goes on as a resume of itself.
    let record = ledger.store.resume(&ledger.name, &spec.fingerprint)?;
    for table in &mut preflight.plan.tables {
        table.action = barge_plan::TableAction::Append;
    }
    Ok(Ledger { resume: Some(record), ..ledger })
}

/// Applies the pending versions of `stage` of the pipeline's versioned target schema (none
/// without a `[schema]` section), saying which on stderr.
fn apply_versions(
    pipeline: &barge_pipeline::Pipeline,
    stage: barge_pipeline::versions::Stage,
) -> Result<Vec<barge_pipeline::versions::VersionStatus>, Error> {
    let Some(spec) = &pipeline.schema else { return Ok(Vec::new()) };
    let target = engines::registry().for_url(&pipeline.target)?.open_target(&pipeline.target)?;
    let applied = barge_pipeline::versions::apply(spec, target.as_ref(), stage)?;
    for version in &applied {
        eprintln!("schema: applied {} ({}, checksum {})", version.name, version.stage, version.checksum);
    }
    Ok(applied)
}

/// What a pipeline file sets for its run: budgets, rejects, retries, the value policy and
/// verification (shared by `run` and `sync PIPELINE`).
fn pipeline_options(
    pipeline: &barge_pipeline::Pipeline,
    workers: usize,
    batch_rows: usize,
    ledger: Ledger,
) -> ExecOptions {
    ExecOptions {
        rejects: Some(Arc::new(RejectLog::new(&pipeline.rejects_dir))),
        run_budget: pipeline.error_budget,
        unrepresentable: pipeline.unrepresentable,
        retries: pipeline.retries.unwrap_or(barge_exec::DEFAULT_RETRIES),
        ledger: Some(ledger),
        ..ExecOptions::new(workers, batch_rows, pipeline.verify)
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.machines.contains(&0) || !(args.network_mb_per_s > 0.0 && args.network_mb_per_s.is_finite()) {
        return Err(Error::Config(
            "--machines takes counts of at least 1, --network-mb-per-s a positive number".into(),
        )
        .into());
    }
    if !args.generate.is_empty() {
        let engine = engines::registry().for_url(&args.to)?;
        let scratch = engine.scratch().ok_or_else(|| Error::unsupported(engine.name(), "generate synthetic tables"))?;
        for name in &args.generate {
            let columns = barge_core::synthetic::shape(name).ok_or_else(|| {
                Error::Config(format!(
                    "unknown synthetic table `{name}` (known: {})",
                    barge_core::synthetic::SHAPES.join(", ")
                ))
            })?;
            let started = Instant::now();
            scratch.generate(&args.to, name, &columns, args.rows)?;
            let seconds = started.elapsed().as_secs_f64();
            if args.json {
                println!("{}", serde_json::json!({"table": name, "rows": args.rows, "seconds": seconds}));
            } else {
                println!("generated {name}: {} rows in {seconds:.2}s", args.rows);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let from = args.from.clone().unwrap_or_default();
    let options = bench::BenchOptions {
        from: &from,
        to: &args.to,
        tables: &args.tables,
        sample: match args.sample_seconds {
            Some(seconds) => bench::Sample::Seconds(seconds),
            None => bench::Sample::Rows(args.sample_rows),
        },
        workers: &args.workers,
        batch_rows: args.batch_rows,
        machines: &args.machines,
        network_mb_per_s: args.network_mb_per_s,
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

fn request(endpoints: &Endpoints, tables: &[String], tuning: &Tuning) -> CopyRequest {
    CopyRequest {
        tables: tables.iter().map(TableRequest::named).collect(),
        exclude: endpoints.exclude.clone(),
        partitions: tuning.partitions,
        workers: tuning.workers,
        ..CopyRequest::default()
    }
}

fn options(tuning: &Tuning, verify: bool) -> ExecOptions {
    ExecOptions { batch_bytes: tuning.batch_bytes, ..ExecOptions::new(tuning.workers, tuning.batch_rows, verify) }
}

fn copy(args: CopyArgs) -> anyhow::Result<ExitCode> {
    check_tuning(&args.tuning)?;
    if args.distributed {
        // Refused before anything is opened: a URL with a password.
        distributed_copy_args(&args)?;
    }
    if args.dry_run {
        let (preflight, _) = plan_copy(&args)?;
        let title = format!("copy --dry-run, {} table(s)", preflight.plan.tables.len());
        let report = preview::dry_run(&preflight, title)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}\ndry run: nothing was written", render::plan_body(&report));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = copy_between(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if args.distributed {
        println!("{}", render::copy_summary_kept(&report, "copied by the workers"));
    } else {
        println!("{}", render::copy_summary(&report));
    }
    Ok(copy_exit(&report))
}

/// A copy's error budget and where its rejected rows go; `--unrepresentable reject` needs a budget.
fn copy_budget(args: &CopyArgs) -> Result<(barge_core::Budget, Option<Arc<RejectLog>>), Error> {
    let budget = match &args.error_budget {
        Some(text) => {
            barge_core::Budget::parse(text).map_err(|what| Error::Config(format!("--error-budget: {what}")))?
        }
        None => barge_core::Budget::None,
    };
    if matches!(args.unrepresentable, ValuePolicyArg::Reject) && !budget.tolerates_rejects() {
        return Err(Error::Config(
            "--unrepresentable reject needs --error-budget N|P% (how many rows may be rejected)".into(),
        ));
    }
    let rejects = budget.tolerates_rejects().then(|| Arc::new(RejectLog::new(&args.rejects)));
    Ok((budget, rejects))
}

/// Runs a preflight's plan: the copy, verifying with a reader of the target opened when needed.
fn execute(
    preflight: &barge_plan::Preflight,
    options: &ExecOptions,
    progress: &dyn barge_exec::Progress,
) -> Result<barge_exec::CopyReport, Error> {
    let open_reader = || preflight.open_target_reader();
    barge_exec::copy(
        preflight.source.as_ref(),
        preflight.target.as_ref(),
        &open_reader,
        &preflight.plan,
        options,
        progress,
    )
}

/// A copy's preflight (writing nothing), and its source URL as the copy reads it.
fn plan_copy(args: &CopyArgs) -> Result<(barge_plan::Preflight, String), Error> {
    let (from, tables) = args.endpoints.resolved()?;
    let if_exists = match (args.resume, args.if_exists) {
        (true, _) | (false, IfExistsArg::Append) => IfExists::Append,
        (false, IfExistsArg::Fail) => IfExists::Fail,
        (false, IfExistsArg::Truncate) => IfExists::Truncate,
    };
    // Each table may reject as many rows as the run (`--error-budget`).
    let (budget, _) = copy_budget(args)?;
    let request = |_: &dyn barge_core::EngineFactory| {
        let mut request = request(&args.endpoints, &tables, &args.tuning);
        for table in &mut request.tables {
            table.budget = budget;
        }
        Ok(CopyRequest {
            sample_rows: args.sample_rows,
            isolate: !args.fail_fast,
            budget,
            unique_key: args.unique_key,
            ..request
        })
    };
    let preflight = barge_plan::preflight(&engines::registry(), &from, &args.endpoints.to, request, if_exists)?;
    Ok((preflight, from))
}

/// Plans (writing nothing), then copies. Shared by `copy` and `demo`.
fn copy_between(args: &CopyArgs) -> Result<barge_exec::CopyReport, Error> {
    copy_between_with(args, None)
}

/// [`copy_between`], with the ledger store `held` open already (by `sync`, which holds it for
/// the whole run) instead of opening `--state`.
fn copy_between_with(
    args: &CopyArgs,
    held: Option<(Arc<dyn barge_core::ledger::LedgerStore>, String)>,
) -> Result<barge_exec::CopyReport, Error> {
    let (run_budget, rejects) = copy_budget(args)?;
    // The run is taken before anything else, so a second process on it is refused at once.
    let new_files = args.state.as_deref().filter(|_| held.is_none()).map(NewLedgerFiles::before);
    let run = held.as_ref().map_or_else(|| "copy".to_string(), |(_, run)| run.clone());
    let store = match (&args.state, held) {
        (_, Some((store, _))) => {
            store.acquire(&run, &barge_core::ledger::Holder::current())?;
            Some(store)
        }
        (Some(spec), None) => {
            check_ledger(spec)?;
            let store = open_ledger(spec)?;
            store.acquire(&run, &barge_core::ledger::Holder::current())?;
            Some(store)
        }
        (None, None) => None,
    };
    let (preflight, from) = plan_copy(args).map_err(|e| {
        let earlier = store.as_ref().and_then(|store| unfinished(store.as_ref(), &run, args.resume));
        target_not_empty_fix(e, "use --if-exists truncate or append", earlier)
    })?;
    let (from, to) = (from.as_str(), args.endpoints.to.as_str());
    // The ledger starts once the plan is valid and before anything is written: a run refused for
    // bad input leaves the ledger of an earlier interrupted run to resume.
    let if_exists = (args.if_exists as u8).to_string();
    let print = fingerprint(&[from, to, &args.endpoints.tables.join(","), &if_exists]);
    let ledger = match store {
        Some(store) => Some(Ledger::open(store, &run, &print, args.resume)?),
        None => None,
    };
    if let Some(files) = new_files {
        files.keep();
    }
    let progress = render::progress();
    let options = ExecOptions {
        unrepresentable: args.unrepresentable.into(),
        run_budget,
        rejects,
        foreign_keys: !args.no_foreign_keys,
        retries: args.retries,
        ledger,
        snapshot_lock: !args.no_lock,
        fail_fast: args.fail_fast,
        ..options(&args.tuning, !args.no_verify)
    };
    let (mut preflight, mut options) = (preflight, options);
    let shared = match (args.distributed, options.ledger.clone()) {
        (true, Some(ledger)) => {
            let spec = distributed::Spec {
                pipeline: String::new(),
                path: String::new(),
                copy: Some(distributed_copy_args(args)?),
                fingerprint: print.clone(),
                state: "copying".into(),
            };
            let queue = std::sync::Mutex::default();
            let watch = distributed::Watch { stall_after: args.stall_after, json: args.json, shown: &queue };
            let ledger = distribute(ledger, to, &mut preflight, &options, &spec, &watch)?;
            options.ledger = Some(ledger.clone());
            options.digests = Some(distributed::digests_by_workers(&ledger.store, &ledger.name));
            Some((ledger, spec))
        }
        _ => None,
    };
    let sessions = stalls::sessions();
    let options = ExecOptions { fence: options.fence.clone().or(Some(sessions.clone())), ..options };
    let report =
        stalls::watching(preflight.target.as_ref(), &sessions, args.stall_after, progress.as_ref(), |progress| {
            execute(&preflight, &options, progress)
        });
    if let Some((ledger, spec)) = &shared {
        distributed::finished(ledger.store.as_ref(), &ledger.name, spec, &report)?;
    }
    let mut report = report?;
    if shared.is_some() {
        report.snapshot = Some(barge_core::SnapshotInfo {
            consistent: false,
            detail: "a distributed copy: each range read by its worker at its own instant".into(),
        });
    }
    Ok(report)
}

/// The arguments of this `copy --distributed` after `copy`, as its workers parse them again:
/// without what only the coordinator uses (`--state`, `--distributed`, `--json`,
/// `--stall-after`). Refused when a URL holds a password, which would then be stored.
fn distributed_copy_args(args: &CopyArgs) -> Result<Vec<String>, Error> {
    for (side, url) in [("--from", &args.endpoints.from), ("--to", &args.endpoints.to)] {
        if barge_core::url::redact(url) != *url {
            return Err(Error::Config(format!(
                "{side} holds a password, and copy --distributed stores its command for the workers: give the \
                 password through PGPASSWORD or MYSQL_PWD in each process's environment, or use a pipeline \
                 with ${{ENV}} references (barge run PIPELINE --distributed)"
            )));
        }
    }
    let argv: Vec<String> = std::env::args().collect();
    let Some(at) = argv.iter().position(|a| a == "copy") else {
        return Err(Error::Config("copy --distributed: the command line has no `copy`".into()));
    };
    let mut kept = Vec::new();
    let mut rest = argv[at + 1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--distributed" | "--json" => {}
            "--state" | "--stall-after" => {
                rest.next();
            }
            other if other.starts_with("--state=") || other.starts_with("--stall-after=") => {}
            _ => kept.push(arg.clone()),
        }
    }
    Ok(kept)
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    check_tuning(&args.tuning)?;
    let (from, tables) = &args.endpoints.resolved()?;
    let to = &args.endpoints.to;
    let registry = engines::registry();
    let source_engine = registry.for_url(from)?;
    let target_engine = registry.for_url(to)?;
    let source = source_engine.open_source(from)?;
    let target: Arc<dyn Source> = target_engine.open_source(to).map_err(|e| match e {
        Error::SourceNotFound(db) => Error::TargetNotFound(db),
        other => other,
    })?;
    let plan = plan_sources(source.as_ref(), &request(&args.endpoints, tables, &args.tuning))?;
    // A target that `barge sync` keeps current: the stream's positions are read from the target.
    let feed = source.change_feed().filter(|_| !args.no_recheck);
    if feed.is_none() && args.stream.is_some() {
        let why = format!("--stream: the source {} has no change stream to wait for", source.display_name());
        return Err(Error::Config(why).into());
    }
    let positions_target = feed.map(|_| target_engine.open_target(to)).transpose()?;
    let positions = positions_target.as_ref().and_then(|t| t.change_positions());
    let stream = positions.map(|p| live_stream(p, args.stream.as_deref(), to)).transpose()?.flatten();
    let live = match (feed, positions, stream.as_deref()) {
        (Some(feed), Some(positions), Some(stream)) => Some(barge_exec::LiveStream {
            feed,
            positions,
            stream,
            timeout: std::time::Duration::from_secs(args.recheck_timeout),
            rounds: VERIFY_RECHECKS,
        }),
        _ => None,
    };
    let progress = render::progress();
    let mut report = barge_exec::verify(
        source.as_ref(),
        target.as_ref(),
        &plan,
        &options(&args.tuning, true),
        progress.as_ref(),
        live.as_ref(),
    )?;
    if args.endpoints.tables.is_empty() {
        // Every table of the source was compared: one only the target has is a difference too
        // (but not `barge_sync`, where `barge sync` keeps its positions).
        let source_tables = source.list_tables()?;
        let left_out = barge_plan::excluded(&args.endpoints.exclude)?;
        report.only_in_target = target
            .list_tables()?
            .into_iter()
            .filter(|t| !source_tables.contains(t) && !left_out(t) && t != barge_core::POSITIONS_TABLE)
            .collect();
        report.ok &= report.only_in_target.is_empty();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", render::verify_summary(&report));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISMATCH) })
}

/// Re-checks of what still differs under a live stream: a key written again and again may
/// differ at every read; one that differs three times after the stream passed it is reported.
const VERIFY_RECHECKS: usize = 3;

/// The sync stream a verification waits for: the one named (which must have positions in the
/// target), else the only one the target has, else none.
fn live_stream(
    positions: &dyn barge_core::ChangePositions,
    named: Option<&str>,
    to: &str,
) -> Result<Option<String>, Error> {
    let streams = positions.streams()?;
    match named {
        Some(name) if streams.iter().any(|s| s == name) => Ok(Some(name.to_string())),
        Some(name) => Err(Error::Config(format!(
            "--stream {name}: the target {} holds no positions of it (streams there: {})",
            barge_core::url::redact(to),
            if streams.is_empty() { "none".to_string() } else { streams.join(", ") }
        ))),
        None if streams.len() > 1 => Err(Error::Config(format!(
            "the target {} is kept by several sync streams ({}): name the one to wait for with --stream, or \
             --no-recheck",
            barge_core::url::redact(to),
            streams.join(", ")
        ))),
        None => Ok(streams.into_iter().next()),
    }
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
            exclude: Vec::new(),
            zero_dates: None,
        },
        tuning: args.tuning.clone(),
        if_exists: IfExistsArg::Fail,
        no_verify: false,
        // SQLite → SQLite restores the source's own statements, foreign keys inline.
        no_foreign_keys: true,
        foreign_keys: false,
        no_lock: false,
        fail_fast: false,
        retries: barge_exec::DEFAULT_RETRIES,
        unrepresentable: ValuePolicyArg::Error,
        error_budget: None,
        rejects: PathBuf::from("rejects"),
        state: None,
        resume: false,
        stall_after: 60.0,
        sample_rows: None,
        dry_run: false,
        json: args.json,
        unique_key: false,
        distributed: false,
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
    Ok(copy_exit(&report))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("512KB"), Ok(512_000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("4 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_bytes("MiB").is_err());
    }
}
