//! Values a target cannot store whatever its column type (MySQL has no NaN or infinities;
//! PostgreSQL text holds no NUL character), and the one policy a copy applies to each: stop with
//! an error naming the row, write NULL instead, or reject the row to the reject file.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

/// What a copy does with a value its target cannot store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValuePolicy {
    /// The table stops, naming the column, the key and the value (the default).
    #[default]
    Error,
    /// The value is written as NULL (a NOT NULL column stops the table instead).
    Null,
    /// The row goes to the reject file, counted against the error budget.
    Reject,
}

impl ValuePolicy {
    pub fn name(self) -> &'static str {
        match self {
            ValuePolicy::Error => "error",
            ValuePolicy::Null => "null",
            ValuePolicy::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<ValuePolicy> {
        match text {
            "error" => Some(ValuePolicy::Error),
            "null" => Some(ValuePolicy::Null),
            "reject" => Some(ValuePolicy::Reject),
            _ => None,
        }
    }
}

/// The values a target refuses in any column of a kind. The default refuses nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unstorable {
    /// NaN, +Infinity and -Infinity in floating-point columns.
    pub non_finite_floats: bool,
    /// The NUL character (U+0000) in text.
    pub nul_in_text: bool,
    /// The days since 1970-01-01 that dates and timestamps must fall in (MySQL: years 0 to 9999),
    /// where the engine holds fewer than Arrow's.
    pub days: Option<(i32, i32)>,
    /// The engine, for messages ("MySQL cannot store NaN").
    pub engine: &'static str,
}

/// MySQL's DATE and DATETIME range, 0000-01-01 to 9999-12-31, in days since 1970-01-01.
pub const MYSQL_DAYS: (i32, i32) = (-719_528, 2_932_896);

impl Unstorable {
    /// Whether a column of this type can hold a value the target refuses.
    pub fn applies_to(&self, data_type: &DataType) -> bool {
        match data_type {
            DataType::Float16 | DataType::Float32 | DataType::Float64 => self.non_finite_floats,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => self.nul_in_text,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => self.days.is_some(),
            _ => false,
        }
    }

    /// The rows of `array` holding a value the target refuses, each with the reason.
    pub fn scan(&self, array: &ArrayRef) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        let engine = self.engine;
        let mut floats = |values: &mut dyn Iterator<Item = (usize, Option<f64>)>| {
            for (row, value) in values {
                if let Some(v) = value.filter(|v| !v.is_finite()) {
                    let shown = if v.is_nan() {
                        "NaN"
                    } else if v > 0.0 {
                        "+Infinity"
                    } else {
                        "-Infinity"
                    };
                    found.push((row, format!("{engine} cannot store {shown}")));
                }
            }
        };
        match array.data_type() {
            DataType::Float32 if self.non_finite_floats => {
                let a = array.as_primitive::<arrow_array::types::Float32Type>();
                floats(&mut a.iter().map(|v| v.map(f64::from)).enumerate());
            }
            DataType::Float64 if self.non_finite_floats => {
                let a = array.as_primitive::<arrow_array::types::Float64Type>();
                floats(&mut a.iter().enumerate());
            }
            DataType::Float16 if self.non_finite_floats => {
                let a = array.as_primitive::<arrow_array::types::Float16Type>();
                floats(&mut a.iter().map(|v| v.map(f64::from)).enumerate());
            }
            // One pass over the values' bytes first: almost always there is no NUL at all.
            DataType::Utf8 if self.nul_in_text && array.as_string::<i32>().values().contains(&0) => {
                nul_rows(array.as_string::<i32>().iter(), engine, &mut found)
            }
            DataType::LargeUtf8 if self.nul_in_text && array.as_string::<i64>().values().contains(&0) => {
                nul_rows(array.as_string::<i64>().iter(), engine, &mut found)
            }
            DataType::Utf8View if self.nul_in_text => nul_rows(array.as_string_view().iter(), engine, &mut found),
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) if let Some((lo, hi)) = self.days => {
                // Each value's day, and the value as barge writes it.
                let per_day = |unit: &arrow_schema::TimeUnit| match unit {
                    arrow_schema::TimeUnit::Second => 86_400i64,
                    arrow_schema::TimeUnit::Millisecond => 86_400_000,
                    arrow_schema::TimeUnit::Microsecond => 86_400_000_000,
                    arrow_schema::TimeUnit::Nanosecond => 86_400_000_000_000,
                };
                let days: Vec<Option<i64>> = match array.data_type() {
                    DataType::Date32 => array
                        .as_primitive::<arrow_array::types::Date32Type>()
                        .iter()
                        .map(|v| v.map(i64::from))
                        .collect(),
                    DataType::Date64 => array
                        .as_primitive::<arrow_array::types::Date64Type>()
                        .iter()
                        .map(|v| v.map(|ms| ms.div_euclid(86_400_000)))
                        .collect(),
                    DataType::Timestamp(unit, _) => {
                        let per_day = per_day(unit);
                        let raw: Vec<Option<i64>> = match unit {
                            arrow_schema::TimeUnit::Second => {
                                array.as_primitive::<arrow_array::types::TimestampSecondType>().iter().collect()
                            }
                            arrow_schema::TimeUnit::Millisecond => {
                                array.as_primitive::<arrow_array::types::TimestampMillisecondType>().iter().collect()
                            }
                            arrow_schema::TimeUnit::Microsecond => {
                                array.as_primitive::<arrow_array::types::TimestampMicrosecondType>().iter().collect()
                            }
                            arrow_schema::TimeUnit::Nanosecond => {
                                array.as_primitive::<arrow_array::types::TimestampNanosecondType>().iter().collect()
                            }
                        };
                        raw.into_iter().map(|v| v.map(|v| v.div_euclid(per_day))).collect()
                    }
                    _ => Vec::new(),
                };
                for (row, day) in days.into_iter().enumerate() {
                    if let Some(day) = day.filter(|d| *d < i64::from(lo) || *d > i64::from(hi)) {
                        let mut shown = String::new();
                        crate::text::format_date(
                            i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX }),
                            &mut shown,
                        );
                        found.push((row, format!("{engine} dates cannot hold the day {shown} (years 0 to 9999 only)")));
                    }
                }
            }
            _ => {}
        }
        found
    }
}

