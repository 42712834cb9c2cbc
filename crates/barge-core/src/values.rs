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
    /// The engine, for messages ("MySQL cannot store NaN").
    pub engine: &'static str,
}

impl Unstorable {
    /// Whether a column of this type can hold a value the target refuses.
    pub fn applies_to(&self, data_type: &DataType) -> bool {
        match data_type {
            DataType::Float16 | DataType::Float32 | DataType::Float64 => self.non_finite_floats,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => self.nul_in_text,
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

    const MYSQL: Unstorable = Unstorable { non_finite_floats: true, nul_in_text: false, engine: "MySQL" };
    const POSTGRES: Unstorable = Unstorable { non_finite_floats: false, nul_in_text: true, engine: "PostgreSQL" };

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
    fn nulled_values_become_null_and_the_others_stay() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), Some(f64::NAN), Some(3.0)]));
        let out = nulled(&floats, &[1]).unwrap();
        let out = out.as_primitive::<arrow_array::types::Float64Type>();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(1.0), None, Some(3.0)]);
    }
}
