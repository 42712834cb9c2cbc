//! The ledger of a run (`--state` on the command line), kept outside the process so that a run
//! that dies can be resumed: each table's key ranges as planned, which ranges are committed in the
//! target (with their row counts and digests), and the high-water marks of incremental tables.
//! Stores implement [`LedgerStore`]; an engine offers them through
//! [`crate::engine::LedgerStores`] (SQLite: a file, the default; PostgreSQL: a schema, to share a
//! run between machines).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{KeyRange, Scalar};

/// A range committed in the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeDone {
    pub range: usize,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_rejected: u64,
    /// The range's source digests, as the runtime serialises them (opaque to stores).
    pub digests: String,
}

/// What the ledger holds for one table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableLedger {
    /// The ranges as planned when the run started (a resumed run keeps them).
    pub ranges: Vec<KeyRange>,
    /// How the target table was prepared when the run started (`create`, `truncate`, `append`).
    pub action: String,
    /// Committed ranges, by range id.
    pub done: BTreeMap<usize, RangeDone>,
    /// Every range committed and the table finished (indexes built).
    pub finished: bool,
}

/// What a run left behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunRecord {
    /// By source table name.
    pub tables: BTreeMap<String, TableLedger>,
}

/// The process that owns a run while it runs, as another process that is refused hears of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// When it took the run (UTC, `YYYY-MM-DD HH:MM:SS+00:00`).
    pub started: String,
}

impl Holder {
    /// This process, now.
    pub fn current() -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "an unknown host".into());
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0) * 1_000_000);
        let mut started = String::new();
        crate::text::format_datetime(micros, true, &mut started);
        Holder { pid: std::process::id(), host, started }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}, started {}", self.pid, self.host, self.started)
    }
}

/// The check every store makes before resuming: a run must exist under `name` and carry
/// `fingerprint`. `stored` is the fingerprint the store holds, `store` names it in messages.
pub fn check_resumable(store: &str, name: &str, stored: Option<&str>, fingerprint: &str) -> Result<()> {
    match stored {
        None => Err(crate::Error::Config(format!(
            "nothing to resume: {store} holds no run named `{name}` (run it once without --resume)"
        ))),
        Some(stored) if stored != fingerprint => Err(crate::Error::Config(format!(
            "cannot resume: the run `{name}` in {store} was started by another pipeline or command, or the pipeline \
             file (its source, target or tables) changed since; run without --resume to start over"
        ))),
        Some(_) => Ok(()),
    }
}

/// Where runs keep their ledgers. Every method is one transaction in the store, so a crash leaves
/// either the state before the call or after it.
pub trait LedgerStore: Send + Sync {
    /// The store, for messages (passwords redacted).
    fn describe(&self) -> String;

    /// Takes run `name` for this process for as long as the store stays open (the lease is let go
    /// when the store is dropped or the process dies, so a dead holder's run is taken over). A run
    /// another live process holds is [`crate::Error::LedgerBusy`], naming that holder. Called
    /// before [`Self::start`] and [`Self::resume`].
    fn acquire(&self, name: &str, holder: &Holder) -> Result<()>;

    /// Starts run `name` afresh: forgets what an earlier run of that name left (but not its
    /// watermarks) and records `fingerprint`, the identity of what is being run.
    fn start(&self, name: &str, fingerprint: &str) -> Result<()>;

    /// What run `name` left, to resume it. A run that was never started, or one whose fingerprint
    /// differs from `fingerprint` (another pipeline, or the file changed), is a configuration
    /// error saying so.
    fn resume(&self, name: &str, fingerprint: &str) -> Result<RunRecord>;

    /// The fingerprint run `name` was started with and whether it finished; `None` when no run of
    /// that name was ever started.
    fn run_state(&self, name: &str) -> Result<Option<(String, bool)>>;

    /// What run `name` left when it started and did not finish: the run a `--resume` would
    /// continue (whose fingerprint it must match).
    fn unfinished(&self, name: &str) -> Result<Option<RunRecord>> {
        match self.run_state(name)? {
            Some((fingerprint, false)) => self.resume(name, &fingerprint).map(Some),
            _ => Ok(None),
        }
    }

    /// Records a table's planned ranges and its target action.
    fn plan_table(&self, name: &str, table: &str, action: &str, ranges: &[KeyRange]) -> Result<()>;

    /// Marks ranges done; called only after their rows are committed in the target.
    fn ranges_done(&self, name: &str, table: &str, done: &[RangeDone]) -> Result<()>;

    /// Marks a table finished.
    fn table_finished(&self, name: &str, table: &str) -> Result<()>;

    /// Marks the run complete (a later `--resume` has nothing to do).
    fn finish(&self, name: &str) -> Result<()>;

