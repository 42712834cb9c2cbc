//! Many barge processes share one run through a PostgreSQL state store: `run --distributed` (the
//! coordinator) plans the run, makes the target's tables, and puts every range in the store's
//! queue; `barge worker` processes, on any machines, claim ranges with leases and copy them
//! with the usual runtime; the coordinator then finishes the tables (indexes, foreign keys) and
//! verifies, as `--resume` of a run whose ranges are all committed. `barge status` shows the
//! queue.
//!
//! A lease runs out unless its worker renews it. A worker taking over a range whose lease ran out
//! first ends the target sessions the earlier holder recorded for it (so a worker that was only
//! stopped cannot commit when it wakes), then clears the range and loads it again; a worker
//! checks its lease before each commit, and records the range done only while it still holds it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use barge_core::Error;
use barge_core::ledger::{
    Advance, Claim, DigestClaim, LedgerStore, PieceOf, QueuedRange, RangeDone, WorkItem, WorkQueue,
};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{check_ledger, engines, open_ledger};

/// What the coordinator leaves in the store for the workers (document `distributed` of the run).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// The pipeline file as the coordinator read it (its `${ENV}` references resolved by each
    /// worker from its own environment: no secret is stored).
    pub pipeline: String,
    /// Where it was, for its relative paths (rejects).
    pub path: String,
    /// A `copy --distributed`: its arguments after `copy` (without `--state`, `--distributed`,
    /// `--json`, `--stall-after`; its URLs hold no password), in place of a pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<Vec<String>>,
    /// The ledger fingerprint of the run.
    pub fingerprint: String,
    /// `copying` until the coordinator finishes; then `finished` (workers exit 0), or `failed`
    /// when a range failed for good (workers of that run exit 1).
    pub state: String,
}

pub const SPEC: &str = "distributed";

/// Rows per chunk of a long range (`worker --chunk-rows`).
pub const DEFAULT_CHUNK_ROWS: u64 = 1_000_000;
/// Chunks of one range, at most.
const MOST_CHUNKS: u64 = 64;

/// The queue of the store `--state` names, or why not.
fn queue_of(store: &dyn LedgerStore) -> Result<&dyn WorkQueue, Error> {
    store.work_queue().ok_or_else(|| {
        Error::Config(format!(
            "{} cannot share a run between processes: --distributed and barge worker need a PostgreSQL state \
             store (--state postgres://…)",
            store.describe()
        ))
    })
}

/// How the coordinator watches the workers: `stall_after` seconds without progress is a stall;
/// `json` prints the queue once a second; `shown` keeps the last queue for the metrics.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub stall_after: f64,
    pub json: bool,
    pub shown: &'a Mutex<Option<(Summary, usize)>>,
}

/// The coordinator, once the tables are made and the ranges are in the ledger: enqueues them,
/// waits until workers copied them all (saying how far they are), and returns. An error when a
/// range failed for good.
pub fn coordinate(
    store: &Arc<dyn LedgerStore>,
    run: &str,
    spec: &Spec,
    plan: &barge_plan::Plan,
    target: &dyn barge_core::Target,
    watch: &Watch<'_>,
) -> Result<(), Error> {
    let Watch { stall_after, json, shown } = *watch;
    let queue = queue_of(store.as_ref())?;
    let mut items = Vec::new();
    for table in &plan.tables {
        let each = table.source.estimated_rows / table.ranges.len().max(1) as u64;
        for range in &table.ranges {
            items.push(WorkItem {
                table: table.source.name.clone(),
                range: range.id,
                estimated_rows: each,
                lo: key_json(&range.lo),
                hi: key_json(&range.hi),
            });
        }
    }
    queue.enqueue(run, &items)?;
    set_spec(store.as_ref(), run, spec)?;
    eprintln!("run {run}: {} range(s) queued in {}; waiting for workers (barge worker)", items.len(), store.describe());
    let mut last_line = Instant::now();
    let mut stalled_said: Vec<(String, usize, u32, bool)> = Vec::new();
    loop {
        let ranges = queue.queue(run)?;
        let summary = Summary::of(&ranges);
        let stalled = ranges.iter().filter(|r| r.state == "claimed" && r.idle_seconds >= stall_after).count();
        *shown.lock().expect("queue lock") = Some((summary.clone(), stalled));
        if let Some(failed) = ranges.iter().find(|r| r.state == "failed") {
            // Workers on this run stop (the queue stays, for `status`).
            set_spec(store.as_ref(), run, &Spec { state: "failed".into(), ..spec.clone() })?;
            return Err(Error::engine(
                format!("range {} of table `{}`", failed.range, failed.table),
                format!("failed {} time(s): {}", failed.attempt, failed.error.as_deref().unwrap_or("")),
            ));
        }
        for stall in ranges.iter().filter(|r| r.state == "claimed" && r.idle_seconds >= stall_after) {
            // Said once, and again once the server says what its sessions wait on.
            let waits = target.session_waits(&stall.sessions).unwrap_or_else(|e| vec![format!("({e})")]);
            let said = (stall.table.clone(), stall.range, stall.attempt, waits.is_empty());
            if !stalled_said.contains(&said) {
                eprintln!("warning: {}", stall_report(stall, &waits));
                if json {
                    println!("{}", serde_json::json!({"run": run, "stalled": stall, "waits": waits}));
                }
                stalled_said.push(said);
            }
        }
        // Said once a second with --json, every five seconds otherwise.
        let every = Duration::from_secs(if json { 1 } else { 5 });
        if last_line.elapsed() >= every || summary.done == summary.total {
            if json {
                println!("{}", serde_json::json!({"run": run, "phase": "distributed copy", "queue": summary}));
            } else {
                eprintln!("{}", summary.line(run));
            }
            last_line = Instant::now();
        }
        if summary.done == summary.total {
            return Ok(());
        }
        // The run goes on as soon as the last range is in: read often while the queue is small
        // enough for that to cost the store nothing.
        std::thread::sleep(Duration::from_millis(if ranges.len() <= 2_000 { 25 } else { 250 }));
    }
}

