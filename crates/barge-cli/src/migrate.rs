//! `barge migrate`: a zero-downtime (blue-green) migration of a live database.
//!
//! ```text
//!  planned ─▶ copying ─▶ catching-up ─▶ validating ─switchover─▶ switched ─complete─▶ completed
//!   (start)   (bulk)     (lag > catch_up_lag)  (verify + shadow reads)   │ (reverse sync)
//!                                                                        └─rollback─▶ rolled-back
//! ```
//!
//! `migrate start` is the one long-running process: it runs the forward sync (bulk copy, then
//! change capture), verifies every table again and again and compares a sample of the changed
//! keys on both sides (shadow reads) while validating, and after a switchover runs the reverse
//! sync (target → source). It writes its live status to the state store once a second. The
//! other commands run from any shell: they read that status, and `switchover`, `rollback` and
//! `complete` change the phase in the state store, which `start` follows within a quarter of a
//! second. The phase, its history and every switch window are kept in the state store, so a
//! `start` killed in any phase continues where it was.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use barge_core::Error;
use barge_core::ledger::LedgerStore;
use barge_pipeline::{Migration, Pipeline};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{EXIT_MISMATCH, EXIT_RUNTIME, check_ledger, default_state, engines, open_ledger};

#[derive(Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Run the migration: bulk copy, change capture, continuous validation; after a switchover,
    /// the reverse sync. Runs until the migration is completed or rolled back (or SIGINT/SIGTERM;
    /// start it again to continue).
    Start(StartArgs),
    /// The phase and its history, lag, change rate, verification coverage, mismatches and the
    /// switchover's preconditions.
    Status(Common),
    /// Freeze the source's writes, drain, verify, move the target's sequences on, start the
    /// reverse sync, run the hook: the target takes the writes from now on.
    Switchover(Switch),
    /// After a switchover: freeze the target, drain the reverse sync, verify, move the source's
    /// sequences on and let it take writes again.
    Rollback(Switch),
    /// End the migration: stop the reverse sync and remove the streams barge made on both sides.
    Complete(Finish),
}

#[derive(Args, Clone)]
struct Finish {
    #[command(flatten)]
    common: Common,
    /// Also let the retired side (the source after a switchover, the target after a rollback)
    /// take writes again; by default it stays read-only.
    #[arg(long)]
    reopen: bool,
}

#[derive(Args, Clone)]
struct Common {
    /// The pipeline file, with its `[migration]` section.
    pipeline: PathBuf,
    /// Where the migration's state is kept (a SQLite file or postgres://…; default
    /// NAME.state.db beside the pipeline file).
    #[arg(long)]
    state: Option<String>,
    /// JSON on stdout (`start`: one status object a second).
    #[arg(long)]
    json: bool,
    /// An `incremental` migration's wave (1, 2, …): the one to switch over, roll back, complete,
    /// show, or (`start`) run alone. `start` without it runs every wave.
    #[arg(long, value_name = "N")]
    wave: Option<usize>,
}

#[derive(Args, Clone)]
struct StartArgs {
    #[command(flatten)]
    common: Common,
    /// Serve a live status page (and `/status.json`) at this address, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<String>,
    /// Serve metrics in Prometheus' text format at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
}

#[derive(Args, Clone)]
struct Switch {
    #[command(flatten)]
    common: Common,
    /// Refuse unless the lag is at most this many seconds (default: the pipeline's `max_lag`).
    #[arg(long)]
    max_lag: Option<f64>,
    /// Give up (and unfreeze) when the switch takes longer than this many seconds (default:
    /// the pipeline's `freeze_timeout`).
    #[arg(long)]
    freeze_timeout: Option<f64>,
}

/// The phases of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Planned,
    Copying,
    CatchingUp,
    Validating,
    Switched,
    Completed,
    RolledBack,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Copying => "copying",
            Phase::CatchingUp => "catching-up",
            Phase::Validating => "validating",
            Phase::Switched => "switched",
            Phase::Completed => "completed",
            Phase::RolledBack => "rolled-back",
        }
    }

    /// Phases in which the forward sync runs.
    fn forward(self) -> bool {
        matches!(self, Phase::Planned | Phase::Copying | Phase::CatchingUp | Phase::Validating)
    }
}

/// One step of the phase history.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Step {
    phase: Phase,
    at: String,
    note: String,
}

/// A switchover's or rollback's write freeze.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Window {
    /// From the freeze to the other side taking writes (the hook run).
    freeze_ms: u64,
    at: String,
    /// The position drained to before the switch.
    drained_to: String,
    /// Tables verified during the freeze.
    verified: Vec<String>,
    /// Rows compared by that verification.
    rows_verified: u64,
    /// Each step's milliseconds: freeze, drain, verify, sequences, stream, hook.
    steps: BTreeMap<String, u64>,
    /// Big-bang: from the source's freeze, before the copy, to the switch (the downtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    downtime_ms: Option<u64>,
}

/// The migration as the state store keeps it (document `migration`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    /// `blue-green`, `big-bang` (the source frozen from the start) or `shadow` (never switches).
    #[serde(default = "blue_green")]
    strategy: String,
    /// Big-bang: when the source was frozen (seconds since the epoch), for the downtime.
    #[serde(default)]
    frozen_since: Option<f64>,
    phase: Phase,
    since: String,
    history: Vec<Step>,
    /// The tables migrated (same names on both sides).
    tables: Vec<String>,
    /// The forward stream (source → target) and the reverse one (target → source).
    forward: String,
    reverse: String,
    /// While the source is frozen: the freeze's token (to unfreeze it).
    source_frozen: Option<String>,
    target_frozen: Option<String>,
    switchover: Option<Window>,
    rollback: Option<Window>,
    /// Why the last switchover or rollback failed.
    last_error: Option<String>,
    /// Nothing barge made is left (after `complete`).
    cleaned: bool,
}

fn blue_green() -> String {
    "blue-green".into()
}

const BIG_BANG: &str = "big-bang";
const INCREMENTAL: &str = "incremental";
const SHADOW_STRATEGY: &str = "shadow";

impl Record {
    fn enter(&mut self, phase: Phase, note: impl Into<String>) {
        self.phase = phase;
        self.since = now_text();
        self.history.push(Step { phase, at: self.since.clone(), note: note.into() });
    }
}

/// Coverage of the continuous verification.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Coverage {
    /// Full passes over every table completed.
    passes: u64,
    /// The pass running now: tables done of all.
    tables_done: usize,
    tables_total: usize,
    /// Rows compared by the last full pass.
    rows_compared: u64,
    /// Keys that differed while a change was in flight and matched once it was applied.
    in_flight: u64,
    last_pass_finished: Option<String>,
    last_pass_seconds: f64,
}

/// What the shadow reads did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Shadow {
    /// Share of changed keys read from both sides, in percent.
    percent: f64,
    /// Keys sampled and compared.
    compared: u64,
    /// Keys that differed, then matched once the stream passed them.
    in_flight: u64,
    /// Keys waiting to be checked again.
    pending: usize,
}

/// A difference that lasted after the stream passed it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Mismatch {
    table: String,
    key: serde_json::Value,
    /// `missing` (not in the target), `extra` (only in the target) or `changed`.
    kind: String,
    /// `verification` or `shadow read`.
    found_by: String,
    since: String,
}

/// The running `migrate start` (document `live`), written about once a second.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Live {
    pid: u32,
    /// The host `start` runs on.
    host: String,
    /// Seconds since the epoch of the last write.
    updated: f64,
    running: bool,
    /// `forward` (source → target) or `reverse`.
    direction: String,
    lag_seconds: f64,
    lag_bytes: u64,
    /// When the sync last reported (seconds since the epoch): a sync that stopped reporting
    /// (waiting on a lock, a server gone) is lagging by that long at least.
    status_at: f64,
    changes_per_s: f64,
    applied_total: u64,
    source_position: String,
    applied_position: String,
    tables: Vec<barge_exec::SyncTable>,
    verification: Coverage,
    shadow: Shadow,
    mismatches: Vec<Mismatch>,
    /// Per table: when a change to it was last applied, and when a verification of it that
    /// found no difference last started (seconds since the epoch).
    changed_at: BTreeMap<String, f64>,
    verified_at: BTreeMap<String, f64>,
    /// Per table: the position the stream had applied to it when its last clean verification
    /// started. A switchover verifies again each table the stream applied changes to since.
    verified_position: BTreeMap<String, u64>,
}

impl Live {
    /// Persistent mismatches per row compared.
    fn error_rate(&self) -> f64 {
        let compared = self.shadow.compared + self.verification.rows_compared;
        self.mismatches.len() as f64 / compared.max(1) as f64
    }

    /// The tables changed since their last clean verification.
    fn unverified(&self, tables: &[String]) -> Vec<String> {
        tables
            .iter()
            .filter(|t| match (self.changed_at.get(*t), self.verified_at.get(*t)) {
                (_, None) => true,
                (Some(changed), Some(verified)) => changed >= verified,
                (None, Some(_)) => false,
            })
            .cloned()
            .collect()
    }

    /// The lag, counting the time the sync has not reported for (it reports once a second).
    fn lag(&self) -> f64 {
        let silent = if self.status_at > 0.0 { (self.updated - self.status_at - 1.0).max(0.0) } else { 0.0 };
        self.lag_seconds + silent
    }

    /// Whether the `start` process wrote within the last few seconds.
    fn fresh(&self) -> bool {
        self.running && now() - self.updated < STALE_AFTER
    }
}

/// A `start` that has not written its status for this long is not running.
const STALE_AFTER: f64 = 5.0;