    /// The high-water mark of an incremental table, if one was committed.
    fn watermark(&self, name: &str, table: &str) -> Result<Option<Scalar>>;

    /// Records a high-water mark; called only after the rows up to it are committed.
    fn set_watermark(&self, name: &str, table: &str, value: &Scalar) -> Result<()>;

    /// A document kept under run `name` and `key` (JSON text), e.g. a migration's phase and
    /// status, which processes other than the run's owner read and write; `None` when absent.
    fn document(&self, name: &str, key: &str) -> Result<Option<String>>;

    /// Replaces (or creates) the document under run `name` and `key`.
    fn set_document(&self, name: &str, key: &str, body: &str) -> Result<()>;

    /// The queue of a run shared by many processes (`--distributed` and `barge worker`).
    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        None
    }
}

/// One range of a distributed run, to copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    pub table: String,
    pub range: usize,
    pub estimated_rows: u64,
    /// The range's bounds, as the runtime serialises them (opaque to stores).
    pub lo: String,
    pub hi: String,
}

/// A range a worker claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub table: String,
    pub range: usize,
    /// 0 for the range as planned; more for a remainder split off it (see [`WorkQueue::split`]).
    pub piece: usize,
    /// The piece's bounds (opaque: as enqueued, or the split's key).
    pub lo: String,
    pub hi: String,
    pub estimated_rows: u64,
    /// 1 for the first claim of the range; more when an earlier holder lost it.
    pub attempt: u32,
    /// The target sessions an earlier holder of the range loaded it through: ended before the
    /// range is cleared and loaded again, so that a holder that lost its lease cannot commit.
    pub earlier_sessions: Vec<String>,
    /// Who held it before (a worker that died or stopped).
    pub earlier_owner: Option<String>,
}

/// One claimed piece of a range, as the queue names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PieceOf<'a> {
    pub table: &'a str,
    pub range: usize,
    pub piece: usize,
}

/// What a holder is told when it starts a chunk of its piece (see [`WorkQueue::advance`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Advance {
    /// Go on with the chunk.
    Go,
    /// The piece was split before chunk `n`: chunks from `n` on are another piece's.
    StopAt(usize),
    /// The lease ran out: another worker holds the piece.
    Lost,
}

/// A claimed piece whose holder published its chunks, not split yet: what an idle worker may
/// split (see [`WorkQueue::split`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Splittable {
    pub table: String,
    pub range: usize,
    pub piece: usize,
    /// The interior chunk boundaries the holder published (opaque JSON list of keys): chunk `i`
    /// starts at boundary `i - 1`.
    pub chunks: String,
    /// The chunk the holder is copying; later ones are not started.
    pub next_chunk: usize,
    pub estimated_rows: u64,
    pub owner: Option<String>,
}

/// A verification digest task a worker claimed (see [`WorkQueue::claim_digest`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DigestClaim {
    pub table: String,
    pub item: usize,
    /// The task, as the coordinator's runtime serialised it (opaque to stores).
    pub payload: String,
    pub attempt: u32,
}

/// A verification digest task of a run, as the coordinator reads it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigestItem {
    pub item: usize,
    /// `pending`, `claimed`, `done` or `failed`.
    pub state: String,
    pub owner: Option<String>,
    pub attempt: u32,
    /// The digests, once done (opaque to stores).
    pub result: Option<String>,
    pub error: Option<String>,
}

/// A range of the queue as `barge status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedRange {
    pub table: String,
    pub range: usize,
    /// 0: the range as planned; more: a remainder split off it.
    #[serde(default)]
    pub piece: usize,
    pub estimated_rows: u64,
    /// `pending`, `claimed`, `done` or `failed`.
    pub state: String,
    pub owner: Option<String>,
    pub attempt: u32,
    /// Rows its holder reported at its last heartbeat.
    pub rows_done: u64,
    /// Seconds since its holder last reported progress, and until its lease runs out.
    pub idle_seconds: f64,
    pub lease_left_seconds: f64,
    pub error: Option<String>,
    /// The target sessions its holder loads it through.
    #[serde(default)]
    pub sessions: Vec<String>,
}

/// Capability of a ledger store: a queue of ranges that any number of processes, on any number of
/// machines, claim with leases (`FOR UPDATE SKIP LOCKED` in PostgreSQL) and complete. A lease runs
/// out unless renewed; a range whose lease ran out is claimed again by another process, which
/// first ends the target sessions the earlier holder loaded it through.
pub trait WorkQueue: Send + Sync {
    /// Puts `items` in run `run`'s queue (replacing what it held).
    fn enqueue(&self, run: &str, items: &[WorkItem]) -> Result<()>;