/// A key bound as the queue keeps it (`null`: unbounded).
fn key_json(key: &Option<Vec<barge_core::Scalar>>) -> String {
    serde_json::to_string(key).expect("keys serialise")
}

fn key_of(text: &str) -> Result<Option<Vec<barge_core::Scalar>>, Error> {
    serde_json::from_str(text).map_err(|e| Error::engine("reading a key bound from the queue", e))
}

fn set_spec(store: &dyn LedgerStore, run: &str, spec: &Spec) -> Result<(), Error> {
    let body = serde_json::to_string(spec).map_err(|e| Error::engine("writing the run's spec", e))?;
    store.set_document(run, SPEC, &body)
}

/// The coordinator finished the run: workers waiting on it exit (1 when it failed).
/// `report`: how the coordinator's finish went. A table that failed (its finish, its verification's
/// digest tasks) fails the run, and its workers exit 1 as for a range that failed; a mismatch does
/// not (the workers did their part: the coordinator exits 3).
pub fn finished(
    store: &dyn LedgerStore,
    run: &str,
    spec: &Spec,
    report: &Result<barge_exec::CopyReport, Error>,
) -> Result<(), Error> {
    let ok = report.as_ref().is_ok_and(|r| r.tables.iter().all(|t| t.error.is_none()));
    if ok {
        // (A failed run's queue stays, for `barge status`, as when a range fails.)
        queue_of(store)?.drop_queue(run)?;
    }
    set_spec(store, run, &Spec { state: if ok { "finished" } else { "failed" }.into(), ..spec.clone() })
}

/// `range N`, or `range N piece P` for a remainder split off it.
fn range_name(range: usize, piece: usize) -> String {
    if piece == 0 { format!("range {range}") } else { format!("range {range} piece {piece}") }
}

/// A stalled range, as the coordinator's log and `status` name it.
fn stall_line(r: &QueuedRange) -> String {
    format!(
        "{} {} on {}: no progress for {:.0} s ({} rows done, lease {})",
        r.table,
        range_name(r.range, r.piece),
        r.owner.as_deref().unwrap_or("nobody"),
        r.idle_seconds,
        r.rows_done,
        if r.lease_left_seconds > 0.0 {
            format!("{:.0} s left", r.lease_left_seconds)
        } else {
            "ran out: another worker takes it".into()
        }
    )
}

/// A stalled range with what its sessions wait on.
fn stall_report(r: &QueuedRange, waits: &[String]) -> String {
    match waits {
        [] => stall_line(r),
        waits => format!("{}; {}", stall_line(r), waits.join("; ")),
    }
}

/// The coordinator's metrics: its run's ranges by state, rows, stalled ranges (none before the
/// queue exists).
pub fn queue_metrics(shown: &Mutex<Option<(Summary, usize)>>) -> String {
    let Some((s, stalled)) = shown.lock().expect("queue lock").clone() else { return String::new() };
    let mut m = super::status_page::Metrics::default();
    m.family("barge_distributed_ranges", "gauge", "Ranges of the distributed run, by state.");
    for (state, n) in [("pending", s.pending), ("claimed", s.claimed), ("done", s.done), ("failed", s.failed)] {
        m.sample("barge_distributed_ranges", &[("state", state)], n as f64);
    }
    m.one(
        "barge_distributed_rows_done",
        "gauge",
        "Rows the workers wrote, as their heartbeats said.",
        s.rows_done as f64,
    );
    m.one("barge_distributed_workers", "gauge", "Workers holding ranges now.", s.workers.len() as f64);
    m.one(
        "barge_distributed_stalled_ranges",
        "gauge",
        "Claimed ranges without progress for --stall-after.",
        stalled as f64,
    );
    m.finish()
}

/// A worker's counters, for its metrics and its status page.
#[derive(Default)]
struct WorkerCounts {
    done: AtomicU64,
    lost: AtomicU64,
    failed: AtomicU64,
    rows: AtomicU64,
    held: AtomicU64,
    /// The ranges it copies or copied (the last hundred), for the status page.
    ranges: Mutex<std::collections::VecDeque<RangeRow>>,
    started: std::sync::OnceLock<Instant>,
}

/// A range as the worker's status page shows it.
struct RangeRow {
    name: String,
    rows: Arc<AtomicU64>,
    /// `copy` while it runs, then `done`, `lost` or `failed`.
    step: String,
    summary: Option<String>,
}

impl WorkerCounts {
    fn metrics(&self) -> String {
        let mut m = super::status_page::Metrics::default();
        m.family("barge_worker_ranges_total", "counter", "Ranges this worker finished, by outcome.");
        for (outcome, n) in [("done", &self.done), ("lost", &self.lost), ("failed", &self.failed)] {
            m.sample("barge_worker_ranges_total", &[("outcome", outcome)], n.load(Ordering::Relaxed) as f64);
        }
        m.one(
            "barge_worker_rows_written_total",
            "counter",
            "Rows of ranges done.",
            self.rows.load(Ordering::Relaxed) as f64,
        );
        m.one(
            "barge_worker_ranges_held",
            "gauge",
            "Ranges this worker holds now.",
            self.held.load(Ordering::Relaxed) as f64,
        );
        m.finish()
    }

