//! What every stage of a run shares: the CPU pool, the parallelism, the batch size and where
//! progress goes. Passed by value (it is a handful of references) instead of long argument lists.

use barge_core::{Error, Result};

use crate::progress::Progress;

#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub pool: &'a rayon::ThreadPool,
    /// Readers (and writers) per table.
    pub workers: usize,
    /// When readers close a batch (rows or bytes).
    pub batch: barge_core::BatchSize,
    pub progress: &'a dyn Progress,
}

impl<'a> Ctx<'a> {
    /// The same context reporting to `progress`.
    pub fn with_progress(self, progress: &'a dyn Progress) -> Ctx<'a> {
        Ctx { progress, ..self }
    }
}

/// The CPU pool of a run: transforms, hashing and encoding, `workers` threads.
pub(crate) fn cpu_pool(workers: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .thread_name(|i| format!("barge-cpu-{i}"))
        .build()
        .map_err(|e| Error::engine("starting the CPU pool", e))
}