/// How often `start` reads the phase the other commands may have changed.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Times a differing key is checked again after the stream passed it before it is persistent.
const RECHECKS: u32 = 3;

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn now_text() -> String {
    let micros = (now() * 1e6) as i64;
    let mut text = String::new();
    barge_core::text::format_datetime(micros, true, &mut text);
    text
}

/// A pipeline file's migration, opened (or one wave of an `incremental` one).
#[derive(Clone)]
struct Opened {
    pipeline: Pipeline,
    settings: Migration,
    name: String,
    state: String,
    store: Arc<dyn LedgerStore>,
    /// The wave (1, 2, …) of an incremental migration this is.
    wave: Option<usize>,
    /// The migration as messages name it (`orders wave 2`).
    label: String,
}

const RECORD: &str = "migration";
const LIVE: &str = "live";

impl Opened {
    fn open(common: &Common) -> Result<Opened, Error> {
        let pipeline = Pipeline::load(&common.pipeline)?;
        let Some(settings) = pipeline.migration.clone() else {
            return Err(Error::Config(format!(
                "pipeline {}: no [migration] section (barge migrate needs one; `strategy = \"blue-green\"` is enough)",
                common.pipeline.display()
            )));
        };
        check_reversible(&pipeline)?;
        let (stem, default) = default_state(&pipeline);
        let name = settings.name.clone().unwrap_or(stem);
        let state = common.state.clone().unwrap_or(default);
        check_ledger(&state)?;
        let store = open_ledger(&state)?;
        let waves = settings.waves.len();
        if let Some(wave) = common.wave
            && !(1..=waves).contains(&wave)
        {
            return Err(Error::Config(if waves == 0 {
                format!("--wave {wave}: migration `{name}` is not incremental (it has no waves)")
            } else {
                format!("--wave {wave}: migration `{name}` has waves 1 to {waves}")
            }));
        }
        let label = name.clone();
        let opened = Opened { pipeline, settings, name, state, store, wave: None, label };
        Ok(match common.wave {
            Some(wave) => opened.for_wave(wave),
            None => opened,
        })
    }

    /// Wave `wave` (1, 2, …) of this incremental migration.
    fn for_wave(&self, wave: usize) -> Opened {
        Opened { wave: Some(wave), label: format!("{} wave {wave}", self.name), ..self.clone() }
    }

    /// An incremental migration taken as a whole (no wave named).
    fn umbrella(&self) -> bool {
        self.settings.strategy == INCREMENTAL && self.wave.is_none()
    }

    /// The tables of this wave; `None` for a migration without waves.
    fn wave_tables(&self) -> Option<&[String]> {
        self.wave.map(|w| self.settings.waves[w - 1].tables.as_slice())
    }

    /// The key of document `base` (a wave keeps its own).
    fn key(&self, base: &str) -> String {
        match self.wave {
            Some(wave) => format!("{base}-wave-{wave}"),
            None => base.to_string(),
        }
    }

    fn record(&self) -> Result<Option<Record>, Error> {
        self.store
            .document(&self.name, &self.key(RECORD))?
            .map(|body| serde_json::from_str(&body).map_err(|e| Error::engine("reading the migration's state", e)))
            .transpose()
    }

    /// The record, which must exist (`start` makes it).
    fn existing(&self) -> Result<Record, Error> {
        self.record()?.ok_or_else(|| {
            Error::Config(format!(
                "{} holds no migration `{}`: run `barge migrate start {}` first",
                self.store.describe(),
                self.label,
                self.pipeline.path.display()
            ))
        })
    }

    fn save(&self, record: &Record) -> Result<(), Error> {
        let body = serde_json::to_string(record).map_err(|e| Error::engine("writing the migration's state", e))?;
        self.store.set_document(&self.name, &self.key(RECORD), &body)
    }

    fn live(&self) -> Result<Live, Error> {
        Ok(self
            .store
            .document(&self.name, &self.key(LIVE))?
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default())
    }

    fn save_live(&self, live: &Live) -> Result<(), Error> {
        let body = serde_json::to_string(live).map_err(|e| Error::engine("writing the migration's status", e))?;
        self.store.set_document(&self.name, &self.key(LIVE), &body)
    }
}

/// The forward and reverse streams of migration `name`: what a slot name may hold.
fn stream_names(name: &str) -> (String, String) {
    let base: String =
        name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
    (format!("m_{base}"), format!("m_{base}_rev"))
}

impl MigrateArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            MigrateCommand::Start(s) => s.common.json,
            MigrateCommand::Status(c) => c.json,
            MigrateCommand::Complete(f) => f.common.json,
            MigrateCommand::Switchover(s) | MigrateCommand::Rollback(s) => s.common.json,
        }
    }
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MigrateCommand::Start(args) => start(&args),
        MigrateCommand::Status(common) => status(&common),
        MigrateCommand::Switchover(switch) => switchover(&switch),
        MigrateCommand::Rollback(switch) => rollback(&switch),
        MigrateCommand::Complete(finish) => complete(&finish),
    }
}

/// The two databases, each opened as a source (to read changes and rows) and as a target (to
/// write, freeze, and keep positions).
struct Sides {
    source: Arc<dyn barge_core::Source>,
    target: Arc<dyn barge_core::Source>,
    source_out: Arc<dyn barge_core::Target>,
    target_out: Arc<dyn barge_core::Target>,
}

impl Sides {
    fn open(pipeline: &Pipeline) -> Result<Sides, Error> {
        let registry = engines::registry();
        let (from, to) = (pipeline.source.clone(), pipeline.target.clone());
        let (source_engine, target_engine) = (registry.for_url(&from)?, registry.for_url(&to)?);
        Ok(Sides {
            source: source_engine.open_source(&from)?,
            target: target_engine.open_source(&to)?,
            source_out: source_engine.open_target(&from)?,
            target_out: target_engine.open_target(&to)?,
        })
    }

    /// (source, target), or (target, source) for `reverse`.
    fn feed(&self, reverse: bool) -> Result<&dyn barge_core::ChangeFeed, Error> {
        let side = if reverse { &self.target } else { &self.source };
        side.change_feed().ok_or_else(|| {
            Error::Config(format!(
                "{} has no change stream: a migration syncs both ways (PostgreSQL or MySQL/MariaDB on each side)",
                side.display_name()
            ))
        })
    }

    fn positions(&self, reverse: bool) -> Result<&dyn barge_core::ChangePositions, Error> {
        let side = if reverse { &self.source_out } else { &self.target_out };
        side.change_positions().ok_or_else(|| Error::unsupported(side.display_name(), "keep change positions"))
    }

    fn freeze(&self, target: bool) -> Result<&dyn barge_core::WriteFreeze, Error> {
        let side = if target { &self.target_out } else { &self.source_out };
        side.write_freeze().ok_or_else(|| Error::unsupported(side.display_name(), "freeze writes (migrate)"))
    }

    /// The position a stream applied each table to (tables it never changed have none).
    fn table_positions(&self, stream: &str, reverse: bool) -> Result<HashMap<String, u64>, Error> {
        Ok(self.positions(reverse)?.positions(stream)?.into_iter().filter(|(t, _)| !t.is_empty()).collect())
    }

    /// Where a stream has applied everything before (its recorded start-or-idle position).
    fn applied(&self, stream: &str, reverse: bool) -> Result<Option<u64>, Error> {
        Ok(self.positions(reverse)?.positions(stream)?.into_iter().find(|(t, _)| t.is_empty()).map(|(_, p)| p))
    }
}

/// A migration syncs back after the switchover: each table must arrive as it is.
fn check_reversible(pipeline: &Pipeline) -> Result<(), Error> {
    let path = pipeline.path.display();
    for table in &pipeline.tables {
        let reshaped = table.target != table.source
            || table.filter.is_some()
            || !table.columns.is_empty()
            || !table.drop.is_empty()
            || table.incremental.is_some();
        if reshaped {
            return Err(Error::Config(format!(
                "pipeline {path}: table `{}` is renamed, filtered or transformed: a migration syncs back after the \
                 switchover, so each table must arrive as it is (drop `target`, `where`, `columns`, `drop` and \
                 `mode`)",
                table.source
            )));
        }
    }
    Ok(())
}

/// What `start` checks before anything is made: a migration must be able to run both ways.
fn preflight(opened: &Opened, sides: &Sides) -> Result<Vec<String>, Error> {
    sides.feed(false)?;
    sides.feed(true)?;
    sides.freeze(false)?;
    sides.freeze(true)?;
    // The reverse stream's prerequisites on the target's server, before the first row moves.
    sides.feed(true)?.check(&[])?;
    let all: Vec<String> = if opened.pipeline.tables.is_empty() {
        sides.source.list_tables()?
    } else {
        opened.pipeline.tables.iter().map(|t| t.source.clone()).collect()
    };
    let tables = match opened.wave_tables() {
        Some(wave) => {
            if let Some(missing) = wave.iter().find(|t| !all.contains(t)) {
                return Err(Error::Config(format!(
                    "migration {}: table `{missing}` is not among the tables migrated ({})",
                    opened.label,
                    sides.source.display_name()
                )));
            }
            wave.to_vec()
        }
        None => all,
    };
    if tables.is_empty() {
        return Err(Error::Config(format!("{}: no tables to migrate", sides.source.display_name())));
    }
    Ok(tables)
}

