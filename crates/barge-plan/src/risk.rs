//! The lossiness report of a plan: reads a sample of each table (whole key ranges spread across the
//! key space, not the first rows), runs the table's transform over it, and compares the values
//! with what the target columns hold. Engine-agnostic: it sees Arrow batches, the target's
//! declared types and the source's read notices.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use barge_core::types::Fidelity;
use barge_core::{Error, META_NATIVE_TYPE, Result, Risk, Source};
use serde::Serialize;

use crate::TablePlan;

/// One risk found in one column.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnRisk {
    pub column: String,
    pub risk: Risk,
    pub detail: String,
    /// The pipeline accepts this risk for this column.
    pub accepted: bool,
}

/// What a table's sample showed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Assessment {
    pub sampled_rows: u64,
    pub risks: Vec<ColumnRisk>,
}

/// Ranges read for a sample: spread over the table.
const SAMPLE_RANGES: usize = 16;

/// Samples `table` (about `sample_rows` rows) and lists its risks. `existing` is the target
/// table's own description when it exists already (its columns' real types and lengths);
/// `timezone_declared` says the pipeline declared the source's time zone; `accepted` lists
/// accepted risks per target column.
pub fn assess(
    source: &dyn Source,
    table: &TablePlan,
    existing: Option<&Schema>,
    sample_rows: usize,
    timezone_declared: bool,
    accepted: &HashMap<String, Vec<Risk>>,
    unstorable: (barge_core::values::Unstorable, barge_core::values::ValuePolicy),
) -> Result<Assessment> {
    let mut unrepresentable: HashMap<String, (u64, String)> = HashMap::new();
    let output = table.output.schema.clone();
    let mut stats: Vec<ColumnStats> = output.fields().iter().map(|_| ColumnStats::default()).collect();
    let mut found: Vec<(String, Risk, String)> = Vec::new();
    let step = table.ranges.len().div_ceil(SAMPLE_RANGES).max(1);
    let picked: Vec<_> = table.ranges.iter().step_by(step).collect();
    let per_range = (sample_rows / picked.len().max(1)).max(1);
    let mut sampled = 0u64;
    let mut transform_failures: HashMap<String, (u64, String)> = HashMap::new();
    for range in picked {
        let mut taken = 0usize;
        let mut enough = false;
        let read = source.read_range(
            &table.source,
            range,
            barge_core::BatchSize::rows(per_range.min(8192)),
            &mut |batch: RecordBatch| {
                let batch = batch.slice(0, batch.num_rows().min(per_range - taken));
                taken += batch.num_rows();
                sampled += batch.num_rows() as u64;
                let batch = match &table.transform {
                    Some(transform) => {
                        let out = transform.apply(&batch)?;
                        for (_, column, reason) in out.failures {
                            let entry = transform_failures.entry(column).or_insert((0, reason));
                            entry.0 += 1;
                        }
                        out.batch
                    }
                    None => batch,
                };
                for (stats, column) in stats.iter_mut().zip(batch.columns()) {
                    stats.add(column.as_ref());
                }
                for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                    let found = unstorable.0.scan(column);
                    if let Some((_, reason)) = found.first() {
                        let entry = unrepresentable.entry(field.name().clone()).or_insert((0, reason.clone()));
                        entry.0 += found.len() as u64;
                    }
                }
                if taken >= per_range {
                    enough = true;
                    return Err(Error::Cancelled);
                }
                Ok(())
            },
        );
        match read {
            Ok(()) => {}
            Err(Error::Cancelled) if enough => {}
            Err(Error::BadValue { column, reason, .. }) => found.push((column, Risk::BadValue, reason)),
            Err(other) => return Err(other),
        }
    }
    for (column, (rows, reason)) in transform_failures {
        found.push((column, Risk::BadValue, format!("the transform fails for {rows} sampled row(s): {reason}")));
    }
    for (column, (values, reason)) in unrepresentable {
        let policy = unstorable.1;
        found.push((
            column,
            Risk::Unrepresentable,
            format!("{values} sampled value(s): {reason} (policy: {})", policy.name()),
        ));
    }
    for notice in source.notices(&table.source.name) {
        found.push((notice.column.clone(), notice.risk, notice.message.clone()));
    }
    for ((field, stats), column) in output.fields().iter().zip(&stats).zip(&table.columns) {
        let (read_back, native) = match existing.and_then(|s| s.field_with_name(field.name()).ok()) {
            Some(target) => {
                (target.data_type().clone(), target.metadata().get(META_NATIVE_TYPE).cloned().unwrap_or_default())
            }
            None => (column.target.read_back.clone(), column.target.native_type.clone()),
        };
        let name = field.name().clone();
        if let Fidelity::Lossy(why) = &column.fidelity {
            found.push((name.clone(), Risk::LossyType, format!("{} → {}: {why}", field.data_type(), native)));
        }
        if let (DataType::Timestamp(_, None), DataType::Timestamp(_, Some(_))) = (field.data_type(), &read_back)
            && !timezone_declared
        {
            found.push((
                name.clone(),
                Risk::NaiveTimestamp,
                format!(
                    "timestamps without a time zone into `{native}`: set source_timezone = \"UTC\" if they are UTC"
                ),
            ));
        }
        for (risk, detail) in stats.risks(&read_back, &native) {
            found.push((name.clone(), risk, detail));
        }
    }
    found.sort_by(|a, b| (&a.0, a.1.name()).cmp(&(&b.0, b.1.name())));
    found.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let risks = found
        .into_iter()
        .map(|(column, risk, detail)| ColumnRisk {
            // A policy other than `error` says what happens to unrepresentable values.
            accepted: accepted.get(&column).is_some_and(|r| r.contains(&risk))
                || (risk == Risk::Unrepresentable && unstorable.1 != barge_core::values::ValuePolicy::Error),
            column,
            risk,
            detail,
        })
        .collect();
    Ok(Assessment { sampled_rows: sampled, risks })
}

