//! Tables, keys and key ranges: the units the partitioner plans and the runtime executes.

use std::fmt;

use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

/// One value of a key column, as the engine stores it. Scalars travel from an engine's sampling
/// query into range predicates of the same engine, so they keep the engine's own representation
/// (a SQLite timestamp stored as text stays text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("NULL"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::UInt(u) => write!(f, "{u}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => write!(f, "{s:?}"),
            Scalar::Bytes(b) => {
                f.write_str("x'")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
        }
    }
}

/// The values of a table's key columns for one row, in key-column order.
pub type Key = Vec<Scalar>;

/// Formats a key for messages: `42` for one column, `(1, "a")` for several.
pub fn display_key(key: &[Scalar]) -> String {
    match key {
        [one] => one.to_string(),
        many => format!("({})", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// A half-open key range `lo <= key < hi`; `None` is unbounded on that side. Composite keys
/// compare as row values, in the database's own ordering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRange {
    /// Position of this range in its table's plan; stable for the life of a run.
    pub id: usize,
    pub lo: Option<Key>,
    pub hi: Option<Key>,
}

impl KeyRange {
    /// The range covering the whole key space.
    pub fn all() -> Self {
        KeyRange { id: 0, lo: None, hi: None }
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = |b: &Option<Key>| b.as_ref().map_or_else(|| "∞".to_string(), |k| display_key(k));
        write!(f, "[{}, {})", self.lo.as_ref().map_or_else(|| "-∞".to_string(), |k| display_key(k)), bound(&self.hi))
    }
}

/// The SQL condition selecting `range` over `columns` (already quoted): `cols >= lo AND cols < hi`,
/// as row values for composite keys. `value(i, scalar)` renders the bound of column `i` (a literal,
/// or a placeholder whose parameter the caller records); an unbounded range is `always` (engines
/// spell TRUE differently). Every engine's range reads go through this one shape.
pub fn range_predicate(
    columns: &[String],
    range: &KeyRange,
    always: &str,
    mut value: impl FnMut(usize, &Scalar) -> String,
) -> String {
    let group =
        |items: Vec<String>| if items.len() == 1 { items[0].clone() } else { format!("({})", items.join(", ")) };
    let lhs = group(columns.to_vec());
    let mut clauses = Vec::new();
    for (bound, op) in [(&range.lo, ">="), (&range.hi, "<")] {
        if let Some(key) = bound {
            let values = key.iter().enumerate().map(|(i, s)| value(i, s)).collect();
            clauses.push(format!("{lhs} {op} {}", group(values)));
        }
    }
    if clauses.is_empty() { always.to_string() } else { clauses.join(" AND ") }
}

/// How rows of a table are identified and ranged over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeySpec {
    /// A primary key: indices into the table's schema, in key order.
    Primary(Vec<usize>),
    /// No primary key, but the engine has a physical row locator that can be ranged over for
    /// parallel reads (SQLite `rowid`, PostgreSQL `ctid`). Rows have no identity across engines, so
    /// verification treats the table as one multiset of rows.
    Locator(String),
    /// No key and no locator: one range, read by one reader.
    None,
}

impl KeySpec {
    /// The primary key from `(position in the key, column index)` pairs as catalogs list them, or
    /// `without_key` when there are none.
    pub fn from_key_positions<P: Ord>(mut positions: Vec<(P, usize)>, without_key: KeySpec) -> KeySpec {
        if positions.is_empty() {
            return without_key;
        }
        positions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        KeySpec::Primary(positions.into_iter().map(|(_, column)| column).collect())
    }

    /// True when rows carry an identity that exists in the target too.
    pub fn is_primary(&self) -> bool {
        matches!(self, KeySpec::Primary(_))
    }
}

/// A table as an engine describes it.
#[derive(Clone, Debug)]
pub struct TableInfo {
    pub name: String,
    /// Arrow schema of the columns barge reads and writes; each field carries
    /// [`crate::META_NATIVE_TYPE`] and [`crate::META_ENGINE`] metadata.
    pub schema: SchemaRef,
    pub key: KeySpec,
    /// The engine's cheap row estimate (statistics, or a count for small embedded tables).
    pub estimated_rows: u64,
    /// Secondary and unique indexes over plain columns (not the primary key), recreated after a
    /// load into a table barge created.
    pub indexes: Vec<IndexInfo>,
    /// Foreign keys, added after every table is loaded when asked to (`--foreign-keys`).
    pub foreign_keys: Vec<ForeignKeyInfo>,
    /// CHECK constraints, for a target of another engine (a same-engine copy restores the
    /// source's own dump): tried once the table's rows are loaded, listed when refused.
    pub checks: Vec<CheckInfo>,
    /// Indexes over expressions or with a predicate (partial indexes), for a target of another
    /// engine like `checks`: tried once the rows are loaded, listed when refused.
    pub sql_indexes: Vec<SqlIndex>,
    /// The table's comment (its columns' are in their fields' [`crate::META_COMMENT`]).
    pub comment: Option<String>,
    /// A row filter in the source's SQL (a pipeline's `where`), applied by the engine to every
    /// read, sample and statistic of this table. Engines describe tables without one.
    pub filter: Option<String>,
    /// Only rows whose column is at least this value (an incremental table's watermark), applied
    /// like `filter`; the engine renders the value in the column's type.
    pub window: Option<(String, Scalar)>,
}

/// A CHECK constraint: its name and its condition in portable SQL (identifiers in double quotes
/// where they need quoting, no engine-specific casts), which a target of another engine tries as
/// it is, after the rows (so it also proves the rows satisfy it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInfo {
    pub name: String,
    pub expr: String,
}