    /// The status page's object: the shape of a copy's (`progress` rows), one row per range.
    fn status(&self, name: &str) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let seconds = self.started.get_or_init(Instant::now).elapsed().as_secs_f64().max(1e-3);
        let ranges = self.ranges.lock().expect("ranges lock");
        let progress: Vec<serde_json::Value> = ranges
            .iter()
            .rev()
            .map(|r| {
                serde_json::json!({"table": r.name, "step": r.step, "rows": n(&r.rows), "total_rows": 0,
                                   "summary": r.summary})
            })
            .collect();
        serde_json::json!({
            "stream": format!("worker {name}"),
            "phase": if n(&self.held) > 0 { "copying" } else { "waiting for ranges" },
            "applied_total": n(&self.rows),
            "changes_per_s": n(&self.rows) as f64 / seconds,
            "progress": progress,
            "ranges_done": n(&self.done), "ranges_lost": n(&self.lost), "ranges_failed": n(&self.failed),
            "ranges_held": n(&self.held),
        })
        .to_string()
    }

    /// A range begins: shown with its rows as they are written.
    fn begin(&self, table: &str, range: usize, rows: &Arc<AtomicU64>) {
        self.started.get_or_init(Instant::now);
        self.held.fetch_add(1, Ordering::Relaxed);
        let mut ranges = self.ranges.lock().expect("ranges lock");
        if ranges.len() >= 100 {
            ranges.pop_front();
        }
        ranges.push_back(RangeRow {
            name: format!("{table} range {range}"),
            rows: rows.clone(),
            step: "copy".into(),
            summary: None,
        });
    }

    /// A range ended with `outcome`, `written` rows.
    fn end(&self, table: &str, range: usize, outcome: &str, written: u64, summary: String) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.rows.fetch_add(written, Ordering::Relaxed);
        match outcome {
            "done" => &self.done,
            "lost" => &self.lost,
            _ => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        let name = format!("{table} range {range}");
        if let Some(row) = self.ranges.lock().expect("ranges lock").iter_mut().rev().find(|r| r.name == name) {
            row.step = outcome.to_string();
            row.summary = Some(summary);
        }
    }
}

/// The queue of a run, counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub total: usize,
    pub pending: usize,
    pub claimed: usize,
    pub done: usize,
    pub failed: usize,
    pub rows_done: u64,
    pub rows_estimated: u64,
    /// Workers holding ranges now.
    pub workers: Vec<String>,
}

impl Summary {
    fn of(ranges: &[QueuedRange]) -> Summary {
        let mut s = Summary { total: ranges.len(), ..Summary::default() };
        for r in ranges {
            match r.state.as_str() {
                "pending" => s.pending += 1,
                "claimed" => s.claimed += 1,
                "done" => s.done += 1,
                _ => s.failed += 1,
            }
            s.rows_done += r.rows_done;
            s.rows_estimated += r.estimated_rows;
            if let Some(owner) = r.owner.as_ref().filter(|_| r.state == "claimed")
                && !s.workers.contains(owner)
            {
                s.workers.push(owner.clone());
            }
        }
        s.workers.sort();
        s
    }

