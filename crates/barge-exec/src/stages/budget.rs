//! Bytes in flight between the readers and the writers: a reader takes a batch's bytes before it
//! hands the batch on, and the writer gives them back once the batch is written, so that memory
//! stays bounded in bytes as well as in batches, whatever the rows' width. A batch larger than
//! the whole budget (one huge value) waits until nothing else is in flight, then goes alone.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use barge_core::{Error, Result};

use crate::BATCHES_IN_FLIGHT;

pub(crate) struct ByteBudget {
    capacity: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// How often a waiting reader looks whether the pass has stopped.
const STOP_POLL: Duration = Duration::from_millis(50);

impl ByteBudget {
    pub(crate) fn new(capacity: usize) -> Self {
        ByteBudget { capacity: capacity.max(1), used: Mutex::new(0), freed: Condvar::new() }
    }

    /// The budget of a pass reading batches of `batch_bytes`: [`BATCHES_IN_FLIGHT`] of them.
    pub(crate) fn for_batches(batch_bytes: usize) -> Self {
        Self::new(batch_bytes.saturating_mul(BATCHES_IN_FLIGHT))
    }

    /// Waits until `bytes` fit, or until `stopped` says the pass is over ([`Error::Cancelled`]).
    pub(crate) fn acquire(&self, bytes: usize, stopped: &dyn Fn() -> bool) -> Result<()> {
        let mut used = self.used.lock().expect("budget lock");
        loop {
            if *used == 0 || *used + bytes <= self.capacity {
                *used += bytes;
                return Ok(());
            }
            if stopped() {
                return Err(Error::Cancelled);
            }
            used = self.freed.wait_timeout(used, STOP_POLL).expect("budget lock").0;
        }
    }

    /// Whether a batch of `bytes` is larger than the whole budget (it travels alone).
    pub(crate) fn exceeds(&self, bytes: usize) -> bool {
        bytes > self.capacity
    }

    /// Waits until nothing is in flight, or until `stopped` ([`Error::Cancelled`]): a reader that
    /// sent a batch larger than the budget reads no further until it is written, so that a table
    /// of huge values holds one of them at a time instead of one per stage.
    pub(crate) fn drained(&self, stopped: &dyn Fn() -> bool) -> Result<()> {
        let mut used = self.used.lock().expect("budget lock");
        while *used > 0 {
            if stopped() {
                return Err(Error::Cancelled);
            }
            used = self.freed.wait_timeout(used, STOP_POLL).expect("budget lock").0;
        }
        Ok(())
    }

    pub(crate) fn release(&self, bytes: usize) {
        let mut used = self.used.lock().expect("budget lock");
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }
}

/// Gives bytes back when dropped: whatever becomes of a message, its bytes return.
pub(crate) struct Held<'a> {
    pub budget: Option<&'a ByteBudget>,
    pub bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waits_for_room_and_a_huge_one_goes_alone() {
        let budget = ByteBudget::new(100);
        budget.acquire(60, &|| false).unwrap();
        budget.acquire(40, &|| false).unwrap();
        // Full: a further batch waits, and gives up when the pass stops.
        assert!(matches!(budget.acquire(1, &|| true), Err(Error::Cancelled)));
        budget.release(60);
        budget.release(40);
        // Larger than the whole budget: admitted once nothing is in flight.
        budget.acquire(500, &|| false).unwrap();
        assert!(matches!(budget.acquire(1, &|| true), Err(Error::Cancelled)));
        assert!(budget.exceeds(500) && !budget.exceeds(100));
        assert!(matches!(budget.drained(&|| true), Err(Error::Cancelled)), "500 bytes still in flight");
        budget.release(500);
        budget.drained(&|| false).unwrap();
        budget.acquire(1, &|| false).unwrap();
    }
}