/// An index whose keys are expressions or that has a predicate, in portable SQL (see
/// [`CheckInfo`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlIndex {
    pub name: String,
    pub unique: bool,
    /// Each key: a column name or an expression.
    pub keys: Vec<String>,
    /// The partial index's WHERE condition.
    pub predicate: Option<String>,
    /// The index method where it is not the engine's default B-tree (PostgreSQL's `gin`, …).
    pub method: Option<String>,
}

impl SqlIndex {
    /// `CREATE [UNIQUE] INDEX name ON table [USING method] (keys) [WHERE predicate]`, names quoted
    /// by `quote`; each key in parentheses unless it is a bare or quoted name (an expression key
    /// needs them; a column in them would be an expression in SQLite).
    pub fn create_sql(&self, table: &str, quote: impl Fn(&str) -> String, using: bool) -> String {
        let keys: Vec<String> =
            self.keys.iter().map(|k| if crate::checks::is_name(k) { k.clone() } else { format!("({k})") }).collect();
        format!(
            "CREATE {}INDEX {} ON {}{} ({}){}",
            if self.unique { "UNIQUE " } else { "" },
            quote(&self.name),
            quote(table),
            match (&self.method, using) {
                (Some(method), true) => format!(" USING {method}"),
                _ => String::new(),
            },
            keys.join(", "),
            self.predicate.as_ref().map(|p| format!(" WHERE {p}")).unwrap_or_default()
        )
    }
}

/// An index over plain columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
}

/// A foreign key: `columns` of this table reference `ref_columns` of `ref_table`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKeyInfo {
    /// The constraint's name, kept in the target where the engine names constraints.
    #[serde(default)]
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
    /// The referential actions in standard SQL (`CASCADE`, `SET NULL`, `SET DEFAULT`,
    /// `RESTRICT`, `NO ACTION`), said explicitly in the target (MariaDB's default is RESTRICT,
    /// PostgreSQL's NO ACTION); `None`: unknown, the target's default.
    #[serde(default)]
    pub on_delete: Option<String>,
    #[serde(default)]
    pub on_update: Option<String>,
}

impl ForeignKeyInfo {
    /// An action as SQL spells it, from the forms catalogs give (`CASCADE`, `SET_NULL`, `c`,
    /// `NO ACTION`, `a`); `None` for an unknown form.
    pub fn action(spelled: &str) -> Option<String> {
        match spelled.trim().to_ascii_uppercase().replace('_', " ").as_str() {
            "NO ACTION" | "A" => Some("NO ACTION".into()),
            "CASCADE" | "C" => Some("CASCADE".into()),
            "SET NULL" | "N" => Some("SET NULL".into()),
            "SET DEFAULT" | "D" => Some("SET DEFAULT".into()),
            "RESTRICT" | "R" => Some("RESTRICT".into()),
            _ => None,
        }
    }
}

impl TableInfo {
    /// `predicate` (a range condition) restricted by the table's row filter, if any.
    pub fn filtered(&self, predicate: String) -> String {
        match &self.filter {
            Some(filter) => format!("({predicate}) AND ({filter})"),
            None => predicate,
        }
    }

    /// Whether reading `range` reads every row of the table: no key bounds, no row filter, no
    /// incremental window.
    pub fn reads_all(&self, range: &KeyRange) -> bool {
        range.lo.is_none() && range.hi.is_none() && self.filter.is_none() && self.window.is_none()
    }

