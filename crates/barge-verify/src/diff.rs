//! Finding the exact rows behind a digest mismatch: split the range, compare sub-range digests,
//! recurse into the ones that differ, and diff rows by key once a range is small.

use std::cmp::Ordering;
use std::collections::HashMap;

use barge_core::{BatchSize, KeyRange, Result, Source, TableInfo};
use barge_plan::partition::plan_ranges;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::encoding::RowEncoder;

/// Ranges with at most this many rows on either side are diffed row by row (both sides held in
/// memory as key → hash); larger ones are split first.
pub const ROW_DIFF_MAX_ROWS: u64 = 20_000;
/// How many sub-ranges a mismatched range is split into per narrowing step.
pub const NARROW_FANOUT: usize = 16;
/// Keys listed per kind in a report; the totals count them all.
pub const MAX_KEYS_LISTED: usize = 1000;

/// One keyed row of a side: its hash, its key, how many rows hold that key (more than 1 only in a
/// table without a unique key) and a hash per column, to name the columns of a changed row.
pub struct KeyedRow {
    pub hash: u128,
    pub key: Value,
    pub count: u64,
    pub columns: Box<[u64]>,
}

/// The rows of one side of a range, ready to be diffed.
pub enum RowSet {
    /// Key bytes → the row, with the table's column names.
    Keyed { rows: HashMap<Vec<u8>, KeyedRow>, names: Vec<String> },
    /// For tables without a primary key: row hash → (occurrences, row as JSON).
    Multiset(HashMap<u128, (u64, Value)>),
}

/// Which keys differ between source and target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyDiff {
    /// In the source, not in the target.
    pub missing: Vec<Value>,
    /// In the target, not in the source.
    pub extra: Vec<Value>,
    /// In both, with different values.
    pub changed: Vec<Value>,
    /// The first changed rows with the columns that differ: `{"key": […], "columns": ["email"]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_columns: Vec<Value>,
    /// Every changed row counted under each column that differs in it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub changed_by_column: std::collections::BTreeMap<String, u64>,
    pub missing_total: u64,
    pub extra_total: u64,
    pub changed_total: u64,
    /// Keys held by a different number of rows on the two sides (a target without a unique key
    /// holding a row twice): `{"key": […], "present": 2, "expected": 1}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicated: Vec<Value>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicated_total: u64,
}

/// For `skip_serializing_if`: a count of zero is left out of reports.
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl KeyDiff {
    pub fn is_empty(&self) -> bool {
        self.missing_total == 0 && self.extra_total == 0 && self.changed_total == 0 && self.duplicated_total == 0
    }

    /// Adds the keys of another diff, keeping the first [`MAX_KEYS_LISTED`] in key order per kind.
    pub fn merge(&mut self, other: KeyDiff) {
        fn take(into: &mut Vec<Value>, from: Vec<Value>) {
            into.extend(from);
            into.sort_by(compare_keys);
            into.truncate(MAX_KEYS_LISTED);
        }
        take(&mut self.missing, other.missing);
        take(&mut self.extra, other.extra);
        take(&mut self.changed, other.changed);
        self.changed_columns.extend(other.changed_columns);
        self.changed_columns.sort_by(|a, b| compare_keys(&a["key"], &b["key"]));
        self.changed_columns.truncate(MAX_KEYS_LISTED);
        for (column, rows) in other.changed_by_column {
            *self.changed_by_column.entry(column).or_default() += rows;
        }
        self.duplicated.extend(other.duplicated);
        self.duplicated.sort_by(|a, b| compare_keys(&a["key"], &b["key"]));
        self.duplicated.truncate(MAX_KEYS_LISTED);
        self.missing_total += other.missing_total;
        self.extra_total += other.extra_total;
        self.changed_total += other.changed_total;
        self.duplicated_total += other.duplicated_total;
    }
}