    fn line(&self, run: &str) -> String {
        format!(
            "run {run}: {} of {} range(s) done, {} claimed by {} worker(s), {} pending; {} of ~{} rows",
            self.done,
            self.total,
            self.claimed,
            self.workers.len(),
            self.pending,
            barge_core::text::count(self.rows_done),
            barge_core::text::count(self.rows_estimated)
        )
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The PostgreSQL state store the coordinator (`run --distributed`) queues ranges in.
    #[arg(long)]
    state: String,
    /// Work on this run only (default: any run with ranges to copy), and exit 0 once it is finished.
    #[arg(long)]
    run: Option<String>,
    /// Ranges copied at once by this process.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seconds a claimed range stays this worker's without a heartbeat (renewed every third of it).
    #[arg(long, default_value_t = 30.0)]
    lease: f64,
    /// This worker's name in the queue (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// A range of more rows than this is copied in chunks of about this many, each committed on
    /// its own; a worker with nothing left to claim splits the chunks another worker has not
    /// started off its range, and copies them itself (so a run does not wait on one long range).
    #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS)]
    chunk_rows: u64,
    /// One JSON object per range on stdout.
    #[arg(long)]
    json: bool,
    /// Serve this worker's metrics in Prometheus' text format at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Serve a live status page (and `/status.json`) of this worker at this address: the ranges it
    /// copies and copied, their rows and outcome.
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<String>,
}

impl WorkerArgs {
    pub fn json(&self) -> bool {
        self.json
    }
}

/// A run as a worker prepared it: the pipeline planned here, with the ranges the ledger holds.
struct Prepared {
    run: String,
    source: Arc<dyn barge_core::Source>,
    target: Arc<dyn barge_core::Target>,
    /// The target opened for reading: verification digest tasks.
    reader: Arc<dyn barge_core::Source>,
    /// Each table's target as digest tasks read it, described once.
    described: Mutex<std::collections::HashMap<String, barge_core::TableInfo>>,
    plan: barge_plan::Plan,
    options: barge_exec::ExecOptions,
}

fn prepare(store: &dyn LedgerStore, run: &str, spec: &Spec) -> Result<Prepared, Error> {
    let (preflight, mut options) = match &spec.copy {
        Some(copy) => prepare_copy(copy)?,
        None => prepare_pipeline(spec)?,
    };
    let record = store.resume(run, &spec.fingerprint)?;
    let reader = preflight.open_target_reader()?;
    let mut plan = preflight.plan;
    for table in &mut plan.tables {
        if let Some(ledger) = record.tables.get(&table.source.name) {
            table.ranges = ledger.ranges.clone();
        }
    }
    options.snapshot_lock = false;
    Ok(Prepared {
        run: run.to_string(),
        source: preflight.source,
        target: preflight.target,
        reader,
        described: Mutex::default(),
        plan,
        options,
    })
}

/// A worker's plan of a pipeline run: the ranges are the ledger's, planned here as one each,
/// without counting or sampling the source (the coordinator did).
fn prepare_pipeline(spec: &Spec) -> Result<(barge_plan::Preflight, barge_exec::ExecOptions), Error> {
    let path = std::path::PathBuf::from(&spec.path);
    let mut pipeline = barge_pipeline::Pipeline::parse(&spec.pipeline, &path, &|name| std::env::var(name).ok())?;
    pipeline.partitions = Some(1);
    for table in &mut pipeline.tables {
        table.partitions = Some(1);
    }
    let registry = engines::registry();
    let workers = 1;
    let request = |target: &dyn barge_core::EngineFactory| {
        pipeline.request(workers, target.name(), &std::collections::HashMap::new(), false)
    };
    let preflight =
        barge_plan::preflight(&registry, &pipeline.source, &pipeline.target, request, barge_plan::IfExists::Append)?;
    let options = barge_exec::ExecOptions {
        rejects: Some(Arc::new(barge_core::RejectLog::new(&pipeline.rejects_dir))),
        unrepresentable: pipeline.unrepresentable,
        retries: pipeline.retries.unwrap_or(barge_exec::DEFAULT_RETRIES),
        ..barge_exec::ExecOptions::new(workers, pipeline.batch_rows.unwrap_or(super::DEFAULT_BATCH_ROWS), false)
    };
    Ok((preflight, options))
}

/// A worker's plan of a `copy --distributed`, from the copy's own arguments (as one range per
/// table, into the tables the coordinator made).
fn prepare_copy(copy: &[String]) -> Result<(barge_plan::Preflight, barge_exec::ExecOptions), Error> {
    let argv = ["barge", "copy"].into_iter().map(String::from).chain(copy.iter().cloned());
    let parsed = <super::Cli as clap::Parser>::try_parse_from(argv)
        .map_err(|e| Error::Config(format!("the stored copy command does not parse: {}", e.kind())))?;
    let super::Command::Copy(mut args) = parsed.command else {
        return Err(Error::Config("the stored command is not a copy".into()));
    };
    args.tuning.partitions = Some(1);
    args.tuning.workers = 1;
    args.if_exists = super::IfExistsArg::Append;
    let (preflight, _) = super::plan_copy(&args)?;
    let (run_budget, rejects) = super::copy_budget(&args)?;
    let options = barge_exec::ExecOptions {
        unrepresentable: args.unrepresentable.into(),
        run_budget,
        rejects,
        retries: args.retries,
        ..super::options(&args.tuning, false)
    };
    Ok((preflight, options))
}

/// A worker's guard over the range it holds: renews the lease, records its writers' sessions.
struct Lease {
    queue_store: Arc<dyn LedgerStore>,
    run: String,
    worker: String,
    table: String,
    range: usize,
    piece: usize,
    seconds: f64,
    rows: Arc<AtomicU64>,
    lost: AtomicBool,
}

impl Lease {
    fn queue(&self) -> &dyn WorkQueue {
        self.queue_store.work_queue().expect("a store with a queue")
    }

    fn of(&self) -> PieceOf<'_> {
        PieceOf { table: &self.table, range: self.range, piece: self.piece }
    }

    fn renew(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let held = self
            .queue()
            .renew(&self.run, &self.worker, self.of(), self.seconds, self.rows.load(Ordering::Relaxed))
            .unwrap_or(false);
        if !held {
            self.lost.store(true, Ordering::SeqCst);
        }
        held
    }

    fn lost_error(&self) -> Error {
        Error::engine(
            format!("range {} of table `{}`", self.range, self.table),
            "this worker's lease ran out and another worker holds the range now: nothing more is committed",
        )
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lease of {} range {} for {}", self.table, self.range, self.worker)
    }
}

impl barge_exec::Fence for Lease {
    fn writer_opened(&self, session: Option<String>) -> barge_core::Result<()> {
        let Some(session) = session else { return Ok(()) };
        if self.queue().attach(&self.run, &self.worker, self.of(), &session)? {
            Ok(())
        } else {
            self.lost.store(true, Ordering::SeqCst);
            Err(self.lost_error())
        }
    }

    fn still_held(&self) -> barge_core::Result<()> {
        if self.renew() { Ok(()) } else { Err(self.lost_error()) }
    }
}

/// Counts the rows a range copy wrote, for the heartbeats.
struct Rows(Arc<AtomicU64>);

impl barge_exec::Progress for Rows {
    fn started(&self, _: &str, _: barge_exec::Phase, _: u64) {}
    fn advance(&self, _: &str, phase: barge_exec::Phase, rows: u64) {
        if phase == barge_exec::Phase::Copy {
            self.0.fetch_add(rows, Ordering::Relaxed);
        }
    }
    fn finished(&self, _: &str, _: barge_exec::Phase, _: &str) {}
}