    /// Claims the largest pending range of `run` (or one whose lease ran out) for `worker`, for
    /// `lease_seconds`; `None` when there is none to claim now.
    fn claim(&self, run: &str, worker: &str, lease_seconds: f64) -> Result<Option<Claim>>;

    /// Records a target session `worker` loads its claimed piece through; `false` when the piece
    /// is no longer `worker`'s.
    fn attach(&self, run: &str, worker: &str, piece: PieceOf<'_>, session: &str) -> Result<bool>;

    /// Renews `worker`'s lease on a piece, with the rows it has done; `false` when the piece is no
    /// longer its (the lease ran out and another took it).
    fn renew(&self, run: &str, worker: &str, piece: PieceOf<'_>, lease_seconds: f64, rows: u64) -> Result<bool>;

    /// The holder starts chunk `chunk` of its piece (`chunks`: the interior boundaries, published
    /// with the first chunk, opaque): whether to go on, or where an idle worker split the piece.
    fn advance(&self, run: &str, worker: &str, piece: PieceOf<'_>, chunks: &str, chunk: usize) -> Result<Advance>;

    /// Whether a worker of `run` has anything to do now: a piece to claim (pending, or its lease
    /// ran out), a digest task to claim, or a piece with at least two chunks its holder has not
    /// started, to split.
    fn has_work(&self, run: &str) -> Result<bool>;

    /// Claimed pieces of `run` not split yet whose holders have at least two chunks to start.
    fn splittable(&self, run: &str) -> Result<Vec<Splittable>>;

    /// Splits a claimed piece at chunk `at` (`key` its first key, opaque) while its holder is still
    /// on chunk `next_chunk`: the piece ends at `key`, and a new pending piece of the same range
    /// covers `key` to its old end (`estimated_rows` of it). `false` when the holder moved on, or
    /// it was split already.
    fn split(
        &self,
        run: &str,
        piece: PieceOf<'_>,
        next_chunk: usize,
        at: usize,
        key: &str,
        estimated_rows: u64,
    ) -> Result<bool>;

    /// Marks the piece done with what it copied, if it is still `worker`'s (`false` otherwise: its
    /// rows are then cleared and loaded again by the new holder); once every piece of its range is
    /// done, records the range in the run's ledger as `merge` adds the pieces up (the runtime
    /// knows its digests; one piece is recorded as it is), in the same transaction.
    fn complete(
        &self,
        run: &str,
        worker: &str,
        piece: PieceOf<'_>,
        done: &RangeDone,
        merge: &dyn Fn(&[RangeDone]) -> Result<RangeDone>,
    ) -> Result<bool>;

    /// Gives the piece back after a failure (`error`): pending again, or `failed` after
    /// `max_attempts` attempts.
    fn release(&self, run: &str, worker: &str, piece: PieceOf<'_>, error: &str, max_attempts: u32) -> Result<()>;

    /// Every range of `run`'s queue.
    fn queue(&self, run: &str) -> Result<Vec<QueuedRange>>;

    /// The runs that have a queue.
    fn queued_runs(&self) -> Result<Vec<String>>;

    /// Removes `run`'s queue and its digest tasks (the run finished).
    fn drop_queue(&self, run: &str) -> Result<()>;

    /// Puts the verification digest tasks of `run`'s table `table` in the queue (replacing that
    /// table's earlier ones): items `0..payloads.len()`, claimed like ranges.
    fn enqueue_digests(&self, run: &str, table: &str, payloads: &[String]) -> Result<()>;

    /// Claims a pending digest task of `run` (or one whose lease ran out) for `worker`.
    fn claim_digest(&self, run: &str, worker: &str, lease_seconds: f64) -> Result<Option<DigestClaim>>;

    /// Renews `worker`'s lease on a digest task; `false` when it is no longer its.
    fn renew_digest(&self, run: &str, worker: &str, table: &str, item: usize, lease_seconds: f64) -> Result<bool>;

    /// Records a digest task's result if `worker` still holds it; `false` otherwise (another
    /// worker reads it again: digests only read).
    fn complete_digest(&self, run: &str, worker: &str, table: &str, item: usize, result: &str) -> Result<bool>;

    /// Gives a digest task back after a failure: pending again, or `failed` after `max_attempts`.
    fn release_digest(
        &self,
        run: &str,
        worker: &str,
        table: &str,
        item: usize,
        error: &str,
        max_attempts: u32,
    ) -> Result<()>;

    /// The digest tasks of `run`'s table `table`, by item; their results only with `results`
    /// (they are large: a coordinator waiting on the tasks asks without them).
    fn digest_items(&self, run: &str, table: &str, results: bool) -> Result<Vec<DigestItem>>;
}