/// What the sample held in one column.
#[derive(Debug, Default)]
struct ColumnStats {
    min: Option<i128>,
    max: Option<i128>,
    max_chars: usize,
    /// Decimals: whether the column is one, the most integer digits, and the most fractional
    /// digits in use (trailing zeros do not count).
    decimal: bool,
    max_integer_digits: u32,
    max_fraction_digits: u32,
}

/// Decimal digits of `n` (0 for 0).
fn digits(n: u128) -> u32 {
    n.checked_ilog10().map_or(0, |l| l + 1)
}

impl ColumnStats {
    fn integer(&mut self, v: i128) {
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    fn add(&mut self, array: &dyn Array) {
        macro_rules! ints {
            ($t:ty) => {
                for v in array.as_primitive::<$t>().iter().flatten() {
                    self.integer(v as i128);
                }
            };
        }
        match array.data_type() {
            DataType::Int8 => ints!(Int8Type),
            DataType::Int16 => ints!(Int16Type),
            DataType::Int32 => ints!(Int32Type),
            DataType::Int64 => ints!(Int64Type),
            DataType::UInt8 => ints!(UInt8Type),
            DataType::UInt16 => ints!(UInt16Type),
            DataType::UInt32 => ints!(UInt32Type),
            DataType::UInt64 => ints!(UInt64Type),
            DataType::Utf8 => {
                for v in array.as_string::<i32>().iter().flatten() {
                    self.max_chars = self.max_chars.max(v.chars().count());
                }
            }
            DataType::LargeUtf8 => {
                for v in array.as_string::<i64>().iter().flatten() {
                    self.max_chars = self.max_chars.max(v.chars().count());
                }
            }
            DataType::Decimal128(_, scale) => {
                self.decimal = true;
                let scale = (*scale).max(0) as u32;
                let unit = 10u128.pow(scale);
                for v in array.as_primitive::<Decimal128Type>().iter().flatten() {
                    let v = v.unsigned_abs();
                    self.max_integer_digits = self.max_integer_digits.max(digits(v / unit));
                    let mut fraction = v % unit;
                    let mut used = if fraction == 0 { 0 } else { scale };
                    while fraction != 0 && fraction.is_multiple_of(10) {
                        fraction /= 10;
                        used -= 1;
                    }
                    self.max_fraction_digits = self.max_fraction_digits.max(used);
                }
            }
            _ => {}
        }
    }

    fn risks(&self, target: &DataType, native: &str) -> Vec<(Risk, String)> {
        let mut risks = Vec::new();
        if let (Some(min), Some(max)) = (self.min, self.max) {
            let bounds = match target {
                DataType::Int8 => Some((i8::MIN as i128, i8::MAX as i128)),
                DataType::Int16 => Some((i16::MIN as i128, i16::MAX as i128)),
                DataType::Int32 => Some((i32::MIN as i128, i32::MAX as i128)),
                DataType::Int64 => Some((i64::MIN as i128, i64::MAX as i128)),
                DataType::UInt8 => Some((0, u8::MAX as i128)),
                DataType::UInt16 => Some((0, u16::MAX as i128)),
                DataType::UInt32 => Some((0, u32::MAX as i128)),
                DataType::UInt64 => Some((0, u64::MAX as i128)),
                DataType::Decimal128(p, s) => {
                    let limit = 10i128.pow((*p as i32 - *s as i32).max(0) as u32) - 1;
                    Some((-limit, limit))
                }
                _ => None,
            };
            if let Some((lo, hi)) = bounds
                && (min < lo || max > hi)
            {
                risks.push((Risk::OutOfRange, format!("values from {min} to {max}; `{native}` holds {lo} to {hi}")));
            }
        }
        if let Some(limit) = declared_length(native)
            && self.max_chars > limit
        {
            risks
                .push((Risk::TooLong, format!("values up to {} characters; `{native}` holds {limit}", self.max_chars)));
        }
        if let (true, DataType::Decimal128(p, s)) = (self.decimal, target) {
            let room = (*p as i32 - *s as i32).max(0) as u32;
            if self.max_integer_digits > room {
                risks.push((
                    Risk::Precision,
                    format!("values with {} integer digits; `{native}` holds {room}", self.max_integer_digits),
                ));
            }
            if self.max_fraction_digits > (*s).max(0) as u32 {
                risks.push((Risk::Precision, format!("values with more than {s} fractional digits would be rounded")));
            }
        }
        risks
    }
}

/// The length of a declared character type: `varchar(20)`, `character varying(20)`, `char(3)`,
/// `nvarchar(8)` (standard SQL spellings, whatever the engine).
pub fn declared_length(native: &str) -> Option<usize> {
    let lower = native.trim().to_ascii_lowercase();
    let (name, rest) = lower.split_once('(')?;
    let name = name.trim();
    let is_char = matches!(name, "varchar" | "char" | "character" | "character varying" | "nvarchar" | "nchar");
    if !is_char {
        return None;
    }
    rest.split(')').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use arrow_array::{Decimal128Array, Int64Array, StringArray, UInt64Array};

    use super::*;

    fn stats(array: &dyn Array) -> ColumnStats {
        let mut s = ColumnStats::default();
        s.add(array);
        s
    }

    fn kinds(risks: Vec<(Risk, String)>) -> Vec<Risk> {
        risks.into_iter().map(|(r, _)| r).collect()
    }

    #[test]
    fn declared_lengths_are_read_from_standard_spellings() {
        assert_eq!(declared_length("varchar(20)"), Some(20));
        assert_eq!(declared_length("character varying(8)"), Some(8));
        assert_eq!(declared_length("CHAR(3)"), Some(3));
        assert_eq!(declared_length("text"), None);
        assert_eq!(declared_length("numeric(10,2)"), None);
    }

    #[test]
    fn unsigned_values_above_i64_do_not_fit_bigint() {
        let big = UInt64Array::from(vec![1, u64::MAX]);
        assert_eq!(kinds(stats(&big).risks(&DataType::Int64, "bigint")), vec![Risk::OutOfRange]);
        assert!(stats(&UInt64Array::from(vec![1, 2])).risks(&DataType::Int64, "bigint").is_empty());
        let wide = Int64Array::from(vec![70_000]);
        assert_eq!(kinds(stats(&wide).risks(&DataType::Int16, "smallint")), vec![Risk::OutOfRange]);
    }

    #[test]
    fn long_strings_and_tight_decimals_are_found() {
        let text = StringArray::from(vec!["ab", "äbcdé"]);
        assert_eq!(kinds(stats(&text).risks(&DataType::Utf8, "varchar(4)")), vec![Risk::TooLong]);
        assert!(stats(&text).risks(&DataType::Utf8, "varchar(5)").is_empty());
        let money = Decimal128Array::from(vec![123_456, 100]).with_precision_and_scale(10, 3).unwrap();
        // 123.456 and 0.100: 3 integer digits, 3 fractional digits in use.
        assert!(stats(&money).risks(&DataType::Decimal128(6, 3), "numeric(6,3)").is_empty());
        assert_eq!(kinds(stats(&money).risks(&DataType::Decimal128(5, 2), "numeric(5,2)")), vec![Risk::Precision]);
        assert_eq!(
            kinds(stats(&money).risks(&DataType::Decimal128(3, 1), "numeric(3,1)")),
            vec![Risk::Precision, Risk::Precision]
        );
        let round = Decimal128Array::from(vec![1_000]).with_precision_and_scale(10, 3).unwrap();
        assert!(stats(&round).risks(&DataType::Decimal128(4, 0), "numeric(4,0)").is_empty());
    }
}