/// What one range copy did, as `--json` prints it.
#[derive(Serialize)]
struct Copied<'a> {
    run: &'a str,
    worker: &'a str,
    table: &'a str,
    range: usize,
    /// 0: the range as planned; more: a remainder split off it.
    piece: usize,
    attempt: u32,
    rows: u64,
    seconds: f64,
    /// `done`, `lost` (the lease ran out: another holds it) or `failed`.
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    took_over_from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `barge worker`: claims ranges of the queued runs until they are done.
pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    check_ledger(&args.state)?;
    let store = open_ledger(&args.state)?;
    queue_of(store.as_ref())?;
    if args.workers == 0 || !(args.lease > 0.0 && args.lease.is_finite()) {
        return Err(
            Error::Config("--workers must be at least 1 and --lease a positive number of seconds".into()).into()
        );
    }
    let host = barge_core::ledger::Holder::current().host;
    let name = args.name.clone().unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let counts = Arc::new(WorkerCounts::default());
    let served = {
        let (status, metrics, shown) = (counts.clone(), counts.clone(), name.clone());
        super::status_page::Served {
            status: Arc::new(move || status.status(&shown)),
            metrics: Arc::new(move || metrics.metrics()),
        }
    };
    let _served = super::status_page::serve_at(
        args.status_addr.as_deref(),
        args.metrics_addr.as_deref(),
        &served,
        &format!("worker {name}"),
    )?;
    let mut seen_any = false;
    let mut idle = Duration::from_millis(10);
    let mut prepared: std::collections::HashMap<String, Arc<Prepared>> = std::collections::HashMap::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::SUCCESS);
        }
        // The runs to work on: the one named, else every run with a queue, in turn.
        let runs = match &args.run {
            Some(run) => vec![run.clone()],
            None => queue_of(store.as_ref())?.queued_runs()?,
        };
        if runs.is_empty() && seen_any {
            eprintln!("worker {name}: no run left to work on");
            return Ok(ExitCode::SUCCESS);
        }
        let mut worked = false;
        for run in runs {
            let spec: Option<Spec> = store.document(&run, SPEC)?.and_then(|body| serde_json::from_str(&body).ok());
            // None yet: started before the coordinator, waiting for the plan.
            let Some(spec) = spec else { continue };
            seen_any = true;
            if spec.state == "finished" {
                prepared.remove(&run);
                if args.run.is_some() {
                    eprintln!("worker {name}: run {run} is finished");
                    return Ok(ExitCode::SUCCESS);
                }
                continue;
            }
            if spec.state == "failed" {
                if args.run.is_some() {
                    eprintln!("worker {name}: run {run} failed (`barge status` shows why)");
                    return Ok(ExitCode::from(super::EXIT_RUNTIME));
                }
                continue;
            }
            let ready = match prepared.get(&run) {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(prepare(store.as_ref(), &run, &spec)?);
                    eprintln!("worker {name}: working on run {run} ({} table(s))", p.plan.tables.len());
                    prepared.insert(run.clone(), p.clone());
                    p
                }
            };
            // One question to the store before the slots ask theirs (three each): idle workers
            // (during the coordinator's finish, or waiting on a long range) cost it little.
            if !queue_of(store.as_ref())?.has_work(&run)? {
                continue;
            }
            worked |= std::thread::scope(|scope| -> anyhow::Result<bool> {
                let handles: Vec<_> = (0..args.workers)
                    .map(|slot| {
                        let (store, ready, stop, counts) = (store.clone(), ready.clone(), stop.clone(), counts.clone());
                        let worker = if args.workers > 1 { format!("{name}/{slot}") } else { name.clone() };
                        let args = &args;
                        scope.spawn(move || claim_loop(&store, &ready, &worker, args, &stop, &counts))
                    })
                    .collect();
                let mut any = false;
                for handle in handles {
                    any |= handle.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
                }
                Ok(any)
            })?;
        }
        // Idle: look again soon (work can appear at any moment: a plan, digest tasks), backing off
        // to 50 ms (each look is an index lookup or two in the store).
        idle = if worked { Duration::from_millis(10) } else { (idle * 2).min(Duration::from_millis(50)) };
        if !worked {
            std::thread::sleep(idle);
        }
    }
}