/// Orders reported keys naturally: numbers by value, text by code point, arrays column by column.
/// (Only for reading reports; range bounds always use the database's own ordering.)
pub fn compare_keys(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_f64().unwrap_or(f64::NAN).total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            x.iter().zip(y).map(|(x, y)| compare_keys(x, y)).find(|o| o.is_ne()).unwrap_or(x.len().cmp(&y.len()))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Reads `range` of `table` and digests it on the calling thread.
pub fn range_digest(source: &dyn Source, table: &TableInfo, range: &KeyRange, batch: BatchSize) -> Result<Digest> {
    let mut digest = Digest::default();
    source.read_range(table, range, batch, &mut |rows| {
        digest += crate::digest::batch_digest(&table.name, &rows)?;
        Ok(())
    })?;
    Ok(digest)
}

/// Reads `range` of `table` into a [`RowSet`]: keyed by primary key where there is one.
pub fn collect_rows(source: &dyn Source, table: &TableInfo, range: &KeyRange, batch: BatchSize) -> Result<RowSet> {
    let key_indices: Vec<usize> = match &table.key {
        barge_core::KeySpec::Primary(cols) => cols.clone(),
        _ => Vec::new(),
    };
    let mut keyed = HashMap::new();
    let mut multiset: HashMap<u128, (u64, Value)> = HashMap::new();
    let mut scratch = Vec::with_capacity(256);
    source.read_range(table, range, batch, &mut |batch| {
        let rows = RowEncoder::new(&table.name, &batch)?;
        if key_indices.is_empty() {
            for row in 0..batch.num_rows() {
                let entry = multiset.entry(rows.row_hash(row, &mut scratch)).or_insert_with(|| (0, rows.json_row(row)));
                entry.0 += 1;
            }
        } else {
            let keys = RowEncoder::for_columns(&table.name, &batch, &key_indices)?;
            let columns = (0..batch.num_columns())
                .map(|i| RowEncoder::for_columns(&table.name, &batch, &[i]))
                .collect::<Result<Vec<_>>>()?;
            for row in 0..batch.num_rows() {
                let hash = rows.row_hash(row, &mut scratch);
                let mut key = Vec::new();
                keys.encode_row(row, &mut key);
                keyed.entry(key).and_modify(|found: &mut KeyedRow| found.count += 1).or_insert_with(|| KeyedRow {
                    hash,
                    key: keys.json_row(row),
                    count: 1,
                    columns: columns.iter().map(|c| c.row_hash(row, &mut scratch) as u64).collect(),
                });
            }
        }
        Ok(())
    })?;
    Ok(if key_indices.is_empty() {
        RowSet::Multiset(multiset)
    } else {
        RowSet::Keyed { rows: keyed, names: table.schema.fields().iter().map(|f| f.name().clone()).collect() }
    })
}

/// Diffs two sides of the same range. Listed keys are sorted for stable reports.
pub fn row_diff(source: RowSet, target: RowSet) -> KeyDiff {
    let mut diff = KeyDiff::default();
    let (mut missing, mut extra, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut duplicated, mut changed_columns) = (Vec::new(), Vec::new());
    match (source, target) {
        (RowSet::Keyed { rows: src, names }, RowSet::Keyed { rows: mut tgt, .. }) => {
            for (key, row) in src {
                match tgt.remove(&key) {
                    None => missing.push(row.key),
                    Some(there) if there.count != row.count => {
                        let (present, expected) = (there.count, row.count);
                        duplicated.push(serde_json::json!({"key": row.key, "present": present, "expected": expected}));
                    }
                    Some(there) if there.hash != row.hash => {
                        let differ: Vec<&String> = names
                            .iter()
                            .zip(row.columns.iter().zip(there.columns.iter()))
                            .filter(|(_, (a, b))| a != b)
                            .map(|(name, _)| name)
                            .collect();
                        for name in &differ {
                            *diff.changed_by_column.entry(name.to_string()).or_default() += 1;
                        }
                        changed_columns.push(serde_json::json!({"key": row.key, "columns": differ}));
                        changed.push(row.key);
                    }
                    Some(_) => {}
                }
            }
            for there in tgt.into_values() {
                if there.count > 1 {
                    duplicated.push(serde_json::json!({"key": there.key, "present": there.count, "expected": 0}));
                } else {
                    extra.push(there.key);
                }
            }
        }
        (RowSet::Multiset(src), RowSet::Multiset(mut tgt)) => {
            for (hash, (count, json)) in src {
                let there = tgt.remove(&hash).map_or(0, |(c, _)| c);
                missing.extend(std::iter::repeat_n(json.clone(), count.saturating_sub(there) as usize));
                if there > count {
                    extra.extend(std::iter::repeat_n(json, (there - count) as usize));
                }
            }
            for (_, (count, json)) in tgt {
                extra.extend(std::iter::repeat_n(json, count as usize));
            }
        }
        // One side keyed and the other not cannot happen: both sides are described with the same key.
        (source, target) => {
            let rows = |s: &RowSet| match s {
                RowSet::Keyed { rows, .. } => rows.values().map(|r| r.count as usize).sum::<usize>(),
                RowSet::Multiset(m) => m.values().map(|(c, _)| *c as usize).sum(),
            };
            diff.missing_total = rows(&source) as u64;
            diff.extra_total = rows(&target) as u64;
            return diff;
        }
    }
    for (list, total, out) in [
        (missing, &mut diff.missing_total, &mut diff.missing),
        (extra, &mut diff.extra_total, &mut diff.extra),
        (changed, &mut diff.changed_total, &mut diff.changed),
    ] {
        *total = list.len() as u64;
        let mut list = list;
        list.sort_by(compare_keys);
        list.truncate(MAX_KEYS_LISTED);
        *out = list;
    }
    changed_columns.sort_by(|a, b| compare_keys(&a["key"], &b["key"]));
    changed_columns.truncate(MAX_KEYS_LISTED);
    diff.changed_columns = changed_columns;
    diff.duplicated_total = duplicated.len() as u64;
    duplicated.sort_by(|a, b| compare_keys(&a["key"], &b["key"]));
    duplicated.truncate(MAX_KEYS_LISTED);
    diff.duplicated = duplicated;
    diff
}

/// Finds the keys behind a mismatch in `range`, whose digests were `source_digest` and
/// `target_digest`. Tables without a primary key are diffed as whole multisets.
#[allow(clippy::too_many_arguments)]
pub fn narrow_range(
    source: &dyn Source,
    source_table: &TableInfo,
    target: &dyn Source,
    target_table: &TableInfo,
    range: &KeyRange,
    source_digest: Digest,
    target_digest: Digest,
    batch: BatchSize,
) -> Result<KeyDiff> {
    let diff_rows = || -> Result<KeyDiff> {
        Ok(row_diff(
            collect_rows(source, source_table, range, batch)?,
            collect_rows(target, target_table, range, batch)?,
        ))
    };
    if !source_table.key.is_primary() || source_digest.rows.max(target_digest.rows) <= ROW_DIFF_MAX_ROWS {
        return diff_rows();
    }
    // Split on the side with more rows, so that rows only the target has are split too.
    let subranges = if source_digest.rows >= target_digest.rows {
        plan_ranges(source, source_table, range, NARROW_FANOUT)?
    } else {
        plan_ranges(target, target_table, range, NARROW_FANOUT)?
    };
    if subranges.len() <= 1 {
        return diff_rows();
    }
    let mut diff = KeyDiff::default();
    for sub in &subranges {
        let s = range_digest(source, source_table, sub, batch)?;
        let t = range_digest(target, target_table, sub, batch)?;
        if s != t {
            diff.merge(narrow_range(source, source_table, target, target_table, sub, s, t, batch)?);
        }
    }
    Ok(diff)
}
