//! # barge-exec
//!
//! Executes a [`barge_plan::Plan`]. The modules follow the data path:
//!
//! ```text
//!  copy::prepare ─▶ copy::table ─▶ copy::ranges (passes, retry) ─▶ stages::pass
//!    ledger layout,   one table      ranges from the ledger,          │
//!    DDL              (accounting)   the rest in passes               ▼
//!  stages::read (≤ workers threads) ──bounded──▶ stages::cpu (rayon: transform, hash, encode)
//!                                                    │ routed by range id, bounded per writer
//!                                                    ▼
//!                               stages::write (≤ workers, ≤ target.max_writers()): write, group
//!                               commit, then rejects ─▶ reject file, ranges ─▶ ledger
//!  copy::finish: indexes (SchemaObjects), ledger, watermark ─▶ verify: target digests
//!  (verify::digest, or verify::overlap while the key builds) vs the source digests taken while
//!  copying (verify::table), mismatches narrowed to keys; deletes (KeyDeletes)
//! ```
//!
//! Memory is bounded by the channel capacities below times the batch size, whatever the table
//! size: a slow writer blocks the CPU stage, which blocks the readers (backpressure, not buffering).
//! Database I/O runs on plain threads; hashing and encoding run on rayon; nothing blocks an async
//! runtime (engines with async drivers block on their own runtime inside the engine calls, from
//! these plain threads). Every stage shares one failure latch ([`failure`]); a run's shared
//! settings travel in one context ([`context`]).

mod context;
mod copy;
mod digests;
mod failure;
mod job;
mod ledger;
mod options;
mod progress;
mod rejects;
mod report;
mod retry;
mod stages;
mod sync;
mod verify;

pub use barge_plan::SchemaReport;
pub use copy::run::{copy, copy_piece, merge_pieces};
pub use ledger::Ledger;
pub use options::{ExecOptions, Fence};
pub use progress::{NoProgress, Phase, Progress};
pub use report::{CopyReport, StageSeconds, TableReport, TableVerdict, VerifyReport, peak_rss_mb};
pub use retry::DEFAULT_RETRIES;
pub use sync::{ChangedKeys, SyncOptions, SyncStatus, SyncTable, sync};
pub use verify::run::{LiveStream, Recheck, verify};
pub use verify::shared::{DigestShare, DigestTask, SharedDigests, describe_target, digest_task};

/// Batches buffered between the readers and the CPU stage, per reader.
pub const READ_QUEUE_PER_READER: usize = 2;
/// Batches buffered between the CPU stage and each writer.
pub const WRITE_QUEUE_PER_WRITER: usize = 2;
/// Bytes in flight between the readers and the writers of a copy, in batches of `--batch-bytes`
/// (whatever the channels above would hold: they bound batches, this bounds bytes).
pub const BATCHES_IN_FLIGHT: usize = 3;
