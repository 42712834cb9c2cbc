//! The run's ledger as the runtime uses it (`--state`): started or read back before anything is
//! written, each table's ranges planned, each range recorded after its commit (never before), each
//! table and then the run marked finished. The store itself is an engine capability
//! ([`barge_core::engine::LedgerStores`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use barge_core::ledger::{LedgerStore, RangeDone, RunRecord, TableLedger};
use barge_core::{KeyRange, Result, Scalar};

/// A run's ledger: the store, the run's name in it, and what an earlier attempt left when resuming.
#[derive(Clone)]
pub struct Ledger {
    pub store: Arc<dyn LedgerStore>,
    pub name: String,
    /// `Some` when resuming: ranges committed earlier are skipped, the others cleared and reloaded.
    pub resume: Option<RunRecord>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("store", &self.store.describe()).field("name", &self.name).finish()
    }
}

impl Ledger {
    /// Takes run `name` in `store` for this process (refusing one another live process owns), then
    /// starts it afresh, or (with `resume`) reads back what it left, refusing a run that was never
    /// started or whose `fingerprint` differs.
    pub fn open(store: Arc<dyn LedgerStore>, name: &str, fingerprint: &str, resume: bool) -> Result<Ledger> {
        store.acquire(name, &barge_core::ledger::Holder::current())?;
        let resume = if resume {
            Some(store.resume(name, fingerprint)?)
        } else {
            store.start(name, fingerprint)?;
            None
        };
        Ok(Ledger { store, name: name.to_string(), resume })
    }

    /// What an interrupted run recorded of `table` (resuming only).
    pub(crate) fn earlier(&self, table: &str) -> Option<&TableLedger> {
        self.resume.as_ref().and_then(|r| r.tables.get(table))
    }

    pub(crate) fn plan_table(&self, table: &str, action: &str, ranges: &[KeyRange]) -> Result<()> {
        self.store.plan_table(&self.name, table, action, ranges)
    }

    pub(crate) fn ranges_done(&self, table: &str, done: &[RangeDone]) -> Result<()> {
        self.store.ranges_done(&self.name, table, done)
    }

    pub(crate) fn table_finished(&self, table: &str) -> Result<()> {
        self.store.table_finished(&self.name, table)
    }

    pub(crate) fn set_watermark(&self, table: &str, value: &Scalar) -> Result<()> {
        self.store.set_watermark(&self.name, table, value)
    }

    pub(crate) fn finish(&self) -> Result<()> {
        self.store.finish(&self.name)
    }
}

/// The ledger as one table copy sees it.
pub(crate) struct TableLedgerView<'a> {
    pub ledger: &'a Ledger,
    /// Ranges an earlier attempt committed (resuming): skipped, their counts and digests reused.
    pub done: Option<&'a BTreeMap<usize, RangeDone>>,
    /// Clear each range in the target before loading it (resuming).
    pub clear: bool,
}