    /// Names of the primary key columns (empty without a primary key).
    pub fn key_columns(&self) -> Vec<&str> {
        match &self.key {
            KeySpec::Primary(cols) => cols.iter().map(|&i| self.schema.field(i).name().as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The columns change capture identifies this table's rows by: its key, or every column
    /// where it has none (the whole row, as PostgreSQL's REPLICA IDENTITY FULL logs it; equal rows
    /// are then one value held some number of times).
    pub fn change_key(&self) -> Vec<&str> {
        match &self.key {
            KeySpec::Primary(_) => self.key_columns(),
            _ => self.schema.fields().iter().map(|f| f.name().as_str()).collect(),
        }
    }

    /// Names of the columns that ranges are expressed over: the primary key, or the locator.
    pub fn range_columns(&self) -> Vec<String> {
        match &self.key {
            KeySpec::Primary(_) => self.key_columns().into_iter().map(str::to_string).collect(),
            KeySpec::Locator(name) => vec![name.clone()],
            KeySpec::None => Vec::new(),
        }
    }
}

/// A way values can be lost or changed between source and target, found by a plan's scan of the
/// data. Each fails the plan unless the pipeline accepts it for the column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Integers beyond the target type's range (e.g. bigint unsigned above 2^63 into bigint).
    OutOfRange,
    /// Text longer than the target column's declared length.
    TooLong,
    /// Decimals with more integer digits, or more fractional digits, than the target keeps.
    Precision,
    /// Zero dates (`0000-00-00`) that arrive as NULL.
    ZeroDate,
    /// Values the source's declared type does not hold (e.g. tinyint(1) read as boolean holding 2).
    BadValue,
    /// Timestamps without a time zone into a column with one, and no `source_timezone` declared.
    NaiveTimestamp,
    /// The type mapping itself loses information (see `types::fidelity`).
    LossyType,
    /// Values the target cannot store in any column (NaN into MySQL, NUL in text into PostgreSQL).
    Unrepresentable,
}

impl Risk {
    pub fn name(self) -> &'static str {
        match self {
            Risk::OutOfRange => "out_of_range",
            Risk::TooLong => "too_long",
            Risk::Precision => "precision",
            Risk::ZeroDate => "zero_date",
            Risk::BadValue => "bad_value",
            Risk::NaiveTimestamp => "naive_timestamp",
            Risk::LossyType => "lossy_type",
            Risk::Unrepresentable => "unrepresentable",
        }
    }
}

/// A conversion an engine applied while reading (e.g. zero dates read as NULL).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    pub column: String,
    pub risk: Risk,
    /// Values converted so far.
    pub values: u64,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column `{}`: {}", self.column, self.message)
    }
}

/// Statistics of a table's range column(s) within a range: what the partitioner needs to decide
/// between integer arithmetic and sampled quantiles.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyStats {
    /// Rows in the range; see [`KeyStats::dense_by_estimate`] for when an engine may report its
    /// key span instead.
    pub rows: u64,
    pub min: Option<Key>,
    pub max: Option<Key>,
}

impl KeyStats {
    /// Statistics of a whole table whose single integer key spans `[min, max]` and whose engine
    /// estimates `estimated` rows, without counting them: when the estimate is within 10% of the
    /// span the key is taken as dense and the span reported as the row count, so the partitioner
    /// splits it by arithmetic; otherwise `None` (count exactly). Counting is a scan (InnoDB's
    /// `COUNT(*)`: 0.33 s per 2M rows, before a copy can start), while partitioning uses the count
    /// only to balance ranges: ranges split by arithmetic cover the key space whatever it is.
    pub fn dense_by_estimate(estimated: u64, min: i64, max: i64) -> Option<KeyStats> {
        let span = i128::from(max) - i128::from(min) + 1;
        let off = (i128::from(estimated) - span).abs();
        (span > 1 && off * 10 <= span).then(|| KeyStats {
            rows: u64::try_from(span).unwrap_or(u64::MAX),
            min: Some(vec![Scalar::Int(min)]),
            max: Some(vec![Scalar::Int(max)]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_taken_as_dense_only_when_the_estimate_is_within_a_tenth_of_its_span() {
        let dense = KeyStats::dense_by_estimate(1_950_000, 1, 2_000_000).unwrap();
        assert_eq!(dense.rows, 2_000_000);
        assert_eq!((dense.min, dense.max), (Some(vec![Scalar::Int(1)]), Some(vec![Scalar::Int(2_000_000)])));
        assert!(KeyStats::dense_by_estimate(2_200_000, 1, 2_000_000).is_some());
        assert!(KeyStats::dense_by_estimate(2_200_001, 1, 2_000_000).is_none());
        assert!(KeyStats::dense_by_estimate(1_000_000, 1, 2_000_000).is_none(), "sparse: count exactly");
        assert!(KeyStats::dense_by_estimate(0, 1, 2_000_000).is_none(), "no statistics yet");
        assert!(KeyStats::dense_by_estimate(1, 5, 5).is_none(), "a single key");
        assert!(KeyStats::dense_by_estimate(1_000, i64::MIN, i64::MAX).is_none(), "no overflow");
    }
}
