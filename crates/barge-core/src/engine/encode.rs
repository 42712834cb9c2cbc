//! Between the CPU stage and the writers: how a target column is chosen for a source field, and
//! how batches are encoded for a writer (on the CPU pool, never on an I/O thread).

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field};

use crate::error::Result;

/// How a target stores one Arrow field, and what it reads it back as.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetColumn {
    /// The column type in the target's DDL.
    pub native_type: String,
    /// The Arrow type the target's own mapping reads that column back as; comparing it with the
    /// source field's type (see [`crate::types::fidelity`]) says whether the move is exact.
    pub read_back: DataType,
    /// What the column cannot keep in this target, when something (PostGIS missing: geometries
    /// as bytea): the plan lists it as not migrated.
    pub note: Option<String>,
}

/// The one way targets pick a column for a source field, shared so that engines only declare their
/// choice: a source of the same `engine` keeps its native type (field metadata); otherwise
/// `choose(logical type, Arrow type)` names one from the engine's mapping; `read_back` resolves the
/// native type to the Arrow type it reads back as. No choice, or one that does not resolve, is
/// [`crate::Error::UnsupportedType`] naming the table, column and type.
pub fn choose_column(
    engine: &str,
    display_engine: &str,
    table: &str,
    field: &Field,
    choose: impl FnOnce(Option<&str>, &DataType) -> Option<String>,
    read_back: impl Fn(&str) -> Option<DataType>,
) -> Result<TargetColumn> {
    let meta = field.metadata();
    let native = match (meta.get(crate::META_ENGINE), meta.get(crate::META_NATIVE_TYPE)) {
        (Some(source_engine), Some(native)) if source_engine == engine => Some(native.clone()),
        _ => choose(logical_type(field), field.data_type()),
    };
    match native.and_then(|native| read_back(&native).map(|read_back| (native, read_back))) {
        Some((native_type, read_back)) => Ok(TargetColumn { native_type, read_back, note: None }),
        None => Err(crate::Error::UnsupportedType {
            table: table.into(),
            column: field.name().clone(),
            type_name: field.data_type().to_string(),
            reason: Some(format!("{display_engine} has no column type for it in barge's mapping")),
        }),
    }
}

/// The field's engine-independent logical type ([`crate::META_LOGICAL`]), if any.
pub fn logical_type(field: &Field) -> Option<&str> {
    field.metadata().get(crate::META_LOGICAL).map(String::as_str)
}

/// The rows of a batch in the source engine's own wire encoding, which a target of the same engine
/// with the same column types can load without encoding them again (PostgreSQL → PostgreSQL:
/// the binary COPY stream as read). The decoded batch still travels beside it, to be hashed.
#[derive(Clone, Debug)]
pub struct Native {
    /// Names the encoding: a target takes only the one it names alike.
    pub format: &'static str,
    /// Shared, not copied: the decoded batch beside it may hold its huge values in place.
    pub bytes: bytes::Bytes,
}

/// A batch ready for a writer: encoding runs on the CPU pool, the writer only does I/O. Cloning
/// shares the payload.
#[derive(Clone, Debug)]
pub enum Encoded {
    /// The writer consumes Arrow directly (e.g. binding prepared-statement parameters).
    Arrow(RecordBatch),
    /// The writer streams pre-encoded bytes (e.g. a COPY or LOAD DATA payload).
    Bytes { rows: usize, bytes: bytes::Bytes },
}

impl Encoded {
    /// Rows in this batch.
    pub fn rows(&self) -> usize {
        match self {
            Encoded::Arrow(b) => b.num_rows(),
            Encoded::Bytes { rows, .. } => *rows,
        }
    }
}

/// Turns record batches into what a target's writers consume. Runs on the CPU pool, so it is where
/// per-value encoding work belongs (never on a writer's I/O thread or an async runtime).
pub trait BatchEncoder: Send + Sync {
    fn encode(&self, batch: RecordBatch) -> Result<Encoded>;

    /// Whether [`Self::encode_native`] can take the source's rows as they were read: the source
    /// is this engine and every column has the same type on both sides (asked once per table, so
    /// that sources only keep their wire bytes when they will be used).
    fn accepts_native(&self) -> bool {
        false
    }

    /// `rows` rows in their source encoding, ready for the writer; `None` for an encoding this
    /// target does not take (the batch is then encoded).
    fn encode_native(&self, rows: usize, native: Native) -> Option<Encoded> {
        let _ = (rows, native);
        None
    }
}

/// Hands batches over as Arrow (targets whose writers bind Arrow values directly).
#[derive(Debug)]
pub struct ArrowPassthrough;

impl BatchEncoder for ArrowPassthrough {
    fn encode(&self, batch: RecordBatch) -> Result<Encoded> {
        Ok(Encoded::Arrow(batch))
    }
}