/// Sync arguments for one direction.
fn sync_args(opened: &Opened, record: &Record, reverse: bool) -> Result<super::sync::SyncArgs, Error> {
    let mut argv: Vec<String> = Vec::new();
    let state = opened.state.clone();
    if opened.wave.is_some() && !reverse {
        // A wave's own tables, each as it is (a migration reshapes none).
        argv.extend(["--from".into(), opened.pipeline.source.clone(), "--to".into(), opened.pipeline.target.clone()]);
        for table in &record.tables {
            argv.extend(["--table".into(), table.clone()]);
        }
        argv.extend(["--stream".into(), record.forward.clone()]);
    } else if reverse {
        argv.extend(["--from".into(), opened.pipeline.target.clone(), "--to".into(), opened.pipeline.source.clone()]);
        for table in &record.tables {
            argv.extend(["--table".into(), table.clone()]);
        }
        argv.extend(["--stream".into(), record.reverse.clone(), "--if-exists".into(), "append".into()]);
    } else {
        argv.push(opened.pipeline.path.display().to_string());
        argv.extend(["--stream".into(), record.forward.clone()]);
    }
    argv.extend(["--state".into(), state, "--batch-changes".into(), "20000".into()]);
    let mut args = super::sync::SyncArgs::parse_from(&argv)?;
    args.quiet = true;
    // Each wave's syncs keep their runs apart in the shared state store.
    args.runs = opened.wave.map(|w| format!("wave-{w}-")).unwrap_or_default();
    Ok(args)
}

/// What the threads of `start` share.
struct Shared {
    opened: Opened,
    sides: Sides,
    record: Mutex<Record>,
    live: Mutex<Live>,
    /// SIGINT/SIGTERM: stop everything.
    quit: Arc<AtomicBool>,
    json: bool,
    /// (seconds since the epoch, lag, changes/s), once a second, for the status page.
    series: Mutex<super::status_page::Series>,
}

impl Shared {
    fn phase(&self) -> Phase {
        self.record.lock().expect("record lock").phase
    }

    /// Moves the phase on from `from` to `to`, as the store holds it now (another command may
    /// have moved it meanwhile: then nothing changes).
    fn advance(&self, from: Phase, to: Phase, note: &str) -> Result<(), Error> {
        let mut current = self.opened.existing()?;
        if current.phase == from {
            current.enter(to, note);
            self.opened.save(&current)?;
            eprintln!("migrate {}: {} ({note})", self.opened.label, to.name());
        }
        *self.record.lock().expect("record lock") = current;
        Ok(())
    }
}