fn nul_rows<'a>(values: impl Iterator<Item = Option<&'a str>>, engine: &str, found: &mut Vec<(usize, String)>) {
    for (row, value) in values.enumerate() {
        if let Some(at) = value.and_then(|v| v.find('\0')) {
            found.push((row, format!("{engine} text cannot hold the NUL character (at byte {at})")));
        }
    }
}

/// `array` with the values at `rows` set to NULL.
pub fn nulled(array: &ArrayRef, rows: &[usize]) -> crate::Result<ArrayRef> {
    let mut valid: Vec<bool> = (0..array.len()).map(|i| array.is_valid(i)).collect();
    for &row in rows {
        valid[row] = false;
    }
    let nulls = arrow_buffer::NullBuffer::from(valid);
    let data = array.to_data().into_builder().nulls(Some(nulls)).build()?;
    Ok(arrow_array::make_array(data))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, StringArray};

    use super::*;

    const MYSQL: Unstorable =
        Unstorable { non_finite_floats: true, nul_in_text: false, days: Some(MYSQL_DAYS), engine: "MySQL" };
    const POSTGRES: Unstorable =
        Unstorable { non_finite_floats: false, nul_in_text: true, days: None, engine: "PostgreSQL" };

    #[test]
    fn non_finite_floats_and_nul_characters_are_found_by_row() {
        let floats: ArrayRef =
            Arc::new(Float64Array::from(vec![Some(1.0), Some(f64::NAN), None, Some(f64::NEG_INFINITY)]));
        let rows: Vec<usize> = MYSQL.scan(&floats).into_iter().map(|(r, _)| r).collect();
        assert_eq!(rows, vec![1, 3]);
        assert_eq!(MYSQL.scan(&floats)[0].1, "MySQL cannot store NaN");
        assert_eq!(MYSQL.scan(&floats)[1].1, "MySQL cannot store -Infinity");
        assert!(POSTGRES.scan(&floats).is_empty(), "PostgreSQL stores them");
        let text: ArrayRef = Arc::new(StringArray::from(vec![Some("a\0b"), Some("ok"), None]));
        assert_eq!(POSTGRES.scan(&text).into_iter().map(|(r, _)| r).collect::<Vec<_>>(), vec![0]);
        assert!(MYSQL.scan(&text).is_empty());
        assert!(MYSQL.applies_to(&DataType::Float32) && !MYSQL.applies_to(&DataType::Utf8));
    }

    #[test]
    fn dates_outside_mysqls_years_are_found_by_row() {
        let day = |s: &str| crate::text::parse_date(s).unwrap();
        assert_eq!((day("0000-01-01"), day("9999-12-31")), MYSQL_DAYS);
        let dates: ArrayRef = Arc::new(arrow_array::Date32Array::from(vec![
            Some(day("0000-01-01")),
            Some(MYSQL_DAYS.0 - 1),
            None,
            Some(day("9999-12-31")),
            Some(MYSQL_DAYS.1 + 1),
        ]));
        let found = MYSQL.scan(&dates);
        assert_eq!(found.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![1, 4]);
        assert!(found[1].1.starts_with("MySQL dates cannot hold the day 10000-01-01"), "{}", found[1].1);
        // Timestamps by their day, before the epoch too (div_euclid).
        let micros = 86_400_000_000i64;
        let stamps: ArrayRef = Arc::new(arrow_array::TimestampMicrosecondArray::from(vec![
            Some(i64::from(MYSQL_DAYS.0) * micros),
            Some(i64::from(MYSQL_DAYS.0) * micros - 1),
            Some((i64::from(MYSQL_DAYS.1) + 1) * micros - 1),
        ]));
        assert_eq!(MYSQL.scan(&stamps).into_iter().map(|(r, _)| r).collect::<Vec<_>>(), vec![1]);
        assert!(POSTGRES.scan(&dates).is_empty() && !POSTGRES.applies_to(&DataType::Date32));
    }

    #[test]
    fn nulled_values_become_null_and_the_others_stay() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), Some(f64::NAN), Some(3.0)]));
        let out = nulled(&floats, &[1]).unwrap();
        let out = out.as_primitive::<arrow_array::types::Float64Type>();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(1.0), None, Some(3.0)]);
    }
}
