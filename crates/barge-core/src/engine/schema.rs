//! Schema fidelity: the objects around the tables, and a same-engine copy's exact schema.
//!
//! A copy between two databases of the same engine takes the schema as that engine itself dumps
//! it ([`SchemaDump`] on the source, [`SchemaRestore`] on the target), restored in steps around the
//! rows: [`RestoreStep::Tables`] before any row, each table's [`RestoreStep::TableObjects`] once its
//! rows are committed, then [`RestoreStep::ForeignKeys`] and [`RestoreStep::Last`]. Between engines
//! the runtime builds the target schema itself from [`crate::TableInfo`], and what has no
//! counterpart is listed as [`NotMigrated`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A schema object a plan keeps, by kind (`table`, `index`, `fk constraint`, `view`, …) and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaObject {
    pub kind: String,
    pub name: String,
}

/// A view of the source, for a copy that builds the target schema itself: its name and its
/// SELECT in portable SQL (identifiers in double quotes, not qualified by the source's schema
/// or database), which a target of another engine tries as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    pub name: String,
    /// The view's own column names (`CREATE VIEW v (a, b) AS …`); empty: the SELECT's.
    #[serde(default)]
    pub columns: Vec<String>,
    pub select: String,
}

impl ViewDef {
    /// `CREATE VIEW name [(columns)] AS select`, with `quote` quoting names for the target.
    pub fn create_sql(&self, quote: impl Fn(&str) -> String) -> String {
        let columns = if self.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "))
        };
        format!("CREATE VIEW {}{columns} AS {}", quote(&self.name), self.select)
    }
}

/// An object of the source the target will not have, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotMigrated {
    pub kind: String,
    pub name: String,
    pub reason: String,
}

impl NotMigrated {
    pub fn new(kind: impl Into<String>, name: impl Into<String>, reason: impl Into<String>) -> Self {
        NotMigrated { kind: kind.into(), name: name.into(), reason: reason.into() }
    }
}

impl fmt::Display for NotMigrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.name, self.reason)
    }
}

/// A part of a dumped schema, restored at its point of the copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreStep<'a> {
    /// Before any row: types, functions, sequences, tables with their defaults and checks, views.
    Tables,
    /// Once a table's rows are committed: its primary key, unique and exclusion constraints and
    /// indexes (the table by its name in the source's list).
    TableObjects(&'a str),
    /// Once every table is loaded: foreign keys, with their actions.
    ForeignKeys,
    /// At the end: triggers, rules, materialized views refreshed, comments on what came later,
    /// sequences set to the source's values.
    Last,
}

impl fmt::Display for RestoreStep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreStep::Tables => f.write_str("types, functions and tables"),
            RestoreStep::TableObjects(table) => write!(f, "keys, constraints and indexes of `{table}`"),
            RestoreStep::ForeignKeys => f.write_str("foreign keys"),
            RestoreStep::Last => f.write_str("triggers, views' data and sequences"),
        }
    }
}

/// A source's schema as its engine dumps it. Opaque to the runtime: a target of the same engine
/// downcasts it ([`Self::as_any`]) to restore it.
pub trait DumpedSchema: Send + Sync + fmt::Debug {
    /// The engine whose targets restore it.
    fn engine(&self) -> &'static str;
    /// Every object the dump holds, in restore order.
    fn objects(&self) -> Vec<SchemaObject>;
    /// What the dump leaves out (e.g. ownership and grants), for the plan to say.
    fn not_migrated(&self) -> Vec<NotMigrated>;
    fn as_any(&self) -> &dyn Any;
}

impl dyn DumpedSchema + '_ {
    /// The dump as its engine's own type `T`: what a target of that engine restores. Another
    /// engine's dump is an error (the runtime restores a dump only into a target of its engine).
    pub fn downcast<T: 'static>(&self) -> Result<&T> {
        self.as_any().downcast_ref::<T>().ok_or_else(|| {
            crate::Error::engine("restoring a schema", format!("a {} dump cannot be restored here", self.engine()))
        })
    }
}

/// Capability of a source: dumping its schema with the engine's own tools.
pub trait SchemaDump: Send + Sync {
    /// The schema of every table the source lists (and everything they use), or why it cannot be
    /// dumped exactly (`Ok(Err(reason))`: the copy then builds the target schema itself and says
    /// why; e.g. the dump tool is missing).
    fn dump_schema(&self) -> Result<std::result::Result<Arc<dyn DumpedSchema>, String>>;
}

/// Capability of a target: restoring a dump of a source of its own engine.
pub trait SchemaRestore: Send + Sync {
    /// Whether `dump` can be restored here, checked before anything is written: `Err` names what
    /// the target lacks and the user must fix (an extension); `Ok(Err(reason))`: not exactly (the
    /// copy then builds the target schema itself and says why).
    fn check_restore(&self, dump: &dyn DumpedSchema) -> Result<std::result::Result<(), String>>;
    /// Restores one step of `dump`, in one transaction where the engine allows.
    fn restore(&self, dump: &dyn DumpedSchema, step: RestoreStep<'_>) -> Result<()>;
}
