//! # barge-exec
//!
//! Executes a [`barge_plan::Plan`]. Per table:
//!
//! ```text
//!  ranges ─▶ reader threads (≤ workers) ──bounded──▶ rayon pool: hash (source digest) + encode
//!                                                        │ routed by range id, bounded per writer
//!                                                        ▼
//!                                   writer threads (≤ workers, ≤ target.max_writers())
//!                                   commit when every range they hold is complete
//! ```
//!
//! Memory is bounded by the channel capacities below times the batch size, whatever the table
//! size: a slow writer blocks the CPU stage, which blocks the readers (backpressure, not buffering).
//! Database I/O runs on plain threads; hashing and encoding run on rayon; nothing blocks an async
//! runtime (engines with async drivers block on their own runtime inside the engine calls, from
//! these plain threads).
//!
//! Verification reuses the plan's key ranges: target digests are computed by the same reader →
//! rayon pipeline and compared with the source digests taken while copying, so only the target is
//! read again.

mod pipeline;
mod progress;
mod report;
mod run;
mod transformed;

pub use progress::{NoProgress, Phase, Progress};
pub use report::{CopyReport, StageSeconds, TableReport, TableVerdict, VerifyReport, peak_rss_mb};
pub use run::{DEFAULT_RETRIES, ExecOptions, RunState, copy, verify, verify_table};

/// Batches buffered between the readers and the CPU stage, per reader.
pub const READ_QUEUE_PER_READER: usize = 2;
/// Batches buffered between the CPU stage and each writer.
pub const WRITE_QUEUE_PER_WRITER: usize = 2;
