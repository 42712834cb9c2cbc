//! The failure latch every stage of a table copy shares: the first real error wins, and every
//! stage polls it to stop early. Also the thread helpers the stages use.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Scope;
use std::time::Duration;

use barge_core::{Error, Result};

/// The first real error of any stage; later stages see it and stop. Errors that only say a
/// channel closed because another stage failed are not recorded over it.
#[derive(Default)]
pub(crate) struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Failure {
    pub(crate) fn record(&self, error: Error) {
        let mut first = self.first.lock().expect("failure lock");
        if first.is_none() || matches!(*first, Some(Error::Cancelled)) {
            *first = Some(error);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn into_result(self) -> Result<()> {
        match self.first.into_inner().expect("failure lock") {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Spawns a named scoped thread (names make profiles and stack dumps readable per stage).
pub(crate) fn spawn_named<'scope, 'env: 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    work: impl FnOnce() + Send + 'scope,
) {
    std::thread::Builder::new().name(name.into()).spawn_scoped(scope, work).expect("spawning a thread");
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