fn start(args: &StartArgs) -> anyhow::Result<ExitCode> {
    let opened = Opened::open(&args.common)?;
    let quit = Arc::new(AtomicBool::new(false));
    {
        let quit = quit.clone();
        let _ = ctrlc::set_handler(move || quit.store(true, Ordering::SeqCst));
    }
    if !opened.umbrella() {
        return start_one(args, opened, quit);
    }
    // An incremental migration: every wave at once, each with its own streams and phases.
    if args.status_addr.is_some() || args.metrics_addr.is_some() {
        return Err(Error::Config(
            "an incremental migration serves a status page per wave: start each wave on its own \
             (`migrate start --wave N --status-addr …`)"
                .into(),
        )
        .into());
    }
    check_waves(&opened, &Sides::open(&opened.pipeline)?)?;
    let codes: Vec<anyhow::Result<ExitCode>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=opened.settings.waves.len())
            .map(|wave| {
                let (wave, quit) = (opened.for_wave(wave), quit.clone());
                scope.spawn(move || {
                    let code = start_one(args, wave, quit.clone());
                    // A wave that fails stops the others: the migration is one run.
                    if !matches!(code, Ok(c) if c == ExitCode::SUCCESS) {
                        quit.store(true, Ordering::SeqCst);
                    }
                    code
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a wave panicked")))).collect()
    });
    for code in codes {
        let code = code?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every table an incremental migration moves is in a wave (each in one: the pipeline checks).
fn check_waves(opened: &Opened, sides: &Sides) -> Result<(), Error> {
    let all: Vec<String> = if opened.pipeline.tables.is_empty() {
        sides.source.list_tables()?
    } else {
        opened.pipeline.tables.iter().map(|t| t.source.clone()).collect()
    };
    let in_waves: Vec<&String> = opened.settings.waves.iter().flat_map(|w| &w.tables).collect();
    if let Some(left) = all.iter().find(|t| !in_waves.contains(t)) {
        return Err(Error::Config(format!(
            "migration {}: table `{left}` is in no wave (each table moves in one of [[migration.waves]])",
            opened.name
        )));
    }
    Ok(())
}

/// `start` of one migration, or of one wave of an incremental one.
fn start_one(args: &StartArgs, opened: Opened, quit: Arc<AtomicBool>) -> anyhow::Result<ExitCode> {
    let common = &args.common;
    // One `start` per migration (its sync also takes the state store's lease, which refuses a
    // second one; this says so before the second could touch the live status).
    let live = opened.live()?;
    let here = barge_core::ledger::Holder::current().host;
    let gone = live.host == here && !std::path::Path::new(&format!("/proc/{}", live.pid)).exists();
    if live.fresh() && !gone {
        return Err(Error::Config(format!(
            "migrate start is already running for `{}` (pid {}): one start per migration",
            opened.label, live.pid
        ))
        .into());
    }
    let sides = Sides::open(&opened.pipeline)?;
    let record = match opened.record()? {
        Some(record) => record,
        None => {
            let tables = preflight(&opened, &sides)?;
            let (forward, reverse) = match opened.wave {
                Some(wave) => stream_names(&format!("{}_w{wave}", opened.name)),
                None => stream_names(&opened.name),
            };
            let mut record = Record {
                strategy: opened.settings.strategy.clone(),
                frozen_since: None,
                phase: Phase::Planned,
                since: now_text(),
                history: Vec::new(),
                tables,
                forward,
                reverse,
                source_frozen: None,
                target_frozen: None,
                switchover: None,
                rollback: None,
                last_error: None,
                cleaned: false,
            };
            record.enter(Phase::Planned, format!("strategy {}", opened.settings.strategy));
            opened.save(&record)?;
            record
        }
    };
    if matches!(record.phase, Phase::Completed | Phase::RolledBack) {
        eprintln!("migrate {}: the migration is {}: nothing to run", opened.label, record.phase.name());
        return Ok(ExitCode::SUCCESS);
    }
    let mut record = record;
    if record.strategy == BIG_BANG && record.phase == Phase::Planned && record.source_frozen.is_none() {
        // Big-bang: the source takes no writes from before the copy until the switch.
        let token = sides.freeze(false)?.freeze()?;
        record.source_frozen = Some(token);
        record.frozen_since = Some(now());
        record.history.push(Step { phase: Phase::Planned, at: now_text(), note: "source frozen (big-bang)".into() });
        opened.save(&record)?;
        eprintln!("migrate {}: the source is frozen until the switch (big-bang)", opened.label);
    }
    let shared = Shared {
        live: Mutex::new(Live {
            pid: std::process::id(),
            host: barge_core::ledger::Holder::current().host,
            running: true,
            shadow: Shadow { percent: opened.settings.shadow_reads, ..Shadow::default() },
            ..opened.live()?
        }),
        opened,
        sides,
        record: Mutex::new(record),
        quit,
        json: common.json,
        series: Mutex::new(super::status_page::Series::default()),
    };
    let shared = Arc::new(shared);
    let served = {
        let (status, metrics) = (shared.clone(), shared.clone());
        super::status_page::Served {
            status: Arc::new(move || page_status(&status)),
            metrics: Arc::new(move || migrate_metrics(&metrics)),
        }
    };
    let _served = super::status_page::serve_at(
        args.status_addr.as_deref(),
        args.metrics_addr.as_deref(),
        &served,
        &format!("migrate {}", shared.opened.label),
    )?;
    let done = Arc::new(AtomicBool::new(false));
    // Not waited for at the end: a pass may be waiting (up to its timeout) for a stream that
    // has stopped; its results no longer matter then.
    {
        let (shared, done) = (shared.clone(), done.clone());
        std::thread::spawn(move || verifier(&shared, &done));
    }
    let shared = &*shared;
    let result = std::thread::scope(|scope| {
        scope.spawn(|| reporter(shared, &done));
        let (keys, sampled) = std::sync::mpsc::sync_channel::<(String, TextKey)>(SHADOW_QUEUE);
        scope.spawn(|| shadow_reads(shared, sampled, &done));
        let result = directions(shared, keys);
        done.store(true, Ordering::SeqCst);
        result
    });
    let mut live = shared.live.lock().expect("live lock").clone();
    live.running = false;
    live.updated = now();
    shared.opened.save_live(&live)?;
    result
}

/// The migration's metrics: its sync's, and the phase, the validation and the verdict.
fn migrate_metrics(shared: &Shared) -> String {
    let record = shared.record.lock().expect("record lock").clone();
    let live = shared.live.lock().expect("live lock").clone();
    let report = report(&shared.opened, &record, &live, None);
    let mut metrics = super::status_page::Metrics::default();
    super::status_page::sync_metrics(&mut metrics, &serde_json::to_value(&report).unwrap_or_default());
    metrics.family("barge_migrate_phase", "gauge", "1 for the migration's phase.");
    for phase in [
        Phase::Planned,
        Phase::Copying,
        Phase::CatchingUp,
        Phase::Validating,
        Phase::Switched,
        Phase::Completed,
        Phase::RolledBack,
    ] {
        metrics.sample(
            "barge_migrate_phase",
            &[("phase", phase.name())],
            if phase == record.phase { 1.0 } else { 0.0 },
        );
    }
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metrics
        .one(
            "barge_migrate_verification_passes_total",
            "counter",
            "Full verification passes.",
            report.verification.passes as f64,
        )
        .one(
            "barge_migrate_shadow_reads_total",
            "counter",
            "Changed keys compared on both sides.",
            report.shadow.compared as f64,
        )
        .one(
            "barge_migrate_persistent_mismatches",
            "gauge",
            "Keys that still differ after the stream passed them.",
            report.mismatches.len() as f64,
        )
        .one("barge_migrate_error_rate", "gauge", "Persistent mismatches per row compared.", report.error_rate)
        .one("barge_migrate_error_threshold", "gauge", "The error rate a switchover tolerates.", report.error_threshold)
        .one(
            "barge_migrate_switchover_allowed",
            "gauge",
            "1 when every switchover precondition holds.",
            flag(report.switchover_allowed),
        )
        .one(
            "barge_migrate_source_frozen",
            "gauge",
            "1 while the source's writes are frozen.",
            flag(report.source_frozen),
        )
        .one(
            "barge_migrate_target_frozen",
            "gauge",
            "1 while the target's writes are frozen.",
            flag(report.target_frozen),
        );
    metrics.finish()
}

/// The status page's `status.json`: the status `--json` prints, with the lag history.
fn page_status(shared: &Shared) -> String {
    let record = shared.record.lock().expect("record lock").clone();
    let live = shared.live.lock().expect("live lock").clone();
    let value = serde_json::to_value(report(&shared.opened, &record, &live, None)).unwrap_or_default();
    shared.series.lock().expect("series lock").with(value)
}

/// Sampled keys waiting for their shadow read, at most (more are not sampled).
const SHADOW_QUEUE: usize = 10_000;

/// Runs the sync the phase asks for, one direction after the other, until the migration ends or
/// SIGINT/SIGTERM.
fn directions(shared: &Shared, keys: std::sync::mpsc::SyncSender<(String, TextKey)>) -> anyhow::Result<ExitCode> {
    let opened = &shared.opened;
    let percent = opened.settings.shadow_reads;
    let sample = move |table: &str, changed: &[Vec<Option<String>>]| {
        {
            let mut live = shared.live.lock().expect("live lock");
            live.changed_at.insert(table.to_string(), now());
        }
        if percent <= 0.0 || shared.phase() != Phase::Validating {
            return;
        }
        for key in changed {
            let mut hasher = blake3::Hasher::new();
            hasher.update(table.as_bytes());
            for part in key {
                hasher.update(part.as_deref().unwrap_or("\u{0}").as_bytes());
                hasher.update(&[0]);
            }
            let bucket = u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes")) % 10_000;
            if (bucket as f64) < percent * 100.0 {
                let _ = keys.try_send((table.to_string(), key.clone()));
            }
        }
    };
    loop {
        if shared.quit.load(Ordering::SeqCst) {
            return Ok(ExitCode::SUCCESS);
        }
        let record = shared.record.lock().expect("record lock").clone();
        let reverse = match record.phase {
            Phase::Completed | Phase::RolledBack => {
                eprintln!("migrate {}: {}: done", opened.label, record.phase.name());
                return Ok(ExitCode::SUCCESS);
            }
            Phase::Switched => true,
            _ => false,
        };
        if !reverse && matches!(record.phase, Phase::Planned | Phase::Copying) {
            let copied = shared.sides.applied(&record.forward, false)?.is_some();
            let (to, note) = if copied {
                (Phase::CatchingUp, "the bulk copy is done")
            } else {
                (Phase::Copying, "stream opened, bulk copy")
            };
            if record.phase != to {
                shared.advance(record.phase, to, note)?;
            }
        }
        {
            let mut live = shared.live.lock().expect("live lock");
            live.direction = if reverse { "reverse" } else { "forward" }.into();
            // Silence counts from here until the sync first reports (a copy, a wait on a lock).
            if live.status_at == 0.0 {
                live.status_at = now();
            }
        }
        // Stopped when SIGINT/SIGTERM comes or the phase leaves this direction's.
        let stop = Arc::new(AtomicBool::new(false));
        let code = std::thread::scope(|scope| -> anyhow::Result<ExitCode> {
            let watching = stop.clone();
            let watcher = scope.spawn(move || watch(shared, reverse, &watching));
            let catch_up = opened.settings.catch_up_lag;
            let mut tell = |status: &barge_exec::SyncStatus| {
                {
                    let mut live = shared.live.lock().expect("live lock");
                    live.lag_seconds = status.lag_seconds;
                    live.status_at = now();
                    live.lag_bytes = status.lag_bytes;
                    live.changes_per_s = status.changes_per_s;
                    live.applied_total = status.applied_total;
                    live.source_position = status.source_position.clone();
                    live.applied_position = status.applied_position.clone();
                    live.tables = status.tables.clone();
                }
                let phase = shared.phase();
                let moved = match phase {
                    Phase::Copying => shared.advance(phase, Phase::CatchingUp, "the bulk copy is done"),
                    Phase::CatchingUp if status.lag_seconds <= catch_up => {
                        shared.advance(phase, Phase::Validating, &format!("lag {:.2} s", status.lag_seconds))
                    }
                    _ => Ok(()),
                };
                if let Err(e) = moved {
                    tracing::warn!("recording the phase: {e}");
                }
            };
            let control = super::sync::Control {
                stop: stop.clone(),
                status: &mut tell,
                changed: if reverse { None } else { Some(&sample) },
            };
            let code = super::sync::sync_with(sync_args(opened, &record, reverse)?, control);
            stop.store(true, Ordering::SeqCst);
            let _ = watcher.join();
            code
        })?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
}

/// Sets `stop` when SIGINT/SIGTERM comes or the phase (as the store holds it) leaves the
/// direction's; keeps the shared record current.
fn watch(shared: &Shared, reverse: bool, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        if shared.quit.load(Ordering::SeqCst) {
            break;
        }
        match shared.opened.record() {
            Ok(Some(record)) => {
                let phase = record.phase;
                let forward = record.forward.clone();
                *shared.record.lock().expect("record lock") = record;
                // The bulk copy is done once the stream's start is recorded in the target.
                if phase == Phase::Copying
                    && matches!(shared.sides.applied(&forward, false), Ok(Some(_)))
                    && let Err(e) = shared.advance(phase, Phase::CatchingUp, "the bulk copy is done")
                {
                    tracing::warn!("recording the phase: {e}");
                }
                let stays = if reverse { phase == Phase::Switched } else { phase.forward() };
                if !stays {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("reading the migration's state: {e}"),
        }
        std::thread::sleep(WATCH_EVERY);
    }
    stop.store(true, Ordering::SeqCst);
}

/// Writes the live status once a second (and prints it with `--json`, or a line every ten
/// seconds on stderr).
fn reporter(shared: &Shared, done: &AtomicBool) {
    let mut last_line = Instant::now();
    while !done.load(Ordering::SeqCst) {
        let live = {
            let mut live = shared.live.lock().expect("live lock");
            live.updated = now();
            live.clone()
        };
        shared.series.lock().expect("series lock").push(live.updated, live.lag(), live.changes_per_s);
        if let Err(e) = shared.opened.save_live(&live) {
            tracing::warn!("writing the migration's status: {e}");
        }
        let record = shared.record.lock().expect("record lock").clone();
        if shared.json {
            println!("{}", serde_json::to_string(&report(&shared.opened, &record, &live, None)).unwrap_or_default());
        } else if last_line.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "migrate {}: {} ({}), lag {:.2} s, {:.0} changes/s, {} verification pass(es), {} mismatch(es)",
                shared.opened.label,
                record.phase.name(),
                live.direction,
                live.lag(),
                live.changes_per_s,
                live.verification.passes,
                live.mismatches.len()
            );
            last_line = Instant::now();
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Rows of one table on both sides, to compare.
struct TablePair {
    source: barge_core::TableInfo,
    target: barge_core::TableInfo,
    key: Vec<String>,
}

/// A key as sync names it: each value's text (a number as written, a string as it is).
type TextKey = Vec<Option<String>>;

/// Each row's canonical hash, by its key.
fn rows_by_key(table: &str, key: &[String], rows: &barge_core::KeyRows) -> Result<HashMap<TextKey, u128>, Error> {
    let mut out = HashMap::new();
    let mut scratch = Vec::new();
    for batch in &rows.rows {
        let schema = batch.schema();
        let indices: Vec<usize> = key
            .iter()
            .map(|k| schema.index_of(k).map_err(|_| Error::engine("shadow read", format!("no key column `{k}`"))))
            .collect::<Result<_, _>>()?;
        let keys = barge_verify::RowEncoder::for_columns(table, batch, &indices)?;
        let values = barge_verify::RowEncoder::new(table, batch)?;
        for row in 0..batch.num_rows() {
            let serde_json::Value::Array(parts) = keys.json_row(row) else { continue };
            let text = parts
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                })
                .collect();
            out.insert(text, values.row_hash(row, &mut scratch));
        }
    }
    Ok(out)
}

/// A key whose sides differed, waiting for the stream to pass `position`.
struct Pending {
    table: String,
    key: TextKey,
    position: u64,
    rounds: u32,
}

/// Reads sampled changed keys from both sides and compares them; a key that differs is read
/// again once the stream passed the source's position of the read, and counted persistent when
/// it still differs after [`RECHECKS`] such reads.
fn shadow_reads(shared: &Shared, sampled: std::sync::mpsc::Receiver<(String, TextKey)>, done: &AtomicBool) {
    let mut pairs: HashMap<String, TablePair> = HashMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let mut batch: Vec<(String, Vec<Option<String>>)> = Vec::new();
        if let Ok(first) = sampled.recv_timeout(Duration::from_millis(500)) {
            batch.push(first);
            batch.extend(sampled.try_iter().take(2_000));
        }
        if shared.phase() != Phase::Validating {
            pending.clear();
            continue;
        }
        if let Err(e) = shadow_round(shared, &mut pairs, &mut pending, batch) {
            tracing::warn!("shadow reads: {e}");
        }
        shared.live.lock().expect("live lock").shadow.pending = pending.len();
    }
}

fn shadow_round(
    shared: &Shared,
    pairs: &mut HashMap<String, TablePair>,
    pending: &mut Vec<Pending>,
    fresh: Vec<(String, Vec<Option<String>>)>,
) -> Result<(), Error> {
    let sides = &shared.sides;
    let forward = shared.record.lock().expect("record lock").forward.clone();
    let applied = sides.applied(&forward, false)?.unwrap_or(0);
    // Fresh keys, and pending ones the stream has passed.
    let mut due: Vec<(String, TextKey, u32)> = fresh.into_iter().map(|(t, k)| (t, k, 0)).collect();
    pending.retain(|p| {
        if p.position <= applied {
            due.push((p.table.clone(), p.key.clone(), p.rounds));
            false
        } else {
            true
        }
    });
    if due.is_empty() {
        return Ok(());
    }
    let mut by_table: BTreeMap<String, Vec<(TextKey, u32)>> = BTreeMap::new();
    for (table, key, rounds) in due {
        by_table.entry(table).or_default().push((key, rounds));
    }
    let (source_feed, target_feed) = (sides.feed(false)?, sides.feed(true)?);
    for (table, keys) in by_table {
        if !pairs.contains_key(&table) {
            let source = sides.source.table(&table)?;
            let target = sides.target.table(&table)?;
            let key = source.change_key().iter().map(|k| k.to_string()).collect();
            pairs.insert(table.clone(), TablePair { source, target, key });
        }
        let pair = &pairs[&table];
        let texts: Vec<TextKey> = keys.iter().map(|(k, _)| k.clone()).collect();
        let on_source = rows_by_key(&table, &pair.key, &source_feed.read_keys(&pair.source, &texts)?)?;
        let on_target = rows_by_key(&table, &pair.key, &target_feed.read_keys(&pair.target, &texts)?)?;
        // Every change committed before this is applied once the stream passes it.
        let position = source_feed.current_position()?;
        let mut live = shared.live.lock().expect("live lock");
        for (key, rounds) in keys {
            let (here, there) = (on_source.get(&key), on_target.get(&key));
            let shown = serde_json::Value::Array(
                key.iter().map(|v| v.clone().map_or(serde_json::Value::Null, serde_json::Value::String)).collect(),
            );
            if here == there {
                live.shadow.compared += 1;
                if rounds > 0 {
                    live.shadow.in_flight += 1;
                }
                live.mismatches.retain(|m| !(m.table == table && m.found_by == SHADOW && m.key == shown));
            } else if rounds + 1 >= RECHECKS {
                live.shadow.compared += 1;
                let kind = match (here, there) {
                    (Some(_), None) => "missing",
                    (None, Some(_)) => "extra",
                    _ => "changed",
                };
                if !live.mismatches.iter().any(|m| m.table == table && m.key == shown) {
                    live.mismatches.push(Mismatch {
                        table: table.clone(),
                        key: shown,
                        kind: kind.into(),
                        found_by: SHADOW.into(),
                        since: now_text(),
                    });
                }
            } else {
                pending.push(Pending { table: table.clone(), key, position, rounds: rounds + 1 });
            }
        }
    }
    Ok(())
}

const SHADOW: &str = "shadow read";

/// Verifies every table again and again while validating (a pass at most every `verify_every`
/// seconds), waiting out changes in flight as `barge verify` does under a live sync.
fn verifier(shared: &Shared, done: &AtomicBool) {
    let every = Duration::from_secs(shared.opened.settings.verify_every);
    let mut last: Option<Instant> = None;
    while !done.load(Ordering::SeqCst) {
        let due = last.is_none_or(|at| at.elapsed() >= every);
        if shared.phase() != Phase::Validating || !due {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        last = Some(Instant::now());
        if let Err(e) = verify_pass(shared, done) {
            tracing::warn!("verification pass: {e}");
        }
    }
}

fn verify_pass(shared: &Shared, done: &AtomicBool) -> Result<(), Error> {
    let record = shared.record.lock().expect("record lock").clone();
    let sides = &shared.sides;
    let started = Instant::now();
    {
        let mut live = shared.live.lock().expect("live lock");
        live.verification.tables_done = 0;
        live.verification.tables_total = record.tables.len();
    }
    let (mut rows, mut in_flight) = (0u64, 0u64);
    for table in &record.tables {
        if done.load(Ordering::SeqCst) || shared.phase() != Phase::Validating {
            return Ok(());
        }
        let at = now();
        let position = sides.table_positions(&record.forward, false)?.get(table).copied().unwrap_or(0);
        let live_stream = barge_exec::LiveStream {
            feed: sides.feed(false)?,
            positions: sides.positions(false)?,
            stream: &record.forward,
            timeout: Duration::from_secs(60),
            rounds: RECHECKS as usize,
        };
        let report = verify_between(sides, &shared.opened.pipeline, std::slice::from_ref(table), Some(&live_stream))?;
        // A pass the switchover overtook (its stream stopped while it waited): not recorded.
        if shared.phase() != Phase::Validating {
            return Ok(());
        }
        let mut live = shared.live.lock().expect("live lock");
        live.mismatches.retain(|m| !(m.table == *table && m.found_by == VERIFICATION));
        for verdict in &report.tables {
            rows += verdict.source_rows;
            in_flight += verdict.in_flight;
            if verdict.diff.is_empty() {
                live.verified_at.insert(table.clone(), at);
                live.verified_position.insert(table.clone(), position);
                continue;
            }
            let kinds = [
                ("missing", &verdict.diff.missing),
                ("extra", &verdict.diff.extra),
                ("changed", &verdict.diff.changed),
            ];
            for (kind, keys) in kinds {
                for key in keys {
                    live.mismatches.push(Mismatch {
                        table: table.clone(),
                        key: key.clone(),
                        kind: kind.into(),
                        found_by: VERIFICATION.into(),
                        since: now_text(),
                    });
                }
            }
        }
        live.verification.tables_done += 1;
    }
    let mut live = shared.live.lock().expect("live lock");
    live.verification.passes += 1;
    live.verification.rows_compared = rows;
    live.verification.in_flight += in_flight;
    live.verification.last_pass_finished = Some(now_text());
    live.verification.last_pass_seconds = started.elapsed().as_secs_f64();
    Ok(())
}

const VERIFICATION: &str = "verification";

/// Verifies `tables` of the two sides (exact when `live` is none: the source is frozen and the
/// stream drained).
fn verify_between(
    sides: &Sides,
    pipeline: &Pipeline,
    tables: &[String],
    live: Option<&barge_exec::LiveStream<'_>>,
) -> Result<barge_exec::VerifyReport, Error> {
    let request = barge_plan::CopyRequest {
        tables: tables.iter().map(barge_plan::TableRequest::named).collect(),
        workers: pipeline.workers.unwrap_or_else(super::default_workers),
        ..barge_plan::CopyRequest::default()
    };
    let plan = barge_plan::plan_sources(sides.source.as_ref(), &request)?;
    let options =
        barge_exec::ExecOptions::new(request.workers, pipeline.batch_rows.unwrap_or(super::DEFAULT_BATCH_ROWS), true);
    barge_exec::verify(sides.source.as_ref(), sides.target.as_ref(), &plan, &options, &barge_exec::NoProgress, live)
}

/// One precondition of a switchover.
#[derive(Clone, Debug, Serialize)]
struct Precondition {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// The status as `status` shows it and `start --json` prints it.
#[derive(Clone, Debug, Serialize)]
struct Report {
    migration: String,
    /// The wave of an incremental migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    wave: Option<usize>,
    /// Its tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    wave_tables: Option<Vec<String>>,
    state: String,
    phase: Phase,
    since: String,
    history: Vec<Step>,
    running: bool,
    direction: String,
    lag_seconds: f64,
    lag_bytes: u64,
    changes_per_s: f64,
    applied_total: u64,
    applied_position: String,
    source_position: String,
    tables: Vec<barge_exec::SyncTable>,
    verification: Coverage,
    shadow: Shadow,
    mismatches: Vec<Mismatch>,
    error_rate: f64,
    error_threshold: f64,
    unverified_tables: Vec<String>,
    /// Whether `switchover` would go ahead now, and each check.
    switchover_allowed: bool,
    preconditions: Vec<Precondition>,
    source_frozen: bool,
    target_frozen: bool,
    switchover: Option<Window>,
    rollback: Option<Window>,
    last_error: Option<String>,
    cleaned: bool,
}

fn report(opened: &Opened, record: &Record, live: &Live, max_lag: Option<f64>) -> Report {
    let preconditions = preconditions(opened, record, live, max_lag);
    Report {
        migration: opened.name.clone(),
        wave: opened.wave,
        wave_tables: opened.wave_tables().map(<[String]>::to_vec),
        state: opened.store.describe(),
        phase: record.phase,
        since: record.since.clone(),
        history: record.history.clone(),
        running: live.fresh(),
        direction: live.direction.clone(),
        lag_seconds: live.lag(),
        lag_bytes: live.lag_bytes,
        changes_per_s: live.changes_per_s,
        applied_total: live.applied_total,
        applied_position: live.applied_position.clone(),
        source_position: live.source_position.clone(),
        tables: live.tables.clone(),
        verification: live.verification.clone(),
        shadow: live.shadow.clone(),
        mismatches: live.mismatches.clone(),
        error_rate: live.error_rate(),
        error_threshold: opened.settings.error_threshold,
        unverified_tables: live.unverified(&record.tables),
        switchover_allowed: preconditions.iter().all(|p| p.ok),
        preconditions,
        source_frozen: record.source_frozen.is_some(),
        target_frozen: record.target_frozen.is_some(),
        switchover: record.switchover.clone(),
        rollback: record.rollback.clone(),
        last_error: record.last_error.clone(),
        cleaned: record.cleaned,
    }
}

fn preconditions(opened: &Opened, record: &Record, live: &Live, max_lag: Option<f64>) -> Vec<Precondition> {
    let max_lag = max_lag.unwrap_or(opened.settings.max_lag);
    let threshold = opened.settings.error_threshold;
    vec![
        Precondition {
            name: "strategy",
            ok: record.strategy != SHADOW_STRATEGY,
            detail: if record.strategy == SHADOW_STRATEGY {
                "the shadow strategy never switches: it keeps the target current and validated (end it with \
                 `migrate complete`)"
                    .into()
            } else {
                format!("strategy {}", record.strategy)
            },
        },
        Precondition {
            name: "waves",
            ok: earlier_waves_switched(opened).is_none(),
            detail: match (opened.wave, earlier_waves_switched(opened)) {
                (None, _) => "no waves".into(),
                (Some(wave), None) => format!("wave {wave}: every earlier wave is switched"),
                (Some(wave), Some(earlier)) => {
                    format!("wave {wave}: wave {earlier} is not switched yet (waves switch in order)")
                }
            },
        },
        Precondition {
            name: "phase",
            ok: record.phase == Phase::Validating,
            detail: format!("the phase is {} (a switchover needs validating)", record.phase.name()),
        },
        Precondition {
            name: "running",
            ok: live.fresh(),
            detail: if live.fresh() {
                format!("migrate start is running (pid {})", live.pid)
            } else {
                "migrate start is not running (it drains the changes during the switch): start it".into()
            },
        },
        Precondition {
            name: "lag",
            ok: live.fresh() && live.lag() <= max_lag,
            detail: format!("lag {:.2} s (at most {max_lag} s)", live.lag()),
        },
        Precondition {
            name: "tables",
            ok: live.tables.iter().all(|t| t.error.is_none()),
            detail: match live.tables.iter().find(|t| t.error.is_some()) {
                Some(t) => format!("table `{}` stopped syncing: {}", t.table, t.error.as_deref().unwrap_or("")),
                None => "every table syncs".into(),
            },
        },
        Precondition {
            name: "verified",
            ok: live.verification.passes > 0,
            detail: format!("{} full verification pass(es) done", live.verification.passes),
        },
        Precondition {
            name: "mismatches",
            ok: live.error_rate() <= threshold,
            detail: format!(
                "{} persistent mismatch(es) in {} rows compared: rate {:.6} (threshold {threshold})",
                live.mismatches.len(),
                live.shadow.compared + live.verification.rows_compared,
                live.error_rate()
            ),
        },
    ]
}

/// The first earlier wave of this one that has not switched over (none for the first wave, or a
/// migration without waves).
fn earlier_waves_switched(opened: &Opened) -> Option<usize> {
    let wave = opened.wave?;
    (1..wave).find(|earlier| {
        !matches!(
            opened.for_wave(*earlier).record(),
            Ok(Some(r)) if matches!(r.phase, Phase::Switched | Phase::Completed)
        )
    })
}

fn status(common: &Common) -> anyhow::Result<ExitCode> {
    let opened = Opened::open(common)?;
    if opened.umbrella() {
        // Every wave's status, in order.
        let mut reports = Vec::new();
        for wave in 1..=opened.settings.waves.len() {
            let wave = opened.for_wave(wave);
            let record = wave.existing()?;
            reports.push(report(&wave, &record, &wave.live()?, None));
        }
        if common.json {
            println!("{}", serde_json::json!({"migration": opened.name, "strategy": INCREMENTAL, "waves": reports}));
        } else {
            let shown: Vec<String> = reports.iter().map(render_status).collect();
            println!("{}", shown.join("\n"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let record = opened.existing()?;
    let live = opened.live()?;
    let report = report(&opened, &record, &live, None);
    if common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", render_status(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_status(r: &Report) -> String {
    let wave = match (r.wave, &r.wave_tables) {
        (Some(wave), Some(tables)) => format!(" wave {wave} ({})", tables.join(", ")),
        _ => String::new(),
    };
    let mut out =
        format!("migration {}{wave} ({})\nphase: {} since {}\n", r.migration, r.state, r.phase.name(), r.since);
    for step in &r.history {
        out.push_str(&format!("  {}  {:<12} {}\n", step.at, step.phase.name(), step.note));
    }
    out.push_str(&format!(
        "migrate start: {}\nlag: {:.2} s ({} bytes), {:.0} changes/s, {} changes applied ({})\n",
        if r.running { format!("running, {}", r.direction) } else { "not running".into() },
        r.lag_seconds,
        r.lag_bytes,
        r.changes_per_s,
        r.applied_total,
        r.direction
    ));
    out.push_str(&format!(
        "verification: {} pass(es), this one {}/{} tables, {} rows compared in the last, {} key(s) in flight\n",
        r.verification.passes,
        r.verification.tables_done,
        r.verification.tables_total,
        r.verification.rows_compared,
        r.verification.in_flight
    ));
    out.push_str(&format!(
        "shadow reads: {}% of changed keys, {} compared, {} in flight, {} pending\n",
        r.shadow.percent, r.shadow.compared, r.shadow.in_flight, r.shadow.pending
    ));
    out.push_str(&format!(
        "mismatches: {} (rate {:.6}, threshold {})\n",
        r.mismatches.len(),
        r.error_rate,
        r.error_threshold
    ));
    for m in r.mismatches.iter().take(20) {
        out.push_str(&format!("  {} {} {} (by {}, since {})\n", m.table, m.key, m.kind, m.found_by, m.since));
    }
    out.push_str(&format!("switchover: {}\n", if r.switchover_allowed { "allowed" } else { "not allowed" }));
    for p in &r.preconditions {
        out.push_str(&format!("  [{}] {}: {}\n", if p.ok { "x" } else { " " }, p.name, p.detail));
    }
    for (what, window) in [("switchover", &r.switchover), ("rollback", &r.rollback)] {
        if let Some(w) = window {
            out.push_str(&format!(
                "{what}: at {}, writes frozen {} ms, drained to {}\n",
                w.at, w.freeze_ms, w.drained_to
            ));
        }
    }
    if r.source_frozen || r.target_frozen {
        out.push_str(&format!(
            "frozen: {}\n",
            [(r.source_frozen, "source"), (r.target_frozen, "target")]
                .iter()
                .filter(|(f, _)| *f)
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(error) = &r.last_error {
        out.push_str(&format!("last error: {error}\n"));
    }
    out.trim_end().to_string()
}

/// A refusal: nothing was changed (exit 3).
fn refuse(json: bool, what: &str, reasons: &[String]) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({"ok": false, "refused": what, "reasons": reasons}));
    } else {
        eprintln!("error: {what} refused, nothing changed:");
        for reason in reasons {
            eprintln!("  - {reason}");
        }
    }
    ExitCode::from(EXIT_MISMATCH)
}

/// Runs the pipeline's hook for `event`, if it has one.
/// An incremental migration's hook also gets `BARGE_MIGRATE_WAVE` (1, 2, …) and
/// `BARGE_MIGRATE_TABLES` (the wave's tables, comma-separated).
fn run_hook(opened: &Opened, event: &str) -> Result<(), Error> {
    let Some(hook) = &opened.settings.hook else { return Ok(()) };
    let mut command = std::process::Command::new("sh");
    if let (Some(wave), Some(tables)) = (opened.wave, opened.wave_tables()) {
        command.env("BARGE_MIGRATE_WAVE", wave.to_string()).env("BARGE_MIGRATE_TABLES", tables.join(","));
    }
    let status = command
        .arg("-c")
        .arg(hook)
        .env("BARGE_MIGRATE_EVENT", event)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::engine("running the hook", e))?;
    if !status.success() {
        return Err(Error::engine("running the hook", format!("it exited with {status}")));
    }
    Ok(())
}

/// Times the steps of a switch.
struct Steps {
    started: Instant,
    last: Instant,
    steps: BTreeMap<String, u64>,
    deadline: Instant,
}

impl Steps {
    fn new(timeout: f64) -> Steps {
        let now = Instant::now();
        Steps { started: now, last: now, steps: BTreeMap::new(), deadline: now + Duration::from_secs_f64(timeout) }
    }

    /// Records `step`'s time, whatever it took: for the last steps, after which the switch
    /// must not be undone (the application may already write to the other side).
    fn mark(&mut self, step: &str) {
        self.steps.insert(step.to_string(), self.last.elapsed().as_millis() as u64);
        self.last = Instant::now();
    }

    /// Records `step`'s time; an error once the freeze timeout passed.
    fn done(&mut self, step: &str) -> Result<(), Error> {
        self.mark(step);
        if Instant::now() > self.deadline {
            return Err(Error::engine("switching", format!("the freeze timeout passed (after {step})")));
        }
        Ok(())
    }
}

/// Waits until `stream` applied everything before `position`, or the deadline.
fn drain(sides: &Sides, stream: &str, reverse: bool, position: u64, deadline: Instant) -> Result<(), Error> {
    loop {
        if sides.applied(stream, reverse)?.is_some_and(|p| p >= position) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::engine(
                "draining the changes",
                "the freeze timeout passed before the stream applied the last changes (is migrate start running?)",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a write freeze is for: a switchover freezes the source, a rollback the target.
#[derive(Clone, Copy, PartialEq)]
enum Switching {
    Over,
    Back,
}

impl Switching {
    fn command(self) -> &'static str {
        match self {
            Switching::Over => "switchover",
            Switching::Back => "rollback",
        }
    }

    /// The side frozen: the one that stops taking writes.
    fn frozen(self) -> &'static str {
        match self {
            Switching::Over => "source",
            Switching::Back => "target",
        }
    }
}

/// An incremental migration switches, rolls back and completes wave by wave.
fn one_wave(opened: &Opened, command: &str) -> Result<(), Error> {
    if opened.umbrella() {
        return Err(Error::Config(format!(
            "migration {} is incremental: {command} one wave at a time (`--wave N`, 1 to {})",
            opened.name,
            opened.settings.waves.len()
        )));
    }
    Ok(())
}

fn switchover(args: &Switch) -> anyhow::Result<ExitCode> {
    let opened = Opened::open(&args.common)?;
    one_wave(&opened, "switch over")?;
    let record = opened.existing()?;
    let live = opened.live()?;
    let failed: Vec<String> =
        preconditions(&opened, &record, &live, args.max_lag).into_iter().filter(|p| !p.ok).map(|p| p.detail).collect();
    if !failed.is_empty() {
        return Ok(refuse(args.common.json, "switchover", &failed));
    }
    under_freeze(&opened, args, record, Switching::Over, |sides, record, steps| {
        switch(&opened, sides, record, &live, steps)
    })
}

fn rollback(args: &Switch) -> anyhow::Result<ExitCode> {
    let opened = Opened::open(&args.common)?;
    one_wave(&opened, "roll back")?;
    let record = opened.existing()?;
    let live = opened.live()?;
    if record.strategy == BIG_BANG && record.phase.forward() {
        return abandon_big_bang(&opened, record, args.common.json);
    }
    let mut reasons = Vec::new();
    if record.phase != Phase::Switched {
        reasons.push(format!("the phase is {} (a rollback follows a switchover)", record.phase.name()));
    }
    if !live.fresh() {
        reasons.push("migrate start is not running (it drains the reverse sync during the rollback): start it".into());
    }
    // Waves roll back in the reverse order they switched.
    if let Some(wave) = opened.wave {
        for later in wave + 1..=opened.settings.waves.len() {
            if opened.for_wave(later).record()?.is_some_and(|r| r.phase == Phase::Switched) {
                reasons.push(format!("wave {later} is switched: roll the later waves back first"));
            }
        }
    }
    if !reasons.is_empty() {
        return Ok(refuse(args.common.json, "rollback", &reasons));
    }
    under_freeze(&opened, args, record, Switching::Back, |sides, record, steps| {
        switch_back(&opened, sides, record, &live, steps)
    })
}

/// A big-bang rolled back before its switch: the source, frozen since before the copy, takes
/// writes again (the target never took any); `start` ends.
fn abandon_big_bang(opened: &Opened, mut record: Record, json: bool) -> anyhow::Result<ExitCode> {
    let sides = Sides::open(&opened.pipeline)?;
    if let Some(token) = &record.source_frozen {
        sides.freeze(false)?.unfreeze(token)?;
    }
    record.source_frozen = None;
    let downtime = record.frozen_since.map(|at| ((now() - at) * 1000.0) as u64);
    record.enter(Phase::RolledBack, "big-bang abandoned before its switch: the source takes writes again");
    opened.save(&record)?;
    if json {
        println!("{}", serde_json::json!({"ok": true, "phase": record.phase, "downtime_ms": downtime}));
    } else {
        println!("migrate {}: rolled back before the switch; the source takes writes again", opened.label);
    }
    Ok(ExitCode::SUCCESS)
}

/// Freezes the side `switching` stops, runs `steps_of` under the freeze, and records the
/// outcome: the new phase and the window, or, when a step failed or the timeout passed, the
/// freeze undone (and a half-made reverse stream removed) with what happened in `last_error`.
fn under_freeze(
    opened: &Opened,
    args: &Switch,
    mut record: Record,
    switching: Switching,
    steps_of: impl FnOnce(&Sides, &mut Record, &mut Steps) -> Result<Window, Error>,
) -> anyhow::Result<ExitCode> {
    let sides = Sides::open(&opened.pipeline)?;
    let mut steps = Steps::new(args.freeze_timeout.unwrap_or(opened.settings.freeze_timeout));
    let on_target = switching == Switching::Back;
    // Big-bang: the source has been frozen since before the copy, and stays so if this fails.
    let kept = frozen_token(&mut record, on_target).clone().filter(|_| switching == Switching::Over);
    let token = match &kept {
        Some(token) => token.clone(),
        None => freeze_side(opened, &sides, on_target)?,
    };
    *frozen_token(&mut record, on_target) = Some(token.clone());
    opened.save(&record)?;
    let (command, json) = (switching.command(), args.common.json);
    match steps_of(&sides, &mut record, &mut steps) {
        Ok(mut window) => {
            window.freeze_ms = steps.started.elapsed().as_millis() as u64;
            window.steps = steps.steps;
            if switching == Switching::Over {
                window.downtime_ms = record.frozen_since.map(|at| ((now() - at) * 1000.0) as u64);
            }
            record.last_error = None;
            let note = format!("writes frozen {} ms", window.freeze_ms);
            let said = match switching {
                Switching::Over => {
                    record.switchover = Some(window.clone());
                    record.enter(Phase::Switched, note);
                    format!(
                        "switched over; the source's writes were frozen {} ms (drained to {}, verified {} table(s), \
                         {} rows); the reverse sync keeps the source current",
                        window.freeze_ms,
                        window.drained_to,
                        window.verified.len(),
                        window.rows_verified
                    )
                }
                Switching::Back => {
                    record.source_frozen = None;
                    record.rollback = Some(window.clone());
                    record.enter(Phase::RolledBack, note);
                    format!(
                        "rolled back; the target's writes were frozen {} ms (verified {} table(s), {} rows); the \
                         source takes writes again (the target stays read-only; `barge migrate complete` removes what \
                         barge made)",
                        window.freeze_ms,
                        window.verified.len(),
                        window.rows_verified
                    )
                }
            };
            opened.save(&record)?;
            if json {
                println!("{}", serde_json::json!({"ok": true, "phase": record.phase, command: window}));
            } else {
                println!("migrate {}: {said}", opened.label);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let undone = if kept.is_some() {
                Err(Error::Config("big-bang".into()))
            } else {
                unfreeze_side(opened, &sides, on_target, &token)
            };
            if switching == Switching::Over {
                // No reverse stream is left: the target is not the one taking writes.
                if let Ok(feed) = sides.feed(true) {
                    let _ = feed.drop_stream(&record.reverse);
                }
                if let Ok(positions) = sides.positions(true) {
                    let _ = positions.forget(&record.reverse);
                }
            }
            *frozen_token(&mut record, on_target) = if undone.is_ok() { None } else { Some(token) };
            let message = format!(
                "{command} failed after {} ms: {error}; the {} {}",
                steps.started.elapsed().as_millis(),
                switching.frozen(),
                match &undone {
                    Ok(()) => "takes writes again".to_string(),
                    Err(_) if kept.is_some() => "stays read-only (big-bang: until a switchover or rollback)".into(),
                    Err(e) => format!("could not be unfrozen ({e}): run `barge migrate {command}` again"),
                }
            );
            record.last_error = Some(message.clone());
            opened.save(&record)?;
            if json {
                println!("{}", serde_json::json!({"ok": false, "phase": record.phase, "error": message}));
            } else {
                eprintln!("error: {message}");
            }
            Ok(ExitCode::from(EXIT_RUNTIME))
        }
    }
}

/// Freezes the source (or the target): the whole database, or a wave's tables only.
fn freeze_side(opened: &Opened, sides: &Sides, target: bool) -> Result<String, Error> {
    let freeze = sides.freeze(target)?;
    match opened.wave_tables() {
        Some(tables) => {
            freeze.freeze_tables(tables)?;
            Ok(TABLES_FROZEN.into())
        }
        None => freeze.freeze(),
    }
}

/// Undoes [`freeze_side`].
fn unfreeze_side(opened: &Opened, sides: &Sides, target: bool, token: &str) -> Result<(), Error> {
    let freeze = sides.freeze(target)?;
    match opened.wave_tables() {
        Some(tables) => freeze.unfreeze_tables(tables),
        None => freeze.unfreeze(token),
    }
}

/// The token of a wave's freeze (its tables' triggers need none).
const TABLES_FROZEN: &str = "tables";

/// Where the record keeps the freeze token of the source or the target.
fn frozen_token(record: &mut Record, target: bool) -> &mut Option<String> {
    if target { &mut record.target_frozen } else { &mut record.source_frozen }
}

/// Verifies `tables` exactly (the side that takes writes is frozen and the stream drained): an
/// error naming the first table that differs. Returns the rows compared.
fn verify_frozen(sides: &Sides, pipeline: &Pipeline, tables: &[String]) -> Result<u64, Error> {
    if tables.is_empty() {
        return Ok(0);
    }
    let report = verify_between(sides, pipeline, tables, None)?;
    if let Some(t) = report.tables.iter().find(|t| !t.diff.is_empty()) {
        return Err(Error::engine(
            "verifying the frozen tables",
            format!(
                "`{}` differs: {} missing, {} extra, {} changed (first keys: {})",
                t.table,
                t.diff.missing_total,
                t.diff.extra_total,
                t.diff.changed_total,
                serde_json::to_string(&[&t.diff.missing, &t.diff.extra, &t.diff.changed]).unwrap_or_default()
            ),
        ));
    }
    Ok(report.tables.iter().map(|t| t.source_rows).sum())
}

/// Moves the identity/serial generators of `tables` in `side` past the keys its rows hold.
fn continue_identities(side: &dyn barge_core::Target, tables: &[String]) -> Result<(), Error> {
    if let Some(objects) = side.schema_objects() {
        for table in tables {
            objects.continue_identities(table)?;
        }
    }
    Ok(())
}

/// Under a freeze: waits until `stream` applied everything the frozen side committed; the
/// position drained to, as shown.
fn drain_frozen(sides: &Sides, stream: &str, reverse: bool, steps: &mut Steps) -> Result<String, Error> {
    steps.done("freeze")?;
    let feed = sides.feed(reverse)?;
    let position = feed.current_position()?;
    drain(sides, stream, reverse, position, steps.deadline)?;
    steps.done("drain")?;
    Ok(feed.describe_position(position))
}

/// The steps of a switchover once the source is frozen.
fn switch(
    opened: &Opened,
    sides: &Sides,
    record: &mut Record,
    live: &Live,
    steps: &mut Steps,
) -> Result<Window, Error> {
    let drained_to = drain_frozen(sides, &record.forward, false, steps)?;
    // The tables the stream changed since their last clean verification, verified again: exact
    // now (nothing moves).
    let applied = sides.table_positions(&record.forward, false)?;
    let changed: Vec<String> = record
        .tables
        .iter()
        .filter(|t| match live.verified_position.get(*t) {
            Some(verified) => applied.get(*t).is_some_and(|p| p > verified),
            None => true,
        })
        .cloned()
        .collect();
    let rows = verify_frozen(sides, &opened.pipeline, &changed)?;
    steps.done("verify")?;
    continue_identities(sides.target_out.as_ref(), &record.tables)?;
    steps.done("sequences")?;
    // The reverse stream starts here: every write the target takes from now on goes back.
    let target_feed = sides.feed(true)?;
    let infos: Vec<barge_core::TableInfo> =
        record.tables.iter().map(|t| sides.target.table(t)).collect::<Result<_, _>>()?;
    target_feed.check(&infos)?;
    let start = target_feed.open_stream(&record.reverse, &infos)?;
    sides.positions(true)?.record(&record.reverse, "", start)?;
    steps.done("reverse stream")?;
    // The last step: once the hook repointed the application, the switch stands.
    run_hook(opened, "switchover")?;
    steps.mark("hook");
    Ok(Window {
        freeze_ms: 0,
        at: now_text(),
        drained_to,
        verified: changed,
        rows_verified: rows,
        steps: BTreeMap::new(),
        downtime_ms: None,
    })
}

/// The steps of a rollback once the target is frozen.
fn switch_back(
    opened: &Opened,
    sides: &Sides,
    record: &mut Record,
    live: &Live,
    steps: &mut Steps,
) -> Result<Window, Error> {
    let drained_to = drain_frozen(sides, &record.reverse, true, steps)?;
    // The tables the reverse sync changed (or stopped on): the others are as the switchover
    // verified them, the source frozen since.
    let changed_back = sides.table_positions(&record.reverse, true)?;
    let stopped: Vec<&str> = live.tables.iter().filter(|t| t.error.is_some()).map(|t| t.table.as_str()).collect();
    let verified: Vec<String> = record
        .tables
        .iter()
        .filter(|t| changed_back.contains_key(*t) || stopped.contains(&t.as_str()))
        .cloned()
        .collect();
    let rows = verify_frozen(sides, &opened.pipeline, &verified)?;
    steps.done("verify")?;
    continue_identities(sides.source_out.as_ref(), &record.tables)?;
    steps.done("sequences")?;
    run_hook(opened, "rollback")?;
    steps.done("hook")?;
    // The last step: the source takes writes again (until then a failure leaves it frozen and
    // the target writable, as before the rollback).
    if let Some(token) = &record.source_frozen {
        unfreeze_side(opened, sides, false, token)?;
    }
    steps.mark("unfreeze source");
    Ok(Window {
        freeze_ms: 0,
        at: now_text(),
        drained_to,
        verified,
        rows_verified: rows,
        steps: BTreeMap::new(),
        downtime_ms: None,
    })
}

fn complete(finish: &Finish) -> anyhow::Result<ExitCode> {
    let common = &finish.common;
    let opened = Opened::open(common)?;
    one_wave(&opened, "complete")?;
    let mut record = opened.existing()?;
    let shadow = record.strategy == SHADOW_STRATEGY;
    if !shadow && !matches!(record.phase, Phase::Switched | Phase::RolledBack | Phase::Completed) {
        let reason = format!("the phase is {}: complete follows a switchover (or a rollback)", record.phase.name());
        return Ok(refuse(common.json, "complete", &[reason]));
    }
    if shadow && record.phase.forward() {
        record.enter(Phase::Completed, "shadow ended: the target was kept current and validated");
    } else if record.phase == Phase::Switched {
        record.enter(Phase::Completed, "reverse sync stopped");
    } else if record.phase == Phase::RolledBack {
        record.history.push(Step { phase: Phase::RolledBack, at: now_text(), note: "completed".into() });
    }
    opened.save(&record)?;
    // `start` follows the phase within a second and stops; its streams are removed after.
    let deadline = Instant::now() + Duration::from_secs(30);
    while opened.live()?.fresh() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if opened.live()?.fresh() {
        return Err(Error::engine("completing", "migrate start did not stop within 30 s").into());
    }
    let sides = Sides::open(&opened.pipeline)?;
    let mut removed = Vec::new();
    for (stream, reverse) in [(&record.forward, false), (&record.reverse, true)] {
        let retained = sides.feed(reverse)?.drop_stream(stream)?;
        sides.positions(reverse)?.forget(stream)?;
        removed.push(serde_json::json!({"stream": stream, "on": if reverse { "target" } else { "source" },
                                        "existed": retained.is_some()}));
    }
    if finish.reopen {
        for (token, target) in [(record.source_frozen.take(), false), (record.target_frozen.take(), true)] {
            if let Some(token) = token {
                unfreeze_side(&opened, &sides, target, &token)?;
            }
        }
    }
    record.cleaned = true;
    opened.save(&record)?;
    let frozen: Vec<&str> = [(record.source_frozen.is_some(), "source"), (record.target_frozen.is_some(), "target")]
        .into_iter()
        .filter(|(f, _)| *f)
        .map(|(_, s)| s)
        .collect();
    if common.json {
        println!("{}", serde_json::json!({"ok": true, "phase": record.phase, "removed": removed, "read_only": frozen}));
    } else {
        println!(
            "migrate {}: {}; removed both streams (slots, publications and positions){}",
            opened.label,
            record.phase.name(),
            if frozen.is_empty() {
                String::new()
            } else {
                format!(
                    "; the {} stays read-only, as retired (`barge migrate complete --reopen` lets it take writes)",
                    frozen.join(" and ")
                )
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_named_as_status_shows_them() {
        for phase in [
            Phase::Planned,
            Phase::Copying,
            Phase::CatchingUp,
            Phase::Validating,
            Phase::Switched,
            Phase::Completed,
            Phase::RolledBack,
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.name());
            assert_eq!(phase.forward(), !matches!(phase, Phase::Switched | Phase::Completed | Phase::RolledBack));
        }
    }

    #[test]
    fn a_table_is_unverified_until_a_clean_pass_started_after_its_last_change() {
        let tables = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let mut live = Live::default();
        assert_eq!(live.unverified(&tables), tables, "nothing verified yet");
        live.verified_at.insert("a".into(), 10.0);
        live.verified_at.insert("b".into(), 10.0);
        live.changed_at.insert("b".into(), 12.0);
        live.changed_at.insert("c".into(), 5.0);
        assert_eq!(live.unverified(&tables), ["b", "c"]);
    }

    #[test]
    fn the_lag_counts_the_time_the_sync_has_not_reported() {
        let mut live = Live { lag_seconds: 0.2, updated: 100.0, status_at: 99.5, ..Live::default() };
        assert_eq!(live.lag(), 0.2, "a report within the second");
        live.status_at = 96.0;
        assert!((live.lag() - 3.2).abs() < 1e-9, "{}", live.lag());
        live.status_at = 0.0;
        assert_eq!(live.lag(), 0.2, "no report yet in this process");
    }

    #[test]
    fn the_error_rate_is_persistent_mismatches_per_row_compared() {
        let mut live = Live::default();
        assert_eq!(live.error_rate(), 0.0);
        live.verification.rows_compared = 900;
        live.shadow.compared = 100;
        live.mismatches.push(Mismatch {
            table: "t".into(),
            key: serde_json::json!([1]),
            kind: "changed".into(),
            found_by: VERIFICATION.into(),
            since: String::new(),
        });
        assert_eq!(live.error_rate(), 0.001);
    }

    #[test]
    fn streams_are_named_as_slots_may_be() {
        let (forward, reverse) =
            stream_names("Orders-Migration 2026 with a name far longer than any replication slot may be");
        assert_eq!(forward, "m_orders_migration_2026_with_a_name_far_lo");
        assert_eq!(reverse, format!("{forward}_rev"));
        assert!(reverse.len() <= 50);
    }
}