/// Claims and copies ranges of the prepared run until none is left to claim now; whether it
/// copied any.
fn claim_loop(
    store: &Arc<dyn LedgerStore>,
    ready: &Prepared,
    worker: &str,
    args: &WorkerArgs,
    stop: &AtomicBool,
    counts: &WorkerCounts,
) -> anyhow::Result<bool> {
    let queue = queue_of(store.as_ref())?;
    let mut any = false;
    while !stop.load(Ordering::SeqCst) {
        let Some(claim) = queue.claim(&ready.run, worker, args.lease)? else {
            // No range left to copy: the verification's digest tasks, if the coordinator queued
            // some; else the chunks another worker has not started of a long range.
            if let Some(task) = queue.claim_digest(&ready.run, worker, args.lease)? {
                digest_one(queue, ready, worker, args, task)?;
                any = true;
                continue;
            }
            if split_one(queue, ready, worker)? {
                any = true;
                continue;
            }
            return Ok(any);
        };
        any = true;
        let of = PieceOf { table: &claim.table, range: claim.range, piece: claim.piece };
        let Some(table) = ready.plan.tables.iter().find(|t| t.source.name == claim.table) else {
            queue.release(&ready.run, worker, of, "this worker did not plan the table", 3)?;
            continue;
        };
        if !claim.earlier_sessions.is_empty() {
            // The earlier holder's sessions end before the range is cleared: a holder that was
            // only stopped cannot commit when it wakes.
            ready.target.end_sessions(&claim.earlier_sessions)?;
            tracing::warn!(
                "worker {worker}: took over {} range {} from {} (its lease ran out), ending its session(s) {}",
                claim.table,
                claim.range,
                claim.earlier_owner.as_deref().unwrap_or("an earlier attempt"),
                claim.earlier_sessions.join(", ")
            );
        }
        let rows = Arc::new(AtomicU64::new(0));
        let lease = Arc::new(Lease {
            queue_store: store.clone(),
            run: ready.run.clone(),
            worker: worker.to_string(),
            table: claim.table.clone(),
            range: claim.range,
            piece: claim.piece,
            seconds: args.lease,
            rows: rows.clone(),
            lost: AtomicBool::new(false),
        });
        let options = barge_exec::ExecOptions { fence: Some(lease.clone()), ..ready.options.clone() };
        counts.begin(&claim.table, claim.range, &rows);
        let started = Instant::now();
        // Heartbeats: the lease renewed with the rows done.
        let copied = with_heartbeats(args.lease, &|| lease.renew(), || {
            copy_in_chunks(queue, ready, table, &claim, worker, args.chunk_rows, &options, &rows)
        });
        let merge = |parts: &[RangeDone]| barge_exec::merge_pieces(parts);
        let (outcome, error, written) = match copied {
            Ok(Some(piece_done)) => {
                if queue.complete(&ready.run, worker, of, &piece_done, &merge)? {
                    ("done", None, piece_done.rows_written)
                } else {
                    // Committed after losing it: the new holder clears and loads it again.
                    ("lost", Some("the lease ran out after the commit: the new holder reloads it".into()), 0)
                }
            }
            Ok(None) => ("lost", Some("the lease ran out: another worker holds the range".into()), 0),
            Err(error) if lease.lost.load(Ordering::SeqCst) => ("lost", Some(error.to_string()), 0),
            Err(error) => {
                queue.release(&ready.run, worker, of, &error.to_string(), 3)?;
                ("failed", Some(error.to_string()), 0)
            }
        };
        let summary = format!(
            "{outcome}: {written} rows in {:.2} s{}",
            started.elapsed().as_secs_f64(),
            error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
        counts.end(&claim.table, claim.range, outcome, written, summary);
        let report = Copied {
            run: &ready.run,
            worker,
            table: &claim.table,
            range: claim.range,
            piece: claim.piece,
            attempt: claim.attempt,
            rows: written,
            seconds: started.elapsed().as_secs_f64(),
            outcome,
            took_over_from: claim.earlier_owner.as_deref().filter(|_| claim.attempt > 1),
            error,
        };
        let what = range_name(report.range, report.piece);
        let line = (worker, report.table, what.as_str(), outcome, report.rows, report.seconds, &report.error);
        say(args.json, &report, line)?;
    }
    Ok(any)
}

/// Runs `work` while a thread renews its lease every third of `lease` seconds (until `renew`
/// says it is lost).
fn with_heartbeats<T>(lease: f64, renew: &(dyn Fn() -> bool + Sync), work: impl FnOnce() -> T) -> T {
    let done = Mutex::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let every = Duration::from_secs_f64(lease / 3.0);
            let mut last = Instant::now();
            while !*done.lock().expect("done lock") {
                if last.elapsed() >= every {
                    if !renew() {
                        return;
                    }
                    last = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let value = work();
        *done.lock().expect("done lock") = true;
        value
    })
}

/// Copies a claimed piece: in chunks of about `chunk_rows` rows (each committed on its own), the
/// first chunk after clearing the piece when an earlier holder may have left rows of it; before
/// each chunk the store says whether the piece was split (then it ends there). The piece's
/// counts and digests; `None` when the lease was lost between chunks.
#[allow(clippy::too_many_arguments)]
fn copy_in_chunks(
    queue: &dyn WorkQueue,
    ready: &Prepared,
    table: &barge_plan::TablePlan,
    claim: &Claim,
    worker: &str,
    chunk_rows: u64,
    options: &barge_exec::ExecOptions,
    rows: &Arc<AtomicU64>,
) -> Result<Option<RangeDone>, Error> {
    let of = PieceOf { table: &claim.table, range: claim.range, piece: claim.piece };
    let piece = barge_core::KeyRange { id: claim.range, lo: key_of(&claim.lo)?, hi: key_of(&claim.hi)? };
    let parts = claim.estimated_rows.div_ceil(chunk_rows.max(1)).clamp(1, MOST_CHUNKS) as usize;
    let chunks = if parts > 1 {
        barge_plan::partition::plan_ranges(ready.source.as_ref(), &table.source, &piece, parts)?
    } else {
        vec![piece.clone()]
    };
    let bounds: Vec<&Option<Vec<barge_core::Scalar>>> = chunks.iter().skip(1).map(|c| &c.lo).collect();
    let published = serde_json::to_string(&bounds).map_err(|e| Error::engine("publishing chunks", e))?;
    let mut total: Option<RangeDone> = None;
    for (i, chunk) in chunks.iter().enumerate() {
        match queue.advance(&ready.run, worker, of, &published, i)? {
            Advance::Lost => return Ok(None),
            Advance::StopAt(at) => {
                tracing::info!(
                    "worker {worker}: {} range {} piece {}: chunks from {at} of {} were split off to another worker",
                    claim.table,
                    claim.range,
                    claim.piece,
                    chunks.len()
                );
                break;
            }
            Advance::Go => {}
        }
        let chunk = barge_core::KeyRange { id: claim.range, ..chunk.clone() };
        let clear = (i == 0 && claim.attempt > 1).then_some(&piece);
        let done = barge_exec::copy_piece(
            ready.source.as_ref(),
            ready.target.as_ref(),
            table,
            &chunk,
            clear,
            options,
            &Rows(rows.clone()),
        )?;
        total = Some(match total {
            None => done,
            Some(before) => barge_exec::merge_pieces(&[before, done])?,
        });
    }
    total
        .map(Some)
        .ok_or_else(|| Error::engine(format!("range {} of `{}`", claim.range, claim.table), "no chunk copied"))
}

/// With nothing left to claim: splits the chunks another worker has not started off the largest
/// range in progress (the second half of them), as a new piece to claim. Whether it split one.
fn split_one(queue: &dyn WorkQueue, ready: &Prepared, worker: &str) -> Result<bool, Error> {
    for candidate in queue.splittable(&ready.run)? {
        if candidate.owner.as_deref() == Some(worker) {
            continue;
        }
        let bounds: Vec<serde_json::Value> =
            serde_json::from_str(&candidate.chunks).map_err(|e| Error::engine("reading published chunks", e))?;
        let chunks = bounds.len() + 1;
        // Chunks after the one in progress; at least two, so that both sides keep one (the store
        // lists no other; checked again here because the index below relies on it).
        let unstarted = chunks.saturating_sub(candidate.next_chunk + 1);
        if unstarted < 2 {
            continue;
        }
        let at = candidate.next_chunk + 1 + unstarted / 2;
        let key = bounds[at - 1].to_string();
        let rows = candidate.estimated_rows * (chunks - at) as u64 / chunks as u64;
        let of = PieceOf { table: &candidate.table, range: candidate.range, piece: candidate.piece };
        if queue.split(&ready.run, of, candidate.next_chunk, at, &key, rows)? {
            eprintln!(
                "worker {worker}: split {} range {} piece {} (held by {}) before chunk {at} of {chunks}: the rest \
                 is a new piece",
                candidate.table,
                candidate.range,
                candidate.piece,
                candidate.owner.as_deref().unwrap_or("?")
            );
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a worker did with one range or digest task: `report` on stdout with `--json`, else a line
/// on stderr from its parts (worker, table, what, outcome, rows, seconds, error), e.g.
/// `worker w1: orders range 3 done: 62500 rows in 0.20 s`.
fn say(
    json: bool,
    report: &impl Serialize,
    line: (&str, &str, &str, &str, u64, f64, &Option<String>),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        let (worker, table, what, outcome, rows, seconds, error) = line;
        let error = error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
        eprintln!("worker {worker}: {table} {what} {outcome}: {rows} rows in {seconds:.2} s{error}");
    }
    Ok(())
}

/// What one verification digest task did, as `--json` prints it.
#[derive(Serialize)]
struct Digested<'a> {
    run: &'a str,
    worker: &'a str,
    table: &'a str,
    /// The task's number among the table's.
    digest: usize,
    attempt: u32,
    rows: u64,
    seconds: f64,
    /// `done`, `lost` (the lease ran out: another reads it again) or `failed`.
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Takes one verification digest task: reads its span of the target, records its digests.
fn digest_one(
    queue: &dyn WorkQueue,
    ready: &Prepared,
    worker: &str,
    args: &WorkerArgs,
    task: DigestClaim,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let renew = || queue.renew_digest(&ready.run, worker, &task.table, task.item, args.lease).unwrap_or(false);
    let digested = with_heartbeats(args.lease, &renew, || -> Result<barge_exec::SharedDigests, Error> {
        let parsed: barge_exec::DigestTask = serde_json::from_str(&task.payload)
            .map_err(|e| Error::engine("reading a digest task from the store", e))?;
        let table = ready
            .plan
            .tables
            .iter()
            .find(|t| t.source.name == parsed.table)
            .ok_or_else(|| Error::Config(format!("this worker did not plan table `{}`", parsed.table)))?;
        let known = ready.described.lock().expect("described lock").get(&parsed.table).cloned();
        let described = match known {
            Some(described) => described,
            None => {
                let described = barge_exec::describe_target(ready.reader.as_ref(), table)?;
                ready.described.lock().expect("described lock").insert(parsed.table.clone(), described.clone());
                described
            }
        };
        barge_exec::digest_task(ready.reader.as_ref(), &described, &parsed, &ready.options)
    });
    let (outcome, error, rows) = match digested {
        Ok(digests) => {
            let rows = digests.iter().flatten().map(|d| d.rows).sum();
            let result = serde_json::to_string(&digests)?;
            if queue.complete_digest(&ready.run, worker, &task.table, task.item, &result)? {
                ("done", None, rows)
            } else {
                ("lost", Some("the lease ran out: another worker reads it again".to_string()), 0)
            }
        }
        Err(error) => {
            queue.release_digest(&ready.run, worker, &task.table, task.item, &error.to_string(), 3)?;
            ("failed", Some(error.to_string()), 0)
        }
    };
    let report = Digested {
        run: &ready.run,
        worker,
        table: &task.table,
        digest: task.item,
        attempt: task.attempt,
        rows,
        seconds: started.elapsed().as_secs_f64(),
        outcome,
        error,
    };
    let what = format!("digests {}", report.digest);
    let line = (worker, report.table, what.as_str(), outcome, report.rows, report.seconds, &report.error);
    say(args.json, &report, line)?;
    Ok(())
}

/// The coordinator's side of the verification digests: each table's tasks queued in the store,
/// taken by the workers; waits for them all.
pub struct DigestsByWorkers {
    store: Arc<dyn LedgerStore>,
    run: String,
}

impl std::fmt::Debug for DigestsByWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "digests of run {} by its workers", self.run)
    }
}

/// Digests of the run's verification taken by its workers.
pub fn digests_by_workers(store: &Arc<dyn LedgerStore>, run: &str) -> Arc<dyn barge_exec::DigestShare> {
    Arc::new(DigestsByWorkers { store: store.clone(), run: run.to_string() })
}

impl barge_exec::DigestShare for DigestsByWorkers {
    fn digests(
        &self,
        table: &str,
        tasks: Vec<barge_exec::DigestTask>,
    ) -> barge_core::Result<Vec<barge_exec::SharedDigests>> {
        let queue = queue_of(self.store.as_ref())?;
        let payloads = tasks
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::engine("queueing digest tasks", e))?;
        queue.enqueue_digests(&self.run, table, &payloads)?;
        tracing::info!("table `{table}`: {} verification digest task(s) queued for the workers", payloads.len());
        let mut said = Instant::now();
        loop {
            let items = queue.digest_items(&self.run, table, false)?;
            if said.elapsed() >= Duration::from_secs(5) {
                let done = items.iter().filter(|i| i.state == "done").count();
                let held = items.iter().filter(|i| i.state == "claimed").count();
                eprintln!(
                    "run {}: verifying `{table}`: {done} of {} digest task(s) done, {held} held by workers",
                    self.run,
                    payloads.len()
                );
                said = Instant::now();
            }
            if let Some(failed) = items.iter().find(|i| i.state == "failed") {
                return Err(Error::engine(
                    format!("verifying `{table}`: digest task {}", failed.item),
                    format!("failed {} time(s): {}", failed.attempt, failed.error.as_deref().unwrap_or("")),
                ));
            }
            if items.len() == payloads.len() && items.iter().all(|i| i.state == "done") {
                // Done: the results, read once.
                return queue
                    .digest_items(&self.run, table, true)?
                    .iter()
                    .map(|i| {
                        serde_json::from_str(i.result.as_deref().unwrap_or(""))
                            .map_err(|e| Error::engine("reading digests from the store", e))
                    })
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

#[derive(Args)]
pub struct StatusArgs {
    /// The PostgreSQL state store of the distributed runs.
    #[arg(long)]
    state: String,
    /// The run to show (default: every run with a queue).
    #[arg(long)]
    run: Option<String>,
    /// A range without progress for this many seconds is reported as stalled.
    #[arg(long, default_value_t = 60.0)]
    stall_after: f64,
    /// Show it again every two seconds until the runs are done.
    #[arg(long)]
    watch: bool,
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    pub fn json(&self) -> bool {
        self.json
    }
}

/// `barge status`: ranges by state, the workers holding them, stalled ranges.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    check_ledger(&args.state)?;
    let store = open_ledger(&args.state)?;
    let queue = queue_of(store.as_ref())?;
    loop {
        let runs = match &args.run {
            Some(run) => vec![run.clone()],
            None => queue.queued_runs()?,
        };
        let mut shown = Vec::new();
        for run in &runs {
            let ranges = queue.queue(run)?;
            let spec: Option<Spec> = store.document(run, SPEC)?.and_then(|b| serde_json::from_str(&b).ok());
            let stalled: Vec<&QueuedRange> =
                ranges.iter().filter(|r| r.state == "claimed" && r.idle_seconds >= args.stall_after).collect();
            // What the stalled ranges' target sessions wait on, when the target can be reached
            // from here (its URL from this environment, as a worker's).
            let target = match (&spec, stalled.is_empty()) {
                (Some(spec), false) => {
                    barge_pipeline::Pipeline::parse(&spec.pipeline, std::path::Path::new(&spec.path), &|name| {
                        std::env::var(name).ok()
                    })
                    .ok()
                    .and_then(|p| engines::registry().for_url(&p.target).ok()?.open_target(&p.target).ok())
                }
                _ => None,
            };
            let stall_lines: Vec<String> = stalled
                .iter()
                .map(|r| {
                    let waits = target.as_ref().and_then(|t| t.session_waits(&r.sessions).ok()).unwrap_or_default();
                    stall_report(r, &waits)
                })
                .collect();
            shown.push(serde_json::json!({
                "run": run,
                "state": spec.as_ref().map_or("unknown", |s| s.state.as_str()),
                "queue": Summary::of(&ranges),
                "stalled": stall_lines,
                "ranges": ranges,
            }));
            if !args.json {
                let summary = Summary::of(&ranges);
                println!("{}", summary.line(run));
                for r in ranges.iter().filter(|r| r.state == "claimed") {
                    println!(
                        "  {} {}: {} (attempt {}), {} rows, lease {:.0} s left",
                        r.table,
                        range_name(r.range, r.piece),
                        r.owner.as_deref().unwrap_or("?"),
                        r.attempt,
                        r.rows_done,
                        r.lease_left_seconds.max(0.0)
                    );
                }
                for line in &stall_lines {
                    println!("  stalled: {line}");
                }
                for r in ranges.iter().filter(|r| r.state == "failed") {
                    let name = range_name(r.range, r.piece);
                    println!("  failed: {} {name}: {}", r.table, r.error.as_deref().unwrap_or(""));
                }
            }
        }
        if args.json {
            println!("{}", serde_json::json!({"runs": shown}));
        }
        let all_done = shown.iter().all(|r| r["queue"]["done"] == r["queue"]["total"]);
        if !args.watch || all_done {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
